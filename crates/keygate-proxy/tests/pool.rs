//! Upstream connections: kept and reused across calls, never reused when their state is
//! unknown (a response cut short, `Connection: close`, an upstream that closed them while
//! idle), and capped per upstream. The upstream here counts the TCP connections it
//! accepts, which is what these properties are about.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keygate_proxy::ForwarderConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "pool-CANARY-key";

/// An HTTP/1.1 upstream that counts the connections it accepted. Paths: `/keep` (200,
/// keep-alive), `/close` (200 with `Connection: close`), `/slow` (200 after 300 ms),
/// `/stream` (a body of 50 chunks, 20 ms apart).
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

async fn counting_upstream() -> Counting {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
                    let ok = |b: &'static str| -> Body {
                        Full::new(Bytes::from_static(b.as_bytes())).boxed()
                    };
                    let response: Response<Body> = match req.uri().path() {
                        "/close" => Response::builder()
                            .header("connection", "close")
                            .body(ok("closing"))
                            .unwrap(),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Response::new(ok("slow"))
                        }
                        "/stream" => {
                            let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
                            tokio::spawn(async move {
                                for _ in 0..50 {
                                    if tx.send_data(Bytes::from_static(b"x")).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            });
                            Response::new(body.boxed())
                        }
                        _ => Response::new(ok("kept")),
                    };
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Counting { addr, accepted }
}

fn routes(addr: SocketAddr) -> String {
    format!(
        r#"
[routes.up]
upstream = "http://{addr}"
secret = "k"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /keep", "GET /close", "GET /slow", "GET /stream"]
"#
    )
}

async fn get(proxy: &Proxy, path: &str) -> Answer {
    send(proxy, "GET", &format!("/proxy/up{path}"), &[], "").await
}

#[tokio::test]
async fn sequential_calls_share_one_upstream_connection() {
    let up = counting_upstream().await;
    let proxy = start_proxy(&routes(up.addr), &[("k", KEY)]).await;
    for _ in 0..5 {
        let r = get(&proxy, "/keep").await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"kept");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_close_responses_are_not_reused() {
    let up = counting_upstream().await;
    let proxy = start_proxy(&routes(up.addr), &[("k", KEY)]).await;
    for _ in 0..3 {
        let r = get(&proxy, "/close").await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"closing");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    // And a kept one after them still works.
    assert_eq!(get(&proxy, "/keep").await.status, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
}

/// An upstream that answers one request per connection as keep-alive, then closes the
/// connection a moment later (as an upstream's idle timeout would).
async fn closing_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nonce")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(stream);
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_replaced() {
    let (addr, accepted) = closing_upstream().await;
    let proxy = start_proxy(&routes(addr), &[("k", KEY)]).await;
    for _ in 0..3 {
        let r = get(&proxy, "/keep").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(&r.body[..], b"once");
        // Let the upstream's close arrive while the connection is idle in the pool.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_response_cut_short_closes_its_upstream_connection() {
    let up = counting_upstream().await;
    let proxy = start_proxy(&routes(up.addr), &[("k", KEY)]).await;
    // Read the head and a little of a streaming body, then hang up.
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET /proxy/up/stream HTTP/1.1\r\nHost: gate\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The half-read connection is not handed to the next call: its state is unknown.
    let r = get(&proxy, "/keep").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"kept");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    // The next one reuses the new connection.
    assert_eq!(get(&proxy, "/keep").await.status, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_streamed_body_read_to_the_end_frees_its_connection() {
    let up = counting_upstream().await;
    let proxy = start_proxy(&routes(up.addr), &[("k", KEY)]).await;
    let r = get(&proxy, "/stream").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 50);
    assert_eq!(get(&proxy, "/keep").await.status, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

async fn concurrently(proxy: &Arc<Proxy>, n: usize) {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let proxy = Arc::clone(proxy);
            tokio::spawn(async move { get(&proxy, "/slow").await.status })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn concurrent_calls_open_connections_and_idle_ones_are_capped() {
    let up = counting_upstream().await;
    let config = ForwarderConfig {
        pool_max_idle_per_host: 2,
        ..ForwarderConfig::default()
    };
    let proxy = Arc::new(start_proxy_with(&routes(up.addr), &[("k", KEY)], config).await);
    concurrently(&proxy, 4).await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
    // Two were kept: four more at once reuse those and open two.
    concurrently(&proxy, 4).await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 6);
    // One at a time: always a kept one.
    for _ in 0..3 {
        assert_eq!(get(&proxy, "/keep").await.status, 200);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn idle_connections_expire() {
    let up = counting_upstream().await;
    let config = ForwarderConfig {
        pool_idle_timeout: Duration::from_millis(150),
        ..ForwarderConfig::default()
    };
    let proxy = start_proxy_with(&routes(up.addr), &[("k", KEY)], config).await;
    assert_eq!(get(&proxy, "/keep").await.status, 200);
    assert_eq!(get(&proxy, "/keep").await.status, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&proxy, "/keep").await.status, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_connect_fault() {
    // A port nothing listens on (bound, then released).
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(&routes(addr), &[("k", KEY)]).await;
    let r = get(&proxy, "/keep").await;
    assert_eq!(r.status, 502);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("\"fault\":\"upstream\""), "{body}");
    assert!(!body.contains(KEY), "{body}");
}
