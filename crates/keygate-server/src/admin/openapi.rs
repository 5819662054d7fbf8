//! The admin API's OpenAPI 3.1 description, served at `/admin/v1/openapi.json` and
//! printed by `keygate openapi`.
//!
//! Nothing here lists an endpoint: each handler carries its own `#[utoipa::path]` (method,
//! path, parameters, body, answers), and each module's router is built from those
//! annotations (`utoipa_axum::routes!`), so a route cannot be served without being
//! described, nor described at a path it is not served on. The wire types derive their
//! schemas from the same structs the handlers and the CLI (de)serialize.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::api::ErrorBody;

/// The document's fixed parts; [`super::router`] adds every operation.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "keygate admin API",
        description = "Operate a keygate deployment: the vault, routes, users, clients, sessions, signing keys, machine identities, the monitor and the audit log. Every operation needs an admin token (`Authorization: Bearer kga_…`, shown once by `keygate init`); a refusal is `{\"error\": code, \"message\": text}` and never holds secret material. Answers that carry a secret are sent with `Cache-Control: no-store`.",
        license(name = "MIT OR Apache-2.0"),
        version = "v1",
    ),
    components(schemas(ErrorBody)),
    modifiers(&AdminToken),
    security(("admin_token" = [])),
    tags(
        (name = "secrets", description = "The vault: versioned secrets, never shown in lists."),
        (name = "rotation", description = "Rotation schedules and hooks."),
        (name = "routes", description = "The proxy's allow-listed routes."),
        (name = "users", description = "People who sign in on the login page."),
        (name = "clients", description = "OAuth clients (apps and services)."),
        (name = "sessions", description = "Refresh-token families."),
        (name = "keys", description = "Token signing keys."),
        (name = "machines", description = "CI identities: policies and machine credentials."),
        (name = "monitor", description = "Alerts, throttles and the monitor's state."),
        (name = "audit", description = "The hash-chained audit log and webhook dead letters."),
        (name = "usage", description = "Per-minute call counts."),
        (name = "console", description = "The operator console's accounts (password and TOTP)."),
    )
)]
pub(crate) struct AdminDoc;

/// Adds the `admin_token` bearer scheme the document's `security` names.
struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description =
            Some("An admin token (`kga_…`). Machine tokens are refused here with 403.".to_owned());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

/// What any admin operation can be refused with before its handler runs, or when the
/// store behind it does not answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description, never built
pub(crate) enum Refused {
    /// No admin token, or not a valid one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A machine token, which only reads secrets at `/ci/v1/secrets`.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Too many failed authentications from this address.
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until a retry may succeed."))
    )]
    RateLimited(ErrorBody),
    /// The vault is sealed, or the store (or its audit log) does not answer.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// A malformed path segment, query string or body field.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum BadInput {
    /// The message names the field and the problem, never the value.
    #[response(status = 400)]
    BadRequest(ErrorBody),
}

/// What a JSON request body can be refused with.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum BodyRefused {
    /// The message names the field and the problem, never the value.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The body is larger than the server accepts.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not `Content-Type: application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
}

/// The named thing does not exist.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum NotFound {
    /// No such thing (or, for a secret, deleted: `deleted`; no such version:
    /// `no_such_version`).
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// The change lost a race or names something that exists already.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Conflict {
    /// `exists` (the name is taken) or `conflict` (a check-and-set lost).
    #[response(status = 409)]
    Conflict(ErrorBody),
}

/// The document as served (`application/json`).
pub(crate) fn document(doc: &utoipa::openapi::OpenApi) -> Response {
    match serde_json::to_vec(doc) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => crate::error::ApiError::internal(&e).into_response(),
    }
}

/// A version whose value was destroyed.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Gone {
    /// `destroyed`: that version's value no longer exists.
    #[response(status = 410)]
    Gone(ErrorBody),
}

/// A rotation whose hook failed; the secret is unchanged.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum RotationFailed {
    /// `rotation_failed`, with the hook's reason.
    #[response(status = 502)]
    BadGateway(ErrorBody),
}
