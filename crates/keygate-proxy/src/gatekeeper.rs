//! The gatekeeper: one proxied call's whole way through keygate, every check once, every
//! refusal counted.
//!
//! [`Gatekeeper::handle`] takes the app's request and the peer's address and runs the
//! pipeline whose types make each check a precondition of the next:
//!
//! 1. framing ([`CheckedRequest`], S28) and the one path normaliser ([`ProxyTarget`], S29);
//! 2. the route, by name, from the live [`RouteTable`];
//! 3. the token, its DPoP proof and revocation through the [`AccessVerifier`]
//!    → [`VerifiedAccess`];
//! 4. the allow-list and scopes → [`AuthorizedCall`](crate::AuthorizedCall) (S30);
//! 5. the monitor's throttles, if any;
//! 6. rate, cost budget and quota → [`RatePermit`](crate::RatePermit);
//! 7. the route's key, from the [`KeySource`] through a short cache of [`RouteKey`]s;
//! 8. [`Forwarder::forward`]: clean headers, inject the key, stream, redact, meter.
//!
//! What the gatekeeper does not own comes in through two traits the server implements:
//! [`AccessVerifier`] (the token service) and [`KeySource`] (the vault). Everything else —
//! routes, limits, the forwarder, the key cache, usage and metrics — lives here, so a
//! refusal of any kind, 401 included, is answered and counted in one place.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body;
use keygate_auth::clock::Clock;
use keygate_auth::error::AuthError;
use keygate_auth::ids::IdMap;
use keygate_auth::jwk::CertThumbprint;
use keygate_auth::resource::VerifiedAccess;
use secrecy::SecretString;

use crate::error::ProxyError;
use crate::forward::{BoxError, Forwarder, ForwarderConfig, ProxyBody, TlsSetupError};
use crate::framing::CheckedRequest;
use crate::headers::ForwardedInfo;
use crate::key::RouteKey;
use crate::limit::LimitGate;
use crate::path::{ProxyTarget, RouteName};
use crate::route::{Route, RouteTable};
use crate::throttle::Throttles;
use crate::usage::{ProxyMetrics, StatusClass, UsageEvent, UsageSink};

/// What the token check sees of a request: nothing it does not need.
#[derive(Debug)]
pub struct AccessRequest<'a> {
    /// The request method (the proof's `htm`).
    pub method: &'a Method,
    /// The request target exactly as received, path and query (the proof's `htu`).
    pub target: &'a str,
    /// The request's header fields (`Authorization`, `DPoP`).
    pub headers: &'a HeaderMap,
    /// The app's address, for the monitor's signals.
    pub peer: IpAddr,
    /// The client certificate the connection presented (mutual TLS), if any: the
    /// server puts a [`CertThumbprint`] in the request's extensions.
    pub client_cert: Option<&'a CertThumbprint>,
}

/// Checks a request's access token, its DPoP proof and revocation (keygate-auth's
/// `verify_request` behind the token service, in the server).
#[async_trait::async_trait]
pub trait AccessVerifier: Send + Sync {
    /// A [`VerifiedAccess`], or the refusal to answer with (401, 400, 403 or 503).
    async fn verify(&self, request: AccessRequest<'_>) -> Result<VerifiedAccess, AuthError>;
}

/// The route's key could not be read (deleted, destroyed, sealed, storage down).
#[derive(Debug, thiserror::Error)]
#[error("the route's key is unavailable: {0}")]
pub struct KeyUnavailable(pub String);

/// Where route keys come from (the vault, in the server).
#[async_trait::async_trait]
pub trait KeySource: Send + Sync {
    /// A number that changes whenever a key may have changed through this process (the
    /// store's change epoch): a cached key from an older epoch is never used.
    fn epoch(&self) -> u64;

    /// The current version of the secret named `secret`.
    async fn key(&self, secret: &str) -> Result<SecretString, KeyUnavailable>;
}

/// How the gatekeeper presents itself.
#[derive(Clone, Debug)]
pub struct GatekeeperConfig {
    /// The path prefix of proxied calls, with both slashes (`/proxy/`).
    pub prefix: &'static str,
    /// `https` or `http`: the scheme of the public URL (`X-Forwarded-Proto`).
    pub proto: &'static str,
    /// The host of the public URL (`X-Forwarded-Host`), never the request's.
    pub host: HeaderValue,
    /// How long a key read from the [`KeySource`] is reused when its epoch has not moved
    /// (a change made by another replica is seen after at most this long).
    pub key_staleness: Duration,
    /// Upstream connection settings.
    pub forwarder: ForwarderConfig,
}

/// The monitor's throttles and the clock their deadlines are read against.
struct ThrottleCheck {
    throttles: Arc<Throttles>,
    clock: Arc<dyn Clock>,
}

/// Owns the proxy pipeline: route table, limit gate, forwarder and key cache.
pub struct Gatekeeper {
    prefix: &'static str,
    routes: RwLock<Arc<RouteTable>>,
    verifier: Arc<dyn AccessVerifier>,
    gate: LimitGate,
    throttles: Option<ThrottleCheck>,
    keys: KeyCache,
    forwarder: Forwarder,
    forwarded: (&'static str, HeaderValue),
    usage: Arc<dyn UsageSink>,
    metrics: Arc<ProxyMetrics>,
}

impl std::fmt::Debug for Gatekeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatekeeper")
            .field("prefix", &self.prefix)
            .field("routes", &self.routes().len())
            .finish_non_exhaustive()
    }
}

