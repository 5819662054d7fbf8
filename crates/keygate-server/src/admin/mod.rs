//! The admin API (`/admin/v1/…`): thin handlers that parse, call the vault, the store,
//! the token service or the monitor, and map the result. Every request and response body
//! is a type of [`api`], which the CLI uses too.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use keygate_audit::{AuditEvent, Outcome};
use keygate_vault::now_ms;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::admin_guard::{Failure, Gate, source_of};
use crate::error::ApiError;

pub mod alerts;
pub mod api;
pub mod audit;
pub mod console_admins;
pub mod machines;
mod openapi;
pub mod routes;
pub mod secrets;
pub mod tokens;
pub mod usage;

/// Every admin route, and at `/admin/v1/openapi.json` their description (public: it
/// describes this version's API, not the deployment).
pub fn router() -> Router<AppState> {
    let (router, doc) = described().split_for_parts();
    let doc = std::sync::Arc::new(doc);
    router.route(
        "/admin/v1/openapi.json",
        axum::routing::get(move || {
            let doc = std::sync::Arc::clone(&doc);
            async move { openapi::document(&doc) }
        }),
    )
}

/// The admin API's OpenAPI 3.1 description, built from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    described().into_openapi()
}

fn described() -> OpenApiRouter<AppState> {
    use utoipa::OpenApi as _;
    OpenApiRouter::with_openapi(openapi::AdminDoc::openapi())
        .merge(secrets::router())
        .merge(audit::router())
        .merge(routes::router())
        .merge(usage::router())
        .merge(tokens::router())
        .merge(alerts::router())
        .merge(machines::router())
        .merge(console_admins::router())
}

/// Proof that the request carried a valid admin token; handlers take it as an argument,
/// so an admin handler without authentication does not compile.
#[derive(Debug, Clone)]
pub struct Admin {
    pub id: String,
    /// The client certificate the admin listener verified (`CN=…, sha256:…`), if any.
    pub cert: Option<std::sync::Arc<str>>,
}

impl Admin {
    /// The audit actor: `admin:ID`, with the client certificate when one was verified.
    pub fn actor(&self) -> String {
        match &self.cert {
            Some(cert) => format!("admin:{} ({cert})", self.id),
            None => format!("admin:{}", self.id),
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    // A response rather than an `ApiError`: the 429 carries `Retry-After`.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        if let Gate::Refuse(wait) = state.admin_guard.gate(source, now_ms()) {
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed admin authentications from this address; retry later",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            return Err(resp);
        }
        let presented = bearer(&parts.headers);
        let reason = match presented {
            None => "missing",
            Some(token) => {
                let digest = Sha256::digest(token.as_bytes());
                // Compare against every credential without stopping early.
                let mut found = None;
                for (id, hash) in state.admins.iter() {
                    if bool::from(hash.as_slice().ct_eq(digest.as_slice())) {
                        found = Some(id.clone());
                    }
                }
                if let Some(id) = found {
                    let cert = parts
                        .extensions
                        .get::<crate::Served>()
                        .and_then(|s| s.peer_cert.as_ref())
                        .map(|c| std::sync::Arc::from(c.describe()));
                    return Ok(Admin { id, cert });
                }
                if token.starts_with(keygate_auth::opaque::TokenKind::Machine.prefix()) {
                    "machine_token"
                } else {
                    "invalid"
                }
            }
        };
        // A machine token is a credential, just not one for this API: 403, not 401.
        let refusal = || {
            if reason == "machine_token" {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a machine token can only read the secrets its policy grants (/ci/v1/secrets); the admin API needs an admin token",
                )
                .into_response()
            } else {
                ApiError::unauthorized().into_response()
            }
        };
        let now = now_ms();
        let Failure::Audit(earlier) = state.admin_guard.failed(source, now) else {
            // Part of a burst: one entry with its count is written when the window closes.
            return Err(refusal());
        };
        let event = AuditEvent::new("anonymous", "admin.auth", Outcome::Denied)
            .target(format!("{} {}", parts.method, parts.uri.path()))
            .detail("reason", reason)
            .detail("source", source_of(source).to_string())
            .detail("count", 1);
        for e in earlier
            .iter()
            .map(|b| b.event())
            .chain(std::iter::once(event))
        {
            if let Err(e) = state.store.append_audit(e, now).await {
                // The refusal stands either way; a failed audit write makes it a 503.
                return Err(ApiError::unavailable(&e).into_response());
            }
        }
        tracing::warn!(reason, path = %parts.uri.path(), "admin authentication refused");
        Err(refusal())
    }
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// A JSON body whose errors name the field and the kind of problem, never the input
/// (see [`crate::json_body`]).
pub struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a request body with Content-Type: application/json",
            ));
        }
        let bytes =
            match <axum::body::Bytes as axum::extract::FromRequest<S>>::from_request(req, state)
                .await
            {
                Ok(b) => b,
                Err(r) => return Err(body_read_error(&r)),
            };
        crate::json_body::from_json_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

/// The one `{…}` segment of an admin path, percent-decoded. A segment that is not UTF-8
/// once decoded is refused with the API's own error body (axum's answer is plain text
/// that names the parameter).
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(segment)) => Ok(Segment(segment)),
            Err(_) => Err(ApiError::bad_request(
                "the path names something that is not valid UTF-8 once percent-decoded",
            )),
        }
    }
}

/// Query parameters whose rejection never repeats a parameter's name or value (axum's
/// text quotes both).
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(Params(q)),
            Err(_) => Err(ApiError::bad_request(
                "invalid query string: an unknown parameter, or a value of the wrong type",
            )),
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5
                && sub
                    .get(sub.len() - 5..)
                    .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

/// A body that could not be read: too large, or the connection failed or timed out.
fn body_read_error(r: &axum::extract::rejection::BytesRejection) -> ApiError {
    if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            r.status(),
            "too_large",
            "the request body is larger than this server accepts",
        )
    } else {
        tracing::debug!(error = %r.body_text(), "request body could not be read");
        ApiError::bad_request("the request body could not be read")
    }
}

/// A response that holds a secret: it must not be cached anywhere.
pub(crate) fn no_store<T: serde::Serialize>(body: T) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, Json(body)).into_response()
}
