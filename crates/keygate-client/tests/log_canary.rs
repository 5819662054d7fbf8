//! Log canary: a whole session at TRACE level (client, reqwest, hyper) and the `Debug`
//! output of every client type hold no token, refresh token, code, state or proof.
//! In its own test binary so that no other test's tracing setup interferes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Setup, signed_in};
use keygate_client::{Method, TokenCache};
use secrecy::ExposeSecret;

/// A writer that collects everything the tracing subscriber prints.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_in_logs_or_debug_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let Setup {
        server,
        client,
        cache,
    } = signed_in().await;
    let first = cache.load().unwrap();
    client
        .request(Method::POST, "/proxy/x")
        .body("hello")
        .send()
        .await
        .unwrap();
    server.clock.advance(299);
    client.access_token().await.unwrap();
    let second = cache.load().unwrap();
    let (url, pending) = client.authorization_url(&["ai"]).unwrap();
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();

    let mut out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for debug in [
        format!("{client:?}"),
        format!("{pending:?}"),
        format!("{first:?}"),
        format!("{cache:?}"),
        format!("{:?}", client.request(Method::GET, "/proxy/a")),
    ] {
        out.push_str(&debug);
        out.push('\n');
    }
    assert!(out.contains("signed in"), "the canary must see the logs");
    for secret in [
        first.access_token.expose_secret(),
        first.refresh_token.as_ref().unwrap().expose_secret(),
        second.access_token.expose_secret(),
        second.refresh_token.as_ref().unwrap().expose_secret(),
        &state,
        "kgc_test",
        "at-secret",
        "kgr_secret",
    ] {
        assert!(!out.contains(secret), "leaked {secret}:\n{out}");
    }
}
