//! `keygate-hyper-floor`: the least a proxy built on keygate's HTTP stack can do, for
//! `bench/proxy/run.sh` only. Not part of keygate and never a way to run it.
//!
//!     keygate-hyper-floor --listen 127.0.0.1:18186 --upstream 127.0.0.1:18181 \
//!         --prefix /proxy/bench --header 'authorization: Bearer sk-bench-key'
//!
//! It does what the nginx floor row does and nothing keygate does: it accepts HTTP/1.1
//! with hyper's server on Tokio's multi-threaded runtime (two workers on two cores, as
//! keygate by default), strips a path prefix, sets one header and forwards over one
//! kept-alive upstream connection per client connection, driven from the request's own
//! task as keygate's upstream pool drives it, with the same allocator (mimalloc). No
//! token, no checks, no limits, no accounting, no timeouts. The benchmark's row for it
//! says how much of the gap between keygate and nginx is the stack (hyper and Tokio, on
//! both sides of the hop) and how much is keygate's own work.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "keygate-hyper-floor",
    about = "A bare hyper/Tokio header-injecting proxy: the stack's floor for bench/proxy/run.sh (not keygate)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream (plain HTTP/1.1).
    #[arg(long)]
    upstream: SocketAddr,
    /// Path prefix removed before forwarding (`/proxy/bench/hello` → `/hello`).
    #[arg(long, default_value = "")]
    prefix: String,
    /// The header set on every forwarded request, `name: value`.
    #[arg(long)]
    header: String,
}

struct Target {
    upstream: SocketAddr,
    host: HeaderValue,
    prefix: String,
    name: HeaderName,
    value: HeaderValue,
}

/// One upstream connection: its handle and the future doing its I/O.
struct Upstream {
    send: http1::SendRequest<Incoming>,
    conn: http1::Connection<TokioIo<TcpStream>, Incoming>,
}

/// The idle upstream connection of one client connection (HTTP/1.1 requests on a
/// connection come one after another, so one is enough).
type Slot = Arc<Mutex<Option<Box<Upstream>>>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (name, value) = args
        .header
        .split_once(':')
        .context("--header must be `name: value`")?;
    let target = Arc::new(Target {
        upstream: args.upstream,
        host: HeaderValue::from_str(&args.upstream.to_string())?,
        prefix: args.prefix,
        name: HeaderName::from_bytes(name.trim().as_bytes()).context("--header name")?,
        value: HeaderValue::from_str(value.trim()).context("--header value")?,
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args.listen, target))
}

async fn serve(listen: SocketAddr, target: Arc<Target>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let target = Arc::clone(&target);
        tokio::spawn(async move {
            let slot: Slot = Arc::default();
            let service =
                service_fn(move |request| forward(Arc::clone(&slot), Arc::clone(&target), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn connect(target: &Target) -> anyhow::Result<Box<Upstream>> {
    let stream = TcpStream::connect(target.upstream).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
    Ok(Box::new(Upstream { send, conn }))
}

async fn forward(
    slot: Slot,
    target: Arc<Target>,
    mut request: Request<Incoming>,
) -> Result<Response<Driven>, std::convert::Infallible> {
    let idle = slot.lock().ok().and_then(|mut s| s.take());
    let mut up = match idle {
        Some(up) if !up.send.is_closed() => up,
        _ => match connect(&target).await {
            Ok(up) => up,
            Err(_) => return Ok(bad_gateway()),
        },
    };
    // Ready: the previous exchange on this connection is over.
    let ready = poll_fn(|cx| {
        if Pin::new(&mut up.conn).poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        up.send.poll_ready(cx).map(|r| r.is_ok())
    })
    .await;
    if !ready {
        return Ok(bad_gateway());
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .strip_prefix(target.prefix.as_str())
        .unwrap_or("/");
    *request.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    let headers = request.headers_mut();
    headers.insert(HOST, target.host.clone());
    headers.insert(target.name.clone(), target.value.clone());
    let mut pending = std::pin::pin!(up.send.send_request(request));
    let mut open = true;
    let response = poll_fn(|cx| {
        if open && Pin::new(&mut up.conn).poll(cx).is_ready() {
            open = false;
        }
        pending.as_mut().poll(cx)
    })
    .await;
    match response {
        Ok(response) => Ok(response.map(|body| Driven {
            body: Some(body),
            up: open.then_some(up),
            slot,
        })),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<Driven> {
    let mut response = Response::new(Driven {
        body: None,
        up: None,
        slot: Arc::default(),
    });
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// The upstream's response body: drives its connection while it is read and gives the
/// connection back to its slot at the end. The same driving as keygate's
/// `UpstreamIncoming` (`crates/keygate-proxy/src/upstream.rs`), written again on purpose:
/// the floor must not link keygate's proxy, and that type is not public.
struct Driven {
    body: Option<Incoming>,
    up: Option<Box<Upstream>>,
    slot: Slot,
}

impl Driven {
    fn give_back(&mut self) {
        if let Some(up) = self.up.take() {
            if let Ok(mut slot) = self.slot.lock() {
                *slot = Some(up);
            }
        }
    }
}

impl Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(up) = this.up.as_mut() {
            if Pin::new(&mut up.conn).poll(cx).is_ready() {
                this.up = None;
            }
        }
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !body.is_end_stream() => {}
            Some(Ok(_)) | None => this.give_back(),
            Some(Err(_)) => this.up = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        // Read to its end but the end not yet polled (hyper stops at `is_end_stream`).
        if self.body.as_ref().is_some_and(Body::is_end_stream) {
            self.give_back();
        }
    }
}
