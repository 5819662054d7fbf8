//! DPoP tests: the RFC 9449 example proofs, and one breaking input per check of
//! S13–S16.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_arguments
)]

mod common;

use std::future::Future;

use common::*;
use keygate_auth::access::{self, VerifiedAccessToken};
use keygate_auth::b64;
use keygate_auth::dpop::{
    self, DpopConfig, Freshness, InMemoryReplayCache, NonceIssuer, ProofClaims, ProofKeyCache,
    ProofRequest, PublicBaseUrl, ReplayCache, ReplayCacheUnavailable, ReplayKey, RestartGuard,
    VerifiedProof,
};
use keygate_auth::error::{Disposition, ErrorCode, Reason};
use keygate_auth::ids::Scope;
use keygate_auth::jwk::{Jkt, PublicJwk};
use keygate_auth::jws::{Algorithm, JoseError};
use keygate_auth::keys::SigningKey;
use keygate_auth::resource::{
    ResourceRequest, ResourceVerifier, RevocationCheck, RevocationUnavailable, verify_request,
};
use keygate_auth::{AuthError, UnixTime};
use secrecy::{ExposeSecret, SecretBox};
use serde_json::json;

const RFC_FIG2: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
const RFC_FIG13: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
const RFC_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

fn dpop_config(base: &str) -> DpopConfig {
    DpopConfig::new(PublicBaseUrl::parse(base).unwrap())
}

fn check(
    config: &DpopConfig,
    method: &str,
    target: &str,
    proofs: &[&str],
    token: Option<&str>,
    jkt: Option<&Jkt>,
    cache: &InMemoryReplayCache,
    now: UnixTime,
) -> Result<VerifiedProof, AuthError> {
    let headers: Vec<&[u8]> = proofs.iter().map(|p| p.as_bytes()).collect();
    let request = ProofRequest {
        method,
        target,
        dpop_headers: &headers,
        access_token: token,
        expected_jkt: jkt,
    };
    block_on(dpop::verify_proof(config, &request, cache, now))
}

fn cache() -> InMemoryReplayCache {
    InMemoryReplayCache::new(10_000)
}

const BASE: &str = "https://gate.example.com";
const TARGET: &str = "/oauth2/token";
const HTU: &str = "https://gate.example.com/oauth2/token";

fn proof(key: &SigningKey, htm: &str, htu: &str, iat: UnixTime, jti: &str) -> String {
    dpop::create_proof(
        key,
        &ProofClaims {
            htm,
            htu,
            iat,
            jti,
            nonce: None,
            access_token: None,
        },
    )
}

/// A proof for `POST` at the token endpoint carrying the server nonce `nonce`.
fn proof_with_nonce(key: &SigningKey, nonce: &str, jti: &str, iat: UnixTime) -> String {
    dpop::create_proof(
        key,
        &ProofClaims {
            htm: "POST",
            htu: HTU,
            iat,
            jti,
            nonce: Some(nonce),
            access_token: None,
        },
    )
}

fn reason(result: Result<VerifiedProof, AuthError>) -> Reason {
    let err = result.unwrap_err();
    err.reason()
}

// ---------------------------------------------------------------- RFC examples

#[test]
fn rfc9449_section_4_1_example_proof_verifies() {
    let config = dpop_config("https://server.example.com");
    let now = UnixTime(1_562_262_616);
    let verified = check(
        &config,
        "POST",
        "/token",
        &[RFC_FIG2],
        None,
        None,
        &cache(),
        now,
    )
    .unwrap();
    assert_eq!(verified.jkt().as_str(), RFC_JKT);
}

#[test]
fn rfc9449_section_7_1_example_proof_verifies() {
    let config = dpop_config("https://resource.example.org");
    let now = UnixTime(1_562_262_618);
    let jkt = Jkt::parse(RFC_JKT).unwrap();
    let c = cache();
    let verified = check(
        &config,
        "GET",
        "/protectedresource",
        &[RFC_FIG13],
        Some(RFC_TOKEN),
        Some(&jkt),
        &c,
        now,
    )
    .unwrap();
    assert_eq!(verified.jkt(), &jkt);
    // S14: the same proof a second time is a replay.
    let again = check(
        &config,
        "GET",
        "/protectedresource",
        &[RFC_FIG13],
        Some(RFC_TOKEN),
        Some(&jkt),
        &c,
        now,
    );
    assert_eq!(reason(again), Reason::Replayed);
}

// ---------------------------------------------------------------- S13

#[test]
fn s13_exactly_one_dpop_header() {
    let key = SigningKey::generate(Algorithm::Es256);
    let config = dpop_config(BASE);
    let a = proof(&key, "POST", HTU, NOW, "jti-a");
    let b = proof(&key, "POST", HTU, NOW, "jti-b");
    assert_eq!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[],
            None,
            None,
            &cache(),
            NOW
        )),
        Reason::MissingProof
    );
    let err = check(
        &config,
        "POST",
        TARGET,
        &[&a, &b],
        None,
        None,
        &cache(),
        NOW,
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::MultipleProofs);
    assert_eq!(err.code(), ErrorCode::InvalidDpopProof);
    // Two proofs folded into one header value are not a JWT.
    let folded = format!("{a}, {b}");
    assert!(matches!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[&folded],
            None,
            None,
            &cache(),
            NOW
        )),
        Reason::Jose(_)
    ));
    check(&config, "POST", TARGET, &[&a], None, None, &cache(), NOW).unwrap();
}

