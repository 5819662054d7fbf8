//! Replicas acting as one gatekeeper (`[coordination]`): two servers in this process on
//! one PostgreSQL schema and one Redis key prefix, each with its own listener. A per-user
//! rate limit admits exactly N across both; a DPoP proof accepted by one is refused by the
//! other; a revocation through one refuses the next call on the other within 100 ms
//! (measured and printed); a secret rotation through one is injected by the other on its
//! next call. Then Redis stops (a `redis-server` this test runs on a free port) and the
//! replicas degrade as S35 says — each allows only its share of a limit, DPoP calls get
//! 503, `/readyz` says degraded — and recover when it is back, without a restart. The
//! monitor counts the cluster's traffic on every replica and records each incident once.
//!
//! Needs `KEYGATE_TEST_POSTGRES_URL` and `KEYGATE_TEST_REDIS_URL` (skipped, saying so,
//! without them); the outage test also needs `redis-server` on the PATH.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::recording_upstream as upstream;
use keygate_testkit::{Cuttable, OwnRedis, clean_redis};
use secrecy::ExposeSecret as _;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::TestApp;
use keygate_auth::UnixTime;
use keygate_auth::dpop::{ProofClaims, create_proof};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::SigningKey;
use keygate_server::RunningServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const REDIS_ENV: &str = "KEYGATE_TEST_REDIS_URL";

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

struct Cluster {
    /// Replica A (the TestApp's own server) and its helpers.
    a: TestApp,
    /// Replica B: the same configuration, its own listener and data directory.
    b: Option<RunningServer>,
    b_base: String,
    _b_dir: tempfile::TempDir,
    seen: Arc<Mutex<Vec<String>>>,
    client_id: String,
    client_secret: String,
}

/// Two replicas on a fresh PostgreSQL schema sharing `redis` under `prefix`, with routes
/// `limited` (5 calls per minute per user), `quota` (6 a day per user) and `open`, and a
/// confidential client allowed all three. `None` (skipped, said) without PostgreSQL.
async fn cluster(test: &str, redis: &str, prefix: &str, replicas: u32) -> Option<Cluster> {
    cluster_with(test, redis, prefix, replicas, "").await
}

