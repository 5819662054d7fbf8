//! keygate's HTTP server: configuration, the admin API, health checks, logging, and the
//! audit checkpoint task.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = keygate_server::config::Config::load("keygate.toml".as_ref())?;
//! let server = keygate_server::start(config).await?;
//! println!("listening on {}", server.addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod admin_guard;
pub mod admin_token;
pub mod audit_ops;
mod bounded;
pub mod ci;
pub mod config;
pub mod console;
pub mod coordination;
pub mod deadline;
pub mod error;
pub mod json_body;
pub mod logging;
pub mod monitor;
pub mod mtls;
pub mod oauth;
pub mod posture;
pub mod proxy;
pub mod rotation;
pub mod tls;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router, routing::get};
use keygate_store::{SqlStore, Store};
use keygate_vault::{MasterKey, SoftKek, Vault, now_ms, write_key_file};
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub vault: Arc<Vault>,
    pub store: Arc<dyn Store>,
    /// Admin credentials as (id, SHA-256 of the token), loaded at start.
    pub admins: Arc<Vec<(String, Vec<u8>)>>,
    /// Failed admin authentication per source: limits and audit aggregation.
    pub admin_guard: Arc<admin_guard::AdminAuthGuard>,
    pub config: Arc<Config>,
    /// The token service; `None` while the vault is sealed (its endpoints answer 503).
    pub tokens: Option<Arc<oauth::TokenService>>,
    /// Machine identities (`/ci/v1/…`, machine client credentials); `None` while sealed.
    pub ci: Option<Arc<ci::CiService>>,
    /// TLS termination (`[tls]`), for the published pin set.
    pub tls: Option<Arc<tls::Tls>>,
    /// The CAs `tls_client_auth` clients' certificates must chain to (`[tls.mtls]
    /// client_ca`).
    pub client_trust: Option<mtls::ClientTrust>,
    /// Redis shared by the replicas (`[coordination]`), for `/readyz`.
    pub coordinator: Option<Arc<coordination::Coordinator>>,
    /// The proxy; `None` while the vault is sealed (proxied calls answer 503).
    pub proxy: Option<Arc<proxy::ProxyState>>,
    /// Every proxied call's answer is counted here, refusals while sealed included.
    pub proxy_metrics: Arc<keygate_proxy::usage::ProxyMetrics>,
    /// The monitor; `None` while the vault is sealed or with `[monitor] enabled = false`.
    pub monitor: Option<Arc<monitor::MonitorService>>,
    /// Signed event delivery (`[[monitor.webhooks]]`).
    pub webhooks: Arc<webhooks::Webhooks>,
    /// The secret rotation scheduler.
    pub rotation: Arc<rotation::Rotator>,
}

/// What tests may replace when starting a server.
#[derive(Default)]
pub struct StartOptions {
    /// The one clock the monitor, the proxy's throttles and the rotation scheduler read
    /// (default: the system clock). A test moves a [`keygate_auth::clock::ManualClock`] to
    /// simulate hours or days; with a clock given, neither the monitor's background
    /// evaluation nor the rotation scheduler's passes run, and the test drives them with
    /// [`monitor::MonitorService::run_once`] and [`rotation::Rotator::run_due`] (so no
    /// background pass races its own).
    pub clock: Option<Arc<dyn keygate_auth::clock::Clock>>,
    /// Also told every rotation notice (they always go to the log, the alerts and the
    /// webhooks).
    pub rotation_notify: Option<Arc<dyn rotation::RotationNotify>>,
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let body_limit = state
        .config
        .max_body_bytes
        .max(state.config.vault.max_value_bytes * 2 + 64 * 1024);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/keygate-pins", get(published_pins))
        .merge(admin::router())
        .merge(console::router())
        .merge(oauth::endpoints::router())
        .merge(ci::endpoints::router())
        .merge(proxy::router())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.config.admin_listener.is_some(),
            listener_scope,
        ))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            deadline::Deadlines {
                body_read: state.config.body_read_timeout,
                request: state.config.request_timeout,
            },
            deadline::enforce,
        ))
        // A handler that panics answers 500 instead of dropping the connection unanswered;
        // the panic's message stays in the process's own panic output, never the answer.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                error::ApiError::internal(&"a request handler panicked").into_response()
            },
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    // Path only: a query string is never logged.
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                },
            ),
        )
        .with_state(state)
}

/// With `[admin] listen`, the admin API lives on that listener only, and that listener
/// serves nothing else (but health): elsewhere both answer 404, as for any unknown path.
async fn listener_scope(
    State(admin_listener_configured): State<bool>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    let on_admin = req
        .extensions()
        .get::<Served>()
        .is_some_and(|s| s.admin_listener);
    // The console is the admin API's other face: it lives where the API does.
    let admin_path =
        path.starts_with("/admin/") || path == "/console" || path.starts_with("/console/");
    let allowed = if on_admin {
        admin_path || matches!(path, "/healthz" | "/readyz")
    } else {
        !(admin_listener_configured && admin_path)
    };
    if !allowed {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    next.run(req).await
}

/// The headers a security scanner looks for, on every routed answer (the proxy's answers
/// are the upstream's): no MIME sniffing, no referrer, no framing; the admin and CI APIs
/// also are never cached and may load nothing. A handler's own value wins (the login
/// page's CSP names its form target).
async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let api = {
        let p = req.uri().path();
        p.starts_with("/admin/") || p.starts_with("/ci/")
    };
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    if api {
        set(header::CACHE_CONTROL, "no-store");
        set(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        );
    }
    resp
}

