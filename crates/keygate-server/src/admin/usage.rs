//! `/admin/v1/usage`: proxied calls per minute, user, route and status class.

use axum::Json;
use axum::extract::State;
use keygate_vault::now_ms;

use super::api::{UsageQuery, UsageReport, UsageRow};
use super::openapi::{BadInput, Refused};
use crate::AppState;
use crate::admin::Admin;
use crate::error::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

#[utoipa::path(
    get,
    path = "/admin/v1/usage",
    tag = "usage",
    summary = "Calls per minute, user, route and status class",
    params(UsageQuery),
    responses((status = 200, description = "Done.", body = UsageReport), Refused, BadInput)
)]
async fn usage(
    _admin: Admin,
    State(s): State<AppState>,
    crate::admin::Params(q): crate::admin::Params<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let minutes = q.minutes.unwrap_or(60);
    if !(1..=60 * 24 * 31).contains(&minutes) {
        return Err(ApiError::bad_request("minutes must be between 1 and 44640"));
    }
    // Usage is recorded by user id; accept the name operators know.
    let user_id = match &q.user {
        Some(name) => Some(
            s.store
                .user_by_name(name)
                .await?
                .map(|u| u.id)
                .unwrap_or_else(|| name.clone()),
        ),
        None => None,
    };
    let since = now_ms() / 60_000 - minutes;
    let rows = s
        .store
        .usage(since, user_id.as_deref(), q.route.as_deref(), 10_000)
        .await?;
    Ok(Json(UsageReport {
        usage: rows.iter().map(UsageRow::from).collect(),
    }))
}
