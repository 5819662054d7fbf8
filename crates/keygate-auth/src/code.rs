//! Authorization codes (RFC 6749 §4.1 with OAuth 2.1 rules): what is stored with a code
//! at `/oauth2/authorize`, and the checks at the token endpoint.
//!
//! # Storage contract
//!
//! The code itself is an [`crate::opaque::OpaqueToken`] of kind `AuthorizationCode`;
//! only its hash is stored, with the [`CodeGrant`]. Redemption is single-use with one
//! conditional update in the same transaction that creates the refresh family:
//! `UPDATE auth_codes SET used_at = :now, family_id = :family WHERE hash = :hash AND
//! used_at IS NULL`. If no row changed, the code was already used: answer
//! `invalid_grant` and revoke the family recorded for it (RFC 6749 §4.1.2).

use crate::clock::UnixTime;
use crate::error::{AuthError, ErrorCode, Reason};
use crate::ids::{ClientId, ScopeSet, UserId};
use crate::jwk::Jkt;
use crate::pkce::CodeChallenge;

/// How long a code stays redeemable (RFC 6749 §4.1.2 recommends at most 10 minutes;
/// a native app redeems at once).
pub const CODE_TTL_SECS: i64 = 60;

/// What the authorization endpoint stored with a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeGrant {
    /// The client that asked.
    pub client: ClientId,
    /// The user who signed in.
    pub user: UserId,
    /// The exact `redirect_uri` of the authorization request.
    pub redirect_uri: String,
    /// The granted scopes.
    pub scopes: ScopeSet,
    /// The PKCE challenge.
    pub challenge: CodeChallenge,
    /// The `dpop_jkt` authorization request parameter (RFC 9449 §10), if sent.
    pub dpop_jkt: Option<Jkt>,
    /// When it expires.
    pub expires_at: UnixTime,
}

/// The token request's view of a code redemption.
#[derive(Clone, Copy, Debug)]
pub struct CodeRedemption<'a> {
    /// The client making the token request (authenticated when confidential).
    pub client: &'a ClientId,
    /// The `redirect_uri` parameter.
    pub redirect_uri: Option<&'a str>,
    /// The `code_verifier` parameter.
    pub code_verifier: Option<&'a str>,
    /// The thumbprint of the key of the request's verified DPoP proof, if any.
    pub proof_jkt: Option<&'a Jkt>,
}

fn grant_error() -> AuthError {
    AuthError::new(ErrorCode::InvalidGrant, Reason::CodeRejected)
}

/// Checks a redemption against the stored grant. The caller still has to mark the code
/// used with the conditional update above.
pub fn redeem(
    grant: &CodeGrant,
    request: &CodeRedemption<'_>,
    now: UnixTime,
) -> Result<(), AuthError> {
    if now >= grant.expires_at {
        return Err(grant_error());
    }
    if request.client != &grant.client {
        return Err(grant_error());
    }
    if request.redirect_uri != Some(grant.redirect_uri.as_str()) {
        return Err(grant_error());
    }
    let verifier = request.code_verifier.ok_or_else(grant_error)?;
    if !grant.challenge.verify(verifier) {
        return Err(grant_error());
    }
    if let Some(bound) = &grant.dpop_jkt {
        if request.proof_jkt != Some(bound) {
            return Err(AuthError::new(
                ErrorCode::InvalidDpopProof,
                Reason::JktMismatch,
            ));
        }
    }
    Ok(())
}

/// Decides the scopes to grant: the requested ones if all are allowed (`None` when one
/// is not: answer `invalid_scope`), or everything allowed when none were requested.
pub fn grant_scopes(requested: Option<&ScopeSet>, allowed: &ScopeSet) -> Option<ScopeSet> {
    match requested {
        None => Some(allowed.clone()),
        Some(req) if req.is_subset(allowed) => Some(req.clone()),
        Some(_) => None,
    }
}
