#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Play Integrity token verification against the test fixture.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keygate_attest::google::{PlayIntegrityConfig, expected_nonce, verify_token};
use keygate_attest::testing::{PlayIntegrityFixture, VerdictTweaks};
use keygate_attest::{ConfigError, Refusal};

const PACKAGE: &str = "com.example.keygate";
const NOW: i64 = 1_780_000_000;
const CLIENT_DATA: &[u8] = b"challenge=7f3a9c;dpop_jkt=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

fn refusal(fx: &PlayIntegrityFixture, tweaks: VerdictTweaks) -> Refusal {
    let token = fx.token_with(CLIENT_DATA, NOW, &tweaks);
    verify_token(&fx.config(), &token, CLIENT_DATA, NOW).expect_err("tweaked token must be refused")
}

#[test]
fn valid_token_verifies() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    for as_string in [true, false] {
        let tweaks = VerdictTweaks {
            timestamp_as_string: as_string,
            ..Default::default()
        };
        let token = fx.token_with(CLIENT_DATA, NOW, &tweaks);
        let verdict = verify_token(&fx.config(), &token, CLIENT_DATA, NOW).unwrap();
        assert_eq!(verdict.package_name, PACKAGE);
        assert_eq!(verdict.version_code, Some(42));
        assert_eq!(
            verdict.device_verdicts,
            vec!["MEETS_DEVICE_INTEGRITY".to_string()]
        );
        assert_eq!(verdict.licensing_verdict.as_deref(), Some("LICENSED"));
        assert_eq!(verdict.timestamp_millis, NOW * 1000);
    }
}

#[test]
fn console_keys_make_the_same_config() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let (decryption, verification) = fx.console_keys();
    let cfg = PlayIntegrityConfig::from_console_keys(
        PACKAGE,
        vec![fx.certificate_sha256],
        &decryption,
        &verification,
    )
    .unwrap();
    let token = fx.token(CLIENT_DATA, NOW);
    assert!(verify_token(&cfg, &token, CLIENT_DATA, NOW).is_ok());
    // Debug output never shows the decryption key.
    assert!(!format!("{cfg:?}").contains(&decryption));
}

#[test]
fn bad_console_keys_name_the_field() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let (decryption, verification) = fx.console_keys();
    let digests = vec![fx.certificate_sha256];
    let err = PlayIntegrityConfig::from_console_keys(
        PACKAGE,
        digests.clone(),
        "not base64!",
        &verification,
    )
    .unwrap_err();
    assert_eq!(err, ConfigError::DecryptionKeyNotBase64);
    assert!(err.to_string().contains("decryption_key"));
    let err =
        PlayIntegrityConfig::from_console_keys(PACKAGE, digests.clone(), "AAAA", &verification)
            .unwrap_err();
    assert_eq!(err, ConfigError::DecryptionKeyLength(3));
    let err = PlayIntegrityConfig::from_console_keys(PACKAGE, digests.clone(), &decryption, "%%")
        .unwrap_err();
    assert_eq!(err, ConfigError::VerificationKeyNotBase64);
    let err = PlayIntegrityConfig::from_console_keys(PACKAGE, digests, &decryption, &decryption)
        .unwrap_err();
    assert_eq!(err, ConfigError::VerificationKeyNotP256);
    assert!(err.to_string().contains("verification_key"));
}

#[test]
fn other_package_is_package_mismatch() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let err = refusal(
        &fx,
        VerdictTweaks {
            package_name: Some("com.example.evil".into()),
            ..Default::default()
        },
    );
    assert_eq!(err.code(), "package_mismatch");
}

#[test]
fn missing_device_integrity_is_refused_only_when_required() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let tweaks = VerdictTweaks {
        device_verdicts: vec!["MEETS_BASIC_INTEGRITY".into()],
        ..Default::default()
    };
    assert_eq!(
        refusal(&fx, tweaks.clone()).code(),
        "device_integrity_missing"
    );
    let mut cfg = fx.config();
    cfg.require_device_integrity = false;
    let token = fx.token_with(CLIENT_DATA, NOW, &tweaks);
    let verdict = verify_token(&cfg, &token, CLIENT_DATA, NOW).unwrap();
    assert_eq!(
        verdict.device_verdicts,
        vec!["MEETS_BASIC_INTEGRITY".to_string()]
    );
    let empty = VerdictTweaks {
        device_verdicts: vec![],
        ..Default::default()
    };
    assert_eq!(refusal(&fx, empty), Refusal::DeviceIntegrityMissing);
}

