//! Helpers for keygate's integration tests that need more than one process's worth of
//! infrastructure: a `redis-server` a test can stop and start ([`OwnRedis`]), a TCP
//! forwarder a test can cut to make PostgreSQL unreachable ([`Cuttable`]), and the
//! removal of a test's Redis keys ([`clean_redis`]), and the SoftHSM2 tokens of
//! `tests/hsm/softhsm.sh` ([`SoftHsm`]). Never a dependency of the product.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own on a free port, without persistence, that the test
/// can stop ([`OwnRedis::down`]) and start again on the same port ([`OwnRedis::up`]).
pub struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// With TLS: `--tls-port` and the certificate options instead of `--port`.
    tls: Option<Vec<String>>,
}

impl OwnRedis {
    /// Starts one, or `None` (saying the test is skipped) when `redis-server` is not
    /// installed.
    pub fn start(test: &str) -> Option<Self> {
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            println!("skipped: {test} (redis-server is not installed)");
            return None;
        }
        let mut me = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            tls: None,
        };
        me.up();
        Some(me)
    }

    /// One that speaks TLS only, with `cert` and `key` (PEM files) for 127.0.0.1, and
    /// requiring client certificates signed by `ca` when `client_certificates`.
    pub fn start_tls(
        test: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        client_certificates: bool,
    ) -> Option<Self> {
        let mut me = Self::start(test)?;
        me.down();
        let path = |p: &std::path::Path| p.display().to_string();
        me.tls = Some(vec![
            "--tls-cert-file".into(),
            path(cert),
            "--tls-key-file".into(),
            path(key),
            "--tls-ca-cert-file".into(),
            path(ca),
            "--tls-auth-clients".into(),
            if client_certificates { "yes" } else { "no" }.into(),
        ]);
        me.up();
        Some(me)
    }

    /// Its URL: `rediss://` when it speaks TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) and waits until it accepts connections.
    pub fn up(&mut self) {
        let mut command = std::process::Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(options) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(options),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL: as a crash, not a shutdown).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.down();
    }
}

/// A TCP forwarder (to PostgreSQL, say) that the test can cut — every connection dropped,
/// new ones refused — and restore.
pub struct Cuttable {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cuttable {
    /// Forwards a free port on 127.0.0.1 to `target`, on the current runtime.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, l) = (cut.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, cut, live }
    }

    /// A forwarder to the server of the `postgres://` URL `url`, and `url` pointing at
    /// the forwarder instead (same user, database and options).
    pub async fn to_url(url: &str) -> (Self, String) {
        let mut through = url::Url::parse(url).unwrap();
        let target: SocketAddr = format!(
            "{}:{}",
            through.host_str().unwrap(),
            through.port().unwrap_or(5432)
        )
        .parse()
        .unwrap();
        let forwarder = Self::start(target).await;
        through.set_port(Some(forwarder.addr.port())).unwrap();
        (forwarder, through.to_string())
    }

    /// Drops every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.live.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Deletes every key under `prefix:` in the Redis at `url` (the test's own prefix).
pub async fn clean_redis(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// SoftHSM2 as `tests/hsm/softhsm.sh` set it up: the module, the token directory and
/// the user PIN of the tokens it made (one per test that needs one).
pub struct SoftHsm {
    pub module: std::path::PathBuf,
    pub tokendir: std::path::PathBuf,
    pub pin: String,
}

impl SoftHsm {
    /// The set-up from the environment the script prints, or `None` after a line saying
    /// `test` did not run. With `KEYGATE_TEST_PKCS11_REQUIRED` set (`.ci/run`), a missing
    /// set-up fails the test instead.
    pub fn from_env(test: &str) -> Option<Self> {
        match (
            std::env::var("KEYGATE_TEST_PKCS11_MODULE"),
            std::env::var("KEYGATE_TEST_PKCS11_TOKENDIR"),
            std::env::var("KEYGATE_TEST_PKCS11_PIN"),
        ) {
            (Ok(module), Ok(tokendir), Ok(pin)) => Some(Self {
                module: module.into(),
                tokendir: tokendir.into(),
                pin,
            }),
            _ => {
                assert!(
                    std::env::var("KEYGATE_TEST_PKCS11_REQUIRED").is_err(),
                    "KEYGATE_TEST_PKCS11_REQUIRED is set but SoftHSM2 is not: run `eval \"$(tests/hsm/softhsm.sh)\"` first"
                );
                eprintln!(
                    "SKIPPED {test}: no SoftHSM2 (run `eval \"$(tests/hsm/softhsm.sh)\"` first; .ci/run does)"
                );
                None
            }
        }
    }

    /// The directory SoftHSM2 keeps the token labelled `label` in (moving it away is how
    /// the tests pull the token out).
    pub fn token_dir(&self, label: &str) -> std::path::PathBuf {
        for entry in std::fs::read_dir(&self.tokendir).unwrap() {
            let dir = entry.unwrap().path();
            if std::fs::read(dir.join("token.object"))
                .map(|b| b.windows(label.len()).any(|w| w == label.as_bytes()))
                .unwrap_or(false)
            {
                return dir;
            }
        }
        panic!("no directory for token {label}");
    }
}
