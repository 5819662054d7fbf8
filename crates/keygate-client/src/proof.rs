//! DPoP proofs (RFC 9449 §4) signed through a [`KeyStore`].
//!
//! keygate-auth's `dpop::create_proof` needs the private key in hand; a hardware key
//! store only signs. This module builds the same proof around [`KeyStore::sign`].

use keygate_auth::UnixTime;
use keygate_auth::b64;
use keygate_auth::dpop::{DPOP_TYP, ath_for};
use serde_json::{Map, Value};
use url::Url;

use crate::keystore::{KeyStore, KeyStoreError};

/// What a proof asserts about the request it accompanies.
#[derive(Clone, Copy)]
pub struct ProofInput<'a> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The request URL; query and fragment are dropped for `htu`.
    pub url: &'a Url,
    /// `iat`.
    pub iat: UnixTime,
    /// The server's latest nonce for this origin, if any.
    pub nonce: Option<&'a str>,
    /// At a resource: the access token, whose hash becomes `ath`.
    pub access_token: Option<&'a str>,
}

impl std::fmt::Debug for ProofInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofInput")
            .field("method", &self.method)
            .field("htu", &htu(self.url))
            .field("iat", &self.iat)
            .field("nonce", &self.nonce.map(|_| "<set>"))
            .field("access_token", &self.access_token.map(|_| "[REDACTED]"))
            .finish()
    }
}

/// The `htu` for a request URL: scheme, authority and path, without query or fragment
/// (RFC 9449 §4.2). The URL parser has already lower-cased scheme and host, dropped a
/// default port and resolved dot segments.
pub fn htu(url: &Url) -> String {
    let mut htu = url.clone();
    htu.set_query(None);
    htu.set_fragment(None);
    htu.into()
}

/// A fresh `jti`: 128 bits from the OS CSPRNG, base64url (22 characters).
pub fn new_jti() -> String {
    b64::encode(keygate_auth::opaque::random_bytes::<16>())
}

