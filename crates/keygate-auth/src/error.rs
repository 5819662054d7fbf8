//! Errors of token and proof verification, carrying what the client must be told.
//!
//! The server crate maps an [`AuthError`] to a response: [`AuthError::disposition`] says
//! which kind of status, [`AuthError::code`] is the OAuth error code for the body or the
//! challenge, [`AuthError::www_authenticate`] the challenge for resource requests, and
//! [`AuthError::dpop_nonce`] the value of a `DPoP-Nonce` header. Descriptions are fixed
//! per code and never contain token, proof or header material; [`AuthError::reason`] is a
//! fixed internal reason for logs and tests.

use std::fmt;

use crate::jws::JoseError;

/// The error code sent to the client (RFC 6749 §5.2, RFC 6750 §3.1, RFC 9449 §7.1, §12.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `invalid_request`: malformed request, e.g. two `Authorization` schemes.
    InvalidRequest,
    /// `invalid_token`: the access token is bad, expired, revoked or misused.
    InvalidToken,
    /// `insufficient_scope`: the token lacks a scope the resource needs.
    InsufficientScope,
    /// `invalid_dpop_proof`: the DPoP proof is missing or fails a check.
    InvalidDpopProof,
    /// `use_dpop_nonce`: the proof must carry the server nonce sent with this error.
    UseDpopNonce,
    /// `invalid_grant`: the code or refresh token is bad, expired, revoked or reused.
    InvalidGrant,
    /// `temporarily_unavailable`: a store the check depends on is down; fail closed.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::InvalidGrant => "invalid_grant",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// A generic, fixed description for the client.
    pub fn description(self) -> &'static str {
        match self {
            Self::InvalidRequest => "The request is malformed",
            Self::InvalidToken => "The access token is invalid",
            Self::InsufficientScope => "The access token does not grant the required scope",
            Self::InvalidDpopProof => "The DPoP proof is invalid",
            Self::UseDpopNonce => "A DPoP nonce is required",
            Self::InvalidGrant => "The grant is invalid",
            Self::TemporarilyUnavailable => "The service is temporarily unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kind of HTTP answer an error calls for; the server picks the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Malformed request (400).
    BadRequest,
    /// Authentication failed (401 at a resource, 400 `invalid_grant`/`invalid_dpop_proof`
    /// at the token endpoint).
    Unauthorized,
    /// Authenticated but not allowed (403).
    Forbidden,
    /// A dependency is down (503); fail closed.
    Unavailable,
}

