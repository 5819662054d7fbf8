//! Turning a protected request (method, target, `Authorization` and `DPoP` headers) into
//! a [`VerifiedAccess`] proof value, or an [`AuthError`] with the right challenge.
//!
//! The order is: one credential (S16) → access token (S01–S04) → binding rules (S16) →
//! DPoP proof with `ath` and `jkt` (S13–S15) → revocation (S12). Only
//! [`verify_request`] can make a `VerifiedAccess`, so code that requires one cannot be
//! reached with an unchecked request.

use std::future::Future;

use crate::access::{self, AccessTokenCache, AccessTokenConfig, VerifiedAccessToken};
use crate::clock::UnixTime;
use crate::dpop::{self, DpopConfig, ProofRequest, ReplayCache};
use crate::error::{AuthError, ErrorCode, Reason, Scheme};
use crate::ids::{ClientId, Scope, ScopeSet, SessionId, UserId};
use crate::jwk::{CertThumbprint, Jkt};
use crate::keys::SigningKeySet;

/// The revocation store could not answer; callers fail closed (S35).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("revocation store unavailable")]
pub struct RevocationUnavailable;

/// Whether a verified token's session, family, user or client has been revoked (S12).
///
/// Contract: answer from state shared by every replica (or a local copy refreshed within
/// a stated bound), covering revoked sessions (`sid`), disabled users (`sub`), removed
/// clients, and per-user "tokens issued before T are void" marks (compare with
/// [`VerifiedAccessToken::issued_at`]). On any doubt answer `Err`.
pub trait RevocationCheck: Send + Sync {
    /// `Ok(true)` when the token must be refused.
    fn is_revoked(
        &self,
        token: &VerifiedAccessToken,
    ) -> impl Future<Output = Result<bool, RevocationUnavailable>> + Send;

    /// Whether `client`'s own registration lets it use tokens bound to no key with the
    /// `Bearer` scheme (a client migrating to DPoP). Asked only for such a token, and only
    /// when [`ResourceVerifier::allow_unbound_bearer`] is off; the same freshness contract
    /// as [`Self::is_revoked`]. The default answers no.
    fn allows_unbound_bearer(
        &self,
        client: &ClientId,
    ) -> impl Future<Output = Result<bool, RevocationUnavailable>> + Send {
        let _ = client;
        std::future::ready(Ok(false))
    }
}

/// The checks a resource applies.
#[derive(Debug)]
pub struct ResourceVerifier {
    /// Access token rules.
    pub access: AccessTokenConfig,
    /// Proof rules (public base URL, algorithms, window, nonces).
    pub dpop: DpopConfig,
    /// Whether tokens without `cnf.jkt` may be used with the `Bearer` scheme (e.g. for
    /// confidential clients); bound tokens never may.
    pub allow_unbound_bearer: bool,
    /// Caches signature checks of access tokens (revocation is still asked every time).
    pub token_cache: Option<AccessTokenCache>,
}

impl ResourceVerifier {
    fn verify_token(
        &self,
        keys: &SigningKeySet,
        token: &str,
        now: UnixTime,
    ) -> Result<VerifiedAccessToken, AuthError> {
        match &self.token_cache {
            Some(cache) => cache.verify(&self.access, keys, token, now),
            None => access::verify(&self.access, keys, token, now),
        }
    }
}

/// The parts of the request that are checked.
#[derive(Clone, Copy, Debug)]
pub struct ResourceRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The request target as received (origin-form path and query).
    pub target: &'a str,
    /// Every `Authorization` header value, raw.
    pub authorization: &'a [&'a [u8]],
    /// Every `DPoP` header value, raw.
    pub dpop: &'a [&'a [u8]],
    /// The thumbprint of the client certificate the connection presented (mutual TLS),
    /// if any: a certificate-bound token is accepted only with that certificate.
    pub client_cert: Option<&'a CertThumbprint>,
}

/// Proof that a request carried a valid, live, correctly bound access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedAccess {
    user: UserId,
    client: ClientId,
    scopes: ScopeSet,
    session: SessionId,
    jkt: Option<Jkt>,
    x5t: Option<CertThumbprint>,
    tier: Option<crate::access::TrustTier>,
    expires_at: UnixTime,
}

impl VerifiedAccess {
    /// The app attestation tier the token carries (`None`: the client attests nothing).
    pub fn tier(&self) -> Option<crate::access::TrustTier> {
        self.tier
    }
    /// The user.
    pub fn user(&self) -> &UserId {
        &self.user
    }
    /// The client.
    pub fn client(&self) -> &ClientId {
        &self.client
    }
    /// The granted scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }
    /// The session (refresh family).
    pub fn session(&self) -> &SessionId {
        &self.session
    }
    /// The DPoP key thumbprint, when the token is bound.
    pub fn jkt(&self) -> Option<&Jkt> {
        self.jkt.as_ref()
    }
    /// The client certificate thumbprint, when the token is certificate-bound.
    pub fn x5t(&self) -> Option<&CertThumbprint> {
        self.x5t.as_ref()
    }
    /// When the token expires.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }

