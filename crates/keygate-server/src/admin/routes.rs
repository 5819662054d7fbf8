//! `/admin/v1/routes`: the live route table, and routes applied through the admin API
//! (stored, so every replica and every restart sees them).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use keygate_audit::{AuditEvent, Outcome};
use keygate_proxy::RouteTable;
use keygate_proxy::route::RawRoute;
use keygate_vault::now_ms;

use super::api::{ApplyRoutes, RouteInfo, RouteList, RouteShown, RoutesApplied};
use super::openapi::{BodyRefused, Conflict, NotFound, Refused};
use crate::AppState;
use crate::admin::{Admin, Body as JsonBody, Segment};
use crate::error::ApiError;
use crate::proxy::{ProxyState, ROUTES_META};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_routes, apply_routes))
        .routes(routes!(show_route))
}

fn proxy_state(s: &AppState) -> Result<&ProxyState, ApiError> {
    s.proxy.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sealed",
            "the proxy is unavailable while the vault is sealed",
        )
    })
}

/// A live route as the API lists it (and the console shows it).
pub(crate) fn route_info(px: &ProxyState, r: &keygate_proxy::Route) -> RouteInfo {
    let source = px.raw(r.name().as_str()).map_or("config", |(_, src)| src);
    RouteInfo {
        name: r.name().as_str().to_owned(),
        upstream: format!(
            "{}://{}{}",
            r.upstream().scheme(),
            r.upstream().authority(),
            r.upstream().base_path()
        ),
        secret: r.secret_name().to_owned(),
        allow: r.allow().iter().map(|a| a.as_str().to_owned()).collect(),
        scopes: r.scopes().iter().map(|s| s.as_str().to_owned()).collect(),
        source: source.to_owned(),
    }
}

#[utoipa::path(
    get,
    path = "/admin/v1/routes",
    tag = "routes",
    summary = "List the live routes",
    responses((status = 200, description = "Done.", body = RouteList), Refused)
)]
async fn list_routes(
    _admin: Admin,
    State(s): State<AppState>,
) -> Result<Json<RouteList>, ApiError> {
    let px = proxy_state(&s)?;
    let routes = px.routes().iter().map(|r| route_info(px, r)).collect();
    Ok(Json(RouteList { routes }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/routes/{name}",
    tag = "routes",
    summary = "Show one route as written",
    params(("name" = String, Path, description = "A route's name.")),
    responses((status = 200, description = "Done.", body = RouteShown), Refused, NotFound)
)]
async fn show_route(
    _admin: Admin,
    State(s): State<AppState>,
    Segment(name): Segment,
) -> Result<Json<RouteShown>, ApiError> {
    let px = proxy_state(&s)?;
    let (raw, source) = px
        .raw(&name)
        .ok_or_else(|| ApiError::not_found("no such route"))?;
    Ok(Json(RouteShown {
        name,
        source: source.to_owned(),
        route: raw,
    }))
}

#[utoipa::path(
    put,
    path = "/admin/v1/routes",
    tag = "routes",
    summary = "Replace every admin-applied route with the TOML document's `[routes.NAME]` tables",
    request_body = ApplyRoutes,
    responses((status = 200, description = "Done.", body = RoutesApplied), Refused, BodyRefused, Conflict)
)]
async fn apply_routes(
    admin: Admin,
    State(s): State<AppState>,
    JsonBody(body): JsonBody<ApplyRoutes>,
) -> Result<Json<RoutesApplied>, ApiError> {
    let px = proxy_state(&s)?;
    let doc: toml::Table = body.toml.parse().map_err(|e: toml::de::Error| {
        // The parser's text may quote the document; only the position is given.
        ApiError::bad_request(format!(
            "`toml`: not valid TOML{}",
            crate::config::toml_error_position(&body.toml, &e)
        ))
    })?;
    let mut applied = BTreeMap::new();
    if let Some(routes) = doc.get("routes") {
        let routes = routes.as_table().ok_or_else(|| {
            ApiError::bad_request("`routes` must be a table of [routes.NAME] tables")
        })?;
        for (name, value) in routes {
            if keygate_proxy::RouteName::parse(name).is_err() {
                return Err(ApiError::bad_request(
                    "`routes`: invalid route name (1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit)",
                ));
            }
            let label = format!("routes.{name}");
            let raw: RawRoute = serde_json::to_value(value)
                .map_err(|_| crate::json_body::DocumentError::invalid_value())
                .and_then(crate::json_body::from_value)
                .map_err(|e| ApiError::bad_request(e.within(&label).to_string()))?;
            applied.insert(name.clone(), raw);
        }
    }
    // Validate everything before anything changes.
    let mut all = px.file_routes().clone();
    all.extend(applied.clone());
    RouteTable::from_raw(&all).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let bytes = serde_json::to_vec(&applied).map_err(|e| ApiError::internal(&e))?;
    let names: Vec<String> = applied.keys().cloned().collect();
    s.store
        .set_meta(
            ROUTES_META,
            bytes,
            AuditEvent::new(admin.actor(), "routes.apply", Outcome::Success)
                .detail("routes", names.clone()),
            now_ms(),
        )
        .await?;
    px.install(applied)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(RoutesApplied {
        applied: names,
        live: px.routes().len(),
    }))
}
