//! The test harness: the real server on port 0 with a fresh store in a temporary
//! directory, and typed helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod idp;

use std::path::Path;

use keygate_server::config::Config;
use keygate_server::{RunningServer, init_dir, init_dir_with_storage};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

pub struct TestApp {
    pub db: Option<keygate_store::testing::TestDb>,
    pub dir: tempfile::TempDir,
    pub server: Option<RunningServer>,
    pub base: String,
    pub token: SecretString,
    pub http: reqwest::Client,
}

pub fn load_config(dir: &Path, env: &[(&str, &str)]) -> Config {
    let text = std::fs::read_to_string(dir.join("keygate.toml")).unwrap();
    let mut vars = vec![(
        "KEYGATE_AUDIT__CHECKPOINT_INTERVAL".to_owned(),
        "1s".to_owned(),
    )];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_toml(&text, dir, vars).unwrap()
}

/// A free loopback address: the public URL (token issuer, DPoP `htu`) must name the port
/// the server really listens on.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl TestApp {
    pub fn store_url(&self) -> String {
        match &self.db {
            Some(db) => db.url().to_owned(),
            None => format!(
                "sqlite://{}",
                self.dir
                    .path()
                    .join("keygate-data")
                    .join("keygate.db")
                    .display()
            ),
        }
    }

    pub async fn spawn() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let init = init_dir(dir.path(), free_addr()).await.unwrap();
        Self::start(dir, init.admin_token).await
    }

    /// On a fresh PostgreSQL schema, or `None` (the test says it is skipped) when
    /// `KEYGATE_TEST_POSTGRES_URL` is not set.
    pub async fn spawn_postgres(test: &str) -> Option<Self> {
        let db = keygate_store::testing::TestDb::postgres(test).await?;
        let dir = tempfile::tempdir().unwrap();
        let init = init_dir_with_storage(dir.path(), free_addr(), Some(db.url()))
            .await
            .unwrap();
        let mut app = Self::start(dir, init.admin_token).await;
        app.db = Some(db);
        Some(app)
    }

    /// Like [`TestApp::spawn`], with configuration overrides (`KEYGATE_…` pairs).
    pub async fn spawn_with(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let init = init_dir(dir.path(), free_addr()).await.unwrap();
        Self::start_with(dir, init.admin_token, env).await
    }

    /// Like [`TestApp::spawn_with`], after `prepare` has edited the fresh directory (e.g.
    /// appended tables to `keygate.toml` that environment variables cannot express). On a
    /// fresh PostgreSQL schema when `postgres` names the test; `None` then means
    /// `KEYGATE_TEST_POSTGRES_URL` is not set (the test says it is skipped).
    pub async fn spawn_prepared(
        postgres: Option<&str>,
        prepare: impl FnOnce(&Path),
        env: &[(&str, &str)],
    ) -> Option<Self> {
        let db = match postgres {
            Some(test) => Some(keygate_store::testing::TestDb::postgres(test).await?),
            None => None,
        };
        let dir = tempfile::tempdir().unwrap();
        let init = init_dir_with_storage(dir.path(), free_addr(), db.as_ref().map(|d| d.url()))
            .await
            .unwrap();
        prepare(dir.path());
        let mut app = Self::start_with(dir, init.admin_token, env).await;
        app.db = db;
        Some(app)
    }

    /// A fresh directory whose keygate.toml gets what `prepare` returns appended
    /// (`prepare` may also write files into the directory), started with `options`
    /// (injected clocks, notice sinks) and configuration overrides `env`.
    pub async fn spawn_with_options(
        prepare: impl FnOnce(&Path) -> String,
        env: &[(&str, &str)],
        options: keygate_server::StartOptions,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let init = init_dir(dir.path(), free_addr()).await.unwrap();
        let path = dir.path().join("keygate.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push('\n');
        text.push_str(&prepare(dir.path()));
        std::fs::write(&path, text).unwrap();
        let config = load_config(dir.path(), env);
        let store = keygate_server::open_store(&config).await.unwrap();
        let server = keygate_server::start_with_options(config, store, options)
            .await
            .unwrap();
        let base = format!("http://{}", server.addr());
        Self {
            db: None,
            dir,
            server: Some(server),
            base,
            token: init.admin_token,
            http: reqwest::Client::new(),
        }
    }

    pub async fn start(dir: tempfile::TempDir, token: SecretString) -> Self {
        Self::start_with(dir, token, &[]).await
    }

    pub async fn start_with(
        dir: tempfile::TempDir,
        token: SecretString,
        env: &[(&str, &str)],
    ) -> Self {
        let server = keygate_server::start(load_config(dir.path(), env))
            .await
            .unwrap();
        let base = format!("http://{}", server.addr());
        Self {
            db: None,
            dir,
            server: Some(server),
            base,
            token,
            http: reqwest::Client::new(),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET `path` without credentials; the body as text (e.g. `/metrics`).
    pub async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn put(&self, name: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::PUT,
            &format!("/admin/v1/secrets/{name}"),
            Some(body),
        )
        .await
    }
}

impl TestApp {
    /// The server's socket address, for raw-socket tests.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }

    /// PUT/POST a raw body (not necessarily valid JSON) as the admin.
    pub async fn send_raw_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret())
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }
}

/// Sends raw bytes and reads until the server closes or `wait` passes. Returns the text
/// and whether the server closed the connection.
pub async fn raw(
    addr: std::net::SocketAddr,
    request: &[u8],
    wait: std::time::Duration,
) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

/// The status code of a raw HTTP/1 response (0 if there is none).
pub fn status_of(raw_response: &str) -> u16 {
    raw_response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// An upstream that answers every request 200 with `{"ok":true}` and records the
/// `Authorization` header it was sent (the key keygate injected); its base URL.
pub async fn recording_upstream(seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> String {
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            seen.lock().unwrap().push(auth);
            axum::Json(serde_json::json!({"ok": true}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// RFC 4648 base32 (a TOTP seed in an `otpauth://` URI).
pub fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap() as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// The TOTP code (RFC 6238, keygate's defaults) of `seed` at the current time step plus
/// `offset` steps: what an authenticator app shows.
pub fn totp_code(seed: &[u8], offset: i64) -> String {
    let totp = keygate_auth::totp::Totp::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let step = totp.step_at(keygate_auth::clock::UnixTime(now)) as i64 + offset;
    totp.code_at_step(
        &keygate_auth::totp::TotpSeed::from_bytes(seed.to_vec()),
        step as u64,
    )
}
