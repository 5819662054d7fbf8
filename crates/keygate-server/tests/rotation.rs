//! Secret rotation (schedules, hooks, overlap, failures, overdue notices) and webhooks
//! (signatures, retries, dead letters, Slack shape), on the real server with SQLite. The
//! scheduler's clock is injected, so its background passes do not run and only the test
//! drives it (`run_due`); `check_interval` is an hour besides.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestApp, free_addr};
use keygate_auth::clock::{Clock as _, ManualClock};
use keygate_server::StartOptions;
use keygate_server::rotation::{Clock, RotationNotice, RotationNotify, Rotator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HOUR: i64 = 3_600_000;

#[derive(Clone)]
struct FakeClock(Arc<ManualClock>);

impl FakeClock {
    fn new() -> Self {
        Self(Arc::new(ManualClock::new(keygate_vault::now_ms())))
    }
    fn clock(&self) -> Clock {
        self.0.clone()
    }
    fn advance(&self, ms: i64) {
        self.0.advance_ms(ms);
    }
    fn now(&self) -> i64 {
        self.0.now_ms()
    }
}

#[derive(Default)]
struct Notices(Mutex<Vec<RotationNotice>>);

impl RotationNotify for Notices {
    fn notify(&self, notice: RotationNotice) {
        self.0.lock().unwrap().push(notice);
    }
}

impl Notices {
    fn take(&self) -> Vec<RotationNotice> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Writes an executable shell script into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The server with `extra` appended to its keygate.toml (`{dir}` is replaced by the
/// directory the hook scripts live in), a fake rotation clock and a notice collector.
async fn spawn(extra: &str, scripts: &[(&str, &str)]) -> (TestApp, FakeClock, Arc<Notices>) {
    let clock = FakeClock::new();
    let notices = Arc::new(Notices::default());
    let app = TestApp::spawn_with_options(
        |dir| {
            let hooks = dir.join("hooks");
            std::fs::create_dir_all(&hooks).unwrap();
            for (name, body) in scripts {
                script(&hooks, name, body);
            }
            format!(
                "[rotation]\ncheck_interval = \"1h\"\n{}",
                extra.replace("{dir}", &hooks.display().to_string())
            )
        },
        &[],
        StartOptions {
            clock: Some(clock.clock()),
            rotation_notify: Some(notices.clone()),
        },
    )
    .await;
    (app, clock, notices)
}

fn rotator(app: &TestApp) -> &Arc<Rotator> {
    app.server.as_ref().unwrap().rotation()
}

async fn value(app: &TestApp, name: &str, version: Option<i64>) -> (StatusCode, Value) {
    let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
    app.get(&format!("/admin/v1/secrets/{name}{q}")).await
}

async fn schedule(app: &TestApp, name: &str, body: Value) -> (StatusCode, Value) {
    app.call(
        Method::PUT,
        &format!("/admin/v1/secrets/{name}/schedule"),
        Some(body),
    )
    .await
}

async fn rotation_of(app: &TestApp, name: &str) -> Value {
    let (status, body) = app.get("/admin/v1/rotation").await;
    assert_eq!(status, StatusCode::OK);
    body["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["secret"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

const NEXT_HOOK: &str = r#"
[rotation.hooks.next]
command = ["{dir}/next.sh"]
"#;
const NEXT_SH: (&str, &str) = ("next.sh", r#"read v; echo "${v}-next""#);

#[tokio::test]
async fn scheduled_rotation_writes_a_new_version_and_destroys_the_previous_after_the_overlap() {
    let (app, clock, notices) = spawn(NEXT_HOOK, &[NEXT_SH]).await;
    assert_eq!(
        app.put("openai", json!({"value": "sk-one"})).await.0,
        StatusCode::OK
    );
    let (status, s) = schedule(
        &app,
        "openai",
        json!({"rotate_every": "30d", "overlap": "1h", "hook": "next"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["next_due_ms"], json!(clock.now() + 30 * 24 * HOUR));

    let r = rotator(&app).run_due().await.unwrap();
    assert!(r.rotated.is_empty(), "not due yet: {r:?}");

    clock.advance(30 * 24 * HOUR);
    let r = rotator(&app).run_due().await.unwrap();
    assert_eq!(r.rotated, vec![("openai".to_owned(), 2)]);
    let (_, current) = value(&app, "openai", None).await;
    assert_eq!(
        (current["version"].clone(), current["value"].clone()),
        (json!(2), json!("sk-one-next"))
    );
    // Inside the overlap both versions are readable.
    let (status, old) = value(&app, "openai", Some(1)).await;
    assert_eq!(
        (status, old["value"].clone()),
        (StatusCode::OK, json!("sk-one"))
    );
    assert_eq!(
        notices.take(),
        vec![RotationNotice::Rotated {
            secret: "openai".into(),
            version: 2,
            hook: "next".into()
        }]
    );
    let listed = rotation_of(&app, "openai").await;
    assert_eq!(listed["previous_version"], json!(1));
    assert_eq!(listed["last_rotated_ms"], json!(clock.now()));
    assert_eq!(listed["next_due_ms"], json!(clock.now() + 30 * 24 * HOUR));
    assert_eq!(listed["last_error"], Value::Null);

    // The audit log names the actor and the hook, never a value.
    let (_, audit) = app.get("/admin/v1/audit?tail=50").await;
    let entries = audit["entries"].as_array().unwrap();
    let rotate = entries
        .iter()
        .find(|e| e["action"] == "secret.rotate")
        .expect("a secret.rotate entry");
    assert_eq!(rotate["actor"], "rotation");
    assert_eq!(rotate["details"]["hook"], "next");
    let text = audit.to_string();
    assert!(!text.contains("sk-one"), "no value in the audit log");

    clock.advance(HOUR - 1);
    assert!(rotator(&app).run_due().await.unwrap().destroyed.is_empty());
    clock.advance(1);
    let r = rotator(&app).run_due().await.unwrap();
    assert_eq!(r.destroyed, vec![("openai".to_owned(), 1)]);
    let (status, _) = value(&app, "openai", Some(1)).await;
    assert_eq!(
        status,
        StatusCode::GONE,
        "the previous value is destroyed after the overlap"
    );
    let (status, current) = value(&app, "openai", None).await;
    assert_eq!(
        (status, current["value"].clone()),
        (StatusCode::OK, json!("sk-one-next"))
    );
    assert_eq!(
        notices.take(),
        vec![RotationNotice::PreviousDestroyed {
            secret: "openai".into(),
            version: 1
        }]
    );
    assert_eq!(
        rotation_of(&app, "openai").await["previous_version"],
        Value::Null
    );
}

#[tokio::test]
async fn without_overlap_the_previous_version_is_destroyed_at_once() {
    let (app, clock, _notices) = spawn(NEXT_HOOK, &[NEXT_SH]).await;
    app.put("openai", json!({"value": "sk-one"})).await;
    let (status, _) = schedule(
        &app,
        "openai",
        json!({"rotate_every": "1d", "hook": "next"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    clock.advance(24 * HOUR);
    let r = rotator(&app).run_due().await.unwrap();
    assert_eq!(r.rotated, vec![("openai".to_owned(), 2)]);
    assert_eq!(value(&app, "openai", Some(1)).await.0, StatusCode::GONE);
    assert_eq!(value(&app, "openai", None).await.1["value"], "sk-one-next");
}

const FAILING_HOOKS: &str = r#"
[rotation.hooks.fails]
command = ["{dir}/fails.sh"]
[rotation.hooks.empty]
command = ["{dir}/empty.sh"]
[rotation.hooks.slow]
command = ["{dir}/slow.sh"]
timeout = "300ms"
"#;
const FAILING_SH: &[(&str, &str)] = &[
    // Echoes the value on stderr: it must not reach a log, error or notice.
    ("fails.sh", r#"read v; echo "leaked ${v}" >&2; exit 1"#),
    ("empty.sh", "read v; printf ''"),
    ("slow.sh", "read v; sleep 5; echo late"),
];

#[tokio::test]
async fn failing_hooks_keep_the_old_version_and_say_why() {
    let (app, clock, notices) = spawn(FAILING_HOOKS, FAILING_SH).await;
    for (secret, hook) in [
        ("a-fails", "fails"),
        ("b-empty", "empty"),
        ("c-slow", "slow"),
    ] {
        app.put(secret, json!({"value": format!("value-of-{secret}")}))
            .await;
        let (status, body) =
            schedule(&app, secret, json!({"rotate_every": "1h", "hook": hook})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    clock.advance(HOUR);
    let started = Instant::now();
    let r = rotator(&app).run_due().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the slow hook was cut off"
    );
    assert_eq!(r.failed, ["a-fails", "b-empty", "c-slow"]);
    assert!(r.rotated.is_empty());

    let got = notices.take();
    let reason = |secret: &str| {
        got.iter()
            .find_map(|n| match n {
                RotationNotice::Failed { secret: s, reason } if s == secret => Some(reason.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Failed notice for {secret}: {got:?}"))
    };
    assert!(
        reason("a-fails").contains("exited"),
        "{}",
        reason("a-fails")
    );
    assert!(
        reason("b-empty").contains("no value"),
        "{}",
        reason("b-empty")
    );
    assert!(reason("c-slow").contains("within"), "{}", reason("c-slow"));
    for secret in ["a-fails", "b-empty", "c-slow"] {
        assert!(
            !reason(secret).contains("value-of"),
            "a reason never holds the value"
        );
        let (_, current) = value(&app, secret, None).await;
        assert_eq!(current["version"], 1, "{secret} keeps its version");
        assert_eq!(current["value"], json!(format!("value-of-{secret}")));
        let listed = rotation_of(&app, secret).await;
        assert_eq!(listed["last_error"], json!(reason(secret)));
        assert!(!listed.to_string().contains("value-of"));
    }
    // Each failure is an alert too (written beside the scheduler's task).
    let deadline = Instant::now() + Duration::from_secs(5);
    let alerts = loop {
        let (_, a) = app.get("/admin/v1/alerts").await;
        let alerts = a["alerts"].as_array().unwrap().clone();
        if alerts.len() >= 3 || Instant::now() > deadline {
            break alerts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    for a in &alerts {
        assert_eq!(a["rule"], "rotation-failed", "{a}");
        assert!(a["subject"].as_str().unwrap().starts_with("secret:"), "{a}");
        assert!(
            !a.to_string().contains("value-of"),
            "no value in an alert: {a}"
        );
    }

    // A failed rotation waits for the retry interval instead of running every pass.
    clock.advance(1000);
    let r = rotator(&app).run_due().await.unwrap();
    assert!(r.failed.is_empty(), "{r:?}");
}

#[tokio::test]
async fn an_overdue_rotation_is_reported_once() {
    let (app, clock, notices) = spawn(FAILING_HOOKS, FAILING_SH).await;
    app.put("openai", json!({"value": "sk-one"})).await;
    schedule(
        &app,
        "openai",
        json!({"rotate_every": "1d", "hook": "fails"}),
    )
    .await;
    clock.advance(24 * HOUR);
    let due = clock.now();
    rotator(&app).run_due().await.unwrap();
    let overdue = |n: &[RotationNotice]| {
        n.iter()
            .filter(|n| matches!(n, RotationNotice::Overdue { .. }))
            .count()
    };
    assert_eq!(overdue(&notices.take()), 0, "not overdue within the grace");

    clock.advance(HOUR + 1);
    let r = rotator(&app).run_due().await.unwrap();
    assert_eq!(r.overdue, ["openai"]);
    let got = notices.take();
    assert!(got.contains(&RotationNotice::Overdue {
        secret: "openai".into(),
        due_ms: due
    }));
    assert_eq!(rotation_of(&app, "openai").await["overdue"], true);

    for _ in 0..3 {
        clock.advance(10 * 60_000);
        let r = rotator(&app).run_due().await.unwrap();
        assert_eq!(r.failed, ["openai"], "retried after the retry interval");
        assert!(r.overdue.is_empty());
    }
    assert_eq!(overdue(&notices.take()), 0, "raised once");
}

#[tokio::test]
async fn schedules_are_validated_and_errors_name_the_field() {
    let (app, _clock, _notices) = spawn(NEXT_HOOK, &[NEXT_SH]).await;
    app.put("openai", json!({"value": "sk-one"})).await;
    let cases = [
        (
            "openai",
            json!({"rotate_every": "30d", "hook": "nope"}),
            "`hook`",
        ),
        (
            "missing",
            json!({"rotate_every": "30d", "hook": "next"}),
            "`secret`",
        ),
        (
            "openai",
            json!({"rotate_every": "soon", "hook": "next"}),
            "`rotate_every`",
        ),
        (
            "openai",
            json!({"rotate_every": "1s", "hook": "next"}),
            "`rotate_every`",
        ),
        (
            "openai",
            json!({"rotate_every": "1h", "overlap": "2h", "hook": "next"}),
            "`overlap`",
        ),
        (
            "openai",
            json!({"rotate_every": "1h", "overlap": "x", "hook": "next"}),
            "`overlap`",
        ),
        (
            "openai",
            json!({"rotate_every": "1h", "hook": "next", "extra": 1}),
            "unknown field",
        ),
    ];
    for (secret, body, field) in cases {
        let (status, answer) = schedule(&app, secret, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(
        rotation_of(&app, "openai").await,
        Value::Null,
        "nothing was scheduled"
    );

    let (status, _) = schedule(
        &app,
        "openai",
        json!({"rotate_every": "1h", "hook": "next"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let path = "/admin/v1/secrets/openai/schedule";
    assert_eq!(app.call(Method::DELETE, path, None).await.0, StatusCode::OK);
    assert_eq!(
        app.call(Method::DELETE, path, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(rotation_of(&app, "openai").await, Value::Null);
}

#[tokio::test]
async fn rotate_by_hand_runs_the_hook_now() {
    let (app, _clock, notices) = spawn(
        &format!("{NEXT_HOOK}{FAILING_HOOKS}"),
        &[NEXT_SH, FAILING_SH[0]],
    )
    .await;
    app.put("openai", json!({"value": "sk-one"})).await;
    let rotate = |name: &str| format!("/admin/v1/secrets/{name}/rotate");
    let (status, _) = app.call(Method::POST, &rotate("openai"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no schedule, no hook to run");

    schedule(
        &app,
        "openai",
        json!({"rotate_every": "30d", "overlap": "1h", "hook": "next"}),
    )
    .await;
    let (status, body) = app.call(Method::POST, &rotate("openai"), None).await;
    assert_eq!(
        (status, body["version"].clone()),
        (StatusCode::OK, json!(2))
    );
    assert_eq!(value(&app, "openai", None).await.1["value"], "sk-one-next");
    assert!(matches!(
        notices.take().as_slice(),
        [RotationNotice::Rotated { version: 2, .. }]
    ));

    app.put("anthropic", json!({"value": "sk-ant"})).await;
    schedule(
        &app,
        "anthropic",
        json!({"rotate_every": "30d", "hook": "fails"}),
    )
    .await;
    let (status, body) = app.call(Method::POST, &rotate("anthropic"), None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("exited"));
    assert!(!body.to_string().contains("sk-ant"));
    assert_eq!(value(&app, "anthropic", None).await.1["version"], 1);
}

// --- webhooks ---

struct Receiver {
    url: String,
    hits: Arc<AtomicUsize>,
    got: tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, Vec<u8>)>,
}

/// An HTTP receiver on loopback answering `status` after `delay`.
async fn receiver(status: u16, delay: Duration) -> Receiver {
    let (tx, got) = tokio::sync::mpsc::unbounded_channel();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/hook/secret-path",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (tx, counter) = (tx.clone(), counter.clone());
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send((headers, body.to_vec()));
                    tokio::time::sleep(delay).await;
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook/secret-path", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, hits, got }
}

fn webhook_toml(url: &str, extra: &str) -> String {
    format!("\n[[monitor.webhooks]]\nurl = \"{url}\"\nsecret = \"hook-key\"\n{extra}\n")
}

/// The next delivery whose `data.secret` is `secret`.
async fn next_for(r: &mut Receiver, secret: &str) -> (axum::http::HeaderMap, Vec<u8>) {
    loop {
        let (h, b) = tokio::time::timeout(Duration::from_secs(10), r.got.recv())
            .await
            .expect("a delivery within 10s")
            .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        if v["data"]["secret"] == secret || v["text"].as_str().is_some_and(|t| t.contains(secret)) {
            return (h, b);
        }
    }
}

#[tokio::test]
async fn webhooks_are_signed_with_the_key_from_the_vault() {
    let mut r = receiver(200, Duration::ZERO).await;
    let extra = format!(
        "{NEXT_HOOK}{}",
        webhook_toml(&r.url, "events = [\"secret.changed\", \"secret.rotated\"]")
    );
    let (app, _clock, _notices) = spawn(&extra, &[NEXT_SH]).await;
    app.put("hook-key", json!({"value": "whsec-test-key"}))
        .await;
    app.put("openai", json!({"value": "sk-live-1"})).await;

    let (headers, body) = next_for(&mut r, "openai").await;
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(!text.contains("sk-live-1"), "no value in a webhook");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["event"], "secret.changed");
    assert_eq!(
        v["data"],
        json!({"secret": "openai", "action": "put", "version": 1})
    );
    assert_eq!(v["id"].as_str().unwrap().len(), 32);
    assert_eq!(headers["x-keygate-event"], "secret.changed");
    let ts = headers["x-keygate-timestamp"].to_str().unwrap();
    let now = keygate_vault::now_ms() / 1000;
    assert!((ts.parse::<i64>().unwrap() - now).abs() < 60);
    assert!((v["at"].as_i64().unwrap() - now).abs() < 60);

    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec-test-key").unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(headers["x-keygate-signature"].to_str().unwrap(), expected);

    // Rotation notices reach the webhooks too.
    schedule(
        &app,
        "openai",
        json!({"rotate_every": "30d", "hook": "next"}),
    )
    .await;
    app.call(Method::POST, "/admin/v1/secrets/openai/rotate", None)
        .await;
    let mut events = Vec::new();
    while events.len() < 2 {
        let (_, b) = next_for(&mut r, "openai").await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        events.push((v["event"].as_str().unwrap().to_owned(), v["data"].clone()));
    }
    assert!(events.contains(&(
        "secret.rotated".into(),
        json!({"secret": "openai", "version": 2, "hook": "next"})
    )));
    assert!(events.contains(&(
        "secret.changed".into(),
        json!({"secret": "openai", "version": 1, "action": "destroyed"})
    )));
}

async fn dead_letters_when(app: &TestApp, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get("/admin/v1/webhooks/dead-letters").await;
        assert_eq!(status, StatusCode::OK);
        let letters = body["dead_letters"].as_array().unwrap().clone();
        if letters.len() >= n || Instant::now() > deadline {
            return letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_dead_lettered() {
    let r = receiver(500, Duration::ZERO).await;
    let extra = webhook_toml(
        &r.url,
        "events = [\"secret.changed\"]\nretries = 2\nbackoff = \"10ms\"",
    );
    let (app, _clock, _notices) = spawn(&extra, &[]).await;
    app.put("hook-key", json!({"value": "whsec-test-key"}))
        .await;

    let letters = dead_letters_when(&app, 1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let d = &letters[0];
    assert_eq!(d["event"], "secret.changed");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["last_error"], "answered 500");
    assert_eq!(
        d["webhook"], "0 127.0.0.1",
        "index and host, never the path"
    );
    assert_eq!(
        r.hits.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
    // `keygate alert list` shows dead letters after the alerts.
    let (_, a) = app.get("/admin/v1/alerts").await;
    assert_eq!(a["dead_letters"][0]["target"], "0 127.0.0.1", "{a}");
    assert_eq!(a["dead_letters"][0]["attempts"], 3, "{a}");
}

#[tokio::test]
async fn a_slow_receiver_never_slows_the_admin_call() {
    let r = receiver(200, Duration::from_secs(5)).await;
    let extra = webhook_toml(
        &r.url,
        "events = [\"*\"]\ntimeout = \"200ms\"\nretries = 1\nbackoff = \"10ms\"",
    );
    let (app, _clock, _notices) = spawn(&extra, &[]).await;
    let started = Instant::now();
    let (status, _) = app
        .put("hook-key", json!({"value": "whsec-test-key"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the admin call took {:?}",
        started.elapsed()
    );
    let letters = dead_letters_when(&app, 1).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["last_error"], "timed out");
    assert_eq!(letters[0]["attempts"], 2);
}

#[tokio::test]
async fn slack_webhooks_get_one_line_of_text() {
    let mut r = receiver(200, Duration::ZERO).await;
    let extra = webhook_toml(&r.url, "events = [\"secret.changed\"]\nformat = \"slack\"");
    let (app, _clock, _notices) = spawn(&extra, &[]).await;
    app.put("hook-key", json!({"value": "whsec-test-key"}))
        .await;
    app.put("openai", json!({"value": "sk-live-1"})).await;
    let (_, body) = next_for(&mut r, "openai").await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["text"]);
    let text = v["text"].as_str().unwrap();
    assert_eq!(text, "keygate: secret `openai` put (version 1)");
    assert!(!text.contains('\n'));
}

#[test]
fn rotation_and_webhook_config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let base = keygate_server::config::Config::template(free_addr());
    let cases = [
        (
            "[rotation.hooks.x]\ncommand = [\"/bin/true\"]\nurl = \"https://h.example/\"\n",
            "rotation.hooks.x",
        ),
        (
            "[rotation.hooks.x]\ncommand = [\"true\"]\n",
            "rotation.hooks.x.command",
        ),
        (
            "[rotation.hooks.x]\nurl = \"http://h.example/rotate\"\n",
            "rotation.hooks.x.url",
        ),
        (
            "[rotation.hooks.x]\nurl = \"https://h.example/\"\ntimeout = \"1h\"\n",
            "rotation.hooks.x.timeout",
        ),
        (
            "[rotation]\ncheck_interval = \"2h\"\n",
            "rotation.check_interval",
        ),
        (
            "[[monitor.webhooks]]\nurl = \"http://h.example/\"\nevents = [\"*\"]\nsecret = \"k\"\n",
            "monitor.webhooks[0].url",
        ),
        (
            "[[monitor.webhooks]]\nurl = \"https://h.example/\"\nevents = [\"secret.typo\"]\nsecret = \"k\"\n",
            "monitor.webhooks[0].events",
        ),
        (
            "[[monitor.webhooks]]\nurl = \"https://h.example/\"\nevents = [\"*\"]\nsecret = \"k\"\nformat = \"xml\"\n",
            "monitor.webhooks[0].format",
        ),
        (
            "[[monitor.webhooks]]\nurl = \"https://h.example/\"\nevents = [\"*\"]\nsecret = \"bad name\"\n",
            "monitor.webhooks[0].secret",
        ),
        (
            "[[monitor.webhooks]]\nurl = \"https://h.example/\"\nevents = [\"*\"]\nsecret = \"k\"\nretries = 99\n",
            "monitor.webhooks[0].retries",
        ),
    ];
    for (extra, field) in cases {
        let text = format!("{base}\n{extra}");
        let e = keygate_server::config::Config::from_toml(&text, dir.path(), std::iter::empty())
            .expect_err(extra);
        assert_eq!(e.field, field, "{extra}: {e}");
    }
    let ok = format!(
        "{base}\n[rotation.hooks.x]\nurl = \"http://127.0.0.1:9/rotate\"\n\n[[monitor.webhooks]]\nurl = \"https://h.example/\"\nevents = [\"*\"]\nsecret = \"k\"\n"
    );
    let config =
        keygate_server::config::Config::from_toml(&ok, dir.path(), std::iter::empty()).unwrap();
    assert_eq!(config.rotation.hooks["x"].timeout, Duration::from_secs(30));
    assert_eq!(config.webhooks[0].retries, 5);
    assert!(
        config.webhooks[0].wants("secret.rotated"),
        "\"*\" takes every event"
    );
}

#[tokio::test]
async fn a_url_hook_gets_the_value_and_answers_the_next_one_and_oversize_output_fails() {
    // The URL hook: the body is the current value, the answer the new one.
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let hook = axum::Router::new().route(
        "/rotate",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body.to_vec());
                format!("{}-from-url\n", String::from_utf8_lossy(&body))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/rotate", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let extra = format!(
        "\n[rotation.hooks.remote]\nurl = \"{url}\"\ntimeout = \"2s\"\n\n[rotation.hooks.big]\ncommand = [\"{{dir}}/big.sh\"]\n"
    );
    let (app, _clock, notices) = spawn(
        &extra,
        &[("big.sh", "read v; head -c 70000 /dev/zero | tr '\\0' 'x'")],
    )
    .await;
    app.put("openai", json!({"value": "sk-one"})).await;
    schedule(
        &app,
        "openai",
        json!({"rotate_every": "1d", "hook": "remote"}),
    )
    .await;
    let (status, body) = app
        .call(Method::POST, "/admin/v1/secrets/openai/rotate", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen.recv().await.unwrap(), b"sk-one");
    assert_eq!(
        value(&app, "openai", None).await.1["value"],
        "sk-one-from-url"
    );

    app.put("anthropic", json!({"value": "sk-ant"})).await;
    schedule(
        &app,
        "anthropic",
        json!({"rotate_every": "1d", "hook": "big"}),
    )
    .await;
    let (status, body) = app
        .call(Method::POST, "/admin/v1/secrets/anthropic/rotate", None)
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("larger than"),
        "{body}"
    );
    assert_eq!(value(&app, "anthropic", None).await.1["version"], 1);
    assert!(notices.take().iter().any(|n| matches!(
        n,
        RotationNotice::Failed { secret, .. } if secret == "anthropic"
    )));
}
