//! Authorization code redemption: client, redirect URI, PKCE, expiry and DPoP binding.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use keygate_auth::UnixTime;
use keygate_auth::code::{CODE_TTL_SECS, CodeGrant, CodeRedemption, grant_scopes, redeem};
use keygate_auth::error::ErrorCode;
use keygate_auth::ids::{ClientId, ScopeSet, UserId};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::SigningKey;
use keygate_auth::pkce::CodeChallenge;

const T0: UnixTime = UnixTime(1_800_000_000);
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const REDIRECT: &str = "com.example.app:/oauth2redirect";

fn grant() -> CodeGrant {
    CodeGrant {
        client: ClientId::parse("app-1").unwrap(),
        user: UserId::parse("user-1").unwrap(),
        redirect_uri: REDIRECT.into(),
        scopes: ScopeSet::parse("ai").unwrap(),
        challenge: CodeChallenge::for_verifier(VERIFIER),
        dpop_jkt: None,
        expires_at: T0.plus(CODE_TTL_SECS),
    }
}

#[test]
fn a_correct_redemption_passes() {
    let client = ClientId::parse("app-1").unwrap();
    let ok = CodeRedemption {
        client: &client,
        redirect_uri: Some(REDIRECT),
        code_verifier: Some(VERIFIER),
        proof_jkt: None,
    };
    redeem(&grant(), &ok, T0).unwrap();
}

#[test]
fn every_mismatch_is_invalid_grant() {
    let client = ClientId::parse("app-1").unwrap();
    let other = ClientId::parse("app-2").unwrap();
    let base = CodeRedemption {
        client: &client,
        redirect_uri: Some(REDIRECT),
        code_verifier: Some(VERIFIER),
        proof_jkt: None,
    };
    let cases = [
        (
            CodeRedemption {
                client: &other,
                ..base
            },
            T0,
        ),
        (
            CodeRedemption {
                redirect_uri: None,
                ..base
            },
            T0,
        ),
        (
            CodeRedemption {
                redirect_uri: Some("com.example.app:/other"),
                ..base
            },
            T0,
        ),
        (
            CodeRedemption {
                code_verifier: None,
                ..base
            },
            T0,
        ),
        (
            CodeRedemption {
                code_verifier: Some(&VERIFIER[1..]),
                ..base
            },
            T0,
        ),
        (base, T0.plus(CODE_TTL_SECS)),
    ];
    for (i, (request, now)) in cases.iter().enumerate() {
        let err = redeem(&grant(), request, *now).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidGrant, "case {i}");
    }
}

#[test]
fn dpop_jkt_bound_codes_need_a_proof_by_that_key() {
    let key = SigningKey::generate(Algorithm::Es256)
        .verification_key()
        .thumbprint();
    let other = SigningKey::generate(Algorithm::Es256)
        .verification_key()
        .thumbprint();
    let mut g = grant();
    g.dpop_jkt = Some(key.clone());
    let client = ClientId::parse("app-1").unwrap();
    let base = CodeRedemption {
        client: &client,
        redirect_uri: Some(REDIRECT),
        code_verifier: Some(VERIFIER),
        proof_jkt: Some(&key),
    };
    redeem(&g, &base, T0).unwrap();
    for jkt in [None, Some(&other)] {
        let err = redeem(
            &g,
            &CodeRedemption {
                proof_jkt: jkt,
                ..base
            },
            T0,
        )
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidDpopProof);
    }
}

#[test]
fn s07_only_allowed_scopes_are_granted() {
    let allowed = ScopeSet::parse("ai maps").unwrap();
    assert_eq!(grant_scopes(None, &allowed), Some(allowed.clone()));
    let ai = ScopeSet::parse("ai").unwrap();
    assert_eq!(grant_scopes(Some(&ai), &allowed), Some(ai));
    assert_eq!(
        grant_scopes(Some(&ScopeSet::parse("ai admin").unwrap()), &allowed),
        None
    );
}