/// [`cluster`] with `extra` appended to the shared configuration file.
async fn cluster_with(
    test: &str,
    redis: &str,
    prefix: &str,
    replicas: u32,
    extra: &str,
) -> Option<Cluster> {
    let coordination = [
        ("KEYGATE_COORDINATION__REDIS", redis.to_owned()),
        ("KEYGATE_COORDINATION__KEY_PREFIX", prefix.to_owned()),
        ("KEYGATE_COORDINATION__REPLICAS", replicas.to_string()),
        ("KEYGATE_COORDINATION__TIMEOUT", "200ms".to_owned()),
        // The backend's tokens are Bearer unless it sends a DPoP proof.
        ("KEYGATE_TOKENS__DPOP", "optional".to_owned()),
    ];
    let env: Vec<(&str, &str)> = coordination.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = TestApp::spawn_prepared(
        Some(test),
        |dir| {
            let path = dir.join("keygate.toml");
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str(extra);
            std::fs::write(&path, text).unwrap();
        },
        &env,
    )
    .await?;
    let b_dir = tempfile::tempdir().unwrap();
    let b_listen = common::free_addr().to_string();
    let b_data = b_dir.path().display().to_string();
    let mut b_env = env.clone();
    b_env.push(("KEYGATE_LISTEN", &b_listen));
    b_env.push(("KEYGATE_DATA_DIR", &b_data));
    b_env.push(("KEYGATE_STORAGE__URL", a.db.as_ref().unwrap().url()));
    let b = keygate_server::start(common::load_config(a.dir.path(), &b_env))
        .await
        .unwrap();
    let b_base = format!("http://{}", b.addr());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = upstream(seen.clone()).await;
    let (s, _) = a.put("partner", json!({"value": "sk-partner-v1"})).await;
    assert_eq!(s, StatusCode::OK);
    let routes = format!(
        "[routes.limited]\nupstream = \"{up}\"\nsecret = \"partner\"\n\
         inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
         allow = [\"GET /v1/*\"]\nscopes = [\"reports\"]\n\
         limits = {{ rate = \"5/min\", burst = 5, per = \"user\" }}\n\
         [routes.open]\nupstream = \"{up}\"\nsecret = \"partner\"\n\
         inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
         allow = [\"GET /v1/*\"]\nscopes = [\"reports\"]\n\
         [routes.quota]\nupstream = \"{up}\"\nsecret = \"partner\"\n\
         inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
         allow = [\"GET /v1/*\"]\nscopes = [\"reports\"]\n\
         limits = {{ quota = \"6/day\", per = \"user\" }}\n"
    );
    let (s, body) = a
        .call(
            reqwest::Method::PUT,
            "/admin/v1/routes",
            Some(json!({"toml": routes})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, c) = a
        .call(
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"name": "backend", "type": "confidential", "scopes": ["reports"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let cluster = Cluster {
        client_id: c["client_id"].as_str().unwrap().to_owned(),
        client_secret: c["client_secret"].as_str().unwrap().to_owned(),
        a,
        b: Some(b),
        b_base,
        _b_dir: b_dir,
        seen,
    };
    // B learns of A's route change (through the store, announced over Redis).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let token = cluster.token(None).await;
        if cluster.call(&cluster.b_base, "open", &token, None).await == StatusCode::OK {
            break;
        }
        if Instant::now() >= deadline {
            let r = cluster
                .a
                .http
                .get(format!("{}/proxy/open/v1/x", cluster.b_base))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let head = format!("{} {:?}", r.status(), r.headers().get("www-authenticate"));
            panic!(
                "replica B never served the routes: {head} {}",
                r.text().await.unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(cluster)
}

impl Cluster {
    fn bases(&self) -> [&str; 2] {
        [&self.a.base, &self.b_base]
    }

    /// A client_credentials token; DPoP-bound to `key` when given.
    async fn token(&self, key: Option<&SigningKey>) -> String {
        let mut req = self
            .a
            .http
            .post(format!("{}/oauth2/token", self.a.base))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "reports")]);
        if let Some(k) = key {
            req = req.header("DPoP", self.proof(k, "POST", "/oauth2/token", None));
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// A proof for `path` on the public URL (replica A's address: every replica has the
    /// same public URL, as behind a load balancer).
    fn proof(&self, key: &SigningKey, method: &str, path: &str, token: Option<&str>) -> String {
        let jti = hex::encode(keygate_auth::opaque::random_bytes::<16>());
        create_proof(
            key,
            &ProofClaims {
                htm: method,
                htu: &format!("{}{path}", self.a.base),
                iat: now(),
                jti: &jti,
                nonce: None,
                access_token: token,
            },
        )
    }

    /// GET /proxy/{route}/v1/x on `base` with `token` (and `proof`: DPoP scheme).
    async fn call(&self, base: &str, route: &str, token: &str, proof: Option<&str>) -> StatusCode {
        let mut req = self.a.http.get(format!("{base}/proxy/{route}/v1/x"));
        req = match proof {
            Some(p) => req
                .header("Authorization", format!("DPoP {token}"))
                .header("DPoP", p),
            None => req.bearer_auth(token),
        };
        req.send().await.unwrap().status()
    }

    /// Calls `route` on `base` `n` times with `token`; how many were admitted (200), the
    /// rest having been refused with 429.
    async fn admitted(&self, base: &str, route: &str, token: &str, n: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..n {
            match self.call(base, route, token, None).await {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("unexpected {other} at {base}"),
            }
        }
        admitted
    }

    async fn stop(mut self) {
        if let Some(b) = self.b.take() {
            b.shutdown().await;
        }
        self.a.stop().await;
    }
}

fn sid(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

fn redis_url(test: &str) -> Option<String> {
    match std::env::var(REDIS_ENV) {
        Ok(u) => Some(u),
        Err(_) => {
            println!("skipped: {test} ({REDIS_ENV} is not set)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_limits_replay_revocation_and_rotation() {
    let test = "two_replicas_share_limits_replay_revocation_and_rotation";
    let Some(redis) = redis_url(test) else { return };
    let prefix = format!(
        "kgtest-{}",
        hex::encode(keygate_auth::opaque::random_bytes::<6>())
    );
    let Some(c) = cluster(test, &redis, &prefix, 2).await else {
        return;
    };
    // 1. A limit of 5 per minute per user admits exactly 5 across both replicas.
    let token = c.token(None).await;
    let mut admitted = 0;
    let mut limited = 0;
    for i in 0..12 {
        match c.call(c.bases()[i % 2], "limited", &token, None).await {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((admitted, limited), (5, 7));

    // 2. A DPoP proof accepted by A is refused by B (and by A again).
    let key = SigningKey::generate(Algorithm::Es256);
    let bound = c.token(Some(&key)).await;
    let proof = c.proof(&key, "GET", "/proxy/open/v1/x", Some(&bound));
    assert_eq!(
        c.call(&c.a.base, "open", &bound, Some(&proof)).await,
        StatusCode::OK
    );
    for base in [&c.b_base, &c.a.base] {
        assert_eq!(
            c.call(base, "open", &bound, Some(&proof)).await,
            StatusCode::UNAUTHORIZED,
            "replayed at {base}"
        );
    }

    // 3. A revocation through A refuses the next call on B within 100 ms. B has just
    //    answered for this session, so its cache holds a "still live" answer.
    let victim = c.token(None).await;
    assert_eq!(
        c.call(&c.b_base, "open", &victim, None).await,
        StatusCode::OK
    );
    let (s, _) =
        c.a.call(
            reqwest::Method::DELETE,
            &format!("/admin/v1/sessions/{}", sid(&victim)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let revoked_at = Instant::now();
    let seen_after = loop {
        if c.call(&c.b_base, "open", &victim, None).await == StatusCode::UNAUTHORIZED {
            break revoked_at.elapsed();
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "never refused"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    println!("revocation through A refused on B after {seen_after:?}");
    assert!(seen_after < Duration::from_millis(100), "{seen_after:?}");

    // 4. A secret rotated through A is what B injects on its next call.
    let fresh = c.token(None).await;
    assert_eq!(
        c.call(&c.b_base, "open", &fresh, None).await,
        StatusCode::OK
    );
    let (s, _) = c.a.put("partner", json!({"value": "sk-partner-v2"})).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        c.call(&c.b_base, "open", &fresh, None).await,
        StatusCode::OK
    );
    assert_eq!(
        c.seen.lock().unwrap().last().map(String::as_str),
        Some("Bearer sk-partner-v2")
    );
    c.stop().await;
    clean_redis(&redis, &prefix).await;
}

async fn readyz(base: &str) -> Value {
    reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_local_shares_and_503_for_dpop_then_recovery() {
    let test = "redis_down_means_local_shares_and_503_for_dpop_then_recovery";
    let Some(mut redis) = OwnRedis::start(test) else {
        return;
    };
    let Some(c) = cluster(test, &redis.url(), "kgtest", 2).await else {
        return;
    };
    for base in c.bases() {
        assert_eq!(readyz(base).await, json!({"ready": true}));
    }
    let key = SigningKey::generate(Algorithm::Es256);
    let bound = c.token(Some(&key)).await;
    redis.down();
    // Degraded: each replica allows its share (5 ÷ 2 → burst 2) of the limit, never
    // unlimited; a DPoP call cannot be checked for replay and gets 503.
    let token = c.token(None).await;
    for base in c.bases() {
        assert_eq!(c.admitted(base, "limited", &token, 6).await, 2, "at {base}");
        let r = readyz(base).await;
        assert_eq!(r["ready"], true, "{r}");
        assert!(r["degraded"].as_str().unwrap().contains("Redis"), "{r}");
    }
    let proof = c.proof(&key, "GET", "/proxy/open/v1/x", Some(&bound));
    assert_eq!(
        c.call(&c.b_base, "open", &bound, Some(&proof)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // So does a DPoP proof at the token endpoint.
    let r =
        c.a.http
            .post(format!("{}/oauth2/token", c.a.base))
            .basic_auth(&c.client_id, Some(&c.client_secret))
            .header("DPoP", c.proof(&key, "POST", "/oauth2/token", None))
            .form(&[("grant_type", "client_credentials"), ("scope", "reports")])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Bearer calls without a limit carry on.
    assert_eq!(
        c.call(&c.a.base, "open", &token, None).await,
        StatusCode::OK
    );

    // Back: normal again without a restart.
    redis.up();
    let deadline = Instant::now() + Duration::from_secs(10);
    for base in c.bases() {
        loop {
            let proof = c.proof(&key, "GET", "/proxy/open/v1/x", Some(&bound));
            if c.call(base, "open", &bound, Some(&proof)).await == StatusCode::OK
                && readyz(base).await == json!({"ready": true})
            {
                break;
            }
            assert!(Instant::now() < deadline, "{base} did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_means_503_with_a_clear_body_then_recovery() {
    let test = "postgres_unreachable_means_503_with_a_clear_body_then_recovery";
    // The server reaches the (test's own) schema through a forwarder the test cuts.
    let Some(mut app) =
        TestApp::spawn_prepared(Some(test), |_| {}, &[("KEYGATE_TOKENS__DPOP", "optional")]).await
    else {
        return;
    };
    app.stop().await;
    let (proxy, through) = Cuttable::to_url(app.db.as_ref().unwrap().url()).await;
    let server = keygate_server::start(common::load_config(
        app.dir.path(),
        &[
            ("KEYGATE_STORAGE__URL", through.as_str()),
            ("KEYGATE_TOKENS__DPOP", "optional"),
        ],
    ))
    .await
    .unwrap();
    app.base = format!("http://{}", server.addr());
    app.server = Some(server);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = upstream(seen.clone()).await;
    let (s, _) = app.put("partner", json!({"value": "sk-partner-v1"})).await;
    assert_eq!(s, StatusCode::OK);
    let routes = format!(
        "[routes.open]\nupstream = \"{up}\"\nsecret = \"partner\"\n\
         inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
         allow = [\"GET /v1/*\"]\nscopes = [\"reports\"]\n"
    );
    let (s, _) = app
        .call(
            reqwest::Method::PUT,
            "/admin/v1/routes",
            Some(json!({"toml": routes})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, c) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"name": "backend", "type": "confidential", "scopes": ["reports"]})),
        )
        .await;
    let (id, secret) = (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"].as_str().unwrap().to_owned(),
    );
    let token = |app: &TestApp| {
        app.http
            .post(format!("{}/oauth2/token", app.base))
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "reports")])
            .send()
    };
    let r = token(&app).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = |app: &TestApp| {
        app.http
            .get(format!("{}/proxy/open/v1/x", app.base))
            .bearer_auth(&access)
            .send()
    };
    assert_eq!(call(&app).await.unwrap().status(), StatusCode::OK);

    proxy.cut();
    // Past the 1 s bound on a cached "still live" answer, nothing is answered from
    // memory: the proxy, the token endpoint, the admin API and /readyz say 503.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = Instant::now();
    let r = call(&app).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = token(&app).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let (s, b) = app.get("/admin/v1/secrets").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b["message"].as_str().unwrap_or_default().len() > 10, "{b}");
    let r = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    println!(
        "four refusals while PostgreSQL was cut took {:?}",
        started.elapsed()
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "nothing forwarded while down"
    );

    proxy.restore();
    let restored = Instant::now();
    let deadline = restored + Duration::from_secs(20);
    loop {
        let ok = call(&app).await.unwrap().status() == StatusCode::OK
            && token(&app).await.unwrap().status() == StatusCode::OK;
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "recovered {:?} after PostgreSQL came back",
        restored.elapsed()
    );
    app.stop().await;
}

/// Redis unreachable at start: refused with a clear error naming the setting (required,
/// the default), or started degraded with `coordination.required = false`, its limits
/// local shares and `/readyz` saying so. Needs no Redis: the address is a closed port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_at_start_is_refused_or_degraded_as_configured() {
    let closed = format!("redis://:sekret@127.0.0.1:{}", common::free_addr().port());
    let dir = tempfile::tempdir().unwrap();
    keygate_server::init_dir(dir.path(), common::free_addr())
        .await
        .unwrap();
    let required = keygate_server::start(common::load_config(
        dir.path(),
        &[("KEYGATE_COORDINATION__REDIS", closed.as_str())],
    ))
    .await;
    let e = format!("{:#}", required.err().expect("started without Redis"));
    assert!(e.contains("coordination.redis"), "{e}");
    assert!(e.contains("coordination.required = false"), "{e}");
    assert!(!e.contains("sekret"), "{e}");

    let server = keygate_server::start(common::load_config(
        dir.path(),
        &[
            ("KEYGATE_COORDINATION__REDIS", closed.as_str()),
            ("KEYGATE_COORDINATION__REQUIRED", "false"),
        ],
    ))
    .await
    .unwrap();
    let r = readyz(&format!("http://{}", server.addr())).await;
    assert_eq!(r["ready"], true, "{r}");
    assert!(r["degraded"].is_string(), "{r}");
    server.shutdown().await;
}

/// Evaluated only by the test (the loop's first tick runs at start, then once a minute):
/// a ceiling of 6 calls a minute per user that throttles.
const MONITOR: &str = "\n[monitor]\ninterval = \"60s\"\ndefault_rules = false\n\
[[monitor.rules]]\nname = \"cluster-ceiling\"\nkind = \"ceiling\"\ncalls_per_minute = 6\n\
window = \"60s\"\nactions = [\"throttle\"]\nthrottle_per_minute = 4\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_counts_the_cluster_and_records_each_incident_once() {
    let test = "the_monitor_counts_the_cluster_and_records_each_incident_once";
    let Some(redis) = redis_url(test) else { return };
    let prefix = format!(
        "kgtest-{}",
        hex::encode(keygate_auth::opaque::random_bytes::<6>())
    );
    let Some(c) = cluster_with(test, &redis, &prefix, 2, MONITOR).await else {
        return;
    };
    let monitor_a = c.a.server.as_ref().unwrap().monitor().unwrap().clone();
    let monitor_b = c.b.as_ref().unwrap().monitor().unwrap().clone();
    // 4 calls through each replica: 8 a minute for one user, over a ceiling of 6 that
    // neither replica reaches alone.
    let token = c.token(None).await;
    for base in c.bases() {
        for _ in 0..4 {
            assert_eq!(c.call(base, "open", &token, None).await, StatusCode::OK);
        }
    }
    // A evaluates first: 4 calls of its own, nothing from B yet.
    assert!(monitor_a.run_once().await.is_empty());
    // B: its 4 and A's 4. It claims the incident and records it.
    let alerts = monitor_b.run_once().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "cluster-ceiling");
    assert_eq!(alerts[0].action, "throttle");
    // A again, now with B's 4: it finds the same incident, which B holds, so it applies
    // the throttle to its own proxy and records nothing.
    assert!(monitor_a.run_once().await.is_empty());
    let (s, list) = c.a.get("/admin/v1/alerts").await;
    assert_eq!(s, StatusCode::OK);
    let list = list["alerts"].as_array().unwrap();
    assert_eq!(
        list.len(),
        1,
        "one alert for the incident, not one per replica: {list:?}"
    );
    assert!(
        monitor_a
            .render_metrics()
            .contains("rule=\"cluster-ceiling\",action=\"throttle\",outcome=\"other_replica\"} 1"),
        "{}",
        monitor_a.render_metrics()
    );
    // Both replicas throttle the user to 4 a minute between them: 2 each.
    for base in c.bases() {
        assert_eq!(
            c.admitted(base, "open", &token, 4).await,
            2,
            "{base}: its share of the throttle"
        );
    }

    // Lifted through B: A lifts it too once it has read B's next interval.
    let (s, throttles) = c.a.get("/admin/v1/throttles").await;
    assert_eq!(s, StatusCode::OK);
    let subject = throttles["throttles"][0]["subject"]
        .as_str()
        .unwrap()
        .to_owned();
    let r =
        c.a.http
            .delete(format!("{}/admin/v1/throttles/{subject}", c.b_base))
            .bearer_auth(c.a.token.expose_secret())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    monitor_b.run_once().await;
    monitor_a.run_once().await;
    let (_, throttles) = c.a.get("/admin/v1/throttles").await;
    assert_eq!(throttles["throttles"], json!([]), "{throttles}");

    // Acknowledged through A: the claims are released and the acknowledgement reaches B in
    // A's next interval, so the still-firing incident is recorded once more, by one replica.
    let id = list[0]["id"].as_str().unwrap();
    let (s, body) =
        c.a.call(
            reqwest::Method::POST,
            &format!("/admin/v1/alerts/{id}/ack"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let a_again = monitor_a.run_once().await;
    let b_again = monitor_b.run_once().await;
    assert_eq!(
        a_again.len() + b_again.len(),
        1,
        "A: {a_again:?} B: {b_again:?}"
    );
    let (_, list) = c.a.get("/admin/v1/alerts?all=true").await;
    assert_eq!(list["alerts"].as_array().unwrap().len(), 2, "{list}");

    c.stop().await;
    clean_redis(&redis, &prefix).await;
}

/// `[coordination]` over TLS: two replicas reach a `redis-server` that speaks only TLS and
/// requires a client certificate, trusting the test's CA (`coordination.ca`) and presenting
/// their certificate (`client_cert`, `client_key`). Both are ready and not degraded, and a
/// DPoP proof used on one is refused by the other (the replay cache is that Redis). A
/// replica that trusts another CA does not start, and says where to look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_reach_redis_over_tls_with_a_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let test = "replicas_reach_redis_over_tls_with_a_client_certificate";
    let certs = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: String| {
        let path = certs.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        (params.self_signed(&key).unwrap(), key)
    };
    let (ca_cert, ca_key) = ca("keygate test Redis CA");
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let ca_pem = write("ca.pem", ca_cert.pem());
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["replica.keygate.test".into()]);
    let server_cert = write("redis.crt", server_cert);
    let server_key = write("redis.key", server_key);
    let client_cert = write("client.crt", client_cert);
    let client_key = write("client.key", client_key);
    let Some(redis) = OwnRedis::start_tls(test, &server_cert, &server_key, &ca_pem, true) else {
        return;
    };
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let tls = format!(
        "\n[coordination]\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        ca_pem.display(),
        client_cert.display(),
        client_key.display()
    );
    let Some(c) = cluster_with(test, &url, "kgtest", 2, &tls).await else {
        return;
    };
    for base in c.bases() {
        assert_eq!(readyz(base).await, json!({"ready": true}), "{base}");
    }
    let key = SigningKey::generate(Algorithm::Es256);
    let bound = c.token(Some(&key)).await;
    let proof = c.proof(&key, "GET", "/proxy/open/v1/x", Some(&bound));
    assert_eq!(
        c.call(&c.a.base, "open", &bound, Some(&proof)).await,
        StatusCode::OK
    );
    assert_eq!(
        c.call(&c.b_base, "open", &bound, Some(&proof)).await,
        StatusCode::UNAUTHORIZED,
        "replayed on the other replica"
    );

    // Trusting another CA: Redis's certificate does not verify, and the replica (Redis
    // required, the default) refuses to start.
    let (other_ca, _) = ca("some other CA");
    let other = write("other-ca.pem", other_ca.pem());
    let dir = tempfile::tempdir().unwrap();
    keygate_server::init_dir(dir.path(), common::free_addr())
        .await
        .unwrap();
    let other = other.display().to_string();
    let refused = keygate_server::start(common::load_config(
        dir.path(),
        &[
            ("KEYGATE_COORDINATION__REDIS", url.as_str()),
            ("KEYGATE_COORDINATION__CA", other.as_str()),
            (
                "KEYGATE_COORDINATION__CLIENT_CERT",
                &client_cert.display().to_string(),
            ),
            (
                "KEYGATE_COORDINATION__CLIENT_KEY",
                &client_key.display().to_string(),
            ),
            ("KEYGATE_COORDINATION__TIMEOUT", "200ms"),
        ],
    ))
    .await;
    let e = format!(
        "{:#}",
        refused.err().expect("started with an untrusted Redis")
    );
    assert!(e.contains("coordination.redis"), "{e}");
    c.stop().await;
}

/// Quotas with `[coordination]`: counted in Redis across the replicas and copied to the
/// store every second; with Redis down, counted in the store, going on from that copy;
/// with Redis back empty (no persistence), seeded from the store, so the day's count is
/// not forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_count_in_redis_copy_to_the_store_and_survive_losing_redis() {
    let test = "quotas_count_in_redis_copy_to_the_store_and_survive_losing_redis";
    let Some(mut redis) = OwnRedis::start(test) else {
        return;
    };
    let Some(c) = cluster(test, &redis.url(), "kgtest", 2).await else {
        return;
    };
    let token = c.token(None).await;
    let bases = c.bases();
    // 4 of the day's 6 through both replicas.
    for i in 0..4 {
        assert_eq!(
            c.call(bases[i % 2], "quota", &token, None).await,
            StatusCode::OK
        );
    }
    // Copied to the store within the flush interval.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.down();
    // Counted in the store now: 2 more, then the day is used up, on either replica.
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(c.call(bases[i % 2], "quota", &token, None).await);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "without Redis the store goes on from its copy"
    );
    // Redis is back with nothing in it: each counter is seeded from the store's 6.
    redis.up();
    let deadline = Instant::now() + Duration::from_secs(10);
    for base in bases {
        while readyz(base).await != json!({"ready": true}) {
            assert!(Instant::now() < deadline, "{base} did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            c.call(base, "quota", &token, None).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{base} forgot the day's count"
        );
    }
    // Another user (a second client, whose token's subject it is): counted from zero.
    let (s, other) =
        c.a.call(
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"name": "backend-2", "type": "confidential", "scopes": ["reports"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{other}");
    let r =
        c.a.http
            .post(format!("{}/oauth2/token", c.a.base))
            .basic_auth(
                other["client_id"].as_str().unwrap(),
                other["client_secret"].as_str(),
            )
            .form(&[("grant_type", "client_credentials"), ("scope", "reports")])
            .send()
            .await
            .unwrap();
    let fresh = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for base in bases {
        assert_eq!(c.call(base, "quota", &fresh, None).await, StatusCode::OK);
    }
    c.stop().await;
}
