//! `keygate` with its master key in an HSM, from the outside: the binary, SoftHSM2 tokens
//! made by `tests/hsm/softhsm.sh` (which `.ci/run` runs first), real restarts. Without the
//! script the tests say they did not run; with `KEYGATE_TEST_PKCS11_REQUIRED=1` they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Setup, keygate, stderr, stdout};
use keygate_testkit::SoftHsm;

const PIN_VAR: &str = "KEYGATE_HSM_PIN";

fn hsm(test: &str) -> Option<SoftHsm> {
    SoftHsm::from_env(test)
}

fn master_key_table(hsm: &SoftHsm, token: &str) -> String {
    format!(
        "[master_key]\npkcs11 = {{ module = \"{}\", token_label = \"{token}\", key_label = \"keygate-master\", pin_env = \"{PIN_VAR}\" }}\n",
        hsm.module.display()
    )
}

/// The set-up's configuration with its `[master_key]` table replaced.
fn config_with(setup: &Setup, name: &str, master_key: &str) -> PathBuf {
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let start = text.find("[master_key]").unwrap();
    let end = start + text[start..].find("\n[").unwrap() + 1;
    let new = format!("{}{master_key}{}", &text[..start], &text[end..]);
    let path = setup.dir.path().join(name);
    std::fs::write(&path, new).unwrap();
    path
}

fn rekey(hsm: &SoftHsm, from: &Path, to: &Path) -> Output {
    keygate()
        .args(["vault", "rekey", "--config"])
        .arg(from)
        .arg("--to-config")
        .arg(to)
        .env(PIN_VAR, &hsm.pin)
        .output()
        .unwrap()
}

/// `setup` served with `config` (the PIN in the environment).
fn serve(setup: &Setup, config: &Path, hsm: &SoftHsm) -> common::Server {
    let log = setup.dir.path().join("server.log");
    setup.serve_with(config, &log, &[(PIN_VAR, hsm.pin.as_str())])
}

/// `GET /readyz`: the status code and the body.
fn readyz(port: u16) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    (status, response)
}

fn get(setup: &Setup, name: &str) -> Output {
    setup.cli(&["secret", "get", name], None)
}

#[test]
fn a_store_moves_into_the_hsm_survives_restarts_and_moves_back_out() {
    let Some(hsm) = hsm("a_store_moves_into_the_hsm_survives_restarts_and_moves_back_out") else {
        return;
    };
    let setup = Setup::new();
    let log = setup.dir.path().join("server.log");
    let server = setup.serve(&log, &[]);
    for (name, value) in [("openai", "sk-file-1"), ("maps", "AIza-file-2")] {
        let out = setup.cli(&["secret", "put", name, "--stdin"], Some(value));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    server.stop();

    // file -> HSM: the key is generated inside the token.
    let hsm_config = config_with(
        &setup,
        "keygate-hsm.toml",
        &master_key_table(&hsm, "kg-cli"),
    );
    let out = rekey(&hsm, &setup.config, &hsm_config);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("generated PKCS#11 key"), "{said}");
    assert!(said.contains("re-wrapped 2 data keys"), "{said}");
    assert!(!said.contains(&hsm.pin) && !stderr(&out).contains(&hsm.pin));

    // The old key file no longer opens the store: served with it, keygate is sealed.
    let server = setup.serve(&log, &[]);
    let sealed = get(&setup, "openai");
    assert!(stderr(&sealed).contains("HTTP 503"), "{}", stderr(&sealed));
    server.stop();

    // Served from the HSM: values read back, a new one goes in; then a restart.
    let server = serve(&setup, &hsm_config, &hsm);
    assert_eq!(stdout(&get(&setup, "openai")), "sk-file-1\n");
    let out = setup.cli(&["secret", "put", "stripe", "--stdin"], Some("sk-hsm-3"));
    assert!(out.status.success(), "{}", stderr(&out));
    server.stop();
    let server = serve(&setup, &hsm_config, &hsm);
    for (name, value) in [
        ("openai", "sk-file-1"),
        ("maps", "AIza-file-2"),
        ("stripe", "sk-hsm-3"),
    ] {
        let out = get(&setup, name);
        assert_eq!(stdout(&out), format!("{value}\n"), "{}", stderr(&out));
    }
    server.stop();

    // Without the PIN the server starts sealed and says why.
    let mut cmd = keygate();
    let bare_log = setup.dir.path().join("no-pin.log");
    let port = common::free_port();
    let mut child = cmd
        .args(["serve", "--config"])
        .arg(&hsm_config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::fs::File::create(&bare_log).unwrap())
        .stderr(std::fs::File::create(setup.dir.path().join("no-pin.err")).unwrap())
        .spawn()
        .unwrap();
    common::wait_healthy(port);
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&bare_log).unwrap()
        + &std::fs::read_to_string(setup.dir.path().join("no-pin.err")).unwrap();
    assert!(
        logged.contains("environment variable KEYGATE_HSM_PIN is not set"),
        "{logged}"
    );

    // HSM -> a new key file.
    let back = setup.dir.path().join("master-back.key");
    let file_config = config_with(
        &setup,
        "keygate-back.toml",
        &format!("[master_key]\nfile = \"{}\"\n", back.display()),
    );
    let out = rekey(&hsm, &hsm_config, &file_config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("re-wrapped 3 data keys"),
        "{}",
        stdout(&out)
    );
    let server = serve(&setup, &file_config, &hsm);
    assert_eq!(stdout(&get(&setup, "stripe")), "sk-hsm-3\n");
    server.stop();
    let verify = keygate()
        .args(["audit", "verify", "--config"])
        .arg(&file_config)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", stderr(&verify));

    // --to-config must describe the same store.
    let elsewhere = {
        let text = std::fs::read_to_string(&file_config).unwrap();
        let path = setup.dir.path().join("elsewhere.toml");
        std::fs::write(&path, text.replace("keygate.db", "other.db")).unwrap();
        path
    };
    let out = rekey(&hsm, &file_config, &elsewhere);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("names other storage"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_removed_token_takes_the_server_out_of_service_sealed() {
    let Some(hsm) = hsm("a_removed_token_takes_the_server_out_of_service_sealed") else {
        return;
    };
    let setup = Setup::new();
    let hsm_config = config_with(
        &setup,
        "keygate-hsm.toml",
        &master_key_table(&hsm, "kg-cli-remove"),
    );
    let out = rekey(&hsm, &setup.config, &hsm_config);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = serve(&setup, &hsm_config, &hsm);
    let out = setup.cli(&["secret", "put", "openai", "--stdin"], Some("sk-live"));
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, _) = readyz(setup.port);
    assert_eq!(status, 200);

    let token_dir = hsm.token_dir("kg-cli-remove");
    let away = setup.dir.path().join("token-away");
    std::fs::rename(&token_dir, &away).unwrap();

    let out = get(&setup, "openai");
    assert!(stderr(&out).contains("HTTP 503"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("sk-live"));
    let out = setup.cli(&["secret", "put", "openai", "--stdin"], Some("sk-next"));
    assert!(stderr(&out).contains("HTTP 503"), "{}", stderr(&out));
    let (status, body) = readyz(setup.port);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"sealed\""), "{body}");
    server.stop();
    std::fs::rename(&away, &token_dir).unwrap();

    // Back in place, a restart serves the value written before the removal.
    let server = serve(&setup, &hsm_config, &hsm);
    assert_eq!(stdout(&get(&setup, "openai")), "sk-live\n");
    server.stop();
}
