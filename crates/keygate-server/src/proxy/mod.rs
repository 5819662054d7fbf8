//! `/proxy/{route}/{path…}`: the server's side of the gatekeeper.
//!
//! [`keygate_proxy::Gatekeeper`] owns the pipeline (framing and path → token → allow-list
//! and scopes → throttles → rate, budget and quota → key → forward) and counts every
//! refusal; the handler here only hands it the request and the peer's address. What the
//! gatekeeper needs from the server comes through [`adapters`]: the token service, the
//! vault, and the store's quota and budget counters.
//!
//! Routes come from `[routes.*]` in the configuration, overlaid by routes applied through
//! the admin API (stored, so every replica and every restart sees them; see
//! [`crate::admin::routes`]).

pub mod adapters;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keygate_auth::clock::Clock;
use keygate_proxy::route::RawRoute;
use keygate_proxy::usage::{ProxyMetrics, SummingUsageSink, TeeUsageSink, UsageSink};
use keygate_proxy::{Gatekeeper, GatekeeperConfig, LimitGate, RouteTable};

use crate::AppState;
use adapters::{BUDGET_FLUSH, StoreBudgets, StoreQuota, TokenVerifier, VaultKeys};

/// How long a route key read from the vault may be reused when the change was made by
/// *another* replica (a rotation through this process is used by the very next call).
pub const SECRET_STALENESS: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a replica reads the stored routes when no change was announced.
pub const ROUTES_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Where admin-applied routes are kept in the store's `meta` table.
pub(crate) const ROUTES_META: &str = "routes";

/// The proxy's shared state: the gatekeeper, and the route sources it was built from.
pub struct ProxyState {
    file_routes: BTreeMap<String, RawRoute>,
    applied: RwLock<BTreeMap<String, RawRoute>>,
    pub gatekeeper: Gatekeeper,
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

/// What the proxy is built from, besides the configuration.
pub struct ProxyParts {
    pub store: Arc<dyn keygate_store::Store>,
    pub vault: Arc<keygate_vault::Vault>,
    pub tokens: Arc<crate::oauth::TokenService>,
    /// The monitor, when it runs: it sees every call and its throttles apply.
    pub monitor: Option<Arc<crate::monitor::MonitorService>>,
    /// Reads throttle deadlines.
    pub clock: Arc<dyn Clock>,
    /// Where every answer is counted (kept by the server while sealed too).
    pub metrics: Arc<ProxyMetrics>,
    /// Redis shared by the replicas (`[coordination]`), for rate limits.
    pub coordinator: Option<Arc<crate::coordination::Coordinator>>,
}

impl ProxyState {
    /// Builds the proxy from the configuration and the routes stored by the admin API.
    /// Usage events go to the monitor (when it runs), the cost budgets and the usage sums.
    pub async fn start(
        config: &crate::config::Config,
        parts: ProxyParts,
    ) -> Result<Self, RoutesError> {
        let ProxyParts {
            store,
            vault,
            tokens,
            monitor,
            clock,
            metrics,
            coordinator,
        } = parts;
        let summing = Arc::new(SummingUsageSink::new(100_000));
        tokio::spawn(adapters::flush_usage(store.clone(), summing.clone()));
        let budgets = Arc::new(keygate_proxy::Budgets::new(
            Arc::new(StoreBudgets(store.clone())),
            BUDGET_FLUSH,
            100_000,
        ));
        tokio::spawn(adapters::flush_budgets(store.clone(), budgets.clone()));
        // The monitor and budgets look at each event in place; the usage sums, last,
        // take it.
        let mut sinks: Vec<Arc<dyn UsageSink>> = Vec::new();
        if let Some(m) = &monitor {
            sinks.push(m.monitor.clone());
        }
        sinks.push(budgets.clone());
        sinks.push(summing);
        let usage: Arc<dyn UsageSink> = Arc::new(TeeUsageSink(sinks));
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
        // Rates in process, or with [coordination] in Redis, shared by the replicas (while
        // it is down each replica allows a 1/replicas share, S35); quotas in the store, or
        // with [coordination] in Redis copied to the store every second (while Redis is
        // down, in the store); cost budgets in the store, read through a 1 s cache. Quotas
        // and budgets hold across restarts and replicas.
        type Limits = (
            Arc<dyn keygate_proxy::limit::RateLimiter>,
            u32,
            Arc<dyn keygate_proxy::limit::QuotaStore>,
        );
        let (rate, share, quota): Limits = match &coordinator {
            Some(c) => {
                let quota = Arc::new(crate::coordination::RedisQuota::new(
                    c.clone(),
                    store.clone(),
                ));
                tokio::spawn(crate::coordination::flush_quotas(
                    store.clone(),
                    quota.clone(),
                ));
                (
                    Arc::new(crate::coordination::RedisRateLimiter(c.clone())),
                    c.replicas(),
                    quota,
                )
            }
            None => (
                Arc::new(keygate_proxy::limit::InMemoryRateLimiter::new(100_000)),
                1,
                Arc::new(StoreQuota(store)),
            ),
        };
        let gate = LimitGate::new(rate, quota, share).with_budgets(budgets);
        let mut gatekeeper = Gatekeeper::new(
            GatekeeperConfig {
                prefix: "/proxy/",
                proto: if config.public_url.scheme() == "https" {
                    "https"
                } else {
                    "http"
                },
                host,
                key_staleness: SECRET_STALENESS,
                forwarder: keygate_proxy::ForwarderConfig::default(),
            },
            Arc::new(TokenVerifier(tokens)),
            Arc::new(VaultKeys(vault)),
            gate,
            usage,
            metrics,
        );
        if let Some(m) = &monitor {
            gatekeeper = gatekeeper.with_throttles(m.throttles.clone(), clock);
        }
        let state = Self {
            file_routes: config.routes_raw.clone(),
            applied: RwLock::new(BTreeMap::new()),
            gatekeeper,
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
        self.gatekeeper
            .set_routes(table)
            .map_err(|(route, e)| RoutesError::Tls {
                route: route.as_str().to_owned(),
                message: e.to_string(),
            })?;
        if let Ok(mut a) = self.applied.write() {
            *a = applied;
        }
        Ok(())
    }

    /// Installs the routes other replicas applied: whenever `store`'s change epoch moves
    /// (with `[coordination]`, at once on another replica's announcement) and at least
    /// every [`ROUTES_POLL`] otherwise, the stored routes are read and, if they differ
    /// from those in force, installed. Until `stop`.
    pub async fn follow_routes(
        self: Arc<Self>,
        store: Arc<dyn keygate_store::Store>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut seen_epoch = store.change_epoch();
        let mut last_read = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let epoch = store.change_epoch();
            if epoch == seen_epoch && last_read.elapsed() < ROUTES_POLL {
                continue;
            }
            seen_epoch = epoch;
            last_read = std::time::Instant::now();
            let stored: BTreeMap<String, RawRoute> = match store.get_meta(ROUTES_META).await {
                Ok(None) => BTreeMap::new(),
                Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "stored routes are unreadable; keeping the routes in force");
                        continue;
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "reading the stored routes failed; keeping the routes in force");
                    continue;
                }
            };
            let current = self.applied.read().map(|a| a.clone()).unwrap_or_default();
            if stored != current {
                match self.install(stored) {
                    Ok(()) => tracing::info!("installed routes applied by another replica"),
                    Err(e) => {
                        tracing::error!(error = %e, "routes applied by another replica do not install here; keeping the routes in force")
                    }
                }
            }
        }
    }

    /// The live routes.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.gatekeeper.routes()
    }

    /// The routes from the configuration file.
    pub(crate) fn file_routes(&self) -> &BTreeMap<String, RawRoute> {
        &self.file_routes
    }

    /// A route as configured, and where it came from (`admin` or `config`).
    pub(crate) fn raw(&self, name: &str) -> Option<(RawRoute, &'static str)> {
        if let Some(r) = self.applied.read().ok().and_then(|a| a.get(name).cloned()) {
            return Some((r, "admin"));
        }
        self.file_routes.get(name).cloned().map(|r| (r, "config"))
    }
}