#[test]
fn s13_typ_must_be_dpop_jwt_and_access_tokens_are_not_proofs() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::Es256);
    let jwk = serde_json::Value::Object(key.verification_key().to_jwk().to_json());
    let body = json!({"jti":"j","htm":"POST","htu":HTU,"iat":NOW.0}).to_string();
    for typ in ["at+jwt", "JWT", "dpop+jwt2"] {
        let h = json!({"alg":"ES256","typ":typ,"jwk":jwk}).to_string();
        let p = raw_token(&key, &h, &body);
        assert_eq!(
            reason(check(
                &config,
                "POST",
                TARGET,
                &[&p],
                None,
                None,
                &cache(),
                NOW
            )),
            Reason::WrongType
        );
    }
    // A real keygate access token presented as a proof.
    let keys = key_set(Algorithm::Es256);
    let at = access::issue(&config_at(), &keys, &grant(None), NOW).unwrap();
    let at = at.token.expose_secret();
    assert_eq!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[at],
            None,
            None,
            &cache(),
            NOW
        )),
        Reason::WrongType
    );
    // And a proof presented as an access token.
    let p = proof(&key, "POST", HTU, NOW, "j");
    let err = access::verify(&config_at(), &keys, &p, NOW).unwrap_err();
    assert_eq!(err.reason(), Reason::WrongType);
}

fn config_at() -> keygate_auth::access::AccessTokenConfig {
    common::config()
}

#[test]
fn s13_alg_none_hmac_and_key_mismatch_are_rejected() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::Es256);
    let jwk = serde_json::Value::Object(key.verification_key().to_jwk().to_json());
    let body = json!({"jti":"j","htm":"POST","htu":HTU,"iat":NOW.0}).to_string();
    for (alg, expected) in [
        ("none", Reason::Jose(JoseError::AlgNone)),
        ("NONE", Reason::Jose(JoseError::AlgNone)),
        ("HS256", Reason::Jose(JoseError::AlgSymmetric)),
        ("RS256", Reason::Jose(JoseError::AlgUnsupported)),
        ("EdDSA", Reason::Jose(JoseError::AlgKeyMismatch)),
    ] {
        let h = json!({"alg":alg,"typ":"dpop+jwt","jwk":jwk}).to_string();
        let p = raw_token(&key, &h, &body);
        assert_eq!(
            reason(check(
                &config,
                "POST",
                TARGET,
                &[&p],
                None,
                None,
                &cache(),
                NOW
            )),
            expected,
            "{alg}"
        );
    }
}

/// Regression: a proof from a current JOSE library, which names Ed25519 by its
/// fully-specified RFC 9864 name, was refused with `invalid_dpop_proof`.
#[test]
fn s13_fully_specified_ed25519_name_is_accepted_with_an_okp_key_only() {
    let config = dpop_config(BASE);
    let body = json!({"jti":"j","htm":"POST","htu":HTU,"iat":NOW.0}).to_string();
    let ed = SigningKey::generate(Algorithm::EdDsa);
    let jwk = serde_json::Value::Object(ed.verification_key().to_jwk().to_json());
    let h = json!({"alg":"Ed25519","typ":"dpop+jwt","jwk":jwk}).to_string();
    let p = raw_token(&ed, &h, &body);
    let verified = check(&config, "POST", TARGET, &[&p], None, None, &cache(), NOW).unwrap();
    assert_eq!(verified.jkt(), &ed.verification_key().thumbprint());

    // The name still has to fit the key: Ed25519 over a P-256 key is refused.
    let es = SigningKey::generate(Algorithm::Es256);
    let jwk = serde_json::Value::Object(es.verification_key().to_jwk().to_json());
    let h = json!({"alg":"Ed25519","typ":"dpop+jwt","jwk":jwk}).to_string();
    let p = raw_token(&es, &h, &body);
    assert_eq!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[&p],
            None,
            None,
            &cache(),
            NOW
        )),
        Reason::Jose(JoseError::AlgKeyMismatch)
    );

    // And a deployment may still narrow the list to the polymorphic name alone.
    let mut narrow = dpop_config(BASE);
    narrow.allowed_algs = vec![Algorithm::EdDsa, Algorithm::Es256];
    let h = json!({"alg":"Ed25519","typ":"dpop+jwt","jwk":serde_json::Value::Object(ed.verification_key().to_jwk().to_json())}).to_string();
    let p = raw_token(&ed, &h, &body);
    assert_eq!(
        reason(check(
            &narrow,
            "POST",
            TARGET,
            &[&p],
            None,
            None,
            &cache(),
            NOW
        )),
        Reason::AlgNotAllowed
    );
}

#[test]
fn s13_signature_must_verify_with_the_header_jwk() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::EdDsa);
    let other = SigningKey::generate(Algorithm::EdDsa);
    let jwk = serde_json::Value::Object(other.verification_key().to_jwk().to_json());
    let h = json!({"alg":"EdDSA","typ":"dpop+jwt","jwk":jwk}).to_string();
    let body = json!({"jti":"j","htm":"POST","htu":HTU,"iat":NOW.0}).to_string();
    let p = raw_token(&key, &h, &body);
    assert_eq!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[&p],
            None,
            None,
            &cache(),
            NOW
        )),
        Reason::Jose(JoseError::BadSignature)
    );
    // No jwk at all.
    let h = json!({"alg":"EdDSA","typ":"dpop+jwt"}).to_string();
    let p = raw_token(&key, &h, &body);
    assert_eq!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[&p],
            None,
            None,
            &cache(),
            NOW
        )),
        Reason::MalformedProof
    );
}

#[test]
fn s13_private_members_in_the_proof_jwk_are_rejected() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::Es256);
    let mut jwk = key.verification_key().to_jwk().to_json();
    jwk.insert(
        "d".into(),
        json!(b64::encode(key.to_secret_bytes().expose_secret())),
    );
    let h = json!({"alg":"ES256","typ":"dpop+jwt","jwk":jwk}).to_string();
    let body = json!({"jti":"j","htm":"POST","htu":HTU,"iat":NOW.0}).to_string();
    let p = raw_token(&key, &h, &body);
    assert_eq!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[&p],
            None,
            None,
            &cache(),
            NOW
        )),
        Reason::ProofJwkPrivate
    );
    // A symmetric key is refused the same way.
    let h = json!({"alg":"ES256","typ":"dpop+jwt","jwk":{"kty":"oct","k":"AAAA"}}).to_string();
    let p = raw_token(&key, &h, &body);
    assert_eq!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[&p],
            None,
            None,
            &cache(),
            NOW
        )),
        Reason::ProofJwkPrivate
    );
}