/// `/.well-known/keygate-pins` (`[tls.pins]`): the SPKI SHA-256 pins of the certificates
/// in use and of the offline backup keys, as a JWT signed with the token signing key
/// (`typ: keygate-pins+jwt`; verify it with `/oauth2/jwks`), valid for `max_age`. Apps
/// that update their pins over the air take a set only with a good signature, from the
/// host they pin.
async fn published_pins(State(s): State<AppState>) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let (Some(tls), Some(tokens)) = (&s.tls, &s.tokens) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (Some(settings), Some(pins)) = (tls.pin_settings(), tls.pins()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let keys = tokens.keys().await;
    let Some(active) = keys.active() else {
        return error::ApiError::unavailable(&"no active signing key").into_response();
    };
    let now = now_ms() / 1000;
    let pin_list: Vec<serde_json::Value> = pins
        .current
        .iter()
        .map(|p| json!({"sha256": p, "role": "current"}))
        .chain(
            pins.backup
                .iter()
                .map(|p| json!({"sha256": p, "role": "backup"})),
        )
        .collect();
    let claims = json!({
        "iss": tokens.issuer,
        "iat": now,
        "exp": now + i64::try_from(settings.max_age.as_secs()).unwrap_or(0),
        "host": s.config.public_url.host_str().unwrap_or_default(),
        "include_subdomains": settings.include_subdomains,
        "pins": pin_list,
    });
    let mut header = serde_json::Map::new();
    header.insert("typ".into(), "keygate-pins+jwt".into());
    header.insert("kid".into(), active.kid.as_str().into());
    let jwt = keygate_auth::jws::sign_compact(&active.key, header, &claims);
    let mut resp = jwt.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwt"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// How long `/readyz` waits for the store's probe write after writes have failed.
const READY_WRITE_PROBE: Duration = Duration::from_secs(5);

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.vault.recheck().is_some() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "sealed"})),
        );
    }
    if let Err(e) = s.store.audit_head().await {
        tracing::error!(error = %e, "readiness: storage unavailable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "storage"})),
        );
    }
    // Reads alone do not show a full disk: every write (and so every audited operation)
    // fails while reads still work. The probe write waits for the writer, so it is bounded:
    // an orchestrator's readiness check must get an answer.
    let writes = tokio::time::timeout(READY_WRITE_PROBE, s.store.check_writes()).await;
    let failing = match writes {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "probe write took longer than {READY_WRITE_PROBE:?}"
        )),
    };
    if let Some(cause) = failing {
        tracing::error!(error = %cause, "readiness: store writes failing");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "store: writes failing"})),
        );
    }
    // Redis down: still serving (limits are local shares), so still ready, but said.
    if let Some(c) = &s.coordinator {
        if !c.healthy() {
            return (
                StatusCode::OK,
                Json(json!({
                    "ready": true,
                    "degraded": "coordination: Redis unreachable; each replica limits to its share, DPoP calls answer 503",
                })),
            );
        }
    }
    (StatusCode::OK, Json(json!({"ready": true})))
}

/// Opens the store and the vault the configuration names. The vault may come up sealed.
pub async fn open(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Arc<Vault>)> {
    let store = open_store(config).await?;
    let vault = open_vault(config, store.clone()).await?;
    Ok((store, vault))
}

/// Opens the store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.storage_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    }
    Ok(Arc::new(
        SqlStore::connect(&config.storage_url)
            .await
            .context("opening storage")?,
    ))
}

