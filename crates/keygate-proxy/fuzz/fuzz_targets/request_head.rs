//! The raw request-head checker, the stream scanner (fed in two pieces) and the parsed
//! field checker: never panic; an accepted head has at most one framing header.
#![no_main]

use keygate_proxy::framing::check_fields;
use keygate_proxy::h1guard::{RequestScanner, check_raw_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if check_raw_head(data).is_ok() {
        let text = String::from_utf8_lossy(data).to_ascii_lowercase();
        let framing = text.matches("\r\ncontent-length:").count()
            + text.matches("\r\ntransfer-encoding:").count();
        assert!(framing <= 1);
    }
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (a, b) = data.split_at(split);
    let mut scanner = RequestScanner::default();
    let mut out = Vec::new();
    if scanner.feed(a, &mut out).is_ok() {
        let _ = scanner.feed(b, &mut out);
    }
    let fields: Vec<(&[u8], &[u8])> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let at = line.iter().position(|&b| b == b':')?;
            Some((&line[..at], &line[at + 1..]))
        })
        .collect();
    let _ = check_fields(http::Version::HTTP_11, fields);
});
