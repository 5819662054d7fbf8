//! Upstream connections, driven by the request that uses them.
//!
//! An HTTP/1.1 upstream connection is a hyper `client::conn` pair (the `SendRequest`
//! handle and the `Connection` future that does the I/O). A request checks one out of
//! the idle list, and its own task polls the connection: while it waits for the
//! response head ([`Pool::send`]) and then while the response body streams
//! ([`UpstreamIncoming`]). When the body has ended, the pair goes back to the idle list.
//! No task of its own, so no wake-up crosses from a connection task to the handler and
//! back for each request: the server connection, the handler and the upstream I/O run
//! in one task, on one worker.
//!
//! HTTP/2 (negotiated by ALPN with TLS upstreams) multiplexes many requests on one
//! connection, so that connection is driven by a task of its own and shared, as a pooled
//! client would.
//!
//! Connections are kept per upstream scheme and authority, at most `max_idle` idle ones
//! each, for `idle_timeout` after their last use (checked when the list is used: an idle
//! connection that its upstream closed is found closed at checkout and dropped). A
//! reused connection that turns out closed before the request was written is replaced
//! by a new one and the request sent there; once a request has been written it is never
//! sent again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_service::Service as _;

use crate::forward::BoxError;

/// Request bodies sent upstream.
pub(crate) type OutBody = UnsyncBoxBody<Bytes, BoxError>;
type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
type H1Conn = http1::Connection<Io, OutBody>;

