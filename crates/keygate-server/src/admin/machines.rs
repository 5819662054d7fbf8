//! `/admin/v1/policies…` and `/admin/v1/machines…`: what machine identities may read, and
//! the static machine credentials (see [`crate::ci`]).

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use keygate_audit::{AuditEvent, Outcome};
use keygate_auth::opaque::{OpaqueToken, TokenKind};
use keygate_store::{MachineRecord, PolicyRecord};
use keygate_vault::now_ms;

use super::api::{
    AddMachine, Deleted, Machine, MachineList, Policy, PolicyList, PolicyWritten, PutPolicy,
    RotateMachine, UnixMs,
};
use super::openapi::{BadInput, BodyRefused, Conflict, NotFound, Refused};
use super::{Admin, Body, Segment, no_store};
use crate::AppState;
use crate::ci::{self, DEFAULT_TOKEN_TTL_SECS, Grants, SecretPattern, TOKEN_TTL_RANGE};
use crate::error::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Default and longest overlap of a rotated machine secret.
const DEFAULT_OVERLAP_SECS: i64 = 3600;
const MAX_OVERLAP_SECS: i64 = 7 * 24 * 3600;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_policies))
        .routes(routes!(show_policy, put_policy, delete_policy))
        .routes(routes!(list_machines, add_machine))
        .routes(routes!(show_machine, delete_machine))
        .routes(routes!(rotate_machine))
}

fn policy_view(p: &PolicyRecord) -> Result<Policy, ApiError> {
    let secrets: Vec<String> = serde_json::from_str(&p.secrets)
        .map_err(|_| ApiError::internal(&format!("stored policy `{}` does not parse", p.name)))?;
    Ok(Policy {
        name: p.name.clone(),
        secrets,
        token_ttl_secs: p.token_ttl_secs,
        any_version: p.any_version,
        created_ms: UnixMs(p.created_ms),
        updated_ms: UnixMs(p.updated_ms),
    })
}

fn policy_name(raw: &str) -> Result<&str, ApiError> {
    if ci::policy_name_ok(raw) {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(
            "a policy name is 1-64 characters of letters, digits, '.', '-' and '_'",
        ))
    }
}

fn machine_name(raw: &str) -> Result<&str, ApiError> {
    if ci::machine_name_ok(raw) {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(
            "a machine name is 1-64 characters of letters, digits, '.', '-' and '_'",
        ))
    }
}

