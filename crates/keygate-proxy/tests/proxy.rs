//! End-to-end tests of the proxy engine over real sockets: a minimal hyper server wired
//! like keygate's, recording fake upstreams, raw TCP for requests that well-behaved
//! clients refuse to send. Each test is named for the requirement it pins.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use http_body_util::BodyExt as _;

const OPENAI_KEY: &str = "sk-openai-CANARY-7f3a9c1e5b";
const MAPS_KEY: &str = "maps-CANARY/+=q8z";

fn routes(a: &Upstream, b: &Upstream) -> String {
    let a = a.url();
    let b = b.url();
    format!(
        r#"
[routes.openai]
upstream = "{a}/base"
secret = "openai"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /v1/models", "POST /v1/chat/completions", "GET /v1/sse", "GET /v1/echo-error",
         "GET /v1/big-error", "GET /v1/redirect", "GET /v1/gzip-error", "POST /v1/duplex", "GET /v1/items/*", "POST /v1/upload"]
scopes = ["ai"]
max_body_bytes = 1024

[routes.maps]
upstream = "{b}"
secret = "maps"
inject = {{ query = "key" }}
allow = ["GET /geocode", "GET /echo-error"]
scopes = ["maps"]

[routes.limited]
upstream = "{a}"
secret = "openai"
inject = {{ header = "Authorization", value = "Bearer {{secret}}" }}
allow = ["GET /x"]
limits = {{ rate = "2/min", burst = 2, per = "user" }}

[routes.quota]
upstream = "{a}"
secret = "openai"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /x"]
limits = {{ quota = "3/day" }}

[routes.slow]
upstream = "{a}"
secret = "openai"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /slow"]
timeouts = {{ response = "400ms" }}

[routes.stall]
upstream = "{a}"
secret = "openai"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /sse"]
timeouts = {{ idle = "300ms" }}

[routes.brief]
upstream = "{a}"
secret = "openai"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /sse"]
timeouts = {{ total = "400ms" }}

[routes.down]
upstream = "http://127.0.0.1:1/internal-base"
secret = "openai"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /x"]

[routes.admin-only]
upstream = "{a}"
secret = "openai"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /x"]
scopes = ["admin"]
"#
    )
}

struct World {
    a: Upstream,
    b: Upstream,
    proxy: Proxy,
}

async fn world() -> World {
    let a = start_upstream().await;
    let b = start_upstream().await;
    let proxy = start_proxy(
        &routes(&a, &b),
        &[("openai", OPENAI_KEY), ("maps", MAPS_KEY)],
    )
    .await;
    World { a, b, proxy }
}

