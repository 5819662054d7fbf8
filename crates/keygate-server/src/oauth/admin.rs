//! Admin API for the token service: users, clients, sessions and signing keys.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use keygate_audit::{AuditEvent, Outcome};
use keygate_auth::ids::ScopeSet;
use keygate_auth::opaque::{OpaqueToken, TokenKind};
use keygate_auth::password::PasswordHasher;
use keygate_auth::redirect::RedirectUri;
use keygate_auth::totp::{Totp, TotpSeed};
use keygate_store::{ClientRecord, FamilyRecord, StoreError, UserRecord};
use keygate_vault::now_ms;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::TokenService;
use crate::AppState;
use crate::admin::{Admin, Body, Params};
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/users", get(list_users).post(add_user))
        .route("/admin/v1/users/{name}/disable", post(disable_user))
        .route("/admin/v1/users/{name}/enable", post(enable_user))
        .route("/admin/v1/users/{name}/mfa", post(enrol_mfa))
        .route("/admin/v1/clients", get(list_clients).post(add_client))
        .route("/admin/v1/clients/{id}", delete(remove_client))
        .route("/admin/v1/sessions", get(list_sessions))
        .route("/admin/v1/sessions/{id}", delete(revoke_session))
        .route("/admin/v1/keys", get(list_keys))
        .route("/admin/v1/keys/rotate", post(rotate_keys))
}

fn tokens(s: &AppState) -> Result<Arc<TokenService>, ApiError> {
    s.tokens.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sealed",
            "the token service is unavailable while the vault is sealed",
        )
    })
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Duplicate(what) => ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("{what} already exists"),
        ),
        StoreError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found"),
        other => ApiError::unavailable(&other),
    }
}

fn valid_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {what} name: 1-64 characters of letters, digits, '.', '_', '-', '@'"
        )))
    }
}

fn scopes_text(scopes: &[String]) -> Result<String, ApiError> {
    let text = scopes.join(" ");
    if !scopes.is_empty() {
        ScopeSet::parse(&text).map_err(|_| {
            ApiError::bad_request("invalid scope (RFC 6749 §3.3 characters, no spaces)")
        })?;
    }
    Ok(text)
}

