//! Signal forwarding: SIGTERM sent to this test process while a supervisor
//! runs reaches the child. In its own test binary (and a single test) because
//! the supervisor's handlers replace the default action for the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Capture, sh};
use keygate_runner::{Exit, Supervisor};
use nix::sys::signal::{Signal, kill};
use nix::unistd::getpid;
use std::time::Duration;

#[tokio::test]
async fn term_to_parent_is_forwarded_to_child() {
    // A child that handles TERM and exits with its own code.
    let (out, err) = (Capture::default(), Capture::default());
    let cmd = sh(
        r#"trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"#,
        &out,
        &err,
    );
    let mut sup = Supervisor::start(cmd).await.unwrap();
    out.wait_for("ready\n").await;
    kill(getpid(), Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(3), sup.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, Exit::Code(7));
    assert!(out.text().contains("got-term"), "{:?}", out.text());

    // A child that dies of the forwarded signal: 128 + 15.
    let (out, err) = (Capture::default(), Capture::default());
    let cmd = sh("echo ready; exec sleep 10", &out, &err);
    let mut sup = Supervisor::start(cmd).await.unwrap();
    out.wait_for("ready\n").await;
    kill(getpid(), Signal::SIGUSR1).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(3), sup.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, Exit::Signal(10));
    assert_eq!(exit.code(), 138);
    let (out, err) = (Capture::default(), Capture::default());
    let mut sup = Supervisor::start(sh("echo ready; exec sleep 10", &out, &err))
        .await
        .unwrap();
    out.wait_for("ready\n").await;
    kill(getpid(), Signal::SIGTERM).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(3), sup.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code(), 143);
}
