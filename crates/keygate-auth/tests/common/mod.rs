#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use keygate_auth::access::{AccessGrant, AccessTokenConfig};
use keygate_auth::b64;
use keygate_auth::ids::{ClientId, ScopeSet, SessionId, UserId};
use keygate_auth::jwk::Jkt;
use keygate_auth::keys::{RotationPolicy, SigningKey, SigningKeySet};
use keygate_auth::{UnixTime, jws::Algorithm};

pub const ISSUER: &str = "https://gate.example.com";
pub const AUDIENCE: &str = "https://gate.example.com/proxy";
pub const NOW: UnixTime = UnixTime(1_800_000_000);

/// Minimal executor: every future in this crate's tests completes without waiting.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

pub fn config() -> AccessTokenConfig {
    AccessTokenConfig::new(ISSUER, AUDIENCE)
}

pub fn key_set(alg: Algorithm) -> SigningKeySet {
    SigningKeySet::bootstrap(RotationPolicy::default(), SigningKey::generate(alg), NOW)
}

pub fn grant(jkt: Option<Jkt>) -> AccessGrant {
    AccessGrant {
        user: UserId::parse("user-1").unwrap(),
        client: ClientId::parse("app-1").unwrap(),
        scopes: ScopeSet::parse("ai maps").unwrap(),
        session: SessionId::parse("family-1").unwrap(),
        jkt,
        x5t: None,
        tier: None,
    }
}

/// Signs arbitrary header and payload JSON text (duplicates and all) with `key`.
pub fn raw_token(key: &SigningKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64::encode(sig))
}

/// Replaces the signature part of a compact JWS.
pub fn with_signature(token: &str, sig: &[u8]) -> String {
    let (input, _) = token.rsplit_once('.').unwrap();
    format!("{input}.{}", b64::encode(sig))
}

pub fn signature_of(token: &str) -> Vec<u8> {
    b64::decode(token.rsplit_once('.').unwrap().1).unwrap()
}

pub fn standard_claims(now: UnixTime) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "client_id": "app-1",
        "scope": "ai", "jti": "j-1", "iat": now.0, "nbf": now.0, "exp": now.0 + 300,
        "sid": "family-1"
    })
}