fn all_text(r: &Recorded) -> String {
    let mut s = format!("{} {}\n", r.method, r.target);
    for (n, v) in &r.headers {
        s.push_str(&format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    s.push_str(&String::from_utf8_lossy(&r.body));
    s
}

fn key_forms(key: &str) -> Vec<String> {
    let enc =
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string();
    vec![
        key.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(key),
        enc,
    ]
}

fn assert_no_key(text: &str, key: &str, what: &str) {
    for form in key_forms(key) {
        assert!(
            !text.contains(&form),
            "{what} contains the key ({form}): {text}"
        );
    }
}

// ------------------------------------------------------------------------------- S25

#[tokio::test]
async fn s25_absolute_form_target_is_refused_and_reaches_no_upstream() {
    let w = world().await;
    let req = format!(
        "GET http://{}/proxy/openai/v1/models HTTP/1.1\r\nHost: {}\r\n\r\n",
        w.b.addr, w.b.addr
    );
    let (resp, closed) = raw(w.proxy.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(closed, "connection must close after a framing error");
    assert!(w.a.requests().is_empty() && w.b.requests().is_empty());
}

#[tokio::test]
async fn s25_host_header_does_not_choose_the_upstream() {
    let w = world().await;
    let req = format!(
        "GET /proxy/openai/v1/models HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        w.b.addr
    );
    let (resp, _) = raw(w.proxy.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(w.b.requests().is_empty(), "Host header redirected the call");
    let seen = w.a.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/base/v1/models");
    assert_eq!(seen[0].headers["host"], w.a.addr.to_string().as_str());
}

#[tokio::test]
async fn s25_a_routes_key_never_reaches_another_upstream() {
    let w = world().await;
    for _ in 0..2 {
        assert_eq!(
            send(&w.proxy, "GET", "/proxy/openai/v1/models", &[], "")
                .await
                .status,
            200
        );
        assert_eq!(
            send(&w.proxy, "GET", "/proxy/maps/geocode?address=x", &[], "")
                .await
                .status,
            200
        );
    }
    // Paths that try to name another host stay on the route's upstream or are refused.
    let evil = format!("/proxy/openai//{}/v1/models", w.b.addr);
    assert_eq!(send(&w.proxy, "GET", &evil, &[], "").await.status, 400);
    let a = w.a.requests();
    let b = w.b.requests();
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 2);
    for r in &a {
        assert_no_key(&all_text(r), MAPS_KEY, "upstream A");
        assert_eq!(r.headers["x-api-key"], OPENAI_KEY);
    }
    for r in &b {
        assert_no_key(&all_text(r), OPENAI_KEY, "upstream B");
    }
}

// ------------------------------------------------------------------------------- S26

#[tokio::test]
async fn s26_forwarding_headers_and_credentials_are_replaced() {
    let w = world().await;
    let r = send(
        &w.proxy,
        "GET",
        "/proxy/openai/v1/models",
        &[
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-port", "1"),
            ("forwarded", "for=10.9.9.9;host=evil.example"),
            ("x-real-ip", "10.9.9.9"),
            ("authorization", "DPoP app-token"),
            ("dpop", "app-proof"),
            ("cookie", "session=1"),
            ("x-api-key", "app-chosen-key"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/admin"),
            ("x-app-header", "kept"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = &w.a.requests()[0];
    let h = &seen.headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "gate.example.com");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    for gone in [
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "authorization",
        "dpop",
        "cookie",
    ] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded");
    }
    assert_eq!(
        h.get_all("x-api-key").iter().collect::<Vec<_>>(),
        vec![OPENAI_KEY]
    );
    assert_eq!(h["x-app-header"], "kept");
}

#[tokio::test]
async fn s26_query_injection_replaces_an_app_supplied_key_parameter() {
    let w = world().await;
    let r = send(
        &w.proxy,
        "GET",
        "/proxy/maps/geocode?address=x&key=attacker&KEY=y&k%65y=z",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let target = &w.b.requests()[0].target;
    // Unreserved characters stay as they are; '/', '+', '=' are encoded.
    assert_eq!(target, "/geocode?address=x&key=maps-CANARY%2F%2B%3Dq8z");
}

// ------------------------------------------------------------------------------- S27

#[tokio::test]
async fn s27_connection_listed_headers_cannot_remove_the_key() {
    let w = world().await;
    let req = b"GET /proxy/openai/v1/models HTTP/1.1\r\nHost: gate\r\n\
        Connection: X-Api-Key, X-Custom, keep-alive, close\r\nX-Custom: 1\r\nKeep-Alive: timeout=5\r\n\
        Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nTE: trailers\r\n\
        Proxy-Authorization: Basic eDp5\r\n\r\n";
    let (resp, _) = raw(w.proxy.addr, req).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let h = &w.a.requests()[0].headers;
    assert_eq!(h["x-api-key"], OPENAI_KEY);
    for gone in [
        "x-custom",
        "keep-alive",
        "upgrade",
        "http2-settings",
        "te",
        "proxy-authorization",
    ] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded");
    }
    assert!(!h.get_all("connection").iter().any(|v| {
        v.to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-api-key")
    }));
    // No protocol switch happened: the answer is a plain 200, not 101.
    assert!(!resp.contains("101 Switching"));
}

#[tokio::test]
async fn s27_response_hop_by_hop_headers_are_dropped() {
    let w = world().await;
    let r = send(&w.proxy, "GET", "/proxy/openai/v1/models", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers.get("x-hop").is_none(),
        "Connection-listed response header leaked"
    );
    assert!(r.headers.get("keep-alive").is_none());
    assert_eq!(&r.body[..], b"ok");
}

// ------------------------------------------------------------------------------- S28

#[tokio::test]
async fn s28_ambiguous_framing_gets_400_and_close() {
    let w = world().await;
    let cases: &[&[u8]] = &[
        b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
        b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: +2\r\n\r\nab",
        b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 2, 2\r\n\r\nab",
        b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"POST /proxy/openai/v1/chat/completions HTTP/1.0\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /proxy/openai/v1/models HTTP/1.1\r\nHost: g\r\nX-A: a\rb\r\n\r\n",
        b"GET /proxy/openai/v1/models HTTP/1.1\r\nHost: g\r\nX-A: a\x00b\r\n\r\n",
        b"GET /proxy/openai/v1/models HTTP/1.1\r\nHost: g\r\nX-A: a\r\n b\r\n\r\n",
        b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: g\r\n\r\n",
    ];
    let mut failures = Vec::new();
    for case in cases {
        let (resp, closed) = raw(w.proxy.addr, case).await;
        let shown = String::from_utf8_lossy(case);
        if status_of(&resp) != 400 || !closed {
            failures.push(format!("{shown:?} → closed={closed} {resp}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        w.a.requests().is_empty(),
        "a malformed request reached the upstream"
    );
}

// ------------------------------------------------------------------------------- S29

#[tokio::test]
async fn s29_encoded_traversal_is_refused_never_forwarded() {
    let w = world().await;
    let targets = [
        "/proxy/openai/v1/%2e%2e/admin",
        "/proxy/openai/v1/%2E%2E/admin",
        "/proxy/openai/v1/models/../../admin",
        "/proxy/openai/v1/./models",
        "/proxy/openai/v1/models/..;/admin",
        "/proxy/openai/v1//models",
        "/proxy/openai/v1%2fmodels",
        "/proxy/openai/v1%5cmodels",
        "/proxy/openai/v1/models%00",
        "/proxy/openai/v1/%252e%252e/admin",
        "/proxy/openai/v1/%c0%ae%c0%ae/admin",
        "/proxy/openai/v1/items/%zz",
        "/proxy/../admin/v1/secrets",
        "/proxy/openai/v1\\models",
    ];
    for t in targets {
        let req = format!("GET {t} HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n");
        let (resp, _) = raw(w.proxy.addr, req.as_bytes()).await;
        assert_eq!(status_of(&resp), 400, "{t} → {resp}");
        assert!(
            !resp.contains("openai.com") && !resp.contains("127.0.0.1"),
            "{resp}"
        );
    }
    assert!(w.a.requests().is_empty(), "{:?}", w.a.requests());
}

#[tokio::test]
async fn s29_the_matched_path_is_the_forwarded_path() {
    let w = world().await;
    let r = send(&w.proxy, "GET", "/proxy/openai/v1/items/a%20b:c@d", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(w.a.requests()[0].target, "/base/v1/items/a%20b:c@d");
}

// ------------------------------------------------------------------------------- S30

#[tokio::test]
async fn s30_only_allow_listed_calls_pass() {
    let w = world().await;
    for (m, t, want) in [
        ("DELETE", "/proxy/openai/v1/models", 403),
        ("GET", "/proxy/openai/v1/files", 403),
        ("GET", "/proxy/openai/v1/models/extra", 403),
        ("POST", "/proxy/openai/v1/models", 403),
        ("GET", "/proxy/openai/v1/items/a/b", 403),
        ("GET", "/proxy/nosuchroute/x", 404),
        ("GET", "/proxy/admin-only/x", 403),
    ] {
        let r = send(&w.proxy, m, t, &[], "").await;
        assert_eq!(r.status.as_u16(), want, "{m} {t}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("\"fault\":\"client\""), "{body}");
    }
    assert!(w.a.requests().is_empty());
}

#[tokio::test]
async fn s30_rate_limit_gives_429_with_retry_after_per_user() {
    let w = world().await;
    for i in 0..2 {
        let r = send(&w.proxy, "GET", "/proxy/limited/x", &[], "").await;
        assert_eq!(r.status, 200, "call {i}");
        let policy = r.headers["ratelimit-policy"].to_str().unwrap();
        assert_eq!(policy, "\"rate\";q=2;w=60");
        let state = r.headers["ratelimit"].to_str().unwrap();
        assert!(
            state.starts_with(&format!("\"rate\";r={};t=", 1 - i)),
            "{state}"
        );
    }
    let r = send(&w.proxy, "GET", "/proxy/limited/x", &[], "").await;
    assert_eq!(r.status, 429);
    let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&after), "retry-after {after}");
    assert_eq!(
        r.headers["ratelimit"].to_str().unwrap(),
        format!("\"rate\";r=0;t={after}")
    );
    // Another user is counted separately.
    let r = send(
        &w.proxy,
        "GET",
        "/proxy/limited/x",
        &[("x-test-other-user", "1")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(w.a.requests().len(), 3);
    assert!(
        w.proxy
            .metrics
            .render()
            .contains("reason=\"rate_limited\",fault=\"client\"} 1")
    );
}

#[tokio::test]
async fn s30_quota_gives_429_until_the_next_window() {
    let w = world().await;
    for _ in 0..3 {
        assert_eq!(
            send(&w.proxy, "GET", "/proxy/quota/x", &[], "")
                .await
                .status,
            200
        );
    }
    let r = send(&w.proxy, "GET", "/proxy/quota/x", &[], "").await;
    assert_eq!(r.status, 429);
    let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&after));
    assert_eq!(w.a.requests().len(), 3);
}

#[tokio::test]
async fn s30_upstream_error_bodies_that_echo_the_key_are_redacted() {
    let w = world().await;
    let r = send(&w.proxy, "GET", "/proxy/openai/v1/echo-error", &[], "").await;
    assert_eq!(r.status, 401);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("[REDACTED]"), "{body}");
    assert_no_key(&body, OPENAI_KEY, "error body");
    assert_eq!(r.headers["x-debug-key"], "[redacted]");
    assert_eq!(r.headers["content-length"], body.len().to_string().as_str());

    // A query-injected key echoed back (URL-encoded in the echoed query).
    let r = send(&w.proxy, "GET", "/proxy/maps/echo-error?x=1", &[], "").await;
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_no_key(&body, MAPS_KEY, "error body");
    assert!(body.contains("key=[REDACTED]"), "{body}");
}

#[tokio::test]
async fn s30_compressed_error_bodies_are_inflated_and_redacted() {
    let w = world().await;
    let r = send(&w.proxy, "GET", "/proxy/openai/v1/gzip-error", &[], "").await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("content-encoding").is_none());
    assert_eq!(&r.body[..], b"{\"error\":\"key [REDACTED] revoked\"}");
}

#[tokio::test]
async fn s30_large_error_bodies_are_replaced_by_a_generic_one() {
    let w = world().await;
    let r = send(&w.proxy, "GET", "/proxy/openai/v1/big-error", &[], "").await;
    assert_eq!(r.status, 500);
    assert!(r.body.len() < 1024);
    assert!(String::from_utf8_lossy(&r.body).contains("upstream_error"));
}

#[tokio::test]
async fn s30_failures_say_who_failed_with_generic_bodies() {
    let w = world().await;
    let r = send(&w.proxy, "GET", "/proxy/down/x", &[], "").await;
    assert_eq!(r.status, 502);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("\"fault\":\"upstream\""), "{body}");
    assert!(
        !body.contains("127.0.0.1") && !body.contains("internal-base"),
        "{body}"
    );
    assert_no_key(&body, OPENAI_KEY, "error body");

    let t = Instant::now();
    let r = send(&w.proxy, "GET", "/proxy/slow/slow", &[], "").await;
    assert_eq!(r.status, 504);
    assert!(t.elapsed() < Duration::from_secs(2), "timeout not applied");
    assert!(String::from_utf8_lossy(&r.body).contains("\"fault\":\"upstream\""));
}

#[tokio::test]
async fn redirects_are_relayed_not_followed() {
    let w = world().await;
    let r = send(&w.proxy, "GET", "/proxy/openai/v1/redirect", &[], "").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "http://127.0.0.1:9/elsewhere");
    assert_eq!(w.a.requests().len(), 1);
}

#[tokio::test]
async fn request_bodies_over_the_route_limit_are_refused() {
    let w = world().await;
    let big = "x".repeat(2048);
    let r = send(&w.proxy, "POST", "/proxy/openai/v1/upload", &[], &big).await;
    assert_eq!(r.status, 413);
    assert!(w.a.requests().is_empty());

    // Chunked, so the size is only known while streaming.
    let mut req = b"POST /proxy/openai/v1/upload HTTP/1.1\r\nHost: g\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'y'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (resp, _) = raw(w.proxy.addr, &req).await;
    assert_eq!(status_of(&resp), 413, "{resp}");

    // Within the limit, the body arrives intact.
    let r = send(
        &w.proxy,
        "POST",
        "/proxy/openai/v1/upload",
        &[("content-type", "text/plain")],
        "hello",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = w.a.requests();
    let last = seen.last().unwrap();
    assert_eq!(&last.body[..], b"hello");
}

// ----------------------------------------------------------------------- streaming

#[tokio::test]
async fn request_bodies_stream_without_buffering() {
    let w = world().await;
    let stream = tokio::net::TcpStream::connect(w.proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (mut tx, body) =
        http_body_util::channel::Channel::<bytes::Bytes, std::convert::Infallible>::new(1);
    let req = http::Request::post("/proxy/openai/v1/duplex")
        .header("host", "gate")
        .body(body)
        .unwrap();
    let pending = tokio::spawn(async move { sender.send_request(req).await });
    tx.send_data(bytes::Bytes::from_static(b"part one;"))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("response head waited for the whole request body")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The first part comes back while the request body is still open.
    let first = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .expect("first part was buffered")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], b"part one;");
    tx.send_data(bytes::Bytes::from_static(b"part two"))
        .await
        .unwrap();
    drop(tx);
    let mut rest = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            rest.extend_from_slice(&data);
        }
    }
    assert_eq!(&rest[..], b"part two");
}