// ---------------------------------------------------------------- proof key cache

#[test]
fn proof_key_cache_gives_each_jwk_its_own_key() {
    let cache = ProofKeyCache::new(8);
    let ed = SigningKey::generate(Algorithm::EdDsa);
    let es = SigningKey::generate(Algorithm::Es256);
    let ed_jwk = ed.verification_key().to_jwk();
    let es_jwk = es.verification_key().to_jwk();
    assert!(cache.is_empty());
    assert_eq!(cache.key_for(&ed_jwk).unwrap(), *ed.verification_key());
    // The second lookup is a hit, and answers with the same key.
    assert_eq!(cache.key_for(&ed_jwk).unwrap(), *ed.verification_key());
    assert_eq!(cache.len(), 1);
    let es_key = cache.key_for(&es_jwk).unwrap();
    assert_eq!(es_key, *es.verification_key());
    assert_ne!(es_key, *ed.verification_key());
    assert_eq!(cache.len(), 2);
    // Another key of the same kind is a different entry with a different key.
    let ed2 = SigningKey::generate(Algorithm::EdDsa);
    let ed2_key = cache.key_for(&ed2.verification_key().to_jwk()).unwrap();
    assert_eq!(ed2_key, *ed2.verification_key());
    assert_ne!(ed2_key, *ed.verification_key());
    assert_eq!(cache.len(), 3);
}

#[test]
fn proof_key_cache_is_bounded_and_remembers_no_refusal() {
    let cache = ProofKeyCache::new(2);
    let keys: Vec<SigningKey> = (0..5)
        .map(|i| {
            SigningKey::generate(if i % 2 == 0 {
                Algorithm::EdDsa
            } else {
                Algorithm::Es256
            })
        })
        .collect();
    for _ in 0..2 {
        for key in &keys {
            let jwk = key.verification_key().to_jwk();
            assert_eq!(cache.key_for(&jwk).unwrap(), *key.verification_key());
            assert!(cache.len() <= 2);
        }
    }
    // Keys that fail to parse are refused every time and never stored: a small-order
    // Ed25519 point (the identity) and a P-256 point off the curve.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let bad = [
        PublicJwk::Ed25519 {
            x: b64::encode(identity),
        },
        PublicJwk::P256 {
            x: b64::encode([1u8; 32]),
            y: b64::encode([1u8; 32]),
        },
    ];
    let empty = ProofKeyCache::new(8);
    for jwk in &bad {
        assert!(empty.key_for(jwk).is_err());
        assert!(empty.key_for(jwk).is_err());
    }
    assert!(empty.is_empty());
    // Capacity 0: always parsed, nothing kept.
    let off = ProofKeyCache::new(0);
    let jwk = keys[0].verification_key().to_jwk();
    assert_eq!(off.key_for(&jwk).unwrap(), *keys[0].verification_key());
    assert!(off.is_empty());
}

/// A proof key found in the cache spares only the parse: every proof is still checked
/// in full (signature, htm, replay), for both algorithms.
#[test]
fn a_cached_proof_key_still_checks_every_proof() {
    for alg in [Algorithm::EdDsa, Algorithm::Es256] {
        let config = dpop_config(BASE);
        let replay = cache();
        let key = SigningKey::generate(alg);
        let first = proof(&key, "POST", HTU, NOW, "first");
        let run = |p: &str| check(&config, "POST", TARGET, &[p], None, None, &replay, NOW);
        run(&first).unwrap();
        assert_eq!(config.key_cache.len(), 1);
        // The first proof's signature on a second proof's header and claims.
        let second = proof(&key, "POST", HTU, NOW, "second");
        let (second_input, _) = second.rsplit_once('.').unwrap();
        let (_, first_sig) = first.rsplit_once('.').unwrap();
        let spliced = format!("{second_input}.{first_sig}");
        assert_eq!(
            reason(run(&spliced)),
            Reason::Jose(JoseError::BadSignature),
            "{alg:?}"
        );
        // A wrong method, and the first proof again.
        let get = proof(&key, "GET", HTU, NOW, "third");
        assert_eq!(reason(run(&get)), Reason::HtmMismatch, "{alg:?}");
        assert_eq!(reason(run(&first)), Reason::Replayed, "{alg:?}");
        // A proof signed by another key naming this key's jwk is still refused.
        let other = SigningKey::generate(alg);
        let jwk = serde_json::Value::Object(key.verification_key().to_jwk().to_json());
        let h = json!({"alg":alg.as_str(),"typ":"dpop+jwt","jwk":jwk}).to_string();
        let body = json!({"jti":"forged","htm":"POST","htu":HTU,"iat":NOW.0}).to_string();
        let forged = raw_token(&other, &h, &body);
        assert_eq!(
            reason(run(&forged)),
            Reason::Jose(JoseError::BadSignature),
            "{alg:?}"
        );
        // The untouched second proof passes with the cached key.
        let verified = run(&second).unwrap();
        assert_eq!(*verified.jkt(), key.verification_key().thumbprint());
        assert_eq!(config.key_cache.len(), 1);
    }
}

#[test]
fn s13_htm_must_equal_the_method() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::EdDsa);
    for htm in ["GET", "post", "POST "] {
        let p = proof(&key, htm, HTU, NOW, "j");
        assert_eq!(
            reason(check(
                &config,
                "POST",
                TARGET,
                &[&p],
                None,
                None,
                &cache(),
                NOW
            )),
            Reason::HtmMismatch
        );
    }
}

