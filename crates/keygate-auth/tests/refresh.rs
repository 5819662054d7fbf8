//! Refresh token families: S08 (rotation, reuse revokes the family, grace for the
//! immediate predecessor only, idle and absolute expiry, DPoP binding) and S34 (at most
//! one live successor under concurrency, with the documented conditional update).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use keygate_auth::UnixTime;
use keygate_auth::error::{ErrorCode, Reason};
use keygate_auth::ids::{ClientId, ScopeSet, SessionId, UserId};
use keygate_auth::jwk::Jkt;
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::SigningKey;
use keygate_auth::refresh::{
    FamilyState, PresentedToken, Presenter, RefreshDecision, RefreshPolicy, RefreshRejection,
    decide,
};

const T0: UnixTime = UnixTime(1_800_000_000);

fn jkt() -> Jkt {
    // A fixed device key per test run is enough; the binding is what matters.
    SigningKey::from_secret_bytes(Algorithm::Es256, &[7u8; 32])
        .unwrap()
        .verification_key()
        .thumbprint()
}

fn client() -> ClientId {
    ClientId::parse("app-1").unwrap()
}

fn family() -> FamilyState {
    FamilyState::new(
        SessionId::parse("fam-1").unwrap(),
        UserId::parse("user-1").unwrap(),
        client(),
        Some(jkt()),
        ScopeSet::parse("ai").unwrap(),
        T0,
    )
}

fn presented(generation: u64) -> PresentedToken {
    PresentedToken {
        family: SessionId::parse("fam-1").unwrap(),
        generation,
    }
}

/// A model of the store's conditional update: applies a rotation only if the row still
/// has the expected generation and is not revoked.
fn commit(state: &mut FamilyState, decision: &RefreshDecision) -> Option<u64> {
    match decision {
        RefreshDecision::Rotate(r) | RefreshDecision::GraceRetry(r) => {
            if state.generation == r.expected_generation && state.revoked_at.is_none() {
                *state = r.apply(state);
                Some(r.new_generation)
            } else {
                None
            }
        }
        RefreshDecision::RevokeFamily(_) => {
            if state.revoked_at.is_none() {
                state.revoked_at = Some(T0);
            }
            None
        }
        RefreshDecision::Reject(_) => None,
    }
}

fn refresh(
    policy: &RefreshPolicy,
    state: &mut FamilyState,
    generation: u64,
    now: UnixTime,
) -> RefreshDecision {
    let c = client();
    let k = jkt();
    let d = decide(
        policy,
        state,
        &presented(generation),
        &Presenter {
            client: &c,
            jkt: Some(&k),
            must_be_bound: false,
        },
        now,
    );
    commit(state, &d);
    d
}

#[test]
fn s08_each_use_rotates() {
    let policy = RefreshPolicy::default();
    let mut state = family();
    for g in 0..5u64 {
        let d = refresh(&policy, &mut state, g, T0.plus(100 * g as i64));
        assert!(
            matches!(d, RefreshDecision::Rotate(ref r) if r.new_generation == g + 1),
            "{d:?}"
        );
    }
    assert_eq!(state.generation, 5);
}

#[test]
fn s08_reuse_of_a_rotated_token_revokes_the_family() {
    let policy = RefreshPolicy {
        grace_secs: 0,
        ..RefreshPolicy::default()
    };
    let mut state = family();
    refresh(&policy, &mut state, 0, T0);
    refresh(&policy, &mut state, 1, T0.plus(60));
    // The attacker replays generation 0 (or 1).
    let d = refresh(&policy, &mut state, 0, T0.plus(120));
    let RefreshDecision::RevokeFamily(reuse) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(reuse.live_generation, 2);
    let err = reuse.to_error();
    assert_eq!(err.code(), ErrorCode::InvalidGrant);
    assert_eq!(err.reason(), Reason::RefreshReuse);
    assert!(state.revoked_at.is_some());
    // Now even the live token is dead.
    let d = refresh(&policy, &mut state, 2, T0.plus(130));
    assert_eq!(d, RefreshDecision::Reject(RefreshRejection::FamilyRevoked));
}