async fn open_vault(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<Arc<Vault>> {
    if let Some(config::MasterKeySource::File(path)) = &config.master_key {
        // A missing or unreadable file leaves the vault sealed (S21); one that others can
        // read has leaked already, so keygate refuses to run on it unless told otherwise.
        if path.exists() {
            if let Err(reason) = keygate_vault::check_key_file_permissions(path) {
                if !config.allow_insecure_key_permissions {
                    anyhow::bail!(
                        "master key file {}: {reason}; refusing to start (or pass --allow-insecure-key-permissions)",
                        path.display()
                    );
                }
                tracing::warn!(file = %path.display(), %reason, "master key file readable by others; starting anyway (--allow-insecure-key-permissions)");
            }
        }
    }
    let provider = config
        .master_key
        .as_ref()
        .map(|m| m.provider_with(config.allow_insecure_key_permissions));
    let vault = Vault::open(store.clone(), provider.as_deref(), config.vault)
        .await
        .context("opening the vault")?;
    Ok(Arc::new(vault))
}

/// A running server.
pub struct RunningServer {
    addr: SocketAddr,
    /// The separate HTTPS listener (`[tls] listen`), if any.
    https: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
    /// The admin API's own listener (`[admin] listen`), if any.
    admin: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
    /// The listener for clients with certificates (`[tls.mtls] listen`), if any.
    mtls: Option<(SocketAddr, JoinHandle<std::io::Result<()>>)>,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    checkpoints: JoinHandle<()>,
    admin_bursts: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    webhook_worker: JoinHandle<()>,
    store: Arc<dyn Store>,
    monitor: Option<Arc<monitor::MonitorService>>,
    rotation: Arc<rotation::Rotator>,
    webhooks: Arc<webhooks::Webhooks>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the separate HTTPS listener (`[tls] listen`), if there is one.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(|(a, _)| *a)
    }

    /// The address of the admin API's own listener (`[admin] listen`), if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(a, _)| *a)
    }

    /// The address of the listener for clients with certificates (`[tls.mtls] listen`).
    pub fn mtls_addr(&self) -> Option<SocketAddr> {
        self.mtls.as_ref().map(|(a, _)| *a)
    }

    /// The monitor, when it runs: tests drive its evaluation with
    /// [`monitor::MonitorService::run_once`] after moving their clock.
    pub fn monitor(&self) -> Option<&Arc<monitor::MonitorService>> {
        self.monitor.as_ref()
    }

    /// The rotation scheduler (tests drive [`rotation::Rotator::run_due`] directly).
    pub fn rotation(&self) -> &Arc<rotation::Rotator> {
        &self.rotation
    }

    /// The webhook service.
    pub fn webhooks(&self) -> &Arc<webhooks::Webhooks> {
        &self.webhooks
    }

    /// Stops accepting, finishes in-flight requests, writes a last checkpoint and closes
    /// the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.http.await;
        for (_, h) in self.https.into_iter().chain(self.admin).chain(self.mtls) {
            let _ = h.await;
        }
        let _ = self.admin_bursts.await;
        let _ = self.scheduler.await;
        let _ = self.webhook_worker.await;
        let _ = self.checkpoints.await;
        self.store.close().await;
    }
}

/// Validates everything, opens storage, binds `config.listen` and serves in the
/// background.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let store = open_store(&config).await?;
    start_with_store(config, store).await
}

/// [`start`] on a store the caller opened from `config`'s storage URL (the tests keep a
/// handle on it to simulate faults).
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<RunningServer> {
    start_with_options(config, store, StartOptions::default()).await
}

