//! `keygate run` with the built binary, a real server and real child processes: the child
//! sees the values, its output shows `****` for them (raw, base64, hex, URL-encoded, split
//! across two writes), exit codes and SIGTERM pass through, `--watch` restarts on a new
//! version, `--mount` serves a value once, nothing is written to disk; machine logins by
//! client credentials and by a CI job's OIDC token (GitHub Actions' token endpoint
//! emulated here, the token signed by a key the test publishes as the issuer's JWKS).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Setup, keygate, stderr, stdout};

/// A value with characters that URL-encoding changes.
const STRIPE: &str = "sk-live:AbC/dEf+ghi=jkl&mno";
const MAPS: &str = "maps-key-0123456789";
const DB: &str = "db-password-value";

const GH_ISS: &str = "https://token.actions.githubusercontent.com";

struct World {
    setup: Setup,
    server: Option<common::Server>,
    client_id: String,
    client_secret: String,
    /// The CI issuer's signing key (its JWKS is in the server's config).
    issuer_key: keygate_auth::keys::SigningKey,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

fn world() -> World {
    let setup = Setup::new();
    let issuer_key = keygate_auth::keys::SigningKey::generate(keygate_auth::jws::Algorithm::Es256);
    let mut jwk = issuer_key.verification_key().to_jwk().to_json();
    jwk.insert("kid".into(), "gh1".into());
    let jwks = setup.dir.path().join("gh-jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str(&format!(
        r#"
[[ci.issuers]]
name       = "github"
issuer     = "{GH_ISS}"
audience   = "{}"
jwks_file  = "{}"
algorithms = ["ES256"]

[[ci.issuers.bindings]]
policy = "deploy"
claims = {{ repository = "acme/app", ref = "refs/heads/main" }}
"#,
        setup.base(),
        jwks.display()
    ));
    std::fs::write(&setup.config, config).unwrap();
    let server = setup.serve(&setup.dir.path().join("server.log"), &[]);
    for (name, value) in [
        ("deploy.stripe", STRIPE),
        ("deploy.maps", MAPS),
        ("prod.db", DB),
    ] {
        let out = setup.cli(&["secret", "put", name, "--stdin"], Some(value));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = setup.cli(
        &[
            "policy", "put", "deploy", "--secret", "deploy.*", "--ttl", "5m",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("policy deploy created"),
        "{}",
        stdout(&out)
    );
    let out = setup.cli(
        &[
            "machine", "add", "runner", "--policy", "deploy", "--format", "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    World {
        client_id: m["client_id"].as_str().unwrap().to_owned(),
        client_secret: m["client_secret"].as_str().unwrap().to_owned(),
        setup,
        server: Some(server),
        issuer_key,
    }
}

impl World {
    /// `keygate run ARGS` as the machine credential, with a private TMPDIR.
    fn run_cmd(&self, tmp: &Path, args: &[&str]) -> std::process::Command {
        let mut c = keygate();
        c.arg("run")
            .args(args)
            .env("KEYGATE_ADDR", self.setup.base())
            .env("KEYGATE_CLIENT_ID", &self.client_id)
            .env("KEYGATE_CLIENT_SECRET", &self.client_secret)
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, tmp: &Path, args: &[&str]) -> Output {
        self.run_cmd(tmp, args).output().unwrap()
    }

    fn job_token(&self, jti: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = serde_json::Map::new();
        header.insert("typ".into(), "JWT".into());
        header.insert("kid".into(), "gh1".into());
        let claims = serde_json::json!({
            "iss": GH_ISS, "aud": self.setup.base(), "iat": now - 5, "exp": now + 300,
            "jti": jti, "sub": "repo:acme/app:ref:refs/heads/main",
            "repository": "acme/app", "ref": "refs/heads/main", "run_id": "777",
        });
        keygate_auth::jws::sign_compact(&self.issuer_key, header, &claims)
    }
}

fn encodings(v: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let url: String = v
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    vec![
        v.to_owned(),
        STANDARD.encode(v),
        URL_SAFE_NO_PAD.encode(v),
        hex::encode(v),
        url,
    ]
}

fn assert_masked(text: &str, values: &[&str]) {
    for v in values {
        for e in encodings(v) {
            assert!(
                !text.contains(&e),
                "`{e}` (a form of a secret) in output:\n{text}"
            );
        }
    }
}

fn empty_dir(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
}

#[test]
fn the_child_gets_its_values_and_its_output_masks_every_form_of_them() {
    let w = world();
    let tmp = tempfile::tempdir().unwrap();
    let enc = encodings(STRIPE);
    let script = r#"
echo "len=${#STRIPE} maps=${#MAPS}"
echo "raw: $STRIPE"
echo "b64: $2"; echo "b64url: $3"; echo "hex: $4"; echo "url: $5"
echo "on stderr: $MAPS" >&2
printf 'split: %s' "$(printf %s "$STRIPE" | cut -c1-9)"; sleep 0.3; printf '%s\n' "$(printf %s "$STRIPE" | cut -c10-)"
echo "own credentials: ${KEYGATE_CLIENT_SECRET:-none} ${KEYGATE_TOKEN:-none}"
exit 7
"#;
    let out = w.run(
        tmp.path(),
        &[
            "--secret",
            "STRIPE=deploy.stripe",
            "--secret",
            "MAPS=deploy.maps",
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &enc[0],
            &enc[1],
            &enc[2],
            &enc[3],
            &enc[4],
        ],
    );
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(7), "the child's exit code: {e}");
    assert!(
        o.contains(&format!("len={} maps={}", STRIPE.len(), MAPS.len())),
        "the child saw both values: {o}"
    );
    for line in [
        "raw: ****",
        "b64: ****",
        "b64url: ****",
        "hex: ****",
        "url: ****",
        "split: ****",
    ] {
        assert!(o.contains(line), "`{line}` missing from:\n{o}");
    }
    assert!(e.contains("on stderr: ****"), "{e}");
    assert!(o.contains("own credentials: none none"), "{o}");
    assert_masked(&o, &[STRIPE, MAPS]);
    assert_masked(&e, &[STRIPE, MAPS]);
    assert!(!o.contains(&w.client_secret) && !e.contains(&w.client_secret));
    empty_dir(tmp.path());
    // Nor in the server's data directory (database, WAL, checkpoints) in clear.
    let mut files = vec![w.setup.data_dir()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            for v in [STRIPE, MAPS] {
                assert!(
                    !bytes.windows(v.len()).any(|win| win == v.as_bytes()),
                    "{v} in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn refusals_are_one_line_and_exit_codes_follow_the_rules() {
    let w = world();
    let tmp = tempfile::tempdir().unwrap();
    // Outside the policy: keygate fails before CMD starts.
    let out = w.run(
        tmp.path(),
        &["--secret", "DB=prod.db", "--", "sh", "-c", "echo started"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stdout(&out).contains("started"));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("policy `deploy` does not grant secret `prod.db`"),
        "{}",
        stderr(&out)
    );
    // A command that does not exist, one that is not executable.
    let out = w.run(
        tmp.path(),
        &["--secret", "K=deploy.maps", "--", "no-such-command-kg"],
    );
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        stderr(&out).trim(),
        "keygate run: no-such-command-kg: command not found"
    );
    let plain = tmp.path().join("plain.sh");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let out = w.run(
        tmp.path(),
        &["--secret", "K=deploy.maps", "--", plain.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    std::fs::remove_file(plain).unwrap();
    // Usage errors.
    let out = w.run(tmp.path(), &["--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--secret ENV=NAME"),
        "{}",
        stderr(&out)
    );
    let out = w.run(tmp.path(), &["--secret", "1X=deploy.maps", "--", "true"]);
    assert!(
        stderr(&out).contains("not a variable name"),
        "{}",
        stderr(&out)
    );
    // An admin token is not a machine identity; no identity at all is explained.
    let out = keygate()
        .args(["run", "--secret", "K=deploy.maps", "--", "true"])
        .env("KEYGATE_ADDR", w.setup.base())
        .env("KEYGATE_TOKEN", &w.setup.token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("admin token"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&w.setup.token));
    let out = keygate()
        .args(["run", "--secret", "K=deploy.maps", "--", "true"])
        .env("KEYGATE_ADDR", w.setup.base())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no machine identity"),
        "{}",
        stderr(&out)
    );
    // A wrong machine secret.
    let out = w
        .run_cmd(tmp.path(), &["--secret", "K=deploy.maps", "--", "true"])
        .env("KEYGATE_CLIENT_SECRET", "kgs_wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid_client"), "{}", stderr(&out));
    empty_dir(tmp.path());
}

/// Reads `child`'s stdout lines into a channel.
fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let hit = line.contains(want);
            seen.push(line);
            if hit {
                return;
            }
        }
    }
    panic!("`{want}` never came; saw {seen:#?}");
}

fn sigterm(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn sigterm_reaches_the_child_and_its_exit_code_comes_back() {
    let w = world();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = w
        .run_cmd(
            tmp.path(),
            &[
                "--secret",
                "K=deploy.maps",
                "--",
                "sh",
                "-c",
                "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
            ],
        )
        .spawn()
        .unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    wait_for(&rx, "ready", &mut seen);
    sigterm(child.id());
    wait_for(&rx, "got-term", &mut seen);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(42),
        "the child's own exit code after TERM"
    );
}

#[test]
fn watch_restarts_the_command_when_a_secret_gets_a_new_version() {
    let w = world();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = w
        .run_cmd(
            tmp.path(),
            &[
                "--watch",
                "--watch-interval",
                "200ms",
                "--grace",
                "2s",
                "--secret",
                "K=deploy.maps",
                "--",
                "sh",
                "-c",
                "echo \"start len=${#K} value=$K\"; while :; do sleep 0.05; done",
            ],
        )
        .spawn()
        .unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    wait_for(&rx, &format!("start len={}", MAPS.len()), &mut seen);
    let newer = "maps-key-rotated-abcdefghijkl";
    let out = w
        .setup
        .cli(&["secret", "put", "deploy.maps", "--stdin"], Some(newer));
    assert!(out.status.success());
    wait_for(&rx, &format!("start len={}", newer.len()), &mut seen);
    // A secret that vanishes: a warning, and the command keeps running with what it has.
    let out = w.setup.cli(&["secret", "delete", "deploy.maps"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(800));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    sigterm(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "sh dies of the forwarded TERM");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("restarting the command"), "{err}");
    assert!(
        err.contains("secret `deploy.maps` is no longer readable; the command keeps running"),
        "{err}"
    );
    let text = seen.join("\n");
    assert!(text.contains("value=****"), "{text}");
    assert_masked(&text, &[MAPS, newer]);
    empty_dir(tmp.path());
}

#[test]
fn a_mounted_secret_is_read_once_and_never_stored() {
    let w = world();
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("maps.key");
    let mount_s = mount.to_str().unwrap();
    let out = w.run(
        tmp.path(),
        &[
            "--mount",
            &format!("{mount_s}=deploy.maps"),
            "--",
            "sh",
            "-c",
            "test -p \"$1\" && echo is-a-pipe; v=$(cat \"$1\"); echo \"len=${#v} value=$v\"; sleep 0.2; test -e \"$1\" && echo still-there || echo gone",
            "sh",
            mount_s,
        ],
    );
    let o = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(o.contains("is-a-pipe"), "{o}");
    assert!(o.contains(&format!("len={} value=****", MAPS.len())), "{o}");
    assert!(o.contains("gone"), "{o}");
    assert_masked(&o, &[MAPS]);
    empty_dir(tmp.path());
}

/// GitHub Actions' ID token endpoint: answers `{"value": token}` to a request with the
/// right bearer token and audience; reports what it was asked.
fn actions_endpoint(
    token: String,
    request_token: &'static str,
) -> (String, mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/token?api-version=2.0",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let authorized = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {request_token}")));
        let body = if authorized {
            serde_json::json!({ "value": token }).to_string()
        } else {
            "{}".to_owned()
        };
        let status = if authorized {
            "200 OK"
        } else {
            "401 Unauthorized"
        };
        write!(
            conn,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        tx.send(head).unwrap();
    });
    (url, rx)
}

