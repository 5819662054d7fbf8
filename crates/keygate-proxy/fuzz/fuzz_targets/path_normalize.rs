//! The path normaliser and target split: never panic; accepted paths are unchanged and
//! contain no traversal or encoded separator.
#![no_main]

use keygate_proxy::path::{ProxyTarget, normalize_path, normalize_query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = normalize_path(text) {
        assert_eq!(path.as_str(), text);
        let lower = text.to_ascii_lowercase();
        for bad in ["%2f", "%5c", "%2e", "%00", "%25", "\\", ";", "//"] {
            assert!(!lower.contains(bad));
        }
        for seg in path.segments() {
            assert!(seg != "." && seg != "..");
        }
    }
    let _ = normalize_query(text);
    let _ = ProxyTarget::parse("/proxy/", text);
});
