//! Refresh token families as pure decisions (S08, S34).
//!
//! A *family* is one sign-in session: every refresh token issued from one authorization
//! grant, in sequence. Exactly one of its tokens is live at a time — the one with the
//! family's current `generation`. Using it rotates the family to the next generation.
//! Presenting any earlier token is reuse: the family (and with it every access token
//! whose `sid` names it) is revoked. A short grace window may let the client retry with
//! the immediate predecessor when the response carrying the successor was lost; the retry
//! *replaces* the unused successor, so there is never more than one live token.
//!
//! # Storage contract
//!
//! The store keeps two tables (names are illustrative):
//!
//! * `refresh_tokens(hash PRIMARY KEY, family_id, generation, issued_at)` — one row per
//!   token ever issued, looked up by [`crate::opaque::TokenHash`] only.
//! * `refresh_families(id PRIMARY KEY, user_id, client_id, jkt, scope, created_at,
//!   last_used_at, generation, previous_generation, rotated_at, revoked_at)` — the
//!   fields of [`FamilyState`].
//!
//! On a refresh request the server looks up the presented token's hash (unknown →
//! `invalid_grant`), reads its family, calls [`decide`], and then:
//!
//! * [`RefreshDecision::Rotate`] / [`RefreshDecision::GraceRetry`]: in **one
//!   transaction**, run the conditional update of [`Rotation`]
//!
//!   ```sql
//!   UPDATE refresh_families
//!      SET generation = :new_generation,
//!          previous_generation = :previous_generation,
//!          rotated_at = :rotated_at,
//!          last_used_at = :now
//!    WHERE id = :family AND generation = :expected_generation AND revoked_at IS NULL
//!   ```
//!
//!   and, only if it changed exactly one row, insert the new token's hash with
//!   `generation = :new_generation`, the audit entry, and commit. If it changed no row
//!   another request won the race: roll back, read the family again and call
//!   [`decide`] once more (the answer will then be a grace retry, reuse or a rejection).
//!   Because every writer compares `generation`, N parallel refreshes of one token yield
//!   at most one live successor, on SQLite and PostgreSQL alike.
//! * [`RefreshDecision::RevokeFamily`]: in one transaction, `UPDATE refresh_families SET
//!   revoked_at = :now WHERE id = :family AND revoked_at IS NULL`, write the audit entry,
//!   publish the revocation to other replicas, answer `invalid_grant`.
//! * [`RefreshDecision::Reject`]: change nothing, answer with
//!   [`RefreshRejection::to_error`].

use crate::clock::UnixTime;
use crate::error::{AuthError, ErrorCode, Reason};
use crate::ids::{ClientId, ScopeSet, SessionId, UserId};
use crate::jwk::Jkt;

/// The longest grace window keygate allows.
pub const MAX_GRACE_SECS: i64 = 30;

/// Whether a client can keep a secret (RFC 6749 §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientType {
    /// A mobile or browser app: its refresh tokens must be DPoP-bound (S08).
    Public,
    /// A server that authenticates with a secret.
    Confidential,
}

/// The key a new family is bound to, from the token request's verified DPoP proof:
/// public clients must present one (S08); confidential clients may.
pub fn family_binding(
    client_type: ClientType,
    proof_jkt: Option<&Jkt>,
) -> Result<Option<Jkt>, AuthError> {
    match (client_type, proof_jkt) {
        (_, Some(jkt)) => Ok(Some(jkt.clone())),
        (ClientType::Public, None) => Err(AuthError::new(
            ErrorCode::InvalidDpopProof,
            Reason::MissingProof,
        )),
        (ClientType::Confidential, None) => Ok(None),
    }
}

/// Lifetimes of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// A family unused this long expires.
    pub idle_secs: i64,
    /// A family expires this long after sign-in, whatever its use.
    pub absolute_secs: i64,
    /// How long after a rotation the immediate predecessor may be retried (0 = never;
    /// capped at [`MAX_GRACE_SECS`]).
    pub grace_secs: i64,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            idle_secs: 14 * 24 * 3600,
            absolute_secs: 90 * 24 * 3600,
            grace_secs: 10,
        }
    }
}

