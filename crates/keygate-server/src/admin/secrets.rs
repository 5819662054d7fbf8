//! `/admin/v1/secrets…`, `/admin/v1/rotation` and `/admin/v1/secret-fingerprints`: the
//! vault and its rotation schedules.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use keygate_store::{SecretMeta, VersionMeta};
use keygate_vault::SecretName;

use super::api::{
    ConfigureSecret, Destroy, FingerprintExport, PutSecret, Rollback, RolledBack, Rotated,
    RotationList, Schedule, ScheduleCleared, SecretConfigured, SecretDeleted, SecretHistory,
    SecretInfo, SecretList, SecretValue, SecretWritten, SetSchedule, UnixMs, VersionDestroyed,
    VersionInfo, VersionQuery,
};
use super::openapi::{BadInput, BodyRefused, Conflict, Gone, NotFound, Refused, RotationFailed};
use super::{Admin, Body, Params, Segment, no_store};
use crate::AppState;
use crate::error::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets))
        .routes(routes!(
            get_secret,
            put_secret,
            configure_secret,
            delete_secret
        ))
        .routes(routes!(history))
        .routes(routes!(rollback))
        .routes(routes!(undelete))
        .routes(routes!(destroy))
        .routes(routes!(set_schedule, clear_schedule))
        .routes(routes!(rotate_now))
        .routes(routes!(rotation_list))
        .routes(routes!(fingerprints))
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

#[utoipa::path(
    get,
    path = "/admin/v1/secrets",
    tag = "secrets",
    summary = "List secrets: metadata, never values",
    responses((status = 200, description = "Done.", body = SecretList), Refused)
)]
async fn list_secrets(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<SecretList>, ApiError> {
    let secrets = s.vault.list().await?;
    Ok(Json(SecretList {
        secrets: secrets.iter().map(info).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/secrets/{name}",
    tag = "secrets",
    summary = "Read a secret's value (the current version, or `?version=N`); audited",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"), VersionQuery),
    responses((status = 200, description = "Done.", body = SecretValue, headers(("Cache-Control" = String, description = "`no-store`"))), Refused, BadInput, NotFound, Gone)
)]
async fn get_secret(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
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

#[utoipa::path(
    put,
    path = "/admin/v1/secrets/{name}",
    tag = "secrets",
    summary = "Write a new version (creates the secret if new; `cas` for check-and-set)",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    request_body = PutSecret,
    responses((status = 200, description = "Done.", body = SecretWritten), Refused, BodyRefused, NotFound, Conflict)
)]
async fn put_secret(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
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

#[utoipa::path(
    patch,
    path = "/admin/v1/secrets/{name}",
    tag = "secrets",
    summary = "Set how many versions are kept",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    request_body = ConfigureSecret,
    responses((status = 200, description = "Done.", body = SecretConfigured), Refused, BodyRefused, NotFound)
)]
async fn configure_secret(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
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

#[utoipa::path(
    delete,
    path = "/admin/v1/secrets/{name}",
    tag = "secrets",
    summary = "Delete a secret (undone by `undelete` until a version is destroyed)",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, description = "Done.", body = SecretDeleted), Refused, BadInput, NotFound)
)]
async fn delete_secret(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
) -> Result<Json<SecretDeleted>, ApiError> {
    let name = name(&raw)?;
    s.vault.delete(&name, &admin.actor()).await?;
    changed(&s, &name, "delete", None);
    Ok(Json(SecretDeleted {
        name: name.as_str().to_owned(),
        deleted: true,
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/secrets/{name}/undelete",
    tag = "secrets",
    summary = "Undo a delete",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, description = "Done.", body = SecretDeleted), Refused, BadInput, NotFound)
)]
async fn undelete(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
) -> Result<Json<SecretDeleted>, ApiError> {
    let name = name(&raw)?;
    s.vault.undelete(&name, &admin.actor()).await?;
    changed(&s, &name, "undelete", None);
    Ok(Json(SecretDeleted {
        name: name.as_str().to_owned(),
        deleted: false,
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/secrets/{name}/versions",
    tag = "secrets",
    summary = "List a secret's versions",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, description = "Done.", body = SecretHistory), Refused, BadInput, NotFound)
)]
async fn history(
    _admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
) -> Result<Json<SecretHistory>, ApiError> {
    let name = name(&raw)?;
    let (meta, versions) = s.vault.history(&name).await?;
    Ok(Json(SecretHistory {
        secret: info(&meta),
        versions: versions.iter().map(version_info).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/secrets/{name}/rollback",
    tag = "secrets",
    summary = "Write a new version holding an earlier version's value",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    request_body = Rollback,
    responses((status = 200, description = "Done.", body = RolledBack), Refused, BodyRefused, NotFound, Conflict, Gone)
)]
async fn rollback(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
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

#[utoipa::path(
    post,
    path = "/admin/v1/secrets/{name}/destroy",
    tag = "secrets",
    summary = "Destroy one version's value for good",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    request_body = Destroy,
    responses((status = 200, description = "Done.", body = VersionDestroyed), Refused, BodyRefused, NotFound, Gone)
)]
async fn destroy(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
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

#[utoipa::path(
    get,
    path = "/admin/v1/secret-fingerprints",
    tag = "secrets",
    summary = "Export HMAC fingerprints of every current value, for `keygate scan --fingerprints`; audited",
    responses((status = 200, description = "Done.", body = FingerprintExport, headers(("Cache-Control" = String, description = "`no-store`"))), Refused)
)]
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

#[utoipa::path(
    put,
    path = "/admin/v1/secrets/{name}/schedule",
    tag = "rotation",
    summary = "Rotate a secret on a schedule, through a configured hook",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    request_body = SetSchedule,
    responses((status = 200, description = "Done.", body = Schedule), Refused, BodyRefused, NotFound)
)]
async fn set_schedule(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
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

#[utoipa::path(
    delete,
    path = "/admin/v1/secrets/{name}/schedule",
    tag = "rotation",
    summary = "Stop rotating a secret on a schedule",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, description = "Done.", body = ScheduleCleared), Refused, BadInput, NotFound)
)]
async fn clear_schedule(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
) -> Result<Json<ScheduleCleared>, ApiError> {
    let name = name(&raw)?;
    s.rotation.clear_schedule(&name, &admin.actor()).await?;
    Ok(Json(ScheduleCleared {
        secret: name.as_str().to_owned(),
        scheduled: false,
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/secrets/{name}/rotate",
    tag = "rotation",
    summary = "Rotate a scheduled secret now, through its hook",
    params(("name" = String, Path, description = "A secret's name.", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, description = "Done.", body = Rotated), Refused, BadInput, NotFound, Conflict, RotationFailed)
)]
async fn rotate_now(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
) -> Result<Json<Rotated>, ApiError> {
    let name = name(&raw)?;
    let version = s.rotation.rotate_now(&name).await?;
    tracing::info!(secret = %name, version, actor = %admin.actor(), "secret rotated by hand");
    Ok(Json(Rotated {
        secret: name.as_str().to_owned(),
        version,
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/rotation",
    tag = "rotation",
    summary = "List rotation schedules and the configured hooks",
    responses((status = 200, description = "Done.", body = RotationList), Refused)
)]
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
