//! The admin API (`/admin/v1/…`): thin handlers that parse, call the vault or the store,
//! and map the result.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use keygate_audit::{AuditEvent, Outcome};
use keygate_store::{SecretMeta, VersionMeta};
use keygate_vault::{SecretName, now_ms};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::admin_guard::{Failure, Gate, source_of};
use crate::error::ApiError;

pub mod routes;
pub mod usage;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(routes::router())
        .merge(usage::router())
        .route("/admin/v1/secrets", get(list_secrets))
        .route(
            "/admin/v1/secrets/{name}",
            get(get_secret)
                .put(put_secret)
                .patch(configure_secret)
                .delete(delete_secret),
        )
        .route("/admin/v1/secrets/{name}/versions", get(history))
        .route("/admin/v1/secrets/{name}/rollback", post(rollback))
        .route("/admin/v1/secrets/{name}/undelete", post(undelete))
        .route("/admin/v1/secrets/{name}/destroy", post(destroy))
        .route(
            "/admin/v1/secrets/{name}/schedule",
            axum::routing::put(set_schedule).delete(clear_schedule),
        )
        .route("/admin/v1/secrets/{name}/rotate", post(rotate_now))
        .route("/admin/v1/rotation", get(rotation_list))
        .route("/admin/v1/webhooks/dead-letters", get(dead_letters))
        .route("/admin/v1/secret-fingerprints", get(fingerprints))
        .route("/admin/v1/audit", get(audit_entries))
        .route("/admin/v1/audit/verify", get(audit_verify))
}

/// Proof that the request carried a valid admin token; handlers take it as an argument,
/// so an admin handler without authentication does not compile.
#[derive(Debug, Clone)]
pub struct Admin {
    pub id: String,
}

impl Admin {
    pub fn actor(&self) -> String {
        format!("admin:{}", self.id)
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
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
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
                    return Ok(Admin { id });
                }
                "invalid"
            }
        };
        let now = now_ms();
        let Failure::Audit(earlier) = state.admin_guard.failed(source, now) else {
            // Part of a burst: one entry with its count is written when the window closes.
            return Err(ApiError::unauthorized().into_response());
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
        Err(ApiError::unauthorized().into_response())
    }
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

fn name(raw: &str) -> Result<SecretName, ApiError> {
    SecretName::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn meta_json(m: &SecretMeta) -> Value {
    json!({
        "name": m.name,
        "current_version": m.current_version,
        "max_versions": m.max_versions,
        "created_ms": m.created_ms,
        "updated_ms": m.updated_ms,
        "deleted": m.deleted_ms.is_some(),
        "deleted_ms": m.deleted_ms,
    })
}

fn version_json(v: &VersionMeta) -> Value {
    json!({
        "version": v.version,
        "created_ms": v.created_ms,
        "destroyed": v.destroyed_ms.is_some(),
        "destroyed_ms": v.destroyed_ms,
    })
}

/// Responses that hold a secret must not be cached anywhere.
fn no_store(body: Value) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, Json(body)).into_response()
}

