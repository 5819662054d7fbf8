//! `/admin/v1/console/admins`: the operator console's accounts (`keygate admin add`).
//! Each signs in with a password and a TOTP code; the seed is shown once, here.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use keygate_audit::{AuditEvent, Outcome};
use keygate_auth::totp::{Totp, TotpSeed};
use keygate_store::ConsoleAdminRecord;
use keygate_store::console::{ROLE_ADMIN, ROLE_READ_ONLY};
use keygate_vault::now_ms;
use secrecy::{ExposeSecret, SecretString};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{
    AddConsoleAdmin, ConsoleAdmin, ConsoleAdminCreated, ConsoleAdminDisabled, ConsoleAdminList,
};
use super::openapi::{BodyRefused, Conflict, NotFound, Refused};
use super::{Admin, Body, Segment, no_store};
use crate::AppState;
use crate::error::ApiError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_console_admins, add_console_admin))
        .routes(routes!(disable_console_admin))
}

#[utoipa::path(
    get,
    path = "/admin/v1/console/admins",
    tag = "console",
    summary = "List the console's admin accounts",
    responses((status = 200, description = "Done.", body = ConsoleAdminList), Refused)
)]
async fn list_console_admins(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<ConsoleAdminList>, ApiError> {
    let admins = s.store.list_console_admins().await?;
    Ok(Json(ConsoleAdminList {
        admins: admins.iter().map(ConsoleAdmin::from).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/console/admins",
    tag = "console",
    summary = "Add a console admin account; its TOTP seed is shown once",
    request_body = AddConsoleAdmin,
    responses(
        (status = 200, description = "Done.", body = ConsoleAdminCreated, headers(("Cache-Control" = String, description = "`no-store`"))),
        Refused, BodyRefused, Conflict
    )
)]
async fn add_console_admin(
    admin: Admin,
    State(s): State<AppState>,
    Body(b): Body<AddConsoleAdmin>,
) -> Result<Response, ApiError> {
    let svc = s.tokens.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "sealed",
            "console accounts cannot be made while the vault is sealed",
        )
    })?;
    super::tokens::valid_name(&b.name, "console admin")?;
    let role = match b.role.as_deref() {
        None | Some("admin") => ROLE_ADMIN,
        Some("read-only") => ROLE_READ_ONLY,
        Some(_) => return Err(ApiError::bad_request("role must be admin or read-only")),
    };
    let hash = super::tokens::hash_password(&svc, b.password).await?;
    let id = format!(
        "ca_{}",
        hex::encode(keygate_auth::opaque::random_bytes::<12>())
    );
    let seed = TotpSeed::generate();
    let sealed = svc
        .vault
        .seal_internal(crate::console::TOTP_CONTEXT, &id, seed.expose_bytes())
        .map_err(ApiError::from)?;
    let record = ConsoleAdminRecord {
        id,
        name: b.name.clone(),
        password_hash: hash,
        totp_sealed: sealed,
        totp_last_step: None,
        role: role.to_owned(),
        created_ms: now_ms(),
        disabled_ms: None,
    };
    let audit = AuditEvent::new(admin.actor(), "console_admin.add", Outcome::Success)
        .target(b.name.clone())
        .detail("role", role);
    s.store
        .create_console_admin(record.clone(), audit, now_ms())
        .await?;
    let uri = Totp::default().otpauth_uri(&seed, "keygate console", &record.name);
    Ok(no_store(ConsoleAdminCreated {
        admin: ConsoleAdmin::from(&record),
        otpauth_uri: SecretString::from(uri.expose_secret().to_owned()),
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/console/admins/{name}/disable",
    tag = "console",
    summary = "Disable a console account: its sessions end at once and it can no longer sign in",
    params(("name" = String, Path, description = "A console account's name.")),
    responses((status = 200, description = "Done.", body = ConsoleAdminDisabled), Refused, NotFound)
)]
async fn disable_console_admin(
    admin: Admin,
    State(s): State<AppState>,
    Segment(name): Segment,
) -> Result<Json<ConsoleAdminDisabled>, ApiError> {
    let audit = AuditEvent::new(admin.actor(), "console_admin.disable", Outcome::Success)
        .target(name.clone());
    match s.store.disable_console_admin(&name, audit, now_ms()).await {
        Ok(()) => Ok(Json(ConsoleAdminDisabled {
            name,
            disabled: true,
        })),
        Err(keygate_store::StoreError::NotFound) => {
            Err(ApiError::not_found("no console account with that name"))
        }
        Err(e) => Err(e.into()),
    }
}
