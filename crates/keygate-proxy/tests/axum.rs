//! The engine wired into axum as the server will wire it: a catch-all `/proxy/*` handler,
//! `axum::serve` over a listener whose connections are wrapped in `StrictHttp1`, and the
//! framing cases hyper would otherwise repair silently.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use common::*;
use keygate_proxy::h1guard::StrictHttp1;
use keygate_proxy::{Gatekeeper, RouteTable};
use tokio::net::{TcpListener, TcpStream};

/// The whole handler: the gatekeeper runs every step and answers every refusal.
async fn proxy(
    State(gatekeeper): State<Arc<Gatekeeper>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    req: Request,
) -> Response {
    gatekeeper.handle(req, peer.ip()).await.map(Body::new)
}

/// The same handler for a plain listener (connect info is the `SocketAddr`).
async fn proxy_h2(
    state: State<Arc<Gatekeeper>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    proxy(state, ConnectInfo(Peer(peer)), req).await
}

/// `axum::serve` listener that wraps every connection in the raw framing guard.
struct StrictListener(TcpListener);

impl axum::serve::Listener for StrictListener {
    type Io = StrictHttp1<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((stream, addr)) = self.0.accept().await {
                return (StrictHttp1::new(stream), addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The peer address as connect info (a local type: the orphan rule forbids implementing
/// `Connected` for `SocketAddr` with a foreign listener).
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, StrictListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, StrictListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

#[tokio::test]
async fn axum_wiring_forwards_and_refuses_smuggling() {
    let up = start_upstream().await;
    let routes = RouteTable::from_toml(&format!(
        r#"
[routes.echo]
upstream = "{}"
secret = "echo"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /v1/models", "POST /v1/chat/completions"]
"#,
        up.url()
    ))
    .unwrap();
    let (gatekeeper, _metrics, _usage) = gatekeeper(routes, &[("echo", "sk-axum-CANARY")]).await;
    let state = Arc::new(gatekeeper);
    let app = axum::Router::new()
        .route("/proxy/{*rest}", axum::routing::any(proxy))
        .with_state(Arc::clone(&state));
    let app2 = axum::Router::new()
        .route("/proxy/{*rest}", axum::routing::any(proxy_h2))
        .with_state(state);
    let listener = StrictListener(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.0.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .await
            .unwrap();
    });

    let (resp, _) = raw(
        addr,
        b"GET /proxy/echo/v1/models HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(up.requests()[0].headers["x-api-key"], "sk-axum-CANARY");
    assert!(!resp.contains("sk-axum-CANARY"));

    for case in [
        &b"POST /proxy/echo/v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /proxy/echo/v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        b"GET /proxy/echo/v1/%2e%2e/models HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    ] {
        let (resp, closed) = raw(addr, case).await;
        assert_eq!(status_of(&resp), 400, "{}", String::from_utf8_lossy(case));
        assert!(closed);
    }
    assert_eq!(up.requests().len(), 1);

    // HTTP/2 from the app (TLS+ALPN in production; prior knowledge here, on a listener
    // without the HTTP/1 guard): `:scheme`/`:authority` do not trip the target check, and
    // the route still decides where the call goes.
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h2_addr = plain.local_addr().unwrap();
    let app = app2.clone();
    tokio::spawn(async move {
        axum::serve(
            plain,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let stream = TcpStream::connect(h2_addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/proxy/echo/v1/models", up.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let r = sender.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].target, "/v1/models");
    assert_eq!(seen[1].headers["x-api-key"], "sk-axum-CANARY");
}
