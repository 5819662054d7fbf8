//! S33: no acknowledged write is lost across `kill -9`, and the audit chain and SQLite's
//! own integrity check pass after every crash.
//!
//! The real binary serves; four writers put secrets over HTTP and record each version the
//! server acknowledged; the server is SIGKILLed at a random moment; the store is verified
//! offline; repeat. At the end every acknowledged version must read back exactly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Setup, stderr, stdout};
use rand::Rng;
use serde_json::json;

const ROUNDS: usize = 30;
const WRITERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let setup = Setup::new();
    let log = setup.dir.path().join("server.log");
    let acked: Arc<Mutex<Vec<(String, i64, String)>>> = Arc::default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut total_attempts = 0usize;

    for round in 0..ROUNDS {
        let server = setup.serve(&log, &[("KEYGATE_VAULT__MAX_VERSIONS", "1000")]);
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (http, acked, base, token) = (
                http.clone(),
                acked.clone(),
                setup.base(),
                setup.token.clone(),
            );
            writers.push(tokio::spawn(async move {
                let name = format!("crash-r{round}-w{w}");
                let mut attempts = 0usize;
                for i in 0.. {
                    let value = format!("value-{round}-{w}-{i}-{}", rand::random::<u64>());
                    attempts += 1;
                    let resp = http
                        .put(format!("{base}/admin/v1/secrets/{name}"))
                        .bearer_auth(&token)
                        .json(&json!({"value": value}))
                        .send()
                        .await;
                    let Ok(resp) = resp else { break };
                    if !resp.status().is_success() {
                        break;
                    }
                    let Ok(body) = resp.json::<serde_json::Value>().await else {
                        break;
                    };
                    let version = body["version"].as_i64().unwrap();
                    acked.lock().unwrap().push((name.clone(), version, value));
                }
                attempts
            }));
        }
        let wait = rand::thread_rng().gen_range(20..250);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill9();
        for w in writers {
            total_attempts += w.await.unwrap();
        }
        // Offline, straight on the store: chain and SQLite integrity.
        let out = setup.offline(&[
            "audit",
            "verify",
            "--config",
            setup.config.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "round {round}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    let acked = acked.lock().unwrap().clone();
    println!(
        "{ROUNDS} SIGKILL rounds, {} writes attempted, {} acknowledged",
        total_attempts,
        acked.len()
    );
    assert!(acked.len() >= ROUNDS, "the writers made progress");

    let server = setup.serve(&log, &[("KEYGATE_VAULT__MAX_VERSIONS", "1000")]);
    for (name, version, value) in &acked {
        let r: serde_json::Value = http
            .get(format!(
                "{}/admin/v1/secrets/{name}?version={version}",
                setup.base()
            ))
            .bearer_auth(&setup.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            r["value"].as_str(),
            Some(value.as_str()),
            "{name} v{version} lost: {r}"
        );
    }
    server.stop();
    let out = setup.offline(&[
        "audit",
        "verify",
        "--config",
        setup.config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}