async fn list_secrets(_admin: Admin, State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let secrets = s.vault.list().await?;
    Ok(Json(json!({
        "secrets": secrets.iter().map(meta_json).collect::<Vec<_>>()
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<i64>,
}

async fn get_secret(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Params(q): Params<VersionQuery>,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    let (version, value) = s.vault.get(&name, q.version, &admin.actor()).await?;
    Ok(no_store(json!({
        "name": name.as_str(),
        "version": version,
        "value": value.expose_secret(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: SecretString,
    cas: Option<i64>,
}

async fn put_secret(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<PutBody>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    let version = s
        .vault
        .put(&name, body.value, body.cas, &admin.actor())
        .await?;
    tracing::info!(secret = %name, version, "secret version written");
    changed(&s, &name, "put", Some(version));
    Ok(Json(json!({"name": name.as_str(), "version": version})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigureBody {
    max_versions: Option<i64>,
}

async fn configure_secret(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<ConfigureBody>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    s.vault
        .set_max_versions(&name, body.max_versions, &admin.actor())
        .await?;
    Ok(Json(
        json!({"name": name.as_str(), "max_versions": body.max_versions}),
    ))
}

async fn delete_secret(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    s.vault.delete(&name, &admin.actor()).await?;
    changed(&s, &name, "delete", None);
    Ok(Json(json!({"name": name.as_str(), "deleted": true})))
}

async fn undelete(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    s.vault.undelete(&name, &admin.actor()).await?;
    changed(&s, &name, "undelete", None);
    Ok(Json(json!({"name": name.as_str(), "deleted": false})))
}

async fn history(
    _admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    let (meta, versions) = s.vault.history(&name).await?;
    Ok(Json(json!({
        "secret": meta_json(&meta),
        "versions": versions.iter().map(version_json).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to: i64,
}

async fn rollback(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<RollbackBody>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    let version = s.vault.rollback(&name, body.to, &admin.actor()).await?;
    changed(&s, &name, "rollback", Some(version));
    Ok(Json(
        json!({"name": name.as_str(), "version": version, "from_version": body.to}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestroyBody {
    version: i64,
}

async fn destroy(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<DestroyBody>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    s.vault.destroy(&name, body.version, &admin.actor()).await?;
    changed(&s, &name, "destroy", Some(body.version));
    Ok(Json(
        json!({"name": name.as_str(), "version": body.version, "destroyed": true}),
    ))
}

async fn fingerprints(admin: Admin, State(s): State<AppState>) -> Result<Response, ApiError> {
    let file = s.vault.fingerprints(&admin.actor()).await?;
    let body = serde_json::to_value(file).map_err(|e| ApiError::internal(&e))?;
    Ok(no_store(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<i64>,
    /// With `tail=N`: the last N entries.
    tail: Option<i64>,
}

async fn audit_entries(
    _admin: Admin,
    State(s): State<AppState>,
    Params(q): Params<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let after = match (q.tail, q.after) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "use either `after` or `tail`, not both",
            ));
        }
        (Some(n), None) => {
            if !(1..=1000).contains(&n) {
                return Err(ApiError::bad_request("tail must be between 1 and 1000"));
            }
            let (head, _) = s.store.audit_head().await?;
            (head - n).max(0)
        }
        (None, after) => after.unwrap_or(0),
    };
    let entries = s.store.audit_entries(after, limit).await?;
    Ok(Json(json!({
        "entries": entries.iter().map(|e| e.to_json()).collect::<Vec<_>>(),
    })))
}

async fn audit_verify(_admin: Admin, State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let key = s.vault.keyring().map(|k| &k.checkpoint);
    let v = crate::audit_ops::verify(s.store.as_ref(), &s.config.checkpoint_file, key).await;
    Ok(Json(crate::audit_ops::verification_json(&v)))
}

/// Tells the webhooks a secret changed: its name, what happened and the version; never a
/// value.
fn changed(s: &AppState, name: &SecretName, action: &str, version: Option<i64>) {
    s.webhooks.send(
        "secret.changed",
        json!({"secret": name.as_str(), "action": action, "version": version}),
    );
}

impl From<crate::rotation::ScheduleError> for ApiError {
    fn from(e: crate::rotation::ScheduleError) -> Self {
        use crate::rotation::ScheduleError as E;
        match e {
            E::Invalid { field, message } => ApiError::bad_request(format!("`{field}`: {message}")),
            E::UnknownSecret => {
                ApiError::bad_request("`secret`: no such secret (write a version first)")
            }
            E::NotScheduled => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_scheduled",
                "this secret has no rotation schedule",
            ),
            E::Failed(reason) => ApiError::new(StatusCode::BAD_GATEWAY, "rotation_failed", reason),
            E::Vault(v) => v.into(),
            E::Store(st) => st.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    rotate_every: String,
    overlap: Option<String>,
    hook: String,
}

async fn set_schedule(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<ScheduleBody>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    let schedule = s
        .rotation
        .set_schedule(
            &name,
            &body.rotate_every,
            body.overlap.as_deref(),
            &body.hook,
            &admin.actor(),
        )
        .await?;
    Ok(Json(crate::rotation::schedule_json(&schedule)))
}

async fn clear_schedule(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    s.rotation.clear_schedule(&name, &admin.actor()).await?;
    Ok(Json(json!({"secret": name.as_str(), "scheduled": false})))
}

async fn rotate_now(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = name(&raw)?;
    let version = s.rotation.rotate_now(&name).await?;
    tracing::info!(secret = %name, version, actor = %admin.actor(), "secret rotated by hand");
    Ok(Json(json!({"secret": name.as_str(), "version": version})))
}

async fn rotation_list(_admin: Admin, State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let schedules = s.store.schedules().await?;
    Ok(Json(json!({
        "schedules": schedules.iter().map(crate::rotation::schedule_json).collect::<Vec<_>>(),
        "hooks": s.rotation.hooks().keys().collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    limit: Option<i64>,
}

async fn dead_letters(
    _admin: Admin,
    State(s): State<AppState>,
    Params(q): Params<DeadLetterQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let letters = s.store.dead_letters(limit).await?;
    Ok(Json(json!({
        "dead_letters": letters.iter().map(|d| json!({
            "id": d.id,
            "webhook": d.webhook,
            "event": d.event,
            "attempts": d.attempts,
            "last_error": d.last_error,
            "failed_ms": d.failed_ms,
        })).collect::<Vec<_>>(),
        "dropped": s.webhooks.dropped(),
    })))
}