#[test]
fn s13_s16_htu_is_compared_with_the_configured_public_url() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::EdDsa);
    // A different host — e.g. what a forged Host / X-Forwarded-Host header would say.
    for htu in [
        "https://evil.example.com/oauth2/token",
        "http://gate.example.com/oauth2/token",
        "https://gate.example.com:8443/oauth2/token",
        "https://gate.example.com/oauth2/token/",
        "https://gate.example.com/oauth2/tokens",
        "https://gate.example.com.evil.example/oauth2/token",
        "https://user@gate.example.com/oauth2/token",
        "/oauth2/token",
        "gate.example.com/oauth2/token",
    ] {
        let p = proof(&key, "POST", htu, NOW, "j");
        assert_eq!(
            reason(check(
                &config,
                "POST",
                TARGET,
                &[&p],
                None,
                None,
                &cache(),
                NOW
            )),
            Reason::HtuMismatch,
            "{htu}"
        );
    }
    // Equivalent spellings after normalisation, and query/fragment ignored.
    for (i, htu) in [
        "https://GATE.example.com/oauth2/token",
        "HTTPS://gate.example.com:443/oauth2/token",
        "https://gate.example.com/oauth2/%74oken",
        "https://gate.example.com/oauth2/./token?x=1#f",
    ]
    .iter()
    .enumerate()
    {
        let p = proof(&key, "POST", htu, NOW, &format!("j{i}"));
        check(
            &config,
            "POST",
            "/oauth2/token?y=2",
            &[&p],
            None,
            None,
            &cache(),
            NOW,
        )
        .unwrap();
    }
}

#[test]
fn s13_iat_must_be_within_the_window() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::EdDsa);
    let ok = |iat: UnixTime, jti: &str| {
        let p = proof(&key, "POST", HTU, iat, jti);
        check(&config, "POST", TARGET, &[&p], None, None, &cache(), NOW)
    };
    ok(NOW.minus(60), "a").unwrap();
    ok(NOW.plus(5), "b").unwrap();
    assert_eq!(reason(ok(NOW.minus(61), "c")), Reason::IatOutOfWindow);
    assert_eq!(reason(ok(NOW.plus(6), "d")), Reason::IatOutOfWindow);
    assert_eq!(reason(ok(UnixTime(0), "e")), Reason::IatOutOfWindow);
}

#[test]
fn s13_ath_must_be_the_hash_of_the_presented_token() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::EdDsa);
    let token = "the.access.token";
    let with_ath = |t: &str, jti: &str| {
        dpop::create_proof(
            &key,
            &ProofClaims {
                htm: "GET",
                htu: "https://gate.example.com/proxy/x",
                iat: NOW,
                jti,
                nonce: None,
                access_token: Some(t),
            },
        )
    };
    let p = with_ath("another.access.token", "a");
    assert_eq!(
        reason(check(
            &config,
            "GET",
            "/proxy/x",
            &[&p],
            Some(token),
            None,
            &cache(),
            NOW
        )),
        Reason::AthMismatch
    );
    let p = proof(&key, "GET", "https://gate.example.com/proxy/x", NOW, "b");
    assert_eq!(
        reason(check(
            &config,
            "GET",
            "/proxy/x",
            &[&p],
            Some(token),
            None,
            &cache(),
            NOW
        )),
        Reason::AthMissing
    );
    let p = with_ath(token, "c");
    check(
        &config,
        "GET",
        "/proxy/x",
        &[&p],
        Some(token),
        None,
        &cache(),
        NOW,
    )
    .unwrap();
}

#[test]
fn s13_s16_key_thumbprint_must_match_the_binding() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::Es256);
    let other = SigningKey::generate(Algorithm::Es256)
        .verification_key()
        .thumbprint();
    let p = proof(&key, "POST", HTU, NOW, "j");
    // e.g. a refresh request for a family bound to another key.
    assert_eq!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[&p],
            None,
            Some(&other),
            &cache(),
            NOW
        )),
        Reason::JktMismatch
    );
    let own = key.verification_key().thumbprint();
    let v = check(
        &config,
        "POST",
        TARGET,
        &[&p],
        None,
        Some(&own),
        &cache(),
        NOW,
    )
    .unwrap();
    assert_eq!(v.jkt(), &own);
}

// ---------------------------------------------------------------- S14

#[test]
fn s14_replayed_jti_is_refused_per_htu() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::EdDsa);
    let c = cache();
    let p = proof(&key, "POST", HTU, NOW, "same-jti");
    check(&config, "POST", TARGET, &[&p], None, None, &c, NOW).unwrap();
    assert_eq!(
        reason(check(
            &config,
            "POST",
            TARGET,
            &[&p],
            None,
            None,
            &c,
            NOW.plus(30)
        )),
        Reason::Replayed
    );
    // The same jti at another URI is another key.
    let p2 = proof(
        &key,
        "POST",
        "https://gate.example.com/oauth2/revoke",
        NOW,
        "same-jti",
    );
    check(
        &config,
        "POST",
        "/oauth2/revoke",
        &[&p2],
        None,
        None,
        &c,
        NOW,
    )
    .unwrap();
    // A proof failing another check does not use up its jti.
    let p3 = proof(&key, "POST", HTU, NOW, "fresh");
    assert_eq!(
        reason(check(&config, "GET", TARGET, &[&p3], None, None, &c, NOW)),
        Reason::HtmMismatch
    );
    check(&config, "POST", TARGET, &[&p3], None, None, &c, NOW).unwrap();
}

