//! Real child processes (`/bin/sh -c`) run through the library: environment,
//! masking of stdout and stderr, exit statuses, spawn errors, restarts and
//! FIFO mounts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::{Capture, sh};
use keygate_runner::{Command, Exit, SpawnError, Supervisor, fifo_once, run};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

fn z(s: &str) -> Zeroizing<String> {
    Zeroizing::new(s.to_owned())
}

#[tokio::test]
async fn child_sees_env_and_value_is_masked() {
    let (out, err) = (Capture::default(), Capture::default());
    let cmd = sh(r#"printf 'len=%s\n' "${#SECRET}"; printf 'v=%s\n' "$SECRET"; printf 'e=%s\n' "$SECRET" >&2"#, &out, &err)
        .env("SECRET", z("supersecretvalue"));
    assert_eq!(run(cmd).await.unwrap(), Exit::Code(0));
    assert_eq!(out.text(), "len=16\nv=****\n");
    assert_eq!(err.text(), "e=****\n");
}

#[tokio::test]
async fn inherit_env_can_be_disabled() {
    let (out, err) = (Capture::default(), Capture::default());
    // `env` prints the whole environment: only the variable set here.
    let cmd = Command::new("env")
        .stdout(out.sink())
        .stderr(err.sink())
        .inherit_env(false)
        .env("ONLY", z("abcdefg"));
    assert_eq!(run(cmd).await.unwrap(), Exit::Code(0));
    assert_eq!(out.text(), "ONLY=****\n");
}

#[tokio::test]
async fn encodings_are_masked() {
    let value = "p@ss w/rd+?";
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value);
    let hex = hex::encode(value);
    let url = "p%40ss%20w%2Frd%2B%3F";
    let (out, err) = (Capture::default(), Capture::default());
    let cmd = sh(r#"printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4""#, &out, &err)
        .args(["sh", &b64, &b64url, &hex, url])
        .env("SECRET", z(value));
    assert_eq!(run(cmd).await.unwrap(), Exit::Code(0));
    assert_eq!(out.text(), "****|****|****|****\n");
}

#[tokio::test]
async fn value_written_in_two_parts_is_masked() {
    let (out, err) = (Capture::default(), Capture::default());
    let cmd = sh(
        "printf 'x abcd'; sleep 0.3; printf 'efgh y\\n'; printf 'abcd' >&2; sleep 0.1; printf 'efgh' >&2",
        &out,
        &err,
    )
    .env("SECRET", z("abcdefgh"));
    assert_eq!(run(cmd).await.unwrap(), Exit::Code(0));
    assert_eq!(out.text(), "x **** y\n");
    assert_eq!(err.text(), "****");
}

#[tokio::test]
async fn ordinary_output_is_not_delayed() {
    let (out, err) = (Capture::default(), Capture::default());
    let cmd = sh("echo hello; exec sleep 5", &out, &err).env("SECRET", z("abcdefgh"));
    let mut sup = Supervisor::start(cmd).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), out.wait_for("hello\n"))
        .await
        .unwrap();
    let exit = sup.shutdown().await.unwrap();
    assert_eq!(exit, Exit::Signal(15));
}

#[tokio::test]
async fn exit_code_passes_through() {
    let (out, err) = (Capture::default(), Capture::default());
    let exit = run(sh("exit 3", &out, &err)).await.unwrap();
    assert_eq!(exit, Exit::Code(3));
    assert_eq!(exit.code(), 3);
}

#[tokio::test]
async fn killed_by_signal_is_128_plus_signal() {
    let (out, err) = (Capture::default(), Capture::default());
    let exit = run(sh("echo before; kill -KILL $$", &out, &err))
        .await
        .unwrap();
    assert_eq!(exit, Exit::Signal(9));
    assert_eq!(exit.code(), 137);
    assert_eq!(out.text(), "before\n");
}

