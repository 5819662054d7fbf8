//! The admin API over real HTTP against the real server on a fresh SQLite store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::TestApp;
use keygate_server::init_dir;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

#[tokio::test]
async fn health_and_readiness() {
    let mut app = TestApp::spawn().await;
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_admin_token_is_401_and_audited() {
    let mut app = TestApp::spawn().await;
    let r = app
        .http
        .get(format!("{}/admin/v1/secrets", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // From another address: a second failure from the same one would be aggregated.
    let r = from(std::net::Ipv4Addr::new(127, 0, 0, 3))
        .get(format!("{}/admin/v1/secrets", app.base))
        .bearer_auth("kga_wrong-token-value")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let (_, audit) = app.get("/admin/v1/audit").await;
    let denials: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "admin.auth" && e["outcome"] == "denied")
        .collect();
    assert_eq!(denials.len(), 2);
    assert_eq!(denials[0]["details"]["reason"], "missing");
    assert_eq!(denials[1]["details"]["reason"], "invalid");
    assert!(!audit.to_string().contains("kga_wrong-token-value"));
    app.stop().await;
}

/// A client whose connections come from `ip` (any 127/8 address reaches the loopback).
fn from(ip: std::net::Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(ip))
        .build()
        .unwrap()
}

fn admin_auth_denials(audit: &Value) -> Vec<Value> {
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "admin.auth" && e["outcome"] == "denied")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_admin_auth_flood_is_aggregated_and_rate_limited() {
    let mut app = TestApp::spawn_with(&[("KEYGATE_ADMIN__AUTH_FAILURE_WINDOW", "5s")]).await;
    let attacker = from(std::net::Ipv4Addr::new(127, 0, 0, 2));
    let (mut unauthorized, mut limited) = (0, 0);
    for i in 0..500 {
        let r = attacker
            .get(format!("{}/admin/v1/secrets", app.base))
            .bearer_auth(format!("kga_guess-{i}"))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let wait: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=5).contains(&wait), "{wait}");
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
        if i % 100 == 50 {
            // The real admin, from another address, is not slowed by the flood.
            let (s, _) = app.get("/admin/v1/secrets").await;
            assert_eq!(s, StatusCode::OK);
        }
    }
    assert!(limited > 0 && unauthorized + limited == 500);
    assert!(
        unauthorized <= 10 * 20,
        "at most the limit per window is checked"
    );

    // Once the windows have closed, every failure is in the log, in a handful of entries.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (denials, counted) = loop {
        let (_, audit) = app.get("/admin/v1/audit?tail=1000&limit=1000").await;
        let denials = admin_auth_denials(&audit);
        let counted: u64 = denials
            .iter()
            .map(|e| e["details"]["count"].as_u64().unwrap_or(1))
            .sum();
        if counted >= 500 || std::time::Instant::now() > deadline {
            break (denials, counted);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(counted, 500);
    assert!(denials.len() <= 8, "{} audit entries", denials.len());
    assert!(
        denials
            .iter()
            .all(|e| e["details"]["source"] == "127.0.0.2")
    );
    app.stop().await;
}