fn user_json(u: &UserRecord) -> Value {
    json!({
        "id": u.id,
        "name": u.name,
        "scopes": u.scopes.split_whitespace().collect::<Vec<_>>(),
        "created_ms": u.created_ms,
        "disabled": u.disabled_ms.is_some(),
        "mfa": u.totp_sealed.is_some(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    name: String,
    password: SecretString,
    #[serde(default)]
    scopes: Vec<String>,
}

async fn add_user(
    admin: Admin,
    State(s): State<AppState>,
    Body(b): Body<AddUser>,
) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    valid_name(&b.name, "user")?;
    PasswordHasher::check_policy(&b.password).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let scopes = scopes_text(&b.scopes)?;
    let owner = svc.clone();
    let password = b.password;
    let hash = tokio::task::spawn_blocking(move || owner.hasher.hash(&password))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    let id = format!(
        "u_{}",
        hex::encode(keygate_auth::opaque::random_bytes::<12>())
    );
    let user = UserRecord {
        id: id.clone(),
        name: b.name.clone(),
        password_hash: Some(hash.as_str().to_owned()),
        scopes,
        created_ms: now_ms(),
        disabled_ms: None,
        totp_sealed: None,
        totp_last_step: None,
        issuer: None,
        subject: None,
    };
    let audit = AuditEvent::new(admin.actor(), "user.add", Outcome::Success).target(b.name.clone());
    svc.store
        .create_user(user.clone(), audit, now_ms())
        .await
        .map_err(store_err)?;
    Ok(Json(user_json(&user)))
}

async fn list_users(_admin: Admin, State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    let users = svc.store.list_users().await.map_err(store_err)?;
    Ok(Json(
        json!({"users": users.iter().map(user_json).collect::<Vec<_>>()}),
    ))
}

async fn user_named(svc: &TokenService, name: &str) -> Result<UserRecord, ApiError> {
    svc.store
        .user_by_name(name)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such user"))
}

async fn disable_user(
    admin: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    let user = user_named(&svc, &name).await?;
    let audit =
        AuditEvent::new(admin.actor(), "user.disable", Outcome::Success).target(name.clone());
    let revoked = svc
        .store
        .disable_user(&user.id, audit, now_ms())
        .await
        .map_err(store_err)?;
    Ok(Json(
        json!({"name": name, "disabled": true, "revoked_sessions": revoked}),
    ))
}

/// Lets a disabled user (by an operator or by the monitor) sign in again. Sessions
/// revoked when the user was disabled stay revoked.
async fn enable_user(
    admin: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    let user = user_named(&svc, &name).await?;
    let audit =
        AuditEvent::new(admin.actor(), "user.enable", Outcome::Success).target(name.clone());
    let changed = svc
        .store
        .enable_user(&user.id, audit, now_ms())
        .await
        .map_err(store_err)?;
    Ok(Json(
        json!({"name": name, "enabled": true, "changed": changed}),
    ))
}

async fn enrol_mfa(
    admin: Admin,
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let svc = tokens(&s)?;
    let user = user_named(&svc, &name).await?;
    let seed = TotpSeed::generate();
    let sealed = svc
        .vault
        .seal_internal("totp-seed", &user.id, seed.expose_bytes())
        .map_err(ApiError::from)?;
    let audit =
        AuditEvent::new(admin.actor(), "user.mfa_enrol", Outcome::Success).target(name.clone());
    svc.store
        .set_user_totp(&user.id, sealed, audit, now_ms())
        .await
        .map_err(store_err)?;
    let uri = Totp::default().otpauth_uri(&seed, "keygate", &user.name);
    let mut resp = Json(json!({"name": name, "otpauth_uri": uri.expose_secret()})).into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

fn client_json(c: &ClientRecord) -> Value {
    json!({
        "client_id": c.id,
        "name": c.name,
        "type": c.kind,
        "redirect_uris": c.redirect_uris,
        "scopes": c.scopes.split_whitespace().collect::<Vec<_>>(),
        "created_ms": c.created_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddClient {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

async fn add_client(
    admin: Admin,
    State(s): State<AppState>,
    Body(b): Body<AddClient>,
) -> Result<Response, ApiError> {
    let svc = tokens(&s)?;
    valid_name(&b.name, "client")?;
    let scopes = scopes_text(&b.scopes)?;
    for uri in &b.redirect_uris {
        RedirectUri::register(uri)
            .map_err(|e| ApiError::bad_request(format!("redirect URI {uri}: {e}")))?;
    }
    let secret = match b.kind.as_str() {
        "public" => {
            if b.redirect_uris.is_empty() {
                return Err(ApiError::bad_request(
                    "a public client needs at least one redirect URI",
                ));
            }
            None
        }
        "confidential" => Some(OpaqueToken::generate(TokenKind::ClientSecret)),
        _ => return Err(ApiError::bad_request("type must be public or confidential")),
    };
    let id = format!(
        "{}-{}",
        b.name,
        hex::encode(keygate_auth::opaque::random_bytes::<4>())
    );
    let client = ClientRecord {
        id: id.clone(),
        name: b.name.clone(),
        kind: b.kind.clone(),
        secret_hash: secret.as_ref().map(|t| t.hash().as_bytes().to_vec()),
        redirect_uris: b.redirect_uris.clone(),
        scopes,
        created_ms: now_ms(),
        removed_ms: None,
    };
    let audit = AuditEvent::new(admin.actor(), "client.add", Outcome::Success)
        .target(id.clone())
        .detail("type", b.kind.clone());
    svc.store
        .create_client(client.clone(), audit, now_ms())
        .await
        .map_err(store_err)?;
    let mut body = client_json(&client);
    if let (Some(secret), Some(obj)) = (&secret, body.as_object_mut()) {
        obj.insert(
            "client_secret".into(),
            Value::String(secret.value().expose_secret().to_owned()),
        );
    }
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

async fn list_clients(_admin: Admin, State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    let clients = svc.store.list_clients().await.map_err(store_err)?;
    Ok(Json(
        json!({"clients": clients.iter().map(client_json).collect::<Vec<_>>()}),
    ))
}

async fn remove_client(
    admin: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    let audit =
        AuditEvent::new(admin.actor(), "client.remove", Outcome::Success).target(id.clone());
    let revoked = svc
        .store
        .remove_client(&id, audit, now_ms())
        .await
        .map_err(store_err)?;
    Ok(Json(
        json!({"client_id": id, "removed": true, "revoked_sessions": revoked}),
    ))
}

fn session_json(f: &FamilyRecord) -> Value {
    json!({
        "id": f.id,
        "user_id": f.user_id,
        "client_id": f.client_id,
        "scopes": f.scopes.split_whitespace().collect::<Vec<_>>(),
        "dpop_bound": f.jkt.is_some(),
        "created_ms": f.created_ms,
        "last_used_ms": f.last_used_ms,
        "revoked": f.revoked_ms.is_some(),
        "revoke_reason": f.revoke_reason,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    user: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn list_sessions(
    _admin: Admin,
    State(s): State<AppState>,
    Params(q): Params<SessionQuery>,
) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    let user_id = match &q.user {
        Some(name) => Some(user_named(&svc, name).await?.id),
        None => None,
    };
    let families = svc
        .store
        .list_families(user_id.as_deref(), q.all)
        .await
        .map_err(store_err)?;
    Ok(Json(
        json!({"sessions": families.iter().map(session_json).collect::<Vec<_>>()}),
    ))
}

async fn revoke_session(
    admin: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    let audit =
        AuditEvent::new(admin.actor(), "session.revoke", Outcome::Success).target(id.clone());
    let changed = svc
        .store
        .revoke_family(&id, "revoked by admin", audit, now_ms())
        .await
        .map_err(store_err)?;
    if !changed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such live session",
        ));
    }
    Ok(Json(json!({"id": id, "revoked": true})))
}

async fn list_keys(_admin: Admin, State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    let records = svc.store.signing_keys().await.map_err(store_err)?;
    let keys: Vec<Value> = records
        .iter()
        .map(|k| json!({"kid": k.kid, "alg": k.alg, "state": k.state, "published_ms": k.created_ms, "changed_ms": k.changed_ms}))
        .collect();
    Ok(Json(json!({"keys": keys})))
}

async fn rotate_keys(admin: Admin, State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let svc = tokens(&s)?;
    let what = svc
        .rotate_keys(true, &admin.actor())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(
        json!({"changed": what.is_some(), "message": what.unwrap_or_else(|| "nothing to do".into())}),
    ))
}