#[test]
fn s08_grace_covers_only_the_immediate_predecessor_briefly() {
    let policy = RefreshPolicy {
        grace_secs: 10,
        ..RefreshPolicy::default()
    };
    // Lost response: the client retries generation 0 within the window.
    let mut state = family();
    refresh(&policy, &mut state, 0, T0);
    let d = refresh(&policy, &mut state, 0, T0.plus(5));
    assert!(
        matches!(d, RefreshDecision::GraceRetry(ref r) if r.new_generation == 2),
        "{d:?}"
    );
    // The successor it replaced (generation 1) is dead: presenting it is reuse.
    let d = refresh(&policy, &mut state, 1, T0.plus(6));
    assert!(matches!(d, RefreshDecision::RevokeFamily(_)), "{d:?}");

    // After the window, the predecessor is reuse.
    let mut state = family();
    refresh(&policy, &mut state, 0, T0);
    let d = refresh(&policy, &mut state, 0, T0.plus(10));
    assert!(matches!(d, RefreshDecision::RevokeFamily(_)), "{d:?}");

    // Two steps back is reuse even inside the window.
    let mut state = family();
    refresh(&policy, &mut state, 0, T0);
    refresh(&policy, &mut state, 1, T0.plus(1));
    let d = refresh(&policy, &mut state, 0, T0.plus(2));
    assert!(matches!(d, RefreshDecision::RevokeFamily(_)), "{d:?}");

    // Retries do not extend the window.
    let mut state = family();
    refresh(&policy, &mut state, 0, T0);
    assert!(matches!(
        refresh(&policy, &mut state, 0, T0.plus(9)),
        RefreshDecision::GraceRetry(_)
    ));
    assert!(matches!(
        refresh(&policy, &mut state, 0, T0.plus(11)),
        RefreshDecision::RevokeFamily(_)
    ));

    // A configured grace beyond 30 s is capped.
    let lax = RefreshPolicy {
        grace_secs: 3600,
        ..RefreshPolicy::default()
    };
    let mut state = family();
    refresh(&lax, &mut state, 0, T0);
    assert!(matches!(
        refresh(&lax, &mut state, 0, T0.plus(31)),
        RefreshDecision::RevokeFamily(_)
    ));
}

