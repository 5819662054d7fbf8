//! The built binary, end to end: init, serve, every `secret` command, audit verification
//! against a tampered store, master-key rotation, and clear one-line errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Setup, keygate, stderr, stdout};
use sqlx::Row;

#[test]
fn init_writes_a_private_key_and_refuses_a_second_time() {
    let setup = Setup::new();
    assert!(setup.token.starts_with("kga_"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(setup.dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read(setup.dir.path().join("master.key"))
                .unwrap()
                .len(),
            32
        );
    }
    let again = keygate()
        .args(["init", "--dir"])
        .arg(setup.dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let err = stderr(&again);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Issue 19: `keygate init` ignored `storage.url` / `KEYGATE_STORAGE__URL`, so a
/// PostgreSQL deployment could not get its first admin credential. Runs on a throw-away
/// schema of the database named by `KEYGATE_TEST_POSTGRES_URL`.
#[tokio::test]
async fn init_sets_up_the_postgres_store_named_by_storage_url() {
    if std::env::var(keygate_store::testing::POSTGRES_ENV).is_err() {
        println!("skipped: KEYGATE_TEST_POSTGRES_URL not set");
        return;
    }
    let Some(db) = keygate_store::testing::TestDb::postgres("init on PostgreSQL").await else {
        return;
    };
    let init = |dir: &std::path::Path, port: u16, url_from_env: bool| {
        let mut cmd = keygate();
        cmd.args(["init", "--format", "json", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--dir")
            .arg(dir);
        if url_from_env {
            cmd.env("KEYGATE_STORAGE__URL", db.url());
        } else {
            cmd.arg("--storage-url").arg(db.url());
        }
        cmd.output().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let out = init(dir.path(), port, false);
    assert!(out.status.success(), "init: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let setup = Setup {
        token: v["admin_token"].as_str().unwrap().to_owned(),
        config: dir.path().join("keygate.toml"),
        dir,
        port,
    };
    let config = std::fs::read_to_string(&setup.config).unwrap();
    assert!(config.contains(db.url()), "storage.url written: {config}");
    assert!(!setup.data_dir().join("keygate.db").exists());

    // The first admin credential lives in PostgreSQL and works against a server on it.
    let server = setup.serve(&setup.dir.path().join("server.log"), &[]);
    let put = setup.cli(
        &["secret", "put", "openai", "--stdin"],
        Some("sk-on-postgres"),
    );
    assert!(put.status.success(), "{}", stderr(&put));
    let get = setup.cli(&["secret", "get", "openai"], None);
    assert_eq!(stdout(&get), "sk-on-postgres\n");
    server.stop();

    // A second set-up of the same store (URL from the environment this time) is refused
    // before it writes anything.
    let again_dir = tempfile::tempdir().unwrap();
    let again = init(again_dir.path(), common::free_port(), true);
    assert_eq!(again.status.code(), Some(1));
    let err = stderr(&again);
    assert!(err.contains("already initialised"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("postgres://"), "no URL in the error: {err}");
    assert!(
        std::fs::read_dir(again_dir.path())
            .unwrap()
            .next()
            .is_none(),
        "nothing left behind"
    );
    // The refused attempt left the store as it was.
    let server = setup.serve(&setup.dir.path().join("server.log"), &[]);
    let get = setup.cli(&["secret", "get", "openai"], None);
    assert_eq!(stdout(&get), "sk-on-postgres\n");
    server.stop();
}

#[test]
fn bad_config_fails_before_binding_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:99999\"\n").unwrap();
    let out = keygate()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("config error at `listen`"), "{err}");
    std::fs::write(&config, "[vault]\nmax_versions = \"ten\"\n").unwrap();
    let out = keygate()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("vault.max_versions"),
        "{}",
        stderr(&out)
    );
    let out = keygate()
        .args(["serve", "--config"])
        .arg(&config)
        .env("KEYGATE_VAULT__MAX_VERSIONS", "3")
        .env("KEYGATE_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(stderr(&out).contains("`listen`"), "{}", stderr(&out));
    assert!(
        !dir.path().join("keygate-data").exists(),
        "nothing created on a bad config"
    );
}

#[test]
fn secret_commands_round_trip_through_the_server() {
    let setup = Setup::new();
    let log = setup.dir.path().join("server.log");
    let server = setup.serve(&log, &[]);

    let put = setup.cli(
        &["secret", "put", "openai", "--stdin"],
        Some("sk-first-value\n"),
    );
    assert!(put.status.success(), "{}", stderr(&put));
    assert_eq!(stdout(&put).trim(), "openai: wrote version 1");
    let get = setup.cli(&["secret", "get", "openai"], None);
    assert_eq!(
        stdout(&get),
        "sk-first-value\n",
        "trailing newline was stripped once"
    );
    setup.cli(
        &["secret", "put", "openai", "--stdin", "--cas", "1"],
        Some("sk-second"),
    );
    let stale = setup.cli(
        &["secret", "put", "openai", "--stdin", "--cas", "1"],
        Some("x"),
    );
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr(&stale).contains("HTTP 409"), "{}", stderr(&stale));
    let no_stdin = setup.cli(&["secret", "put", "openai"], None);
    assert_eq!(no_stdin.status.code(), Some(1));
    assert!(stderr(&no_stdin).contains("--stdin"));

    let list = setup.cli(&["secret", "list"], None);
    assert!(stdout(&list).contains("openai"), "{}", stdout(&list));
    let json = setup.cli(&["secret", "list", "--format", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["secrets"][0]["current_version"], 2);

    let rb = setup.cli(&["secret", "rollback", "openai", "--to", "1"], None);
    assert!(stdout(&rb).contains("version 3"), "{}", stdout(&rb));
    assert_eq!(
        stdout(&setup.cli(&["secret", "get", "openai"], None)),
        "sk-first-value\n"
    );
    let v2 = setup.cli(&["secret", "get", "openai", "--version", "2"], None);
    assert_eq!(stdout(&v2), "sk-second\n");
    assert!(
        setup
            .cli(&["secret", "destroy", "openai", "--version", "2"], None)
            .status
            .success()
    );
    let gone = setup.cli(&["secret", "get", "openai", "--version", "2"], None);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("destroyed"), "{}", stderr(&gone));
    let hist = setup.cli(&["secret", "history", "openai"], None);
    assert!(
        stdout(&hist).contains("destroyed") && stdout(&hist).contains("current"),
        "{}",
        stdout(&hist)
    );
    assert!(
        setup
            .cli(
                &["secret", "configure", "openai", "--max-versions", "5"],
                None
            )
            .status
            .success()
    );
    assert!(
        setup
            .cli(&["secret", "delete", "openai"], None)
            .status
            .success()
    );
    let deleted = setup.cli(&["secret", "get", "openai"], None);
    assert!(stderr(&deleted).contains("deleted"), "{}", stderr(&deleted));
    assert!(
        setup
            .cli(&["secret", "undelete", "openai"], None)
            .status
            .success()
    );

    let unknown = setup.cli(&["secret", "get", "nope"], None);
    assert_eq!(unknown.status.code(), Some(1));
    let err = stderr(&unknown);
    assert_eq!(err.trim().lines().count(), 1);
    assert!(err.contains("secret not found (HTTP 404"), "{err}");
    let bad_name = setup.cli(&["secret", "get", "bad%20name"], None);
    assert!(
        stderr(&bad_name).contains("HTTP 400"),
        "{}",
        stderr(&bad_name)
    );

    let mut no_token = keygate();
    no_token
        .args(["secret", "list"])
        .env("KEYGATE_ADDR", setup.base());
    let out = no_token.output().unwrap();
    assert!(
        stderr(&out).contains("KEYGATE_TOKEN is not set"),
        "{}",
        stderr(&out)
    );

    server.stop();
}

/// Sets up a store with some history and a checkpoint at its head, server stopped.
fn store_with_history() -> Setup {
    let setup = Setup::new();
    let log = setup.dir.path().join("server.log");
    let server = setup.serve(&log, &[]);
    for i in 0..4 {
        let out = setup.cli(
            &["secret", "put", &format!("s{i}"), "--stdin"],
            Some("value-123456789"),
        );
        assert!(out.status.success());
    }
    server.stop();
    setup
}

fn verify_offline(setup: &Setup) -> std::process::Output {
    setup.offline(&[
        "audit",
        "verify",
        "--config",
        setup.config.to_str().unwrap(),
    ])
}

async fn sql(setup: &Setup, statements: &[&str]) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&setup.db_url()).await.unwrap();
    for s in statements {
        sqlx::query(s).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

#[tokio::test]
async fn audit_verify_names_the_first_bad_entry() {
    let base = store_with_history();
    let ok = verify_offline(&base);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("audit log intact"), "{}", stdout(&ok));
    let json = base.offline(&[
        "audit",
        "verify",
        "--format",
        "json",
        "--config",
        base.config.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["checkpoints_checked"].as_i64().unwrap() >= 1, "{v}");
    // The shutdown checkpoint names the head.
    let head = v["head_seq"].as_i64().unwrap();
    assert!(head >= 5, "{v}");
    let truncated_msg = format!("checkpoint at entry {head}: the log ends at entry 3");

    let cases: &[(&str, &[&str], &str)] = &[
        (
            "modified",
            &["UPDATE audit_log SET actor = 'admin:someone-else' WHERE seq = 3"],
            "entry 3: hash does not match",
        ),
        (
            "deleted",
            &["DELETE FROM audit_log WHERE seq = 3"],
            "entry 4: expected sequence number 3",
        ),
        (
            "reordered",
            &[
                "UPDATE audit_log SET seq = -3 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = 4",
                "UPDATE audit_log SET seq = 4 WHERE seq = -3",
            ],
            "entry 3: hash does not match",
        ),
        (
            "truncated",
            &[
                "DELETE FROM audit_log WHERE seq > 3",
                "UPDATE audit_head SET seq = 3",
            ],
            truncated_msg.as_str(),
        ),
    ];
    for (what, statements, expected) in cases {
        let copy = base.clone_to_new_dir();
        sql(&copy, statements).await;
        let out = verify_offline(&copy);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stdout(&out));
        assert!(stderr(&out).contains(expected), "{what}: {}", stderr(&out));
    }

    // Inserted: a well-formed entry spliced in after entry 2, the rest renumbered. Its own
    // hash and link are right; the renumbered entry after it no longer matches its hash.
    let copy = base.clone_to_new_dir();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&copy.db_url()).await.unwrap();
    let prev: Vec<u8> = sqlx::query("SELECT hash FROM audit_log WHERE seq = 2")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let forged = keygate_audit::AuditEntry::chain(
        3,
        prev.try_into().unwrap(),
        0,
        keygate_audit::AuditEvent::new(
            "admin:root",
            "secret.read",
            keygate_audit::Outcome::Success,
        ),
    );
    sqlx::query("UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 3")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO audit_log (seq, ts_ms, actor, action, target, outcome, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, NULL, 'success', $5, $6, $7)",
    )
    .bind(forged.seq)
    .bind(forged.ts_ms)
    .bind(forged.actor.clone())
    .bind(forged.action.clone())
    .bind(forged.details.clone())
    .bind(forged.prev_hash.to_vec())
    .bind(forged.hash.to_vec())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let out = verify_offline(&copy);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("entry 4: hash does not match"),
        "{}",
        stderr(&out)
    );

    // A forged checkpoint line is caught by its signature.
    let copy = base.clone_to_new_dir();
    let cp = copy.data_dir().join("audit-checkpoints.jsonl");
    let text = std::fs::read_to_string(&cp).unwrap();
    std::fs::write(
        &cp,
        text.replace(&format!("\"seq\":{head}"), &format!("\"seq\":{}", head - 1)),
    )
    .unwrap();
    let out = verify_offline(&copy);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("signature invalid"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn vault_rekey_rewraps_and_the_server_runs_on_the_new_key() {
    let setup = store_with_history();
    let new_key = setup.dir.path().join("master-2.key");
    let out = setup.offline(&[
        "vault",
        "rekey",
        "--config",
        setup.config.to_str().unwrap(),
        "--new-key-file",
        new_key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("re-wrapped 4 data keys"),
        "{}",
        stdout(&out)
    );

    // With the old key the server comes up sealed...
    let log = setup.dir.path().join("server.log");
    let server = setup.serve(&log, &[]);
    let sealed = setup.cli(&["secret", "get", "s1"], None);
    assert!(stderr(&sealed).contains("HTTP 503"), "{}", stderr(&sealed));
    server.stop();
    // ...with the new one, every value is there.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("./master.key", "./master-2.key"),
    )
    .unwrap();
    let server = setup.serve(&log, &[]);
    let get = setup.cli(&["secret", "get", "s1"], None);
    assert_eq!(stdout(&get), "value-123456789\n", "{}", stderr(&get));
    server.stop();
    let ok = verify_offline(&setup);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

/// The contract between `keygate secret fingerprints` and `keygate scan --fingerprints`:
/// a managed key pasted into a file, even base64-encoded, is reported by name and version,
/// and the value itself is printed nowhere.
#[test]
fn a_leaked_managed_secret_is_found_by_its_fingerprint() {
    use base64::Engine;
    let setup = Setup::new();
    let log = setup.dir.path().join("server.log");
    let server = setup.serve(&log, &[]);
    let key = format!("zq{}", "Xk3vT9pLm2Qw8RsY4uNc7HbJ6eGa1DfK");
    assert!(
        setup
            .cli(&["secret", "put", "maps", "--stdin"], Some(&key))
            .status
            .success()
    );
    let fp = setup.dir.path().join("fingerprints.json");
    let out = setup.cli(
        &["secret", "fingerprints", "--out", fp.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    server.stop();

    let tree = tempfile::tempdir().unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
    std::fs::write(
        tree.path().join("config.js"),
        format!("const cfg = \"{encoded}\";\n"),
    )
    .unwrap();
    let scan = keygate()
        .args([
            "scan",
            "--no-progress",
            "--fingerprints",
            fp.to_str().unwrap(),
        ])
        .arg(tree.path())
        .output()
        .unwrap();
    assert_eq!(
        scan.status.code(),
        Some(1),
        "{}{}",
        stdout(&scan),
        stderr(&scan)
    );
    let text = format!("{}{}", stdout(&scan), stderr(&scan));
    assert!(
        text.contains("managed secret maps (version 1) leaked"),
        "{text}"
    );
    assert!(
        !text.contains(&key) && !text.contains(&encoded),
        "the value is never printed"
    );
    let clean = tempfile::tempdir().unwrap();
    std::fs::write(clean.path().join("ok.js"), "const x = 1;\n").unwrap();
    let scan = keygate()
        .args([
            "scan",
            "--no-progress",
            "--fingerprints",
            fp.to_str().unwrap(),
        ])
        .arg(clean.path())
        .output()
        .unwrap();
    assert_eq!(scan.status.code(), Some(0), "{}", stderr(&scan));
}

/// `keygate demo`, the README's first command, walks the whole mobile flow and says so:
/// the key reached the upstream, refusals, 429, refresh, revocation, a verified audit
/// chain and nothing in clear at rest.
#[test]
fn the_demo_runs_every_step() {
    let out = keygate().arg("demo").output().unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    for expected in [
        "that is the vault's key (SHA-256 match)",
        "(version 2)",
        "-> HTTP 403",
        "429 (Retry-After:",
        "same session: true",
        "next call HTTP 401",
        "audit verify: ok=true",
        "keys, tokens or passwords in clear: none",
        "session revoked by the monitor after",
        "revoke   rule demo-burst",
        "monitor.revoke",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// The monitor's operator commands against a real server: alerts (none yet), an unknown
/// alert, throttles, and a user disabled then enabled again.
#[test]
fn alert_throttle_and_user_enable_commands() {
    let setup = Setup::new();
    let log = setup.dir.path().join("server.log");
    let server = setup.serve(&log, &[]);
    let list = setup.cli(&["alert", "list"], None);
    assert!(list.status.success(), "{}", stderr(&list));
    assert_eq!(stdout(&list).trim(), "no open alerts");
    let json = setup.cli(&["alert", "list", "--all", "--format", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["alerts"], serde_json::json!([]));
    let ack = setup.cli(&["alert", "ack", "al_0000000000000000"], None);
    assert_eq!(ack.status.code(), Some(1));
    assert!(stderr(&ack).contains("HTTP 404"), "{}", stderr(&ack));
    let throttles = setup.cli(&["throttle", "list"], None);
    assert_eq!(stdout(&throttles).trim(), "no throttles in force");
    let lift = setup.cli(&["throttle", "lift", "team:x"], None);
    assert_eq!(lift.status.code(), Some(1));
    assert!(stderr(&lift).contains("user:ID"), "{}", stderr(&lift));
    let monitor = setup.cli(&["alert", "monitor", "--format", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&monitor.stdout).unwrap();
    assert_eq!(v["geoip"], "none: prefix rules only", "{v}");

    let add = setup.cli(
        &["user", "add", "erin", "--password-stdin", "--scopes", "ai"],
        Some("a long enough password"),
    );
    assert!(add.status.success(), "{}", stderr(&add));
    setup.cli(&["user", "disable", "erin"], None);
    let enable = setup.cli(&["user", "enable", "erin"], None);
    assert!(
        stdout(&enable).contains("user erin enabled"),
        "{}",
        stderr(&enable)
    );
    let again = setup.cli(&["user", "enable", "erin"], None);
    assert!(
        stdout(&again).contains("was not disabled"),
        "{}",
        stdout(&again)
    );
    let users = setup.cli(&["user", "list", "--format", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&users.stdout).unwrap();
    assert_eq!(v["users"][0]["disabled"], false, "{v}");

    // A certificate client (RFC 8705): no secret printed, its method and SAN kept.
    let add = setup.cli(
        &[
            "client",
            "add",
            "billing",
            "--confidential",
            "--tls-san-dns",
            "billing.svc.test",
            "--scopes",
            "reports",
            "--format",
            "json",
        ],
        None,
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let v: serde_json::Value = serde_json::from_slice(&add.stdout).unwrap();
    assert_eq!(v["token_endpoint_auth_method"], "tls_client_auth", "{v}");
    assert_eq!(v["tls_identity"]["san_dns"], "billing.svc.test", "{v}");
    assert!(v.get("client_secret").is_none(), "{v}");
    // One identity per client: two is a usage error before anything is sent.
    let two = setup.cli(
        &[
            "client",
            "add",
            "x",
            "--confidential",
            "--tls-san-dns",
            "a.test",
            "--tls-subject-dn",
            "CN=a",
        ],
        None,
    );
    assert_eq!(two.status.code(), Some(2), "{}", stderr(&two));

    // A client in DPoP migration: added with --dpop optional (the CLI says how to end it),
    // listed with its policy, then set to required; an unknown policy is a usage error.
    let add = setup.cli(
        &[
            "client",
            "add",
            "legacy",
            "--public",
            "--redirect-uri",
            "com.example.legacy:/cb",
            "--scopes",
            "ai",
            "--dpop",
            "optional",
        ],
        None,
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let out = stdout(&add);
    assert!(out.contains("DPoP optional"), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("client_id: "))
        .unwrap()
        .to_owned();
    let list = stdout(&setup.cli(&["client", "list"], None));
    let row = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.contains(" optional "), "{list}");
    let set = setup.cli(&["client", "dpop", &id, "required"], None);
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(stdout(&set).contains("DPoP required"), "{}", stdout(&set));
    let bad = setup.cli(&["client", "dpop", &id, "sometimes"], None);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let missing = setup.cli(&["client", "dpop", "nobody-00000000", "optional"], None);
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("no such client"),
        "{}",
        stderr(&missing)
    );

    // SIGHUP (`systemctl reload`) without [tls] certificates: logged, not fatal.
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let users = setup.cli(&["user", "list"], None);
    assert!(
        users.status.success(),
        "the server died of SIGHUP: {}",
        stderr(&users)
    );
    server.stop();
}

/// Issue 19: a master key file with mode 0644 only left a warning in the log (the server
/// ran, sealed). `serve` now refuses it with a one-line reason, and starts on it (unsealed)
/// only with `--allow-insecure-key-permissions`.
#[cfg(unix)]
#[test]
fn serve_refuses_a_world_readable_master_key_unless_allowed() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};
    let setup = Setup::new();
    let key = setup.dir.path().join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let serve = |extra: &[&str]| {
        let mut cmd = keygate();
        cmd.args(["serve", "--config"])
            .arg(&setup.config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", setup.port))
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let mut child = serve(&[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("serve kept running on a 0644 master key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("master.key"), "{err}");
    assert!(err.contains("644"), "{err}");
    assert!(err.contains("--allow-insecure-key-permissions"), "{err}");

    let mut child = serve(&["--allow-insecure-key-permissions"]);
    common::wait_healthy(setup.port);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", setup.port)).unwrap();
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "unsealed: {answer}");
}

#[test]
fn secret_schedule_and_rotate_drive_the_rotation_hooks() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    let hook = setup.dir.path().join("next.sh");
    std::fs::write(&hook, "#!/bin/sh\nread v; echo \"${v}-next\"\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut text = std::fs::read_to_string(&setup.config).unwrap();
    text.push_str(&format!(
        "\n[rotation.hooks.next]\ncommand = [\"{}\"]\n",
        hook.display()
    ));
    std::fs::write(&setup.config, text).unwrap();
    let log = setup.dir.path().join("server.log");
    let _server = setup.serve(&log, &[]);

    let put = setup.cli(&["secret", "put", "openai", "--stdin"], Some("sk-one\n"));
    assert!(put.status.success(), "{}", stderr(&put));
    let sched = setup.cli(
        &[
            "secret",
            "schedule",
            "openai",
            "--every",
            "30d",
            "--overlap",
            "1h",
            "--hook",
            "next",
        ],
        None,
    );
    assert!(sched.status.success(), "{}", stderr(&sched));
    assert!(
        stdout(&sched).starts_with("openai: rotates every 30days with hook next (overlap 1h)"),
        "{}",
        stdout(&sched)
    );
    let bad = setup.cli(
        &[
            "secret", "schedule", "openai", "--every", "30d", "--hook", "nope",
        ],
        None,
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("`hook`"), "{}", stderr(&bad));

    let listed = setup.cli(&["secret", "schedules"], None);
    assert!(stdout(&listed).contains("openai"), "{}", stdout(&listed));
    assert!(stdout(&listed).contains("30days"), "{}", stdout(&listed));

    let rotated = setup.cli(&["secret", "rotate", "openai"], None);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert_eq!(stdout(&rotated).trim(), "openai: rotated to version 2");
    let get = setup.cli(&["secret", "get", "openai"], None);
    assert_eq!(stdout(&get).trim(), "sk-one-next");
    let old = setup.cli(&["secret", "get", "openai", "--version", "1"], None);
    assert_eq!(
        stdout(&old).trim(),
        "sk-one",
        "the previous version stays for the overlap"
    );

    let clear = setup.cli(&["secret", "schedule", "openai", "--clear"], None);
    assert!(clear.status.success(), "{}", stderr(&clear));
    assert_eq!(stdout(&clear).trim(), "openai: rotation schedule removed");
    let again = setup.cli(&["secret", "rotate", "openai"], None);
    assert!(!again.status.success(), "no schedule, nothing to rotate");
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains("sk-one"),
        "no value in the log"
    );
}
