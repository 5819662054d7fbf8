//! The monitor acting by itself, on the real server: scripted traffic goes through the
//! proxy (keygate-client with DPoP for a signed-in user, client-credentials tokens for
//! many others), the monitor's clock is a `ManualClock` the test moves, and evaluation is
//! driven with `run_once` so simulated hours take seconds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{TestApp, free_addr, load_config};
use keygate_client::{Client, ClientConfig, MemoryKeyStore, MemoryTokenCache, Method};
use keygate_monitor::clock::{Clock, ManualClock};
use keygate_server::StartOptions;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const REDIRECT: &str = "com.example.app:/oauth/callback";
const PASSWORD: &str = "correct horse battery staple";
/// 2026-12-07T00:00:00Z: simulated time starts at a midnight.
const T0: i64 = 1_796_601_600_000;

async fn upstream() -> String {
    let app = Router::new().route(
        "/v1/models",
        get(|| async { axum::Json(json!({"data": []})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct World {
    app: TestApp,
    clock: Arc<ManualClock>,
}

impl World {
    fn monitor(&self) -> &Arc<keygate_server::monitor::MonitorService> {
        self.app
            .server
            .as_ref()
            .unwrap()
            .monitor()
            .expect("the monitor runs")
    }

    /// Moves simulated time and evaluates once.
    async fn tick(&self, by: Duration) -> Vec<keygate_store::AlertRecord> {
        self.clock.advance(by);
        self.monitor().run_once().await
    }

    async fn alerts(&self) -> Vec<Value> {
        let (s, b) = self.app.get("/admin/v1/alerts?all=true").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["alerts"].as_array().unwrap().clone()
    }
}

/// A server whose `[monitor]` section is `monitor` (TOML appended to the config), with a
/// route `api` to a fake upstream that allows `GET /v1/models`.
async fn world(monitor: &str) -> World {
    let clock = Arc::new(ManualClock::new(T0));
    // Bearer tokens too: the many-user test uses client-credentials tokens without DPoP.
    let app = TestApp::spawn_with_options(
        |_| monitor.to_owned(),
        &[("KEYGATE_TOKENS__DPOP", "optional")],
        StartOptions {
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await;
    let (s, _) = app
        .put("api-key", json!({"value": "sk-upstream-key-0123456789"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let routes = format!(
        "[routes.api]\nupstream = \"{}\"\nsecret = \"api-key\"\ninject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\nallow = [\"GET /v1/models\"]\nscopes = [\"ai\"]\n",
        upstream().await
    );
    let (s, b) = app
        .call(
            reqwest::Method::PUT,
            "/admin/v1/routes",
            Some(json!({"toml": routes})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    World { app, clock }
}

/// A signed-in user with a DPoP key (a session family), as a mobile app would be.
async fn signed_in(w: &World, name: &str) -> Client {
    signed_in_with(w, name, Arc::new(MemoryTokenCache::new()))
        .await
        .0
}

/// [`signed_in`] keeping its tokens in `cache`; also returns the app's configuration.
async fn signed_in_with(
    w: &World,
    name: &str,
    cache: Arc<MemoryTokenCache>,
) -> (Client, ClientConfig) {
    let app = &w.app;
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/users",
            Some(json!({"name": name, "password": PASSWORD, "scopes": ["ai"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, c) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"name": format!("app-{name}"), "type": "public", "redirect_uris": [REDIRECT], "scopes": ["ai"]})),
        )
        .await;
    let config = ClientConfig::new(&app.base, c["client_id"].as_str().unwrap(), REDIRECT).unwrap();
    let client = Client::builder(config.clone(), Arc::new(MemoryKeyStore::generate()), cache)
        .discover()
        .await
        .unwrap();
    let (url, pending) = client.authorization_url(&["ai"]).unwrap();
    let callback = keygate_client::headless::sign_in(&url, name, PASSWORD)
        .await
        .unwrap();
    client
        .exchange_code(pending, &callback, None)
        .await
        .unwrap();
    (client, config)
}

async fn models(client: &Client) -> u16 {
    match client
        .request(Method::GET, "/proxy/api/v1/models")
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        // keygate-client refreshes once after a 401; a revoked session fails that too.
        Err(_) => 401,
    }
}

/// A confidential client's Bearer token (the "user" is the client), for many cheap users.
async fn machine_token(app: &TestApp, name: &str) -> String {
    let (s, c) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"name": name, "type": "confidential", "scopes": ["ai"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let r = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .basic_auth(
            c["client_id"].as_str().unwrap(),
            Some(c["client_secret"].as_str().unwrap()),
        )
        .form(&[("grant_type", "client_credentials"), ("scope", "ai")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b: Value = r.json().await.unwrap();
    b["access_token"].as_str().unwrap().to_owned()
}

const SPIKE: &str = r#"
[monitor]
interval = "1s"
default_rules = false

[[monitor.rules]]
name = "user-spike"
kind = "spike"
scope = "user"
factor = 10.0
window = "10s"
min_calls = 15
actions = ["throttle", "revoke"]
throttle_per_minute = 30
throttle_for = "15m"
escalate_after = "20s"
"#;

/// A webhook receiver: every delivery's headers and body.
async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, Vec<u8>)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hooks/keygate",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((headers, body.to_vec()));
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/keygate", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

const HOOK_KEY: &str = "whsec-monitor-test-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_spiking_20x_is_throttled_then_revoked_and_everyone_is_told_why() {
    let (hook_url, mut deliveries) = receiver().await;
    let mut w = world(&format!(
        "{SPIKE}\n[[monitor.webhooks]]\nurl = \"{hook_url}\"\nevents = [\"alert\"]\nsecret = \"hook-key\"\n"
    ))
    .await;
    let (s, _) = w.app.put("hook-key", json!({"value": HOOK_KEY})).await;
    assert_eq!(s, StatusCode::OK);
    let alice = signed_in(&w, "alice").await;
    let bob = signed_in(&w, "bob").await;

    // An hour of ordinary use: six calls a simulated minute each.
    for _ in 0..60 {
        for _ in 0..6 {
            assert_eq!(models(&alice).await, 200);
            assert_eq!(models(&bob).await, 200);
        }
        let alerts = w.tick(Duration::from_secs(60)).await;
        assert!(alerts.is_empty(), "ordinary use raised {alerts:?}");
    }

    // Alice's app goes rogue: 20 calls every 10 simulated seconds, 120 a minute (20x).
    let spike_start = w.clock.now_ms();
    let mut statuses = Vec::new();
    let mut actions = Vec::new();
    for _ in 0..6 {
        for _ in 0..20 {
            statuses.push(models(&alice).await);
        }
        assert_eq!(models(&bob).await, 200, "bob is not affected");
        for a in w.tick(Duration::from_secs(10)).await {
            actions.push((a.action.clone(), a.created_ms - spike_start));
        }
    }
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        ["throttle", "revoke"],
        "one throttle, then one revoke: {actions:?}"
    );
    assert!(
        actions[0].1 <= 20_000,
        "throttled within two evaluations: {actions:?}"
    );
    assert!(
        actions[1].1 <= 60_000,
        "revoked within the window: {actions:?}"
    );
    assert!(
        statuses.contains(&429),
        "the throttle refused calls: {statuses:?}"
    );
    // The session is revoked: the very next call is refused (S12), bob still works.
    assert_eq!(models(&alice).await, 401);
    assert_eq!(models(&bob).await, 200);

    // `alert list` shows why; the audit names the rule and evidence, never a token.
    let alerts = w.alerts().await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let throttle = alerts.iter().find(|a| a["action"] == "throttle").unwrap();
    assert_eq!(throttle["rule"], "user-spike");
    assert!(throttle["subject"].as_str().unwrap().starts_with("user:"));
    assert!(
        throttle["evidence"]["baseline_per_min"].as_f64().unwrap() > 0.0,
        "{throttle}"
    );
    let revoke = alerts.iter().find(|a| a["action"] == "revoke").unwrap();
    assert_eq!(revoke["evidence"]["revoked_sessions"], 1, "{revoke}");
    let (_, audit) = w.app.get("/admin/v1/audit?tail=50").await;
    let entries = audit["entries"].as_array().unwrap();
    for action in ["monitor.throttle", "monitor.revoke", "monitor.alert"] {
        let e = entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {audit}"));
        assert_eq!(e["actor"], "monitor");
        assert!(e.to_string().contains("user-spike"), "{e}");
    }
    let token = alice.access_token().await.unwrap();
    assert!(
        !audit.to_string().contains(token.expose_secret()),
        "no token in the audit"
    );
    let metrics = w.app.text("/metrics").await;
    assert!(
        metrics.contains(
            "keygate_monitor_actions_total{rule=\"user-spike\",action=\"revoke\",outcome=\"done\"} 1"
        ),
        "{metrics}"
    );

    // Both alerts reached the webhook, signed with the key from the vault.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (headers, body) = tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
            .await
            .expect("a webhook delivery within 10s")
            .unwrap();
        use hmac::{Hmac, Mac};
        let ts = headers["x-keygate-timestamp"].to_str().unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HOOK_KEY.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(&body);
        let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-keygate-signature"].to_str().unwrap(), expected);
        assert_eq!(headers["x-keygate-event"], "alert");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"]["rule"], "user-spike", "{v}");
        assert!(!String::from_utf8_lossy(&body).contains(HOOK_KEY));
        seen.push(v["data"]["action"].as_str().unwrap().to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["revoke", "throttle"]);

    // Idempotent: the incident goes on, nothing more is done or sent.
    for _ in 0..20 {
        models(&alice).await;
    }
    assert!(w.tick(Duration::from_secs(10)).await.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(deliveries.try_recv().is_err(), "no further webhook");

    // The operator reverses it: ack, lift the throttle; alice signs in again.
    let id = throttle["id"].as_str().unwrap();
    let (s, b) = w
        .app
        .call(
            reqwest::Method::POST,
            &format!("/admin/v1/alerts/{id}/ack"),
            None,
        )
        .await;
    assert_eq!((s, b["changed"].clone()), (StatusCode::OK, json!(true)));
    let (_, open) = w.app.get("/admin/v1/alerts").await;
    assert_eq!(
        open["alerts"].as_array().unwrap().len(),
        1,
        "one still open"
    );
    let (_, t) = w.app.get("/admin/v1/throttles").await;
    let subject = t["throttles"][0]["subject"].as_str().unwrap().to_owned();
    let (s, b) = w
        .app
        .call(
            reqwest::Method::DELETE,
            &format!("/admin/v1/throttles/{subject}"),
            None,
        )
        .await;
    assert_eq!(
        (s, b["lifted"].clone()),
        (StatusCode::OK, json!(true)),
        "{b}"
    );
    let (_, t) = w.app.get("/admin/v1/throttles").await;
    assert!(t["throttles"].as_array().unwrap().is_empty());
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_from_50_users_over_simulated_hours_raises_no_alert() {
    // The default rules, as shipped.
    let mut w = world("[monitor]\ninterval = \"1s\"\n").await;
    let mut tokens = Vec::new();
    for i in 0..50 {
        tokens.push(machine_token(&w.app, &format!("svc-{i}")).await);
    }
    let url = format!("{}/proxy/api/v1/models", w.app.base);
    let mut calls = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Three simulated hours, evaluated every 30 s: each user's rate follows the time of
    // day (a day compressed into the run) with per-user spread and jitter.
    for step in 0..360u64 {
        let phase = (step as f64 / 360.0) * std::f64::consts::TAU;
        let day = 1.0 + 0.6 * phase.sin();
        let mut batch = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let base = 0.5 + (i % 5) as f64 * 0.4; // 0.5..2.1 calls per 30 s
            let jitter = (next() % 100) as f64 / 100.0;
            let n = (base * day + jitter).floor() as usize;
            for _ in 0..n {
                batch.push(w.app.http.get(&url).bearer_auth(token).send());
            }
        }
        calls += batch.len() as u64;
        for r in futures_util::future::join_all(batch).await {
            let r = r.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "step {step}: {:?}", r.headers());
        }
        let alerts = w.tick(Duration::from_secs(30)).await;
        assert!(alerts.is_empty(), "step {step}: false alarm {alerts:?}");
    }
    assert!(calls > 10_000, "enough traffic to mean something: {calls}");
    assert!(w.alerts().await.is_empty());
    let (s, snap) = w.app.get("/admin/v1/monitor").await;
    assert_eq!(s, StatusCode::OK, "{snap}");
    let users = snap["users"].as_array().unwrap();
    assert_eq!(users.len(), 50, "{snap}");
    assert!(
        users.iter().all(|u| u["baseline_counts"] == true),
        "every user has a baseline after three hours: {snap}"
    );
    assert_eq!(snap["geoip"], "none: prefix rules only");
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_shown_with_another_key_revokes_its_session_at_once() {
    // The default rules, as shipped: key-change revokes on first sight.
    let mut w = world("[monitor]\ninterval = \"1s\"\n").await;
    let cache = Arc::new(MemoryTokenCache::new());
    let (alice, config) = signed_in_with(&w, "alice", cache.clone()).await;
    assert_eq!(models(&alice).await, 200);
    assert!(w.tick(Duration::from_secs(2)).await.is_empty());
    // The refresh token leaks (same token cache); the thief has its own DPoP key.
    let thief = Client::builder(config, Arc::new(MemoryKeyStore::generate()), cache)
        .discover()
        .await
        .unwrap();
    assert!(
        thief.refresh().await.is_err(),
        "keygate refuses the other key (S16)"
    );
    let alerts = w.tick(Duration::from_secs(2)).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].rule.as_str(), alerts[0].action.as_str()),
        ("key-change", "revoke")
    );
    assert!(alerts[0].subject.starts_with("session:"), "{alerts:?}");
    assert!(
        alerts[0].evidence.contains("\"revoked_sessions\":1"),
        "{alerts:?}"
    );
    // Revoked before the thief could try anything else: the owner's next call fails too.
    assert_eq!(models(&alice).await, 401);
    assert!(w.tick(Duration::from_secs(2)).await.is_empty(), "once");
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_geoip_database_stops_the_start_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    keygate_server::init_dir(dir.path(), free_addr())
        .await
        .unwrap();
    std::fs::write(
        dir.path().join("geo.mmdb"),
        b"not a maxmind database at all",
    )
    .unwrap();
    let path = dir.path().join("keygate.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[monitor]\ngeoip_db = \"geo.mmdb\"\n");
    std::fs::write(&path, text).unwrap();
    let config = load_config(dir.path(), &[]);
    let err = keygate_server::start(config).await.err().expect("refused");
    let text = format!("{err:#}");
    assert!(text.starts_with("monitor.geoip_db: "), "{text}");
    assert!(text.contains("MaxMind"), "{text}");

    // A valid database is used, and the monitor says so.
    let db = keygate_monitor::geo::testing::write_mmdb(&[(
        "127.0.0.0".parse().unwrap(),
        8,
        keygate_monitor::geo::GeoInfo {
            country: "NL".into(),
            asn: Some(64_500),
            location: Some((52.37, 4.90)),
        },
    )]);
    std::fs::write(dir.path().join("geo.mmdb"), db).unwrap();
    let config = load_config(dir.path(), &[]);
    let server = keygate_server::start(config).await.unwrap();
    let snap = server.monitor().unwrap().monitor.snapshot();
    assert!(snap.geoip.ends_with("geo.mmdb"), "{}", snap.geoip);
    assert_eq!(snap.impossible_travel, "active");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_route_gets_its_key_rotated_through_the_rotation_hook() {
    use std::os::unix::fs::PermissionsExt;
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("next.sh");
    std::fs::write(&hook, "#!/bin/sh\nread v; echo \"${v}-next\"\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut w = world(&format!(
        "[rotation.hooks.next]\ncommand = [\"{}\"]\n\n[monitor]\ninterval = \"1s\"\ndefault_rules = false\n\n[[monitor.rules]]\nname = \"route-flood\"\nkind = \"ceiling\"\nscope = \"route\"\ncalls_per_minute = 60\nactions = [\"rotate\"]\n",
        hook.display()
    ))
    .await;
    // Without a schedule (no hook for the key) the action fails, and the alert says why.
    let token = machine_token(&w.app, "svc-flood").await;
    let url = format!("{}/proxy/api/v1/models", w.app.base);
    let flood = |n: usize| {
        let (http, url, token) = (w.app.http.clone(), url.clone(), token.clone());
        async move {
            for _ in 0..n {
                let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }
        }
    };
    flood(20).await;
    let alerts = w.tick(Duration::from_secs(10)).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].action.as_str(), alerts[0].subject.as_str()),
        ("rotate", "route:api")
    );
    assert!(
        alerts[0]
            .evidence
            .contains("failed: rotating secret api-key"),
        "{}",
        alerts[0].evidence
    );
    // With a schedule, the next incident rotates the key; the proxy injects version 2.
    let (s, b) = w
        .app
        .call(
            reqwest::Method::PUT,
            "/admin/v1/secrets/api-key/schedule",
            Some(json!({"rotate_every": "30d", "hook": "next"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let id = alerts[0].id.clone();
    w.app
        .call(
            reqwest::Method::POST,
            &format!("/admin/v1/alerts/{id}/ack"),
            None,
        )
        .await;
    flood(20).await;
    let alerts = w.tick(Duration::from_secs(10)).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0]
            .evidence
            .contains("route key rotated to version 2"),
        "{}",
        alerts[0].evidence
    );
    let (_, v) = w.app.get("/admin/v1/secrets/api-key").await;
    assert_eq!(v["value"], "sk-upstream-key-0123456789-next", "{v}");
    assert_eq!(v["version"], 2);
    let (_, audit) = w.app.get("/admin/v1/audit?tail=20").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "secret.rotate"),
        "{audit}"
    );
    w.app.stop().await;
}