/// [`start_with_store`] with injected clocks and a rotation notice sink (tests).
pub async fn start_with_options(
    config: Config,
    store: Arc<dyn Store>,
    options: StartOptions,
) -> anyhow::Result<RunningServer> {
    // Certificates first: a bad file stops the start before anything else happens.
    let tls = match &config.tls {
        Some(t) => Some(tls::Tls::start(t).map_err(|e| anyhow::anyhow!("tls: {e}"))?),
        None => None,
    };
    let client_trust = match (&tls, config.tls.as_ref().and_then(|t| t.mtls.as_ref())) {
        (Some(t), Some(m)) => match &m.client_ca {
            Some(ca) => Some(
                t.client_verifier(ca)
                    .map_err(|e| anyhow::anyhow!("tls.mtls.client_ca: {e}"))?,
            ),
            None => None,
        },
        _ => None,
    };
    let vault = open_vault(&config, store.clone()).await?;
    let admins = store
        .admin_credentials()
        .await
        .context("reading admin credentials")?
        .into_iter()
        .map(|c| (c.id, c.token_hash))
        .collect();
    // Redis before anything that limits or checks proofs; unreachable is fatal only when
    // coordination.required.
    let coordinator = match &config.coordination {
        Some(c) => Some(coordination::Coordinator::connect(c.clone()).await?),
        None => None,
    };
    let tokens = match oauth::TokenService::start(
        &config,
        store.clone(),
        vault.clone(),
        coordinator.as_ref(),
    )
    .await
    {
        Ok(t) => Some(Arc::new(t)),
        Err(oauth::StartError::Sealed) => None,
        Err(e) => return Err(anyhow::anyhow!(e).context("starting the token service")),
    };
    // Refused CI logins, per source: as for the admin API, with a limit ten times as
    // high (many jobs share a CI provider's runner addresses).
    let ci_guard = Arc::new(admin_guard::AdminAuthGuard::for_action(
        admin_guard::AdminAuthLimits {
            limit: config.admin_auth.limit.saturating_mul(10),
            ..config.admin_auth
        },
        "ci.login",
    ));
    let ci = match &tokens {
        Some(t) => Some(Arc::new(
            ci::CiService::start(
                &config.ci,
                store.clone(),
                t.audit_key.clone(),
                ci_guard.clone(),
            )
            .await
            .context("starting the CI service")?,
        )),
        None => None,
    };
    let settings = &config.monitor;
    // With an injected clock, the tests drive the monitor's evaluation and the rotation
    // passes themselves: a background pass would race them (its first runs at once).
    let background = options.clock.is_none();
    let clock: Arc<dyn keygate_auth::clock::Clock> = options
        .clock
        .unwrap_or_else(|| Arc::new(keygate_auth::clock::SystemClock));
    let monitor = match &tokens {
        Some(_) if settings.enabled => {
            let geo = match &settings.geoip_db {
                Some(path) => Some(
                    keygate_monitor::geo::GeoDb::open(path)
                        .with_context(|| format!("monitor.geoip_db: {}", path.display()))?,
                ),
                None => {
                    tracing::info!(
                        "monitor: no GeoIP database (monitor.geoip_db): the default new-network rule and impossible travel are off; a configured new_network rule works on address prefixes"
                    );
                    None
                }
            };
            let m = Arc::new(keygate_monitor::Monitor::new(
                settings.clone(),
                geo,
                clock.clone(),
            ));
            // Every replica applies the monitor's throttles, each to its share.
            let replicas = coordinator.as_ref().map_or(1, |c| c.replicas());
            Some(Arc::new(monitor::MonitorService::new(
                m,
                clock.clone(),
                Arc::new(keygate_proxy::throttle::Throttles::shared(replicas)),
                store.clone(),
            )))
        }
        _ => None,
    };
    let proxy_metrics = Arc::new(keygate_proxy::usage::ProxyMetrics::new());
    let proxy = match &tokens {
        Some(t) => Some(Arc::new(
            proxy::ProxyState::start(
                &config,
                proxy::ProxyParts {
                    store: store.clone(),
                    vault: vault.clone(),
                    tokens: t.clone(),
                    monitor: monitor.clone(),
                    clock: clock.clone(),
                    metrics: proxy_metrics.clone(),
                    coordinator: coordinator.clone(),
                },
            )
            .await
            .context("starting the proxy")?,
        )),
        None => None,
    };
    let admin_guard = Arc::new(admin_guard::AdminAuthGuard::new(config.admin_auth));
    let webhooks = Arc::new(webhooks::Webhooks::new(config.webhooks.clone()));
    let mut sinks: Vec<Arc<dyn rotation::RotationNotify>> = vec![
        webhooks.clone(),
        Arc::new(monitor::RotationAlerts::new(store.clone())),
    ];
    sinks.extend(options.rotation_notify);
    let rotator = Arc::new(rotation::Rotator::new(
        vault.clone(),
        store.clone(),
        config.rotation.clone(),
        clock,
        Arc::new(rotation::TeeNotify(sinks)),
    ));
    if let (Some(m), Some(c)) = (&monitor, &coordinator) {
        m.set_peers(Arc::new(coordination::RedisMonitorPeers::new(c.clone())));
    }
    if let (Some(m), Some(px)) = (&monitor, &proxy) {
        m.set_notify(webhooks.clone());
        m.set_rotator(Arc::new(monitor::RouteKeyRotation {
            proxy: px.clone(),
            rotator: rotator.clone(),
        }));
    }
    let config = Arc::new(config);
    let state = AppState {
        vault: vault.clone(),
        store: store.clone(),
        admins: Arc::new(admins),
        admin_guard: admin_guard.clone(),
        config: config.clone(),
        tokens: tokens.clone(),
        ci,
        tls: tls.clone(),
        client_trust,
        coordinator: coordinator.clone(),
        proxy: proxy.clone(),
        proxy_metrics,
        monitor: monitor.clone(),
        webhooks: webhooks.clone(),
        rotation: rotator.clone(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let entry = Arc::new(proxy::ProxyEntry::new(&state));
    let app = router(state);
    let trusted: Arc<[ipnet::IpNet]> = config.trusted_proxies.clone().into();
    // `listen` speaks HTTPS when [tls] has certificates and no listener of its own.
    let main = Listener {
        acceptor: tls
            .as_ref()
            .filter(|_| config.tls.as_ref().is_some_and(|t| t.listen.is_none()))
            .map(|t| t.acceptor().clone()),
        admin: false,
        trusted: trusted.clone(),
    };
    let (addr, http) = match config.http_runtime {
        config::HttpRuntime::Shared => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("binding {}", config.listen))?;
            let addr = listener.local_addr()?;
            let served = serve_http1(listener, app.clone(), entry.clone(), main, stop_rx.clone());
            (addr, tokio::spawn(served))
        }
        config::HttpRuntime::PerCore => {
            serve_per_core(
                config.listen,
                app.clone(),
                entry.clone(),
                main,
                stop_rx.clone(),
            )
            .await?
        }
    };
    // A separate HTTPS listener ([tls] listen), beside the plain one.
    let https = match (config.tls.as_ref().and_then(|t| t.listen), &tls) {
        (Some(listen), Some(t)) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen} (tls.listen)"))?;
            let https_addr = listener.local_addr()?;
            let how = Listener {
                acceptor: Some(t.acceptor().clone()),
                admin: false,
                trusted: trusted.clone(),
            };
            let served = serve_http1(listener, app.clone(), entry.clone(), how, stop_rx.clone());
            Some((https_addr, tokio::spawn(served)))
        }
        _ => None,
    };
    // The listener for clients with certificates ([tls.mtls], RFC 8705): asks each client
    // for one, requires none, serves what `listen` serves.
    let mtls_https = match (config.tls.as_ref().and_then(|t| t.mtls.as_ref()), &tls) {
        (Some(m), Some(t)) => {
            let acceptor = t
                .acceptor_requesting_client_certs()
                .map_err(|e| anyhow::anyhow!("tls.mtls: {e}"))?;
            let listener = tokio::net::TcpListener::bind(m.listen)
                .await
                .with_context(|| format!("binding {} (tls.mtls.listen)", m.listen))?;
            let mtls_addr = listener.local_addr()?;
            let how = Listener {
                acceptor: Some(acceptor),
                admin: false,
                trusted: trusted.clone(),
            };
            let served = serve_http1(listener, app.clone(), entry.clone(), how, stop_rx.clone());
            Some((mtls_addr, tokio::spawn(served)))
        }
        _ => None,
    };
    // The admin API's own listener ([admin] listen): TLS with the [tls] certificate when
    // there is one, client certificates from `client_ca` when set.
    let admin_https = match &config.admin_listener {
        Some(a) => {
            let acceptor = match (&tls, &a.client_ca) {
                (Some(t), Some(ca)) => Some(
                    t.acceptor_requiring_client_certs(ca)
                        .map_err(|e| anyhow::anyhow!("admin.client_ca: {e}"))?,
                ),
                (Some(t), None) => Some(t.acceptor().clone()),
                (None, _) => None,
            };
            let listener = tokio::net::TcpListener::bind(a.listen)
                .await
                .with_context(|| format!("binding {} (admin.listen)", a.listen))?;
            let admin_addr = listener.local_addr()?;
            let how = Listener {
                acceptor,
                admin: true,
                trusted: trusted.clone(),
            };
            let served = serve_http1(listener, app, entry, how, stop_rx.clone());
            Some((admin_addr, tokio::spawn(served)))
        }
        None => None,
    };
    match &tls {
        Some(t) => {
            tokio::spawn(t.clone().watch(stop_rx.clone()));
        }
        // SIGHUP (`systemctl reload`) reloads certificates; without any it must not end
        // the process, as the signal's default would.
        None => {
            tokio::spawn(ignore_hangup(stop_rx.clone()));
        }
    }
    if let Some(c) = &coordinator {
        tokio::spawn(c.clone().fan_out(store.clone(), stop_rx.clone()));
    }
    if let Some(p) = &proxy {
        tokio::spawn(p.clone().follow_routes(store.clone(), stop_rx.clone()));
    }
    let checkpoints = tokio::spawn(checkpoint_loop(
        store.clone(),
        vault.clone(),
        config.checkpoint_file.clone(),
        config.checkpoint_interval,
        stop_rx.clone(),
    ));
    let admin_bursts = tokio::spawn(admin_burst_loop(
        store.clone(),
        vec![admin_guard, ci_guard],
        stop_rx.clone(),
    ));
    let scheduler = if background {
        tokio::spawn(rotator.clone().run(stop_rx.clone()))
    } else {
        tokio::spawn(async {})
    };
    let webhook_worker = webhooks.spawn(vault.clone(), store.clone(), stop_rx.clone());
    if let Some(m) = &monitor {
        if let Some(t) = &tokens {
            let _ = t.monitor.set(m.monitor.clone());
        }
        if background {
            tokio::spawn(monitor::run(m.clone(), stop_rx.clone()));
        }
    }
    if let Some(t) = tokens {
        tokio::spawn(replay_horizon_loop(t.clone(), stop_rx.clone()));
        tokio::spawn(follow_keys(t.clone(), stop_rx.clone()));
        tokio::spawn(token_maintenance(t, stop_rx));
    }
    match vault.sealed() {
        Some(reason) => tracing::warn!(%addr, %reason, "keygate listening SEALED"),
        None => tracing::info!(%addr, backend = store.backend(), "keygate listening"),
    }
    Ok(RunningServer {
        addr,
        https,
        admin: admin_https,
        mtls: mtls_https,
        stop,
        http,
        checkpoints,
        admin_bursts,
        scheduler,
        webhook_worker,
        store,
        monitor,
        rotation: rotator,
        webhooks,
    })
}

