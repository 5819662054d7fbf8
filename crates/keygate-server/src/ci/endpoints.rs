//! `/ci/v1/…`: the CI login and what a machine token may do: list and read the secrets
//! its policy grants. Nothing else accepts a machine token.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keygate_audit::Outcome;
use keygate_vault::{SecretName, now_ms};
use serde::{Deserialize, Serialize};

use super::{CiService, MachineIdentity};
use crate::AppState;
use crate::admin::api::{SecretValue, UnixMs, VersionQuery};
use crate::admin::{Body, Params, no_store};
use crate::admin_guard::Gate;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ci/v1/login", post(login))
        .route("/ci/v1/secrets", get(list))
        .route("/ci/v1/secrets/{name}", get(read))
}

/// `POST /ci/v1/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiLogin {
    /// The CI job's OIDC ID token.
    pub id_token: String,
}

/// A secret a machine token may read, as `GET /ci/v1/secrets` lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct GrantedSecret {
    pub name: String,
    pub current_version: i64,
    pub updated_ms: UnixMs,
}

/// `GET /ci/v1/secrets`: who the token is and what it may read.
#[derive(Debug, Serialize, Deserialize)]
pub struct GrantedSecrets {
    pub identity: String,
    pub policy: String,
    pub expires_ms: UnixMs,
    /// Whether versions other than the current one may be read.
    pub any_version: bool,
    pub secrets: Vec<GrantedSecret>,
}

fn ci(s: &AppState) -> Result<&CiService, ApiError> {
    s.ci.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sealed",
            "the vault is sealed: machine logins and reads are unavailable",
        )
    })
}

async fn login(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(body): Body<CiLogin>,
) -> Result<Response, Response> {
    let ci = ci(&s).map_err(IntoResponse::into_response)?;
    let source = peer.ip();
    if let Gate::Refuse(wait) = ci.guard.gate(source, now_ms()) {
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many refused CI logins from this address; retry later",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return Err(resp);
    }
    match ci.login_with_id_token(body.id_token.trim(), source).await {
        Ok(issued) => Ok(issued.response()),
        Err(r) => Err(ApiError::from(r).into_response()),
    }
}

/// A request authenticated by a machine token.
pub struct Machine(pub MachineIdentity);

impl FromRequestParts<AppState> for Machine {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ci = ci(state)?;
        let token = crate::admin::bearer(&parts.headers).unwrap_or_default();
        Ok(Machine(ci.identify(token).await?))
    }
}

async fn list(
    Machine(m): Machine,
    State(s): State<AppState>,
) -> Result<Json<GrantedSecrets>, ApiError> {
    let secrets = s
        .vault
        .list()
        .await?
        .into_iter()
        .filter(|meta| meta.deleted_ms.is_none() && m.grants.allows(&meta.name))
        .map(|meta| GrantedSecret {
            name: meta.name,
            current_version: meta.current_version,
            updated_ms: UnixMs(meta.updated_ms),
        })
        .collect();
    Ok(Json(GrantedSecrets {
        identity: m.identity.clone(),
        policy: m.policy.name.clone(),
        expires_ms: UnixMs(m.expires_ms),
        any_version: m.policy.any_version,
        secrets,
    }))
}

async fn read(
    Machine(m): Machine,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Params(q): Params<VersionQuery>,
) -> Result<Response, ApiError> {
    let name = SecretName::parse(&raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !m.grants.allows(name.as_str()) {
        let reason = format!(
            "policy `{}` does not grant secret `{}`",
            m.policy.name,
            name.as_str()
        );
        return Err(refuse(&s, &m, &name, reason).await);
    }
    if let Some(v) = q.version {
        if !m.policy.any_version {
            let current = s
                .store
                .secret_meta(name.as_str())
                .await?
                .map(|meta| meta.current_version);
            if current != Some(v) {
                let reason = format!("policy `{}` grants the current version only", m.policy.name);
                return Err(refuse(&s, &m, &name, reason).await);
            }
        }
    }
    let (version, value) = s
        .vault
        .get_with(&name, q.version, m.audit("secret.read", Outcome::Success))
        .await?;
    Ok(no_store(SecretValue {
        name: name.as_str().to_owned(),
        version,
        value,
    }))
}

/// A read outside the token's policy: audited (S23: no audit, no answer), then 403.
async fn refuse(s: &AppState, m: &MachineIdentity, name: &SecretName, reason: String) -> ApiError {
    let event = m
        .audit("secret.read", Outcome::Denied)
        .target(name.as_str())
        .detail("reason", reason.clone());
    if let Err(e) = s.store.append_audit(event, now_ms()).await {
        return ApiError::audit_unavailable(&e);
    }
    tracing::info!(identity = %m.identity, secret = %name, %reason, "machine read refused");
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", reason)
}