impl Gatekeeper {
    /// A gatekeeper with no routes yet ([`Gatekeeper::set_routes`] installs them). Usage
    /// events go to `usage` (forwarded calls and calls refused after the token check);
    /// every answer is counted in `metrics`.
    pub fn new(
        config: GatekeeperConfig,
        verifier: Arc<dyn AccessVerifier>,
        keys: Arc<dyn KeySource>,
        gate: LimitGate,
        usage: Arc<dyn UsageSink>,
        metrics: Arc<ProxyMetrics>,
    ) -> Self {
        Self {
            prefix: config.prefix,
            routes: RwLock::new(Arc::new(RouteTable::default())),
            verifier,
            gate,
            throttles: None,
            keys: KeyCache {
                source: keys,
                staleness: config.key_staleness,
                cached: Mutex::default(),
            },
            forwarder: Forwarder::new(config.forwarder, usage.clone(), metrics.clone()),
            forwarded: (config.proto, config.host),
            usage,
            metrics,
        }
    }

    /// Also applies the monitor's throttles, read against `clock`.
    #[must_use]
    pub fn with_throttles(mut self, throttles: Arc<Throttles>, clock: Arc<dyn Clock>) -> Self {
        self.throttles = Some(ThrottleCheck { throttles, clock });
        self
    }

    /// Prepares every route's upstream client (loading its TLS material) and, if all
    /// succeed, makes `table` the live route table. On error nothing changes.
    pub fn set_routes(&self, table: RouteTable) -> Result<(), (RouteName, TlsSetupError)> {
        for route in table.iter() {
            self.forwarder
                .prepare(route)
                .map_err(|e| (route.name().clone(), e))?;
        }
        if let Ok(mut live) = self.routes.write() {
            *live = Arc::new(table);
        }
        // A route's injection may have changed, and with it the key's prepared forms.
        self.keys.clear();
        Ok(())
    }

    /// The live route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .map(|t| Arc::clone(&t))
            .unwrap_or_default()
    }

    /// Runs one call through the pipeline. Never fails: a refusal is an answer (status,
    /// generic body, `Retry-After` on 429s, `Connection: close` on framing errors), logged
    /// and counted.
    pub async fn handle<B>(&self, request: Request<B>, peer: IpAddr) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The pipeline's future is several kilobytes (every step's state, the upstream
        // exchange included). Boxed here, once, it is not copied again by each layer that
        // holds this future (the server's connection future, hyper's dispatcher): one
        // allocation instead of a few multi-kilobyte copies per call.
        match Box::pin(self.pipeline(request, peer)).await {
            Ok(response) => response,
            Err(refusal) => refusal.answer(self),
        }
    }

    async fn pipeline<B>(
        &self,
        request: Request<B>,
        peer: IpAddr,
    ) -> Result<Response<ProxyBody>, Refusal>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let request = CheckedRequest::new(request).map_err(|e| Refusal::early(e.into()))?;
        let raw = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let target = ProxyTarget::parse(self.prefix, raw).map_err(|e| Refusal::early(e.into()))?;
        let routes = self.routes();
        let route = routes
            .get(target.route())
            .cloned()
            .ok_or_else(|| Refusal::early(ProxyError::UnknownRoute))?;
        drop(routes);
        let access = self
            .verifier
            .verify(AccessRequest {
                method: request.method(),
                target: raw,
                headers: request.headers(),
                peer,
                client_cert: request.extensions().get::<CertThumbprint>(),
            })
            .await
            .map_err(|e| Refusal::routed(route.name(), ProxyError::from(e)))?;
        // From here on the call has a user: a refusal is also usage (the monitor sees
        // traffic pushing past its limits as traffic).
        let refused = |e: ProxyError| Refusal::used(&access, route.name(), peer, e);
        let call = route
            .authorize(&access, request.method(), &target)
            .map_err(refused)?;
        if let Some(t) = &self.throttles {
            t.throttles
                .check(&access, peer, t.clock.now_ms())
                .map_err(refused)?;
        }
        let permit = self.gate.admit(&call, peer).await.map_err(refused)?;
        let key = self.keys.get(&route).await.map_err(|e| {
            // Deleted, destroyed or sealed: never forward without the key.
            tracing::warn!(route = %route.name(), error = %e, "route's key unavailable");
            Refusal::routed(
                route.name(),
                ProxyError::Unavailable("the route's key is unavailable"),
            )
        })?;
        let forwarded = ForwardedInfo {
            client_ip: peer,
            proto: self.forwarded.0,
            host: self.forwarded.1.clone(),
        };
        // The forwarder records usage and counts its own failures.
        self.forwarder
            .forward(&access, call, permit, key, request, &forwarded)
            .await
            .map_err(Refusal::counted)
    }
}

