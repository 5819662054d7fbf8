#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! App Attest attestation and assertion verification against the test fixtures.

use ciborium::Value;
use keygate_attest::Refusal;
use keygate_attest::apple::{
    AAGUID_DEVELOPMENT, Environment, verify_assertion, verify_attestation,
};
use keygate_attest::testing::{
    AppAttestFixture, AssertionTweaks, AttestationTweaks, IntermediateCurve,
};

const TEAM: &str = "ABCDE12345";
const BUNDLE: &str = "com.example.keygate";
const CLIENT_DATA: &[u8] = b"challenge=7f3a9c;dpop_jkt=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

fn fixture() -> AppAttestFixture {
    AppAttestFixture::new(TEAM, BUNDLE)
}

fn refusal(fx: &AppAttestFixture, tweaks: &AttestationTweaks) -> Refusal {
    let object = fx.attestation_with(CLIENT_DATA, tweaks);
    verify_attestation(&fx.config(), &object, &fx.key_id(), CLIENT_DATA, fx.now())
        .expect_err("tweaked attestation must be refused")
}

#[test]
fn valid_attestation_returns_the_attested_key() {
    for curve in [IntermediateCurve::P384, IntermediateCurve::P256] {
        let fx = AppAttestFixture::with_curve(TEAM, BUNDLE, curve);
        let object = fx.attestation(CLIENT_DATA);
        let key = verify_attestation(&fx.config(), &object, &fx.key_id(), CLIENT_DATA, fx.now())
            .expect("valid attestation");
        assert_eq!(key.key_id, fx.key_id());
        assert_eq!(key.public_key_sec1, fx.public_key_sec1());
        assert_eq!(key.public_key_sec1.len(), 65);
        assert_eq!(key.counter, 0);
        assert_eq!(key.environment, Environment::Production);
        assert_eq!(key.receipt, fx.receipt);
    }
}

#[test]
fn truncated_object_is_malformed_cbor() {
    let fx = fixture();
    let object = fx.attestation(CLIENT_DATA);
    for len in [0, 1, object.len() / 2, object.len() - 1] {
        let err = verify_attestation(
            &fx.config(),
            &object[..len],
            &fx.key_id(),
            CLIENT_DATA,
            fx.now(),
        )
        .unwrap_err();
        assert_eq!(err, Refusal::MalformedCbor, "truncated to {len}");
        assert_eq!(err.code(), "malformed_cbor");
    }
}

