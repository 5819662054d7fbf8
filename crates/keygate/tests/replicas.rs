//! Three real `keygate serve` processes on loopback, sharing one PostgreSQL schema and one
//! Redis key prefix, as behind a load balancer.
//!
//! - Together: a per-user limit of 6 per minute admits exactly 6 across all three; a DPoP
//!   proof accepted by one is refused by the others; a revocation through one refuses the
//!   next call on another within 100 ms (measured); a secret rotated through one is
//!   injected by another on its next call; and one replica SIGKILLed while it takes writes
//!   loses none it acknowledged, while the other two carry on.
//! - Failing: with a `redis-server` of the test's own stopped, each replica admits its
//!   share (6 ÷ 3) of the limit, DPoP calls get 503, Bearer calls carry on and `/readyz`
//!   says degraded; with Redis back (empty: no persistence), all three are one gatekeeper
//!   again without a restart. With PostgreSQL cut (a forwarder the test controls), calls,
//!   tokens and `/readyz` get 503 with a clear body, then recover.
//!
//! Needs `KEYGATE_TEST_POSTGRES_URL` and `KEYGATE_TEST_REDIS_URL`, and `redis-server` for
//! the failure test (each skipped, saying so, without them).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{free_port, keygate, wait_healthy};
use keygate_auth::UnixTime;
use keygate_auth::dpop::{ProofClaims, create_proof};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::SigningKey;
use keygate_testkit::{Cuttable, OwnRedis, clean_redis};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// An upstream on a thread: answers every request 200 (keep-alive) and records its
/// Authorization header.
fn upstream(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut auth = String::new();
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" && !first {
                            break;
                        }
                        first = false;
                        if let Some(v) = line
                            .to_ascii_lowercase()
                            .strip_prefix("authorization:")
                            .map(|_| line["authorization:".len()..].trim().to_owned())
                        {
                            auth = v;
                        }
                    }
                    seen.lock().unwrap().push(auth);
                    if writer
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

struct Replica {
    base: String,
    child: Option<Child>,
    _data: tempfile::TempDir,
}

impl Replica {
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

/// Three replicas on one store and one Redis prefix, with routes `limited` (6 a minute per
/// user) and `open`, and a confidential client.
struct Three {
    replicas: Vec<Replica>,
    _dir: tempfile::TempDir,
    admin_token: String,
    http: reqwest::Client,
    /// The public URL (issuer, DPoP htu): the first replica's, as a load balancer's would
    /// be one address for all.
    public: String,
    client_id: String,
    secret: String,
    seen: Arc<Mutex<Vec<String>>>,
    redis: String,
    prefix: String,
}

/// libfaketime, which shifts a process's wall clock (Debian package `faketime`).
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

impl Three {
    async fn start(redis: &str, store_url: &str) -> Self {
        Self::start_with_clocks(redis, store_url, [0, 0, 0]).await
    }

