//! Fuzz target bodies, kept in the library so the cargo-fuzz targets (nightly, in `fuzz/`)
//! and the stable smoke test (`tests/robustness.rs`) run the same code.
//!
//! Each function feeds arbitrary input to the verifiers with a fixed configuration and
//! returns whether it was accepted. The property under test is that nothing panics and
//! that arbitrary input is refused; both verifiers are pure, so any crash is a bug.

use std::sync::OnceLock;
use std::time::Duration;

use crate::apple::{self, AppAttestConfig};
use crate::google::{self, PlayIntegrityConfig};

/// Some time inside the Apple root's validity (2026-05-28).
const NOW: i64 = 1_780_000_000;
const CLIENT_DATA: &[u8] = b"keygate fuzzing client data";

struct Fixed {
    apple: AppAttestConfig,
    device_key: Vec<u8>,
    play: Option<PlayIntegrityConfig>,
}

/// A fixed, well-known scalar: the keys only need to be valid, not secret.
fn fixed_signing_key() -> Option<p256::ecdsa::SigningKey> {
    p256::ecdsa::SigningKey::from_bytes(&[0x5a; 32].into()).ok()
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let roots = apple::parse_pem_certificate(apple::APPLE_APP_ATTEST_ROOT_PEM)
            .map(|root| vec![root])
            .unwrap_or_default();
        let key = fixed_signing_key();
        let device_key = key
            .as_ref()
            .map(|k| {
                k.verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec()
            })
            .unwrap_or_default();
        let play = key.map(|k| {
            let mut cfg = PlayIntegrityConfig::new(
                "com.example.fuzz",
                vec![[0x11; 32]],
                [0x42; 32],
                *k.verifying_key(),
            );
            cfg.max_age = Duration::from_secs(300);
            cfg
        });
        Fixed {
            apple: AppAttestConfig {
                team_id: "ABCDE12345".to_owned(),
                bundle_id: "com.example.fuzz".to_owned(),
                roots,
                allow_development: true,
            },
            device_key,
            play,
        }
    })
}

/// Arbitrary bytes as an attestation object and as an assertion object. Returns whether
/// either was accepted.
pub fn app_attest(data: &[u8]) -> bool {
    let fixed = fixed();
    let key_id = data.get(..32).unwrap_or(data);
    let attested = apple::verify_attestation(&fixed.apple, data, key_id, CLIENT_DATA, NOW).is_ok();
    let asserted =
        apple::verify_assertion(&fixed.apple, &fixed.device_key, 0, data, CLIENT_DATA).is_ok();
    attested || asserted
}

/// An arbitrary string as a Play Integrity token. Returns whether it was accepted.
pub fn play_integrity(token: &str) -> bool {
    match &fixed().play {
        Some(cfg) => google::verify_token(cfg, token, CLIENT_DATA, NOW).is_ok(),
        None => false,
    }
}
