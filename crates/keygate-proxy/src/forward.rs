//! Forwarding: pools of upstream connections ([`crate::upstream`]: hyper 1 connections
//! driven by the request that uses them, HTTP/1.1 and HTTP/2, rustls with the web PKI
//! roots plus an optional extra CA and client certificate) and
//! [`Forwarder::forward`], which streams the request and response bodies without
//! buffering them, applies timeouts, never follows redirects, and redacts the key from
//! every response body (error bodies buffered and scanned for every encoding, the others
//! as they stream).

use std::error::Error as StdError;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::connect::HttpConnector;
use keygate_auth::resource::VerifiedAccess;
use percent_encoding::utf8_percent_encode;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;
use tokio::time::Sleep;

use crate::error::{Fault, ProxyError};
use crate::framing::{BodyFraming, CheckedRequest};
use crate::headers::{self, ForwardedInfo};
use crate::key::RouteKey;
use crate::limit::RatePermit;
use crate::meter::{BodyMeter, cost_from_header};
use crate::redact::StreamRedactor;
use crate::route::{AuthorizedCall, CostSource, Injection, Route, UpstreamTls};
use crate::upstream::{Pool, SendError, UpstreamIncoming};
use crate::usage::{ProxyMetrics, StatusClass, UsageEvent, UsageSink};

/// Boxed error type of bodies.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Forwarder settings shared by every route.
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
    /// Upstream error bodies (4xx/5xx) up to this size are scanned and redacted; larger
    /// ones are replaced by a generic body, since they cannot be checked cheaply.
    pub max_error_body: usize,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            max_error_body: 64 * 1024,
        }
    }
}

/// Upstream TLS material could not be loaded (path only; never file contents).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA bundle {0}")]
    CaFile(String),
    #[error("no usable certificate in CA bundle {0}")]
    NoCa(String),
    #[error("cannot read client certificate {0}")]
    ClientCert(String),
    #[error("cannot read client key {0}")]
    ClientKey(String),
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

/// Builds the rustls client configuration for an upstream: web PKI roots, the extra CA
/// if any, the client identity if any. Certificates are always verified (S31).
pub fn tls_config(tls: &UpstreamTls) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &tls.ca_file {
        let mut added = 0;
        for cert in
            CertificateDer::pem_file_iter(path).map_err(|_| TlsSetupError::CaFile(path.clone()))?
        {
            let cert = cert.map_err(|_| TlsSetupError::CaFile(path.clone()))?;
            roots
                .add(cert)
                .map_err(|_| TlsSetupError::NoCa(path.clone()))?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsSetupError::NoCa(path.clone()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &tls.client_identity {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs = CertificateDer::pem_file_iter(cert_path)
                .map_err(|_| TlsSetupError::ClientCert(cert_path.clone()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| TlsSetupError::ClientCert(cert_path.clone()))?;
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|_| TlsSetupError::ClientKey(key_path.clone()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsSetupError::Config(e.to_string()))?
        }
    };
    Ok(config)
}

fn build_pool(
    tls: &UpstreamTls,
    connect_timeout: Duration,
    config: &ForwarderConfig,
) -> Result<Pool, TlsSetupError> {
    let tls_config = tls_config(tls)?;
    let mut http = HttpConnector::new();
    // The https connector below decides per scheme; plain http is allowed for upstreams
    // configured as http:// (e.g. a sidecar on localhost).
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Pool::new(
        https,
        config.pool_idle_timeout,
        config.pool_max_idle_per_host,
    ))
}

type ClientKey = (UpstreamTls, Duration);

/// Forwards authorised, admitted calls to their upstreams.
pub struct Forwarder {
    /// One connection pool per distinct (TLS material, connect timeout); routes that
    /// share them share connections. Few entries, so a list scanned by reference (no key
    /// clone per call).
    clients: Mutex<Vec<(ClientKey, Arc<Pool>)>>,
    config: ForwarderConfig,
    usage: Arc<dyn UsageSink>,
    metrics: Arc<ProxyMetrics>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("config", &self.config)
            .finish()
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails once more than `limit` bytes went through, and notes it.
    struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        outcome: Arc<BodyOutcome>,
    }
}