/// A proof replayed at the same resource written another way (`a/../` in the path, the
/// default port) is a replay: the replay key is made of the normalised htu whether or not
/// the htu needed normalising, so no spelling of the same URL is a fresh key.
#[test]
fn s14_replay_is_caught_however_the_htu_is_spelled() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::EdDsa);
    let spelled = format!("{}/x/../{}", BASE, TARGET.trim_start_matches('/'));
    let with_port = HTU.replacen("gate.example.com", "gate.example.com:443", 1);
    for (first_htu, first_target, again_htu, again_target) in [
        (
            HTU,
            TARGET.to_owned(),
            spelled.as_str(),
            format!("/x/..{TARGET}"),
        ),
        (
            spelled.as_str(),
            format!("/x/..{TARGET}"),
            HTU,
            TARGET.to_owned(),
        ),
        (
            HTU,
            TARGET.to_owned(),
            with_port.as_str(),
            TARGET.to_owned(),
        ),
    ] {
        let c = cache();
        let jti = "one-jti";
        let p = proof(&key, "POST", first_htu, NOW, jti);
        check(&config, "POST", &first_target, &[&p], None, None, &c, NOW).unwrap();
        let again = proof(&key, "POST", again_htu, NOW, jti);
        assert_eq!(
            reason(check(
                &config,
                "POST",
                &again_target,
                &[&again],
                None,
                None,
                &c,
                NOW
            )),
            Reason::Replayed,
            "{first_htu} then {again_htu}"
        );
    }
}

#[test]
fn s14_jti_length_is_bounded() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::EdDsa);
    let long = "x".repeat(dpop::MAX_JTI_LEN + 1);
    for jti in [long.as_str(), ""] {
        let p = proof(&key, "POST", HTU, NOW, jti);
        assert_eq!(
            reason(check(
                &config,
                "POST",
                TARGET,
                &[&p],
                None,
                None,
                &cache(),
                NOW
            )),
            Reason::JtiInvalid
        );
    }
    let max = "y".repeat(dpop::MAX_JTI_LEN);
    let p = proof(&key, "POST", HTU, NOW, &max);
    check(&config, "POST", TARGET, &[&p], None, None, &cache(), NOW).unwrap();
}

struct DownCache;
impl ReplayCache for DownCache {
    fn insert_if_absent(
        &self,
        _: ReplayKey,
        _: UnixTime,
        _: UnixTime,
    ) -> impl Future<Output = Result<Freshness, ReplayCacheUnavailable>> + Send {
        std::future::ready(Err(ReplayCacheUnavailable))
    }
}

#[test]
fn s14_replay_cache_down_fails_closed() {
    let config = dpop_config(BASE);
    let key = SigningKey::generate(Algorithm::EdDsa);
    let p = proof(&key, "POST", HTU, NOW, "j");
    let headers: [&[u8]; 1] = [p.as_bytes()];
    let request = ProofRequest {
        method: "POST",
        target: TARGET,
        dpop_headers: &headers,
        access_token: None,
        expected_jkt: None,
    };
    let err = block_on(dpop::verify_proof(&config, &request, &DownCache, NOW)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::TemporarilyUnavailable);
    assert_eq!(err.disposition(), Disposition::Unavailable);
    assert_eq!(err.www_authenticate(), None);
}

// ---------------------------------------------------------------- S15

#[test]
fn s15_server_nonce_required_and_use_dpop_nonce_error() {
    let mut config = dpop_config(BASE);
    config.nonces = Some(NonceIssuer::new(SecretBox::new(Box::new([9u8; 32])), 300));
    let key = SigningKey::generate(Algorithm::EdDsa);
    let p = proof(&key, "POST", HTU, NOW, "a");
    let err = check(&config, "POST", TARGET, &[&p], None, None, &cache(), NOW).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UseDpopNonce);
    assert_eq!(err.reason(), Reason::NonceMissing);
    let nonce = err.dpop_nonce().unwrap().to_owned();
    assert!(
        err.www_authenticate()
            .unwrap()
            .starts_with("DPoP error=\"use_dpop_nonce\"")
    );
    // With the nonce the server sent, the retry passes.
    let with_nonce = |n: &str, jti: &str, iat: UnixTime| proof_with_nonce(&key, n, jti, iat);
    let p = with_nonce(&nonce, "b", NOW);
    check(&config, "POST", TARGET, &[&p], None, None, &cache(), NOW).unwrap();
    // A made-up or stale nonce gets a fresh one.
    let p = with_nonce("made-up", "c", NOW);
    let err = check(&config, "POST", TARGET, &[&p], None, None, &cache(), NOW).unwrap_err();
    assert_eq!(err.reason(), Reason::NonceInvalid);
    assert!(err.dpop_nonce().is_some());
    let later = NOW.plus(900);
    let p = with_nonce(&nonce, "d", later);
    let err = check(&config, "POST", TARGET, &[&p], None, None, &cache(), later).unwrap_err();
    assert_eq!(err.reason(), Reason::NonceInvalid);
    assert_ne!(err.dpop_nonce().unwrap(), nonce);
}