/// The stored state of a family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyState {
    /// The family (session) id; access tokens carry it as `sid`.
    pub family: SessionId,
    /// The user.
    pub user: UserId,
    /// The client the family was issued to.
    pub client: ClientId,
    /// The DPoP key the family is bound to (required for public clients).
    pub jkt: Option<Jkt>,
    /// The granted scopes.
    pub scopes: ScopeSet,
    /// Sign-in time (absolute expiry counts from here).
    pub created_at: UnixTime,
    /// Last successful refresh (idle expiry counts from here).
    pub last_used_at: UnixTime,
    /// Generation of the one live refresh token.
    pub generation: u64,
    /// The generation presented at the last normal rotation (the grace candidate).
    pub previous_generation: Option<u64>,
    /// When the last normal rotation happened.
    pub rotated_at: Option<UnixTime>,
    /// When the family was revoked.
    pub revoked_at: Option<UnixTime>,
}

impl FamilyState {
    /// A new family at sign-in; its first refresh token has generation 0.
    pub fn new(
        family: SessionId,
        user: UserId,
        client: ClientId,
        jkt: Option<Jkt>,
        scopes: ScopeSet,
        now: UnixTime,
    ) -> Self {
        Self {
            family,
            user,
            client,
            jkt,
            scopes,
            created_at: now,
            last_used_at: now,
            generation: 0,
            previous_generation: None,
            rotated_at: None,
            revoked_at: None,
        }
    }
}

/// The presented token, as found in `refresh_tokens` by its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentedToken {
    /// Its family.
    pub family: SessionId,
    /// Its generation.
    pub generation: u64,
}

/// Who presents the token.
#[derive(Clone, Copy, Debug)]
pub struct Presenter<'a> {
    /// The authenticated (or, for public clients, identified) client.
    pub client: &'a ClientId,
    /// The thumbprint of the key whose DPoP proof accompanied the request, if any.
    pub jkt: Option<&'a Jkt>,
    /// Whether the client must keep its sessions bound to a key (a public client that
    /// must use DPoP). A family bound to none (begun while the client was in a DPoP
    /// migration) is then refused: the app signs in again, with a key.
    pub must_be_bound: bool,
}

/// A rotation to commit with one conditional update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The family.
    pub family: SessionId,
    /// The `generation` the row must still have (the compare of compare-and-set).
    pub expected_generation: u64,
    /// The generation of the token to issue.
    pub new_generation: u64,
    /// The value to store in `previous_generation`.
    pub previous_generation: Option<u64>,
    /// The value to store in `rotated_at`.
    pub rotated_at: Option<UnixTime>,
    /// The value to store in `last_used_at`.
    pub now: UnixTime,
}

impl Rotation {
    /// The family state after this rotation commits (a reference model for stores).
    pub fn apply(&self, state: &FamilyState) -> FamilyState {
        FamilyState {
            generation: self.new_generation,
            previous_generation: self.previous_generation,
            rotated_at: self.rotated_at,
            last_used_at: self.now,
            ..state.clone()
        }
    }
}

/// Reuse of a rotated token: revoke the family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReuseDetected {
    /// The family to revoke.
    pub family: SessionId,
    /// The generation that was presented.
    pub presented_generation: u64,
    /// The family's live generation.
    pub live_generation: u64,
}

impl ReuseDetected {
    /// The error for the token endpoint (after the family is revoked).
    pub fn to_error(&self) -> AuthError {
        AuthError::new(ErrorCode::InvalidGrant, Reason::RefreshReuse)
    }
}