#[test]
fn unlicensed_is_refused_only_when_required() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let tweaks = VerdictTweaks {
        licensing_verdict: "UNLICENSED".into(),
        ..Default::default()
    };
    let token = fx.token_with(CLIENT_DATA, NOW, &tweaks);
    let mut cfg = fx.config();
    assert!(verify_token(&cfg, &token, CLIENT_DATA, NOW).is_ok());
    cfg.require_licensed = true;
    assert_eq!(
        verify_token(&cfg, &token, CLIENT_DATA, NOW)
            .unwrap_err()
            .code(),
        "not_licensed"
    );
}

#[test]
fn old_verdict_is_expired() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let cfg = fx.config();
    assert_eq!(cfg.max_age, Duration::from_secs(300));
    let just_in_time = VerdictTweaks {
        timestamp_millis: Some((NOW - 300) * 1000),
        ..Default::default()
    };
    let token = fx.token_with(CLIENT_DATA, NOW, &just_in_time);
    assert!(verify_token(&cfg, &token, CLIENT_DATA, NOW).is_ok());
    let too_old = VerdictTweaks {
        timestamp_millis: Some((NOW - 300) * 1000 - 1),
        ..Default::default()
    };
    assert_eq!(refusal(&fx, too_old).code(), "verdict_expired");
}

#[test]
fn future_verdict_is_refused_beyond_skew() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let within = VerdictTweaks {
        timestamp_millis: Some((NOW + 60) * 1000),
        ..Default::default()
    };
    let token = fx.token_with(CLIENT_DATA, NOW, &within);
    assert!(verify_token(&fx.config(), &token, CLIENT_DATA, NOW).is_ok());
    let beyond = VerdictTweaks {
        timestamp_millis: Some((NOW + 60) * 1000 + 1),
        ..Default::default()
    };
    assert_eq!(refusal(&fx, beyond).code(), "verdict_in_future");
}

#[test]
fn wrong_nonce_is_nonce_mismatch() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let mut other = CLIENT_DATA.to_vec();
    other[3] ^= 1;
    let tweaks = VerdictTweaks {
        nonce: Some(expected_nonce(&other)),
        ..Default::default()
    };
    assert_eq!(refusal(&fx, tweaks).code(), "nonce_mismatch");
    // The same token checked against other client data.
    let token = fx.token(CLIENT_DATA, NOW);
    assert_eq!(
        verify_token(&fx.config(), &token, &other, NOW),
        Err(Refusal::NonceMismatch)
    );
}

#[test]
fn nonce_encoding_is_base64url_of_sha256_with_optional_padding() {
    use sha2::Digest;
    let nonce = expected_nonce(CLIENT_DATA);
    assert_eq!(nonce.len(), 43);
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&nonce).unwrap(),
        sha2::Sha256::digest(CLIENT_DATA).to_vec()
    );
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let padded = VerdictTweaks {
        nonce: Some(format!("{nonce}=")),
        ..Default::default()
    };
    let token = fx.token_with(CLIENT_DATA, NOW, &padded);
    assert!(verify_token(&fx.config(), &token, CLIENT_DATA, NOW).is_ok());
    let double = VerdictTweaks {
        nonce: Some(format!("{nonce}==")),
        ..Default::default()
    };
    assert_eq!(refusal(&fx, double), Refusal::NonceMismatch);
}

#[test]
fn unrecognized_app_is_refused() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    for verdict in ["UNRECOGNIZED_VERSION", "UNEVALUATED"] {
        let tweaks = VerdictTweaks {
            app_recognition_verdict: verdict.into(),
            ..Default::default()
        };
        assert_eq!(
            refusal(&fx, tweaks).code(),
            "app_not_recognized",
            "{verdict}"
        );
    }
}