/// Why a check failed. Fixed values only: safe to log, never shown to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// The JWS itself is malformed or its signature fails.
    #[error("jose: {0}")]
    Jose(#[from] JoseError),
    /// `typ` is not the one this verifier expects (S03).
    #[error("wrong typ")]
    WrongType,
    /// An access token carries `jwk`, `jku`, `x5u`, `x5c` or `x5t` (S02).
    #[error("key-carrying header on an access token")]
    ForbiddenKeyHeader,
    /// The access token has no `kid`.
    #[error("missing kid")]
    MissingKid,
    /// The `kid` is not in keygate's key set (S02).
    #[error("unknown kid")]
    UnknownKid,
    /// The algorithm is not allowed for this token type (S01).
    #[error("algorithm not allowed for this token type")]
    AlgNotAllowed,
    /// Claims are missing, duplicated or of the wrong type.
    #[error("malformed claims")]
    MalformedClaims,
    /// `iss` differs from keygate's issuer (S04).
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name this audience (S04).
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` has passed (S04).
    #[error("expired")]
    Expired,
    /// `nbf` is in the future (S04).
    #[error("not yet valid")]
    NotYetValid,
    /// `iat` is in the future beyond the allowed skew (S04).
    #[error("issued in the future")]
    IssuedInFuture,
    /// The token lives longer than keygate issues tokens for.
    #[error("lifetime too long")]
    LifetimeTooLong,
    /// No `Authorization` header.
    #[error("no authorization")]
    MissingAuthorization,
    /// More than one `Authorization` header, or both `DPoP` and `Bearer` (S16).
    #[error("more than one authorization")]
    MultipleAuthorization,
    /// An authorization scheme other than `DPoP` or `Bearer`, or bad token syntax.
    #[error("unsupported authorization scheme or syntax")]
    BadAuthorization,
    /// A DPoP-bound token was sent with the `Bearer` scheme (S16).
    #[error("bound token sent as bearer")]
    BoundTokenAsBearer,
    /// An unbound token was sent with the `DPoP` scheme.
    #[error("unbound token sent as dpop")]
    UnboundTokenAsDpop,
    /// Bearer tokens are not accepted here.
    #[error("bearer not allowed")]
    BearerNotAllowed,
    /// A certificate-bound token (`cnf.x5t#S256`, RFC 8705 §3) came over a connection
    /// that presented no client certificate, or another one.
    #[error("certificate-bound token without its certificate")]
    CertificateMismatch,
    /// No `DPoP` header.
    #[error("missing dpop proof")]
    MissingProof,
    /// More than one `DPoP` header (S13).
    #[error("more than one dpop proof")]
    MultipleProofs,
    /// A required proof claim or header is missing or of the wrong type.
    #[error("proof claims malformed")]
    MalformedProof,
    /// The proof `jwk` is not an acceptable public key.
    #[error("proof jwk invalid")]
    ProofJwkInvalid,
    /// The proof `jwk` contains private key members (S13).
    #[error("proof jwk has private members")]
    ProofJwkPrivate,
    /// `htm` differs from the request method (S13).
    #[error("htm mismatch")]
    HtmMismatch,
    /// `htu` differs from the request URI under the public base URL (S13, S16).
    #[error("htu mismatch")]
    HtuMismatch,
    /// `iat` is outside the acceptance window (S13).
    #[error("iat outside window")]
    IatOutOfWindow,
    /// The server requires a nonce and the proof has none (S15).
    #[error("nonce missing")]
    NonceMissing,
    /// The proof's nonce is not one the server issued recently (S15).
    #[error("nonce invalid or stale")]
    NonceInvalid,
    /// `jti` is missing, empty or too long (S14).
    #[error("jti invalid")]
    JtiInvalid,
    /// The (`htu`, `jti`) pair was seen before (S14).
    #[error("proof replayed")]
    Replayed,
    /// A proof at a resource has no `ath`.
    #[error("ath missing")]
    AthMissing,
    /// `ath` is not the hash of the presented access token (S13).
    #[error("ath mismatch")]
    AthMismatch,
    /// The proof key's thumbprint differs from the bound `jkt` (S13, S16).
    #[error("jkt mismatch")]
    JktMismatch,
    /// The token's session, family or user was revoked (S12).
    #[error("revoked")]
    Revoked,
    /// The token does not carry a required scope.
    #[error("insufficient scope")]
    InsufficientScope,
    /// The refresh token is revoked, expired, of another client or inconsistent (S08).
    #[error("refresh rejected")]
    RefreshRejected,
    /// An authorization code is expired, used, or redeemed with the wrong client,
    /// redirect URI or PKCE verifier.
    #[error("authorization code rejected")]
    CodeRejected,
    /// A rotated refresh token was presented; its family is revoked (S08).
    #[error("refresh token reuse")]
    RefreshReuse,
    /// The replay cache could not be reached (S35).
    #[error("replay cache unavailable")]
    ReplayCacheUnavailable,
    /// The revocation store could not be reached (S35).
    #[error("revocation store unavailable")]
    RevocationUnavailable,
}

/// The authentication scheme an error's challenge names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 9449 `DPoP`.
    Dpop,
    /// RFC 6750 `Bearer`.
    Bearer,
}

/// A failed token or proof check.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct AuthError {
    code: ErrorCode,
    reason: Reason,
    scheme: Scheme,
    dpop_nonce: Option<String>,
}