/// Serves HTTP/1.1 on `listener` until `stop` (with `tls`: HTTPS, HTTP/2 by ALPN or
/// HTTP/1.1). Each HTTP/1.1 connection is read through
/// keygate-proxy's `StrictHttp1`, which refuses ambiguous framing (Content-Length with
/// Transfer-Encoding, repeated or invalid Content-Length, CR/LF/NUL in fields) with a 400
/// and a closed connection before the HTTP parser could quietly repair it (S28). No
/// HTTP/2 cleartext and no upgrades (S27). `/proxy/…` calls go from the connection
/// straight to the gatekeeper ([`proxy::serve`]); everything else to the router.
async fn serve_http1(
    listener: tokio::net::TcpListener,
    app: Router,
    entry: Arc<proxy::ProxyEntry>,
    how: Listener,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let Some((stream, peer)) = accept(&listener, &mut stop).await else {
            break;
        };
        serve_connection(&graceful, stream, peer, &app, &entry, &how);
    }
    drain(graceful).await;
    Ok(())
}

/// The next connection, or `None` once `stop` is set.
async fn accept(
    listener: &tokio::net::TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Which listener a request came in on, and the client certificate its connection
/// presented (admin listener with `[admin] client_ca`). Every routed request carries it as
/// an extension.
#[derive(Clone, Debug, Default)]
pub struct Served {
    /// The admin API's own listener (`[admin] listen`).
    pub admin_listener: bool,
    /// The client certificate the connection presented, if any: for the admin's audit
    /// actor, client authentication and certificate-bound tokens (RFC 8705).
    pub peer_cert: Option<Arc<mtls::PeerCertificate>>,
}

/// How a listener's connections are served.
#[derive(Clone)]
struct Listener {
    /// TLS handshake first (None: plain HTTP/1.1).
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The admin API's own listener.
    admin: bool,
    /// Load balancers whose `X-Forwarded-For` names the client (`[http] trusted_proxies`).
    trusted: Arc<[ipnet::IpNet]>,
}

/// The per-connection service: `/proxy/…` to the gatekeeper, the rest to the router with
/// the peer and `served` as extensions; HSTS on TLS connections.
fn connection_service(
    app: &Router,
    entry: &Arc<proxy::ProxyEntry>,
    peer: SocketAddr,
    hsts: bool,
    served: Served,
    trusted: Arc<[ipnet::IpNet]>,
) -> impl hyper::service::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = axum::http::Response<proxy::ServedBody>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    use axum::extract::ConnectInfo;
    use tower::ServiceExt;
    let app = app.clone();
    let entry = Arc::clone(entry);
    // The admin listener serves the admin API only; the gatekeeper is not on it.
    let gatekeeper = !served.admin_listener;
    hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        // Each request takes only what its path needs: the gatekeeper's entry or the
        // router.
        let route = if gatekeeper && req.uri().path().starts_with("/proxy/") {
            Err(Arc::clone(&entry))
        } else {
            Ok((app.clone(), served.clone()))
        };
        let mut req = req;
        // Behind a trusted load balancer the client is in X-Forwarded-For.
        let peer = client_address(peer, req.headers(), &trusted);
        if let (Err(_), Some(cert)) = (&route, &served.peer_cert) {
            // The gatekeeper binds certificate-bound tokens to this (RFC 8705 §3).
            req.extensions_mut().insert(cert.thumbprint().clone());
        }
        async move {
            let mut response = match route {
                Err(entry) => proxy::serve(&entry, req, peer).await,
                Ok((app, served)) => {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.extensions_mut().insert(served);
                    // Boxed so the router's future does not size every connection's
                    // request future, the proxied ones included.
                    let response = Box::pin(app.oneshot(req)).await?;
                    response.map(proxy::ServedBody::App)
                }
            };
            if hsts {
                response.headers_mut().insert(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static(tls::HSTS),
                );
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    })
}

