//! Property-style robustness tests that run in CI (the cargo-fuzz targets in `fuzz/` do
//! not): random, truncated and mutated inputs to every reader, the matcher, the
//! fingerprint finder and the whole dispatcher. Nothing may panic, offsets must stay in
//! bounds, and output must stay within the amplification cap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Cursor, Write};

use common::Gen;
use keygate_scan::formats::{self, axml, dex, plist};
use keygate_scan::matcher::Matcher;
use keygate_scan::rules::RuleSet;
use keygate_scan::scan::{Collector, Limits, Origin, Scanner};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutations in the spirit of a fuzzer: flip, overwrite with boundary values, truncate,
/// duplicate a slice.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if d.is_empty() {
            break;
        }
        let at = rng.below(d.len());
        match rng.below(5) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => d[at] = [0u8, 0x7f, 0x80, 0xff][rng.below(4)],
            2 => d.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(16)).min(d.len());
                let chunk = d[at..end].to_vec();
                d.splice(at..at, chunk);
            }
            _ => {
                let v = [0u32, 1, 0x7fff_ffff, 0xffff_ffff][rng.below(4)].to_le_bytes();
                for (k, b) in v.iter().enumerate() {
                    if at + k < d.len() {
                        d[at + k] = *b;
                    }
                }
            }
        }
    }
    d
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        dex::build_for_tests(&[
            "Lcom/a/B;",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            &"x".repeat(300),
        ]),
        axml::build::binary_xml(&[
            ("manifest", &[("package", "com.a")]),
            ("meta-data", &[("name", "k"), ("value", "v")]),
        ]),
        axml::build::resource_table(&[("app_name", "A"), ("key", "value")]),
        plist::build_dict_for_tests(&[("a", "b"), ("CFBundleName", "Acme")]),
        axml::build::resource_table_with(
            &[("k", "v"), ("app", "A")],
            axml::build::TableLayout::Sparse,
        ),
        axml::build::resource_table_with(
            &[("k", "v"), ("app", "A")],
            axml::build::TableLayout::Compact,
        ),
    ]
}

#[test]
fn readers_survive_mutated_seeds_and_stay_within_the_output_cap() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let seeds = seeds();
    for round in 0..20_000 {
        let seed = &seeds[round % seeds.len()];
        let d = mutate(&mut rng, seed);
        let cap = formats::output_limit(d.len()) * 3;
        for text in [
            dex::strings(&d),
            axml::binary_xml_text(&d),
            axml::resource_table_text(&d),
            plist::binary_plist_text(&d),
        ]
        .into_iter()
        .flatten()
        {
            assert!(
                text.len() <= cap,
                "round {round}: {} bytes out of {}",
                text.len(),
                d.len()
            );
        }
    }
}

#[test]
fn table_pointing_every_entry_at_one_long_string_is_capped() {
    // 20k string ids all aimed at one 64 KiB string: ~1.3 GB uncapped.
    let long = "A".repeat(64 << 10);
    let mut d = dex::build_for_tests(&[&long]);
    let target = u32::from_le_bytes(d[0x70..0x74].try_into().unwrap());
    let n = 20_000u32;
    let ids_off = d.len() as u32;
    for _ in 0..n {
        d.extend_from_slice(&target.to_le_bytes());
    }
    d[0x38..0x3C].copy_from_slice(&n.to_le_bytes());
    d[0x3C..0x40].copy_from_slice(&ids_off.to_le_bytes());
    let text = dex::strings(&d).unwrap();
    assert!(
        text.len() <= formats::output_limit(d.len()) + long.len() + 1,
        "{}",
        text.len()
    );
}

#[test]
fn matcher_offsets_are_in_bounds_on_random_text() {
    let m = Matcher::new(RuleSet::builtin().unwrap()).unwrap();
    let mut g = Gen::new(77);
    let mut rng = Rng(99);
    let pieces = [
        "ghp_",
        "AKIA",
        "sk_live_",
        "key",
        "secret=\"",
        "-----BEGIN PRIVATE KEY-----\n",
        "eyJ",
        ".",
        "\n",
        "\"",
        "=",
        "xoxb-",
        "AIza",
        "\0",
        "\u{e9}",
    ];
    for _ in 0..3_000 {
        let mut s = String::new();
        for _ in 0..rng.below(40) {
            if rng.below(2) == 0 {
                s.push_str(pieces[rng.below(pieces.len())]);
            } else {
                s.push_str(&g.alnum(rng.below(50)));
            }
        }
        for hit in m.find(s.as_bytes()) {
            assert!(
                hit.start <= hit.secret_start
                    && hit.secret_start < hit.secret_end
                    && hit.secret_end <= hit.end
                    && hit.end <= s.len()
            );
        }
    }
}

#[test]
fn dispatcher_survives_mutated_archives() {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (i, s) in seeds().iter().enumerate() {
        w.start_file(format!("m{i}"), opts).unwrap();
        w.write_all(s).unwrap();
    }
    w.start_file("a.txt", opts).unwrap();
    w.write_all(b"token ghp_abcdefghijklmnopqrstuvwxyz0123456789\n")
        .unwrap();
    let zip = w.finish().unwrap().into_inner();
    let limits = Limits {
        max_entry_bytes: 1 << 20,
        max_archive_bytes: 4 << 20,
        ..Limits::default()
    };
    let scanner = Scanner::new(
        Matcher::new(RuleSet::builtin().unwrap()).unwrap(),
        None,
        limits,
    );
    let mut rng = Rng(4242);
    let mut found = 0;
    for _ in 0..1_500 {
        let d = mutate(&mut rng, &zip);
        let sink = Collector::default();
        scanner.scan_bytes(&d, &Origin::new("m.zip"), &sink);
        let (f, _) = sink.finish();
        found += f.len();
    }
    // Most mutations leave the text member readable.
    assert!(found > 100, "found {found}");
}

#[test]
fn huge_minified_line_with_dense_keywords_scans_in_linear_time() {
    // 4 MiB on one line, a keyword every ~40 bytes, one real key at the end.
    let mut g = Gen::new(11);
    let mut s = String::with_capacity(5 << 20);
    while s.len() < 4 << 20 {
        s.push_str("var a={key:1,token:b,auth:c,secret:d};");
    }
    let key = g.github();
    s.push_str(&format!("var t=\"{key}\";"));
    let scanner = Scanner::new(
        Matcher::new(RuleSet::builtin().unwrap()).unwrap(),
        None,
        Limits::default(),
    );
    let sink = Collector::default();
    let started = std::time::Instant::now();
    scanner.scan_bytes(s.as_bytes(), &Origin::new("bundle.min.js"), &sink);
    let elapsed = started.elapsed();
    let (f, _) = sink.finish();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].line, Some(1));
    assert_eq!(f[0].column, Some(s.len() - key.len() - 1));
    // Quadratic behaviour would take minutes; linear takes well under this in debug.
    assert!(elapsed.as_secs() < 60, "{elapsed:?}");
}
