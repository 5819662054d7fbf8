//! `/admin/v1/usage`: proxied calls per minute, user, route and status class.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use keygate_vault::now_ms;
use serde_json::{Value, json};

use crate::AppState;
use crate::admin::Admin;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/v1/usage", get(usage))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    /// A user name (or a client id for client-credentials tokens).
    user: Option<String>,
    route: Option<String>,
    /// How far back, in minutes (default 60).
    minutes: Option<i64>,
}

async fn usage(
    _admin: Admin,
    State(s): State<AppState>,
    crate::admin::Params(q): crate::admin::Params<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
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
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "minute": r.minute,
                "user_id": r.user_id,
                "route": r.route,
                "status_class": r.status_class,
                "calls": r.calls,
                "latency_ms_avg": if r.calls > 0 { r.latency_ms_sum / r.calls } else { 0 },
                "latency_ms_max": r.latency_ms_max,
            })
        })
        .collect();
    Ok(Json(json!({"usage": rows})))
}