/// The client's address: the connection's peer, unless that peer is a trusted load
/// balancer (`[http] trusted_proxies`); then the rightmost `X-Forwarded-For` entry that is
/// not itself a trusted proxy (entries to its left could be written by anyone). An
/// unreadable entry on the way stops the walk at the peer: nothing the client wrote is
/// taken on trust.
fn client_address(
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> SocketAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer.ip()) {
        return peer;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        hops.extend(text.split(',').map(str::trim));
    }
    let mut client = peer.ip();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<std::net::IpAddr>() else {
            return peer;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    SocketAddr::new(client, 0)
}

/// Logs SIGHUP (nothing to reload without `[tls]`) instead of dying of it.
async fn ignore_hangup(mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => tracing::info!("SIGHUP: nothing to reload (no [tls] certificates)"),
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = stop.wait_for(|s| *s).await;
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection on the current runtime (see [`serve_http1`]): plain HTTP/1.1, or
/// with TLS the handshake first, then HTTP/2 or HTTP/1.1 as ALPN decided.
fn serve_connection(
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: &Router,
    entry: &Arc<proxy::ProxyEntry>,
    listener: &Listener,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let http1 = || {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        b
    };
    let Some(acceptor) = listener.acceptor.clone() else {
        let served = Served {
            admin_listener: listener.admin,
            peer_cert: None,
        };
        let service = connection_service(app, entry, peer, false, served, listener.trusted.clone());
        let conn = http1().serve_connection(
            TokioIo::new(keygate_proxy::h1guard::StrictHttp1::new(stream)),
            service,
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
        return;
    };
    let watcher = graceful.watcher();
    let (app, entry, admin, trusted) = (
        app.clone(),
        Arc::clone(entry),
        listener.admin,
        listener.trusted.clone(),
    );
    tokio::spawn(async move {
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let session = stream.get_ref().1;
        let chain = session.peer_certificates().unwrap_or_default();
        let served = Served {
            admin_listener: admin,
            peer_cert: mtls::PeerCertificate::from_chain(chain).map(Arc::new),
        };
        let h2 = session.alpn_protocol() == Some(b"h2".as_slice());
        let service = connection_service(&app, &entry, peer, true, served, trusted);
        let result = if h2 {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            // Stated limits rather than defaults that move between releases: streams a
            // client may open at once, header block size (HTTP/1.1's is hyper's 400 KiB
            // buffer; 64 KiB is ample for a token and a proof), resets a client may
            // provoke before the connection is closed (rapid reset), and pings that reap
            // connections whose peer vanished.
            b.timer(TokioTimer::new())
                .max_concurrent_streams(128)
                .max_header_list_size(64 * 1024)
                .max_pending_accept_reset_streams(32)
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10));
            watcher
                .watch(b.serve_connection(TokioIo::new(stream), service))
                .await
        } else {
            watcher
                .watch(http1().serve_connection(
                    TokioIo::new(keygate_proxy::h1guard::StrictHttp1::new(stream)),
                    service,
                ))
                .await
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection closed with an error");
        }
    });
}