#[tokio::test]
async fn secret_lifecycle_and_specific_errors() {
    let mut app = TestApp::spawn().await;
    let (s, b) = app.put("openai", json!({"value": "sk-first"})).await;
    assert_eq!((s, b["version"].as_i64()), (StatusCode::OK, Some(1)));
    let (s, _) = app
        .put("openai", json!({"value": "sk-second", "cas": 1}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app
        .put("openai", json!({"value": "sk-third", "cas": 1}))
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );

    let r = app
        .http
        .get(format!("{}/admin/v1/secrets/openai", app.base))
        .bearer_auth(app.token.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["version"].as_i64(), b["value"].as_str()),
        (Some(2), Some("sk-second"))
    );

    let (s, b) = app.get("/admin/v1/secrets").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["secrets"][0]["name"], "openai");
    assert!(!b.to_string().contains("sk-"), "list never holds values");

    let (s, b) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/secrets/openai/rollback",
            Some(json!({"to": 1})),
        )
        .await;
    assert_eq!((s, b["version"].as_i64()), (StatusCode::OK, Some(3)));
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/secrets/openai/destroy",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app.get("/admin/v1/secrets/openai?version=1").await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::GONE, Some("destroyed"))
    );
    let (s, b) = app.get("/admin/v1/secrets/openai/versions").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["versions"].as_array().unwrap().len(), 3);

    let (s, _) = app
        .call(reqwest::Method::DELETE, "/admin/v1/secrets/openai", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app.get("/admin/v1/secrets/openai").await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("deleted"))
    );
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/secrets/openai/undelete",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, b) = app.get("/admin/v1/secrets/unknown").await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, b) = app.get("/admin/v1/secrets/bad%20name").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("invalid secret name")
    );
    let (s, _) = app.put(".hidden", json!({"value": "x"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn oversized_values_are_413_and_malformed_bodies_do_not_echo_input() {
    let mut app = TestApp::spawn().await;
    let (s, b) = app
        .put("big", json!({"value": "x".repeat(64 * 1024 + 1)}))
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
    );
    let (s, _) = app
        .put("huge", json!({"value": "x".repeat(4 * 1024 * 1024)}))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, b) = app
        .put(
            "typo",
            json!({"valeu": "sk-canary-in-wrong-field", "value": ["sk-canary-2"]}),
        )
        .await;
    assert!(s.is_client_error(), "{s}");
    let text = b.to_string();
    assert!(!text.contains("sk-canary"), "{text}");
    let (s, _) = app.put("empty", json!({"value": ""})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = app.get("/admin/v1/secrets").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b["secrets"].as_array().unwrap().len(),
        0,
        "nothing stored by bad requests"
    );
    app.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_master_key_starts_sealed() {
    let mut app = TestApp::spawn().await;
    let (s, _) = app.put("k", json!({"value": "sk-sealed-test"})).await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let token = app.token.clone();

    // A different key in the file: sealed, not a crash.
    let key_path = dir.path().join("master.key");
    let original = std::fs::read(&key_path).unwrap();
    std::fs::remove_file(&key_path).unwrap();
    keygate_vault::write_key_file(&key_path, &keygate_vault::MasterKey::generate()).unwrap();
    let mut sealed = TestApp::start(dir, token.clone()).await;
    let r = sealed
        .http
        .get(format!("{}/readyz", sealed.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "sealed");
    let r = sealed
        .http
        .get(format!("{}/healthz", sealed.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for path in ["/admin/v1/secrets/k", "/admin/v1/secrets"] {
        let (s, b) = sealed.get(path).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(b["error"], "sealed");
        assert!(b["message"].as_str().unwrap().contains("master key"));
        assert!(!b.to_string().contains("sk-sealed-test"));
    }
    let (s, _) = sealed.put("k", json!({"value": "new"})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    sealed.stop().await;

    // No key file at all: sealed too.
    let dir = std::mem::replace(&mut sealed.dir, tempfile::tempdir().unwrap());
    std::fs::remove_file(&key_path).unwrap();
    let mut missing = TestApp::start(dir, token.clone()).await;
    let (s, _) = missing.get("/admin/v1/secrets/k").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    missing.stop().await;

    // The right key again: everything is there.
    let dir = std::mem::replace(&mut missing.dir, tempfile::tempdir().unwrap());
    std::fs::write(&key_path, original).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut back = TestApp::start(dir, token).await;
    let (s, b) = back.get("/admin/v1/secrets/k").await;
    assert_eq!(
        (s, b["value"].as_str()),
        (StatusCode::OK, Some("sk-sealed-test"))
    );
    back.stop().await;
}

#[tokio::test]
async fn checkpoints_are_written_and_verify_passes() {
    let mut app = TestApp::spawn().await;
    for i in 0..3 {
        app.put("k", json!({"value": format!("value-{i}")})).await;
    }
    let (s, v) = app.get("/admin/v1/audit/verify").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    app.stop().await;
    let file = app
        .dir
        .path()
        .join("keygate-data")
        .join("audit-checkpoints.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["seq"], v["head_seq"],
        "the shutdown checkpoint covers the head"
    );
}

#[tokio::test]
async fn second_init_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    init_dir(dir.path(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config_before = std::fs::read(dir.path().join("keygate.toml")).unwrap();
    let key_before = std::fs::read(dir.path().join("master.key")).unwrap();
    let err = init_dir(dir.path(), "127.0.0.1:0".parse().unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("keygate.toml")).unwrap(),
        config_before
    );
    assert_eq!(
        std::fs::read(dir.path().join("master.key")).unwrap(),
        key_before
    );
}