#[tokio::test]
async fn server_sent_events_arrive_event_by_event() {
    let w = world().await;
    let stream = tokio::net::TcpStream::connect(w.proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/proxy/openai/v1/sse")
        .header("host", "gate")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let start = Instant::now();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first_at = start.elapsed();
    assert_eq!(&first[..], b"data: first\n\n");
    let mut rest = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            rest.extend_from_slice(&data);
        }
    }
    let end_at = start.elapsed();
    assert!(
        first_at < Duration::from_millis(500),
        "first event after {first_at:?}"
    );
    assert!(
        end_at >= Duration::from_millis(700),
        "stream ended after {end_at:?}"
    );
    assert_eq!(&rest[..], b"data: second\n\ndata: [DONE]\n\n");
}

async fn first_event_then_cut(proxy: &Proxy, target: &str) {
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(target)
        .header("host", "gate")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let start = Instant::now();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    // The upstream pauses 700 ms: the stream is cut before the next event.
    let next = body.frame().await;
    assert!(
        !matches!(next, Some(Ok(ref f)) if f.data_ref().is_some()),
        "{target}: stream not cut"
    );
    assert!(
        start.elapsed() < Duration::from_millis(690),
        "{target}: cut too late"
    );
}

#[tokio::test]
async fn idle_and_total_timeouts_cut_a_stalled_stream() {
    let w = world().await;
    first_event_then_cut(&w.proxy, "/proxy/stall/sse").await;
    first_event_then_cut(&w.proxy, "/proxy/brief/sse").await;
    let mut rx = w.proxy.usage.lock().await;
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            event.fault,
            Some(keygate_proxy::Fault::Upstream),
            "{event:?}"
        );
    }
}

