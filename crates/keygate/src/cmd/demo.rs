//! `keygate demo`: a throw-away gatekeeper on embedded defaults, walked through the whole
//! mobile flow.
//!
//! Everything it shows is real: the server is the one `keygate serve` runs, on a SQLite
//! file in a temporary directory; the "app" is keygate-client with a software DPoP key;
//! the only stand-in is the third-party API, a built-in echo server that reports which key
//! it received.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::http::HeaderMap;
use clap::Args;
use keygate_client::{Client, ClientConfig, MemoryKeyStore, MemoryTokenCache, Method as AppMethod};
use keygate_server::admin::api::{
    AddClient, AddUser, AlertList, ApplyRoutes, AuditEntries, AuditQuery, AuditVerification,
    Client as ApiClient, PutSecret, RoutesApplied, SecretWritten, SessionList, SessionRevoked,
    User,
};
use keygate_server::config::{Config, LogFormat};
use rand::RngCore;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::mask;
use crate::client::{AdminClient, ApiRefusal};

#[derive(Args)]
#[command(
    after_help = "Example:\n  keygate demo          # runs the walk-through and stops\n  keygate demo --keep   # leaves the server running for exploration"
)]
pub struct DemoArgs {
    /// Leave the server running after the walk-through (Ctrl-C stops it)
    #[arg(long)]
    keep: bool,
}

const REDIRECT: &str = "com.example.demo:/oauth/callback";

/// The monitor rule the demo adds to the configuration `keygate init` wrote.
const DEMO_RULE: &str = "demo-burst";
const DEMO_CEILING: u32 = 120;

struct Steps(u32);

impl Steps {
    fn next(&mut self, title: &str) {
        self.0 += 1;
        println!("\n[{}] {title}", self.0);
    }
}

fn refusal(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ApiRefusal>() {
        Some(r) => format!("HTTP {} {}: {}", r.status, r.code, r.message),
        None => e.to_string(),
    }
}

fn random_hex(n: usize) -> String {
    let mut raw = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

/// SHA-256 of an `Authorization` value, hex: how the demo's upstream reports what it got.
fn fingerprint(value: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value.as_bytes()))
}

/// The third-party API: describes the `Authorization` header it received, masked and as a
/// SHA-256 fingerprint, so the demo can show that keygate injected the vault's key. It
/// does not echo the key itself: keygate would redact it from the answer anyway (S30),
/// as it does for any upstream that echoes the credential it was sent.
async fn echo_upstream() -> anyhow::Result<String> {
    let app = axum::Router::new().fallback(
        |method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap| async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let auth = header("authorization").unwrap_or_default();
            axum::Json(json!({
                "upstream_saw": {
                    "method": method.as_str(),
                    "path": uri.to_string(),
                    "authorization_masked": mask(auth.trim_start_matches("Bearer ")),
                    "authorization_sha256": fingerprint(&auth),
                    "dpop": header("dpop"),
                    "x_forwarded_for": header("x-forwarded-for"),
                }
            }))
        },
    );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

