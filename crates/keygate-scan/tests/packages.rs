//! Mobile packages built in the test: an APK and an IPA with a key in every place the
//! scanner reads, plus zip-bomb, nesting and corruption limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Cursor, Write};

use common::{Gen, scan};
use keygate_scan::formats::{axml, dex, plist};
use keygate_scan::matcher::Matcher;
use keygate_scan::rules::RuleSet;
use keygate_scan::scan::{Collector, Limits, Origin, Scanner};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

fn zip_of(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn elf_with(s: &str) -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    v.extend_from_slice(&[0u8, 1, 2, 3, 0xff, 0xfe]);
    v.extend_from_slice(s.as_bytes());
    v.extend_from_slice(&[0u8, 0x90, 0x90]);
    v
}

fn macho_with(s: &str) -> Vec<u8> {
    let mut v = vec![0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0, 0, 0x01, 0, 0, 0, 0];
    v.extend_from_slice(&[0u8; 20]);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn scanner(limits: Limits) -> Scanner {
    Scanner::new(
        Matcher::new(RuleSet::builtin().unwrap()).unwrap(),
        None,
        limits,
    )
}

fn scan_blob(
    data: &[u8],
    name: &str,
    limits: Limits,
) -> (
    Vec<keygate_scan::finding::Finding>,
    Vec<keygate_scan::scan::Warning>,
) {
    let s = scanner(limits);
    let sink = Collector::default();
    s.scan_bytes(data, &Origin::new(name), &sink);
    sink.finish()
}

fn paths_by_rule(findings: &[keygate_scan::finding::Finding]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = findings
        .iter()
        .map(|f| (f.path.clone(), f.rule_id.clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn apk_key_in_every_place_is_found_and_named_by_member_path() {
    let mut g = Gen::new(100);
    let stripe = g.stripe();
    let github = g.github();
    let google = g.google();
    let openai = g.openai();
    let slack = g.slack();
    let aws = g.aws();
    let sendgrid = format!("SG.{}.{}", g.urlsafe(22), g.urlsafe(43));
    let twilio = g.hex(32);
    let npm = format!("npm_{}", g.alnum(36));

    let manifest = axml::build::binary_xml(&[
        ("manifest", &[("package", "com.acme.app")]),
        (
            "meta-data",
            &[
                ("name", "com.google.android.geo.API_KEY"),
                ("value", google.as_str()),
            ],
        ),
    ]);
    let arsc = axml::build::resource_table(&[
        ("app_name", "Acme"),
        ("openai_key", openai.as_str()),
        ("twilio_auth_token", twilio.as_str()),
    ]);
    let inner_jar = zip_of(&[(
        "config.properties",
        format!("npm.token={npm}\n").into_bytes(),
    )]);
    let apk = zip_of(&[
        ("AndroidManifest.xml", manifest),
        (
            "classes.dex",
            dex::build_for_tests(&["Lcom/acme/Pay;", &stripe]),
        ),
        (
            "classes2.dex",
            dex::build_for_tests(&["Lcom/acme/Git;", &format!("token {github}")]),
        ),
        ("resources.arsc", arsc),
        (
            "assets/config.json",
            format!("{{\"slackBotToken\": \"{slack}\"}}").into_bytes(),
        ),
        (
            "assets/index.android.bundle",
            format!("var a=1;var k=\"{aws}\";__d(function(){{}});").into_bytes(),
        ),
        ("lib/arm64-v8a/libnative.so", elf_with(&sendgrid)),
        (
            "res/drawable/logo.png",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
        ),
        ("libs/inner.jar", inner_jar),
    ]);
    let (findings, warnings) = scan_blob(&apk, "app.apk", Limits::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    let got = paths_by_rule(&findings);
    let want = [
        ("app.apk!AndroidManifest.xml", "google-api-key"),
        ("app.apk!assets/config.json", "slack-bot-token"),
        ("app.apk!assets/index.android.bundle", "aws-access-key-id"),
        ("app.apk!classes.dex", "stripe-secret-key"),
        ("app.apk!classes2.dex", "github-pat-token"),
        ("app.apk!lib/arm64-v8a/libnative.so", "sendgrid-api-key"),
        (
            "app.apk!libs/inner.jar!config.properties",
            "npm-access-token",
        ),
        ("app.apk!resources.arsc", "openai-api-key"),
        ("app.apk!resources.arsc", "twilio-auth-token"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
    // Text members carry line numbers, binary ones do not.
    let cfg = findings
        .iter()
        .find(|f| f.path.ends_with("config.json"))
        .unwrap();
    assert_eq!(cfg.line, Some(1));
    let dexf = findings
        .iter()
        .find(|f| f.path.ends_with("classes2.dex"))
        .unwrap();
    assert_eq!(dexf.line, None);
}

#[test]
fn ipa_key_in_every_place_is_found() {
    let mut g = Gen::new(200);
    let stripe = g.stripe();
    let google = g.google();
    let github = g.github();
    let slack = g.slack();
    let openai = g.openai();
    let info = plist::build_dict_for_tests(&[
        ("CFBundleIdentifier", "com.acme.app"),
        ("StripeKey", stripe.as_str()),
    ]);
    let gsi = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>\n<key>API_KEY</key>\n<string>{google}</string>\n</dict></plist>\n"
    );
    let ipa = zip_of(&[
        ("Payload/Acme.app/Info.plist", info),
        (
            "Payload/Acme.app/GoogleService-Info.plist",
            gsi.into_bytes(),
        ),
        (
            "Payload/Acme.app/main.jsbundle",
            format!("__d(function(g,r){{const t=\"{github}\"}});").into_bytes(),
        ),
        ("Payload/Acme.app/Acme", macho_with(&slack)),
        (
            "Payload/Acme.app/Frameworks/Net.framework/Net",
            macho_with(&format!("key={openai}")),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Acme.ipa");
    std::fs::write(&path, &ipa).unwrap();
    // Through the command, as CI would run it.
    let r = scan(&[path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.err);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    let mut got: Vec<(String, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let p = f["path"].as_str().unwrap();
            (
                p[p.find("Acme.ipa").unwrap()..].to_string(),
                f["rule_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("Acme.ipa!Payload/Acme.app/Acme", "slack-bot-token"),
        (
            "Acme.ipa!Payload/Acme.app/Frameworks/Net.framework/Net",
            "openai-api-key",
        ),
        (
            "Acme.ipa!Payload/Acme.app/GoogleService-Info.plist",
            "google-api-key",
        ),
        ("Acme.ipa!Payload/Acme.app/Info.plist", "stripe-secret-key"),
        (
            "Acme.ipa!Payload/Acme.app/main.jsbundle",
            "github-pat-token",
        ),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
    for s in [&stripe, &google, &github, &slack, &openai] {
        assert!(!r.out.contains(s.as_str()));
    }
}

#[test]
fn zip_bomb_member_is_skipped_with_a_warning_and_the_scan_goes_on() {
    let mut g = Gen::new(300);
    let key = g.github();
    let apk = zip_of(&[
        ("assets/zeros.bin", vec![0u8; 4 << 20]),
        ("assets/k.txt", key.clone().into_bytes()),
    ]);
    let limits = Limits {
        max_ratio: 100,
        ..Limits::default()
    };
    let (findings, warnings) = scan_blob(&apk, "bomb.apk", limits);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].path, "bomb.apk!assets/k.txt");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("zip bomb"), "{warnings:?}");
    assert_eq!(warnings[0].path, "bomb.apk!assets/zeros.bin");
}

#[test]
fn total_expansion_and_member_size_limits_hold() {
    let mut g = Gen::new(301);
    let key = g.github();
    let blob: Vec<u8> = g.alnum(300_000).into_bytes();
    let zip = zip_of(&[
        ("a.txt", blob.clone()),
        ("b.txt", blob.clone()),
        ("c.txt", key.into_bytes()),
    ]);
    let limits = Limits {
        max_archive_bytes: 400_000,
        ..Limits::default()
    };
    let (findings, warnings) = scan_blob(&zip, "big.zip", limits);
    assert!(findings.is_empty(), "scan stops at the budget");
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("total size limit")),
        "{warnings:?}"
    );

    let limits = Limits {
        max_entry_bytes: 100_000,
        ..Limits::default()
    };
    let (_, warnings) = scan_blob(&zip, "big.zip", limits);
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.message.contains("size limit"))
            .count(),
        2,
        "{warnings:?}"
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_skipped() {
    let mut g = Gen::new(400);
    let key = g.github();
    let mut blob = zip_of(&[("key.txt", key.into_bytes())]);
    for i in 0..3 {
        blob = zip_of(&[(&format!("level{i}.zip"), blob)]);
    }
    // Four archives deep: allowed with the default depth of 4.
    let (findings, warnings) = scan_blob(&blob, "outer.zip", Limits::default());
    assert_eq!(findings.len(), 1, "{warnings:?}");
    assert_eq!(
        findings[0].path,
        "outer.zip!level2.zip!level1.zip!level0.zip!key.txt"
    );
    let limits = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    let (findings, warnings) = scan_blob(&blob, "outer.zip", limits);
    assert!(findings.is_empty());
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("nested too deep")),
        "{warnings:?}"
    );
}

#[test]
fn corrupt_and_truncated_archives_and_members_are_warnings() {
    let mut g = Gen::new(500);
    let key = g.github();
    let good = zip_of(&[
        ("a.txt", key.clone().into_bytes()),
        ("classes.dex", b"dex\n035\0broken".to_vec()),
    ]);
    let (findings, warnings) = scan_blob(&good, "x.apk", Limits::default());
    assert_eq!(findings.len(), 1);
    assert!(
        warnings
            .iter()
            .any(|w| w.path == "x.apk!classes.dex" && w.message.starts_with("dex:")),
        "{warnings:?}"
    );

    for cut in [10, good.len() / 2, good.len() - 5] {
        let (_, warnings) = scan_blob(&good[..cut], "cut.apk", Limits::default());
        assert!(!warnings.is_empty(), "truncated at {cut} must warn");
    }
    // Flip bytes inside the compressed data: CRC or inflate errors, not a panic.
    let mut bad = good.clone();
    for b in bad.iter_mut().skip(40).take(10) {
        *b ^= 0x5a;
    }
    let _ = scan_blob(&bad, "flip.apk", Limits::default());
}

#[test]
fn huge_file_is_scanned_in_chunks_with_correct_line_numbers() {
    let mut g = Gen::new(600);
    let k1 = g.github();
    let k2 = g.stripe();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    let mut text = String::new();
    let filler = "lorem ipsum dolor sit amet consectetur adipiscing elit\n";
    for _ in 0..20_000 {
        text.push_str(filler);
    }
    text.push_str(&format!("token={k1}\n"));
    for _ in 0..20_000 {
        text.push_str(filler);
    }
    text.push_str(&format!("k={k2}\n"));
    std::fs::write(&path, &text).unwrap();
    let limits = Limits {
        chunk_bytes: 256 << 10, // forces ~9 chunks
        ..Limits::default()
    };
    let s = scanner(limits);
    let sink = Collector::default();
    s.scan_file(&path, "big.log", &sink);
    let (findings, _) = sink.finish();
    let lines: Vec<Option<usize>> = findings.iter().map(|f| f.line).collect();
    assert_eq!(lines, vec![Some(20_001), Some(40_002)]);
    assert_eq!(findings[0].column, Some(7));

    // One line longer than several chunks: the column counts from the real line start.
    let long = format!("{}{k1}\n", "x=1;".repeat(300_000));
    std::fs::write(&path, &long).unwrap();
    let sink = Collector::default();
    s.scan_file(&path, "long.js", &sink);
    let (findings, _) = sink.finish();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].line, Some(1));
    assert_eq!(findings[0].column, Some(1_200_001));
}

#[test]
fn parallel_member_scanning_finds_the_same_and_shares_the_budget() {
    let mut g = Gen::new(700);
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..40 {
        entries.push((
            format!("assets/f{i}.txt"),
            format!("x\nk={}\n", g.github()).into_bytes(),
        ));
    }
    let refs: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    let zip = zip_of(&refs);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.apk");
    std::fs::write(&path, &zip).unwrap();
    let s = scanner(Limits::default());
    let sink = Collector::default();
    s.scan_file_parallel(&path, "many.apk", &sink);
    let (par, _) = sink.finish();
    let sink = Collector::default();
    s.scan_file(&path, "many.apk", &sink);
    let (seq, _) = sink.finish();
    assert_eq!(par.len(), 40);
    assert_eq!(par, seq);

    // Nested archives expanding in parallel still draw on one budget.
    let inner = zip_of(&[("blob.txt", g.alnum(200_000).into_bytes())]);
    let nested: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("n{i}.zip"), inner.clone()))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = nested
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    std::fs::write(&path, zip_of(&refs)).unwrap();
    let s = scanner(Limits {
        max_archive_bytes: 1_000_000,
        ..Limits::default()
    });
    let sink = Collector::default();
    s.scan_file_parallel(&path, "nested.apk", &sink);
    let bytes = sink.bytes.load(std::sync::atomic::Ordering::Relaxed);
    let (_, warnings) = sink.finish();
    assert!(bytes <= 1_000_000, "scanned {bytes} bytes past the budget");
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("total size limit")),
        "{warnings:?}"
    );
}