/// S14 across a restart with an in-process replay cache: the restarted process's cache is
/// empty, so a proof that may predate it needs a nonce only this process can issue.
#[test]
fn s14_a_proof_from_before_a_restart_is_refused_without_this_process_nonce() {
    let key = SigningKey::generate(Algorithm::EdDsa);
    let before = dpop_config(BASE);
    let first_cache = cache();
    let p = proof(&key, "POST", HTU, NOW, "seen-before-the-restart");
    check(
        &before,
        "POST",
        TARGET,
        &[&p],
        None,
        None,
        &first_cache,
        NOW,
    )
    .unwrap();

    // The restart: a new process, an empty cache, a new random guard key; the previous
    // process may have accepted proofs up to its start plus the future skew.
    let started = NOW.plus(2);
    let mut after = dpop_config(BASE);
    let until = started.plus(after.future_skew_secs);
    after.restart_guard = Some(RestartGuard::new(until, [4u8; 32]));
    let fresh_cache = cache();
    let err = check(
        &after,
        "POST",
        TARGET,
        &[&p],
        None,
        None,
        &fresh_cache,
        started,
    )
    .unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::UseDpopNonce,
        "the replay is not accepted"
    );
    let nonce = err.dpop_nonce().unwrap().to_owned();

    // An honest client signs again with the nonce and is let in, once.
    let with = |n: &str, jti: &str, iat: UnixTime| proof_with_nonce(&key, n, jti, iat);
    let retry = with(&nonce, "after-the-restart", started);
    check(
        &after,
        "POST",
        TARGET,
        &[&retry],
        None,
        None,
        &fresh_cache,
        started,
    )
    .unwrap();
    assert_eq!(
        reason(check(
            &after,
            "POST",
            TARGET,
            &[&retry],
            None,
            None,
            &fresh_cache,
            started
        )),
        Reason::Replayed
    );

    // A nonce from the previous process (another key) does not pass the guard.
    let old_guard = RestartGuard::new(NOW.plus(5), [3u8; 32]);
    let mut old_config = dpop_config(BASE);
    old_config.restart_guard = Some(old_guard);
    let old_nonce = check(
        &old_config,
        "POST",
        TARGET,
        &[&proof(&key, "POST", HTU, NOW, "x")],
        None,
        None,
        &cache(),
        NOW,
    )
    .unwrap_err()
    .dpop_nonce()
    .unwrap()
    .to_owned();
    let stale = with(&old_nonce, "stale-nonce", started);
    let err = check(
        &after,
        "POST",
        TARGET,
        &[&stale],
        None,
        None,
        &fresh_cache,
        started,
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::NonceInvalid);

    // Proofs made after the horizon need no nonce.
    let later = until.plus(1);
    let p = proof(&key, "POST", HTU, later, "well-after-the-start");
    check(
        &after,
        "POST",
        TARGET,
        &[&p],
        None,
        None,
        &fresh_cache,
        later,
    )
    .unwrap();
}

// ---------------------------------------------------------------- S16 and VerifiedAccess

struct Revocations(Vec<String>);
impl RevocationCheck for Revocations {
    fn is_revoked(
        &self,
        token: &VerifiedAccessToken,
    ) -> impl Future<Output = Result<bool, RevocationUnavailable>> + Send {
        std::future::ready(Ok(self.0.iter().any(|s| s == token.session().as_str())))
    }
}

struct RevocationDown;
impl RevocationCheck for RevocationDown {
    fn is_revoked(
        &self,
        _: &VerifiedAccessToken,
    ) -> impl Future<Output = Result<bool, RevocationUnavailable>> + Send {
        std::future::ready(Err(RevocationUnavailable))
    }
}

struct Setup {
    verifier: ResourceVerifier,
    keys: keygate_auth::keys::SigningKeySet,
    device: SigningKey,
    bound: String,
    unbound: String,
}

fn setup() -> Setup {
    let keys = key_set(Algorithm::EdDsa);
    let device = SigningKey::generate(Algorithm::Es256);
    let jkt = device.verification_key().thumbprint();
    let bound = access::issue(&config(), &keys, &grant(Some(jkt)), NOW).unwrap();
    let unbound = access::issue(&config(), &keys, &grant(None), NOW).unwrap();
    Setup {
        verifier: ResourceVerifier {
            access: config(),
            dpop: dpop_config(BASE),
            allow_unbound_bearer: false,
            token_cache: Some(keygate_auth::access::AccessTokenCache::new(16)),
        },
        keys,
        device,
        bound: bound.token.expose_secret().to_owned(),
        unbound: unbound.token.expose_secret().to_owned(),
    }
}

const PROXY_URL: &str = "https://gate.example.com/proxy/openai/v1/chat";

fn resource(
    s: &Setup,
    authorization: &[String],
    proofs: &[String],
    revocation: &impl RevocationCheck,
) -> Result<keygate_auth::resource::VerifiedAccess, AuthError> {
    let auth: Vec<&[u8]> = authorization.iter().map(|a| a.as_bytes()).collect();
    let dpop: Vec<&[u8]> = proofs.iter().map(|a| a.as_bytes()).collect();
    let request = ResourceRequest {
        method: "POST",
        target: "/proxy/openai/v1/chat?stream=1",
        authorization: &auth,
        dpop: &dpop,
        client_cert: None,
    };
    block_on(verify_request(
        &s.verifier,
        &s.keys,
        &request,
        &cache(),
        revocation,
        NOW,
    ))
}

fn resource_proof(s: &Setup, token: &str, jti: &str) -> String {
    dpop::create_proof(
        &s.device,
        &ProofClaims {
            htm: "POST",
            htu: PROXY_URL,
            iat: NOW,
            jti,
            nonce: None,
            access_token: Some(token),
        },
    )
}

#[test]
fn verified_access_comes_from_a_valid_bound_request() {
    let s = setup();
    let p = resource_proof(&s, &s.bound, "j");
    let access = resource(
        &s,
        &[format!("DPoP {}", s.bound)],
        &[p],
        &Revocations(vec![]),
    )
    .unwrap();
    assert_eq!(access.user().as_str(), "user-1");
    assert_eq!(access.session().as_str(), "family-1");
    assert_eq!(
        access.jkt(),
        Some(&s.device.verification_key().thumbprint())
    );
    access.require_scope(&Scope::parse("ai").unwrap()).unwrap();
    let err = access
        .require_scope(&Scope::parse("admin").unwrap())
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InsufficientScope);
    assert_eq!(err.disposition(), Disposition::Forbidden);
}

#[test]
fn s16_bound_token_sent_as_bearer_is_refused() {
    let mut s = setup();
    s.verifier.allow_unbound_bearer = true;
    let p = resource_proof(&s, &s.bound, "j");
    let err = resource(
        &s,
        &[format!("Bearer {}", s.bound)],
        &[p],
        &Revocations(vec![]),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::BoundTokenAsBearer);
    assert_eq!(err.code(), ErrorCode::InvalidToken);
    // An unbound token as Bearer passes only where allowed.
    resource(
        &s,
        &[format!("Bearer {}", s.unbound)],
        &[],
        &Revocations(vec![]),
    )
    .unwrap();
    s.verifier.allow_unbound_bearer = false;
    let err = resource(
        &s,
        &[format!("Bearer {}", s.unbound)],
        &[],
        &Revocations(vec![]),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::BearerNotAllowed);
}