/// Why an upstream exchange failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made (DNS, TCP, TLS, timeout).
    #[error("cannot connect to the upstream")]
    Connect(#[source] BoxError),
    /// A new connection closed before it could take the request.
    #[error("the upstream closed a new connection before the request was sent")]
    Closed,
    /// The connection failed or the upstream answered with something that is not HTTP.
    #[error("upstream exchange failed")]
    Exchange(#[source] hyper::Error),
}

impl SendError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

/// Where idle connections are kept: one entry per upstream scheme and authority.
struct Host {
    https: bool,
    authority: Authority,
    /// Most recently used last.
    idle: Vec<IdleH1>,
    /// The shared HTTP/2 connection, once one was negotiated.
    h2: Option<http2::SendRequest<OutBody>>,
}

impl Host {
    /// Whether this is the entry of `https` and `authority`. A route's authority is the
    /// same text on every call, so the exact comparison nearly always decides; the
    /// case-blind one (`Authority`'s equality) only runs when the texts differ.
    fn is(&self, https: bool, authority: &Authority) -> bool {
        self.https == https
            && (self.authority.as_str() == authority.as_str() || self.authority == *authority)
    }
}

/// An HTTP/1.1 connection: its handle and the future that does its I/O. Boxed once per
/// connection (the future is large), so handing it between the pool and a request moves
/// a pointer.
struct H1 {
    send: http1::SendRequest<OutBody>,
    conn: H1Conn,
}

struct IdleH1 {
    h1: Box<H1>,
    since: Instant,
}

/// The upstream connections of one TLS configuration and connect timeout.
pub(crate) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    idle_timeout: Duration,
    max_idle: usize,
    hosts: Mutex<Vec<Host>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle_timeout", &self.idle_timeout)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

/// What a checkout found.
enum Checkout {
    H1(Box<H1>),
    H2(http2::SendRequest<OutBody>),
    Nothing,
}

impl Pool {
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        Self {
            connector,
            idle_timeout,
            max_idle,
            hosts: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (absolute URI, no `Host` header) to its upstream and waits for the
    /// response head, driving the connection from the calling task. `host` is the `Host`
    /// header to send over HTTP/1.1.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut request: Request<OutBody>,
        host: &HeaderValue,
    ) -> Result<Response<UpstreamIncoming>, SendError> {
        let https = request.uri().scheme() == Some(&Scheme::HTTPS);
        let Some(authority) = request.uri().authority().cloned() else {
            return Err(SendError::Connect("upstream URI without a host".into()));
        };
        // Reused connections first; each one found closed before the request went out
        // is dropped and the next tried. The request is never sent twice.
        loop {
            match self.checkout(https, &authority) {
                Checkout::H2(send) => return Box::pin(send_h2(send, request)).await,
                Checkout::H1(mut h1) => {
                    if ready_h1(&mut h1).await.is_err() {
                        continue;
                    }
                    match self.exchange_h1(h1, request, host, https, &authority).await {
                        Ok(response) => return Ok(response),
                        Err(Retry::Unsent(back)) => request = back,
                        Err(Retry::Failed(e)) => return Err(SendError::Exchange(e)),
                    }
                }
                Checkout::Nothing => break,
            }
        }
        // Boxed: connecting (DNS, TCP, TLS handshake) is the rare path and its future is
        // large; inline it would be carried, and copied, by every call's future.
        match Box::pin(self.connect(https, &authority)).await? {
            Fresh::H2(send) => Box::pin(send_h2(send, request)).await,
            Fresh::H1(mut h1) => {
                ready_h1(&mut h1).await?;
                match self.exchange_h1(h1, request, host, https, &authority).await {
                    Ok(response) => Ok(response),
                    Err(Retry::Unsent(_)) => Err(SendError::Closed),
                    Err(Retry::Failed(e)) => Err(SendError::Exchange(e)),
                }
            }
        }
    }

    async fn exchange_h1(
        self: &Arc<Self>,
        mut h1: Box<H1>,
        mut request: Request<OutBody>,
        host: &HeaderValue,
        https: bool,
        authority: &Authority,
    ) -> Result<Response<UpstreamIncoming>, Retry> {
        // HTTP/1.1 takes the origin form (`/path?query`) and a Host header.
        let uri = std::mem::take(request.uri_mut());
        let mut parts = uri.into_parts();
        parts.scheme = None;
        parts.authority = None;
        *request.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
        request
            .headers_mut()
            .insert(http::header::HOST, host.clone());
        let pending = h1.send.try_send_request(request);
        let mut exchange = Exchange {
            conn: Some(&mut h1.conn),
            response: std::pin::pin!(pending),
        };
        let result = (&mut exchange).await;
        // A connection that already finished (the upstream closed it after a response it
        // had wholly delivered) is never polled again: a finished future must not be.
        let finished = exchange.conn.is_none();
        match result {
            Ok(response) => Ok(response.map(|body| UpstreamIncoming {
                body,
                driver: (!finished).then(|| Driver {
                    h1,
                    pool: Arc::clone(self),
                    https,
                    authority: authority.clone(),
                }),
            })),
            Err(mut e) => match e.take_message() {
                Some(mut back) => {
                    // Not written: put the absolute URI back for the next connection.
                    let uri = std::mem::take(back.uri_mut());
                    let mut parts = uri.into_parts();
                    parts.scheme = Some(if https { Scheme::HTTPS } else { Scheme::HTTP });
                    parts.authority = Some(authority.clone());
                    *back.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
                    back.headers_mut().remove(http::header::HOST);
                    Err(Retry::Unsent(back))
                }
                None => Err(Retry::Failed(e.into_error())),
            },
        }
    }

    fn checkout(&self, https: bool, authority: &Authority) -> Checkout {
        let Ok(mut hosts) = self.hosts.lock() else {
            return Checkout::Nothing;
        };
        let Some(host) = hosts.iter_mut().find(|h| h.is(https, authority)) else {
            return Checkout::Nothing;
        };
        if let Some(send) = &host.h2 {
            if !send.is_closed() {
                return Checkout::H2(send.clone());
            }
            host.h2 = None;
        }
        let now = Instant::now();
        while let Some(idle) = host.idle.pop() {
            if now.duration_since(idle.since) < self.idle_timeout && !idle.h1.send.is_closed() {
                return Checkout::H1(idle.h1);
            }
        }
        Checkout::Nothing
    }

    fn checkin(&self, https: bool, authority: Authority, mut h1: Box<H1>) {
        // One poll lets the connection finish the exchange and go idle, or report that it
        // closed (`Connection: close`, an error). Nobody waits on an idle connection, so
        // no waker is needed.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if Pin::new(&mut h1.conn).poll(&mut cx).is_ready() || h1.send.is_closed() {
            return;
        }
        let Ok(mut hosts) = self.hosts.lock() else {
            return;
        };
        let now = Instant::now();
        let idle = IdleH1 { h1, since: now };
        let host = host_entry(&mut hosts, https, &authority);
        // Oldest first: the expired ones, then any over the cap, go from the front.
        let timeout = self.idle_timeout;
        host.idle.retain(|i| now.duration_since(i.since) < timeout);
        let keep = self.max_idle.saturating_sub(1);
        if host.idle.len() > keep {
            let excess = host.idle.len() - keep;
            host.idle.drain(..excess);
        }
        if self.max_idle > 0 {
            host.idle.push(idle);
        }
    }

    async fn connect(&self, https: bool, authority: &Authority) -> Result<Fresh, SendError> {
        let uri = Uri::builder()
            .scheme(if https { Scheme::HTTPS } else { Scheme::HTTP })
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        let mut connector = self.connector.clone();
        let io = connector.call(uri).await.map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(SendError::Exchange)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection closed with an error");
                }
            });
            if let Ok(mut hosts) = self.hosts.lock() {
                host_entry(&mut hosts, https, authority).h2 = Some(send.clone());
            }
            return Ok(Fresh::H2(send));
        }
        let (send, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Exchange)?;
        Ok(Fresh::H1(Box::new(H1 { send, conn })))
    }
}

