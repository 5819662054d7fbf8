#![no_main]
//! Arbitrary bytes as an App Attest attestation object and as an assertion object.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keygate_attest::fuzzing::app_attest(data);
});