/// A refused call, with what its answer must record.
struct Refusal {
    error: ProxyError,
    route: Option<RouteName>,
    /// The usage event of a call refused after its token was verified.
    usage: Option<UsageEvent>,
    /// Already counted and recorded (by the forwarder).
    counted: bool,
}

impl Refusal {
    fn early(error: ProxyError) -> Self {
        Self {
            error,
            route: None,
            usage: None,
            counted: false,
        }
    }

    fn routed(route: &RouteName, error: ProxyError) -> Self {
        Self {
            error,
            route: Some(route.clone()),
            usage: None,
            counted: false,
        }
    }

    fn used(access: &VerifiedAccess, route: &RouteName, peer: IpAddr, error: ProxyError) -> Self {
        let usage = UsageEvent {
            user: access.user().clone(),
            client: access.client().clone(),
            session: access.session().clone(),
            jkt: access.jkt().cloned(),
            client_ip: peer,
            cost: 0,
            route: route.clone(),
            status_class: StatusClass::of(error.status()),
            latency: Duration::ZERO,
            fault: Some(error.fault()),
            tier: crate::route::effective_tier(access.tier()),
        };
        Self {
            error,
            route: Some(route.clone()),
            usage: Some(usage),
            counted: false,
        }
    }

    fn counted(error: ProxyError) -> Self {
        Self {
            error,
            route: None,
            usage: None,
            counted: true,
        }
    }

    fn answer(self, gatekeeper: &Gatekeeper) -> Response<ProxyBody> {
        if !self.counted {
            gatekeeper.metrics.refused(self.route.as_ref(), &self.error);
            if let Some(event) = self.usage {
                gatekeeper.usage.record(event);
            }
        }
        log_refusal(&self.error);
        self.error.to_response()
    }
}

fn log_refusal(e: &ProxyError) {
    match e {
        ProxyError::Access(auth) => tracing::info!(
            code = e.code(),
            fault = e.fault().as_str(),
            reason = %auth.reason(),
            "proxy call refused"
        ),
        _ => tracing::info!(
            code = e.code(),
            fault = e.fault().as_str(),
            "proxy call refused"
        ),
    }
}

/// Answers a proxied call when there is no gatekeeper (the vault is sealed), counted in
/// the same metrics.
pub fn refuse_unavailable(metrics: &ProxyMetrics) -> Response<ProxyBody> {
    let e = ProxyError::Unavailable("the vault is sealed");
    metrics.refused(None, &e);
    log_refusal(&e);
    e.to_response()
}

/// Route keys as last read from the [`KeySource`], prepared for their route
/// ([`RouteKey`]), with the source's epoch: reused for at most the configured staleness and
/// never across a change made through this process. Keyed by route (a route's injection
/// decides the prepared forms); emptied when the routes change.
struct KeyCache {
    source: Arc<dyn KeySource>,
    staleness: Duration,
    cached: Mutex<IdMap<String, CachedKey>>,
}

/// A prepared key, the source's epoch when it was read, and when.
type CachedKey = (Arc<RouteKey>, u64, Instant);

impl KeyCache {
    async fn get(&self, route: &Arc<Route>) -> Result<Arc<RouteKey>, KeyUnavailable> {
        let epoch = self.source.epoch();
        if let Ok(cache) = self.cached.lock() {
            if let Some((key, e, at)) = cache.get(route.name().as_str()) {
                // A key prepared for an earlier version of the route (replaced while this
                // one was being read) is not used.
                if *e == epoch && at.elapsed() < self.staleness && key.is_for(route) {
                    return Ok(Arc::clone(key));
                }
            }
        }
        let secret = self.source.key(route.secret_name()).await?;
        let key = Arc::new(RouteKey::new(secret, route));
        if let Ok(mut cache) = self.cached.lock() {
            cache.insert(
                route.name().as_str().to_owned(),
                (Arc::clone(&key), epoch, Instant::now()),
            );
        }
        Ok(key)
    }

    fn clear(&self) {
        if let Ok(mut cache) = self.cached.lock() {
            cache.clear();
        }
    }
}
