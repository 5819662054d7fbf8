//! The client's errors. None carries a token, code, verifier, proof or key.

use crate::keystore::KeyStoreError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The network or HTTP layer failed (connection, TLS, timeout, body).
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The key store failed.
    #[error("key store: {0}")]
    KeyStore(#[from] KeyStoreError),
    /// The server answered with an OAuth error (RFC 6749 §5.2).
    #[error("server refused: {error} (HTTP {status})")]
    OAuth {
        /// The HTTP status.
        status: u16,
        /// The OAuth error code, e.g. `invalid_grant`.
        error: String,
        /// The server's description, if any.
        description: Option<String>,
    },
    /// The server's answer was not what the protocol requires.
    #[error("unexpected response from server: {0}")]
    InvalidResponse(&'static str),
    /// A URL (base, endpoint or path) is unusable, or not `https` (plain `http` is
    /// allowed for loopback addresses only).
    #[error("invalid or insecure URL: {0}")]
    InvalidUrl(&'static str),
    /// The metadata `issuer` is not the base URL it was fetched from (RFC 8414 §3.3), or
    /// the redirect's `iss` is not the issuer (RFC 9207).
    #[error("issuer mismatch")]
    IssuerMismatch,
    /// The server does not accept ES256 DPoP proofs.
    #[error("server does not support ES256 DPoP proofs")]
    DpopUnsupported,
    /// The server issued a token that is not DPoP-bound.
    #[error("server issued a token of type other than DPoP")]
    NotDpopBound,
    /// A requested scope is empty or has characters RFC 6749 §3.3 forbids.
    #[error("invalid scope")]
    InvalidScope,
    /// The redirect's `state` is missing or differs from the one sent (possible CSRF).
    #[error("state mismatch")]
    StateMismatch,
    /// The redirect does not carry a code.
    #[error("no authorization code in the redirect")]
    MissingCode,
    /// The redirect is not to the registered redirect URI.
    #[error("redirect URI mismatch")]
    RedirectMismatch,
    /// The redirect repeats a parameter.
    #[error("malformed redirect")]
    InvalidCallback,
    /// The user or the server denied the authorization request (the OAuth error code).
    #[error("authorization denied: {0}")]
    AuthorizationDenied(String),
    /// No tokens: the app must sign in.
    #[error("not signed in")]
    NotSignedIn,
    /// The refresh token was refused (expired, revoked, or the session was ended); the
    /// tokens were cleared and the app must sign in again.
    #[error("session ended; sign in again")]
    ReauthenticationRequired,
}

impl ClientError {
    /// The OAuth error code, if the server sent one.
    pub fn oauth_code(&self) -> Option<&str> {
        match self {
            Self::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }
}
