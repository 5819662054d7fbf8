//! The client's protocol logic against a small local HTTP server (see `common`):
//! nonce retries (token endpoint and resource), nonce memory, refresh before expiry with
//! an injected clock, single-flight rotation, sign-out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use common::{REDIRECT, Setup, calls, sign_in, signed_in, start};
use keygate_client::{
    Client, ClientConfig, ClientError, Clock, KeyStore, MemoryKeyStore, MemoryTokenCache, Method,
    TokenCache,
};
use secrecy::ExposeSecret;

#[tokio::test]
async fn code_flow_retries_once_with_the_token_endpoint_nonce() {
    let Setup { server, client, .. } = signed_in().await;
    // First token request had no nonce (400 use_dpop_nonce), the retry carried it.
    assert_eq!(calls(&server), (2, 0, 0));
    assert_eq!(
        server.state.lock().unwrap().bound_jkt.as_ref(),
        Some(client.jkt())
    );
    assert!(client.is_signed_in());
}

#[tokio::test]
async fn resource_nonce_retry_then_nonce_is_remembered() {
    let Setup { server, client, .. } = signed_in().await;
    let response = client
        .request(
            Method::POST,
            "/proxy/openai/v1/chat/completions?stream=false",
        )
        .json(&serde_json::json!({"model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"model":"m"}"#);
    // 401 use_dpop_nonce, then the retry with the nonce (and the same body).
    assert_eq!(calls(&server).2, 2);
    // The next request carries the remembered nonce at once.
    let response = client
        .request(Method::GET, "/proxy/openai/v1/models")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls(&server).2, 3);
    let nonces = server.state.lock().unwrap().resource_nonces.clone();
    // The first proof carried the token endpoint's nonce (same origin), which this
    // resource does not accept; the retry carried the resource's.
    assert!(nonces[1].is_some());
    assert_ne!(nonces[0], nonces[1]);
    assert_eq!(nonces[1], nonces[2]);
}

#[tokio::test]
async fn nonce_retry_happens_once_only() {
    let Setup { server, client, .. } = signed_in().await;
    server.state.lock().unwrap().always_nonce = true;
    // Token endpoint: two attempts, then the error surfaces.
    let before = calls(&server).0;
    let err = client.refresh().await.unwrap_err();
    assert_eq!(calls(&server).0 - before, 2);
    assert!(matches!(err, ClientError::OAuth { ref error, .. } if error == "use_dpop_nonce"));
    // A proactive refresh that fails transiently keeps using the still-valid token.
    server.clock.advance(280);
    let before = calls(&server).0;
    assert!(client.access_token().await.is_ok());
    assert_eq!(calls(&server).0 - before, 2);
}

#[tokio::test]
async fn resource_gives_up_after_one_retry() {
    let Setup { server, client, .. } = signed_in().await;
    server.state.lock().unwrap().always_nonce = true;
    let response = client
        .request(Method::GET, "/proxy/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(calls(&server).2, 2);
}

#[tokio::test]
async fn stale_nonce_is_replaced() {
    let Setup { server, client, .. } = signed_in().await;
    let url = url::Url::parse(&format!("{}/proxy/x", server.base)).unwrap();
    let mut h = HeaderMap::new();
    h.insert("DPoP-Nonce", HeaderValue::from_static("stale"));
    client.observe_nonce(&url, &h);
    // The stale nonce gets a use_dpop_nonce answer; the retry uses the fresh one.
    let response = client
        .request(Method::GET, "/proxy/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls(&server).2, 2);
    let nonces = server.state.lock().unwrap().resource_nonces.clone();
    assert_eq!(nonces[0].as_deref(), Some("stale"));
}

#[tokio::test]
async fn refreshes_before_expiry_with_margin_and_rotates() {
    let Setup {
        server,
        client,
        cache,
    } = signed_in().await;
    let first = cache.load().unwrap();
    let first_refresh = first.refresh_token.clone().unwrap();
    // 269 s after issue: 31 s left, outside the 30 s margin: no refresh.
    server.clock.advance(269);
    let token = client.access_token().await.unwrap();
    assert_eq!(token.expose_secret(), first.access_token.expose_secret());
    assert_eq!(calls(&server).1, 0);
    // 270 s: 30 s left: refresh now, before the token expires.
    server.clock.advance(1);
    let token = client.access_token().await.unwrap();
    assert_ne!(token.expose_secret(), first.access_token.expose_secret());
    assert_eq!(calls(&server).1, 1);
    let second = cache.load().unwrap();
    assert_ne!(
        second.refresh_token.as_ref().unwrap().expose_secret(),
        first_refresh.expose_secret()
    );
    assert_eq!(second.expires_at, server.clock.now().plus(300));
    // The server checked that the refresh proof came from the bound key (expected_jkt).
    // A resource request now uses the new token.
    let response = client
        .request(Method::GET, "/proxy/a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn configurable_margin() {
    let server = start().await;
    let mut config = ClientConfig::new(&server.base, "ios-app", REDIRECT).unwrap();
    config.refresh_margin = std::time::Duration::from_secs(120);
    let client = Client::builder(
        config,
        Arc::new(MemoryKeyStore::generate()),
        Arc::new(MemoryTokenCache::new()),
    )
    .clock(server.clock.clone())
    .discover()
    .await
    .unwrap();
    sign_in(&server, &client).await;
    server.clock.advance(179);
    client.access_token().await.unwrap();
    assert_eq!(calls(&server).1, 0);
    server.clock.advance(1);
    client.access_token().await.unwrap();
    assert_eq!(calls(&server).1, 1);
}

#[tokio::test]
async fn concurrent_requests_refresh_once() {
    let Setup { server, client, .. } = signed_in().await;
    server.clock.advance(400); // expired
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(
                async move { c.access_token().await.map(|t| t.expose_secret().to_owned()) },
            )
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1);
    assert_eq!(calls(&server).1, 1);
}

#[tokio::test]
async fn refused_refresh_clears_tokens() {
    let Setup {
        server,
        client,
        cache,
    } = signed_in().await;
    server.state.lock().unwrap().refuse_refresh = true;
    server.clock.advance(290);
    assert!(matches!(
        client.access_token().await,
        Err(ClientError::ReauthenticationRequired)
    ));
    assert!(cache.load().is_none());
    assert!(matches!(
        client.request(Method::GET, "/proxy/a").send().await,
        Err(ClientError::NotSignedIn)
    ));
}

#[tokio::test]
async fn revoke_sends_refresh_token_and_forgets_tokens() {
    let Setup {
        server,
        client,
        cache,
    } = signed_in().await;
    let refresh = cache.load().unwrap().refresh_token.unwrap();
    client.revoke().await.unwrap();
    assert!(cache.load().is_none());
    let revoked = server.state.lock().unwrap().revoked.clone();
    assert_eq!(
        revoked,
        vec![(refresh.expose_secret().to_owned(), "ios-app".to_owned())]
    );
    // Signing out twice is harmless.
    client.revoke().await.unwrap();
}

#[tokio::test]
async fn requests_off_keygate_are_refused_before_sending() {
    let Setup { server, client, .. } = signed_in().await;
    let err = client
        .request(Method::GET, "https://evil.example/proxy/a")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidUrl(_)));
    assert_eq!(calls(&server).2, 0);
}

#[tokio::test]
async fn dpop_headers_for_other_http_stacks() {
    let Setup {
        server,
        client,
        cache,
    } = signed_in().await;
    let url = url::Url::parse(&format!("{}/proxy/x?y=1", server.base)).unwrap();
    let headers = client.dpop_headers(&Method::GET, &url).await.unwrap();
    let token = cache.load().unwrap().access_token;
    assert_eq!(
        headers.authorization.expose_secret(),
        format!("DPoP {}", token.expose_secret())
    );
    let debug = format!("{headers:?}");
    assert!(!debug.contains(token.expose_secret()));
    assert!(!debug.contains(headers.dpop.expose_secret()));
}

#[tokio::test]
async fn key_store_jkt_is_the_bound_key() {
    let server = start().await;
    let key = Arc::new(MemoryKeyStore::generate());
    let config = ClientConfig::new(&server.base, "ios-app", REDIRECT).unwrap();
    let client = Client::builder(config, key.clone(), Arc::new(MemoryTokenCache::new()))
        .clock(server.clock.clone())
        .discover()
        .await
        .unwrap();
    assert_eq!(client.jkt(), &key.thumbprint().unwrap());
}

#[tokio::test]
async fn device_clock_far_off_is_corrected_from_the_server_date() {
    let server = start().await;
    // The phone's clock is an hour behind: every proof's iat is out of keygate's window.
    let phone_clock = Arc::new(keygate_client::FixedClock::new(
        server.clock.now().minus(3600),
    ));
    let config = ClientConfig::new(&server.base, "ios-app", REDIRECT).unwrap();
    let cache = Arc::new(MemoryTokenCache::new());
    let client = Client::builder(config, Arc::new(MemoryKeyStore::generate()), cache.clone())
        .clock(phone_clock.clone())
        .discover()
        .await
        .unwrap();
    let (url, pending) = client.authorization_url(&["ai"]).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    {
        let mut st = server.state.lock().unwrap();
        st.challenge = Some(q["code_challenge"].clone());
        st.dpop_jkt = Some(q["dpop_jkt"].clone());
    }
    let callback = format!("{REDIRECT}?code=kgc_test&state={}", q["state"]);
    client
        .exchange_code(pending, &callback, None)
        .await
        .unwrap();
    // invalid_dpop_proof (iat) with the server's Date, then use_dpop_nonce, then success.
    assert_eq!(calls(&server).0, 3);
    // Expiry stays on the phone's own clock (relative lifetime).
    assert_eq!(
        cache.load().unwrap().expires_at,
        phone_clock.now().plus(300)
    );
    // Later proofs use the corrected time at once (one nonce round trip for the
    // resource's own nonce, no clock round trip).
    let response = client
        .request(Method::GET, "/proxy/a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls(&server).2, 2);
}

#[tokio::test]
async fn small_clock_differences_change_nothing() {
    let Setup { server, client, .. } = signed_in().await;
    // In sync: the first resource call needs only its nonce round trip.
    let response = client
        .request(Method::GET, "/proxy/a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(calls(&server).2, 2);
}