/// Why a request body stopped early, read by the call after the upstream exchange failed.
#[derive(Debug, Default)]
struct BodyOutcome {
    /// It went over the route's limit.
    exceeded: AtomicBool,
    /// The app's side of it failed.
    client_failed: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the route's limit")]
struct TooLarge;

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            return match this.inner.as_mut().poll_frame(cx) {
                // Request trailers are dropped: they would be a second, unchecked header
                // section (an `Authorization` or `X-Api-Key` trailer after the hygiene ran).
                Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => continue,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *this.remaining {
                            this.outcome.exceeded.store(true, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(Box::new(TooLarge))));
                        }
                        *this.remaining -= len;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.outcome.client_failed.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A successful (or any non-error) upstream body with the key masked as it streams by.
struct RedactingBody<B> {
    inner: B,
    redactor: StreamRedactor,
    trailers: Option<http::HeaderMap>,
    ended: bool,
    warned: bool,
}

impl<B> Body for RedactingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                if this.redactor.holding() {
                    return Poll::Ready(Some(Ok(Frame::data(this.redactor.finish()))));
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.redactor.push(data);
                        if this.redactor.redacted() && !this.warned {
                            this.warned = true;
                            tracing::warn!("upstream response body echoed the key; redacted");
                        }
                        if out.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    Err(frame) => {
                        // Trailers end the body; held bytes go out before them.
                        this.trailers = frame.into_trailers().ok();
                        this.ended = true;
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.redactor.holding()
            && self.trailers.is_none()
            && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // Masks have the length of what they replace, so the upstream's hint stays exact.
        let held = self.redactor.held_len() as u64;
        if self.ended {
            return SizeHint::with_exact(held);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

/// Reads a `cost.json` route's cost from the body as it passes (see [`crate::meter`]).
struct CostMeter {
    /// The route, for its JSON path (an `Arc` clone per metered call, no path copy).
    route: Arc<Route>,
    body: BodyMeter,
}

/// Records usage and metrics once, when the response body ends or is dropped; a metered
/// route's cost is read from what the body meter saw by then.
struct UsageGuard {
    event: Option<UsageEvent>,
    meter: Option<CostMeter>,
    start: Instant,
    usage: Arc<dyn UsageSink>,
    metrics: Arc<ProxyMetrics>,
}

impl Drop for UsageGuard {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            if let Some(meter) = self.meter.take() {
                if let CostSource::Json(path) = &meter.route.cost().source {
                    match meter.body.finish(path) {
                        Ok(cost) => event.cost = cost,
                        Err(why) => {
                            tracing::debug!(route = %event.route, reason = %why, "cost unreadable; counted at per_call");
                            self.metrics.cost_unreadable(&event.route);
                        }
                    }
                }
            }
            event.latency = self.start.elapsed();
            self.metrics
                .observe(&event.route, event.status_class, event.latency);
            self.usage.record(event);
        }
    }
}

/// Why the response body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream response body stalled")]
    Idle,
    #[error("upstream exchange exceeded its total time")]
    Total,
    #[error("upstream response body failed")]
    Upstream,
}

/// The response body handed to the app: the upstream's, or a refusal's.
#[derive(Debug)]
pub struct ProxyBody(BodyKind);

// Unboxed: every forwarded call has an upstream body and boxing it would cost an
// allocation per call; the small variant is only for refusals.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum BodyKind {
    Upstream(UpstreamBody),
    /// A refusal's generic body, sent once.
    Full(Option<Bytes>),
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        ProxyBody(BodyKind::Full(Some(bytes)))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            BodyKind::Upstream(body) => Pin::new(body).poll_frame(cx),
            BodyKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            BodyKind::Upstream(body) => body.is_end_stream(),
            BodyKind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            BodyKind::Upstream(body) => body.size_hint(),
            BodyKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// The upstream body streamed frame by frame (or a redacted/generic replacement for
/// error bodies), with idle and total deadlines.
struct UpstreamBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
    idle: Duration,
    /// The total deadline.
    deadline: tokio::time::Instant,
    /// One timer for both deadlines: set to the nearer of the idle deadline (a frame
    /// pushes it back) and the total one. When it fires at the total deadline the body
    /// ends with [`BodyError::Total`], before it with [`BodyError::Idle`].
    timer: Pin<Box<Sleep>>,
    guard: Option<UsageGuard>,
    done: bool,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamBody")
    }
}