#[utoipa::path(
    get,
    path = "/admin/v1/policies",
    tag = "machines",
    summary = "List machine policies",
    responses((status = 200, description = "Done.", body = PolicyList), Refused)
)]
async fn list_policies(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<PolicyList>, ApiError> {
    let policies = s
        .store
        .list_policies()
        .await?
        .iter()
        .map(policy_view)
        .collect::<Result<_, _>>()?;
    Ok(Json(PolicyList { policies }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/policies/{name}",
    tag = "machines",
    summary = "Show a policy",
    params(("name" = String, Path, description = "A policy's name.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, description = "Done.", body = Policy), Refused, BadInput, NotFound)
)]
async fn show_policy(
    _admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
) -> Result<Json<Policy>, ApiError> {
    let name = policy_name(&raw)?;
    let p = s
        .store
        .policy(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no policy named `{name}`")))?;
    Ok(Json(policy_view(&p)?))
}

#[utoipa::path(
    put,
    path = "/admin/v1/policies/{name}",
    tag = "machines",
    summary = "Create or replace a policy: which secrets a machine identity may read",
    params(("name" = String, Path, description = "A policy's name.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = PutPolicy,
    responses((status = 200, description = "Done.", body = PolicyWritten), Refused, BodyRefused)
)]
async fn put_policy(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
    Body(body): Body<PutPolicy>,
) -> Result<Json<PolicyWritten>, ApiError> {
    let name = policy_name(&raw)?;
    if body.secrets.len() > 256 {
        return Err(ApiError::bad_request(
            "secrets: at most 256 names and globs per policy",
        ));
    }
    let grants =
        Grants::parse(&body.secrets).map_err(|e| ApiError::bad_request(format!("secrets: {e}")))?;
    let ttl = body.token_ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
    if !TOKEN_TTL_RANGE.contains(&ttl) {
        return Err(ApiError::bad_request(
            "token_ttl_secs: must be between 60 and 3600 (machine tokens live minutes)",
        ));
    }
    // Kept, with warnings: a pipeline may be set up before its secrets are.
    let existing: Vec<String> = s
        .vault
        .list()
        .await?
        .into_iter()
        .filter(|m| m.deleted_ms.is_none())
        .map(|m| m.name)
        .collect();
    let mut warnings = Vec::new();
    if body.secrets.is_empty() {
        warnings.push("the policy grants no secret: its tokens can read nothing".to_owned());
    }
    for (raw, pattern) in body.secrets.iter().zip(grants.patterns()) {
        if !existing.iter().any(|n| pattern.matches(n)) {
            warnings.push(format!("`{raw}` matches no secret (yet)"));
        }
        if *pattern == SecretPattern::Prefix(String::new()) {
            warnings.push("`*` grants every secret in the vault".to_owned());
        }
    }
    let now = now_ms();
    let secrets_json = serde_json::to_string(&body.secrets).map_err(|e| ApiError::internal(&e))?;
    let record = PolicyRecord {
        name: name.to_owned(),
        secrets: secrets_json.clone(),
        token_ttl_secs: ttl,
        any_version: body.any_version,
        created_ms: now,
        updated_ms: now,
    };
    let audit = AuditEvent::new(admin.actor(), "policy.put", Outcome::Success)
        .target(name)
        .detail("secrets", secrets_json)
        .detail("token_ttl_secs", ttl)
        .detail("any_version", body.any_version);
    let created = s.store.put_policy(record, audit, now).await?;
    let stored = s
        .store
        .policy(name)
        .await?
        .ok_or_else(|| ApiError::internal(&"a policy just written is missing"))?;
    Ok(Json(PolicyWritten {
        policy: policy_view(&stored)?,
        created,
        warnings,
    }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/policies/{name}",
    tag = "machines",
    summary = "Delete a policy no machine uses",
    params(("name" = String, Path, description = "A policy's name.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, description = "Done.", body = Deleted), Refused, BadInput, NotFound, Conflict)
)]
async fn delete_policy(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
) -> Result<Json<Deleted>, ApiError> {
    let name = policy_name(&raw)?;
    let audit = AuditEvent::new(admin.actor(), "policy.delete", Outcome::Success).target(name);
    s.store
        .delete_policy(name, audit, now_ms())
        .await
        .map_err(|e| match e {
            keygate_store::StoreError::NotFound => {
                ApiError::not_found(format!("no policy named `{name}`"))
            }
            other => other.into(),
        })?;
    Ok(Json(Deleted {
        name: name.to_owned(),
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/machines",
    tag = "machines",
    summary = "List machine credentials",
    responses((status = 200, description = "Done.", body = MachineList), Refused)
)]
async fn list_machines(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<MachineList>, ApiError> {
    let machines = s
        .store
        .list_machines()
        .await?
        .iter()
        .map(Machine::from)
        .collect();
    Ok(Json(MachineList { machines }))
}

async fn machine_record(s: &AppState, name: &str) -> Result<MachineRecord, ApiError> {
    s.store
        .machine_by_name(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no machine named `{name}`")))
}

#[utoipa::path(
    get,
    path = "/admin/v1/machines/{name}",
    tag = "machines",
    summary = "Show a machine credential (never its secret)",
    params(("name" = String, Path, description = "A machine's name.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, description = "Done.", body = Machine), Refused, BadInput, NotFound)
)]
async fn show_machine(
    _admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
) -> Result<Json<Machine>, ApiError> {
    let name = machine_name(&raw)?;
    Ok(Json(Machine::from(&machine_record(&s, name).await?)))
}

#[utoipa::path(
    post,
    path = "/admin/v1/machines",
    tag = "machines",
    summary = "Add a machine credential (its secret is shown once)",
    request_body = AddMachine,
    responses((status = 200, description = "Done.", body = Machine, headers(("Cache-Control" = String, description = "`no-store`"))), Refused, BodyRefused, Conflict)
)]
async fn add_machine(
    admin: Admin,
    State(s): State<AppState>,
    Body(body): Body<AddMachine>,
) -> Result<Response, ApiError> {
    let name = machine_name(&body.name)?;
    let policy = policy_name(&body.policy)?;
    if s.store.policy(policy).await?.is_none() {
        return Err(ApiError::bad_request(format!(
            "no policy named `{policy}`; create it first (keygate policy put {policy} --secret NAME)"
        )));
    }
    let secret = OpaqueToken::generate(TokenKind::ClientSecret);
    let now = now_ms();
    let record = MachineRecord {
        id: format!(
            "{}{}",
            ci::MACHINE_ID_PREFIX,
            hex::encode(keygate_auth::opaque::random_bytes::<12>())
        ),
        name: name.to_owned(),
        policy: policy.to_owned(),
        secret_hash: secret.hash().as_bytes().to_vec(),
        previous_hash: None,
        previous_until_ms: None,
        created_ms: now,
        rotated_ms: None,
    };
    let audit = AuditEvent::new(admin.actor(), "machine.add", Outcome::Success)
        .target(name)
        .detail("client_id", record.id.clone())
        .detail("policy", policy);
    s.store.insert_machine(record.clone(), audit, now).await?;
    tracing::info!(machine = %name, policy = %policy, "machine credential added");
    let mut view = Machine::from(&record);
    view.client_secret = Some(secret.value().clone());
    Ok(no_store(view))
}

#[utoipa::path(
    post,
    path = "/admin/v1/machines/{name}/rotate",
    tag = "machines",
    summary = "Give a machine a new secret; the old one works for `overlap_secs`",
    params(("name" = String, Path, description = "A machine's name.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = RotateMachine,
    responses((status = 200, description = "Done.", body = Machine, headers(("Cache-Control" = String, description = "`no-store`"))), Refused, BodyRefused, NotFound)
)]
async fn rotate_machine(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
    Body(body): Body<RotateMachine>,
) -> Result<Response, ApiError> {
    let name = machine_name(&raw)?;
    let overlap = body.overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS);
    if !(0..=MAX_OVERLAP_SECS).contains(&overlap) {
        return Err(ApiError::bad_request(
            "overlap_secs: must be between 0 and 604800 (7 days)",
        ));
    }
    machine_record(&s, name).await?;
    let secret = OpaqueToken::generate(TokenKind::ClientSecret);
    let now = now_ms();
    let until = now + overlap * 1000;
    let audit = AuditEvent::new(admin.actor(), "machine.rotate", Outcome::Success)
        .target(name)
        .detail("overlap_secs", overlap);
    s.store
        .rotate_machine_secret(name, secret.hash().as_bytes().to_vec(), until, audit, now)
        .await?;
    let mut view = Machine::from(&machine_record(&s, name).await?);
    view.client_secret = Some(secret.value().clone());
    Ok(no_store(view))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/machines/{name}",
    tag = "machines",
    summary = "Delete a machine credential",
    params(("name" = String, Path, description = "A machine's name.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses((status = 200, description = "Done.", body = Deleted), Refused, BadInput, NotFound)
)]
async fn delete_machine(
    admin: Admin,
    State(s): State<AppState>,
    Segment(raw): Segment,
) -> Result<Json<Deleted>, ApiError> {
    let name = machine_name(&raw)?;
    let audit = AuditEvent::new(admin.actor(), "machine.delete", Outcome::Success).target(name);
    s.store
        .delete_machine(name, audit, now_ms())
        .await
        .map_err(|e| match e {
            keygate_store::StoreError::NotFound => {
                ApiError::not_found(format!("no machine named `{name}`"))
            }
            other => other.into(),
        })?;
    Ok(Json(Deleted {
        name: name.to_owned(),
    }))
}
