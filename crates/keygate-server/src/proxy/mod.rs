//! `/proxy/{route}/{path…}`: the gatekeeper. The handler runs keygate-proxy's pipeline,
//! whose types make every check a precondition of the next:
//!
//! framing and path checks → `VerifiedAccess` (token, DPoP proof, revocation) →
//! `AuthorizedCall` (allow-list, scopes) → `RatePermit` (rate, cost budget, quota) → the
//! key from the vault → `Forwarder::forward`, which cleans the headers, injects the key,
//! streams, and meters the call's cost for the budgets (summed in memory, written to the
//! store once a second by `flush_budgets`).
//!
//! Routes come from `[routes.*]` in the configuration, overlaid by routes applied through
//! the admin API (stored, so every replica and every restart sees them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use keygate_auth::resource::ResourceRequest;
use keygate_proxy::route::RawRoute;
use keygate_proxy::usage::ProxyMetrics;
use keygate_proxy::{
    ForwardedInfo, Forwarder, ForwarderConfig, LimitGate, ProxyError, ProxyTarget, RouteTable,
};
use keygate_vault::now_ms;

use crate::AppState;
use crate::oauth::OAuthError;

/// Quota counters in the store: one atomic statement per counted call, shared by every
/// replica and kept across restarts. An unreachable store refuses the call (S35).
pub struct StoreQuota(pub Arc<dyn keygate_store::Store>);

impl keygate_proxy::limit::QuotaStore for StoreQuota {
    fn consume<'a>(
        &'a self,
        key: &'a keygate_proxy::limit::LimitKey,
        window: keygate_proxy::limit::QuotaWindow,
        limit: u64,
    ) -> keygate_proxy::limit::BoxFuture<
        'a,
        Result<keygate_proxy::limit::QuotaDecision, keygate_proxy::limit::QuotaUnavailable>,
    > {
        use keygate_proxy::limit::{QuotaDecision, QuotaUnavailable};
        Box::pin(async move {
            let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            match self
                .0
                .quota_consume(
                    key.as_str(),
                    to_i64(window.start),
                    to_i64(window.end),
                    to_i64(limit),
                )
                .await
            {
                Ok(Some(remaining)) => Ok(QuotaDecision::Allowed {
                    remaining: u64::try_from(remaining).unwrap_or(0),
                }),
                Ok(None) => Ok(QuotaDecision::Exhausted),
                Err(e) => {
                    tracing::error!(error = %e, "quota store unavailable");
                    Err(QuotaUnavailable)
                }
            }
        })
    }
}

/// Cost budget spending in the store, read by [`keygate_proxy::Budgets`] through its
/// cache (at most one read per user and budgeted route per second). An unreachable store
/// refuses budgeted calls (fail closed, like quotas).
pub struct StoreBudgets(pub Arc<dyn keygate_store::Store>);

impl keygate_proxy::budget::BudgetLedger for StoreBudgets {
    fn spent<'a>(
        &'a self,
        user: &'a keygate_auth::ids::UserId,
        route: &'a keygate_proxy::RouteName,
        month_first_day: i64,
        today: i64,
    ) -> keygate_proxy::limit::BoxFuture<
        'a,
        Result<keygate_proxy::budget::Spent, keygate_proxy::budget::BudgetUnavailable>,
    > {
        use keygate_proxy::budget::{BudgetUnavailable, Spent};
        Box::pin(async move {
            match self
                .0
                .budget_spent(user.as_str(), route.as_str(), month_first_day, today)
                .await
            {
                Ok(s) => Ok(Spent {
                    day: u64::try_from(s.day).unwrap_or(0),
                    month: u64::try_from(s.range).unwrap_or(0),
                }),
                Err(e) => {
                    tracing::error!(error = %e, "budget store unavailable");
                    Err(BudgetUnavailable)
                }
            }
        })
    }
}

/// How often summed costs are written to the store, and how long a replica reuses a
/// user's spending as read from it: together they bound how far a budget can be
/// overshot (see [`keygate_proxy::budget`]).
pub const BUDGET_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Days of budget spending kept: the current month needs at most 31.
const BUDGET_KEEP_DAYS: i64 = 62;

