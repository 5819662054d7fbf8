//! Three real `keygate serve` processes on loopback, sharing one PostgreSQL schema and one
//! Redis key prefix, as behind a load balancer: a per-user limit of 5 per minute admits
//! exactly 5 across all three; a DPoP proof accepted by one is refused by the others; a
//! revocation through one refuses the next call on another within 100 ms (measured); a
//! secret rotated through one is injected by another on its next call; and one replica
//! SIGKILLed while it takes writes loses none it acknowledged, while the other two carry
//! on. Needs `KEYGATE_TEST_POSTGRES_URL` and `KEYGATE_TEST_REDIS_URL` (skipped, saying so,
//! without them).
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
    let prefix = format!(
        "kgtest-{}",
        hex::encode(keygate_auth::opaque::random_bytes::<6>())
    );
    // One init; three processes on the same keygate.toml and master key, each with its
    // own listener and data directory (audit checkpoints).
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let out = keygate()
        .args(["init", "--format", "json", "--listen"])
        .arg(format!("127.0.0.1:{}", ports[0]))
        .arg("--dir")
        .arg(dir.path())
        .arg("--storage-url")
        .arg(db.url())
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
    let mut replicas: Vec<Replica> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let data = tempfile::tempdir().unwrap();
            let log = std::fs::File::create(dir.path().join(format!("replica-{i}.log"))).unwrap();
            let child = keygate()
                .args(["serve", "--config"])
                .arg(&config)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .env("KEYGATE_DATA_DIR", data.path())
                .env("KEYGATE_COORDINATION__REDIS", &redis)
                .env("KEYGATE_COORDINATION__KEY_PREFIX", &prefix)
                .env("KEYGATE_COORDINATION__REPLICAS", "3")
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
    // The public URL (issuer, DPoP htu) is the first replica's, as a load balancer's
    // would be one address for all.
    let public = replicas[0].base.clone();
    let http = reqwest::Client::new();
    let admin = |base: &str, method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };

    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = upstream(seen.clone());
    let r = admin(
        &replicas[0].base,
        reqwest::Method::PUT,
        "/admin/v1/secrets/partner",
        Some(json!({"value": "sk-partner-v1"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let routes = format!(
        "[routes.limited]\nupstream = \"http://127.0.0.1:{up}\"\nsecret = \"partner\"\n\
         inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
         allow = [\"GET /v1/*\"]\nlimits = {{ rate = \"5/min\", burst = 5, per = \"user\" }}\n\
         [routes.open]\nupstream = \"http://127.0.0.1:{up}\"\nsecret = \"partner\"\n\
         inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
         allow = [\"GET /v1/*\"]\n"
    );
    let r = admin(
        &replicas[0].base,
        reqwest::Method::PUT,
        "/admin/v1/routes",
        Some(json!({"toml": routes})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let c: Value = admin(
        &replicas[0].base,
        reqwest::Method::POST,
        "/admin/v1/clients",
        Some(json!({"name": "backend", "type": "confidential"})),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let (client_id, secret) = (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"].as_str().unwrap().to_owned(),
    );
    let proof = |key: &SigningKey, method: &str, path: &str, token: Option<&str>| {
        let jti = hex::encode(keygate_auth::opaque::random_bytes::<16>());
        create_proof(
            key,
            &ProofClaims {
                htm: method,
                htu: &format!("{public}{path}"),
                iat: now(),
                jti: &jti,
                nonce: None,
                access_token: token,
            },
        )
    };
    let token = |key: Option<&SigningKey>| {
        let mut req = http
            .post(format!("{public}/oauth2/token"))
            .basic_auth(&client_id, Some(&secret))
            .form(&[("grant_type", "client_credentials")]);
        if let Some(k) = key {
            req = req.header("DPoP", proof(k, "POST", "/oauth2/token", None));
        }
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let call = |base: &str, route: &str, token: &str, dpop: Option<String>| {
        let mut req = http.get(format!("{base}/proxy/{route}/v1/x"));
        req = match dpop {
            Some(p) => req
                .header("Authorization", format!("DPoP {token}"))
                .header("DPoP", p),
            None => req.bearer_auth(token),
        };
        async move { req.send().await.unwrap().status() }
    };
    // Every replica serves the routes applied through the first (announced over Redis).
    let bearer = token(None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for r in &replicas {
        loop {
            let got = call(&r.base, "open", &bearer, None).await;
            if got == StatusCode::OK {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never served the routes: {got}",
                r.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // 1. 5 per minute per user: exactly 5 across the three.
    let mut admitted = 0;
    for i in 0..12 {
        if call(&replicas[i % 3].base, "limited", &bearer, None).await == StatusCode::OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);

    // 2. A proof accepted by one replica is refused by the others.
    let key = SigningKey::generate(Algorithm::Es256);
    let bound = token(Some(&key)).await;
    let p = proof(&key, "GET", "/proxy/open/v1/x", Some(&bound));
    assert_eq!(
        call(&replicas[0].base, "open", &bound, Some(p.clone())).await,
        StatusCode::OK
    );
    for r in &replicas[1..] {
        assert_eq!(
            call(&r.base, "open", &bound, Some(p.clone())).await,
            StatusCode::UNAUTHORIZED,
            "replayed at {}",
            r.base
        );
    }

    // 3. A revocation through the first replica, the next call on the third.
    let victim = token(None).await;
    assert_eq!(
        call(&replicas[2].base, "open", &victim, None).await,
        StatusCode::OK
    );
    let payload = victim.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let sid = claims["sid"].as_str().unwrap();
    let r = admin(
        &replicas[0].base,
        reqwest::Method::DELETE,
        &format!("/admin/v1/sessions/{sid}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let revoked = Instant::now();
    while call(&replicas[2].base, "open", &victim, None).await != StatusCode::UNAUTHORIZED {
        assert!(revoked.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = revoked.elapsed();
    println!("revocation through replica 1 refused on replica 3 after {took:?}");
    assert!(took < Duration::from_millis(100), "{took:?}");

    // 4. A rotation through the first replica is injected by the second.
    let r = admin(
        &replicas[0].base,
        reqwest::Method::PUT,
        "/admin/v1/secrets/partner",
        Some(json!({"value": "sk-partner-v2"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        call(&replicas[1].base, "open", &bearer, None).await,
        StatusCode::OK
    );
    assert_eq!(
        seen.lock().unwrap().last().map(String::as_str),
        Some("Bearer sk-partner-v2")
    );

    // 5. SIGKILL the second replica while it takes writes: every write it acknowledged
    //    is there afterwards, and the other two carry on.
    let writer_base = replicas[1].base.clone();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let acknowledged = acknowledged.clone();
        let http = http.clone();
        let admin_token = admin_token.clone();
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
    replicas[1].kill9();
    let attempted = writer.await.unwrap();
    let acked = acknowledged.lock().unwrap().clone();
    println!(
        "replica 2 killed after {attempted} writes, {} acknowledged",
        acked.len()
    );
    for name in &acked {
        let r = admin(
            &replicas[2].base,
            reqwest::Method::GET,
            &format!("/admin/v1/secrets/{name}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "acknowledged write {name} lost");
    }
    for r in [&replicas[0], &replicas[2]] {
        assert_eq!(call(&r.base, "open", &bearer, None).await, StatusCode::OK);
    }

    drop(replicas);
    // The test's own Redis keys.
    let client = redis::Client::open(redis.as_str()).unwrap();
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