pub async fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    // Quiet logs: the demo's own output is the point.
    keygate_server::logging::init(LogFormat::Text, "error");
    let dir = tempfile::Builder::new().prefix("keygate-demo-").tempdir()?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut step = Steps(0);

    println!(
        "keygate demo: a gatekeeper on embedded defaults (SQLite, file master key) in {}",
        dir.path().display()
    );

    step.next(
        "keygate init: configuration, master key (mode 0600), data directory, first admin token",
    );
    let init = keygate_server::init_dir(dir.path(), listen).await?;
    println!("    config      {}", init.config_path.display());
    println!("    master key  {}", init.master_key_path.display());
    println!(
        "    admin token {} (shown once by `keygate init`; stored only as a SHA-256 hash)",
        mask(init.admin_token.expose_secret())
    );

    step.next("keygate serve: validate the config, open the store, unseal the vault, listen");
    // The demo's own monitor rule: an absolute ceiling, so a burst is caught without
    // hours of baseline; the default rules stay on.
    let mut text = std::fs::read_to_string(&init.config_path)?;
    text.push_str(&demo_monitor_rule());
    std::fs::write(&init.config_path, text)?;
    let mut config = Config::load(&init.config_path)?;
    // Evaluate often, so the walk-through does not wait.
    config.monitor.interval = std::time::Duration::from_millis(500);
    let server = keygate_server::start(config).await?;
    let base = format!("http://{}", server.addr());
    let ready = reqwest::get(format!("{base}/readyz")).await?;
    println!(
        "    listening on {base}; GET /readyz -> {} {}",
        ready.status().as_u16(),
        ready.text().await?
    );

    let admin = AdminClient::new(&base, init.admin_token.clone())?;
    let key_v1 = SecretString::from(format!("sk-demo-{}", random_hex(24)));
    let key_v2 = SecretString::from(format!("sk-demo-{}", random_hex(24)));

    step.next(
        "keygate secret put openai: encrypted under a fresh data key, wrapped by the master key",
    );
    let r: SecretWritten = admin
        .call(
            Method::PUT,
            "/admin/v1/secrets/openai",
            &PutSecret {
                value: key_v1.clone(),
                cas: None,
            },
        )
        .await?;
    println!(
        "    stored {} as version {}",
        mask(key_v1.expose_secret()),
        r.version
    );
    let stale: anyhow::Result<SecretWritten> = admin
        .call(
            Method::PUT,
            "/admin/v1/secrets/openai",
            &PutSecret {
                value: SecretString::from("sk-stale-write-attempt-000"),
                cas: Some(0),
            },
        )
        .await;
    println!(
        "    a check-and-set write against a stale version -> {}",
        stale.err().map(|e| refusal(&e)).unwrap_or_default()
    );

    step.next("keygate route apply: /proxy/openai/* forwards two allow-listed calls to the API, with the key injected");
    let upstream = echo_upstream().await?;
    let routes = format!(
        "[routes.openai]\nupstream = \"{upstream}\"\nsecret   = \"openai\"\ninject   = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\nallow    = [\"POST /v1/chat/completions\", \"GET /v1/models\"]\nscopes   = [\"ai\"]\nlimits   = {{ rate = \"30/min\", burst = 4, per = \"user\" }}\n"
    );
    for line in routes.lines() {
        println!("    {line}");
    }
    let _: RoutesApplied = admin
        .call(
            Method::PUT,
            "/admin/v1/routes",
            &ApplyRoutes { toml: routes },
        )
        .await?;

    step.next(
        "keygate user add / client add: a user who signs in, and the mobile app as a public client",
    );
    let password = format!("demo-{}", random_hex(8));
    let _: User = admin
        .call(
            Method::POST,
            "/admin/v1/users",
            &add_user("demo", &password),
        )
        .await?;
    let c: ApiClient = admin
        .call(
            Method::POST,
            "/admin/v1/clients",
            &AddClient {
                name: "demo-app".to_owned(),
                kind: "public".to_owned(),
                redirect_uris: vec![REDIRECT.to_owned()],
                scopes: vec!["ai".to_owned()],
                ..AddClient::default()
            },
        )
        .await?;
    let client_id = c.client_id;
    println!("    user demo (scope ai), client {client_id} (public, redirect {REDIRECT})");

    step.next("the app signs in: authorization code + PKCE (S256) through keygate's login page, key bound with dpop_jkt");
    let app = Client::builder(
        ClientConfig::new(&base, &client_id, REDIRECT)?,
        Arc::new(MemoryKeyStore::generate()),
        Arc::new(MemoryTokenCache::new()),
    )
    .discover()
    .await?;
    let (url, pending) = app.authorization_url(&["ai"])?;
    println!(
        "    app opens {}…",
        url.as_str().get(..72).unwrap_or(url.as_str())
    );
    let callback = keygate_client::headless::sign_in(&url, "demo", &password).await?;
    println!(
        "    login page redirects to {}…",
        callback.get(..48).unwrap_or(&callback)
    );
    let signed_in = app.exchange_code(pending, &callback, None).await?;
    let token = app.access_token().await?;
    let c = claims(token.expose_secret());
    println!(
        "    DPoP-bound access token {} (typ at+jwt, scope {}, expires in {}s, cnf.jkt {}…)",
        mask(token.expose_secret()),
        c["scope"].as_str().unwrap_or_default(),
        signed_in.expires_at.0 - c["iat"].as_i64().unwrap_or_default(),
        app.jkt().as_str().get(..12).unwrap_or_default()
    );
    println!("    plus a rotating refresh token bound to the same device key");

    step.next("the app calls POST /proxy/openai/v1/chat/completions with its token and a fresh DPoP proof");
    let resp = app
        .request(AppMethod::POST, "/proxy/openai/v1/chat/completions")
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let seen: Value = resp.json().await.unwrap_or(Value::Null);
    let saw = |field: &str| {
        seen["upstream_saw"][field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    println!(
        "    HTTP {status}; the upstream received Authorization: Bearer {}",
        saw("authorization_masked")
    );
    println!(
        "    that is the vault's key (SHA-256 {}), injected by keygate; the app's DPoP token and proof were not forwarded (dpop header upstream: {})",
        if saw("authorization_sha256") == fingerprint(&format!("Bearer {}", key_v1.expose_secret()))
        {
            "match"
        } else {
            "MISMATCH"
        },
        seen["upstream_saw"]["dpop"]
            .as_str()
            .map_or("none", |_| "PRESENT")
    );

    step.next("a call outside the allow-list is refused before it reaches the API");
    let resp = app
        .request(AppMethod::DELETE, "/proxy/openai/v1/files/123")
        .send()
        .await?;
    println!(
        "    DELETE /proxy/openai/v1/files/123 -> HTTP {} {}",
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default()
    );

    step.next("rotate the key: the next call uses version 2, the app changes nothing");
    let _: SecretWritten = admin
        .call(
            Method::PUT,
            "/admin/v1/secrets/openai",
            &PutSecret {
                value: key_v2.clone(),
                cas: None,
            },
        )
        .await?;
    let seen: Value = app
        .request(AppMethod::GET, "/proxy/openai/v1/models")
        .send()
        .await?
        .json()
        .await
        .unwrap_or(Value::Null);
    let saw = |field: &str| {
        seen["upstream_saw"][field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    println!(
        "    upstream now receives Bearer {} ({})",
        saw("authorization_masked"),
        if saw("authorization_sha256") == fingerprint(&format!("Bearer {}", key_v2.expose_secret()))
        {
            "version 2"
        } else {
            "NOT version 2"
        }
    );

    step.next("per-user limits: a burst past the route's limit gets 429 with Retry-After");
    let mut line = Vec::new();
    for _ in 0..5 {
        let resp = app
            .request(AppMethod::GET, "/proxy/openai/v1/models")
            .send()
            .await?;
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        line.push(match retry {
            Some(r) => format!("{} (Retry-After: {r})", resp.status().as_u16()),
            None => resp.status().as_u16().to_string(),
        });
    }
    println!("    {}", line.join(", "));

    step.next("refresh: the refresh token rotates; the new access token is bound to the same key");
    let before = app.access_token().await?;
    app.refresh().await?;
    let after = app.access_token().await?;
    println!(
        "    new access token {} (different: {}), same session: {}",
        mask(after.expose_secret()),
        before.expose_secret() != after.expose_secret(),
        claims(before.expose_secret())["sid"] == claims(after.expose_secret())["sid"]
    );

    step.next("revocation: the operator ends the session; the very next proxied call is refused");
    let sessions: SessionList = admin.get("/admin/v1/sessions").await?;
    let sid = sessions
        .sessions
        .first()
        .map(|s| s.id.clone())
        .unwrap_or_default();
    let _: SessionRevoked = admin
        .call_empty(Method::DELETE, &format!("/admin/v1/sessions/{sid}"))
        .await?;
    let resp = app
        .request(AppMethod::GET, "/proxy/openai/v1/models")
        .send()
        .await?;
    println!(
        "    keygate session revoke {}… -> next call HTTP {} ({})",
        sid.get(..8).unwrap_or(&sid),
        resp.status().as_u16(),
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    );

    step.next("the monitor acts by itself: a scripted burst from another user is throttled, then revoked, and alerted");
    let _: User = admin
        .call(
            Method::POST,
            "/admin/v1/users",
            &add_user("mallory", &password),
        )
        .await?;
    let bot = Client::builder(
        ClientConfig::new(&base, &client_id, REDIRECT)?,
        Arc::new(MemoryKeyStore::generate()),
        Arc::new(MemoryTokenCache::new()),
    )
    .discover()
    .await?;
    let (url, pending) = bot.authorization_url(&["ai"])?;
    let callback = keygate_client::headless::sign_in(&url, "mallory", &password).await?;
    bot.exchange_code(pending, &callback, None).await?;
    println!(
        "    rule {DEMO_RULE}: more than {DEMO_CEILING} calls a minute from one user -> throttle, still going after 2s -> revoke"
    );
    let started = std::time::Instant::now();
    let mut statuses: std::collections::BTreeMap<u16, u32> = Default::default();
    let mut revoked_after = None;
    while started.elapsed() < std::time::Duration::from_secs(15) {
        let status = match bot
            .request(AppMethod::GET, "/proxy/openai/v1/models")
            .send()
            .await
        {
            Ok(resp) => resp.status().as_u16(),
            // The client's refresh after a 401 fails once the session is revoked.
            Err(_) => 401,
        };
        *statuses.entry(status).or_default() += 1;
        if status == 401 {
            revoked_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let summary: Vec<String> = statuses
        .iter()
        .map(|(status, n)| format!("{n}x HTTP {status}"))
        .collect();
    println!(
        "    mallory's burst: {} -> {}",
        summary.join(", "),
        match revoked_after {
            Some(t) => format!(
                "session revoked by the monitor after {:.1}s",
                t.as_secs_f64()
            ),
            None => "not revoked within 15s (a bug!)".to_owned(),
        }
    );
    let alerts: AlertList = admin.get("/admin/v1/alerts").await?;
    for a in alerts.alerts.iter().rev() {
        println!(
            "    keygate alert list: {} {:<8} rule {} on {} ({})",
            a.id,
            a.action,
            a.rule,
            a.subject,
            // Evidence is the rule's own document; every rule's has a `result`.
            a.evidence
                .get("result")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
    }

    step.next("keygate audit tail: who did what; keys and tokens appear only as keyed hashes");
    let r: AuditEntries = admin
        .get_query(
            "/admin/v1/audit",
            &AuditQuery {
                tail: Some(8),
                ..AuditQuery::default()
            },
        )
        .await?;
    for e in &r.entries {
        println!("    {}", super::audit::entry_line(e));
    }
    let v: AuditVerification = admin.get("/admin/v1/audit/verify").await?;
    println!(
        "    audit verify: ok={} entries={}",
        v.ok,
        v.entries.unwrap_or_default()
    );

    step.next("at rest: the database files hold only ciphertext and hashes");
    let data = dir.path().join("keygate-data");
    let mut leaked = false;
    for file in ["keygate.db", "keygate.db-wal"] {
        let bytes = std::fs::read(data.join(file)).unwrap_or_default();
        let found = [
            key_v1.expose_secret(),
            key_v2.expose_secret(),
            init.admin_token.expose_secret(),
            &password,
        ]
        .iter()
        .any(|k| bytes.windows(k.len()).any(|w| w == k.as_bytes()));
        leaked |= found;
        println!(
            "    {file}: {} bytes; keys, tokens or passwords in clear: {}",
            bytes.len(),
            if found { "YES (a bug!)" } else { "none" }
        );
    }

    if a.keep {
        println!("\nThe server keeps running. In another terminal:");
        println!(
            "    export KEYGATE_ADDR={base} KEYGATE_TOKEN={}",
            init.admin_token.expose_secret()
        );
        println!("    keygate secret list; keygate route list; keygate session list");
        println!("    login page: {base}/oauth2/authorize (user demo, password {password})");
        println!("Ctrl-C stops it and deletes {}.", dir.path().display());
        super::serve::wait_for_stop()
            .await
            .context("waiting for Ctrl-C")?;
    } else {
        println!(
            "\nDone. `keygate demo --keep` leaves the server running to explore; `keygate init` sets up a real one."
        );
    }
    server.shutdown().await;
    Ok(if leaked {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Added to the `[monitor]` section `keygate init` wrote.
fn demo_monitor_rule() -> String {
    format!(
        "\n[[monitor.rules]]\nname = \"{DEMO_RULE}\"\nkind = \"ceiling\"\nscope = \"user\"\ncalls_per_minute = {DEMO_CEILING}\nactions = [\"throttle\", \"revoke\"]\nthrottle_per_minute = 6\nthrottle_for = \"10m\"\nescalate_after = \"2s\"\n"
    )
}

fn add_user(name: &str, password: &str) -> AddUser {
    AddUser {
        name: name.to_owned(),
        password: SecretString::from(password.to_owned()),
        scopes: vec!["ai".to_owned()],
    }
}
