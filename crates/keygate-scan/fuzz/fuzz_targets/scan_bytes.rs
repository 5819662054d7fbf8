#![no_main]
//! Fuzzes the whole dispatcher (archives, dex, binary XML, resource tables, plists,
//! executables, text) with the built-in rules.

use std::sync::OnceLock;

use keygate_scan::matcher::Matcher;
use keygate_scan::rules::RuleSet;
use keygate_scan::scan::{Collector, Limits, Origin, Scanner};
use libfuzzer_sys::fuzz_target;

fn scanner() -> Option<&'static Scanner> {
    static S: OnceLock<Option<Scanner>> = OnceLock::new();
    S.get_or_init(|| {
        let m = Matcher::new(RuleSet::builtin().ok()?).ok()?;
        let limits = Limits { max_entry_bytes: 1 << 20, max_archive_bytes: 4 << 20, ..Limits::default() };
        Some(Scanner::new(m, None, limits))
    })
    .as_ref()
}

fuzz_target!(|data: &[u8]| {
    if let Some(s) = scanner() {
        let sink = Collector::default();
        s.scan_bytes(data, &Origin::new("fuzz.bin"), &sink);
        let _ = sink.finish();
    }
});
