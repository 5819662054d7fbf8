//! Canary keys (S22): after a run of successful, refused and failing calls, no form of
//! the key appears in anything the app received, in the logs (captured at TRACE, every
//! target, with span fields), or in the metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const KEY: &str = "sk-CANARY-d41d8cd98f00b204e980";
const QKEY: &str = "qk-CANARY/e9800998ecf8427e";

#[tokio::test]
async fn canary_keys_never_leave_the_injection_point() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let a = start_upstream().await;
    let routes = format!(
        r#"
[routes.h]
upstream = "{a}"
secret = "h"
inject = {{ header = "Authorization", value = "Bearer {{secret}}" }}
allow = ["GET /ok", "GET /echo-error", "GET /big-error", "GET /sse"]
limits = {{ rate = "3/min", burst = 3 }}

[routes.q]
upstream = "{a}"
secret = "q"
inject = {{ query = "key" }}
allow = ["GET /ok", "GET /echo-error"]

[routes.down]
upstream = "http://127.0.0.1:1"
secret = "h"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /x"]
"#,
        a = a.url()
    );
    let proxy = start_proxy(&routes, &[("h", KEY), ("q", QKEY)]).await;
    let mut answers = Vec::new();
    for (m, t) in [
        ("GET", "/proxy/h/ok"),
        ("GET", "/proxy/h/echo-error"),
        ("GET", "/proxy/h/big-error"),
        ("GET", "/proxy/h/sse"),
        ("GET", "/proxy/h/ok"),
        ("GET", "/proxy/q/ok?key=mine"),
        ("GET", "/proxy/q/echo-error?x=1"),
        ("GET", "/proxy/down/x"),
        ("DELETE", "/proxy/h/ok"),
        ("GET", "/proxy/h/%2e%2e/x"),
    ] {
        let r = send(&proxy, m, t, &[], "").await;
        let mut text = format!("{}\n", r.status);
        for (n, v) in &r.headers {
            text.push_str(&format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        text.push_str(&String::from_utf8_lossy(&r.body));
        answers.push(text);
    }
    let (raw_answer, _) = raw(
        proxy.addr,
        b"POST /proxy/h/ok HTTP/1.1\r\nHost: g\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    answers.push(raw_answer);
    // The upstream did receive the keys (the test would prove nothing otherwise).
    let seen = a.requests();
    assert!(seen.iter().any(|r| {
        r.headers
            .get("authorization")
            .is_some_and(|v| v == format!("Bearer {KEY}").as_str())
    }));
    assert!(
        seen.iter()
            .any(|r| r.target.contains("key=qk-CANARY%2Fe98"))
    );

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("redacted"),
        "the redaction warning should be logged"
    );
    let metrics = proxy.metrics.render();
    for key in [KEY, QKEY] {
        let forms = [
            key.to_owned(),
            base64::engine::general_purpose::STANDARD.encode(key),
            percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
            "CANARY".to_owned(),
        ];
        for form in &forms {
            for (i, a) in answers.iter().enumerate() {
                assert!(
                    !a.contains(form.as_str()),
                    "answer {i} contains {form}: {a}"
                );
            }
            assert!(!metrics.contains(form.as_str()), "metrics contain {form}");
            if let Some(at) = logs.find(form.as_str()) {
                let from = at.saturating_sub(300);
                panic!(
                    "logs contain {form}: …{}…",
                    &logs[from..(at + 100).min(logs.len())]
                );
            }
        }
    }
}
