//! S22: unique canary values go through every command; none of them may appear in clear
//! in the database files, the server's log (at trace level), the audit export, the
//! fingerprint file or any command's output (except `secret get`, whose job is to print
//! the value).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::{Setup, stderr, stdout};

fn canary(tag: &str) -> String {
    format!(
        "canary-{tag}-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn canaries_never_appear_in_clear() {
    let setup = Setup::new();
    // A CI issuer, so a job's ID token goes through the same checks as everything else.
    let issuer_key = keygate_auth::keys::SigningKey::generate(keygate_auth::jws::Algorithm::Es256);
    let mut jwk = issuer_key.verification_key().to_jwk().to_json();
    jwk.insert("kid".into(), "ci1".into());
    let jwks = setup.dir.path().join("ci-jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
    let mut config = std::fs::read_to_string(&setup.config).unwrap();
    config.push_str(&format!(
        "\n[[ci.issuers]]\nname = \"ci\"\nissuer = \"https://ci.example\"\naudience = \"keygate\"\njwks_file = \"{}\"\nalgorithms = [\"ES256\"]\n\n[[ci.issuers.bindings]]\npolicy = \"deploy\"\nclaims = {{ repository = \"acme/app\" }}\n",
        jwks.display()
    ));
    std::fs::write(&setup.config, config).unwrap();
    let log = setup.dir.path().join("server.log");
    let trace = [("KEYGATE_LOG", "trace")];
    let server = setup.serve(&log, &trace);
    let values: Vec<String> = (0..4).map(|i| canary(&format!("v{i}"))).collect();

    // Everything that should appear nowhere but in `secret get`'s stdout.
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut run = |label: &str, args: &[&str], stdin: Option<&str>, stdout_may_hold_value: bool| {
        let out = setup.cli(args, stdin);
        assert!(
            out.status.success() || label.starts_with("expected-failure"),
            "{label}: {}",
            stderr(&out)
        );
        if !stdout_may_hold_value {
            outputs.push((format!("{label} stdout"), out.stdout.clone()));
        }
        outputs.push((format!("{label} stderr"), out.stderr.clone()));
        out
    };
    run(
        "put a",
        &["secret", "put", "alpha", "--stdin"],
        Some(&values[0]),
        false,
    );
    run(
        "put a2",
        &["secret", "put", "alpha", "--stdin", "--cas", "1"],
        Some(&values[1]),
        false,
    );
    run(
        "put b",
        &["secret", "put", "beta", "--stdin"],
        Some(&values[2]),
        false,
    );
    let got = run("get a", &["secret", "get", "alpha"], None, true);
    assert_eq!(stdout(&got).trim(), values[1]);
    run(
        "get a json",
        &[
            "secret",
            "get",
            "alpha",
            "--version",
            "1",
            "--format",
            "json",
        ],
        None,
        true,
    );
    run(
        "expected-failure cas",
        &["secret", "put", "alpha", "--stdin", "--cas", "1"],
        Some(&values[3]),
        false,
    );
    run("list", &["secret", "list"], None, false);
    run(
        "list json",
        &["secret", "list", "--format", "json"],
        None,
        false,
    );
    run("history", &["secret", "history", "alpha"], None, false);
    run(
        "rollback",
        &["secret", "rollback", "alpha", "--to", "1"],
        None,
        false,
    );
    run(
        "configure",
        &["secret", "configure", "alpha", "--max-versions", "5"],
        None,
        false,
    );
    run(
        "destroy",
        &["secret", "destroy", "alpha", "--version", "2"],
        None,
        false,
    );
    run("delete", &["secret", "delete", "beta"], None, false);
    run("undelete", &["secret", "undelete", "beta"], None, false);
    let fp_file = setup.dir.path().join("fingerprints.json");
    run(
        "fingerprints",
        &["secret", "fingerprints", "--out", fp_file.to_str().unwrap()],
        None,
        false,
    );
    run(
        "fingerprints stdout",
        &["secret", "fingerprints"],
        None,
        false,
    );
    run("audit tail", &["audit", "tail", "-n", "100"], None, false);
    let export = run("audit export", &["audit", "export"], None, false);
    assert!(stdout(&export).lines().count() >= 12, "{}", stdout(&export));
    run("audit verify api", &["audit", "verify"], None, false);
    // A failed authentication with a canary as the token.
    let token_canary = canary("token");
    let mut bad = common::keygate();
    bad.args(["secret", "list"])
        .env("KEYGATE_ADDR", setup.base())
        .env("KEYGATE_TOKEN", &token_canary);
    let out = bad.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let bad_token_stderr = out.stderr;

    // Machine identities: a policy, a machine credential (printed once), its rotation,
    // `keygate run` as the machine and as a CI job, whose child prints the values.
    run(
        "put deploy",
        &["secret", "put", "deploy.key", "--stdin"],
        Some(&values[3]),
        false,
    );
    run(
        "policy put",
        &["policy", "put", "deploy", "--secret", "deploy.*"],
        None,
        false,
    );
    run("policy list", &["policy", "list"], None, false);
    let added = run(
        "machine add",
        &[
            "machine", "add", "runner", "--policy", "deploy", "--format", "json",
        ],
        None,
        true,
    );
    let machine: serde_json::Value = serde_json::from_slice(&added.stdout).unwrap();
    let machine_id = machine["client_id"].as_str().unwrap().to_owned();
    let first_secret = machine["client_secret"].as_str().unwrap().to_owned();
    let rotated = run(
        "machine rotate",
        &["machine", "rotate", "runner", "--format", "json"],
        None,
        true,
    );
    let rotated: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    let machine_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    run("machine list", &["machine", "list"], None, false);
    // A user and a console account: passwords and a TOTP seed go in (and the seed comes
    // out once, on stdout); none of them may be kept or logged in clear.
    let user_password = canary("user-password");
    run(
        "user add",
        &["user", "add", "carol", "--password-stdin"],
        Some(&user_password),
        false,
    );
    let console_password = canary("console-password");
    let console = run(
        "admin add",
        &[
            "admin",
            "add",
            "ops",
            "--password-stdin",
            "--format",
            "json",
        ],
        Some(&console_password),
        true,
    );
    let console: serde_json::Value = serde_json::from_slice(&console.stdout).unwrap();
    let otpauth = console["otpauth_uri"].as_str().unwrap();
    let totp_seed = otpauth
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    run("admin list", &["admin", "list"], None, false);
    let echo = "echo \"$K\"; echo \"$K\" >&2";
    let mut as_machine = common::keygate();
    as_machine
        .args(["run", "--secret", "K=deploy.key", "--", "sh", "-c", echo])
        .env("KEYGATE_ADDR", setup.base())
        .env("KEYGATE_CLIENT_ID", &machine_id)
        .env("KEYGATE_CLIENT_SECRET", &machine_secret);
    let out = as_machine.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "****");
    outputs.push(("run as machine".into(), [out.stdout, out.stderr].concat()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = serde_json::Map::new();
    header.insert("kid".into(), "ci1".into());
    let id_token = keygate_auth::jws::sign_compact(
        &issuer_key,
        header,
        &serde_json::json!({"iss": "https://ci.example", "aud": "keygate", "sub": "job",
            "iat": now, "exp": now + 300, "jti": canary("jti"), "repository": "acme/app"}),
    );
    for attempt in ["run as CI job", "run as CI job (replayed)"] {
        let mut as_job = common::keygate();
        as_job
            .args(["run", "--secret", "K=deploy.key", "--", "sh", "-c", echo])
            .env("KEYGATE_ADDR", setup.base())
            .env("KEYGATE_ID_TOKEN", &id_token);
        let out = as_job.output().unwrap();
        let replay = attempt.ends_with("(replayed)");
        assert_eq!(out.status.success(), !replay, "{attempt}: {}", stderr(&out));
        outputs.push((attempt.into(), [out.stdout, out.stderr].concat()));
    }
    outputs.push(("bad token stderr".into(), bad_token_stderr));
    server.stop();

    let out = setup.offline(&[
        "audit",
        "verify",
        "--config",
        setup.config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    outputs.push(("offline verify".into(), [out.stdout, out.stderr].concat()));
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
    outputs.push(("rekey".into(), [out.stdout, out.stderr].concat()));

    let mut files = Vec::new();
    files_under(&setup.data_dir(), &mut files);
    files.push(log.clone());
    files.push(fp_file);
    assert!(files.iter().any(|f| f.ends_with("keygate.db")));
    let mut haystacks: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| (f.display().to_string(), std::fs::read(f).unwrap()))
        .collect();
    haystacks.extend(outputs);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("\"level\":\"DEBUG\""),
        "verbose logging was on"
    );

    let mut needles = values.clone();
    needles.push(token_canary);
    needles.push(setup.token.clone());
    needles.push(first_secret);
    needles.push(machine_secret);
    needles.push(id_token);
    needles.push(user_password);
    needles.push(console_password);
    needles.push(totp_seed);
    let mut found = Vec::new();
    for (label, bytes) in &haystacks {
        for n in &needles {
            if contains(bytes, n) {
                found.push(format!("{n} in {label}"));
            }
        }
    }
    println!(
        "leak check: {} canaries against {} files and command outputs",
        needles.len(),
        haystacks.len()
    );
    assert!(found.is_empty(), "canaries in clear: {found:#?}");
}
