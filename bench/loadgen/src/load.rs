//! Connections and the two ways of driving them: closed loop (each connection sends its
//! next request as soon as the last answer is read) and open loop (requests fall due on a
//! fixed schedule, see [`crate::schedule`]).
//!
//! Over plain HTTP or HTTPS (`--ca`, see [`crate::tls`]); with
//! `--new-connection-per-request` every request opens its own connection (TCP and, for
//! HTTPS, a full TLS handshake), sends `Connection: close` and drops it after the answer,
//! so the rate is one of new connections (handshakes) per second.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use url::Url;

use crate::proofs::ProofPool;
use crate::schedule::{Schedule, latency_origin};
use crate::stats::{Outcome, Stats};
use crate::tls::{Negotiated, TlsClient};

/// Where the load goes and what every request looks like.
pub struct Target {
    host: String,
    port: u16,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// For `https://` URLs.
    tls: Option<TlsClient>,
    /// A new connection for every request.
    fresh: bool,
}

impl Target {
    /// `url` is `http://host[:port]/path[?query]`, or `https://…` with `ca` (a PEM file
    /// of the CA certificates to trust). `headers` come on every request, after `Host`.
    /// With `fresh`, every request goes on a new connection (`Connection: close`).
    pub fn new(
        url: &Url,
        method: Method,
        extra: HeaderMap,
        ca: Option<&std::path::Path>,
        fresh: bool,
    ) -> anyhow::Result<Self> {
        let host = url
            .host_str()
            .ok_or_else(|| anyhow!("the URL has no host"))?
            .to_owned();
        // An IPv6 literal comes bracketed; TCP and TLS want it bare.
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match (url.scheme(), ca) {
            ("http", None) => None,
            ("https", Some(ca)) => Some(TlsClient::new(ca, &bare_host)?),
            ("https", None) => {
                return Err(anyhow!(
                    "an https:// URL needs --ca FILE (the CA certificate to trust)"
                ));
            }
            ("http", Some(_)) => return Err(anyhow!("--ca is for https:// URLs")),
            (other, _) => return Err(anyhow!("unsupported URL scheme {other}://")),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let mut target = url.path().to_owned();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        let uri: Uri = target.parse().context("request target")?;
        let mut headers = HeaderMap::new();
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", host),
            None => host.clone(),
        };
        headers.insert(
            http::header::HOST,
            HeaderValue::from_str(&authority).context("Host header")?,
        );
        for (name, value) in &extra {
            headers.append(name, value.clone());
        }
        if fresh {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(Self {
            host: bare_host,
            port,
            method,
            uri,
            headers,
            tls,
            fresh,
        })
    }

    /// What the first TLS handshake agreed on (HTTPS only).
    pub fn tls_negotiated(&self) -> Option<&Negotiated> {
        self.tls.as_ref().and_then(TlsClient::negotiated)
    }

    fn request(&self, proof: Option<HeaderValue>) -> Request<Body> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if let Some(p) = proof {
            req.headers_mut().insert("dpop", p);
        }
        req
    }
}

type Body = Empty<Bytes>;

/// One keep-alive HTTP/1 connection, reopened when it breaks.
pub struct Conn {
    sender: Option<SendRequest<Body>>,
    /// The per-request timeout, one timer per connection moved forward before each
    /// request: extending a tokio timer is cheap, registering a new one per request is
    /// not.
    deadline: Pin<Box<Sleep>>,
}

async fn open(target: &Target) -> anyhow::Result<SendRequest<Body>> {
    let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
    stream.set_nodelay(true)?;
    match &target.tls {
        None => http1(TokioIo::new(stream)).await,
        Some(tls) => http1(TokioIo::new(tls.handshake(stream).await?)).await,
    }
}

/// HTTP/1 on a connected stream; the connection is driven by a task of its own.
async fn http1<T>(io: T) -> anyhow::Result<SendRequest<Body>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // Ends when the connection closes; errors surface on the sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// A sender ready for a request, reopening the connection if the server closed it
/// while idle (nothing was sent, so that is not an error of any request); with a new
/// connection per request, always a new one.
async fn ready<'a>(
    slot: &'a mut Option<SendRequest<Body>>,
    target: &Target,
) -> Result<&'a mut SendRequest<Body>, Outcome> {
    let usable = match slot.as_mut() {
        Some(s) if !target.fresh && !s.is_closed() => s.ready().await.is_ok(),
        _ => false,
    };
    if !usable {
        *slot = Some(open(target).await.map_err(|_| Outcome::Connect)?);
    }
    slot.as_mut().ok_or(Outcome::Connect)
}

/// Sends one request and reads the whole response.
async fn exchange(
    slot: &mut Option<SendRequest<Body>>,
    target: &Target,
    req: Request<Body>,
) -> Outcome {
    let sender = match ready(slot, target).await {
        Ok(s) => s,
        Err(o) => return o,
    };
    let outcome = match sender.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.into_body().collect().await {
                Ok(_) => Outcome::Status(status),
                Err(_) => Outcome::Io,
            }
        }
        Err(_) => Outcome::Io,
    };
    if outcome == Outcome::Io || target.fresh {
        // Dropping the sender closes the connection.
        *slot = None;
    }
    outcome
}

