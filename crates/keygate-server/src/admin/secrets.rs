//! `/admin/v1/secrets…`, `/admin/v1/rotation` and `/admin/v1/secret-fingerprints`: the
//! vault and its rotation schedules.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use keygate_store::{SecretMeta, VersionMeta};
use keygate_vault::SecretName;

use super::api::{
    ConfigureSecret, Destroy, FingerprintExport, PutSecret, Rollback, RolledBack, Rotated,
    RotationList, Schedule, ScheduleCleared, SecretConfigured, SecretDeleted, SecretHistory,
    SecretInfo, SecretList, SecretValue, SecretWritten, SetSchedule, UnixMs, VersionDestroyed,
    VersionInfo, VersionQuery,
};
use super::{Admin, Body, Params, no_store};
use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
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
            put(set_schedule).delete(clear_schedule),
        )
        .route("/admin/v1/secrets/{name}/rotate", post(rotate_now))
        .route("/admin/v1/rotation", get(rotation_list))
        .route("/admin/v1/secret-fingerprints", get(fingerprints))
}

fn name(raw: &str) -> Result<SecretName, ApiError> {
    SecretName::parse(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn info(m: &SecretMeta) -> SecretInfo {
    SecretInfo {
        name: m.name.clone(),
        current_version: m.current_version,
        max_versions: m.max_versions,
        created_ms: UnixMs(m.created_ms),
        updated_ms: UnixMs(m.updated_ms),
        deleted: m.deleted_ms.is_some(),
        deleted_ms: m.deleted_ms.map(UnixMs),
    }
}

fn version_info(v: &VersionMeta) -> VersionInfo {
    VersionInfo {
        version: v.version,
        created_ms: UnixMs(v.created_ms),
        destroyed: v.destroyed_ms.is_some(),
        destroyed_ms: v.destroyed_ms.map(UnixMs),
    }
}

async fn list_secrets(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<SecretList>, ApiError> {
    let secrets = s.vault.list().await?;
    Ok(Json(SecretList {
        secrets: secrets.iter().map(info).collect(),
    }))
}

async fn get_secret(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Params(q): Params<VersionQuery>,
) -> Result<Response, ApiError> {
    let name = name(&raw)?;
    let (version, value) = s.vault.get(&name, q.version, &admin.actor()).await?;
    Ok(no_store(SecretValue {
        name: name.as_str().to_owned(),
        version,
        value,
    }))
}

async fn put_secret(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<PutSecret>,
) -> Result<Json<SecretWritten>, ApiError> {
    let name = name(&raw)?;
    let version = s
        .vault
        .put(&name, body.value, body.cas, &admin.actor())
        .await?;
    tracing::info!(secret = %name, version, "secret version written");
    changed(&s, &name, "put", Some(version));
    Ok(Json(SecretWritten {
        name: name.as_str().to_owned(),
        version,
    }))
}

async fn configure_secret(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<ConfigureSecret>,
) -> Result<Json<SecretConfigured>, ApiError> {
    let name = name(&raw)?;
    s.vault
        .set_max_versions(&name, body.max_versions, &admin.actor())
        .await?;
    Ok(Json(SecretConfigured {
        name: name.as_str().to_owned(),
        max_versions: body.max_versions,
    }))
}

async fn delete_secret(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<SecretDeleted>, ApiError> {
    let name = name(&raw)?;
    s.vault.delete(&name, &admin.actor()).await?;
    changed(&s, &name, "delete", None);
    Ok(Json(SecretDeleted {
        name: name.as_str().to_owned(),
        deleted: true,
    }))
}

async fn undelete(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<SecretDeleted>, ApiError> {
    let name = name(&raw)?;
    s.vault.undelete(&name, &admin.actor()).await?;
    changed(&s, &name, "undelete", None);
    Ok(Json(SecretDeleted {
        name: name.as_str().to_owned(),
        deleted: false,
    }))
}

async fn history(
    _admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<SecretHistory>, ApiError> {
    let name = name(&raw)?;
    let (meta, versions) = s.vault.history(&name).await?;
    Ok(Json(SecretHistory {
        secret: info(&meta),
        versions: versions.iter().map(version_info).collect(),
    }))
}

async fn rollback(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<Rollback>,
) -> Result<Json<RolledBack>, ApiError> {
    let name = name(&raw)?;
    let version = s.vault.rollback(&name, body.to, &admin.actor()).await?;
    changed(&s, &name, "rollback", Some(version));
    Ok(Json(RolledBack {
        name: name.as_str().to_owned(),
        version,
        from_version: body.to,
    }))
}

async fn destroy(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<Destroy>,
) -> Result<Json<VersionDestroyed>, ApiError> {
    let name = name(&raw)?;
    s.vault.destroy(&name, body.version, &admin.actor()).await?;
    changed(&s, &name, "destroy", Some(body.version));
    Ok(Json(VersionDestroyed {
        name: name.as_str().to_owned(),
        version: body.version,
        destroyed: true,
    }))
}

async fn fingerprints(admin: Admin, State(s): State<AppState>) -> Result<Response, ApiError> {
    let file = s.vault.fingerprints(&admin.actor()).await?;
    Ok(no_store(FingerprintExport::from(file)))
}

/// Tells the webhooks a secret changed: its name, what happened and the version; never a
/// value.
fn changed(s: &AppState, name: &SecretName, action: &str, version: Option<i64>) {
    s.webhooks.send(
        "secret.changed",
        serde_json::json!({"secret": name.as_str(), "action": action, "version": version}),
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
                axum::http::StatusCode::NOT_FOUND,
                "not_scheduled",
                "this secret has no rotation schedule",
            ),
            E::Failed(reason) => ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "rotation_failed",
                reason,
            ),
            E::Vault(v) => v.into(),
            E::Store(st) => st.into(),
        }
    }
}

async fn set_schedule(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Body(body): Body<SetSchedule>,
) -> Result<Json<Schedule>, ApiError> {
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
    Ok(Json(Schedule::from(&schedule)))
}

async fn clear_schedule(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ScheduleCleared>, ApiError> {
    let name = name(&raw)?;
    s.rotation.clear_schedule(&name, &admin.actor()).await?;
    Ok(Json(ScheduleCleared {
        secret: name.as_str().to_owned(),
        scheduled: false,
    }))
}

async fn rotate_now(
    admin: Admin,
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Rotated>, ApiError> {
    let name = name(&raw)?;
    let version = s.rotation.rotate_now(&name).await?;
    tracing::info!(secret = %name, version, actor = %admin.actor(), "secret rotated by hand");
    Ok(Json(Rotated {
        secret: name.as_str().to_owned(),
        version,
    }))
}

async fn rotation_list(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<RotationList>, ApiError> {
    let schedules = s.store.schedules().await?;
    Ok(Json(RotationList {
        schedules: schedules.iter().map(Schedule::from).collect(),
        hooks: s.rotation.hooks().keys().cloned().collect(),
    }))
}