/// Why a refresh is refused without changing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshRejection {
    /// The family was revoked.
    FamilyRevoked,
    /// Unused for longer than the idle lifetime.
    IdleExpired,
    /// Older than the absolute lifetime.
    AbsoluteExpired,
    /// Presented by a client other than the one it was issued to.
    WrongClient,
    /// The family is DPoP-bound and the proof is missing or by another key (S16).
    KeyMismatch,
    /// The token row and the family row disagree (a store bug); fail closed.
    Inconsistent,
    /// The family is bound to no key, its client must now use DPoP, and no proof came.
    MissingProof,
    /// The family is bound to no key and its client must now use DPoP: a proof cannot
    /// bind a session after the fact.
    Unbound,
}

impl RefreshRejection {
    /// The error for the token endpoint.
    pub fn to_error(self) -> AuthError {
        match self {
            Self::KeyMismatch => AuthError::new(ErrorCode::InvalidDpopProof, Reason::JktMismatch),
            Self::MissingProof => AuthError::new(ErrorCode::InvalidDpopProof, Reason::MissingProof),
            _ => AuthError::new(ErrorCode::InvalidGrant, Reason::RefreshRejected),
        }
    }
}

/// What to do with a refresh request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshDecision {
    /// The live token was presented: issue the next one.
    Rotate(Rotation),
    /// The immediate predecessor was retried within the grace window: issue a new
    /// successor that replaces the unused one.
    GraceRetry(Rotation),
    /// A rotated token was presented: revoke the family.
    RevokeFamily(ReuseDetected),
    /// Refuse; change nothing.
    Reject(RefreshRejection),
}

/// Decides a refresh request from the stored state alone.
pub fn decide(
    policy: &RefreshPolicy,
    state: &FamilyState,
    presented: &PresentedToken,
    presenter: &Presenter<'_>,
    now: UnixTime,
) -> RefreshDecision {
    use RefreshDecision::Reject;
    if presented.family != state.family {
        return Reject(RefreshRejection::Inconsistent);
    }
    if state.revoked_at.is_some() {
        return Reject(RefreshRejection::FamilyRevoked);
    }
    if presenter.client != &state.client {
        return Reject(RefreshRejection::WrongClient);
    }
    // Checked before reuse detection: someone holding a stolen token but not the device
    // key can neither refresh nor revoke the family.
    match (&state.jkt, presenter.jkt) {
        (Some(bound), jkt) if jkt != Some(bound) => {
            return Reject(RefreshRejection::KeyMismatch);
        }
        (None, None) if presenter.must_be_bound => {
            return Reject(RefreshRejection::MissingProof);
        }
        (None, Some(_)) if presenter.must_be_bound => {
            return Reject(RefreshRejection::Unbound);
        }
        _ => {}
    }
    if now >= state.created_at.plus(policy.absolute_secs) {
        return Reject(RefreshRejection::AbsoluteExpired);
    }
    if now >= state.last_used_at.plus(policy.idle_secs) {
        return Reject(RefreshRejection::IdleExpired);
    }
    let Some(next) = state.generation.checked_add(1) else {
        return Reject(RefreshRejection::Inconsistent);
    };
    if presented.generation == state.generation {
        return RefreshDecision::Rotate(Rotation {
            family: state.family.clone(),
            expected_generation: state.generation,
            new_generation: next,
            previous_generation: Some(state.generation),
            rotated_at: Some(now),
            now,
        });
    }
    if presented.generation > state.generation {
        return Reject(RefreshRejection::Inconsistent);
    }
    let grace = policy.grace_secs.clamp(0, MAX_GRACE_SECS);
    let in_grace = state.previous_generation == Some(presented.generation)
        && state.rotated_at.is_some_and(|at| now < at.plus(grace));
    if in_grace {
        // The window is not extended and the grace candidate stays the same, so a
        // retry can happen only within `grace` seconds of the original rotation.
        return RefreshDecision::GraceRetry(Rotation {
            family: state.family.clone(),
            expected_generation: state.generation,
            new_generation: next,
            previous_generation: state.previous_generation,
            rotated_at: state.rotated_at,
            now,
        });
    }
    RefreshDecision::RevokeFamily(ReuseDetected {
        family: state.family.clone(),
        presented_generation: presented.generation,
        live_generation: state.generation,
    })
}
