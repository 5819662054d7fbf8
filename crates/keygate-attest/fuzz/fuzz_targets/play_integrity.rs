#![no_main]
//! Arbitrary strings as Play Integrity tokens.

libfuzzer_sys::fuzz_target!(|token: &str| {
    keygate_attest::fuzzing::play_integrity(token);
});