impl Conn {
    /// Opens a connection (fails if the target is unreachable). With a new connection
    /// per request, it is only a check and is closed again.
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        let sender = open(target)
            .await
            .with_context(|| format!("connecting to {}:{}", target.host, target.port))?;
        Ok(Self {
            sender: (!target.fresh).then_some(sender),
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
        })
    }

    async fn exchange_with_timeout(
        &mut self,
        target: &Target,
        req: Request<Body>,
        timeout: Duration,
    ) -> Outcome {
        let mut deadline = self.deadline.as_mut();
        deadline.as_mut().reset(Instant::now() + timeout);
        let outcome = tokio::select! {
            biased;
            o = exchange(&mut self.sender, target, req) => o,
            _ = deadline => Outcome::Timeout,
        };
        if outcome == Outcome::Timeout {
            // The answer may still arrive: this connection cannot be reused.
            self.sender = None;
        }
        outcome
    }
}

/// The time frame of one load phase. Requests are sent from `start` until `end`;
/// only those that fall into `[record_from, end)` are recorded.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// When the first request may go (open loop: the schedule's zero).
    pub start: Instant,
    /// Start of the measured part.
    pub record_from: Instant,
    /// End of sending.
    pub end: Instant,
    /// Per-request timeout; in the open loop also how long after `end` a connection
    /// that fell behind may keep sending requests that were due before `end`.
    pub timeout: Duration,
}

/// How the connections are driven.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Each connection sends again as soon as it has an answer.
    Closed,
    /// Requests fall due on this schedule.
    Open(Schedule),
}

/// What one phase produced: the connections (for the next phase), the merged figures,
/// and how many responses arrived inside the window (to size the next phase's proofs).
pub struct PhaseResult {
    /// The connections, still open where the server kept them.
    pub conns: Vec<Conn>,
    /// Merged figures of the requests recorded.
    pub stats: Stats,
    /// Responses (any outcome) completed between `start` and `end`.
    pub completed: u64,
}

struct Shared {
    target: Arc<Target>,
    proofs: Option<Arc<ProofPool>>,
    window: Window,
    mode: Mode,
}

/// Runs one phase on all connections and waits for it to finish.
pub async fn run_phase(
    conns: Vec<Conn>,
    target: Arc<Target>,
    proofs: Option<Arc<ProofPool>>,
    window: Window,
    mode: Mode,
) -> anyhow::Result<PhaseResult> {
    let shared = Arc::new(Shared {
        target,
        proofs,
        window,
        mode,
    });
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            match shared.mode {
                Mode::Closed => closed_loop(conn, &shared).await,
                Mode::Open(schedule) => open_loop(conn, i, schedule, &shared).await,
            }
        }));
    }
    let mut conns = Vec::with_capacity(tasks.len());
    let mut stats = Stats::new()?;
    let mut completed = 0;
    for task in tasks {
        let (conn, s, c) = task.await.context("a connection task failed")??;
        stats.merge(&s)?;
        completed += c;
        conns.push(conn);
    }
    Ok(PhaseResult {
        conns,
        stats,
        completed,
    })
}

fn proof(shared: &Shared) -> anyhow::Result<Option<HeaderValue>> {
    shared.proofs.as_ref().map(|p| p.take()).transpose()
}

async fn closed_loop(mut conn: Conn, shared: &Shared) -> anyhow::Result<(Conn, Stats, u64)> {
    let w = shared.window;
    let mut stats = Stats::new()?;
    let mut completed = 0;
    tokio::time::sleep_until(w.start).await;
    loop {
        let sent = Instant::now();
        if sent >= w.end {
            break;
        }
        let req = shared.target.request(proof(shared)?);
        let outcome = conn
            .exchange_with_timeout(&shared.target, req, w.timeout)
            .await;
        let done = Instant::now();
        if done <= w.end {
            completed += 1;
            if sent >= w.record_from {
                stats.record(outcome, done - sent);
            }
        }
        if outcome == Outcome::Connect {
            // The server is gone or refusing: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok((conn, stats, completed))
}

async fn open_loop(
    mut conn: Conn,
    index: usize,
    schedule: Schedule,
    shared: &Shared,
) -> anyhow::Result<(Conn, Stats, u64)> {
    let w = shared.window;
    let mut stats = Stats::new()?;
    let mut completed = 0;
    let horizon = w.end.saturating_duration_since(w.start);
    let due_total = schedule.due_before(index, horizon);
    let give_up = w.end + w.timeout;
    let mut previous_done = Duration::ZERO;
    for k in 0..due_total {
        let due = schedule.due(index, k);
        let due_at = w.start + due;
        let now = Instant::now();
        if now >= give_up {
            // Fell so far behind that the rest cannot be sent in time: count, not drop.
            let in_window = (k..due_total)
                .filter(|&j| w.start + schedule.due(index, j) >= w.record_from)
                .count() as u64;
            stats.unsent(in_window);
            break;
        }
        if now < due_at {
            tokio::time::sleep_until(due_at).await;
        }
        let req = shared.target.request(proof(shared)?);
        let sent = Instant::now().saturating_duration_since(w.start);
        let outcome = conn
            .exchange_with_timeout(&shared.target, req, w.timeout)
            .await;
        let done_at = Instant::now();
        let done = done_at.saturating_duration_since(w.start);
        let origin = latency_origin(due, previous_done, sent);
        let idle = previous_done <= due;
        previous_done = done;
        if done_at <= w.end {
            completed += 1;
        }
        if due_at >= w.record_from {
            stats.record(outcome, done.saturating_sub(origin));
            if idle {
                stats.lag(sent.saturating_sub(due));
            }
        }
        if outcome == Outcome::Connect {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok((conn, stats, completed))
}