    /// `Ok` when `scope` was granted, else `insufficient_scope`.
    pub fn require_scope(&self, scope: &Scope) -> Result<(), AuthError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(AuthError::new(
                ErrorCode::InsufficientScope,
                Reason::InsufficientScope,
            ))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthScheme {
    Dpop,
    Bearer,
}

/// `b64token` of RFC 6750 §2.1.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        // Every byte looked at, no early exit: the compiler checks many at a time, and
        // every proxied call's token (hundreds of bytes) passes here.
        && body.bytes().fold(true, |ok, b| {
            ok & (b.is_ascii_alphanumeric()
                | (b == b'-')
                | (b == b'.')
                | (b == b'_')
                | (b == b'~')
                | (b == b'+')
                | (b == b'/'))
        })
}

fn parse_authorization(value: &[u8]) -> Result<(AuthScheme, &str), AuthError> {
    let text =
        std::str::from_utf8(value).map_err(|_| AuthError::request(Reason::BadAuthorization))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or(AuthError::request(Reason::BadAuthorization))?;
    let token = token.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err(AuthError::request(Reason::BadAuthorization));
    }
    if scheme.eq_ignore_ascii_case("dpop") {
        Ok((AuthScheme::Dpop, token))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok((AuthScheme::Bearer, token))
    } else {
        Err(AuthError::request(Reason::BadAuthorization))
    }
}

fn single_credential<'a>(headers: &[&'a [u8]]) -> Result<(AuthScheme, &'a str), AuthError> {
    match headers {
        [] => Err(AuthError::token(Reason::MissingAuthorization)),
        [one] => parse_authorization(one),
        // Two credentials, including DPoP and Bearer at once (S16): a 400.
        _ => Err(AuthError::request(Reason::MultipleAuthorization)),
    }
}

/// Verifies a protected request.
pub async fn verify_request<R, V>(
    verifier: &ResourceVerifier,
    keys: &SigningKeySet,
    request: &ResourceRequest<'_>,
    replay: &R,
    revocation: &V,
    now: UnixTime,
) -> Result<VerifiedAccess, AuthError>
where
    R: ReplayCache + ?Sized,
    V: RevocationCheck + ?Sized,
{
    let (scheme, token) = single_credential(request.authorization)?;
    let verified = match scheme {
        AuthScheme::Bearer => {
            let challenge = if verifier.allow_unbound_bearer {
                Scheme::Bearer
            } else {
                Scheme::Dpop
            };
            let t = verifier
                .verify_token(keys, token, now)
                .map_err(|e| e.with_scheme(challenge))?;
            if t.jkt().is_some() {
                return Err(AuthError::token(Reason::BoundTokenAsBearer));
            }
            // A certificate-bound token is sent as Bearer (RFC 8705 §3); it is bound, so
            // the rule against unbound Bearer tokens does not apply to it.
            if t.x5t().is_none() && !verifier.allow_unbound_bearer {
                match revocation.allows_unbound_bearer(t.client()).await {
                    Ok(true) => {}
                    Ok(false) => return Err(AuthError::token(Reason::BearerNotAllowed)),
                    Err(RevocationUnavailable) => {
                        return Err(AuthError::unavailable(Reason::RevocationUnavailable));
                    }
                }
            }
            t
        }
        AuthScheme::Dpop => {
            let t = verifier.verify_token(keys, token, now)?;
            let jkt = t
                .jkt()
                .ok_or(AuthError::token(Reason::UnboundTokenAsDpop))?;
            let proof_request = ProofRequest {
                method: request.method,
                target: request.target,
                dpop_headers: request.dpop,
                access_token: Some(token),
                expected_jkt: Some(jkt),
            };
            dpop::verify_proof(&verifier.dpop, &proof_request, replay, now).await?;
            t
        }
    };
    // RFC 8705 §3: a certificate-bound token only over a connection that presented that
    // very certificate (whatever the scheme: a DPoP proof does not stand in for it).
    if let Some(bound) = verified.x5t() {
        if request.client_cert != Some(bound) {
            return Err(AuthError::token(Reason::CertificateMismatch));
        }
    }
    match revocation.is_revoked(&verified).await {
        Ok(false) => {}
        Ok(true) => return Err(AuthError::token(Reason::Revoked)),
        Err(RevocationUnavailable) => {
            return Err(AuthError::unavailable(Reason::RevocationUnavailable));
        }
    }
    Ok(VerifiedAccess {
        user: verified.user().clone(),
        client: verified.client().clone(),
        scopes: verified.scopes().clone(),
        session: verified.session().clone(),
        jkt: verified.jkt().cloned(),
        x5t: verified.x5t().cloned(),
        tier: verified.tier(),
        expires_at: verified.expires_at(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_parsing() {
        assert_eq!(
            parse_authorization(b"DPoP abc.def-_").unwrap().0,
            AuthScheme::Dpop
        );
        assert_eq!(
            parse_authorization(b"bearer abc==").unwrap().0,
            AuthScheme::Bearer
        );
        assert!(parse_authorization(b"Basic abc").is_err());
        assert!(parse_authorization(b"DPoP a,b").is_err());
        assert!(parse_authorization(b"DPoP").is_err());
        assert!(parse_authorization(b"DPoP \xff").is_err());
        let both: [&[u8]; 2] = [b"DPoP a", b"Bearer a"];
        let err = single_credential(&both).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
    }
}
