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
async fn answers_carry_the_headers_a_security_scanner_expects() {
    let mut app = TestApp::spawn().await;
    let get = |path: &str, auth: bool| {
        let mut req = app.http.get(format!("{}{path}", app.base));
        if auth {
            req = req.bearer_auth(app.token.expose_secret());
        }
        req.send()
    };
    for (path, auth) in [
        ("/admin/v1/secrets", true),
        ("/admin/v1/secrets", false),
        ("/ci/v1/secrets", false),
        ("/healthz", false),
        ("/no/such/path", false),
    ] {
        let r = get(path, auth).await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        if path.starts_with("/admin/") || path.starts_with("/ci/") {
            assert_eq!(h["cache-control"], "no-store", "{path}");
            assert_eq!(
                h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'",
                "{path}"
            );
        }
    }
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
    // A proxied call is refused with 503, and counted like every other refusal.
    let r = sealed
        .http
        .get(format!("{}/proxy/any/v1/models", sealed.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let metrics = sealed.text("/metrics").await;
    assert!(
        metrics.contains(
            r#"keygate_proxy_refused_total{route="unknown",reason="unavailable",fault="keygate"} 1"#
        ),
        "{metrics}"
    );
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

/// Issue 19: after one "database or disk is full" every later write answered 503 until a
/// restart, while `/readyz` still said ready. The full disk is simulated with SQLite's
/// `max_page_count` on the server's own store (see `SqlStore::simulate_full_disk`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_is_not_ready_and_writes_recover() {
    use keygate_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let init = init_dir(dir.path(), common::free_addr()).await.unwrap();
    let config = common::load_config(dir.path(), &[]);
    let store = keygate_store::SqlStore::connect(&config.storage_url)
        .await
        .unwrap();
    let server = keygate_server::start_with_store(config, std::sync::Arc::new(store.clone()))
        .await
        .unwrap();
    let mut app = TestApp {
        db: None,
        base: format!("http://{}", server.addr()),
        server: Some(server),
        dir,
        token: init.admin_token,
        http: reqwest::Client::new(),
    };
    let readyz = |app: &TestApp| {
        let req = app.http.get(format!("{}/readyz", app.base));
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, _) = app.put("openai", json!({"value": "sk-first"})).await;
    assert_eq!(s, StatusCode::OK);
    let big = "x".repeat(40_000);

    store.simulate_full_disk(true).await.unwrap();
    let (s, b) = app.put("openai", json!({"value": big})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );
    // Fill the pages the file still has, as a full disk would not have them either.
    for pad in [500, 50, 0] {
        for i in 0..10_000 {
            let event =
                keygate_audit::AuditEvent::new("test", "filler", keygate_audit::Outcome::Success)
                    .detail("pad", "x".repeat(pad))
                    .detail("i", i);
            if store.append_audit(event, 1).await.is_err() {
                break;
            }
        }
    }
    let (s, b) = readyz(&app).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        b,
        json!({"ready": false, "reason": "store: writes failing"})
    );
    // A read that must be audited says why it was refused.
    let (s, b) = app.get("/admin/v1/secrets/openai").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b["error"], "audit_unavailable", "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("audit entry"),
        "{b}"
    );
    assert!(!b.to_string().contains("sk-first"));

    // Space is back: ready again and writes go through, with no restart.
    store.simulate_full_disk(false).await.unwrap();
    let (s, b) = readyz(&app).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"ready": true})));
    let (s, b) = app.put("openai", json!({"value": big})).await;
    assert_eq!((s, b["version"].as_i64()), (StatusCode::OK, Some(2)), "{b}");
    let (s, b) = app.get("/admin/v1/secrets/openai?version=1").await;
    assert_eq!((s, b["value"].as_str()), (StatusCode::OK, Some("sk-first")));
    app.stop().await;
}