#[test]
fn unknown_signing_certificate_is_refused() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let tweaks = VerdictTweaks {
        certificate_sha256: Some([7; 32]),
        ..Default::default()
    };
    assert_eq!(
        refusal(&fx, tweaks.clone()).code(),
        "certificate_digest_mismatch"
    );
    let mut cfg = fx.config();
    cfg.certificate_sha256.push([7; 32]);
    let token = fx.token_with(CLIENT_DATA, NOW, &tweaks);
    assert!(verify_token(&cfg, &token, CLIENT_DATA, NOW).is_ok());
}

#[test]
fn token_for_another_decryption_key_is_decrypt_failed() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let tweaks = VerdictTweaks {
        encrypt_with_other_key: true,
        ..Default::default()
    };
    assert_eq!(refusal(&fx, tweaks).code(), "decrypt_failed");
}

#[test]
fn token_signed_by_another_key_is_signature_invalid() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let tweaks = VerdictTweaks {
        sign_with_other_key: true,
        ..Default::default()
    };
    assert_eq!(refusal(&fx, tweaks).code(), "signature_invalid");
}

#[test]
fn other_algorithms_are_unsupported() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let cases = [
        VerdictTweaks {
            jwe_alg: "A128KW".into(),
            ..Default::default()
        },
        VerdictTweaks {
            jwe_alg: "dir".into(),
            ..Default::default()
        },
        VerdictTweaks {
            jwe_enc: "A128GCM".into(),
            ..Default::default()
        },
        VerdictTweaks {
            jws_alg: "ES384".into(),
            ..Default::default()
        },
        VerdictTweaks {
            jws_alg: "none".into(),
            ..Default::default()
        },
    ];
    for tweaks in cases {
        let label = format!("{}/{}/{}", tweaks.jwe_alg, tweaks.jwe_enc, tweaks.jws_alg);
        assert_eq!(
            refusal(&fx, tweaks).code(),
            "unsupported_algorithm",
            "{label}"
        );
    }
}

#[test]
fn tampered_ciphertext_or_tag_is_decrypt_failed() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let token = fx.token(CLIENT_DATA, NOW);
    let parts: Vec<&str> = token.split('.').collect();
    for index in [1, 2, 3, 4] {
        let mut bytes = URL_SAFE_NO_PAD.decode(parts[index]).unwrap();
        bytes[0] ^= 0x01;
        let mut tampered: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
        tampered[index] = URL_SAFE_NO_PAD.encode(&bytes);
        let err = verify_token(&fx.config(), &tampered.join("."), CLIENT_DATA, NOW).unwrap_err();
        assert_eq!(err, Refusal::DecryptFailed, "part {index}");
    }
    // A protected header re-encoded with the same algorithms still changes the AAD.
    let spaced = URL_SAFE_NO_PAD.encode(r#"{"alg": "A256KW", "enc": "A256GCM"}"#);
    let mut tampered: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
    tampered[0] = spaced;
    assert_eq!(
        verify_token(&fx.config(), &tampered.join("."), CLIENT_DATA, NOW),
        Err(Refusal::DecryptFailed)
    );
}

#[test]
fn malformed_tokens_are_refused() {
    let fx = PlayIntegrityFixture::new(PACKAGE);
    let cfg = fx.config();
    let token = fx.token(CLIENT_DATA, NOW);
    for bad in [
        "",
        "a.b.c",
        "a.b.c.d.e.f",
        "!!!!.a.b.c.d",
        &token[..token.len() - 1],
        &format!("{token}."),
    ] {
        let err = verify_token(&cfg, bad, CLIENT_DATA, NOW).unwrap_err();
        assert!(
            matches!(err, Refusal::MalformedToken | Refusal::DecryptFailed),
            "{bad:?} gave {err:?}"
        );
    }
    let huge = "a".repeat(keygate_attest::google::MAX_TOKEN_BYTES + 1);
    assert_eq!(
        verify_token(&cfg, &huge, CLIENT_DATA, NOW),
        Err(Refusal::TooLarge)
    );
}