/// Writes the costs [`keygate_proxy::Budgets`] summed since the last tick to the store,
/// once every [`BUDGET_FLUSH`]; a batch that fails is put back and retried with the next
/// (spending that is never written would let users overshoot). Drops days older than
/// [`BUDGET_KEEP_DAYS`] once an hour. Ends after a last write once it is the only holder.
async fn flush_budgets(store: Arc<dyn keygate_store::Store>, budgets: Arc<keygate_proxy::Budgets>) {
    let mut tick = tokio::time::interval(BUDGET_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let last = Arc::strong_count(&budgets) == 1;
        let taken = budgets.take();
        if !taken.is_empty() {
            let rows = taken
                .iter()
                .map(|s| keygate_store::BudgetRow {
                    user_id: s.user.as_str().to_owned(),
                    route: s.route.as_str().to_owned(),
                    day: s.day,
                    cost: i64::try_from(s.cost).unwrap_or(i64::MAX),
                })
                .collect();
            if let Err(e) = store.budget_add(rows).await {
                tracing::error!(error = %e, "writing budget spending failed; retrying with the next batch");
                if !last {
                    budgets.restore(taken);
                }
            }
        }
        if ticks % 3600 == 1 {
            let today = now_ms() / 86_400_000;
            if let Err(e) = store.purge_budgets(today - BUDGET_KEEP_DAYS).await {
                tracing::warn!(error = %e, "purging old budget spending failed");
            }
        }
        if last {
            return;
        }
    }
}

/// Usage aggregation off the hot path: the forwarder sums events in memory per (minute,
/// user, route, status class); this task writes what has been summed once a second, and a
/// last time when it is the sink's only holder (the proxy has shut down).
async fn flush_usage(
    store: Arc<dyn keygate_store::Store>,
    sink: Arc<keygate_proxy::usage::SummingUsageSink>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = Arc::strong_count(&sink) == 1;
        let rows: Vec<_> = sink
            .take()
            .into_iter()
            .map(|(key, sums)| keygate_store::UsageRow {
                minute: key.minute,
                user_id: key.user.as_str().to_owned(),
                route: key.route.as_str().to_owned(),
                status_class: key.status_class.as_str().to_owned(),
                calls: sums.calls,
                latency_ms_sum: sums.latency_ms_sum,
                latency_ms_max: sums.latency_ms_max,
            })
            .collect();
        if !rows.is_empty() {
            if let Err(e) = store.record_usage(rows).await {
                tracing::error!(error = %e, "writing proxy usage failed; this batch is lost");
            }
        }
        if last {
            return;
        }
    }
}

/// How long a route key read from the vault may be reused when the change was made by
/// *another* replica (a rotation through this process is used by the very next call).
pub const SECRET_STALENESS: std::time::Duration = std::time::Duration::from_secs(1);

/// Where admin-applied routes are kept in the store's `meta` table.
pub(crate) const ROUTES_META: &str = "routes";