impl fmt::Debug for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthError")
            .field("code", &self.code)
            .field("reason", &self.reason)
            .field("scheme", &self.scheme)
            .field("dpop_nonce", &self.dpop_nonce.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The algorithms keygate accepts in DPoP proofs, as advertised in challenges.
pub(crate) const DPOP_ALGS: &str = "EdDSA Ed25519 ES256";

impl AuthError {
    /// An error with a given code and reason (for callers composing checks).
    pub fn new(code: ErrorCode, reason: impl Into<Reason>) -> Self {
        Self {
            code,
            reason: reason.into(),
            scheme: Scheme::Dpop,
            dpop_nonce: None,
        }
    }

    pub(crate) fn token(reason: impl Into<Reason>) -> Self {
        Self::new(ErrorCode::InvalidToken, reason)
    }

    pub(crate) fn proof(reason: impl Into<Reason>) -> Self {
        Self::new(ErrorCode::InvalidDpopProof, reason)
    }

    pub(crate) fn request(reason: Reason) -> Self {
        Self::new(ErrorCode::InvalidRequest, reason)
    }

    pub(crate) fn unavailable(reason: Reason) -> Self {
        Self::new(ErrorCode::TemporarilyUnavailable, reason)
    }

    pub(crate) fn use_nonce(reason: Reason, fresh_nonce: String) -> Self {
        Self {
            code: ErrorCode::UseDpopNonce,
            reason,
            scheme: Scheme::Dpop,
            dpop_nonce: Some(fresh_nonce),
        }
    }

    pub(crate) fn with_scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// The OAuth error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The internal reason (for logs and tests, never for the client).
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// A generic description for the client.
    pub fn description(&self) -> &'static str {
        self.code.description()
    }

    /// The value of a `DPoP-Nonce` response header to send, if any (S15).
    pub fn dpop_nonce(&self) -> Option<&str> {
        self.dpop_nonce.as_deref()
    }

    /// What kind of answer this calls for.
    pub fn disposition(&self) -> Disposition {
        match self.code {
            ErrorCode::InvalidRequest => Disposition::BadRequest,
            ErrorCode::InsufficientScope => Disposition::Forbidden,
            ErrorCode::TemporarilyUnavailable => Disposition::Unavailable,
            ErrorCode::InvalidToken
            | ErrorCode::InvalidDpopProof
            | ErrorCode::UseDpopNonce
            | ErrorCode::InvalidGrant => Disposition::Unauthorized,
        }
    }

    /// The `WWW-Authenticate` value for a resource (proxy) response, or `None` when the
    /// answer should carry no challenge (503).
    ///
    /// A request without any credentials gets a bare challenge with no error code
    /// (RFC 6750 §3.1).
    pub fn www_authenticate(&self) -> Option<String> {
        if self.code == ErrorCode::TemporarilyUnavailable {
            return None;
        }
        let scheme = match self.scheme {
            Scheme::Dpop => "DPoP",
            Scheme::Bearer => "Bearer",
        };
        let algs = match self.scheme {
            Scheme::Dpop => format!(", algs=\"{DPOP_ALGS}\""),
            Scheme::Bearer => String::new(),
        };
        if self.reason == Reason::MissingAuthorization {
            return Some(format!("{scheme} {}", algs.trim_start_matches(", ")));
        }
        Some(format!(
            "{scheme} error=\"{}\", error_description=\"{}\"{algs}",
            self.code.as_str(),
            self.code.description()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_names_code_and_algs() {
        let e = AuthError::proof(Reason::HtuMismatch);
        assert_eq!(
            e.www_authenticate().unwrap(),
            "DPoP error=\"invalid_dpop_proof\", error_description=\"The DPoP proof is invalid\", algs=\"EdDSA Ed25519 ES256\""
        );
        let bare = AuthError::token(Reason::MissingAuthorization);
        assert_eq!(
            bare.www_authenticate().unwrap(),
            "DPoP algs=\"EdDSA Ed25519 ES256\""
        );
        let nonce = AuthError::use_nonce(Reason::NonceMissing, "n".into());
        assert_eq!(nonce.dpop_nonce(), Some("n"));
        assert!(format!("{nonce:?}").contains("<set>"));
    }
}
