//! Property tests: the parsers that see attacker bytes never panic, and signatures bind
//! every byte of a token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use keygate_auth::access;
use keygate_auth::b64;
use keygate_auth::dpop::{self, DpopConfig, InMemoryReplayCache, ProofRequest, PublicBaseUrl};
use keygate_auth::jws::{self, Algorithm};
use keygate_auth::keys::SigningKey;
use keygate_auth::redirect::RedirectUri;
use keygate_auth::totp::{Totp, TotpSeed};
use proptest::prelude::*;
use secrecy::ExposeSecret;

fn three_parts() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(h, p, s)| format!("{}.{}.{}", b64::encode(h), b64::encode(p), b64::encode(s)))
}

fn json_header() -> impl Strategy<Value = String> {
    let member = prop_oneof![
        Just(r#""alg":"ES256""#.to_owned()),
        Just(r#""alg":"EdDSA""#.to_owned()),
        Just(r#""alg":"none""#.to_owned()),
        Just(r#""typ":"dpop+jwt""#.to_owned()),
        Just(r#""typ":"at+jwt""#.to_owned()),
        Just(r#""crit":["x"]"#.to_owned()),
        Just(r#""kid":"k""#.to_owned()),
        Just(r#""jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#.to_owned()),
        Just(r#""jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#.to_owned()),
        "[a-z]{1,4}".prop_map(|k| format!(r#""{k}":1"#)),
    ];
    prop::collection::vec(member, 0..6).prop_map(|m| format!("{{{}}}", m.join(",")))
}

fn structured_token() -> impl Strategy<Value = String> {
    (
        json_header(),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..70),
    )
        .prop_map(|(h, p, s)| format!("{}.{}.{}", b64::encode(h), b64::encode(p), b64::encode(s)))
}

fn all_verifiers_survive(token: &str) {
    let _ = jws::parse_compact(token).map(|j| j.claims());
    let keys = key_set(Algorithm::EdDsa);
    let _ = access::verify(&config(), &keys, token, NOW);
    let cfg = DpopConfig::new(PublicBaseUrl::parse("https://gate.example.com").unwrap());
    let headers: [&[u8]; 1] = [token.as_bytes()];
    let request = ProofRequest {
        method: "POST",
        target: "/oauth2/token",
        dpop_headers: &headers,
        access_token: Some("t"),
        expected_jkt: None,
    };
    let _ = block_on(dpop::verify_proof(
        &cfg,
        &request,
        &InMemoryReplayCache::new(16),
        NOW,
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..9000)) {
        let text = String::from_utf8_lossy(&bytes);
        all_verifiers_survive(&text);
        let headers: [&[u8]; 1] = [&bytes];
        let cfg = DpopConfig::new(PublicBaseUrl::parse("https://gate.example.com").unwrap());
        let request = ProofRequest { method: "GET", target: "/", dpop_headers: &headers, access_token: None, expected_jkt: None };
        let _ = block_on(dpop::verify_proof(&cfg, &request, &InMemoryReplayCache::new(16), NOW));
    }

    #[test]
    fn well_encoded_garbage_never_panics(token in three_parts()) {
        all_verifiers_survive(&token);
    }

    #[test]
    fn structured_headers_never_panic_or_verify(token in structured_token()) {
        all_verifiers_survive(&token);
        let keys = key_set(Algorithm::EdDsa);
        prop_assert!(access::verify(&config(), &keys, &token, NOW).is_err());
    }

    #[test]
    fn base64_is_canonical(bytes in prop::collection::vec(any::<u8>(), 0..100), text in "[A-Za-z0-9_=+/-]{0,40}") {
        prop_assert_eq!(b64::decode(&b64::encode(&bytes)), Some(bytes));
        if let Some(decoded) = b64::decode(&text) {
            prop_assert_eq!(b64::encode(decoded), text);
        }
    }

    #[test]
    fn any_changed_byte_breaks_the_signature(payload in prop::collection::vec(any::<u8>(), 1..100), pos in any::<prop::sample::Index>(), es in any::<bool>()) {
        let alg = if es { Algorithm::Es256 } else { Algorithm::EdDsa };
        let key = SigningKey::generate(alg);
        let header = format!(r#"{{"alg":"{}"}}"#, alg.as_str());
        let input = format!("{}.{}", b64::encode(&header), b64::encode(&payload));
        let token = format!("{input}.{}", b64::encode(key.sign(input.as_bytes())));
        jws::parse_compact(&token).unwrap().verify(key.verification_key()).unwrap();
        let mut bytes = token.into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let mutated = String::from_utf8(bytes).unwrap();
        if let Ok(j) = jws::parse_compact(&mutated) {
            prop_assert!(j.verify(key.verification_key()).is_err());
        }
    }

    #[test]
    fn issued_tokens_round_trip(scopes in prop::collection::btree_set("[a-z]{1,8}", 0..5), es in any::<bool>()) {
        let keys = key_set(if es { Algorithm::Es256 } else { Algorithm::EdDsa });
        let mut g = grant(None);
        g.scopes = keygate_auth::ids::ScopeSet::parse(&scopes.iter().cloned().collect::<Vec<_>>().join(" ")).unwrap();
        let issued = access::issue(&config(), &keys, &g, NOW).unwrap();
        let v = access::verify(&config(), &keys, issued.token.expose_secret(), NOW).unwrap();
        prop_assert_eq!(v.scopes(), &g.scopes);
    }

    #[test]
    fn htu_normalisation_is_total_and_idempotent(text in "(https?://)?[a-zA-Z0-9.:/%?#@\\[\\]_~-]{0,60}") {
        if let Some(n) = dpop::normalise_htu(&text) {
            prop_assert_eq!(dpop::normalise_htu(&n), Some(n.clone()));
        }
        let base = PublicBaseUrl::parse("https://gate.example.com/kg").unwrap();
        let _ = base.htu_for(&text);
    }

    #[test]
    fn redirect_and_totp_inputs_never_panic(text in "\\PC{0,80}", code in "\\PC{0,10}") {
        if let Ok(r) = RedirectUri::register(&text) {
            prop_assert!(r.matches(&text));
        }
        let seed = TotpSeed::from_bytes(b"12345678901234567890".to_vec());
        let _ = Totp::default().verify(&seed, &code, NOW, None);
    }
}
