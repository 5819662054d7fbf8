//! Properties of the parsers that see attacker bytes: they never panic, and whatever
//! they accept has the shape the rest of the engine relies on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use keygate_proxy::framing::check_fields;
use keygate_proxy::h1guard::{POISON, RequestScanner, check_raw_head};
use keygate_proxy::path::{ProxyTarget, normalize_path, normalize_query};
use proptest::prelude::*;

/// Paths built from pieces that matter: separators, dots, escapes, odd bytes.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just(";".to_owned()),
        Just("\\".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%5c".to_owned()),
        Just("%00".to_owned()),
        Just("%25".to_owned()),
        Just("%c0%ae".to_owned()),
        Just("%".to_owned()),
        Just("%C3%A9".to_owned()),
        "[a-z0-9]{1,4}",
        "\\PC{1,2}",
        any::<u8>().prop_map(|b| (b as char).to_string()),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

fn decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn normaliser_never_panics(s in "\\PC*") {
        let _ = normalize_path(&s);
        let _ = normalize_query(&s);
        let _ = ProxyTarget::parse("/proxy/", &s);
    }

    #[test]
    fn accepted_paths_have_no_traversal(p in tricky_path()) {
        if let Ok(n) = normalize_path(&p) {
            let s = n.as_str();
            // Not rewritten: the matched bytes are the forwarded bytes.
            prop_assert_eq!(s, p.as_str());
            prop_assert!(s.starts_with('/'));
            prop_assert!(s.is_ascii());
            let lower = s.to_ascii_lowercase();
            for bad in ["%2f", "%5c", "%2e", "%00", "%25", "%3b", "\\", ";", "//"] {
                prop_assert!(!lower.contains(bad), "{} contains {}", s, bad);
            }
            // Even after one (or two) rounds of decoding by an upstream, no segment is
            // "." or ".." and no separator appears that was not there.
            let once = decoded(s);
            let twice = decoded(&once);
            for text in [s.to_owned(), once, twice] {
                for seg in text.split('/') {
                    prop_assert!(seg != "." && seg != "..", "{} → segment {:?}", s, seg);
                    prop_assert!(!seg.starts_with(".."), "{} → segment {:?}", s, seg);
                }
                prop_assert!(!text.contains('\\') && !text.contains('\0'));
            }
            prop_assert_eq!(decoded(s).matches('/').count(), s.matches('/').count());
        }
    }

    #[test]
    fn raw_head_checker_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = check_raw_head(&bytes);
        let mut scanner = RequestScanner::default();
        let mut out = Vec::new();
        let _ = scanner.feed(&bytes, &mut out);
    }

    #[test]
    fn accepted_heads_have_one_framing(
        fields in prop::collection::vec(
            (prop_oneof![Just("Content-Length"), Just("Transfer-Encoding"), Just("X-A"), Just("content-length")],
             prop_oneof![Just("5"), Just("chunked"), Just("5, 5"), Just(" 7"), Just("+1"), Just("gzip, chunked"), Just("a\rb")]),
            0..5)
    ) {
        let mut head = b"POST /x HTTP/1.1\r\nHost: g\r\n".to_vec();
        for (n, v) in &fields {
            head.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        if check_raw_head(&head).is_ok() {
            let cl = fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")).count();
            let te = fields.iter().filter(|(n, _)| *n == "Transfer-Encoding").count();
            prop_assert!(cl + te <= 1, "{:?}", fields);
        }
        let pairs: Vec<(&[u8], &[u8])> = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
        let _ = check_fields(http::Version::HTTP_11, pairs);
    }

    /// The scanner passes a valid stream through byte for byte, however it is split.
    #[test]
    fn scanner_is_transparent_for_valid_streams(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4),
        split in 1usize..50,
    ) {
        let mut stream = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            if i % 2 == 0 {
                stream.extend_from_slice(format!("POST /a HTTP/1.1\r\nHost: g\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
                stream.extend_from_slice(body);
            } else {
                stream.extend_from_slice(b"POST /b HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n");
                if !body.is_empty() {
                    stream.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                    stream.extend_from_slice(body);
                    stream.extend_from_slice(b"\r\n");
                }
                stream.extend_from_slice(b"0\r\n\r\n");
            }
        }
        let mut scanner = RequestScanner::default();
        let mut out = Vec::new();
        for piece in stream.chunks(split) {
            scanner.feed(piece, &mut out).unwrap();
        }
        prop_assert_eq!(out, stream);
    }
}

/// Pieces of request streams, good and bad, for comparing the scanner's two ways in.
fn stream_piece() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        Just(&b"GET /a HTTP/1.1\r\nHost: g\r\n\r\n"[..]),
        Just(&b"POST /a HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n\r\nhello"[..]),
        Just(&b"POST /b HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nabcde\r\n0\r\nX-T: 1\r\n\r\n"[..]),
        Just(&b"POST /c HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\n\r\na\nb"[..]),
        Just(&b"GET / HTTP/1.1\nHost: x\n\n"[..]),
        Just(&b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n"[..]),
        Just(&b"POST /d HTTP/1.1\r\nHost: g\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"[..]),
        Just(&b"POST /e HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n5\nabcde\r\n"[..]),
        Just(&b"GET /f HTTP/1.1\r\nA: b\r\n c\r\nHost: g\r\n\r\n"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\r"[..]),
        Just(&b"GET http://h/ HTTP/1.1\r\n\r\n"[..]),
    ]
}

proptest! {
    /// `pass` (bytes checked where they were read, as `StrictHttp1` reads them) clears
    /// exactly what `feed` clears and refuses exactly where `feed` refuses, however the
    /// stream is split.
    #[test]
    fn pass_agrees_with_feed(
        pieces in prop::collection::vec(stream_piece(), 1..8),
        split in 1usize..80,
    ) {
        let stream = pieces.concat();
        let mut by_feed = Vec::new();
        let mut feed_refused = false;
        let mut scanner = RequestScanner::default();
        for piece in stream.chunks(split) {
            if scanner.feed(piece, &mut by_feed).is_err() {
                feed_refused = true;
                break;
            }
        }
        let mut by_pass = Vec::new();
        let mut pass_refused = false;
        let mut scanner = RequestScanner::default();
        for piece in stream.chunks(split) {
            if scanner.holding() {
                if scanner.feed(piece, &mut by_pass).is_err() {
                    pass_refused = true;
                    break;
                }
            } else {
                let (cleared, refused) = scanner.pass(piece);
                by_pass.extend_from_slice(&piece[..cleared]);
                if refused.is_some() {
                    by_pass.extend_from_slice(POISON);
                    pass_refused = true;
                    break;
                }
            }
        }
        prop_assert_eq!(pass_refused, feed_refused);
        prop_assert_eq!(by_pass, by_feed);
    }
}