#[test]
fn trailing_bytes_are_malformed_cbor() {
    let fx = fixture();
    let mut object = fx.attestation(CLIENT_DATA);
    object.push(0x00);
    let err =
        verify_attestation(&fx.config(), &object, &fx.key_id(), CLIENT_DATA, fx.now()).unwrap_err();
    assert_eq!(err, Refusal::MalformedCbor);
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

#[test]
fn wrong_types_are_malformed_cbor() {
    let fx = fixture();
    let cfg = fx.config();
    let valid: Value = ciborium::from_reader(fx.attestation(CLIENT_DATA).as_slice()).unwrap();
    let entries = valid.as_map().unwrap().clone();
    let replace = |key: &str, with: Value| {
        let map: Vec<(Value, Value)> = entries
            .iter()
            .map(|(k, v)| {
                if k.as_text() == Some(key) {
                    (k.clone(), with.clone())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect();
        encode(&Value::Map(map))
    };
    let cases = [
        encode(&Value::Array(vec![])),
        encode(&text("apple-appattest")),
        replace("authData", text("not bytes")),
        replace("attStmt", Value::Bytes(vec![1, 2, 3])),
        replace("fmt", Value::Integer(1.into())),
        replace(
            "attStmt",
            Value::Map(vec![
                (text("x5c"), Value::Bytes(vec![])),
                (text("receipt"), Value::Bytes(vec![])),
            ]),
        ),
        replace(
            "attStmt",
            Value::Map(vec![
                (text("x5c"), Value::Array(vec![text("cert")])),
                (text("receipt"), Value::Bytes(vec![])),
            ]),
        ),
        // A missing field.
        encode(&Value::Map(
            entries
                .iter()
                .filter(|(k, _)| k.as_text() != Some("authData"))
                .cloned()
                .collect(),
        )),
        // A duplicated field.
        encode(&Value::Map(
            entries
                .iter()
                .chain(entries.iter().take(1))
                .cloned()
                .collect(),
        )),
    ];
    for (i, object) in cases.iter().enumerate() {
        let err =
            verify_attestation(&cfg, object, &fx.key_id(), CLIENT_DATA, fx.now()).unwrap_err();
        assert_eq!(err, Refusal::MalformedCbor, "case {i}");
    }
}

#[test]
fn oversized_object_is_refused_before_parsing() {
    let fx = fixture();
    let object = vec![0u8; keygate_attest::apple::MAX_ATTESTATION_BYTES + 1];
    let err =
        verify_attestation(&fx.config(), &object, &fx.key_id(), CLIENT_DATA, fx.now()).unwrap_err();
    assert_eq!(err.code(), "too_large");
}

#[test]
fn wrong_fmt_is_wrong_format() {
    let fx = fixture();
    let tweaks = AttestationTweaks {
        fmt: Some("packed".into()),
        ..Default::default()
    };
    assert_eq!(refusal(&fx, &tweaks).code(), "wrong_format");
}

#[test]
fn chain_to_another_root_is_wrong_root() {
    let fx = fixture();
    let tweaks = AttestationTweaks {
        other_root: true,
        ..Default::default()
    };
    assert_eq!(refusal(&fx, &tweaks), Refusal::WrongRoot);
    // And the genuine object is refused by a config that trusts only another root.
    let other = fixture();
    let mut cfg = fx.config();
    cfg.roots = other.config().roots;
    let err = verify_attestation(
        &cfg,
        &fx.attestation(CLIENT_DATA),
        &fx.key_id(),
        CLIENT_DATA,
        fx.now(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "wrong_root");
}

#[test]
fn apple_root_does_not_accept_test_chains() {
    let fx = fixture();
    let mut cfg = keygate_attest::apple::AppAttestConfig::apple(TEAM, BUNDLE).unwrap();
    cfg.allow_development = true;
    let err = verify_attestation(
        &cfg,
        &fx.attestation(CLIENT_DATA),
        &fx.key_id(),
        CLIENT_DATA,
        fx.now(),
    )
    .unwrap_err();
    assert_eq!(err, Refusal::WrongRoot);
}

#[test]
fn leaf_signed_by_another_key_is_chain_invalid() {
    for curve in [IntermediateCurve::P384, IntermediateCurve::P256] {
        let fx = AppAttestFixture::with_curve(TEAM, BUNDLE, curve);
        let tweaks = AttestationTweaks {
            leaf_signed_by_other_key: true,
            ..Default::default()
        };
        assert_eq!(refusal(&fx, &tweaks).code(), "chain_invalid");
    }
}

/// Each rule of the chain and the authenticator data broken alone, with its refusal.
#[test]
fn each_broken_rule_is_refused_with_its_reason() {
    let fx = fixture();
    let cases = [
        (
            "intermediate_that_is_not_a_ca_is_chain_invalid",
            AttestationTweaks {
                intermediate_not_ca: true,
                ..Default::default()
            },
            Refusal::ChainInvalid,
        ),
        (
            "intermediate_without_cert_sign_usage_is_chain_invalid",
            AttestationTweaks {
                intermediate_without_cert_sign: true,
                ..Default::default()
            },
            Refusal::ChainInvalid,
        ),
        (
            "unknown_critical_extension_is_chain_invalid",
            AttestationTweaks {
                unknown_critical_extension: true,
                ..Default::default()
            },
            Refusal::ChainInvalid,
        ),
        (
            "missing_nonce_extension_is_malformed_certificate",
            AttestationTweaks {
                omit_nonce_extension: true,
                ..Default::default()
            },
            Refusal::MalformedCertificate,
        ),
        (
            "nonzero_counter_is_refused",
            AttestationTweaks {
                counter: 1,
                ..Default::default()
            },
            Refusal::CounterNotZero,
        ),
        (
            "wrong_aaguid_is_refused",
            AttestationTweaks {
                aaguid: Some(*b"appattest\0\0\0\0\0\0\x01"),
                ..Default::default()
            },
            Refusal::WrongAaguid,
        ),
    ];
    for (case, tweaks, expected) in cases {
        assert_eq!(refusal(&fx, &tweaks), expected, "{case}");
    }
}

fn with_x5c(fx: &AppAttestFixture, edit: impl Fn(&mut Vec<Value>)) -> Vec<u8> {
    let mut value: Value = ciborium::from_reader(fx.attestation(CLIENT_DATA).as_slice()).unwrap();
    for (k, v) in value.as_map_mut().unwrap() {
        if k.as_text() == Some("attStmt") {
            for (k2, v2) in v.as_map_mut().unwrap() {
                if k2.as_text() == Some("x5c") {
                    edit(v2.as_array_mut().unwrap());
                }
            }
        }
    }
    encode(&value)
}

#[test]
fn x5c_of_other_lengths_is_refused() {
    let fx = fixture();
    let root = Value::Bytes(der::Encode::to_der(&fx.root_certificate()).unwrap());
    // Root appended: Apple sends two certificates, so three is not a chain this accepts.
    let three = with_x5c(&fx, |x5c| x5c.push(root.clone()));
    let err =
        verify_attestation(&fx.config(), &three, &fx.key_id(), CLIENT_DATA, fx.now()).unwrap_err();
    assert_eq!(err, Refusal::ChainInvalid);
    let one = with_x5c(&fx, |x5c| x5c.truncate(1));
    let err =
        verify_attestation(&fx.config(), &one, &fx.key_id(), CLIENT_DATA, fx.now()).unwrap_err();
    assert_eq!(err, Refusal::ChainInvalid);
    // More than the decoding bound.
    let five = with_x5c(&fx, |x5c| {
        let first = x5c[0].clone();
        x5c.extend(std::iter::repeat_n(first, 3));
    });
    let err =
        verify_attestation(&fx.config(), &five, &fx.key_id(), CLIENT_DATA, fx.now()).unwrap_err();
    assert_eq!(err, Refusal::MalformedCbor);
}

#[test]
fn swapped_certificates_are_chain_invalid() {
    let fx = fixture();
    let swapped = with_x5c(&fx, |x5c| x5c.reverse());
    let err = verify_attestation(&fx.config(), &swapped, &fx.key_id(), CLIENT_DATA, fx.now())
        .unwrap_err();
    assert_eq!(err, Refusal::ChainInvalid);
}

#[test]
fn expired_leaf_is_cert_expired() {
    let fx = fixture();
    let tweaks = AttestationTweaks {
        leaf_expired: true,
        ..Default::default()
    };
    assert_eq!(refusal(&fx, &tweaks).code(), "cert_expired");
    // The valid object outside its leaf's validity, both ways (the fixture's leaf lasts
    // from a day before `fx.now()` until two days after today, whichever is later).
    let object = fx.attestation(CLIENT_DATA);
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let after = fx.now().max(today) + 3 * 86_400;
    for now in [fx.now() - 3 * 86_400, after, -1] {
        let err =
            verify_attestation(&fx.config(), &object, &fx.key_id(), CLIENT_DATA, now).unwrap_err();
        assert_eq!(err, Refusal::CertExpired, "now = {now}");
    }
}

#[test]
fn client_data_differing_by_one_byte_is_nonce_mismatch() {
    let fx = fixture();
    let object = fx.attestation(CLIENT_DATA);
    let mut other = CLIENT_DATA.to_vec();
    *other.last_mut().unwrap() ^= 0x01;
    let err =
        verify_attestation(&fx.config(), &object, &fx.key_id(), &other, fx.now()).unwrap_err();
    assert_eq!(err.code(), "nonce_mismatch");
    let tweaks = AttestationTweaks {
        nonce_client_data: Some(other),
        ..Default::default()
    };
    assert_eq!(refusal(&fx, &tweaks), Refusal::NonceMismatch);
}

#[test]
fn other_app_is_rp_id_mismatch() {
    let fx = fixture();
    for rp_id in [
        format!("{TEAM}.com.example.other"),
        format!("ZZZZZ99999.{BUNDLE}"),
    ] {
        let tweaks = AttestationTweaks {
            rp_id: Some(rp_id.clone()),
            ..Default::default()
        };
        assert_eq!(refusal(&fx, &tweaks).code(), "rp_id_mismatch", "{rp_id}");
    }
    // A config for another bundle refuses the genuine object.
    let mut cfg = fx.config();
    cfg.bundle_id = "com.example.other".into();
    let err = verify_attestation(
        &cfg,
        &fx.attestation(CLIENT_DATA),
        &fx.key_id(),
        CLIENT_DATA,
        fx.now(),
    )
    .unwrap_err();
    assert_eq!(err, Refusal::RpIdMismatch);
}

#[test]
fn key_id_mismatch_is_refused() {
    let fx = fixture();
    let object = fx.attestation(CLIENT_DATA);
    let mut wrong = fx.key_id();
    wrong[0] ^= 0x80;
    let err = verify_attestation(&fx.config(), &object, &wrong, CLIENT_DATA, fx.now()).unwrap_err();
    assert_eq!(err.code(), "key_id_mismatch");
    let err = verify_attestation(
        &fx.config(),
        &object,
        &fx.key_id()[..31],
        CLIENT_DATA,
        fx.now(),
    )
    .unwrap_err();
    assert_eq!(err, Refusal::KeyIdMismatch);
    // The credential ID in authData differs from the key ID.
    let tweaks = AttestationTweaks {
        credential_id: Some(wrong.to_vec()),
        ..Default::default()
    };
    assert_eq!(refusal(&fx, &tweaks), Refusal::KeyIdMismatch);
}

#[test]
fn development_aaguid_needs_allow_development() {
    let fx = fixture();
    let tweaks = AttestationTweaks {
        aaguid: Some(AAGUID_DEVELOPMENT),
        ..Default::default()
    };
    assert_eq!(refusal(&fx, &tweaks), Refusal::WrongAaguid);
    let mut cfg = fx.config();
    cfg.allow_development = true;
    let object = fx.attestation_with(CLIENT_DATA, &tweaks);
    let key = verify_attestation(&cfg, &object, &fx.key_id(), CLIENT_DATA, fx.now()).unwrap();
    assert_eq!(key.environment, Environment::Development);
}

#[test]
fn assertions_verify_with_increasing_counters() {
    let fx = fixture();
    let cfg = fx.config();
    let key = verify_attestation(
        &cfg,
        &fx.attestation(CLIENT_DATA),
        &fx.key_id(),
        CLIENT_DATA,
        fx.now(),
    )
    .unwrap();
    let mut counter = key.counter;
    for next in [1, 2, 7, u32::MAX] {
        let request = format!("request {next}");
        let assertion = fx.assertion(request.as_bytes(), next);
        counter = verify_assertion(
            &cfg,
            &key.public_key_sec1,
            counter,
            &assertion,
            request.as_bytes(),
        )
        .expect("valid assertion");
        assert_eq!(counter, next);
    }
}

#[test]
fn replayed_or_lower_counter_is_refused() {
    let fx = fixture();
    let cfg = fx.config();
    let assertion = fx.assertion(CLIENT_DATA, 5);
    for stored in [5, 6, u32::MAX] {
        let err = verify_assertion(&cfg, &fx.public_key_sec1(), stored, &assertion, CLIENT_DATA)
            .unwrap_err();
        assert_eq!(err.code(), "counter_not_increasing", "stored {stored}");
    }
    assert_eq!(
        verify_assertion(&cfg, &fx.public_key_sec1(), 4, &assertion, CLIENT_DATA),
        Ok(5)
    );
}

/// `assertion` checked against `fx`'s attested key, with stored counter 0.
fn assertion_verdict(
    fx: &AppAttestFixture,
    assertion: &[u8],
    client_data: &[u8],
) -> Result<u32, Refusal> {
    verify_assertion(
        &fx.config(),
        &fx.public_key_sec1(),
        0,
        assertion,
        client_data,
    )
}

#[test]
fn assertion_by_another_key_is_signature_invalid() {
    let fx = fixture();
    let tweaks = AssertionTweaks {
        other_key: true,
        ..Default::default()
    };
    let assertion = fx.assertion_with(CLIENT_DATA, 1, &tweaks);
    let err = assertion_verdict(&fx, &assertion, CLIENT_DATA).unwrap_err();
    assert_eq!(err.code(), "signature_invalid");
    // And a valid assertion checked against another stored key.
    let other = fixture();
    let err = verify_assertion(
        &fx.config(),
        &other.public_key_sec1(),
        0,
        &fx.assertion(CLIENT_DATA, 1),
        CLIENT_DATA,
    )
    .unwrap_err();
    assert_eq!(err, Refusal::SignatureInvalid);
}

#[test]
fn assertion_for_other_client_data_is_signature_invalid() {
    let fx = fixture();
    let assertion = fx.assertion(CLIENT_DATA, 1);
    let mut other = CLIENT_DATA.to_vec();
    other[0] ^= 0x20;
    let err = assertion_verdict(&fx, &assertion, &other).unwrap_err();
    assert_eq!(err, Refusal::SignatureInvalid);
}

#[test]
fn assertion_for_other_app_is_rp_id_mismatch() {
    let fx = fixture();
    let tweaks = AssertionTweaks {
        rp_id: Some(format!("{TEAM}.com.example.other")),
        ..Default::default()
    };
    let assertion = fx.assertion_with(CLIENT_DATA, 1, &tweaks);
    let err = assertion_verdict(&fx, &assertion, CLIENT_DATA).unwrap_err();
    assert_eq!(err, Refusal::RpIdMismatch);
}

#[test]
fn malformed_assertions_are_refused() {
    let fx = fixture();
    let cfg = fx.config();
    let key = fx.public_key_sec1();
    let valid = fx.assertion(CLIENT_DATA, 1);
    let err = verify_assertion(&cfg, &key, 0, &valid[..valid.len() - 1], CLIENT_DATA).unwrap_err();
    assert_eq!(err, Refusal::MalformedCbor);
    let short_auth = encode(&Value::Map(vec![
        (text("signature"), Value::Bytes(vec![0x30, 0x00])),
        (text("authenticatorData"), Value::Bytes(vec![0; 36])),
    ]));
    assert_eq!(
        verify_assertion(&cfg, &key, 0, &short_auth, CLIENT_DATA),
        Err(Refusal::MalformedAuthData)
    );
    assert_eq!(
        verify_assertion(&cfg, &key[..64], 0, &valid, CLIENT_DATA),
        Err(Refusal::InvalidStoredKey)
    );
}