/// The proxy's shared state.
pub struct ProxyState {
    file_routes: BTreeMap<String, RawRoute>,
    applied: RwLock<BTreeMap<String, RawRoute>>,
    table: RwLock<Arc<RouteTable>>,
    pub gate: LimitGate,
    pub forwarder: Forwarder,
    /// Route keys as last read from the vault, with the store's change epoch; reused for
    /// at most [`SECRET_STALENESS`] and never across a change made through this process.
    secrets: std::sync::Mutex<
        std::collections::HashMap<String, (secrecy::SecretString, u64, std::time::Instant)>,
    >,
    pub metrics: Arc<ProxyMetrics>,
    /// Where usage events go (the forwarder's sink): calls refused after the token was
    /// verified are recorded here too, so the monitor sees attempts, not only forwards.
    usage: Arc<dyn keygate_proxy::usage::UsageSink>,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` from the configured public URL, never
    /// from the request (S25, S26).
    proto: &'static str,
    host: HeaderValue,
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState").finish_non_exhaustive()
    }
}

/// A route set that failed validation, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("{0}")]
    Invalid(#[from] keygate_proxy::route::RouteConfigError),
    #[error("route {route}: {message}")]
    Tls { route: String, message: String },
    #[error("stored routes are unreadable: {0}")]
    Stored(String),
    #[error("storage: {0}")]
    Store(#[from] keygate_store::StoreError),
}

impl ProxyState {
    /// Builds the proxy from the configuration and the routes stored by the admin API.
    /// Usage events go to the monitor (when it runs) and are summed for the store.
    pub async fn start(
        config: &crate::config::Config,
        store: Arc<dyn keygate_store::Store>,
        monitor: Option<Arc<keygate_monitor::Monitor>>,
    ) -> Result<Self, RoutesError> {
        let metrics = Arc::new(ProxyMetrics::new());
        let summing = Arc::new(keygate_proxy::usage::SummingUsageSink::new(100_000));
        tokio::spawn(flush_usage(store.clone(), summing.clone()));
        let budgets = Arc::new(keygate_proxy::Budgets::new(
            Arc::new(StoreBudgets(store.clone())),
            BUDGET_FLUSH,
            100_000,
        ));
        tokio::spawn(flush_budgets(store.clone(), budgets.clone()));
        // The monitor and budgets look at each event in place; the usage sums, last,
        // take it.
        let mut sinks: Vec<Arc<dyn keygate_proxy::usage::UsageSink>> = Vec::new();
        if let Some(m) = monitor {
            sinks.push(m);
        }
        sinks.push(budgets.clone());
        sinks.push(summing);
        let sink: Arc<dyn keygate_proxy::usage::UsageSink> =
            Arc::new(keygate_proxy::usage::TeeUsageSink(sinks));
        let forwarder = Forwarder::new(ForwarderConfig::default(), sink.clone(), metrics.clone());
        let applied = match store.get_meta(ROUTES_META).await? {
            None => BTreeMap::new(),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| RoutesError::Stored(e.to_string()))?
            }
        };
        let host = config
            .public_url
            .host_str()
            .map(|h| match config.public_url.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
            .and_then(|h| HeaderValue::from_str(&h).ok())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        let state = Self {
            file_routes: config.routes_raw.clone(),
            applied: RwLock::new(BTreeMap::new()),
            table: RwLock::new(Arc::new(RouteTable::default())),
            // Rates in process (a Redis limiter replaces this on scale-out); quotas in the
            // store, so they hold across restarts and replicas.
            secrets: Default::default(),
            // Cost budgets read spending from the store too (through a 1 s cache).
            gate: LimitGate::new(
                Arc::new(keygate_proxy::limit::InMemoryRateLimiter::new(100_000)),
                Arc::new(StoreQuota(store)),
                1,
            )
            .with_budgets(budgets),
            forwarder,
            metrics,
            usage: sink,
            proto: if config.public_url.scheme() == "https" {
                "https"
            } else {
                "http"
            },
            host,
        };
        state.install(applied)?;
        Ok(state)
    }

    /// Validates file routes overlaid by `applied`, prepares their upstream clients, and
    /// makes them live.
    pub(crate) fn install(&self, applied: BTreeMap<String, RawRoute>) -> Result<(), RoutesError> {
        let mut all = self.file_routes.clone();
        all.extend(applied.clone());
        let table = RouteTable::from_raw(&all)?;
        for route in table.iter() {
            self.forwarder
                .prepare(route)
                .map_err(|e| RoutesError::Tls {
                    route: route.name().as_str().to_owned(),
                    message: e.to_string(),
                })?;
        }
        if let Ok(mut t) = self.table.write() {
            *t = Arc::new(table);
        }
        if let Ok(mut a) = self.applied.write() {
            *a = applied;
        }
        Ok(())
    }

    /// The route's key: from the cache while it is current, else from the vault.
    async fn secret(
        &self,
        vault: &keygate_vault::Vault,
        name: &str,
    ) -> Result<secrecy::SecretString, keygate_vault::VaultError> {
        let epoch = vault.store().change_epoch();
        if let Ok(cache) = self.secrets.lock() {
            if let Some((value, e, at)) = cache.get(name) {
                if *e == epoch && at.elapsed() < SECRET_STALENESS {
                    return Ok(value.clone());
                }
            }
        }
        let (_, value) = vault.resolve(name).await?;
        if let Ok(mut cache) = self.secrets.lock() {
            cache.insert(
                name.to_owned(),
                (value.clone(), epoch, std::time::Instant::now()),
            );
        }
        Ok(value)
    }

    /// Counts a call refused before forwarding (scope, throttle, limits, key) as usage
    /// of its user, so a client hammering past its limits still shows as a spike.
    fn refused_call(
        &self,
        access: &keygate_auth::resource::VerifiedAccess,
        route: &keygate_proxy::RouteName,
        client_ip: std::net::IpAddr,
        e: &ProxyError,
    ) -> Response {
        self.usage.record(keygate_proxy::usage::UsageEvent {
            user: access.user().clone(),
            client: access.client().clone(),
            session: access.session().clone(),
            jkt: access.jkt().cloned(),
            client_ip,
            cost: 0,
            route: route.clone(),
            status_class: keygate_proxy::usage::StatusClass::of(e.status()),
            latency: std::time::Duration::ZERO,
            fault: Some(e.fault()),
        });
        refuse(Some(self), Some(route), e)
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.table.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// The routes from the configuration file.
    pub(crate) fn file_routes(&self) -> &BTreeMap<String, RawRoute> {
        &self.file_routes
    }

    pub(crate) fn raw(&self, name: &str) -> Option<(RawRoute, &'static str)> {
        if let Some(r) = self.applied.read().ok().and_then(|a| a.get(name).cloned()) {
            return Some((r, "admin"));
        }
        self.file_routes.get(name).cloned().map(|r| (r, "config"))
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/proxy/{*rest}", any(proxy))
        .route("/metrics", get(metrics))
}

fn refuse(
    px: Option<&ProxyState>,
    route: Option<&keygate_proxy::RouteName>,
    e: &ProxyError,
) -> Response {
    if let Some(px) = px {
        px.metrics.refused(route, e);
    }
    tracing::info!(
        code = e.code(),
        fault = e.fault().as_str(),
        "proxy call refused"
    );
    e.to_response::<Body>()
}

async fn proxy(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let px = s.proxy.as_deref();
    if let Err(e) = keygate_proxy::framing::check_request(&request) {
        return refuse(px, None, &e.into());
    }
    let raw = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let target = match ProxyTarget::parse("/proxy/", &raw) {
        Ok(t) => t,
        Err(e) => return refuse(px, None, &e.into()),
    };
    let (Some(px), Some(tokens)) = (px, s.tokens.as_ref()) else {
        return refuse(None, None, &ProxyError::Unavailable("the vault is sealed"));
    };
    let routes = px.routes();
    let Some(route) = routes.get(target.route()).cloned() else {
        return refuse(Some(px), None, &ProxyError::UnknownRoute);
    };
    let name = route.name().clone();
    let auth: Vec<&[u8]> = request
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let dpop: Vec<&[u8]> = request
        .headers()
        .get_all("dpop")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let verified = tokens
        .verify_request(&ResourceRequest {
            method: request.method().as_str(),
            target: &raw,
            authorization: &auth,
            dpop: &dpop,
        })
        .await;
    let access = match verified {
        Ok(a) => a,
        Err(e) => {
            if let Some(m) = &s.monitor {
                use keygate_auth::error::ErrorCode;
                let ip = peer.ip();
                match e.code() {
                    ErrorCode::InvalidToken => {
                        m.signal(keygate_monitor::Signal::TokenRefused { ip, client: None });
                    }
                    ErrorCode::InvalidDpopProof => {
                        m.signal(keygate_monitor::Signal::ProofRefused {
                            ip,
                            client: None,
                            user: None,
                        });
                    }
                    _ => {}
                }
            }
            return OAuthError::at_resource(&e).into_response();
        }
    };
    let call = match route.authorize(&access, request.method(), &target) {
        Ok(c) => c,
        Err(e) => return px.refused_call(&access, &name, peer.ip(), &e),
    };
    if let Some(m) = &s.monitor {
        if let Err(e) = m.throttles.check(&access, peer.ip(), m.now_ms()) {
            return px.refused_call(&access, &name, peer.ip(), &e);
        }
    }
    let permit = match px.gate.admit(&call, peer.ip()).await {
        Ok(p) => p,
        Err(e) => return px.refused_call(&access, &name, peer.ip(), &e),
    };
    let secret = match px.secret(&s.vault, route.secret_name()).await {
        Ok(secret) => secret,
        Err(e) => {
            // Deleted, destroyed or sealed: never forward without the key.
            tracing::warn!(route = %name, error = %e, "route's secret unavailable");
            return refuse(
                Some(px),
                Some(&name),
                &ProxyError::Unavailable("the route's key is unavailable"),
            );
        }
    };
    let forwarded = ForwardedInfo {
        client_ip: peer.ip(),
        proto: px.proto,
        host: px.host.clone(),
    };
    match px
        .forwarder
        .forward(&access, call, permit, secret, request, &forwarded)
        .await
    {
        Ok(resp) => resp.map(Body::new),
        Err(e) => refuse(Some(px), Some(&name), &e),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut body = s
        .proxy
        .as_ref()
        .map(|p| p.metrics.render())
        .unwrap_or_default();
    if let Some(m) = &s.monitor {
        body.push_str(&m.render_metrics());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