/// Creates and signs a DPoP proof for one request, with a fresh `jti`.
pub fn create_proof(store: &dyn KeyStore, input: &ProofInput<'_>) -> Result<String, KeyStoreError> {
    let jwk = store.public_jwk()?;
    if !matches!(jwk, keygate_auth::jwk::PublicJwk::P256 { .. }) {
        return Err(KeyStoreError::NotP256);
    }
    let mut header = Map::new();
    header.insert("typ".into(), Value::String(DPOP_TYP.into()));
    header.insert("alg".into(), Value::String("ES256".into()));
    header.insert("jwk".into(), Value::Object(jwk.to_json()));
    let mut claims = Map::new();
    claims.insert("jti".into(), Value::String(new_jti()));
    claims.insert("htm".into(), Value::String(input.method.to_owned()));
    claims.insert("htu".into(), Value::String(htu(input.url)));
    claims.insert("iat".into(), Value::from(input.iat.0));
    if let Some(nonce) = input.nonce {
        claims.insert("nonce".into(), Value::String(nonce.to_owned()));
    }
    if let Some(token) = input.access_token {
        claims.insert("ath".into(), Value::String(ath_for(token)));
    }
    let signing_input = format!(
        "{}.{}",
        b64::encode(Value::Object(header).to_string()),
        b64::encode(Value::Object(claims).to_string())
    );
    let signature = store.sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64::encode(signature)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use keygate_auth::dpop::{self, DpopConfig, InMemoryReplayCache, ProofRequest, PublicBaseUrl};
    use keygate_auth::jws;

    use super::*;
    use crate::keystore::MemoryKeyStore;

    const NOW: UnixTime = UnixTime(1_800_000_000);

    fn claims_of(proof: &str) -> Map<String, Value> {
        jws::parse_compact(proof).unwrap().claims().unwrap()
    }

    fn block_on<F: std::future::Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn htu_drops_query_and_fragment_and_normalises() {
        let url = Url::parse("HTTPS://Gate.Example.COM:443/proxy/a/../b?x=1&y=2#frag").unwrap();
        assert_eq!(htu(&url), "https://gate.example.com/proxy/b");
        let url = Url::parse("http://127.0.0.1:8080/oauth2/token?").unwrap();
        assert_eq!(htu(&url), "http://127.0.0.1:8080/oauth2/token");
    }

    #[test]
    fn proof_has_required_claims_and_ath() {
        let store = MemoryKeyStore::generate();
        let url = Url::parse("https://gate.example.com/proxy/openai/v1/chat?stream=1").unwrap();
        let proof = create_proof(
            &store,
            &ProofInput {
                method: "POST",
                url: &url,
                iat: NOW,
                nonce: Some("n-1"),
                access_token: Some("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            },
        )
        .unwrap();
        let parsed = jws::parse_compact(&proof).unwrap();
        assert_eq!(parsed.header().typ(), Some("dpop+jwt"));
        assert_eq!(parsed.header().alg(), jws::Algorithm::Es256);
        let claims = parsed.claims().unwrap();
        assert_eq!(claims["htm"], "POST");
        assert_eq!(
            claims["htu"],
            "https://gate.example.com/proxy/openai/v1/chat"
        );
        assert_eq!(claims["iat"], NOW.0);
        assert_eq!(claims["nonce"], "n-1");
        // RFC 9449 §7.1 vector.
        assert_eq!(claims["ath"], "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
        assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
        // The header jwk is public only.
        let jwk = parsed.header().jwk().unwrap();
        assert!(!jwk.contains_key("d"));
    }

    #[test]
    fn proofs_without_token_or_nonce_omit_ath_and_nonce() {
        let store = MemoryKeyStore::generate();
        let url = Url::parse("https://gate.example.com/oauth2/token").unwrap();
        let input = ProofInput {
            method: "POST",
            url: &url,
            iat: NOW,
            nonce: None,
            access_token: None,
        };
        let claims = claims_of(&create_proof(&store, &input).unwrap());
        assert!(!claims.contains_key("ath"));
        assert!(!claims.contains_key("nonce"));
    }

    #[test]
    fn jti_is_unique_per_proof() {
        let store = MemoryKeyStore::generate();
        let url = Url::parse("https://gate.example.com/oauth2/token").unwrap();
        let input = ProofInput {
            method: "POST",
            url: &url,
            iat: NOW,
            nonce: None,
            access_token: None,
        };
        let jtis: HashSet<String> = (0..200)
            .map(|_| {
                claims_of(&create_proof(&store, &input).unwrap())["jti"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(jtis.len(), 200);
    }

    #[test]
    fn keygate_auth_verifier_accepts_the_proof() {
        let store = MemoryKeyStore::generate();
        let token = "access-token-value";
        let url = Url::parse("https://gate.example.com/proxy/openai/v1/models?limit=2").unwrap();
        let proof = create_proof(
            &store,
            &ProofInput {
                method: "GET",
                url: &url,
                iat: NOW,
                nonce: None,
                access_token: Some(token),
            },
        )
        .unwrap();
        let config = DpopConfig::new(PublicBaseUrl::parse("https://gate.example.com").unwrap());
        let headers: [&[u8]; 1] = [proof.as_bytes()];
        let jkt = store.thumbprint().unwrap();
        let request = ProofRequest {
            method: "GET",
            target: "/proxy/openai/v1/models?limit=2",
            dpop_headers: &headers,
            access_token: Some(token),
            expected_jkt: Some(&jkt),
        };
        let replay = InMemoryReplayCache::new(16);
        let verified = block_on(dpop::verify_proof(&config, &request, &replay, NOW)).unwrap();
        assert_eq!(verified.jkt(), &jkt);
        // A different token: ath mismatch.
        let other = ProofRequest {
            access_token: Some("another-token"),
            ..request
        };
        assert!(block_on(dpop::verify_proof(&config, &other, &replay, NOW)).is_err());
    }

    #[test]
    fn debug_of_input_redacts_token() {
        let url = Url::parse("https://gate.example.com/x").unwrap();
        let input = ProofInput {
            method: "GET",
            url: &url,
            iat: NOW,
            nonce: Some("nonce-value"),
            access_token: Some("secret-token-value"),
        };
        let debug = format!("{input:?}");
        assert!(!debug.contains("secret-token-value"));
        assert!(!debug.contains("nonce-value"));
    }
}