#[test]
fn s08_idle_and_absolute_expiry() {
    let policy = RefreshPolicy {
        idle_secs: 1000,
        absolute_secs: 5000,
        grace_secs: 0,
    };
    let mut state = family();
    let d = refresh(&policy, &mut state, 0, T0.plus(1000));
    assert_eq!(d, RefreshDecision::Reject(RefreshRejection::IdleExpired));
    assert_eq!(state.generation, 0, "nothing changed");
    // Regular use keeps it alive until the absolute expiry.
    let mut state = family();
    let mut g = 0;
    let mut t = T0;
    while t < T0.plus(4900) {
        t = t.plus(900);
        match refresh(&policy, &mut state, g, t) {
            RefreshDecision::Rotate(r) => g = r.new_generation,
            RefreshDecision::Reject(RefreshRejection::AbsoluteExpired) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        refresh(&policy, &mut state, g, T0.plus(5000)),
        RefreshDecision::Reject(RefreshRejection::AbsoluteExpired)
    );
    let err = RefreshRejection::AbsoluteExpired.to_error();
    assert_eq!(err.code(), ErrorCode::InvalidGrant);
}

#[test]
fn s08_s16_refresh_requires_a_proof_by_the_bound_key_and_the_same_client() {
    let policy = RefreshPolicy::default();
    let state = family();
    let c = client();
    let other_key = SigningKey::from_secret_bytes(Algorithm::Es256, &[8u8; 32])
        .unwrap()
        .verification_key()
        .thumbprint();
    for presenter_jkt in [None, Some(&other_key)] {
        let d = decide(
            &policy,
            &state,
            &presented(0),
            &Presenter {
                client: &c,
                jkt: presenter_jkt,
                must_be_bound: false,
            },
            T0,
        );
        assert_eq!(d, RefreshDecision::Reject(RefreshRejection::KeyMismatch));
    }
    // A thief without the key cannot revoke the family by replaying an old token either.
    let mut rotated = family();
    refresh(&policy, &mut rotated, 0, T0);
    let d = decide(
        &policy,
        &rotated,
        &presented(0),
        &Presenter {
            client: &c,
            jkt: Some(&other_key),
            must_be_bound: false,
        },
        T0.plus(100),
    );
    assert_eq!(d, RefreshDecision::Reject(RefreshRejection::KeyMismatch));
    assert_eq!(
        RefreshRejection::KeyMismatch.to_error().code(),
        ErrorCode::InvalidDpopProof
    );
    let other_client = ClientId::parse("app-2").unwrap();
    let k = jkt();
    let d = decide(
        &policy,
        &state,
        &presented(0),
        &Presenter {
            client: &other_client,
            jkt: Some(&k),
            must_be_bound: false,
        },
        T0,
    );
    assert_eq!(d, RefreshDecision::Reject(RefreshRejection::WrongClient));
}

#[test]
fn an_unbound_family_is_refused_once_its_client_must_use_dpop() {
    let policy = RefreshPolicy::default();
    let c = client();
    let k = jkt();
    let unbound = FamilyState::new(
        SessionId::parse("fam-1").unwrap(),
        UserId::parse("user-1").unwrap(),
        client(),
        None,
        ScopeSet::parse("ai").unwrap(),
        T0,
    );
    let decide_with = |jkt: Option<&Jkt>, must_be_bound| {
        decide(
            &policy,
            &unbound,
            &presented(0),
            &Presenter {
                client: &c,
                jkt,
                must_be_bound,
            },
            T0,
        )
    };
    // During a migration (Bearer allowed) the unbound family rotates like any other.
    assert!(matches!(
        decide_with(None, false),
        RefreshDecision::Rotate(_)
    ));
    // Once the client must use DPoP: no proof is a DPoP error, a proof cannot bind the
    // session after the fact (sign in again).
    assert_eq!(
        decide_with(None, true),
        RefreshDecision::Reject(RefreshRejection::MissingProof)
    );
    assert_eq!(
        RefreshRejection::MissingProof.to_error().code(),
        ErrorCode::InvalidDpopProof
    );
    assert_eq!(
        decide_with(Some(&k), true),
        RefreshDecision::Reject(RefreshRejection::Unbound)
    );
    assert_eq!(
        RefreshRejection::Unbound.to_error().code(),
        ErrorCode::InvalidGrant
    );
    // A bound family is unaffected by the flag.
    assert!(matches!(
        decide(
            &policy,
            &family(),
            &presented(0),
            &Presenter {
                client: &c,
                jkt: Some(&k),
                must_be_bound: true,
            },
            T0,
        ),
        RefreshDecision::Rotate(_)
    ));
}

#[test]
fn s34_parallel_refreshes_yield_at_most_one_live_successor() {
    for grace in [0, 10] {
        let policy = RefreshPolicy {
            grace_secs: grace,
            ..RefreshPolicy::default()
        };
        let mut state = family();
        // 50 requests all read the same state before any of them commits …
        let c = client();
        let k = jkt();
        let snapshot = state.clone();
        let decisions: Vec<RefreshDecision> = (0..50)
            .map(|_| {
                decide(
                    &policy,
                    &snapshot,
                    &presented(0),
                    &Presenter {
                        client: &c,
                        jkt: Some(&k),
                        must_be_bound: false,
                    },
                    T0,
                )
            })
            .collect();
        // … then commit one after another with the conditional update; losers re-read
        // and decide once more, as the storage contract says.
        let mut issued = Vec::new();
        for d in &decisions {
            match commit(&mut state, d) {
                Some(g) => issued.push(g),
                None => {
                    let again = decide(
                        &policy,
                        &state,
                        &presented(0),
                        &Presenter {
                            client: &c,
                            jkt: Some(&k),
                            must_be_bound: false,
                        },
                        T0,
                    );
                    if let Some(g) = commit(&mut state, &again) {
                        issued.push(g);
                    }
                }
            }
        }
        // Only the latest issued token can be live; every other one is superseded.
        let live: Vec<u64> = issued
            .iter()
            .copied()
            .filter(|g| state.revoked_at.is_none() && *g == state.generation)
            .collect();
        assert!(live.len() <= 1, "grace {grace}: {live:?}");
        if grace == 0 {
            assert_eq!(issued.len(), 1, "exactly one rotation, then reuse");
            assert!(state.revoked_at.is_some());
        }
    }
}

#[test]
fn s08_public_client_families_must_be_dpop_bound() {
    use keygate_auth::refresh::{ClientType, family_binding};
    let k = jkt();
    let err = family_binding(ClientType::Public, None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidDpopProof);
    assert_eq!(
        family_binding(ClientType::Public, Some(&k)).unwrap(),
        Some(k.clone())
    );
    assert_eq!(
        family_binding(ClientType::Confidential, None).unwrap(),
        None
    );
}