#[tokio::test]
async fn missing_program_is_not_found() {
    let err = run(Command::new("/nonexistent/keygate-runner-test"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SpawnError::NotFound { ref program } if program == "/nonexistent/keygate-runner-test"),
        "{err:?}"
    );
    let err = run(Command::new("keygate-runner-no-such-program-in-path"))
        .await
        .unwrap_err();
    assert!(matches!(err, SpawnError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn non_executable_file_is_not_executable() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = run(Command::new(file.path())).await.unwrap_err();
    assert!(matches!(err, SpawnError::NotExecutable { .. }), "{err:?}");
}

#[tokio::test]
async fn restart_uses_new_value_and_stops_old_child() {
    let (out, err) = (Capture::default(), Capture::default());
    let cmd =
        sh(r#"printf 'v=%s\n' "$TOKEN"; exec sleep 30"#, &out, &err).env("TOKEN", z("old-value-1"));
    let mut sup = Supervisor::start(cmd).await.unwrap();
    out.wait_for("v=").await;
    let old_pid = sup.pid().unwrap();
    sup.restart(vec![("TOKEN".to_owned(), z("new-value-2"))])
        .await
        .unwrap();
    // The old child was reaped: its pid no longer names a process of ours.
    let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(old_pid as i32), None);
    assert_eq!(gone, Err(nix::errno::Errno::ESRCH));
    assert_ne!(sup.pid(), Some(old_pid));
    tokio::time::timeout(Duration::from_secs(2), async {
        while out.text().matches("v=").count() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let exit = sup.shutdown().await.unwrap();
    assert_eq!(exit, Exit::Signal(15));
    let text = out.text();
    assert_eq!(text, "v=****\nv=****\n");
    assert!(!text.contains("new-value-2") && !text.contains("old-value-1"));
}

#[tokio::test]
async fn restart_kills_child_that_ignores_term_after_grace() {
    let (out, err) = (Capture::default(), Capture::default());
    let cmd = sh(
        "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        &out,
        &err,
    )
    .grace_period(Duration::from_millis(200))
    .drain_timeout(Duration::from_millis(300));
    let mut sup = Supervisor::start(cmd).await.unwrap();
    out.wait_for("ready\n").await;
    let started = Instant::now();
    let exit = sup.shutdown().await.unwrap();
    assert_eq!(exit, Exit::Signal(9));
    assert!(started.elapsed() < Duration::from_secs(2));
    // wait() after the end returns the same status.
    assert_eq!(sup.wait().await.unwrap(), Exit::Signal(9));
}

#[tokio::test]
async fn background_holder_of_the_pipe_does_not_block_return() {
    let (out, err) = (Capture::default(), Capture::default());
    let cmd = sh("(sleep 3; echo late) & echo early", &out, &err)
        .drain_timeout(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(run(cmd).await.unwrap(), Exit::Code(0));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(out.text(), "early\n");
}

#[tokio::test]
async fn child_reads_mounted_fifo_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cred.json");
    let mut fifo = fifo_once(&path, Zeroizing::new(b"{\"k\":\"fifo-secret\"}".to_vec()))
        .await
        .unwrap();
    let (out, err) = (Capture::default(), Capture::default());
    let script = r#"n=$(wc -c < "$1"); printf 'n=%s\n' "$n"; if cat "$1" 2>/dev/null; then echo again; else echo gone; fi"#;
    let cmd = sh(script, &out, &err)
        .args(["sh".into(), path.clone().into_os_string()])
        .mask_value(Zeroizing::new(b"fifo-secret".to_vec()));
    assert_eq!(run(cmd).await.unwrap(), Exit::Code(0));
    assert_eq!(
        out.text().split_whitespace().collect::<Vec<_>>(),
        ["n=19", "gone"]
    );
    fifo.wait().await.unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn failed_restart_keeps_old_status_and_sinks() {
    let dir = tempfile::tempdir().unwrap();
    // A symlink to the shell: removing it makes the next spawn fail.
    let prog = dir.path().join("tool");
    std::os::unix::fs::symlink("/bin/sh", &prog).unwrap();
    let (out, err) = (Capture::default(), Capture::default());
    let cmd = Command::new(&prog)
        .args(["-c", r#"printf 'run %s\n' "$TOKEN"; exec sleep 30"#])
        .env("TOKEN", z("first-token"))
        .stdout(out.sink())
        .stderr(err.sink());
    let mut sup = Supervisor::start(cmd).await.unwrap();
    out.wait_for("run").await;
    std::fs::remove_file(&prog).unwrap();
    let e = sup
        .restart(vec![("TOKEN".to_owned(), z("second-token"))])
        .await
        .unwrap_err();
    assert!(matches!(e, SpawnError::NotFound { .. }), "{e:?}");
    assert_eq!(sup.pid(), None);
    assert_eq!(sup.wait().await.unwrap(), Exit::Signal(15));
    std::os::unix::fs::symlink("/bin/sh", &prog).unwrap();
    sup.restart(vec![("TOKEN".to_owned(), z("third-token"))])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), async {
        while out.text().matches("run").count() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(sup.shutdown().await.unwrap(), Exit::Signal(15));
    assert_eq!(out.text(), "run ****\nrun ****\n");
}