impl UpstreamBody {
    /// Takes over the call's `timer` (which timed the wait for the response head).
    fn new(
        inner: UnsyncBoxBody<Bytes, BoxError>,
        mut timer: Pin<Box<Sleep>>,
        idle: Duration,
        deadline: tokio::time::Instant,
        guard: UsageGuard,
    ) -> Self {
        timer
            .as_mut()
            .reset((tokio::time::Instant::now() + idle).min(deadline));
        Self {
            inner,
            idle,
            deadline,
            timer,
            guard: Some(guard),
            done: false,
        }
    }

    fn finish(&mut self, fault: Option<Fault>) {
        self.done = true;
        if let Some(mut guard) = self.guard.take() {
            if let (Some(event), Some(f)) = (guard.event.as_mut(), fault) {
                event.fault = Some(f);
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let fired = this.timer.as_mut().poll(cx).is_ready();
        // Past the total deadline, whichever deadline the timer was set to (a task that
        // was not polled for a while can find both passed).
        if fired
            && (this.timer.deadline() >= this.deadline
                || tokio::time::Instant::now() >= this.deadline)
        {
            this.finish(Some(Fault::Upstream));
            return Poll::Ready(Some(Err(BodyError::Total)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(meter), Some(data)) = (
                    this.guard.as_mut().and_then(|g| g.meter.as_mut()),
                    frame.data_ref(),
                ) {
                    meter.body.observe(data);
                }
                let next = (tokio::time::Instant::now() + this.idle).min(this.deadline);
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => {
                this.finish(Some(Fault::Upstream));
                Poll::Ready(Some(Err(BodyError::Upstream)))
            }
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if fired {
                    this.finish(Some(Fault::Upstream));
                    return Poll::Ready(Some(Err(BodyError::Idle)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn full(bytes: Bytes) -> UnsyncBoxBody<Bytes, BoxError> {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn generic_error_body() -> Bytes {
    Bytes::from_static(
        b"{\"error\":\"upstream_error\",\"message\":\"the upstream service returned an error\",\"fault\":\"upstream\"}",
    )
}

/// A connect failure, or any other.
fn classify(err: &SendError) -> ProxyError {
    if err.is_connect() {
        return ProxyError::UpstreamConnect;
    }
    ProxyError::UpstreamProtocol
}

impl Forwarder {
    /// A forwarder reporting usage to `usage` and counters to `metrics`.
    pub fn new(
        config: ForwarderConfig,
        usage: Arc<dyn UsageSink>,
        metrics: Arc<ProxyMetrics>,
    ) -> Self {
        Self {
            clients: Mutex::new(Vec::new()),
            config,
            usage,
            metrics,
        }
    }

    /// Builds (or reuses) the pooled client of `route`, loading its TLS material. Call it
    /// when routes are applied, so a bad CA or key file is reported then, not per call.
    pub fn prepare(&self, route: &Route) -> Result<(), TlsSetupError> {
        self.client_for(route).map(|_| ())
    }

    fn client_for(&self, route: &Route) -> Result<Arc<Pool>, TlsSetupError> {
        let tls = route.tls();
        let connect = route.timeouts().connect;
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| TlsSetupError::Config("client pool lock poisoned".into()))?;
        if let Some((_, c)) = clients.iter().find(|((t, d), _)| t == tls && *d == connect) {
            return Ok(Arc::clone(c));
        }
        let pool = Arc::new(build_pool(tls, connect, &self.config)?);
        clients.push(((tls.clone(), connect), Arc::clone(&pool)));
        Ok(pool)
    }

    /// Forwards one call.
    ///
    /// Requires the proofs of every check: `access` (token, proof, revocation), `call`
    /// (allow-list and scope for that token) and `permit` (rate and quota for that call).
    /// `key` is the route's current key with its searched forms, prepared for this route
    /// ([`RouteKey`]). The request comes with its framing checked (S28, by
    /// [`CheckedRequest`]); its headers are cleaned (S26, S27) and its target replaced by
    /// the route's upstream plus the checked path (S25, S29).
    ///
    /// Usage and metrics are recorded here for every outcome, errors included (as a
    /// usage event with the error's status class and fault, and in
    /// [`ProxyMetrics::refused`]); callers count only what they refuse before calling.
    #[tracing::instrument(skip_all, fields(route = %call.route().name()))]
    pub async fn forward<B>(
        &self,
        access: &VerifiedAccess,
        call: AuthorizedCall,
        permit: RatePermit,
        key: Arc<RouteKey>,
        request: CheckedRequest<B>,
        forwarded: &ForwardedInfo,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
        // Built once: the response's usage guard takes it, or an error records it here.
        let mut event = Some(UsageEvent {
            user: call.user().clone(),
            client: call.client().clone(),
            session: access.session().clone(),
            jkt: access.jkt().cloned(),
            client_ip: forwarded.client_ip,
            cost: call.route().cost().per_call,
            route: call.route().name().clone(),
            status_class: StatusClass::Success,
            latency: Duration::ZERO,
            fault: None,
            tier: call.tier(),
        });
        let result = self
            .forward_inner(
                access, call, permit, key, request, forwarded, start, &mut event,
            )
            .await;
        if let (Err(e), Some(mut event)) = (&result, event) {
            self.metrics.refused(Some(&event.route), e);
            event.status_class = StatusClass::of(e.status());
            event.latency = start.elapsed();
            event.fault = Some(e.fault());
            // No upstream response: nothing was spent.
            event.cost = 0;
            self.usage.record(event);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward_inner<B>(
        &self,
        access: &VerifiedAccess,
        call: AuthorizedCall,
        permit: RatePermit,
        key: Arc<RouteKey>,
        request: CheckedRequest<B>,
        forwarded: &ForwardedInfo,
        start: Instant,
        event: &mut Option<UsageEvent>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if !permit.matches(&call) || access.user() != call.user() {
            return Err(ProxyError::keygate(
                "permit or call belongs to another request",
            ));
        }
        if !key.is_for(call.route()) {
            return Err(ProxyError::keygate("key prepared for another route"));
        }
        let secret = key.secret();
        let route = Arc::clone(call.route());
        let framing = request.framing();
        let (parts, body) = request.into_inner().into_parts();
        if parts.method != *call.method() {
            return Err(ProxyError::keygate(
                "request method differs from the authorised call",
            ));
        }
        if let BodyFraming::Length(n) = framing {
            if n > route.max_body_bytes() {
                return Err(ProxyError::BodyTooLarge);
            }
        }

        let target = call.target();
        let query = match route.injection() {
            Injection::Query { name } => {
                let base = target
                    .query()
                    .map(|q| q.without_param(name))
                    .map(|q| q.as_str().to_owned())
                    .unwrap_or_default();
                let mut q = zeroize::Zeroizing::new(base);
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str(name);
                q.push('=');
                q.push_str(&zeroize::Zeroizing::new(
                    utf8_percent_encode(secret.expose_secret(), crate::redact::QUERY_VALUE)
                        .to_string(),
                ));
                Some(q)
            }
            _ => target
                .query()
                .map(|q| zeroize::Zeroizing::new(q.as_str().to_owned())),
        };
        let uri = route
            .upstream()
            .uri_for(target.path(), query.as_ref().map(|q| q.as_str()))?;
        drop(query);
        let injected = key
            .injected()
            .ok_or_else(|| ProxyError::keygate("secret is not a valid header value"))?;
        let headers = headers::outbound_request_headers(parts.headers, injected, forwarded)?;
        let redactor = key.redactor();
        let stream_redactor = key.stream_redactor();

        let outcome = Arc::new(BodyOutcome::default());
        let out_body = LimitedBody {
            inner: body,
            remaining: route.max_body_bytes(),
            outcome: Arc::clone(&outcome),
        }
        .boxed_unsync();
        let mut upstream_request = Request::new(out_body);
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = uri;
        *upstream_request.headers_mut() = headers;

        let client = self.client_for(&route).map_err(|e| {
            tracing::error!(error = %e, "upstream TLS setup failed");
            ProxyError::keygate("upstream TLS setup failed")
        })?;
        let timeouts = *route.timeouts();
        let now = tokio::time::Instant::now();
        let deadline = now + timeouts.total;
        // One timer serves the whole call: first the wait for the response head, then the
        // response body's idle and total deadlines (`UpstreamBody`).
        let mut timer = Box::pin(tokio::time::sleep_until(
            now + timeouts.response.min(timeouts.total),
        ));
        let host = route.upstream().host_header();
        let mut send = std::pin::pin!(client.send(upstream_request, host));
        let sent = std::future::poll_fn(|cx| {
            if let Poll::Ready(sent) = send.as_mut().poll(cx) {
                return Poll::Ready(Some(sent));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await;
        let response = match sent {
            None => return Err(ProxyError::UpstreamTimeout),
            Some(Err(e)) => {
                if outcome.exceeded.load(Ordering::Relaxed) {
                    return Err(ProxyError::BodyTooLarge);
                }
                if outcome.client_failed.load(Ordering::Relaxed) {
                    return Err(ProxyError::ClientBody);
                }
                let err = classify(&e);
                tracing::warn!(error = %err, cause = %ErrorChain(&e), "upstream request failed");
                return Err(err);
            }
            Some(Ok(r)) => r,
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // keygate never asks for an upgrade (S27); an upstream that switches anyway
            // would turn the connection into an unchecked tunnel.
            return Err(ProxyError::UpstreamProtocol);
        }
        let (mut head, upstream_body) = response.into_parts();
        let status = head.status;
        let errored = status.is_client_error() || status.is_server_error();
        // Error responses cost `per_call`: they are not metered.
        let meter = match &route.cost().source {
            CostSource::Fixed => None,
            _ if errored => None,
            CostSource::Header(name) => {
                match head
                    .headers
                    .get(name)
                    .map(|v| cost_from_header(v.as_bytes()))
                {
                    Some(Ok(cost)) => {
                        if let Some(e) = event.as_mut() {
                            e.cost = cost;
                        }
                    }
                    _ => self.metrics.cost_unreadable(route.name()),
                }
                None
            }
            CostSource::Json(_) => Some(CostMeter {
                route: Arc::clone(&route),
                body: BodyMeter::for_response(&head.headers),
            }),
        };
        head.headers =
            headers::inbound_response_headers(std::mem::take(&mut head.headers), redactor);
        for (name, value) in permit.headers() {
            head.headers.insert(name, value);
        }
        let guard = UsageGuard {
            event: event.take().map(|mut e| {
                e.status_class = StatusClass::of(status);
                e
            }),
            meter,
            start,
            usage: Arc::clone(&self.usage),
            metrics: Arc::clone(&self.metrics),
        };

        let inner = if errored {
            // Boxed: the error path is the rare one, and its future would otherwise be
            // carried (and copied) by every call's.
            let body = Box::pin(self.read_error_body(
                upstream_body,
                &head.headers,
                deadline,
                timeouts.idle,
            ))
            .await;
            let replaced = match body {
                Some(bytes) => match redactor.redact(&bytes) {
                    Some(clean) => {
                        tracing::warn!("upstream error body echoed the key; redacted");
                        Bytes::from(clean)
                    }
                    None => bytes,
                },
                None => {
                    head.headers.insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    generic_error_body()
                }
            };
            head.headers.remove(http::header::CONTENT_LENGTH);
            head.headers.remove(http::header::CONTENT_ENCODING);
            if let Ok(len) = HeaderValue::from_str(&replaced.len().to_string()) {
                head.headers.insert(http::header::CONTENT_LENGTH, len);
            }
            full(replaced)
        } else {
            RedactingBody {
                inner: upstream_body,
                redactor: stream_redactor,
                trailers: None,
                ended: false,
                warned: false,
            }
            .boxed_unsync()
        };

        let body = UpstreamBody::new(inner, timer, timeouts.idle, deadline, guard);
        Ok(Response::from_parts(
            head,
            ProxyBody(BodyKind::Upstream(body)),
        ))
    }

    /// Reads a small error body within the deadlines; `None` when it is too large,
    /// compressed (cannot be scanned), or fails.
    async fn read_error_body(
        &self,
        mut body: UpstreamIncoming,
        headers: &http::HeaderMap,
        deadline: tokio::time::Instant,
        idle: Duration,
    ) -> Option<Bytes> {
        let max = self.config.max_error_body;
        let encoding = match headers.get(http::header::CONTENT_ENCODING) {
            None => Encoding::Identity,
            Some(v) => match v.as_bytes().trim_ascii().to_ascii_lowercase().as_slice() {
                b"identity" => Encoding::Identity,
                b"gzip" | b"x-gzip" => Encoding::Gzip,
                b"deflate" => Encoding::Deflate,
                // br, zstd, stacked codings: not scanned, so not relayed.
                _ => return None,
            },
        };
        if let Some(len) = body.size_hint().upper() {
            if len > max as u64 {
                return None;
            }
        }
        let mut collected = Vec::new();
        loop {
            let next = tokio::time::timeout(idle, body.frame());
            let frame = tokio::time::timeout_at(deadline, next).await.ok()?.ok()?;
            match frame {
                None => break,
                Some(Err(_)) => return None,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if collected.len() + data.len() > max {
                            return None;
                        }
                        collected.extend_from_slice(data);
                    }
                }
            }
        }
        inflate(encoding, collected, max).map(Bytes::from)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

/// Decodes a collected error body, refusing output larger than `max` (a small compressed
/// body can inflate enormously).
fn inflate(encoding: Encoding, data: Vec<u8>, max: usize) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    let read = match encoding {
        Encoding::Identity => return Some(data),
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(data.as_slice())
            .take(limit)
            .read_to_end(&mut out),
        // RFC 9110 §8.4.1.2: "deflate" is the zlib format; some servers send raw deflate.
        Encoding::Deflate => {
            let zlib = flate2::read::ZlibDecoder::new(data.as_slice())
                .take(limit)
                .read_to_end(&mut out);
            if zlib.is_err() {
                out.clear();
                flate2::read::DeflateDecoder::new(data.as_slice())
                    .take(limit)
                    .read_to_end(&mut out)
            } else {
                zlib
            }
        }
    };
    match read {
        Ok(_) if out.len() <= max => Some(out),
        _ => None,
    }
}

/// Displays an error's source chain for logs. hyper errors carry no request data (the
/// URI with a query-injected key is not part of them).
struct ErrorChain<'a>(&'a dyn StdError);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn limited<B>(body: B, limit: u64) -> (LimitedBody<B>, Arc<BodyOutcome>) {
        let outcome = Arc::new(BodyOutcome::default());
        (
            LimitedBody {
                inner: body,
                remaining: limit,
                outcome: Arc::clone(&outcome),
            },
            outcome,
        )
    }

    #[test]
    fn error_bodies_are_inflated_within_bounds() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"{\"error\":\"bad key sk-1\"}").unwrap();
        let small = gz.finish().unwrap();
        assert_eq!(
            inflate(Encoding::Gzip, small, 1024).unwrap(),
            b"{\"error\":\"bad key sk-1\"}"
        );
        // A bomb: 1 MiB of zeros compresses to about 1 KiB.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 1 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 4096);
        assert!(inflate(Encoding::Gzip, bomb, 64 * 1024).is_none());
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"zlib").unwrap();
        assert_eq!(
            inflate(Encoding::Deflate, z.finish().unwrap(), 64).unwrap(),
            b"zlib"
        );
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(b"raw").unwrap();
        assert_eq!(
            inflate(Encoding::Deflate, d.finish().unwrap(), 64).unwrap(),
            b"raw"
        );
        assert!(inflate(Encoding::Gzip, b"not gzip".to_vec(), 64).is_none());
    }

    #[tokio::test]
    async fn request_trailers_are_dropped() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-api-key", HeaderValue::from_static("app-supplied"));
        let body = Full::new(Bytes::from_static(b"hello"))
            .map_err(|never| -> BoxError { match never {} })
            .with_trailers(async move { Some(Ok(trailers)) });
        let (body, _) = limited(body, 100);
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert_eq!(&collected.to_bytes()[..], b"hello");
    }

    #[tokio::test]
    async fn body_limit_is_enforced_while_streaming() {
        let body =
            Full::new(Bytes::from(vec![0u8; 101])).map_err(|never| -> BoxError { match never {} });
        let (body, outcome) = limited(body, 100);
        assert!(body.collect().await.is_err());
        assert!(outcome.exceeded.load(Ordering::Relaxed));
        assert!(!outcome.client_failed.load(Ordering::Relaxed));
    }
}
