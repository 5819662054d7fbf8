//! OAuth error answers (RFC 6749 §5.2, RFC 6750 §3, RFC 9449 §7.1): a code, a fixed
//! generic description, and the headers the RFCs ask for. Nothing from the request or the
//! internal cause is echoed.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_auth::error::{AuthError, Disposition};

#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: &'static str,
    pub dpop_nonce: Option<String>,
    pub www_authenticate: Option<String>,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        Self {
            status,
            code,
            description,
            dpop_nonce: None,
            www_authenticate: None,
        }
    }

    pub fn invalid_request(description: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn invalid_client() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
        e.www_authenticate = Some("Basic realm=\"keygate\"".into());
        e
    }

    pub fn invalid_grant() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The grant is invalid",
        )
    }

    pub fn invalid_scope() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The requested scope is not allowed",
        )
    }

    pub fn unauthorized_client() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "The client may not use this grant type",
        )
    }

    pub fn unsupported_grant_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The grant type is not supported",
        )
    }

    /// RFC 8693 §2.2.2: the requested `audience` or `resource` is not one keygate issues
    /// tokens for.
    pub fn invalid_target() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "The requested target is not served",
        )
    }

    pub fn unsupported_token_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_token_type",
            "The token type is not supported",
        )
    }

    /// Logs `cause`; answers 503 `temporarily_unavailable` (fail closed, S35).
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "token service dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "The service is temporarily unavailable",
        )
    }

    /// A failed check at the token endpoint: 400 (RFC 6749 §5.2, RFC 9449 §7.1).
    pub fn at_token_endpoint(e: &AuthError) -> Self {
        tracing::info!(code = e.code().as_str(), reason = %e.reason(), "token request refused");
        let status = match e.disposition() {
            Disposition::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut out = Self::new(status, e.code().as_str(), e.description());
        out.dpop_nonce = e.dpop_nonce().map(str::to_owned);
        out
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(n) = self
            .dpop_nonce
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            headers.insert("dpop-nonce", n);
        }
        if let Some(w) = self
            .www_authenticate
            .as_deref()
            .and_then(|w| HeaderValue::from_str(w).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, w);
        }
        let body = serde_json::json!({"error": self.code, "error_description": self.description});
        (self.status, headers, Json(body)).into_response()
    }
}