/// Issue 19: serde's messages repeated submitted values (`invalid type: integer 9428…`),
/// escaped quotes defeated the trimming, and unknown field names were echoed.
#[tokio::test]
async fn json_error_bodies_name_the_field_never_the_submitted_value() {
    use reqwest::Method;
    let mut app = TestApp::spawn().await;
    let canary = "sk-canary-19a";
    let cases: Vec<(Method, &str, String, &str)> = vec![
        (
            Method::PUT,
            "/admin/v1/secrets/a",
            r#"{"value": 94281234567890123456789012345678901234567890}"#.into(),
            "`value`: wrong type",
        ),
        (
            Method::PUT,
            "/admin/v1/secrets/a",
            format!(r#"{{"value": "x", "cas": "a\"b\"\" {canary} \"c"}}"#),
            "`cas`: wrong type",
        ),
        (
            Method::PUT,
            "/admin/v1/secrets/a",
            format!(r#"{{"value": "x", "{canary}": 1}}"#),
            "unknown field",
        ),
        (
            Method::PUT,
            "/admin/v1/secrets/a",
            format!(r#"{{"value": "x", "{canary}\"": 1, "cas": 1}}"#),
            "unknown field",
        ),
        (
            Method::PUT,
            "/admin/v1/secrets/a",
            format!(r#"{{"value": "{canary}", "value": "y"}}"#),
            "duplicate key at line 1",
        ),
        (
            Method::PUT,
            "/admin/v1/secrets/a",
            format!("{{\"value\":\n  \"{canary}\" \"x\"}}"),
            "malformed JSON at line 2",
        ),
        (
            Method::PATCH,
            "/admin/v1/secrets/a",
            format!(r#"{{"max_versions": "{canary}"}}"#),
            "`max_versions`: wrong type",
        ),
        (
            Method::POST,
            "/admin/v1/users",
            format!(
                r#"{{"name": "u", "password": "long enough pw", "scopes": ["a", {{"{canary}": "{canary}"}}]}}"#
            ),
            "`scopes[1]`: wrong type",
        ),
        (
            Method::POST,
            "/admin/v1/users",
            format!(r#"{{"name": "u", "scopes": ["{canary}"]}}"#),
            "`password`: missing field",
        ),
        (
            Method::PUT,
            "/admin/v1/routes",
            serde_json::json!({"toml": format!("[routes.r]\nupstream = [\"{canary}\"]\n")})
                .to_string(),
            "`routes.r.upstream`: wrong type",
        ),
        (
            Method::PUT,
            "/admin/v1/routes",
            serde_json::json!({"toml": format!("[routes.r]\n{canary} = \"{canary}\"\n")})
                .to_string(),
            "`routes.r`: unknown field",
        ),
        (
            Method::PUT,
            "/admin/v1/routes",
            serde_json::json!({"toml": format!("[routes.\"{canary} \\\"Q\"]\nupstream = 1\n")})
                .to_string(),
            "invalid route name",
        ),
        (
            Method::PUT,
            "/admin/v1/routes",
            serde_json::json!({"toml": format!("[routes.r]\nupstream = \"{canary}\n")}).to_string(),
            "not valid TOML at line 2 column",
        ),
    ];
    for (method, path, body, want) in cases {
        let (s, text) = app.send_raw_json(method.clone(), path, &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {path} {body}: {text}");
        assert!(text.contains(want), "{method} {path} {body}: {text}");
        assert!(!text.contains("canary"), "{method} {path} {body}: {text}");
        assert!(!text.contains("9428"), "{method} {path} {body}: {text}");
    }
    // Query strings: neither an unknown parameter's name nor a value is repeated.
    for path in [
        format!("/admin/v1/secrets/a?{canary}=1"),
        format!("/admin/v1/audit?limit={canary}"),
    ] {
        let (s, b) = app.get(&path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {b}");
        assert!(!b.to_string().contains("canary"), "{path}: {b}");
    }
    let (s, b) = app.get("/admin/v1/secrets").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["secrets"].as_array().unwrap().len(), 0);
    app.stop().await;
}

/// Issue 19: a request head without Host, with two Host lines or an invalid one was
/// answered 200 (RFC 9112 §3.2 requires 400); an LF-only head was never answered; two
/// Authorization lines were accepted when the first was valid. Every endpoint refuses
/// them (the check is in the connection's framing guard), and closes.
#[tokio::test]
async fn ambiguous_request_heads_get_400_and_close_on_every_endpoint() {
    use common::{raw, status_of};
    use std::time::Duration;
    let mut app = TestApp::spawn().await;
    let token = app.token.expose_secret().to_owned();
    let ok = format!(
        "GET /admin/v1/secrets HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let (resp, _) = raw(app.addr(), ok.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let mut cases: Vec<String> = Vec::new();
    for target in [
        "/healthz",
        "/admin/v1/secrets",
        "/oauth2/token",
        "/proxy/openai/v1/models",
    ] {
        cases.push(format!(
            "GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n"
        ));
        cases.push(format!(
            "GET {target} HTTP/1.1\r\nHost: g\r\nHost: h\r\nConnection: close\r\n\r\n"
        ));
        cases.push(format!(
            "GET {target} HTTP/1.1\r\nHost: g\r\nhost: g\r\nConnection: close\r\n\r\n"
        ));
        for bad in ["user@g", "g/x", "g:80:80", "g:http", "[::1", "g h"] {
            cases.push(format!(
                "GET {target} HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n"
            ));
        }
        cases.push(format!("GET {target} HTTP/1.1\nHost: g\n\n"));
        cases.push(format!(
            "GET {target} HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {token}\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n"
        ));
        cases.push(format!(
            "GET {target} HTTP/1.1\r\nHost: g\r\nAuthorization: DPoP {token}\r\nauthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ));
    }
    for case in cases {
        let (resp, closed) = raw(app.addr(), case.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(status_of(&resp), 400, "{case:?}: {resp:?}");
        assert!(closed, "{case:?}: connection left open");
    }
    app.stop().await;
}

/// Issue 19: an anonymous POST trickling its body (one byte every few seconds) held its
/// connection open indefinitely. With `http.body_read_timeout` the server answers 408 and
/// closes once the body is late.
#[tokio::test]
async fn trickled_request_body_gets_408_and_close_within_the_deadline() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut app = TestApp::spawn_with(&[
        ("KEYGATE_HTTP__BODY_READ_TIMEOUT", "1s"),
        ("KEYGATE_HTTP__REQUEST_TIMEOUT", "5s"),
    ])
    .await;
    let token = app.token.expose_secret().to_owned();
    let heads = [
        "POST /oauth2/token HTTP/1.1\r\nHost: g\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n".to_owned(),
        format!("PUT /admin/v1/secrets/slow HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"),
        "POST /oauth2/token HTTP/1.1\r\nHost: g\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
    ];
    for head in heads {
        let stream = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let chunked = head.contains("chunked");
        let writer = tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await.ok();
            for _ in 0..40 {
                let piece: &[u8] = if chunked { b"1\r\na\r\n" } else { b"a" };
                if wr.write_all(piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let started = Instant::now();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(8), rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => break false,
            }
        };
        let elapsed = started.elapsed();
        writer.abort();
        let text = String::from_utf8_lossy(&buf);
        assert_eq!(common::status_of(&text), 408, "{text:?}");
        assert!(closed, "connection left open: {text:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    }
    // A prompt request still works.
    let (s, _) = app.put("fast", json!({"value": "v"})).await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
}

/// Issue 18: a store error answered through `?` has the status of its kind. Before, the
/// token-service handlers mapped it by hand (404/409) and every other handler answered
/// 503 for the same error.
#[tokio::test]
async fn store_not_found_and_duplicate_through_question_mark_are_404_and_409() {
    let mut app = TestApp::spawn().await;
    let (status, body) = app
        .call(
            reqwest::Method::DELETE,
            "/admin/v1/clients/no-such-client",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "not_found");

    let user = json!({"name": "dup", "password": "a long enough password 1", "scopes": []});
    let (status, body) = app
        .call(reqwest::Method::POST, "/admin/v1/users", Some(user.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .call(reqwest::Method::POST, "/admin/v1/users", Some(user))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "exists");
    assert_eq!(body["message"], "user dup already exists");
    assert!(
        !body.to_string().contains("a long enough password 1"),
        "{body}"
    );
    app.stop().await;
}