/// An APK made by Debian's `aapt` (v1) from `tests/data/aapt-demo.AndroidManifest.xml`
/// and `tests/data/aapt-demo.strings.xml`:
/// `aapt package -M … -S res -I framework-res.apk -F aapt-demo.apk`. Real tool output,
/// not our own builders, so the binary XML and resource-table readers are checked
/// against the format as Android's tools write it.
#[test]
fn apk_built_by_aapt_is_read() {
    let apk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/aapt-demo.apk"
    ))
    .unwrap();
    let (findings, warnings) = scan_blob(&apk, "demo.apk", Limits::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        paths_by_rule(&findings),
        vec![
            (
                "demo.apk!AndroidManifest.xml".to_string(),
                "google-api-key".to_string()
            ),
            (
                "demo.apk!resources.arsc".to_string(),
                "twilio-auth-token".to_string()
            ),
        ]
    );
    // The readers decode the real documents, not just find bytes.
    let mut zip = zip::ZipArchive::new(Cursor::new(apk)).unwrap();
    let mut manifest = Vec::new();
    std::io::Read::read_to_end(
        &mut zip.by_name("AndroidManifest.xml").unwrap(),
        &mut manifest,
    )
    .unwrap();
    let text = String::from_utf8(axml::binary_xml_text(&manifest).unwrap()).unwrap();
    assert!(text.contains(" package=\"com.acme.demo\""), "{text}");
    assert!(
        text.contains("<meta-data name=\"com.google.android.geo.API_KEY\" value=\"AIza"),
        "{text}"
    );
    let mut arsc = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("resources.arsc").unwrap(), &mut arsc).unwrap();
    let text = String::from_utf8(axml::resource_table_text(&arsc).unwrap()).unwrap();
    assert!(
        text.contains("<string name=\"app_name\">Acme</string>"),
        "{text}"
    );
}

/// A binary plist written by CPython's `plistlib` (`FMT_BINARY`): nested dictionary,
/// array, bool, int, data, date and a non-ASCII (UTF-16) string, so the reader is
/// checked against another implementation's output.
#[test]
fn binary_plist_written_by_python_is_read() {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/python-Info.plist"
    ))
    .unwrap();
    let text = String::from_utf8(plist::binary_plist_text(&data).unwrap()).unwrap();
    for line in [
        "\"CFBundleIdentifier\": \"com.acme.demo\"",
        "\"CFBundleDisplayName\": \"Acmé Démo ✓\"",
        "\"TwilioAuthToken\": \"4e7a1c9d3b8f2a6e0d5c7b1a9f3e8d2c\"",
        "arm64",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}: {text}");
    }
    let (findings, warnings) = scan_blob(&data, "Info.plist", Limits::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    let rules: Vec<&str> = findings.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(rules, vec!["stripe-secret-key", "twilio-auth-token"]);
}