/// The entry of one upstream (scheme and authority), added if it is not there yet.
// `at` is an index just found or just pushed.
#[allow(clippy::indexing_slicing)]
fn host_entry<'a>(hosts: &'a mut Vec<Host>, https: bool, authority: &Authority) -> &'a mut Host {
    let at = match hosts.iter().position(|h| h.is(https, authority)) {
        Some(i) => i,
        None => {
            hosts.push(Host {
                https,
                authority: authority.clone(),
                idle: Vec::new(),
                h2: None,
            });
            hosts.len() - 1
        }
    };
    &mut hosts[at]
}

enum Fresh {
    H1(Box<H1>),
    H2(http2::SendRequest<OutBody>),
}

// The request comes back as it went in; it is no larger than the `Ok` side's response.
#[allow(clippy::large_enum_variant)]
enum Retry {
    /// The connection closed before the request was written; here it is back.
    Unsent(Request<OutBody>),
    Failed(hyper::Error),
}

async fn send_h2(
    mut send: http2::SendRequest<OutBody>,
    request: Request<OutBody>,
) -> Result<Response<UpstreamIncoming>, SendError> {
    send.ready().await.map_err(SendError::Exchange)?;
    let response = send
        .send_request(request)
        .await
        .map_err(SendError::Exchange)?;
    Ok(response.map(|body| UpstreamIncoming { body, driver: None }))
}

/// Polls the connection until its handle accepts a request, or fails.
async fn ready_h1(h1: &mut H1) -> Result<(), SendError> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = Pin::new(&mut h1.conn).poll(cx) {
            // The connection ended: closed by the upstream, or failed.
            return Poll::Ready(Err(match done {
                Err(e) => SendError::Exchange(e),
                Ok(()) => SendError::Closed,
            }));
        }
        h1.send.poll_ready(cx).map_err(SendError::Exchange)
    })
    .await
}

/// Drives the connection while waiting for the response head.
struct Exchange<'a, F> {
    conn: Option<&'a mut H1Conn>,
    response: Pin<&'a mut F>,
}

impl<F: Future> Future for &mut Exchange<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut **self.get_mut();
        if let Some(conn) = this.conn.as_mut() {
            // Write the request, read the head. When the connection ends here, the
            // response future resolves with its error.
            if Pin::new(&mut **conn).poll(cx).is_ready() {
                this.conn = None;
            }
        }
        this.response.as_mut().poll(cx)
    }
}

/// Returns an HTTP/1.1 connection to its pool when its response has ended.
struct Driver {
    h1: Box<H1>,
    pool: Arc<Pool>,
    https: bool,
    authority: Authority,
}

impl Driver {
    fn checkin(self) {
        self.pool.checkin(self.https, self.authority, self.h1);
    }
}

/// An upstream response body. Over HTTP/1.1 it drives its connection as it is read and
/// returns it to the pool once the body has ended; dropped earlier, the connection is
/// closed (its state is unknown mid-response).
pub(crate) struct UpstreamIncoming {
    body: Incoming,
    driver: Option<Driver>,
}

impl std::fmt::Debug for UpstreamIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamIncoming")
    }
}

impl Body for UpstreamIncoming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(driver) = this.driver.as_mut() {
            if Pin::new(&mut driver.h1.conn).poll(cx).is_ready() {
                // Closed or failed: the body reports how, and the connection is gone.
                this.driver = None;
            }
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !this.body.is_end_stream() => {}
            // Ended (the last frame, or the end itself): the connection is free again.
            Some(Ok(_)) | None => {
                if let Some(driver) = this.driver.take() {
                    driver.checkin();
                }
            }
            Some(Err(_)) => this.driver = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamIncoming {
    fn drop(&mut self) {
        // Read to its end but the end not yet polled (hyper stops at `is_end_stream`).
        if self.body.is_end_stream() {
            if let Some(driver) = self.driver.take() {
                driver.checkin();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_entry_is_found_by_scheme_and_authority_whatever_its_case() {
        let host = Host {
            https: true,
            authority: Authority::from_static("API.example.com:443"),
            idle: Vec::new(),
            h2: None,
        };
        assert!(host.is(true, &Authority::from_static("API.example.com:443")));
        // Authorities compare without case (RFC 3986 §6.2.2.1), as `Authority` does.
        assert!(host.is(true, &Authority::from_static("api.EXAMPLE.com:443")));
        assert!(!host.is(false, &Authority::from_static("API.example.com:443")));
        assert!(!host.is(true, &Authority::from_static("api.example.com:8443")));
    }
}
