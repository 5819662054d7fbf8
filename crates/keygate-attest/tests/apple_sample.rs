#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Apple's published sample attestation (DeviceCheck "Attestation object validation
//! guide"): team 0352187391, bundle com.apple.example_app_attest, challenge
//! `test_server_challenge`, key ID `bSrEhF8TIzIvWSPwvZ0i2+UOBre4ASH84rK15m6emNY=`, credential
//! certificate valid 2024-04-17T16:14:53Z to 2024-04-20T16:14:53Z. It chains to the embedded
//! Apple root through Apple's P-384 intermediate, which signs with ecdsa-with-SHA256.
//!
//! The sample app passed the challenge bytes themselves as `clientDataHash` (unhashed), so
//! these tests use `verify_attestation_with_client_data_hash`; the hashing wrapper is
//! checked to refuse it, since hashing the challenge gives another nonce.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keygate_attest::Refusal;
use keygate_attest::apple::{
    AppAttestConfig, Environment, verify_attestation,
    verify_attestation_with_client_data_hash as verify,
};

const SAMPLE_B64: &str = include_str!("data/apple_sample_attestation.b64");
const KEY_ID_B64: &str = "bSrEhF8TIzIvWSPwvZ0i2+UOBre4ASH84rK15m6emNY=";
const CHALLENGE: &[u8] = b"test_server_challenge";
/// 2024-04-18T12:00:00Z, inside the credential certificate's validity.
const NOW: i64 = 1_713_441_600;

fn sample() -> (AppAttestConfig, Vec<u8>, Vec<u8>) {
    let cfg = AppAttestConfig::apple("0352187391", "com.apple.example_app_attest").unwrap();
    let object = STANDARD.decode(SAMPLE_B64.trim()).unwrap();
    assert_eq!(object.len(), 5637);
    (cfg, object, STANDARD.decode(KEY_ID_B64).unwrap())
}

#[test]
fn apples_sample_attestation_verifies_under_the_embedded_root() {
    let (cfg, object, key_id) = sample();
    let key = verify(&cfg, &object, &key_id, CHALLENGE, NOW).unwrap();
    assert_eq!(key.key_id.to_vec(), key_id);
    assert_eq!(key.public_key_sec1.len(), 65);
    assert_eq!(key.counter, 0);
    assert_eq!(key.environment, Environment::Production);
    assert!(!key.receipt.is_empty());
}

#[test]
fn apples_sample_is_refused_when_anything_differs() {
    let (cfg, object, key_id) = sample();
    // Through the hashing wrapper the nonce differs: SHA-256 of the challenge is not what
    // the sample app passed.
    assert_eq!(
        verify_attestation(&cfg, &object, &key_id, CHALLENGE, NOW),
        Err(Refusal::NonceMismatch)
    );
    // Two days after the credential certificate expired.
    assert_eq!(
        verify(&cfg, &object, &key_id, CHALLENGE, 1_713_800_000),
        Err(Refusal::CertExpired)
    );
    assert_eq!(
        verify(&cfg, &object, &key_id, b"invalid_server_challenge", NOW),
        Err(Refusal::NonceMismatch)
    );
    let mut other_app = cfg.clone();
    other_app.bundle_id = "com.apple.other_app".into();
    assert_eq!(
        verify(&other_app, &object, &key_id, CHALLENGE, NOW),
        Err(Refusal::RpIdMismatch)
    );
    let mut other_key = key_id.clone();
    other_key[31] ^= 1;
    assert_eq!(
        verify(&cfg, &object, &other_key, CHALLENGE, NOW),
        Err(Refusal::KeyIdMismatch)
    );
    let mut no_roots = cfg;
    no_roots.roots.clear();
    assert_eq!(
        verify(&no_roots, &object, &key_id, CHALLENGE, NOW),
        Err(Refusal::WrongRoot)
    );
}