/// `/metrics`. (`/proxy/…` is not a route of the router: [`crate::serve_http1`] hands it
/// to [`serve`] directly.)
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// What a proxied call needs from the server, taken once from [`AppState`] for every
/// connection: the gatekeeper (none while the vault is sealed), the metrics that count
/// refusals, and the wait allowed for each next piece of a request body.
#[derive(Clone, Debug)]
pub struct ProxyEntry {
    proxy: Option<Arc<ProxyState>>,
    metrics: Arc<ProxyMetrics>,
    body_read: std::time::Duration,
}

impl ProxyEntry {
    pub fn new(state: &AppState) -> Self {
        Self {
            proxy: state.proxy.clone(),
            metrics: Arc::clone(&state.proxy_metrics),
            body_read: state.config.body_read_timeout,
        }
    }
}

/// Serves one `/proxy/…` call straight from the connection, outside the router: the
/// gatekeeper's pipeline is the whole of it, so neither the router's per-request state
/// clone, its boxed middleware nor its response boxing are paid on the hot path. The
/// request body keeps its deadline ([`crate::deadline::proxied`]); the call runs in the
/// same `http` span (method and path, never the query) as routed requests.
pub async fn serve<B>(
    entry: &ProxyEntry,
    request: axum::http::Request<B>,
    peer: SocketAddr,
) -> Response<ServedBody>
where
    B: hyper::body::Body<Data = axum::body::Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    use tracing::Instrument as _;
    let span =
        tracing::info_span!("http", method = %request.method(), path = %request.uri().path());
    async move {
        let Some(px) = entry.proxy.as_deref() else {
            return keygate_proxy::gatekeeper::refuse_unavailable(&entry.metrics)
                .map(ServedBody::Proxy);
        };
        match crate::deadline::proxied(entry.body_read, request, |request| {
            px.gatekeeper.handle(request, peer.ip())
        })
        .await
        {
            Ok(response) => response.map(ServedBody::Proxy),
            Err(timed_out) => timed_out.map(ServedBody::App),
        }
    }
    .instrument(span)
    .await
}

/// A response body of the HTTP server: the gatekeeper's (unboxed) or the router's.
// Unboxed on purpose: every proxied call has the large variant, and boxing it would be an
// allocation per call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ServedBody {
    Proxy(keygate_proxy::ProxyBody),
    App(Body),
}

impl hyper::body::Body for ServedBody {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<axum::body::Bytes>, axum::BoxError>>>
    {
        match self.get_mut() {
            ServedBody::Proxy(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            ServedBody::App(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ServedBody::Proxy(b) => b.is_end_stream(),
            ServedBody::App(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ServedBody::Proxy(b) => b.size_hint(),
            ServedBody::App(b) => b.size_hint(),
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut body = s.proxy_metrics.render();
    if let Some(m) = &s.monitor {
        body.push_str(&m.render_metrics());
    }
    if let Some(a) = s.tokens.as_ref().and_then(|t| t.attestation.as_ref()) {
        body.push_str(&a.render_metrics());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