/// Lets open connections finish after a stop, for at most 10 s.
async fn drain(graceful: hyper_util::server::graceful::GracefulShutdown) {
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10s; stopping anyway");
        }
    }
}

/// `[http] runtime = "per_core"`: one listener on `listen`, accepted on the shared
/// runtime and dealt round-robin to one single-threaded runtime per core, each on a
/// thread of its own, where the connection is served from then on (its tasks never
/// change threads). Dealt rather than split by the kernel with `SO_REUSEPORT`, which hashes
/// connections onto listeners and can leave a core short of work. Returns the bound
/// address and a handle that ends when the acceptor and every serving thread stopped.
async fn serve_per_core(
    listen: SocketAddr,
    app: Router,
    entry: Arc<proxy::ProxyEntry>,
    how: Listener,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    type Dealt = (std::net::TcpStream, SocketAddr);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let mut workers = Vec::with_capacity(cores);
    let mut threads = Vec::with_capacity(cores);
    for i in 0..cores {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Dealt>();
        workers.push(tx);
        let app = app.clone();
        let entry = Arc::clone(&entry);
        let how = how.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a per-core runtime")?;
        let thread = std::thread::Builder::new()
            .name(format!("keygate-http-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
                    // Ends when the acceptor stops dealing (on stop).
                    while let Some((stream, peer)) = rx.recv().await {
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => {
                                serve_connection(&graceful, stream, peer, &app, &entry, &how)
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot adopt a connection"),
                        }
                    }
                    drain(graceful).await;
                })
            })
            .context("starting a per-core serving thread")?;
        threads.push(thread);
    }
    let joined = tokio::spawn(async move {
        let mut stop = stop;
        let mut next = 0usize;
        while let Some((stream, peer)) = accept(&listener, &mut stop).await {
            // Leaves this runtime's reactor; the worker registers it with its own.
            match stream.into_std() {
                Ok(stream) => {
                    if let Some(worker) = workers.get(next % workers.len()) {
                        let _ = worker.send((stream, peer));
                    }
                    next = next.wrapping_add(1);
                }
                Err(e) => tracing::warn!(error = %e, "cannot hand a connection over"),
            }
        }
        drop(workers);
        tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            for thread in threads {
                if thread.join().is_err() {
                    result = Err(std::io::Error::other("a serving thread panicked"));
                }
            }
            result
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    });
    Ok((addr, joined))
}

/// Signs the chain head into the checkpoint file every `interval`, and once more on stop.
/// Writes the aggregated entry of each burst of failed admin authentication (and refused
/// CI logins) whose window has closed, once a second, and every pending one at shutdown.
async fn admin_burst_loop(
    store: Arc<dyn Store>,
    guards: Vec<Arc<admin_guard::AdminAuthGuard>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let now = now_ms();
        for burst in guards.iter().flat_map(|g| g.take_closed(now, stopping)) {
            if let Err(e) = store.append_audit(burst.event(), now).await {
                tracing::error!(error = %e, count = burst.count, "audit of repeated admin authentication failures failed");
            }
        }
        if stopping {
            return;
        }
    }
}

async fn checkpoint_loop(
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    path: PathBuf,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let Some(key) = vault.keyring().map(|k| k.checkpoint.clone()) else {
        return;
    };
    let mut last = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        match audit_ops::write_checkpoint(store.as_ref(), &path, &key, last, now_ms()).await {
            Ok(Some(seq)) => {
                last = Some(seq);
                tracing::debug!(seq, "audit checkpoint written");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, file = %path.display(), "audit checkpoint failed")
            }
        }
        if stopping {
            return;
        }
    }
}

/// Every second, while the DPoP replay cache is in memory: records how late a proof this
/// process may accept is dated, so the next process knows which proofs need its nonce.
async fn replay_horizon_loop(tokens: Arc<oauth::TokenService>, mut stop: watch::Receiver<bool>) {
    if !tokens.replay.in_process() {
        return;
    }
    let mut tick = tokio::time::interval(oauth::HORIZON_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = tokens.record_replay_horizon().await {
            tracing::error!(error = %e, "recording the DPoP replay horizon failed");
        }
    }
}