    /// With replica `i`'s wall clock `clocks[i]` seconds off (through libfaketime; the
    /// monotonic clock, which timeouts use, is left alone).
    async fn start_with_clocks(redis: &str, store_url: &str, clocks: [i64; 3]) -> Self {
        let prefix = format!(
            "kgtest-{}",
            hex::encode(keygate_auth::opaque::random_bytes::<6>())
        );
        // One init; three processes on the same keygate.toml and master key, each with
        // its own listener and data directory (audit checkpoints).
        let dir = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port(), free_port()];
        let out = keygate()
            .args(["init", "--format", "json", "--listen"])
            .arg(format!("127.0.0.1:{}", ports[0]))
            .arg("--dir")
            .arg(dir.path())
            .arg("--storage-url")
            .arg(store_url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let init: Value = serde_json::from_slice(&out.stdout).unwrap();
        let admin_token = init["admin_token"].as_str().unwrap().to_owned();
        let config = dir.path().join("keygate.toml");
        let replicas: Vec<Replica> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let data = tempfile::tempdir().unwrap();
                let log =
                    std::fs::File::create(dir.path().join(format!("replica-{i}.log"))).unwrap();
                let mut command = keygate();
                if clocks[i] != 0 {
                    command
                        .env("LD_PRELOAD", FAKETIME)
                        .env("FAKETIME", format!("{:+}s", clocks[i]))
                        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
                }
                let child = command
                    .args(["serve", "--config"])
                    .arg(&config)
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .env("KEYGATE_DATA_DIR", data.path())
                    .env("KEYGATE_COORDINATION__REDIS", redis)
                    .env("KEYGATE_COORDINATION__KEY_PREFIX", &prefix)
                    .env("KEYGATE_COORDINATION__REPLICAS", "3")
                    .env("KEYGATE_COORDINATION__TIMEOUT", "200ms")
                    .env("KEYGATE_TOKENS__DPOP", "optional")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap();
                Replica {
                    base: format!("http://127.0.0.1:{port}"),
                    child: Some(child),
                    _data: data,
                }
            })
            .collect();
        for p in ports {
            wait_healthy(p);
        }
        let public = replicas[0].base.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let up = upstream(seen.clone());
        let mut three = Self {
            replicas,
            _dir: dir,
            admin_token,
            http: reqwest::Client::new(),
            public,
            client_id: String::new(),
            secret: String::new(),
            seen,
            redis: redis.to_owned(),
            prefix,
        };
        let r = three
            .admin(
                0,
                reqwest::Method::PUT,
                "/admin/v1/secrets/partner",
                Some(json!({"value": "sk-partner-v1"})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let routes = format!(
            "[routes.limited]\nupstream = \"http://127.0.0.1:{up}\"\nsecret = \"partner\"\n\
             inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
             allow = [\"GET /v1/*\"]\nlimits = {{ rate = \"6/min\", burst = 6, per = \"user\" }}\n\
             [routes.open]\nupstream = \"http://127.0.0.1:{up}\"\nsecret = \"partner\"\n\
             inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
             allow = [\"GET /v1/*\"]\n"
        );
        let r = three
            .admin(
                0,
                reqwest::Method::PUT,
                "/admin/v1/routes",
                Some(json!({"toml": routes})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let c: Value = three
            .admin(
                0,
                reqwest::Method::POST,
                "/admin/v1/clients",
                Some(json!({"name": "backend", "type": "confidential"})),
            )
            .await
            .json()
            .await
            .unwrap();
        three.client_id = c["client_id"].as_str().unwrap().to_owned();
        three.secret = c["client_secret"].as_str().unwrap().to_owned();
        // Every replica serves the routes applied through the first (announced over
        // Redis).
        let bearer = three.token(None).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0..3 {
            loop {
                let got = three.call(i, "open", &bearer, None).await;
                if got == StatusCode::OK {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {i} never served the routes: {got}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        three
    }

    fn base(&self, i: usize) -> &str {
        &self.replicas[i].base
    }

    async fn admin(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base(i)))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    fn proof(&self, key: &SigningKey, method: &str, path: &str, token: Option<&str>) -> String {
        let jti = hex::encode(keygate_auth::opaque::random_bytes::<16>());
        create_proof(
            key,
            &ProofClaims {
                htm: method,
                htu: &format!("{}{path}", self.public),
                iat: now(),
                jti: &jti,
                nonce: None,
                access_token: token,
            },
        )
    }

    /// POST /oauth2/token (client credentials) on replica `i`.
    async fn try_token(&self, i: usize, key: Option<&SigningKey>) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/oauth2/token", self.base(i)))
            .basic_auth(&self.client_id, Some(&self.secret))
            .form(&[("grant_type", "client_credentials")]);
        if let Some(k) = key {
            req = req.header("DPoP", self.proof(k, "POST", "/oauth2/token", None));
        }
        req.send().await.unwrap()
    }

    /// An access token, DPoP-bound to `key` when given.
    async fn token(&self, key: Option<&SigningKey>) -> String {
        let r = self.try_token(0, key).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// GET /proxy/{route}/v1/x on replica `i`; with `key`, a fresh proof for it.
    async fn call(
        &self,
        i: usize,
        route: &str,
        token: &str,
        key: Option<&SigningKey>,
    ) -> StatusCode {
        let path = format!("/proxy/{route}/v1/x");
        let mut req = self.http.get(format!("{}{path}", self.base(i)));
        req = match key {
            Some(k) => req
                .header("Authorization", format!("DPoP {token}"))
                .header("DPoP", self.proof(k, "GET", &path, Some(token))),
            None => req.bearer_auth(token),
        };
        req.send().await.unwrap().status()
    }

    /// `n` calls to the limited route, round robin over the replicas; how many were
    /// admitted.
    async fn limited_round_robin(&self, token: &str, n: usize) -> usize {
        let mut admitted = 0;
        for i in 0..n {
            if self.call(i % 3, "limited", token, None).await == StatusCode::OK {
                admitted += 1;
            }
        }
        admitted
    }

    /// Revokes `token`'s session through replica `through` and waits until replica `at`
    /// refuses it; how long that took (at most 5 s).
    async fn revoke_and_wait(&self, token: &str, through: usize, at: usize) -> Duration {
        let sid = claims(token)["sid"].as_str().unwrap().to_owned();
        let r = self
            .admin(
                through,
                reqwest::Method::DELETE,
                &format!("/admin/v1/sessions/{sid}"),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let revoked = Instant::now();
        while self.call(at, "open", token, None).await != StatusCode::UNAUTHORIZED {
            assert!(revoked.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        revoked.elapsed()
    }

    async fn readyz(&self, i: usize) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}/readyz", self.base(i)))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// Stops the replicas, then removes the test's Redis keys.
    async fn stop(mut self) {
        self.replicas.clear();
        clean_redis(&self.redis, &self.prefix).await;
    }
}

/// The claims of a JWT, unverified (the test reads its own tokens).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_act_as_one_gatekeeper() {
    let test = "three_processes_act_as_one_gatekeeper";
    let Ok(redis) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
        println!("skipped: {test} (KEYGATE_TEST_REDIS_URL is not set)");
        return;
    };
    let Some(db) = keygate_store::testing::TestDb::postgres(test).await else {
        return;
    };
    let mut c = Three::start(&redis, db.url()).await;
    let bearer = c.token(None).await;

    // 1. 6 per minute per user: exactly 6 across the three.
    let admitted = c.limited_round_robin(&bearer, 15).await;
    assert_eq!(admitted, 6);

    // 2. A proof accepted by one replica is refused by the others.
    let key = SigningKey::generate(Algorithm::Es256);
    let bound = c.token(Some(&key)).await;
    let path = "/proxy/open/v1/x";
    let p = c.proof(&key, "GET", path, Some(&bound));
    let replay = |i: usize| {
        c.http
            .get(format!("{}{path}", c.base(i)))
            .header("Authorization", format!("DPoP {bound}"))
            .header("DPoP", p.clone())
            .send()
    };
    assert_eq!(replay(0).await.unwrap().status(), StatusCode::OK);
    for i in 1..3 {
        assert_eq!(
            replay(i).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "replayed at replica {i}"
        );
    }

    // 3. A revocation through the first replica, the next call on the third.
    let victim = c.token(None).await;
    assert_eq!(c.call(2, "open", &victim, None).await, StatusCode::OK);
    let took = c.revoke_and_wait(&victim, 0, 2).await;
    println!("revocation through replica 1 refused on replica 3 after {took:?}");
    assert!(took < Duration::from_millis(100), "{took:?}");

    // 4. A rotation through the first replica is injected by the second.
    let r = c
        .admin(
            0,
            reqwest::Method::PUT,
            "/admin/v1/secrets/partner",
            Some(json!({"value": "sk-partner-v2"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c.call(1, "open", &bearer, None).await, StatusCode::OK);
    assert_eq!(
        c.seen.lock().unwrap().last().map(String::as_str),
        Some("Bearer sk-partner-v2")
    );

    // 5. SIGKILL the second replica while it takes writes: every write it acknowledged
    //    is there afterwards, and the other two carry on.
    let writer_base = c.base(1).to_owned();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let acknowledged = acknowledged.clone();
        let http = c.http.clone();
        let admin_token = c.admin_token.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{i}");
                let sent = http
                    .put(format!("{writer_base}/admin/v1/secrets/{name}"))
                    .bearer_auth(&admin_token)
                    .json(&json!({"value": format!("value-{i}")}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => {
                        acknowledged.lock().unwrap().push(name);
                    }
                    _ => return i,
                }
            }
            unreachable!()
        })
    };
    while acknowledged.lock().unwrap().len() < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.replicas[1].kill9();
    let attempted = writer.await.unwrap();
    let acked = acknowledged.lock().unwrap().clone();
    println!(
        "replica 2 killed after {attempted} writes, {} acknowledged",
        acked.len()
    );
    for name in &acked {
        let r = c
            .admin(
                2,
                reqwest::Method::GET,
                &format!("/admin/v1/secrets/{name}"),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "acknowledged write {name} lost");
    }
    for i in [0, 2] {
        assert_eq!(c.call(i, "open", &bearer, None).await, StatusCode::OK);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_degrade_and_recover_when_redis_or_postgres_fails() {
    let test = "three_processes_degrade_and_recover_when_redis_or_postgres_fails";
    let Some(mut redis) = OwnRedis::start(test) else {
        return;
    };
    let Some(db) = keygate_store::testing::TestDb::postgres(test).await else {
        return;
    };
    // The replicas reach the test's schema through a forwarder the test can cut.
    let (forwarder, through) = Cuttable::to_url(db.url()).await;
    let c = Three::start(&redis.url(), &through).await;
    for i in 0..3 {
        assert_eq!(
            c.readyz(i).await,
            (StatusCode::OK, json!({"ready": true})),
            "replica {i}"
        );
    }
    let key = SigningKey::generate(Algorithm::Es256);
    let bound = c.token(Some(&key)).await;
    let bearer = c.token(None).await;

    // Redis stops. Each replica admits its share of the limit (6 ÷ 3 = 2), never
    // unlimited and never nothing; DPoP calls cannot be checked for replay and get 503;
    // Bearer calls without a limit carry on; /readyz stays 200 and says degraded.
    redis.down();
    let stopped = Instant::now();
    for i in 0..3 {
        let mut admitted = 0;
        for _ in 0..4 {
            match c.call(i, "limited", &bearer, None).await {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("replica {i} answered {other} without Redis"),
            }
        }
        assert_eq!(admitted, 2, "replica {i}'s share without Redis");
        assert_eq!(
            c.call(i, "open", &bound, Some(&key)).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(c.call(i, "open", &bearer, None).await, StatusCode::OK);
        let (s, r) = c.readyz(i).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert!(
            r["degraded"].as_str().unwrap_or_default().contains("Redis"),
            "replica {i}: {r}"
        );
    }
    println!(
        "without Redis: local shares, DPoP 503, degraded, checked on three replicas in {:?}",
        stopped.elapsed()
    );

    // Redis is back (empty): one gatekeeper again, without a restart.
    redis.up();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(15);
    for i in 0..3 {
        loop {
            if c.call(i, "open", &bound, Some(&key)).await == StatusCode::OK
                && c.readyz(i).await == (StatusCode::OK, json!({"ready": true}))
            {
                break;
            }
            assert!(Instant::now() < deadline, "replica {i} did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "all three back to normal {:?} after Redis returned",
        back.elapsed()
    );
    let admitted = c.limited_round_robin(&bearer, 15).await;
    assert_eq!(admitted, 6, "the limit is the cluster's again");

    // PostgreSQL is cut. Past the 1 s bound on a cached "still live" answer, nothing is
    // answered from memory: calls, tokens and /readyz are 503 with a clear body.
    forwarder.cut();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..3 {
        assert_eq!(
            c.call(i, "open", &bearer, None).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "replica {i}"
        );
        let r = c.try_token(i, None).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        let (s, r) = c.readyz(i).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{r}");
    }
    forwarder.restore();
    let restored = Instant::now();
    let deadline = restored + Duration::from_secs(20);
    for i in 0..3 {
        loop {
            if c.call(i, "open", &bearer, None).await == StatusCode::OK
                && c.try_token(i, None).await.status() == StatusCode::OK
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} did not recover after PostgreSQL came back"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "all three recovered {:?} after PostgreSQL came back",
        restored.elapsed()
    );
    c.stop().await;
}

/// Replicas whose clocks are apart by up to the token skew (60 s; here 25 s ahead and 25 s
/// behind, 50 s between the two) still act as one: a token issued by any replica is
/// accepted by every other, the per-user limit is exact (GCRA runs on Redis's clock), and
/// a revocation reaches all three. DPoP proofs carry the client's clock and may be at
/// most 5 s in a replica's future: the replica 25 s behind refuses a fresh proof, which is
/// why replicas must keep their clocks synchronised (NTP) far closer than the token skew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_clocks_apart_within_the_token_skew_act_as_one() {
    let test = "replicas_with_clocks_apart_within_the_token_skew_act_as_one";
    let Ok(redis) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
        println!("skipped: {test} (KEYGATE_TEST_REDIS_URL is not set)");
        return;
    };
    if !std::path::Path::new(FAKETIME).exists() {
        println!("skipped: {test} (libfaketime is not installed: Debian package faketime)");
        return;
    }
    let Some(db) = keygate_store::testing::TestDb::postgres(test).await else {
        return;
    };
    let c = Three::start_with_clocks(&redis, db.url(), [0, 25, -25]).await;
    // Each replica's idea of now, as it says in its tokens' iat.
    let mut tokens = Vec::new();
    for i in 0..3 {
        let r = c.try_token(i, None).await;
        assert_eq!(r.status(), StatusCode::OK, "token from replica {i}");
        let token = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let iat = claims(&token)["iat"].as_i64().unwrap();
        tokens.push((token, iat));
    }
    let apart = tokens[1].1 - tokens[2].1;
    println!("iat of replicas 2 and 3 differ by {apart} s");
    assert!(
        (45..=55).contains(&apart),
        "the clocks are not apart: {apart} s"
    );
    for (from, (token, _)) in tokens.iter().enumerate() {
        for at in 0..3 {
            assert_eq!(
                c.call(at, "open", token, None).await,
                StatusCode::OK,
                "a token from replica {from} at replica {at}"
            );
        }
    }
    let admitted = c.limited_round_robin(&tokens[0].0, 15).await;
    assert_eq!(
        admitted, 6,
        "exactly the limit, whatever the replicas' clocks"
    );

    // Revoked through the replica ahead, refused at once by the one behind.
    c.revoke_and_wait(&tokens[2].0, 1, 2).await;

    // DPoP: a proof made now is 25 s old for the replica ahead (fresh enough: 60 s) and
    // 25 s in the future for the one behind (refused: at most 5 s).
    let key = SigningKey::generate(Algorithm::Es256);
    let bound = c.token(Some(&key)).await;
    assert_eq!(c.call(0, "open", &bound, Some(&key)).await, StatusCode::OK);
    assert_eq!(c.call(1, "open", &bound, Some(&key)).await, StatusCode::OK);
    assert_eq!(
        c.call(2, "open", &bound, Some(&key)).await,
        StatusCode::UNAUTHORIZED,
        "a proof from 25 s in the replica's future"
    );
    c.stop().await;
}
