//! Proxy errors say who failed (client, upstream or keygate) and answer with a generic
//! body: no upstream key, no internal URL, no upstream error text (S30).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use keygate_auth::error::{AuthError, Disposition};

use crate::framing::FramingError;
use crate::path::PathError;

/// Who caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The app sent something we refuse.
    Client,
    /// The upstream failed, timed out or misbehaved.
    Upstream,
    /// keygate itself (configuration, a dependency such as the limiter store).
    Keygate,
}

impl Fault {
    /// A label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Keygate => "keygate",
        }
    }
}

/// A cost budget's window: a UTC day or a UTC calendar month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BudgetWindow {
    /// The UTC day.
    Daily,
    /// The UTC calendar month.
    Monthly,
}

impl BudgetWindow {
    /// `daily` or `monthly`, as in the route's `budget` table.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetWindow::Daily => "daily",
            BudgetWindow::Monthly => "monthly",
        }
    }
}

/// Why a proxied call did not produce an upstream response. `Display` is for logs and
/// never holds secret material; the app sees only [`ProxyError::generic_body`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The access token or its DPoP proof was refused (or could not be checked): answered
    /// as OAuth does at a resource (RFC 6750 §3, RFC 9449 §7.1), with its challenge.
    #[error("access refused: {0}")]
    Access(#[from] AuthError),
    /// The request target or query was refused (S29).
    #[error("bad request target: {0}")]
    BadTarget(#[from] PathError),
    /// The request head is ambiguous or malformed (S28); the connection must close.
    #[error("bad request framing: {0}")]
    Framing(#[from] FramingError),
    /// No route of that name.
    #[error("unknown route")]
    UnknownRoute,
    /// Method + path are not on the route's allow-list (S30).
    #[error("method and path are not allowed on this route")]
    NotAllowed,
    /// The token lacks a scope the route requires.
    #[error("token lacks a scope the route requires")]
    InsufficientScope,
    /// The token's app attestation tier is below the route's `min_tier`.
    #[error("token's attestation tier is below what the route requires")]
    InsufficientAttestation,
    /// The request body exceeds the route's limit.
    #[error("request body exceeds the route's limit")]
    BodyTooLarge,
    /// The app's request body failed while streaming.
    #[error("request body ended abnormally")]
    ClientBody,
    /// A rate limit was hit.
    #[error("rate limit exceeded")]
    RateLimited {
        /// When to retry.
        retry_after: Duration,
    },
    /// The monitor put a tighter limit on this user, session, client or network.
    #[error("throttled by the monitor")]
    Throttled {
        /// When to retry.
        retry_after: Duration,
    },
    /// A quota was used up.
    #[error("quota exhausted")]
    QuotaExceeded {
        /// Until the next window.
        retry_after: Duration,
    },
    /// The user's cost budget for the route is used up in `window`.
    #[error("{} cost budget exhausted", window.as_str())]
    BudgetExhausted {
        /// The window whose budget is used up (the longer one when both are).
        window: BudgetWindow,
        /// Until that window ends.
        retry_after: Duration,
    },
    /// Connecting to the upstream failed (DNS, TCP, TLS).
    #[error("upstream connection failed")]
    UpstreamConnect,
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream broke the protocol or the connection.
    #[error("upstream protocol error")]
    UpstreamProtocol,
    /// A dependency of keygate is unavailable (limiter, quota store, vault); fail closed.
    #[error("keygate dependency unavailable: {0}")]
    Unavailable(&'static str),
    /// A bug or misconfiguration inside keygate.
    #[error("keygate internal error: {0}")]
    Keygate(&'static str),
}

impl ProxyError {
    pub(crate) fn keygate(reason: &'static str) -> Self {
        ProxyError::Keygate(reason)
    }

    /// Who failed.
    pub fn fault(&self) -> Fault {
        use ProxyError as E;
        match self {
            E::Access(a) if matches!(a.disposition(), Disposition::Unavailable) => Fault::Keygate,
            E::Access(_)
            | E::BadTarget(_)
            | E::Framing(_)
            | E::UnknownRoute
            | E::NotAllowed
            | E::InsufficientScope
            | E::InsufficientAttestation
            | E::BodyTooLarge
            | E::ClientBody
            | E::RateLimited { .. }
            | E::Throttled { .. }
            | E::QuotaExceeded { .. }
            | E::BudgetExhausted { .. } => Fault::Client,
            E::UpstreamConnect | E::UpstreamTimeout | E::UpstreamProtocol => Fault::Upstream,
            E::Unavailable(_) | E::Keygate(_) => Fault::Keygate,
        }
    }

    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        use ProxyError as E;
        match self {
            E::Access(a) => match a.disposition() {
                Disposition::BadRequest => StatusCode::BAD_REQUEST,
                Disposition::Unauthorized => StatusCode::UNAUTHORIZED,
                Disposition::Forbidden => StatusCode::FORBIDDEN,
                Disposition::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            },
            E::BadTarget(_) | E::Framing(_) | E::ClientBody => StatusCode::BAD_REQUEST,
            E::UnknownRoute => StatusCode::NOT_FOUND,
            E::NotAllowed | E::InsufficientScope | E::InsufficientAttestation => {
                StatusCode::FORBIDDEN
            }
            E::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            E::RateLimited { .. }
            | E::Throttled { .. }
            | E::QuotaExceeded { .. }
            | E::BudgetExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::UpstreamConnect | E::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            E::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Keygate(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for the body and for metrics.
    pub fn code(&self) -> &'static str {
        use ProxyError as E;
        match self {
            E::Access(a) => a.code().as_str(),
            E::BadTarget(_) => "bad_target",
            E::Framing(_) => "bad_framing",
            E::UnknownRoute => "unknown_route",
            E::NotAllowed => "not_allowed",
            E::InsufficientScope => "insufficient_scope",
            E::InsufficientAttestation => "insufficient_attestation",
            E::BodyTooLarge => "body_too_large",
            E::ClientBody => "bad_body",
            E::RateLimited { .. } => "rate_limited",
            E::Throttled { .. } => "throttled",
            E::QuotaExceeded { .. } => "quota_exceeded",
            E::BudgetExhausted { .. } => "budget_exhausted",
            E::UpstreamConnect => "upstream_unreachable",
            E::UpstreamTimeout => "upstream_timeout",
            E::UpstreamProtocol => "upstream_error",
            E::Unavailable(_) => "unavailable",
            E::Keygate(_) => "internal",
        }
    }

    fn message(&self) -> &'static str {
        use ProxyError as E;
        match self {
            E::Access(a) => a.description(),
            E::BadTarget(_) => "the request path or query is not accepted",
            E::Framing(_) => "the request is malformed",
            E::UnknownRoute => "no such route",
            E::NotAllowed => "this method and path are not allowed on this route",
            E::InsufficientScope => "the access token lacks a scope this route requires",
            E::InsufficientAttestation => {
                "this route serves only apps whose attestation verified; sign in again from the app"
            }
            E::BodyTooLarge => "the request body is too large for this route",
            E::ClientBody => "the request body could not be read",
            E::RateLimited { .. } => "too many requests; retry later",
            E::Throttled { .. } => "unusual traffic: calls are limited for a while; retry later",
            E::QuotaExceeded { .. } => "quota exhausted; retry in the next window",
            E::BudgetExhausted {
                window: BudgetWindow::Daily,
                ..
            } => "daily cost budget exhausted; retry in the next UTC day",
            E::BudgetExhausted {
                window: BudgetWindow::Monthly,
                ..
            } => "monthly cost budget exhausted; retry in the next UTC month",
            E::UpstreamConnect => "the upstream service could not be reached",
            E::UpstreamTimeout => "the upstream service did not answer in time",
            E::UpstreamProtocol => "the upstream service failed",
            E::Unavailable(_) => "the gateway is temporarily unavailable; retry later",
            E::Keygate(_) => "internal gateway error",
        }
    }

    /// `{"error": code, "message": text, "fault": who}`: fixed strings only. A refused
    /// token answers as OAuth does: `{"error": code, "error_description": text}`.
    pub fn generic_body(&self) -> Bytes {
        if let ProxyError::Access(a) = self {
            return Bytes::from(format!(
                "{{\"error\":\"{}\",\"error_description\":\"{}\"}}",
                a.code().as_str(),
                a.description()
            ));
        }
        Bytes::from(format!(
            "{{\"error\":\"{}\",\"message\":\"{}\",\"fault\":\"{}\"}}",
            self.code(),
            self.message(),
            self.fault().as_str()
        ))
    }

    /// Whether the server must close the connection after answering: framing errors
    /// leave the stream position unknown (request smuggling).
    pub fn close_connection(&self) -> bool {
        matches!(self, ProxyError::Framing(_) | ProxyError::ClientBody)
    }

    /// The `Retry-After` delay, for 429s.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::RateLimited { retry_after }
            | ProxyError::Throttled { retry_after }
            | ProxyError::QuotaExceeded { retry_after }
            | ProxyError::BudgetExhausted { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// A complete response: status, generic JSON body, `Retry-After` when limited and
    /// `Connection: close` when the connection must not be reused.
    pub fn to_response<B: From<Bytes>>(&self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.generic_body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(after) = self.retry_after() {
            headers.insert(http::header::RETRY_AFTER, retry_after_value(after));
            let policy = match self {
                ProxyError::QuotaExceeded { .. } => "quota",
                ProxyError::BudgetExhausted { .. } => "budget",
                _ => "rate",
            };
            let state = format!("\"{policy}\";r=0;t={}", retry_after_secs(after));
            if let Ok(v) = HeaderValue::from_str(&state) {
                headers.insert(http::header::HeaderName::from_static("ratelimit"), v);
            }
        }
        if self.close_connection() {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ProxyError::Access(a) = self {
            headers.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            if let Some(n) = a.dpop_nonce().and_then(|n| HeaderValue::from_str(n).ok()) {
                headers.insert(http::header::HeaderName::from_static("dpop-nonce"), n);
            }
            if let Some(w) = a
                .www_authenticate()
                .and_then(|w| HeaderValue::from_str(&w).ok())
            {
                headers.insert(http::header::WWW_AUTHENTICATE, w);
            }
        }
        response
    }
}

/// `Retry-After` in whole seconds, rounded up (a client retrying early is refused again).
pub fn retry_after_value(after: Duration) -> HeaderValue {
    HeaderValue::from(retry_after_secs(after))
}

/// Whole seconds, rounded up, at least 1.
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}