/// Reads the signing keys again when the store's change epoch moves (with
/// `[coordination]`, as soon as another replica announces a change, such as a key
/// rotation), at most once a second; the maintenance task also reads them every minute.
async fn follow_keys(tokens: Arc<oauth::TokenService>, mut stop: watch::Receiver<bool>) {
    let mut seen = tokens.store.change_epoch();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let epoch = tokens.store.change_epoch();
        if epoch == seen {
            continue;
        }
        seen = epoch;
        if let Err(e) = tokens.reload_keys().await {
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
    }
}

/// Once a minute: scheduled signing-key rotation (S06), picking up keys another replica
/// rotated, and dropping expired DPoP (and CI `jti`) replay entries, expired machine tokens
/// and old quota counters.
async fn token_maintenance(tokens: Arc<oauth::TokenService>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = tokens.reload_keys().await {
            tracing::error!(error = %e, "reloading signing keys failed");
        }
        match tokens.rotate_keys(false, "system").await {
            Ok(Some(what)) => tracing::info!(%what, "signing keys rotated on schedule"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "scheduled key rotation failed"),
        }
        if let Err(e) = tokens.store.purge_dpop(now_ms()).await {
            tracing::error!(error = %e, "purging DPoP replay entries failed");
        }
        if let Err(e) = tokens.store.purge_machine_tokens(now_ms()).await {
            tracing::error!(error = %e, "purging expired machine tokens failed");
        }
        // Quota windows that ended more than a day ago are of no use.
        if let Err(e) = tokens.store.purge_quotas(now_ms() / 1000 - 86_400).await {
            tracing::error!(error = %e, "purging quota counters failed");
        }
    }
}

/// What `keygate init` created.
pub struct InitOutput {
    pub config_path: PathBuf,
    pub master_key_path: PathBuf,
    pub data_dir: PathBuf,
    pub admin_token: SecretString,
}

/// Creates `DIR/keygate.toml`, `DIR/master.key` (mode 0600) and `DIR/keygate-data`,
/// initialises the store and creates the first admin credential. Refuses to touch an
/// existing set-up.
pub async fn init_dir(dir: &Path, listen: SocketAddr) -> anyhow::Result<InitOutput> {
    init_dir_with_storage(dir, listen, None).await
}

/// [`init_dir`] with another storage URL written into the configuration (e.g. a
/// PostgreSQL database instead of the SQLite default). That store is migrated and
/// initialised; one that already holds a set-up is refused before any file is written.
pub async fn init_dir_with_storage(
    dir: &Path,
    listen: SocketAddr,
    storage_url: Option<&str>,
) -> anyhow::Result<InitOutput> {
    let config_path = dir.join("keygate.toml");
    let master_key_path = dir.join("master.key");
    let data_dir = dir.join("keygate-data");
    for existing in [&config_path, &master_key_path, &data_dir.join("keygate.db")] {
        if existing.exists() {
            anyhow::bail!(
                "{} already exists: refusing to overwrite an existing set-up",
                existing.display()
            );
        }
    }
    let mut template = Config::template(listen);
    if let Some(url) = storage_url {
        template = template.replace(
            "url = \"sqlite://./keygate-data/keygate.db\"",
            &format!("url = {}", toml::Value::String(url.to_owned())),
        );
    }
    // Validated before anything is created; the URL itself never goes into an error, as it
    // may hold a database password.
    let config = Config::from_toml(&template, dir, std::iter::empty())?;
    let created_data_dir = !data_dir.exists();
    let result = init_files_and_store(
        &config,
        &template,
        &config_path,
        &master_key_path,
        &data_dir,
    )
    .await;
    if result.is_err() {
        // Leave nothing that would make a corrected second attempt refuse.
        let _ = std::fs::remove_file(&config_path);
        let _ = std::fs::remove_file(&master_key_path);
        if created_data_dir {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
    }
    let admin_token = result?;
    Ok(InitOutput {
        config_path,
        master_key_path,
        data_dir,
        admin_token,
    })
}

async fn init_files_and_store(
    config: &Config,
    template: &str,
    config_path: &Path,
    master_key_path: &Path,
    data_dir: &Path,
) -> anyhow::Result<SecretString> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let store = SqlStore::connect(&config.storage_url)
        .await
        .context("opening the store named by storage.url")?;
    // A second set-up would bring a second master key the store's data was not sealed
    // with; refuse it before writing one.
    let existing = store.system_keys().await;
    if !matches!(existing, Ok(None)) {
        store.close().await;
        existing.context("reading the store named by storage.url")?;
        anyhow::bail!(
            "the store named by storage.url is already initialised: refusing to set it up again (serve it with its existing configuration and master key)"
        );
    }
    let master = MasterKey::generate();
    write_key_file(master_key_path, &master)
        .with_context(|| format!("writing {}", master_key_path.display()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        // storage.url may carry a database password.
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(config_path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, template.as_bytes()))
        .with_context(|| format!("writing {}", config_path.display()))?;
    let (admin_token, credential) = admin_token::generate("first admin (keygate init)");
    let kek = SoftKek::new(&master, format!("file {}", master_key_path.display()));
    let initialized = Vault::initialize(&store, &kek, credential)
        .await
        .context("initialising the vault");
    store.close().await;
    initialized?;
    Ok(admin_token)
}