// -------------------------------------------------------------------------- usage

#[tokio::test]
async fn usage_events_and_metrics_carry_no_user_in_labels() {
    let w = world().await;
    assert_eq!(
        send(&w.proxy, "GET", "/proxy/openai/v1/models", &[], "")
            .await
            .status,
        200
    );
    let event = tokio::time::timeout(Duration::from_secs(2), async {
        w.proxy.usage.lock().await.recv().await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(event.user.as_str(), "alice");
    assert_eq!(event.route.as_str(), "openai");
    assert_eq!(event.status_class.as_str(), "2xx");
    assert!(event.fault.is_none());
    let text = w.proxy.metrics.render();
    assert!(
        text.contains("keygate_proxy_requests_total{route=\"openai\",status=\"2xx\"} 1"),
        "{text}"
    );
    assert!(!text.contains("alice") && !text.contains("ios-app") && !text.contains("127.0.0.1"));
    assert_no_key(&text, OPENAI_KEY, "metrics");

    // Failures after admission are recorded by the forwarder, once, with their fault.
    assert_eq!(
        send(&w.proxy, "GET", "/proxy/down/x", &[], "").await.status,
        502
    );
    let event = tokio::time::timeout(Duration::from_secs(2), async {
        w.proxy.usage.lock().await.recv().await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(event.route.as_str(), "down");
    assert_eq!(event.status_class.as_str(), "5xx");
    assert_eq!(event.fault, Some(keygate_proxy::Fault::Upstream));
    let text = w.proxy.metrics.render();
    assert!(
        text.contains("keygate_proxy_refused_total{route=\"down\",reason=\"upstream_unreachable\",fault=\"upstream\"} 1"),
        "{text}"
    );
}
