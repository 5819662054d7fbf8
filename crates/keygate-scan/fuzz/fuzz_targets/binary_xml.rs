#![no_main]
//! Fuzzes `keygate_scan::formats::axml::binary_xml_text`: any bytes must give text or an error, never a
//! panic, and output stays within the amplification cap.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = keygate_scan::formats::axml::binary_xml_text(data) {
        // Shared table entries must not blow small inputs up into huge outputs.
        assert!(text.len() <= keygate_scan::formats::output_limit(data.len()) * 3);
    }
});