#[test]
fn a_github_actions_job_logs_in_with_its_oidc_token() {
    let w = world();
    let tmp = tempfile::tempdir().unwrap();
    let job_token = w.job_token("run-777-1");
    let (url, asked) = actions_endpoint(job_token.clone(), "actions-request-token-xyz");
    let out = keygate()
        .args([
            "run",
            "--all-of-policy",
            "--",
            "sh",
            "-c",
            "echo \"stripe=${#DEPLOY_STRIPE} maps=${#DEPLOY_MAPS} db=${PROD_DB:-none} req=${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-none}\"",
        ])
        .env("KEYGATE_ADDR", w.setup.base())
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", &url)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "actions-request-token-xyz")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "stripe={} maps={} db=none req=none",
            STRIPE.len(),
            MAPS.len()
        )
    );
    let head = asked.recv_timeout(Duration::from_secs(5)).unwrap();
    let audience =
        url::form_urlencoded::byte_serialize(w.setup.base().as_bytes()).collect::<String>();
    assert!(head.contains(&format!("audience={audience}")), "{head}");

    // The same job token cannot log in twice.
    let out = keygate()
        .args(["run", "--secret", "K=deploy.maps", "--", "true"])
        .env("KEYGATE_ADDR", w.setup.base())
        .env("KEYGATE_ID_TOKEN", &job_token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("replayed"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&job_token));

    // The audit names the job; no token or value is in it.
    let out = w.setup.cli(&["audit", "export"], None);
    let audit = stdout(&out);
    assert!(audit.contains("\"repository\":\"acme/app\""), "{audit}");
    assert!(audit.contains("\"run_id\":\"777\""));
    for needle in [job_token.as_str(), STRIPE, MAPS, &w.client_secret] {
        assert!(!audit.contains(needle), "in the audit: {needle}");
    }
    empty_dir(tmp.path());
}

#[test]
fn ci_example_prints_a_pipeline_that_uses_oidc_and_keygate_run() {
    for (provider, needles) in [
        (
            "github",
            ["id-token: write", "keygate run", "[[ci.issuers]]"],
        ),
        ("gitlab", ["id_tokens:", "keygate run", "[[ci.issuers]]"]),
    ] {
        let out = keygate()
            .args(["ci", "example", "--provider", provider])
            .output()
            .unwrap();
        assert!(out.status.success());
        for n in needles {
            assert!(stdout(&out).contains(n), "{provider}: {n}");
        }
    }
}
