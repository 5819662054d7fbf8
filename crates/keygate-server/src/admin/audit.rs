//! `/admin/v1/audit…` (the hash-chained log) and `/admin/v1/webhooks/dead-letters`
//! (webhook deliveries that failed for good).

use axum::Json;
use axum::extract::State;

use super::api::{
    AuditEntries, AuditEntry, AuditQuery, AuditVerification, DeadLetter, DeadLetters, LimitQuery,
};
use super::openapi::{BadInput, Refused};
use super::{Admin, Params};
use crate::AppState;
use crate::error::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(audit_entries))
        .routes(routes!(audit_verify))
        .routes(routes!(dead_letters))
}

#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    tag = "audit",
    summary = "Read audit entries: after a sequence number, or the last `tail`",
    params(AuditQuery),
    responses((status = 200, description = "Done.", body = AuditEntries), Refused, BadInput)
)]
async fn audit_entries(
    _admin: Admin,
    State(s): State<AppState>,
    Params(q): Params<AuditQuery>,
) -> Result<Json<AuditEntries>, ApiError> {
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
        (None, Some(after)) if after < 0 => {
            return Err(ApiError::bad_request("after must be 0 or more"));
        }
        (None, after) => after.unwrap_or(0),
    };
    let entries = s.store.audit_entries(after, limit).await?;
    Ok(Json(AuditEntries {
        entries: entries.iter().map(AuditEntry::from).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/audit/verify",
    tag = "audit",
    summary = "Verify the hash chain and its signed checkpoints",
    responses((status = 200, description = "Done.", body = AuditVerification), Refused)
)]
async fn audit_verify(_admin: Admin, State(s): State<AppState>) -> Json<AuditVerification> {
    let key = s.vault.keyring().map(|k| &k.checkpoint);
    let v = crate::audit_ops::verify(s.store.as_ref(), &s.config.checkpoint_file, key).await;
    Json(crate::audit_ops::verification(&v))
}

#[utoipa::path(
    get,
    path = "/admin/v1/webhooks/dead-letters",
    tag = "audit",
    summary = "List webhook deliveries that failed for good",
    params(LimitQuery),
    responses((status = 200, description = "Done.", body = DeadLetters), Refused, BadInput)
)]
async fn dead_letters(
    _admin: Admin,
    State(s): State<AppState>,
    Params(q): Params<LimitQuery>,
) -> Result<Json<DeadLetters>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let letters = s.store.dead_letters(limit).await?;
    Ok(Json(DeadLetters {
        dead_letters: letters.iter().map(DeadLetter::from).collect(),
        dropped: s.webhooks.dropped(),
    }))
}
