//! `/admin/v1/alerts`, `/admin/v1/throttles` and `/admin/v1/monitor`: what the monitor
//! saw and did, and undoing it. The monitor itself is [`crate::monitor`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keygate_audit::{AuditEvent, Outcome};
use keygate_proxy::throttle::ThrottleSubject;
use keygate_store::StoreError;

use super::api::{
    Alert, AlertAcked, AlertDeadLetter, AlertList, AlertQuery, MonitorSnapshot, Throttle,
    ThrottleLifted, ThrottleList, UnixMs,
};
use super::openapi::{BadInput, NotFound, Refused};
use super::{Admin, Params, Segment};
use crate::AppState;
use crate::error::ApiError;
use crate::monitor::MonitorService;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(ack_alert))
        .routes(routes!(list_throttles))
        .routes(routes!(lift_throttle))
        .routes(routes!(snapshot))
}

fn service(s: &AppState) -> Result<&Arc<MonitorService>, ApiError> {
    s.monitor.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "monitor_off",
            "the monitor is not running (vault sealed, or [monitor] enabled = false)",
        )
    })
}

#[utoipa::path(
    get,
    path = "/admin/v1/alerts",
    tag = "monitor",
    summary = "List alerts, newest first, and failed alert deliveries",
    params(AlertQuery),
    responses((status = 200, description = "Done.", body = AlertList), Refused, BadInput)
)]
async fn list_alerts(
    _admin: Admin,
    State(s): State<AppState>,
    Params(q): Params<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let alerts = s.store.list_alerts(!q.all.unwrap_or(false), limit).await?;
    let dead = s.store.dead_letters(limit).await?;
    Ok(Json(AlertList {
        alerts: alerts.iter().map(Alert::from).collect(),
        dead_letters: dead.iter().map(AlertDeadLetter::from).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/alerts/{id}/ack",
    tag = "monitor",
    summary = "Acknowledge an alert",
    params(("id" = String, Path, description = "An alert's id.")),
    responses((status = 200, description = "Done.", body = AlertAcked), Refused, NotFound)
)]
async fn ack_alert(
    admin: Admin,
    State(s): State<AppState>,
    Segment(id): Segment,
) -> Result<Json<AlertAcked>, ApiError> {
    let changed = match ack(&s, &id, &admin.actor()).await {
        Err(StoreError::NotFound) => return Err(ApiError::not_found("no such alert")),
        other => other?,
    };
    Ok(Json(AlertAcked {
        id,
        acked: true,
        changed,
    }))
}

/// Acknowledges an alert as `actor` (the admin API's and the console's one way).
pub(crate) async fn ack(s: &AppState, id: &str, actor: &str) -> Result<bool, StoreError> {
    match s.monitor.as_ref() {
        Some(m) => m.ack(id, actor).await,
        // Alerts stay readable and acknowledgeable with the monitor off.
        None => {
            let audit = AuditEvent::new(actor, "alert.ack", Outcome::Success)
                .detail("alert", id.to_owned());
            s.store
                .ack_alert(id, actor, audit, keygate_vault::now_ms())
                .await
        }
    }
}

#[utoipa::path(
    get,
    path = "/admin/v1/throttles",
    tag = "monitor",
    summary = "List throttles in force",
    responses((status = 200, description = "Done.", body = ThrottleList), Refused)
)]
async fn list_throttles(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<ThrottleList>, ApiError> {
    let m = service(&s)?;
    let throttles = m
        .throttles
        .list(m.now_ms())
        .into_iter()
        .map(|(subject, t)| Throttle {
            subject: subject.to_string(),
            per_minute: t.per_minute,
            until_ms: UnixMs(t.until_ms),
            reason: t.reason,
        })
        .collect();
    Ok(Json(ThrottleList { throttles }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/throttles/{subject}",
    tag = "monitor",
    summary = "Lift a throttle",
    params(("subject" = String, Path, description = "A throttle's subject: `user:ID`, `session:ID`, `client:ID` or `ip:PREFIX`.", pattern = r"^(user|session|client|ip):.+$")),
    responses((status = 200, description = "Done.", body = ThrottleLifted), Refused, BadInput)
)]
async fn lift_throttle(
    admin: Admin,
    State(s): State<AppState>,
    Segment(subject): Segment,
) -> Result<Json<ThrottleLifted>, ApiError> {
    let m = service(&s)?;
    let parsed = ThrottleSubject::parse(&subject).ok_or_else(|| {
        ApiError::bad_request(
            "subject must be user:ID, session:ID, client:ID or ip:PREFIX (as `keygate throttle list` shows it)",
        )
    })?;
    // With replicas, the others lift it at their next monitor evaluation.
    let lifted = m.lift(&parsed);
    if lifted {
        let audit = AuditEvent::new(admin.actor(), "throttle.lift", Outcome::Success)
            .target(subject.clone());
        s.store.append_audit(audit, m.now_ms()).await?;
    }
    Ok(Json(ThrottleLifted { subject, lifted }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/monitor",
    tag = "monitor",
    summary = "The monitor's state: rates, baselines, open incidents, drop counters",
    responses((status = 200, description = "Done.", body = keygate_monitor::Snapshot), Refused)
)]
async fn snapshot(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<MonitorSnapshot>, ApiError> {
    let m = service(&s)?;
    Ok(Json(m.monitor.snapshot()))
}
