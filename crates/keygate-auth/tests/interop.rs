//! Interop with a JOSE implementation keygate did not write (the `jsonwebtoken` crate):
//! it verifies keygate's access tokens against keygate's JWKS, and keygate accepts the
//! DPoP proofs it produces.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use keygate_auth::access;
use keygate_auth::clock::{Clock, SystemClock};
use keygate_auth::dpop::{self, DpopConfig, InMemoryReplayCache, ProofRequest, PublicBaseUrl};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::{RotationPolicy, SigningKey, SigningKeySet};
use p256::pkcs8::EncodePrivateKey;
use secrecy::ExposeSecret;
use serde_json::json;

#[test]
fn a_foreign_library_verifies_issued_tokens_against_the_jwks() {
    for (alg, foreign_alg) in [
        (Algorithm::EdDsa, jsonwebtoken::Algorithm::EdDSA),
        (Algorithm::Es256, jsonwebtoken::Algorithm::ES256),
    ] {
        // The foreign library checks exp against the real clock.
        let now = SystemClock.now();
        let keys =
            SigningKeySet::bootstrap(RotationPolicy::default(), SigningKey::generate(alg), now);
        let issued = access::issue(&config(), &keys, &grant(None), now).unwrap();
        let token = issued.token.expose_secret();
        let jwks: JwkSet = serde_json::from_value(keys.jwks(now).to_json()).unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
        let key = DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = Validation::new(foreign_alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "user-1");
        assert_eq!(data.claims["scope"], "ai maps");
    }
}

#[test]
fn proofs_made_by_a_foreign_library_are_accepted() {
    let secret = loop {
        let bytes = keygate_auth::opaque::random_bytes::<32>();
        if let Ok(sk) = p256::ecdsa::SigningKey::from_slice(&bytes) {
            break sk;
        }
    };
    let der = secret.to_pkcs8_der().unwrap();
    let encoding = EncodingKey::from_ec_der(der.as_bytes());
    let jwk = Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::ES256).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("dpop+jwt".into());
    header.jwk = Some(jwk);
    let token = "an-access-token";
    let claims = json!({
        "jti": "foreign-1",
        "htm": "POST",
        "htu": "https://gate.example.com/proxy/openai/v1/chat/completions",
        "iat": NOW.0,
        "ath": dpop::ath_for(token),
    });
    let proof = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();

    let same_key = SigningKey::from_secret_bytes(Algorithm::Es256, &secret.to_bytes()).unwrap();
    let jkt = same_key.verification_key().thumbprint();
    let config = DpopConfig::new(PublicBaseUrl::parse("https://gate.example.com").unwrap());
    let headers: [&[u8]; 1] = [proof.as_bytes()];
    let request = ProofRequest {
        method: "POST",
        target: "/proxy/openai/v1/chat/completions",
        dpop_headers: &headers,
        access_token: Some(token),
        expected_jkt: Some(&jkt),
    };
    let verified = block_on(dpop::verify_proof(
        &config,
        &request,
        &InMemoryReplayCache::new(8),
        NOW,
    ))
    .unwrap();
    assert_eq!(verified.jkt(), &jkt);
}
