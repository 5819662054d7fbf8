//! JOSE and access-token tests: RFC vectors and one breaking input per requirement
//! S01–S07.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use keygate_auth::UnixTime;
use keygate_auth::access::{self, ACCESS_TOKEN_TYP};
use keygate_auth::b64;
use keygate_auth::error::{ErrorCode, Reason};
use keygate_auth::jwk::PublicJwk;
use keygate_auth::jws::{self, Algorithm, JoseError};
use keygate_auth::keys::{KeyError, KeyState, RotationPolicy, SigningKey, SigningKeySet};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn issue(keys: &SigningKeySet) -> String {
    access::issue(&config(), keys, &grant(None), NOW)
        .unwrap()
        .token
        .expose_secret()
        .to_owned()
}

fn verify_reason(keys: &SigningKeySet, token: &str) -> Reason {
    let err = access::verify(&config(), keys, token, NOW).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidToken);
    err.reason()
}

fn active_kid(keys: &SigningKeySet) -> String {
    keys.active().unwrap().kid.as_str().to_owned()
}

fn header(keys: &SigningKeySet, alg: &str, extra: &str) -> String {
    format!(
        r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"{extra}}}"#,
        active_kid(keys)
    )
}

// ---------------------------------------------------------------- RFC vectors

#[test]
fn rfc7638_rsa_thumbprint() {
    let jwk = obj(json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    }));
    let key = PublicJwk::from_json(&jwk).unwrap();
    assert_eq!(
        key.thumbprint().as_str(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    // RSA is for thumbprints only: it never verifies anything.
    assert!(key.verification_key().is_err());
}

#[test]
fn rfc9449_ec_thumbprint_and_ath() {
    let jwk = obj(json!({
        "kty": "EC", "crv": "P-256",
        "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"
    }));
    let key = PublicJwk::from_json(&jwk).unwrap();
    assert_eq!(
        key.thumbprint().as_str(),
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    );
    assert!(key.verification_key().is_ok());
    assert_eq!(
        keygate_auth::dpop::ath_for("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

#[test]
fn rfc8037_a4_ed25519_signature() {
    let d = b64::decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").unwrap();
    let key = SigningKey::from_secret_bytes(Algorithm::EdDsa, &d).unwrap();
    match key.verification_key().to_jwk() {
        PublicJwk::Ed25519 { x } => assert_eq!(x, "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
        other => panic!("unexpected {other:?}"),
    }
    let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    let expected =
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    assert_eq!(b64::encode(key.sign(input.as_bytes())), expected);
    let token = format!("{input}.{expected}");
    let parsed = jws::parse_compact(&token).unwrap();
    assert_eq!(parsed.header().alg(), Algorithm::EdDsa);
    parsed.verify(key.verification_key()).unwrap();
    assert_eq!(parsed.payload(), b"Example of Ed25519 signing");
}

// ---------------------------------------------------------------- issue / verify

#[test]
fn issued_tokens_verify_with_both_algorithms_s07() {
    for alg in [Algorithm::EdDsa, Algorithm::Es256] {
        let keys = key_set(alg);
        let issued = access::issue(&config(), &keys, &grant(None), NOW).unwrap();
        assert_eq!(issued.expires_in, 300, "S07: five minutes by default");
        let token = issued.token.expose_secret();
        let parsed = jws::parse_compact(token).unwrap();
        assert_eq!(parsed.header().typ(), Some(ACCESS_TOKEN_TYP));
        assert_eq!(parsed.header().alg(), alg);
        let claims = parsed.claims().unwrap();
        assert_eq!(claims["aud"], AUDIENCE);
        assert_eq!(claims["scope"], "ai maps");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            300
        );
        let v = access::verify(&config(), &keys, token, NOW).unwrap();
        assert_eq!(v.user().as_str(), "user-1");
        assert_eq!(v.client().as_str(), "app-1");
        assert_eq!(v.session().as_str(), "family-1");
        assert_eq!(v.scopes().to_string(), "ai maps");
        assert!(v.jkt().is_none());
        // The secret's Debug never shows the token.
        assert!(!format!("{issued:?}").contains(token));
    }
}

// ---------------------------------------------------------------- S01

#[test]
fn s01_alg_none_in_any_case_is_rejected() {
    let keys = key_set(Algorithm::EdDsa);
    let payload = standard_claims(NOW).to_string();
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = header(&keys, none, "");
        let unsigned = format!("{}.{}.", b64::encode(&h), b64::encode(&payload));
        // Empty signature: malformed before alg is even looked at.
        assert_eq!(
            verify_reason(&keys, &unsigned),
            Reason::Jose(JoseError::Malformed)
        );
        let with_sig = format!("{}.{}.AAAA", b64::encode(&h), b64::encode(&payload));
        assert_eq!(
            verify_reason(&keys, &with_sig),
            Reason::Jose(JoseError::AlgNone)
        );
    }
}

#[test]
fn s01_hmac_algorithms_are_rejected() {
    use hmac::{Hmac, Mac};
    let keys = key_set(Algorithm::EdDsa);
    // Classic confusion: HMAC keyed with the public key bytes.
    let public = keys
        .active()
        .unwrap()
        .key
        .verification_key()
        .to_jwk()
        .to_json();
    let secret = public["x"].as_str().unwrap().as_bytes().to_vec();
    for alg in ["HS256", "HS384", "HS512", "hs256"] {
        let h = header(&keys, alg, "");
        let input = format!(
            "{}.{}",
            b64::encode(&h),
            b64::encode(standard_claims(NOW).to_string())
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", b64::encode(mac.finalize().into_bytes()));
        assert_eq!(
            verify_reason(&keys, &token),
            Reason::Jose(JoseError::AlgSymmetric)
        );
    }
}

#[test]
fn s01_alg_that_does_not_fit_the_key_is_rejected() {
    let keys = key_set(Algorithm::EdDsa);
    let key = &keys.active().unwrap().key;
    // ES256 in the header, signed by the Ed25519 key that the kid names.
    let token = raw_token(
        key,
        &header(&keys, "ES256", ""),
        &standard_claims(NOW).to_string(),
    );
    assert_eq!(
        verify_reason(&keys, &token),
        Reason::Jose(JoseError::AlgKeyMismatch)
    );
    // RS256 and friends are not accepted at all.
    let token = raw_token(
        key,
        &header(&keys, "RS256", ""),
        &standard_claims(NOW).to_string(),
    );
    assert_eq!(
        verify_reason(&keys, &token),
        Reason::Jose(JoseError::AlgUnsupported)
    );
}

#[test]
fn s01_per_token_type_allowed_algorithms() {
    let keys = key_set(Algorithm::Es256);
    let token = issue(&keys);
    let mut cfg = config();
    cfg.allowed_algs = vec![Algorithm::EdDsa];
    let err = access::verify(&cfg, &keys, &token, NOW).unwrap_err();
    assert_eq!(err.reason(), Reason::AlgNotAllowed);
}

/// RFC 9864's fully-specified `Ed25519` is accepted in DPoP proofs only: keygate signs
/// its access tokens as `EdDSA`, so a token naming `Ed25519` was not made by keygate's
/// signer and is refused even with a valid signature by keygate's own key.
#[test]
fn s01_access_tokens_refuse_the_fully_specified_ed25519_name() {
    let keys = key_set(Algorithm::EdDsa);
    let key = &keys.active().unwrap().key;
    let token = raw_token(
        key,
        &header(&keys, "Ed25519", ""),
        &standard_claims(NOW).to_string(),
    );
    let err = access::verify(&config(), &keys, &token, NOW).unwrap_err();
    assert_eq!(err.reason(), Reason::AlgNotAllowed);
}

// ---------------------------------------------------------------- S02

#[test]
fn s02_key_carrying_headers_are_rejected_on_access_tokens() {
    let keys = key_set(Algorithm::EdDsa);
    let key = &keys.active().unwrap().key;
    let jwk = Value::Object(key.verification_key().to_jwk().to_json()).to_string();
    for extra in [
        r#","jku":"https://evil.example/jwks""#.to_owned(),
        r#","x5u":"https://evil.example/cert""#.to_owned(),
        r#","x5c":["MIIB"]"#.to_owned(),
        r#","x5t":"AAAA""#.to_owned(),
        r#","x5t#S256":"AAAA""#.to_owned(),
        format!(r#","jwk":{jwk}"#),
    ] {
        let token = raw_token(
            key,
            &header(&keys, "EdDSA", &extra),
            &standard_claims(NOW).to_string(),
        );
        assert_eq!(
            verify_reason(&keys, &token),
            Reason::ForbiddenKeyHeader,
            "{extra}"
        );
    }
}

#[test]
fn s02_kid_is_a_lookup_in_keygates_own_set_only() {
    let keys = key_set(Algorithm::EdDsa);
    let attacker = SigningKey::generate(Algorithm::EdDsa);
    let claims = standard_claims(NOW).to_string();
    let unknown = raw_token(
        &attacker,
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":"attacker"}"#,
        &claims,
    );
    assert_eq!(verify_reason(&keys, &unknown), Reason::UnknownKid);
    let missing = raw_token(&attacker, r#"{"alg":"EdDSA","typ":"at+jwt"}"#, &claims);
    assert_eq!(verify_reason(&keys, &missing), Reason::MissingKid);
    // Right kid, wrong key: the signature fails.
    let forged = raw_token(&attacker, &header(&keys, "EdDSA", ""), &claims);
    assert_eq!(
        verify_reason(&keys, &forged),
        Reason::Jose(JoseError::BadSignature)
    );
}

// ---------------------------------------------------------------- S03

#[test]
fn s03_access_token_verifier_rejects_other_types() {
    let keys = key_set(Algorithm::EdDsa);
    let key = &keys.active().unwrap().key;
    let kid = active_kid(&keys);
    let claims = standard_claims(NOW).to_string();
    for typ in [
        r#","typ":"dpop+jwt""#,
        r#","typ":"JWT""#,
        "",
        r#","typ":"at+jwt+x""#,
    ] {
        let h = format!(r#"{{"alg":"EdDSA","kid":"{kid}"{typ}}}"#);
        let token = raw_token(key, &h, &claims);
        assert_eq!(verify_reason(&keys, &token), Reason::WrongType, "{typ}");
    }
    // The media-type form is the same type.
    let h = format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"application/AT+JWT"}}"#);
    access::verify(&config(), &keys, &raw_token(key, &h, &claims), NOW).unwrap();
}

// ---------------------------------------------------------------- S04

#[test]
fn s04_issuer_and_audience_are_checked_exactly() {
    let keys = key_set(Algorithm::EdDsa);
    let key = &keys.active().unwrap().key;
    let h = header(&keys, "EdDSA", "");
    for (field, value, reason) in [
        (
            "iss",
            json!("https://gate.example.com/"),
            Reason::WrongIssuer,
        ),
        (
            "iss",
            json!("https://GATE.example.com"),
            Reason::WrongIssuer,
        ),
        ("iss", json!("https://evil.example"), Reason::WrongIssuer),
        ("aud", json!("https://other.example"), Reason::WrongAudience),
        (
            "aud",
            json!(["https://other.example"]),
            Reason::WrongAudience,
        ),
        ("aud", json!(7), Reason::MalformedClaims),
    ] {
        let mut claims = standard_claims(NOW);
        claims[field] = value;
        let token = raw_token(key, &h, &claims.to_string());
        assert_eq!(verify_reason(&keys, &token), reason, "{field}");
    }
    let mut claims = standard_claims(NOW);
    claims["aud"] = json!(["x", AUDIENCE]);
    access::verify(
        &config(),
        &keys,
        &raw_token(key, &h, &claims.to_string()),
        NOW,
    )
    .unwrap();
}

#[test]
fn s04_times_are_checked_with_at_most_60s_skew() {
    let keys = key_set(Algorithm::EdDsa);
    let token = issue(&keys);
    let cfg = config();
    // exp = NOW + 300.
    access::verify(&cfg, &keys, &token, NOW.plus(359)).unwrap();
    let err = access::verify(&cfg, &keys, &token, NOW.plus(360)).unwrap_err();
    assert_eq!(err.reason(), Reason::Expired);
    // A larger configured skew is capped at 60 s.
    let mut lax = config();
    lax.skew_secs = 3600;
    assert_eq!(
        access::verify(&lax, &keys, &token, NOW.plus(400))
            .unwrap_err()
            .reason(),
        Reason::Expired
    );
    // nbf and iat in the future.
    assert_eq!(
        access::verify(&cfg, &keys, &token, NOW.minus(61))
            .unwrap_err()
            .reason(),
        Reason::NotYetValid
    );
    let key = &keys.active().unwrap().key;
    let mut claims = standard_claims(NOW);
    claims["iat"] = json!(NOW.0 + 120);
    let token = raw_token(key, &header(&keys, "EdDSA", ""), &claims.to_string());
    assert_eq!(verify_reason(&keys, &token), Reason::IssuedInFuture);
    let mut claims = standard_claims(NOW);
    claims["exp"] = json!(NOW.0 + 86_400);
    let token = raw_token(key, &header(&keys, "EdDSA", ""), &claims.to_string());
    assert_eq!(verify_reason(&keys, &token), Reason::LifetimeTooLong);
    let mut claims = standard_claims(NOW);
    claims.as_object_mut().unwrap().remove("exp");
    let token = raw_token(key, &header(&keys, "EdDSA", ""), &claims.to_string());
    assert_eq!(verify_reason(&keys, &token), Reason::MalformedClaims);
}

// ---------------------------------------------------------------- S05

fn der(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_some_and(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    let body: Vec<u8> = [int(r), int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

#[test]
fn s05_es256_signatures_must_be_64_byte_r_s_in_range() {
    let keys = key_set(Algorithm::Es256);
    let token = issue(&keys);
    access::verify(&config(), &keys, &token, NOW).unwrap();
    let sig = signature_of(&token);
    let (r, s) = sig.split_at(32);
    let bad_encoding = Reason::Jose(JoseError::BadSignatureEncoding);
    // DER, truncated, extended.
    assert_eq!(
        verify_reason(&keys, &with_signature(&token, &der(r, s))),
        bad_encoding
    );
    assert_eq!(
        verify_reason(&keys, &with_signature(&token, &sig[..63])),
        bad_encoding
    );
    let mut long = sig.clone();
    long.push(0);
    assert_eq!(
        verify_reason(&keys, &with_signature(&token, &long)),
        bad_encoding
    );
    // CVE-2022-21449: r = s = 0.
    assert_eq!(
        verify_reason(&keys, &with_signature(&token, &[0u8; 64])),
        bad_encoding
    );
    for (r2, s2) in [
        (vec![0u8; 32], s.to_vec()),
        (r.to_vec(), vec![0u8; 32]),
        (P256_N.to_vec(), s.to_vec()),
        (r.to_vec(), P256_N.to_vec()),
        (r.to_vec(), vec![0xff; 32]),
    ] {
        let bad = [r2, s2].concat();
        assert_eq!(
            verify_reason(&keys, &with_signature(&token, &bad)),
            bad_encoding
        );
    }
    // A flipped bit is a plain bad signature.
    let mut flipped = sig.clone();
    flipped[40] ^= 1;
    assert_eq!(
        verify_reason(&keys, &with_signature(&token, &flipped)),
        Reason::Jose(JoseError::BadSignature)
    );
}

#[test]
fn s05_token_size_is_bounded() {
    let keys = key_set(Algorithm::EdDsa);
    let key = &keys.active().unwrap().key;
    let mut claims = standard_claims(NOW);
    claims["pad"] = json!("x".repeat(jws::MAX_COMPACT_LEN));
    let token = raw_token(key, &header(&keys, "EdDSA", ""), &claims.to_string());
    assert_eq!(
        verify_reason(&keys, &token),
        Reason::Jose(JoseError::TooLarge)
    );
}

#[test]
fn s05_duplicate_member_names_are_rejected() {
    let keys = key_set(Algorithm::EdDsa);
    let key = &keys.active().unwrap().key;
    let kid = active_kid(&keys);
    let claims = standard_claims(NOW).to_string();
    let dup_header = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","alg":"none"}}"#);
    let token = raw_token(key, &dup_header, &claims);
    assert_eq!(
        verify_reason(&keys, &token),
        Reason::Jose(JoseError::BadJson)
    );
    let dup_typ = format!(r#"{{"alg":"EdDSA","typ":"dpop+jwt","kid":"{kid}","typ":"at+jwt"}}"#);
    assert_eq!(
        verify_reason(&keys, &raw_token(key, &dup_typ, &claims)),
        Reason::Jose(JoseError::BadJson)
    );
    let dup_payload = claims.replacen('{', r#"{"sub":"admin","#, 1);
    let token = raw_token(key, &header(&keys, "EdDSA", ""), &dup_payload);
    assert_eq!(
        verify_reason(&keys, &token),
        Reason::Jose(JoseError::BadJson)
    );
}

#[test]
fn s05_unknown_crit_is_rejected() {
    let keys = key_set(Algorithm::EdDsa);
    let key = &keys.active().unwrap().key;
    let claims = standard_claims(NOW).to_string();
    for extra in [
        r#","crit":["exp"],"exp":1"#,
        r#","crit":[]"#,
        r#","b64":false,"crit":["b64"]"#,
    ] {
        let token = raw_token(key, &header(&keys, "EdDSA", extra), &claims);
        assert_eq!(
            verify_reason(&keys, &token),
            Reason::Jose(JoseError::Crit),
            "{extra}"
        );
    }
}

#[test]
fn s05_only_canonical_unpadded_base64url_is_accepted() {
    let keys = key_set(Algorithm::EdDsa);
    let token = issue(&keys);
    let (h, rest) = token.split_once('.').unwrap();
    let malformed = Reason::Jose(JoseError::Malformed);
    for bad in [
        format!("{h}=.{rest}"),
        format!("{token}="),
        format!("/{token}"),
        format!("+{token}"),
        format!(" {token}"),
        format!("{token}."),
        format!("{h}..{rest}"),
        token.replacen('.', "", 1),
    ] {
        assert_eq!(verify_reason(&keys, &bad), malformed, "{bad}");
    }
}

// ---------------------------------------------------------------- S06

#[test]
fn s06_rotation_publishes_before_signing_and_keeps_retired_keys() {
    let policy = RotationPolicy {
        min_publish_secs: 3600,
        retire_keep_secs: 360,
    };
    let first = SigningKey::generate(Algorithm::EdDsa);
    let mut keys = SigningKeySet::bootstrap(policy, first, NOW);
    let old_kid = active_kid(&keys);
    let old_token = issue(&keys);

    let next_kid = keys
        .add_next(SigningKey::generate(Algorithm::Es256), NOW)
        .unwrap();
    // Published before it signs.
    let jwks = keys.jwks(NOW).to_json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&next_kid.as_str()));
    assert_eq!(active_kid(&keys), old_kid, "next key does not sign yet");
    assert_eq!(
        keys.add_next(SigningKey::generate(Algorithm::EdDsa), NOW),
        Err(KeyError::NextExists)
    );
    // Not before it has been published for the JWKS cache lifetime.
    assert_eq!(keys.promote(NOW.plus(3599)), Err(KeyError::NextTooFresh));
    let t = NOW.plus(3600);
    keys.promote(t).unwrap();
    assert_eq!(active_kid(&keys), next_kid.as_str());
    // The retired key still verifies the tokens it signed, and is still published …
    let mut cfg = config();
    cfg.max_lifetime_secs = 100_000;
    let retired_token = {
        // A token signed by the old key just before promotion.
        let mut old_keys = Vec::new();
        for e in keys.entries() {
            if matches!(e.state, KeyState::Retired { .. }) {
                old_keys.push(e.kid.clone());
            }
        }
        assert_eq!(old_keys.len(), 1);
        old_token.clone()
    };
    let err = access::verify(&cfg, &keys, &retired_token, t).unwrap_err();
    assert_eq!(
        err.reason(),
        Reason::Expired,
        "the signature and kid were accepted"
    );
    assert!(keys.verification_key(&old_kid, t.plus(359)).is_some());
    assert!(
        keys.jwks(t.plus(359))
            .keys()
            .iter()
            .any(|k| k["kid"] == old_kid.as_str())
    );
    // … until every token it signed has expired.
    assert!(keys.verification_key(&old_kid, t.plus(360)).is_none());
    assert!(
        !keys
            .jwks(t.plus(360))
            .keys()
            .iter()
            .any(|k| k["kid"] == old_kid.as_str())
    );
    let removed = keys.prune(t.plus(360));
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].as_str(), old_kid);
    // New tokens carry the new kid and verify.
    let new_token = access::issue(&config(), &keys, &grant(None), t).unwrap();
    let parsed = jws::parse_compact(new_token.token.expose_secret()).unwrap();
    assert_eq!(parsed.header().kid(), Some(next_kid.as_str()));
    assert_eq!(parsed.header().alg(), Algorithm::Es256);
    access::verify(&config(), &keys, new_token.token.expose_secret(), t).unwrap();
}

#[test]
fn s06_jwks_never_holds_private_members() {
    let mut keys = key_set(Algorithm::EdDsa);
    keys.add_next(SigningKey::generate(Algorithm::Es256), NOW)
        .unwrap();
    let text = keys.jwks(NOW).to_json().to_string();
    for key in keys.jwks(NOW).keys() {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(!key.contains_key(private));
        }
        assert_eq!(key["use"], "sig");
        let parsed = PublicJwk::from_json(key).unwrap();
        assert_eq!(parsed.thumbprint().as_str(), key["kid"].as_str().unwrap());
    }
    assert!(!text.contains("\"d\""));
    // Nor does any Debug output show secret key material.
    for e in keys.entries() {
        let secret = e.key.to_secret_bytes();
        let dbg = format!("{:?}", e.key);
        assert!(dbg.contains("REDACTED"));
        assert!(!dbg.contains(&b64::encode(secret.expose_secret())));
    }
}

#[test]
fn key_material_round_trips_for_storage() {
    for alg in [Algorithm::EdDsa, Algorithm::Es256] {
        let key = SigningKey::generate(alg);
        let restored =
            SigningKey::from_secret_bytes(alg, key.to_secret_bytes().expose_secret()).unwrap();
        assert_eq!(restored.verification_key(), key.verification_key());
    }
    assert!(SigningKey::from_secret_bytes(Algorithm::Es256, &[0u8; 32]).is_err());
    assert!(SigningKey::from_secret_bytes(Algorithm::EdDsa, &[0u8; 31]).is_err());
    let _ = UnixTime(0);
}

// ---------------------------------------------------------------- trust tiers

#[test]
fn the_attestation_tier_travels_in_the_att_claim_and_an_unknown_one_is_refused() {
    use keygate_auth::access::TrustTier;
    let keys = key_set(Algorithm::EdDsa);
    for tier in [
        None,
        Some(TrustTier::Failed),
        Some(TrustTier::Unattested),
        Some(TrustTier::Attested),
    ] {
        let mut g = grant(None);
        g.tier = tier;
        let issued = access::issue(&config(), &keys, &g, NOW).unwrap();
        let v = access::verify(&config(), &keys, issued.token.expose_secret(), NOW).unwrap();
        assert_eq!(v.tier(), tier);
    }
    assert!(
        TrustTier::Failed < TrustTier::Unattested && TrustTier::Unattested < TrustTier::Attested
    );
    // A tier keygate does not know is not a token keygate issued.
    let key = &keys.active().unwrap().key;
    let h = format!(
        r#"{{"alg":"EdDSA","kid":"{}","typ":"at+jwt"}}"#,
        active_kid(&keys)
    );
    let mut claims = standard_claims(NOW);
    claims["att"] = serde_json::json!("platinum");
    let token = raw_token(key, &h, &claims.to_string());
    assert_eq!(verify_reason(&keys, &token), Reason::MalformedClaims);
}