/// A client whose own registration allows unbound Bearer tokens (a DPoP migration).
struct BearerClient(&'static str, Result<bool, RevocationUnavailable>);
impl RevocationCheck for BearerClient {
    fn is_revoked(
        &self,
        _: &VerifiedAccessToken,
    ) -> impl Future<Output = Result<bool, RevocationUnavailable>> + Send {
        std::future::ready(Ok(false))
    }
    fn allows_unbound_bearer(
        &self,
        client: &keygate_auth::ids::ClientId,
    ) -> impl Future<Output = Result<bool, RevocationUnavailable>> + Send {
        std::future::ready(if client.as_str() == self.0 {
            self.1
        } else {
            Ok(false)
        })
    }
}

#[test]
fn s16_per_client_bearer_policy_is_asked_only_for_unbound_tokens() {
    let s = setup();
    let bearer =
        |check: &BearerClient| resource(&s, &[format!("Bearer {}", s.unbound)], &[], check);
    // The token's client (app-1) is in migration: its unbound token passes as Bearer.
    let access = bearer(&BearerClient("app-1", Ok(true))).unwrap();
    assert_eq!(access.client().as_str(), "app-1");
    // Another client's policy does not help it; nor does a policy that says no.
    let err = bearer(&BearerClient("app-2", Ok(true))).unwrap_err();
    assert_eq!(err.reason(), Reason::BearerNotAllowed);
    let err = bearer(&BearerClient("app-1", Ok(false))).unwrap_err();
    assert_eq!(err.reason(), Reason::BearerNotAllowed);
    // When the policy cannot be read, the call is unavailable, not let through.
    let err = bearer(&BearerClient("app-1", Err(RevocationUnavailable))).unwrap_err();
    assert_eq!(err.reason(), Reason::RevocationUnavailable);
    // A bound token is never accepted as Bearer, whatever the client's policy.
    let err = resource(
        &s,
        &[format!("Bearer {}", s.bound)],
        &[],
        &BearerClient("app-1", Ok(true)),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::BoundTokenAsBearer);
}

#[test]
fn s16_both_schemes_at_once_is_a_bad_request() {
    let s = setup();
    let p = resource_proof(&s, &s.bound, "j");
    let err = resource(
        &s,
        &[format!("DPoP {}", s.bound), format!("Bearer {}", s.bound)],
        &[p],
        &Revocations(vec![]),
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert_eq!(err.disposition(), Disposition::BadRequest);
}

#[test]
fn unbound_token_with_dpop_scheme_and_missing_credentials() {
    let s = setup();
    let p = resource_proof(&s, &s.unbound, "j");
    let err = resource(
        &s,
        &[format!("DPoP {}", s.unbound)],
        &[p],
        &Revocations(vec![]),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::UnboundTokenAsDpop);
    let err = resource(&s, &[], &[], &Revocations(vec![])).unwrap_err();
    assert_eq!(err.reason(), Reason::MissingAuthorization);
    assert_eq!(
        err.www_authenticate().unwrap(),
        "DPoP algs=\"EdDSA Ed25519 ES256\""
    );
    // A stolen bound token with the thief's own key.
    let thief = SigningKey::generate(Algorithm::Es256);
    let p = dpop::create_proof(
        &thief,
        &ProofClaims {
            htm: "POST",
            htu: PROXY_URL,
            iat: NOW,
            jti: "t",
            nonce: None,
            access_token: Some(&s.bound),
        },
    );
    let err = resource(
        &s,
        &[format!("DPoP {}", s.bound)],
        &[p],
        &Revocations(vec![]),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::JktMismatch);
    // Token without proof.
    let err = resource(
        &s,
        &[format!("DPoP {}", s.bound)],
        &[],
        &Revocations(vec![]),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::MissingProof);
}

#[test]
fn revoked_sessions_are_refused_and_revocation_store_down_fails_closed() {
    let s = setup();
    let p = resource_proof(&s, &s.bound, "j1");
    let err = resource(
        &s,
        &[format!("DPoP {}", s.bound)],
        &[p],
        &Revocations(vec!["family-1".into()]),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::Revoked);
    let p = resource_proof(&s, &s.bound, "j2");
    let err = resource(&s, &[format!("DPoP {}", s.bound)], &[p], &RevocationDown).unwrap_err();
    assert_eq!(err.disposition(), Disposition::Unavailable);
}

#[test]
fn errors_never_carry_token_or_proof_material() {
    let s = setup();
    let p = resource_proof(&s, "some.other.token", "j");
    let err = resource(
        &s,
        &[format!("DPoP {}", s.bound)],
        std::slice::from_ref(&p),
        &Revocations(vec![]),
    )
    .unwrap_err();
    let shown = format!(
        "{err} {err:?} {} {:?}",
        err.description(),
        err.www_authenticate()
    );
    for secret in [
        s.bound.as_str(),
        p.as_str(),
        s.bound.split('.').nth(1).unwrap(),
    ] {
        assert!(!shown.contains(secret));
    }
}

#[test]
fn cached_tokens_are_still_checked_for_revocation_and_expiry() {
    let s = setup();
    let p = resource_proof(&s, &s.bound, "c1");
    resource(
        &s,
        &[format!("DPoP {}", s.bound)],
        &[p],
        &Revocations(vec![]),
    )
    .unwrap();
    // Same token again: a cache hit, but the session has been revoked meanwhile.
    let p = resource_proof(&s, &s.bound, "c2");
    let err = resource(
        &s,
        &[format!("DPoP {}", s.bound)],
        &[p],
        &Revocations(vec!["family-1".into()]),
    )
    .unwrap_err();
    assert_eq!(err.reason(), Reason::Revoked);
    // And a cache hit after expiry is refused.
    let cache = s.verifier.token_cache.as_ref().unwrap();
    let later = NOW.plus(300 + 60);
    let err = cache
        .verify(&s.verifier.access, &s.keys, &s.bound, later)
        .unwrap_err();
    assert_eq!(err.reason(), Reason::Expired);
}

#[test]
fn shared_state_is_send_and_sync_and_futures_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<ResourceVerifier>();
    send_sync::<keygate_auth::keys::SigningKeySet>();
    send_sync::<InMemoryReplayCache>();
    send_sync::<NonceIssuer>();
    let s = setup();
    let auth = [format!("DPoP {}", s.bound)];
    let auth: Vec<&[u8]> = auth.iter().map(|a| a.as_bytes()).collect();
    let request = ResourceRequest {
        method: "GET",
        target: "/",
        authorization: &auth,
        dpop: &[],
        client_cert: None,
    };
    let c = cache();
    let r = Revocations(vec![]);
    let fut = verify_request(&s.verifier, &s.keys, &request, &c, &r, NOW);
    send(&fut);
    let headers: [&[u8]; 0] = [];
    let proof_request = ProofRequest {
        method: "GET",
        target: "/",
        dpop_headers: &headers,
        access_token: None,
        expected_jkt: None,
    };
    let fut = dpop::verify_proof(&s.verifier.dpop, &proof_request, &c, NOW);
    send(&fut);
}

// ---------------------------------------------------------------- RFC 8705 §3

fn cert_request<'a>(
    auth: &'a [&'a [u8]],
    dpop: &'a [&'a [u8]],
    cert: Option<&'a keygate_auth::jwk::CertThumbprint>,
) -> ResourceRequest<'a> {
    ResourceRequest {
        method: "POST",
        target: "/proxy/openai/v1/chat?stream=1",
        authorization: auth,
        dpop,
        client_cert: cert,
    }
}

