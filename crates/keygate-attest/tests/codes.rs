#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Refusal codes are what audit entries and dashboards key on: stable, unique, snake_case.

use std::collections::HashSet;

use keygate_attest::Refusal;

const ALL: [(Refusal, &str); 27] = [
    (Refusal::TooLarge, "too_large"),
    (Refusal::MalformedCbor, "malformed_cbor"),
    (Refusal::WrongFormat, "wrong_format"),
    (Refusal::MalformedAuthData, "malformed_auth_data"),
    (Refusal::MalformedCertificate, "malformed_certificate"),
    (Refusal::ChainInvalid, "chain_invalid"),
    (Refusal::WrongRoot, "wrong_root"),
    (Refusal::CertExpired, "cert_expired"),
    (Refusal::NonceMismatch, "nonce_mismatch"),
    (Refusal::RpIdMismatch, "rp_id_mismatch"),
    (Refusal::KeyIdMismatch, "key_id_mismatch"),
    (Refusal::CounterNotZero, "counter_not_zero"),
    (Refusal::CounterNotIncreasing, "counter_not_increasing"),
    (Refusal::WrongAaguid, "wrong_aaguid"),
    (Refusal::SignatureInvalid, "signature_invalid"),
    (Refusal::InvalidStoredKey, "invalid_stored_key"),
    (Refusal::MalformedToken, "malformed_token"),
    (Refusal::UnsupportedAlgorithm, "unsupported_algorithm"),
    (Refusal::DecryptFailed, "decrypt_failed"),
    (Refusal::MalformedVerdict, "malformed_verdict"),
    (Refusal::PackageMismatch, "package_mismatch"),
    (
        Refusal::CertificateDigestMismatch,
        "certificate_digest_mismatch",
    ),
    (Refusal::AppNotRecognized, "app_not_recognized"),
    (Refusal::DeviceIntegrityMissing, "device_integrity_missing"),
    (Refusal::NotLicensed, "not_licensed"),
    (Refusal::VerdictExpired, "verdict_expired"),
    (Refusal::VerdictInFuture, "verdict_in_future"),
];

#[test]
fn codes_are_stable_unique_and_snake_case() {
    let mut seen = HashSet::new();
    for (refusal, code) in ALL {
        assert_eq!(refusal.code(), code);
        assert!(seen.insert(code), "duplicate code {code}");
        assert!(
            code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{code}"
        );
        // The operator message is prose, not the code.
        assert_ne!(refusal.to_string(), code);
    }
}
