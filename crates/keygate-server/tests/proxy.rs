//! The gatekeeper wired end to end: keygate-client signs in and calls
//! `/proxy/openai/…`; a recording fake upstream (the third party, the only fake) shows
//! what keygate forwarded. Pins the wiring of S12, S25, S26, S30, rotation, deletion and
//! streaming; keygate-proxy's own tests pin the request checks with raw requests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use common::TestApp;
use keygate_client::{Client, ClientConfig, MemoryKeyStore, MemoryTokenCache, Method};
use reqwest::StatusCode;
use serde_json::json;

const REDIRECT: &str = "com.example.app:/oauth/callback";
const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, HeaderMap)>>>);

/// The third-party API: records each request, answers without echoing secrets; `/v1/stream`
/// sends one server-sent event, waits, then another.
async fn fake_upstream(recorder: Recorder) -> String {
    let r1 = recorder.clone();
    let r2 = recorder.clone();
    let r3 = recorder.clone();
    let app = Router::new()
        .route(
            "/v1/metered/{kind}",
            get(
                move |axum::extract::Path(kind): axum::extract::Path<String>,
                      uri: axum::http::Uri,
                      headers: HeaderMap| async move {
                    r3.0.lock().unwrap().push((uri.to_string(), headers));
                    metered(&kind)
                },
            ),
        )
        .route(
            "/v1/chat/completions",
            post(move |uri: axum::http::Uri, headers: HeaderMap| async move {
                r1.0.lock().unwrap().push((uri.to_string(), headers));
                axum::Json(json!({"choices": [{"message": {"content": "hello from upstream"}}]}))
            }),
        )
        .route(
            "/v1/echo/{kind}",
            get(
                |axum::extract::Path(kind): axum::extract::Path<String>, headers: HeaderMap| async move {
                    echo(&kind, &headers)
                },
            ),
        )
        .route(
            "/v1/stream",
            get(move |uri: axum::http::Uri, headers: HeaderMap| async move {
                r2.0.lock().unwrap().push((uri.to_string(), headers));
                let stream = async_stream(vec![
                    ("data: first\n\n", Duration::ZERO),
                    ("data: second\n\n", Duration::from_millis(800)),
                ]);
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(stream),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A careless upstream that answers 200 with the credential it received, in pieces:
/// `split` cuts the key across chunks, `sse` sends it in two events 800 ms apart, `fixed`
/// sends one body with a `Content-Length`, `clean` sends no key but chunk ends that look
/// like its start.
fn echo(kind: &str, headers: &HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let value = headers["authorization"].to_str().unwrap().to_owned();
    let key = value.strip_prefix("Bearer ").unwrap().to_owned();
    let leak = |parts: Vec<String>| -> Vec<(&'static str, Duration)> {
        parts
            .into_iter()
            .map(|p| (&*Box::leak(p.into_boxed_str()), Duration::from_millis(30)))
            .collect()
    };
    let (head, tail) = key.split_at(7);
    let parts = match kind {
        "split" => leak(vec![
            format!("{{\"you_sent\":\"{}", &value[..value.len() - 3]),
            format!("{}\",\"again\":\"{head}", &value[value.len() - 3..]),
            format!("{tail}\"}}"),
        ]),
        "sse" => vec![
            (
                &*Box::leak(format!("data: {{\"key\":\"{key}\"}}\n\n").into_boxed_str()),
                Duration::ZERO,
            ),
            (
                &*Box::leak(format!("data: second {key}\n\n").into_boxed_str()),
                Duration::from_millis(800),
            ),
        ],
        "fixed" => {
            return (
                [("content-type", "application/json")],
                format!("{{\"auth\":\"{value}\"}}"),
            )
                .into_response();
        }
        _ => leak(vec![
            "{\"note\":\"sk-".to_owned(),
            format!("canary\",\"almost\":\"{head}"),
            "\u{e9}\"}".to_owned(),
        ]),
    };
    axum::body::Body::from_stream(async_stream(parts)).into_response()
}

/// An upstream that reports what a call cost: in its JSON body (`json`: 17, `big`: 60),
/// in its last JSON event (`sse`: 30, split across chunks and followed by `[DONE]`, the
/// first event 800 ms before the rest), in a header (`header`: 9), or unreadably
/// (`missing`, `text`).
fn metered(kind: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let json_body =
        |body: &'static str| ([("content-type", "application/json")], body).into_response();
    match kind {
        "json" => json_body(r#"{"id":"x","usage":{"prompt_tokens":7,"total_tokens":17}}"#),
        "big" => json_body(r#"{"usage":{"total_tokens":60}}"#),
        "missing" => json_body(r#"{"choices":[]}"#),
        "text" => json_body(r#"{"usage":{"total_tokens":"lots"}}"#),
        "header" => ([("x-usage-cost", "9")], "metered by header").into_response(),
        _ => (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(async_stream(vec![
                (
                    "data: {\"delta\":\"hel\",\"usage\":null}\n\n",
                    Duration::ZERO,
                ),
                (
                    "data: {\"delta\":\"lo\"}\r\n\r\ndata: {\"usage\":\r\ndata: {\"total_",
                    Duration::from_millis(800),
                ),
                (
                    "tokens\":30}}\r\n\r\ndata: [DONE]\n\n",
                    Duration::from_millis(30),
                ),
            ])),
        )
            .into_response(),
    }
}

fn async_stream(
    parts: Vec<(&'static str, Duration)>,
) -> impl futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for (text, wait) in parts {
            tokio::time::sleep(wait).await;
            if tx
                .send(Ok(bytes::Bytes::from_static(text.as_bytes())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

struct World {
    app: TestApp,
    recorder: Recorder,
    client: Client,
    key: String,
}

async fn world(rate: &str, burst: u32) -> World {
    world_with(&format!("rate = \"{rate}\", burst = {burst}")).await
}

/// `limits` is the inside of the route's `limits = { … }`.
async fn world_with(limits: &str) -> World {
    world_routes(limits, "").await
}

/// Like [`world_with`], with more `[routes.*]` tables after `openai`; `UPSTREAM` in them
/// stands for the fake upstream's URL.
async fn world_routes(limits: &str, extra: &str) -> World {
    world_env(limits, extra, &[]).await
}

/// Like [`world_routes`], on a server started with configuration overrides `env`.
async fn world_env(limits: &str, extra: &str, env: &[(&str, &str)]) -> World {
    let app = TestApp::spawn_with(env).await;
    let recorder = Recorder::default();
    let upstream = fake_upstream(recorder.clone()).await;
    let key = format!(
        "sk-canary-{}",
        hex::encode(keygate_auth::opaque::random_bytes::<12>())
    );
    let (s, _) = app.put("openai", json!({"value": key})).await;
    assert_eq!(s, StatusCode::OK);
    let extra = extra.replace("UPSTREAM", &upstream);
    let routes = format!(
        r#"
[routes.openai]
upstream = "{upstream}"
secret   = "openai"
inject   = {{ header = "Authorization", value = "Bearer {{secret}}" }}
allow    = ["POST /v1/chat/completions", "GET /v1/stream", "GET /v1/echo/*"]
scopes   = ["ai"]
limits   = {{ {limits}, per = "user" }}
{extra}
"#
    );
    let (s, b) = app
        .call(
            reqwest::Method::PUT,
            "/admin/v1/routes",
            Some(json!({"toml": routes})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, c) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"name": "ios-app", "type": "public", "redirect_uris": [REDIRECT], "scopes": ["ai"]})),
        )
        .await;
    let client = signed_in(&app, c["client_id"].as_str().unwrap(), "alice").await;
    World {
        app,
        recorder,
        client,
        key,
    }
}

/// Creates `user` (with the `ai` scope) and signs it in on the app `client_id`.
async fn signed_in(app: &TestApp, client_id: &str, user: &str) -> Client {
    app.call(
        reqwest::Method::POST,
        "/admin/v1/users",
        Some(json!({"name": user, "password": PASSWORD, "scopes": ["ai"]})),
    )
    .await;
    let config = ClientConfig::new(&app.base, client_id, REDIRECT).unwrap();
    let client = Client::builder(
        config,
        Arc::new(MemoryKeyStore::generate()),
        Arc::new(MemoryTokenCache::new()),
    )
    .discover()
    .await
    .unwrap();
    let (url, pending) = client.authorization_url(&["ai"]).unwrap();
    let callback = keygate_client::headless::sign_in(&url, user, PASSWORD)
        .await
        .unwrap();
    client
        .exchange_code(pending, &callback, None)
        .await
        .unwrap();
    client
}

async fn chat(w: &World) -> reqwest::Response {
    w.client
        .request(
            Method::POST,
            "/proxy/openai/v1/chat/completions?stream=false",
        )
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_call_injects_the_key_and_the_app_never_sees_it() {
    let mut w = world("1000/min", 50).await;
    let resp = chat(&w).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.text().await.unwrap();
    assert!(body.contains("hello from upstream"));
    assert!(!body.contains(&w.key));
    let (uri, headers) = w.recorder.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(uri, "/v1/chat/completions?stream=false");
    assert_eq!(
        headers["authorization"],
        format!("Bearer {}", w.key).as_str(),
        "key injected (S25)"
    );
    assert!(
        headers.get("dpop").is_none(),
        "the app's proof is not forwarded (S26)"
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");

    // Outside the allow-list, unknown routes, no token: refused, nothing forwarded.
    let before = w.recorder.0.lock().unwrap().len();
    let resp = w
        .client
        .request(Method::GET, "/proxy/openai/v1/models")
        .send()
        .await
        .unwrap();
    assert!(
        resp.status() == StatusCode::FORBIDDEN || resp.status() == StatusCode::NOT_FOUND,
        "{}",
        resp.status()
    );
    let resp = w
        .client
        .request(Method::GET, "/proxy/nope/v1/models")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = w
        .app
        .http
        .post(format!("{}/proxy/openai/v1/chat/completions", w.app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("DPoP")
    );
    assert_eq!(w.recorder.0.lock().unwrap().len(), before);

    // Usage is aggregated per minute into the store, off the hot path.
    let mut calls = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, usage) = w.app.get("/admin/v1/usage?user=alice&route=openai").await;
        calls = usage["usage"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status_class"] == "2xx")
            .map(|r| r["calls"].as_i64().unwrap())
            .sum::<i64>();
        if calls >= 1 {
            break;
        }
    }
    assert_eq!(calls, 1, "one successful call recorded for alice on openai");

    // Prometheus counters carry no user ids and no keys.
    let metrics = w.app.text("/metrics").await;
    assert!(metrics.contains("openai"));
    assert!(!metrics.contains(&w.key) && !metrics.contains("alice"));
    w.app.stop().await;
}

/// `[http] runtime = "per_core"`: every listener serves the whole surface (proxy, token
/// service, admin), and the server stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_core_runtime_serves_every_endpoint_on_every_listener() {
    let mut w = world_env(
        "rate = \"1000/min\", burst = 50",
        "",
        &[("KEYGATE_HTTP__RUNTIME", "per_core")],
    )
    .await;
    // Fresh connections each time, so the kernel spreads them over the listeners.
    for _ in 0..12 {
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let r = fresh
            .get(format!("{}/healthz", w.app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = fresh
            .post(format!("{}/proxy/openai/v1/chat/completions", w.app.base))
            .header("authorization", "Bearer not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    for _ in 0..3 {
        let resp = chat(&w).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.text().await.unwrap();
        assert!(!body.contains(&w.key), "{body}");
    }
    let seen = w.recorder.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let injected = format!("Bearer {}", w.key);
    assert!(
        seen.iter()
            .all(|(_, headers)| headers["authorization"] == injected.as_str()),
        "the key was not injected on every call"
    );
    tokio::time::timeout(std::time::Duration::from_secs(15), w.app.stop())
        .await
        .expect("the per-core server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_deletion_and_disabling_take_effect_on_the_next_call() {
    let mut w = world("1000/min", 50).await;
    assert_eq!(chat(&w).await.status(), StatusCode::OK);
    // A new version is used by the next request.
    let (s, _) = w
        .app
        .put("openai", json!({"value": "sk-rotated-key-value-000000"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(chat(&w).await.status(), StatusCode::OK);
    let (_, headers) = w.recorder.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        headers["authorization"],
        "Bearer sk-rotated-key-value-000000"
    );
    // A deleted secret: 503, never a call without the key.
    let before = w.recorder.0.lock().unwrap().len();
    w.app
        .call(reqwest::Method::DELETE, "/admin/v1/secrets/openai", None)
        .await;
    assert_eq!(chat(&w).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(w.recorder.0.lock().unwrap().len(), before);
    w.app
        .call(
            reqwest::Method::POST,
            "/admin/v1/secrets/openai/undelete",
            None,
        )
        .await;
    assert_eq!(chat(&w).await.status(), StatusCode::OK);
    // Disabling the user stops the very next call (S12).
    w.app
        .call(reqwest::Method::POST, "/admin/v1/users/alice/disable", None)
        .await;
    assert_eq!(chat(&w).await.status(), StatusCode::UNAUTHORIZED);
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_429_with_retry_after() {
    let mut w = world("2/min", 2).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let resp = chat(&w).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(resp.status());
    }
    assert!(statuses.contains(&StatusCode::OK));
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_quota_is_kept_in_the_store() {
    let mut w = world_with(r#"rate = "1000/min", burst = 50, quota = "3/day""#).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(chat(&w).await.status());
    }
    assert_eq!(
        statuses,
        vec![
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // The count lives in the store, so it holds across a restart of keygate.
    w.app.stop().await;
    let dir = std::mem::replace(&mut w.app.dir, tempfile::tempdir().unwrap());
    let token = w.app.token.clone();
    w.app = TestApp::start(dir, token).await;
    assert_eq!(chat(&w).await.status(), StatusCode::TOO_MANY_REQUESTS);
    w.app.stop().await;
}

/// A streamed GET: the first chunk and when it came, the rest and when it ended.
struct Streamed {
    first: String,
    first_at: Duration,
    rest: String,
    done_at: Duration,
}

async fn stream_of(w: &World, path: &str) -> Streamed {
    let started = std::time::Instant::now();
    let mut resp = w.client.request(Method::GET, path).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let first = resp.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    let mut rest = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    Streamed {
        first: String::from_utf8(first.to_vec()).unwrap(),
        first_at,
        rest: String::from_utf8(rest).unwrap(),
        done_at: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_through() {
    let mut w = world("1000/min", 50).await;
    let Streamed {
        first,
        first_at,
        rest,
        done_at,
    } = stream_of(&w, "/proxy/openai/v1/stream").await;
    assert!(first.contains("first"));
    assert!(rest.contains("second"));
    assert!(
        first_at + Duration::from_millis(500) < done_at,
        "the first event arrived before the upstream finished ({first_at:?} vs {done_at:?})"
    );
    w.app.stop().await;
}

async fn echoed(w: &World, kind: &str) -> (reqwest::header::HeaderMap, Vec<Vec<u8>>) {
    let mut resp = w
        .client
        .request(Method::GET, &format!("/proxy/openai/v1/echo/{kind}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    let mut chunks = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        chunks.push(c.to_vec());
    }
    (headers, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_success_body_echoing_the_key_is_redacted() {
    let mut w = world("1000/min", 50).await;
    for kind in ["split", "fixed"] {
        let (headers, chunks) = echoed(&w, kind).await;
        let body = String::from_utf8(chunks.concat()).unwrap();
        assert!(!body.contains(&w.key), "{kind}: {body}");
        assert!(!body.contains(&w.key[..w.key.len() - 3]), "{kind}: {body}");
        assert!(body.contains("[REDACTED]"), "{kind}: {body}");
        if let Some(len) = headers.get("content-length") {
            assert_eq!(len.to_str().unwrap(), body.len().to_string(), "{kind}");
        }
    }
    // Clean bodies pass byte for byte, even where a chunk ends like the key begins.
    let (_, chunks) = echoed(&w, "clean").await;
    let (head, _) = w.key.split_at(7);
    assert_eq!(
        chunks.concat(),
        format!("{{\"note\":\"sk-canary\",\"almost\":\"{head}\u{e9}\"}}").into_bytes()
    );
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_success_events_echoing_the_key_are_redacted_event_by_event() {
    let mut w = world("1000/min", 50).await;
    let Streamed {
        first,
        first_at,
        rest,
        done_at,
    } = stream_of(&w, "/proxy/openai/v1/echo/sse").await;
    assert!(
        first.starts_with("data: {\"key\":\"[REDACTED]") && first.ends_with("\n\n"),
        "{first}"
    );
    assert!(
        rest.starts_with("data: second [REDACTED]") && !rest.contains(&w.key),
        "{rest}"
    );
    assert!(
        first_at + Duration::from_millis(500) < done_at,
        "the first event arrived on its own ({first_at:?})"
    );
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_validated_and_applied_without_restart() {
    let mut app = TestApp::spawn().await;
    let bad = r#"
[routes.openai]
upstream = "ftp://api.example.com"
secret = "openai"
inject = { header = "Authorization", value = "Bearer {secret}" }
allow = ["POST /v1/chat/completions"]
"#;
    let (s, b) = app
        .call(
            reqwest::Method::PUT,
            "/admin/v1/routes",
            Some(json!({"toml": bad})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("routes.openai.upstream"),
        "{b}"
    );
    let good = bad.replace("ftp://", "https://");
    let (s, _) = app
        .call(
            reqwest::Method::PUT,
            "/admin/v1/routes",
            Some(json!({"toml": good})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = app.get("/admin/v1/routes").await;
    assert_eq!(list["routes"][0]["name"], "openai");
    let (s, show) = app.get("/admin/v1/routes/openai").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(show["source"], "admin");
    app.stop().await;
}

/// A shared buffer that collects every log line of this test binary.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// S22 for the proxy: a canary key (shaped so that no redaction pattern would catch it,
/// so this tests that it is never logged at all) goes through proxied calls with every
/// log at TRACE level. It must not appear in the logs, the responses to the app, the
/// metrics or the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_key_never_reaches_logs_metrics_audit_or_the_app() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .try_init();
    let mut w = world("1000/min", 50).await;
    let canary = format!(
        "canary{}",
        hex::encode(keygate_auth::opaque::random_bytes::<16>())
    );
    let (s, _) = w.app.put("openai", json!({"value": canary})).await;
    assert_eq!(s, StatusCode::OK);
    let mut bodies = String::new();
    for _ in 0..3 {
        let resp = chat(&w).await;
        assert_eq!(resp.status(), StatusCode::OK);
        bodies.push_str(&format!("{:?}", resp.headers()));
        bodies.push_str(&resp.text().await.unwrap());
    }
    let resp = w
        .client
        .request(Method::GET, "/proxy/openai/v1/stream")
        .send()
        .await
        .unwrap();
    bodies.push_str(&resp.text().await.unwrap());
    let (_, headers) = w.recorder.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        headers["authorization"],
        format!("Bearer {canary}").as_str(),
        "the canary was injected"
    );

    let metrics = w.app.text("/metrics").await;
    let (_, audit) = w.app.get("/admin/v1/audit?tail=1000&limit=1000").await;
    w.app.stop().await;
    let log_text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        log_text.contains("TRACE") || log_text.contains("DEBUG"),
        "verbose logs were captured"
    );
    for (place, text) in [
        ("logs", &log_text),
        ("app responses", &bodies),
        ("metrics", &metrics),
        ("audit", &audit.to_string()),
    ] {
        assert!(!text.contains(&canary), "the canary key appears in {place}");
    }
}

/// S12 across replicas: a session revoked through another handle on the same store (as
/// another replica would) is refused once the stated staleness bound has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_by_another_replica_takes_effect_within_the_stated_bound() {
    use keygate_store::TokenStore;
    let mut w = world("1000/min", 50).await;
    assert_eq!(chat(&w).await.status(), StatusCode::OK);
    let other = keygate_store::SqlStore::connect(&w.app.store_url())
        .await
        .unwrap();
    let sessions = other.list_families(None, false).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let revoked = other
        .revoke_family(
            &sessions[0].id,
            "revoked on another replica",
            keygate_audit::AuditEvent::new(
                "admin:other",
                "session.revoke",
                keygate_audit::Outcome::Success,
            ),
            keygate_vault::now_ms(),
        )
        .await
        .unwrap();
    assert!(revoked);
    tokio::time::sleep(keygate_server::oauth::REVOCATION_STALENESS + Duration::from_millis(200))
        .await;
    assert_eq!(chat(&w).await.status(), StatusCode::UNAUTHORIZED);
    keygate_store::Store::close(&other).await;
    w.app.stop().await;
}

const METERED: &str = r#"
[routes.metered]
upstream = "UPSTREAM"
secret   = "openai"
inject   = { header = "Authorization", value = "Bearer {secret}" }
allow    = ["GET /v1/metered/*"]
scopes   = ["ai"]
cost     = { per_call = 5, json = "usage.total_tokens" }
budget   = { daily = 100, monthly = 100000 }

[routes.headered]
upstream = "UPSTREAM"
secret   = "openai"
inject   = { header = "Authorization", value = "Bearer {secret}" }
allow    = ["GET /v1/metered/*"]
scopes   = ["ai"]
cost     = { header = "x-usage-cost" }
budget   = { monthly = 1000000 }
"#;

/// GET `/proxy/{route}/v1/metered/{kind}` as `client`; status and body.
async fn metered_call(
    client: &Client,
    route: &str,
    kind: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = client
        .request(Method::GET, &format!("/proxy/{route}/v1/metered/{kind}"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

/// A second handle on the server's store, as another replica would have.
async fn other_replica(w: &World) -> keygate_store::SqlStore {
    keygate_store::SqlStore::connect(&w.app.store_url())
        .await
        .unwrap()
}

/// Today's spending of `user` on `route` as written to the store, once it reaches `want`
/// (the server writes once a second), or what it was after 5 s.
async fn spent_today(store: &keygate_store::SqlStore, user: &str, route: &str, want: i64) -> i64 {
    use keygate_store::{BudgetStore, TokenStore};
    let id = store.user_by_name(user).await.unwrap().unwrap().id;
    let today = keygate_vault::now_ms() / 86_400_000;
    let mut spent = 0;
    for _ in 0..50 {
        spent = store
            .budget_spent(&id, route, today, today)
            .await
            .unwrap()
            .day;
        if spent >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_costs_are_read_from_json_bodies_event_streams_and_headers() {
    let mut w = world_routes(r#"rate = "1000/min", burst = 50"#, METERED).await;
    let store = other_replica(&w).await;

    let (s, _, body) = metered_call(&w.client, "metered", "json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("\"total_tokens\":17"),
        "the body passes unchanged: {body}"
    );
    assert_eq!(
        spent_today(&store, "alice", "metered", 17).await,
        17,
        "cost from the JSON body"
    );

    // A stream: the app gets the first event on its own, every byte unchanged, and the
    // cost comes from the last JSON event (split across chunks, before `[DONE]`).
    let Streamed {
        first,
        first_at,
        rest,
        done_at,
    } = stream_of(&w, "/proxy/metered/v1/metered/sse").await;
    assert_eq!(first, "data: {\"delta\":\"hel\",\"usage\":null}\n\n");
    assert_eq!(
        rest,
        "data: {\"delta\":\"lo\"}\r\n\r\ndata: {\"usage\":\r\ndata: {\"total_tokens\":30}}\r\n\r\ndata: [DONE]\n\n"
    );
    assert!(
        first_at + Duration::from_millis(500) < done_at,
        "the first event arrived before the upstream finished ({first_at:?} vs {done_at:?})"
    );
    assert_eq!(
        spent_today(&store, "alice", "metered", 47).await,
        47,
        "cost from the last JSON event"
    );

    let (s, _, _) = metered_call(&w.client, "headered", "header").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        spent_today(&store, "alice", "headered", 9).await,
        9,
        "cost from the header"
    );
    let metrics = w.app.text("/metrics").await;
    assert!(
        !metrics.contains("keygate_proxy_cost_unreadable_total{"),
        "every cost so far was readable:\n{metrics}"
    );

    // Missing and non-numeric costs count `per_call` (5) and move the counter.
    for kind in ["missing", "text"] {
        let (s, _, _) = metered_call(&w.client, "metered", kind).await;
        assert_eq!(s, StatusCode::OK);
    }
    // The header route without the header: `per_call` defaults to 1.
    let (s, _, _) = metered_call(&w.client, "headered", "json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(spent_today(&store, "alice", "metered", 57).await, 57);
    assert_eq!(spent_today(&store, "alice", "headered", 10).await, 10);
    let metrics = w.app.text("/metrics").await;
    assert!(
        metrics.contains("keygate_proxy_cost_unreadable_total{route=\"metered\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keygate_proxy_cost_unreadable_total{route=\"headered\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("alice") && !metrics.contains(&w.key));
    keygate_store::Store::close(&store).await;
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_daily_budget_gets_429_and_the_upstream_is_not_called() {
    let mut w = world_routes(r#"rate = "1000/min", burst = 50"#, METERED).await;
    let store = other_replica(&w).await;
    // 60 + 60: the second call starts below the budget of 100, so it is admitted.
    for want in [60, 120] {
        let (s, _, _) = metered_call(&w.client, "metered", "big").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(spent_today(&store, "alice", "metered", want).await, want);
    }
    let hits = w.recorder.0.lock().unwrap().len();
    let (s, headers, body) = metered_call(&w.client, "metered", "big").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "budget_exhausted");
    assert_eq!(body["fault"], "client");
    assert!(
        body["message"].as_str().unwrap().contains("daily"),
        "{body}"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    let left_today = 86_400 - (keygate_vault::now_ms() / 1000) % 86_400;
    assert!(
        (1..=86_400).contains(&retry) && retry.abs_diff(left_today as u64) <= 5,
        "Retry-After {retry} is the end of the UTC day ({left_today} s away)"
    );
    assert_eq!(
        w.recorder.0.lock().unwrap().len(),
        hits,
        "a refused call never reaches the upstream"
    );

    // Another user on the same route, and alice on another route, are unaffected.
    let (_, c) = w
        .app
        .call(
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"name": "android-app", "type": "public", "redirect_uris": [REDIRECT], "scopes": ["ai"]})),
        )
        .await;
    let bob = signed_in(&w.app, c["client_id"].as_str().unwrap(), "bob").await;
    let (s, _, _) = metered_call(&bob, "metered", "big").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(chat(&w).await.status(), StatusCode::OK);
    assert_eq!(w.recorder.0.lock().unwrap().len(), hits + 2);

    // Spending lives in the store: still refused after a restart.
    keygate_store::Store::close(&store).await;
    w.app.stop().await;
    let dir = std::mem::replace(&mut w.app.dir, tempfile::tempdir().unwrap());
    let token = w.app.token.clone();
    w.app = TestApp::start(dir, token).await;
    let (s, _, body) = metered_call(&w.client, "metered", "big").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("budget_exhausted"));
    let metrics = w.app.text("/metrics").await;
    assert!(
        metrics.contains("reason=\"budget_exhausted\",fault=\"client\"} 1"),
        "{metrics}"
    );
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_and_budget_settings_are_validated_naming_the_field() {
    let mut app = TestApp::spawn().await;
    let route = |extra: &str| {
        format!(
            "[routes.ai]\nupstream = \"https://api.example.com\"\nsecret = \"k\"\ninject = {{ header = \"X-Key\" }}\nallow = [\"GET /a\"]\n{extra}\n"
        )
    };
    for (extra, field) in [
        (
            "cost = { header = \"x-cost\", json = \"usage.total_tokens\" }",
            "routes.ai.cost",
        ),
        ("cost = { json = \"usage..total\" }", "routes.ai.cost.json"),
        ("cost = { header = \"no spaces\" }", "routes.ai.cost.header"),
        ("cost = { per_call = -1 }", "routes.ai"),
        ("budget = { daily = 0 }", "routes.ai.budget.daily"),
        ("budget = { weekly = 5 }", "routes.ai"),
        ("budget = {}", "routes.ai.budget"),
    ] {
        let (s, b) = app
            .call(
                reqwest::Method::PUT,
                "/admin/v1/routes",
                Some(json!({"toml": route(extra)})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{extra}: {b}");
        assert!(
            b["message"].as_str().unwrap().contains(field),
            "{extra}: {b}"
        );
    }
    let (s, b) = app
        .call(
            reqwest::Method::PUT,
            "/admin/v1/routes",
            Some(json!({"toml": route("cost = { per_call = 2, json = \"choices[0].usage.cost\" }\nbudget = { daily = 10 }")})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, show) = app.get("/admin/v1/routes/ai").await;
    assert_eq!(show["route"]["cost"]["json"], "choices[0].usage.cost");
    assert_eq!(show["route"]["budget"]["daily"], 10);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_every_kind_reach_the_metrics_401_included() {
    let mut w = world("1000/min", 50).await;
    let anonymous =
        |method: Method, path: &str| w.app.http.request(method, format!("{}{path}", w.app.base));
    // No token (the commonest refusal), a bad proof, an unknown route, a refused target,
    // a method off the allow-list.
    let r = anonymous(Method::POST, "/proxy/openai/v1/chat/completions")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = anonymous(Method::POST, "/proxy/openai/v1/chat/completions")
        .header("authorization", "DPoP not-a-token")
        .header("dpop", "not-a-proof")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = anonymous(Method::GET, "/proxy/nope/v1/models")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = anonymous(Method::GET, "/proxy/openai/v1/a%00b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = w
        .client
        .request(Method::DELETE, "/proxy/openai/v1/chat/completions")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let metrics = w.app.text("/metrics").await;
    for series in [
        r#"route="openai",reason="invalid_token",fault="client""#,
        r#"route="unknown",reason="unknown_route",fault="client""#,
        r#"route="unknown",reason="bad_target",fault="client""#,
        r#"route="openai",reason="not_allowed",fault="client""#,
    ] {
        assert!(
            metrics.contains(&format!("keygate_proxy_refused_total{{{series}}}")),
            "missing {series} in\n{metrics}"
        );
    }
    let refused: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("keygate_proxy_refused_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(refused, 5, "each refusal counted once:\n{metrics}");
    w.app.stop().await;
}

/// `[http] trusted_proxies`: behind a trusted load balancer the client is the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy (what reaches the upstream,
/// limits and the monitor); from any other peer the header is ignored, and an unreadable
/// entry on the way counts as no information.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy() {
    for (trusted, sent, expected) in [
        ("127.0.0.1", "198.51.100.9, 203.0.113.7", "203.0.113.7"),
        (
            "127.0.0.0/8, 203.0.113.0/24",
            "198.51.100.9, 203.0.113.7",
            "198.51.100.9",
        ),
        ("10.0.0.0/8", "203.0.113.7", "127.0.0.1"),
        ("127.0.0.1", "not-an-address, 203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "203.0.113.7, not-an-address", "127.0.0.1"),
    ] {
        let mut w = world_env(
            "rate = \"1000/min\", burst = 50",
            "",
            &[("KEYGATE_HTTP__TRUSTED_PROXIES", trusted)],
        )
        .await;
        let resp = w
            .client
            .request(
                Method::POST,
                "/proxy/openai/v1/chat/completions?stream=false",
            )
            .header("x-forwarded-for", sent)
            .json(&json!({"model": "m", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{trusted} / {sent}");
        let (_, headers) = w.recorder.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!(headers["x-forwarded-for"], expected, "{trusted} / {sent}");
        w.app.stop().await;
    }
}

/// An app that signs in with AppAuth alone (no DPoP) on a client registered with
/// `dpop = "optional"`: it gets Bearer tokens capped at two minutes that the proxy takes,
/// while a client on the default policy still gets nothing without a proof; the
/// operator ends the migration with `required`, which also voids the unbound tokens
/// already out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_in_dpop_migration_gets_short_bearer_tokens_until_the_operator_ends_it() {
    use keygate_auth::pkce;
    use secrecy::ExposeSecret;

    let w = world("1000/min", 50).await;
    let app = &w.app;
    let add = |name: &str, dpop: Option<&str>| {
        let mut body =
            json!({"name": name, "type": "public", "redirect_uris": [REDIRECT], "scopes": ["ai"]});
        if let Some(d) = dpop {
            body["dpop"] = json!(d);
        }
        app.call(reqwest::Method::POST, "/admin/v1/clients", Some(body))
    };
    let (s, migrating) = add("appauth-app", Some("optional")).await;
    assert_eq!(s, StatusCode::OK, "{migrating}");
    assert_eq!(migrating["dpop"], "optional");
    let migrating = migrating["client_id"].as_str().unwrap().to_owned();
    let (s, strict) = add("strict-app", None).await;
    assert_eq!(s, StatusCode::OK, "{strict}");
    assert!(strict.get("dpop").is_none(), "{strict}");
    let strict = strict["client_id"].as_str().unwrap().to_owned();
    let (s, b) = add("odd-app", Some("sometimes")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b.to_string().contains("optional, required or default"),
        "{b}"
    );

    // What AppAuth does: PKCE, no dpop_jkt, no DPoP header at the token endpoint.
    let token_without_proof = |client_id: String, form: Vec<(&'static str, String)>| async move {
        let mut form = form;
        form.push(("client_id", client_id));
        let resp = app
            .http
            .post(format!("{}/oauth2/token", app.base))
            .form(&form)
            .send()
            .await
            .unwrap();
        (
            resp.status(),
            resp.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let sign_in = |client_id: String| async move {
        let verifier = pkce::generate_verifier();
        let challenge = pkce::challenge_for(&verifier);
        let mut url = url::Url::parse(&format!("{}/oauth2/authorize", app.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", "ai")
            .append_pair("state", "st-appauth")
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256");
        let callback = keygate_client::headless::sign_in(&url, "alice", PASSWORD)
            .await
            .unwrap();
        let code = url::Url::parse(&callback)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        token_without_proof(
            client_id,
            vec![
                ("grant_type", "authorization_code".into()),
                ("code", code),
                ("redirect_uri", REDIRECT.into()),
                ("code_verifier", verifier.expose_secret().to_owned()),
            ],
        )
        .await
    };

    // The default policy (tokens.dpop = required): no proof, no tokens.
    let (s, b) = sign_in(strict).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"], "invalid_dpop_proof");

    // The migrating client: Bearer tokens, the access token capped at 120 s (the
    // server's access_ttl is 5 min), no cnf claim, and a rotating refresh token.
    let (s, tokens) = sign_in(migrating.clone()).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let expires_in = tokens["expires_in"].as_i64().unwrap();
    assert!((1..=120).contains(&expires_in), "{expires_in}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let payload = access.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert!(claims.get("cnf").is_none(), "{claims}");
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 120);

    let bearer_chat = |token: String| async move {
        app.http
            .post(format!("{}/proxy/openai/v1/chat/completions", app.base))
            .header("authorization", format!("Bearer {token}"))
            .json(&json!({"model": "m", "messages": []}))
            .send()
            .await
            .unwrap()
    };
    let resp = bearer_chat(access.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, headers) = w.recorder.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        headers["authorization"],
        format!("Bearer {}", w.key).as_str(),
        "the key is injected for a Bearer caller too"
    );

    // Refresh without a proof rotates like any other.
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (s, refreshed) = token_without_proof(
        migrating.clone(),
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh_token.clone()),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["token_type"], "Bearer");
    assert_ne!(refreshed["refresh_token"], tokens["refresh_token"]);

    // The operator ends the migration: the unbound tokens out are refused at once, and
    // a refresh without a proof is refused.
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            &format!("/admin/v1/clients/{migrating}/dpop"),
            Some(json!({"dpop": "required"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["dpop"], "required");
    let resp = bearer_chat(refreshed["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (s, b) = token_without_proof(
        migrating.clone(),
        vec![
            ("grant_type", "refresh_token".into()),
            (
                "refresh_token",
                refreshed["refresh_token"].as_str().unwrap().to_owned(),
            ),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"], "invalid_dpop_proof");

    // Unknown clients and policies: specific errors, nothing changed.
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/clients/nobody-00000000/dpop",
            Some(json!({"dpop": "optional"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            &format!("/admin/v1/clients/{migrating}/dpop"),
            Some(json!({"dpop": "maybe"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, list) = app.get("/admin/v1/clients").await;
    let listed = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == migrating.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["dpop"], "required");
    // Each change is audited with the policy.
    let (_, audit) = app.get("/admin/v1/audit?tail=50").await;
    let policies: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "client.dpop" || e["action"] == "client.add")
        .map(|e| format!("{} {}", e["action"], e["details"]["dpop"]))
        .collect();
    assert!(
        policies.contains(&"\"client.add\" \"optional\"".to_owned())
            && policies.contains(&"\"client.dpop\" \"required\"".to_owned()),
        "{policies:?}"
    );
}