#[test]
fn certificate_bound_tokens_need_their_certificate() {
    use keygate_auth::jwk::CertThumbprint;
    let s = setup();
    let cert = CertThumbprint::of_der(b"the client's certificate, DER");
    let other = CertThumbprint::of_der(b"another certificate");
    let mut g = grant(None);
    g.x5t = Some(cert.clone());
    let token = access::issue(&config(), &s.keys, &g, NOW).unwrap();
    let token = token.token.expose_secret().to_owned();
    // The claim is cnf.x5t#S256: base64url SHA-256 of the DER (RFC 8705 §3.1).
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&b64::decode(payload).unwrap()).unwrap();
    assert_eq!(claims["cnf"], json!({"x5t#S256": cert.as_str()}));
    assert_eq!(cert.as_str().len(), 43);

    let auth = [format!("Bearer {token}")];
    let auth: Vec<&[u8]> = auth.iter().map(|a| a.as_bytes()).collect();
    let run = |c: Option<&CertThumbprint>| {
        block_on(verify_request(
            &s.verifier,
            &s.keys,
            &cert_request(&auth, &[], c),
            &cache(),
            &Revocations(vec![]),
            NOW,
        ))
    };
    // Sent as Bearer with its certificate: accepted even where unbound Bearer is not.
    assert!(!s.verifier.allow_unbound_bearer);
    let access = run(Some(&cert)).unwrap();
    assert_eq!(access.x5t(), Some(&cert));
    assert_eq!(access.jkt(), None);
    // Without a certificate, or with another one: invalid_token, 401.
    for presented in [None, Some(&other)] {
        let err = run(presented).unwrap_err();
        assert_eq!(err.reason(), Reason::CertificateMismatch);
        assert_eq!(err.code(), ErrorCode::InvalidToken);
        assert_eq!(err.disposition(), Disposition::Unauthorized);
    }
    // A token bound to both a DPoP key and a certificate needs both.
    let mut both = grant(Some(s.device.verification_key().thumbprint()));
    both.x5t = Some(cert.clone());
    let both = access::issue(&config(), &s.keys, &both, NOW).unwrap();
    let both = both.token.expose_secret().to_owned();
    let auth = [format!("DPoP {both}")];
    let auth: Vec<&[u8]> = auth.iter().map(|a| a.as_bytes()).collect();
    let proof = [resource_proof(&s, &both, "j-both")];
    let proofs: Vec<&[u8]> = proof.iter().map(|a| a.as_bytes()).collect();
    let err = block_on(verify_request(
        &s.verifier,
        &s.keys,
        &cert_request(&auth, &proofs, None),
        &cache(),
        &Revocations(vec![]),
        NOW,
    ))
    .unwrap_err();
    assert_eq!(err.reason(), Reason::CertificateMismatch);
    block_on(verify_request(
        &s.verifier,
        &s.keys,
        &cert_request(&auth, &proofs, Some(&cert)),
        &cache(),
        &Revocations(vec![]),
        NOW,
    ))
    .unwrap();
    // An unbound token is not affected by a certificate on the connection.
    s_unbound_with_cert_is_still_unbound(&s, &cert);
}

fn s_unbound_with_cert_is_still_unbound(s: &Setup, cert: &keygate_auth::jwk::CertThumbprint) {
    let auth = [format!("Bearer {}", s.unbound)];
    let auth: Vec<&[u8]> = auth.iter().map(|a| a.as_bytes()).collect();
    let err = block_on(verify_request(
        &s.verifier,
        &s.keys,
        &cert_request(&auth, &[], Some(cert)),
        &cache(),
        &Revocations(vec![]),
        NOW,
    ))
    .unwrap_err();
    assert_eq!(err.reason(), Reason::BearerNotAllowed);
}
