//! `keygate demo`: a throw-away server on embedded defaults, walked through step by step.
//!
//! Everything it shows is real: the server is the one `keygate serve` runs, on a SQLite
//! file in a temporary directory, and every step is an HTTP call to its admin API.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use keygate_server::config::{Config, LogFormat};
use rand::RngCore;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::mask;
use crate::client::{AdminClient, ApiRefusal};

#[derive(Args)]
#[command(
    after_help = "Example:\n  keygate demo          # runs the walk-through and stops\n  keygate demo --keep   # leaves the server running for exploration"
)]
pub struct DemoArgs {
    /// Leave the server running after the walk-through (Ctrl-C stops it)
    #[arg(long)]
    keep: bool,
}

fn step(n: u32, title: &str) {
    println!("\n[{n}] {title}");
}

fn refusal(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ApiRefusal>() {
        Some(r) => format!("HTTP {} {}: {}", r.status, r.code, r.message),
        None => e.to_string(),
    }
}

pub async fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    // Quiet logs: the demo's own output is the point.
    keygate_server::logging::init(LogFormat::Text, "error");
    let dir = tempfile::Builder::new().prefix("keygate-demo-").tempdir()?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    println!(
        "keygate demo: a gatekeeper on embedded defaults (SQLite, file master key) in {}",
        dir.path().display()
    );

    step(
        1,
        "keygate init: configuration, master key (mode 0600), data directory, first admin token",
    );
    let init = keygate_server::init_dir(dir.path(), listen).await?;
    println!("    config      {}", init.config_path.display());
    println!("    master key  {}", init.master_key_path.display());
    println!(
        "    admin token {} (shown once by `keygate init`; stored only as a SHA-256 hash)",
        mask(init.admin_token.expose_secret())
    );

    step(
        2,
        "keygate serve: validate the config, open the store, unseal the vault, listen",
    );
    let config = Config::load(&init.config_path)?;
    let server = keygate_server::start(config).await?;
    let base = format!("http://{}", server.addr());
    let http = reqwest::Client::new();
    let ready = http.get(format!("{base}/readyz")).send().await?;
    println!(
        "    listening on {base}; GET /readyz -> {} {}",
        ready.status().as_u16(),
        ready.text().await?
    );

    let admin = AdminClient::new(&base, init.admin_token.clone())?;
    let key_v1 = demo_key();
    let key_v2 = demo_key();

    step(
        3,
        "secret put openai: the vault encrypts it under a fresh data key, wrapped by the master key",
    );
    let r = admin
        .call(
            Method::PUT,
            "/admin/v1/secrets/openai",
            Some(json!({"value": key_v1.expose_secret()})),
        )
        .await?;
    println!(
        "    stored {} as version {}",
        mask(key_v1.expose_secret()),
        r["version"]
    );

    step(
        4,
        "rotate: a new version; check-and-set refuses a write based on a stale version",
    );
    let r = admin
        .call(
            Method::PUT,
            "/admin/v1/secrets/openai",
            Some(json!({"value": key_v2.expose_secret(), "cas": 1})),
        )
        .await?;
    println!(
        "    stored {} as version {}",
        mask(key_v2.expose_secret()),
        r["version"]
    );
    let stale = admin
        .call(
            Method::PUT,
            "/admin/v1/secrets/openai",
            Some(json!({"value": "sk-stale-write-attempt-000", "cas": 1})),
        )
        .await;
    println!(
        "    put with --cas 1 again -> {}",
        stale.err().map(|e| refusal(&e)).unwrap_or_default()
    );

    step(
        5,
        "secret get openai: an operator read, itself written to the audit log",
    );
    let r = admin.get("/admin/v1/secrets/openai").await?;
    println!(
        "    version {} = {}",
        r["version"],
        mask(r["value"].as_str().unwrap_or_default())
    );

    step(
        6,
        "rollback to version 1 (a new version holding the old value), then destroy version 1",
    );
    let r = admin
        .call(
            Method::POST,
            "/admin/v1/secrets/openai/rollback",
            Some(json!({"to": 1})),
        )
        .await?;
    println!(
        "    version {} now holds the value of version 1",
        r["version"]
    );
    admin
        .call(
            Method::POST,
            "/admin/v1/secrets/openai/destroy",
            Some(json!({"version": 1})),
        )
        .await?;
    let gone = admin.get("/admin/v1/secrets/openai?version=1").await;
    println!(
        "    get --version 1 -> {}",
        gone.err().map(|e| refusal(&e)).unwrap_or_default()
    );
    let h = admin.get("/admin/v1/secrets/openai/versions").await?;
    for v in h["versions"].as_array().into_iter().flatten() {
        println!(
            "    version {}: {}",
            v["version"],
            if v["destroyed"].as_bool().unwrap_or(false) {
                "destroyed"
            } else {
                "kept"
            }
        );
    }

    step(
        7,
        "a wrong admin token is refused, and the refusal is audited",
    );
    let intruder = AdminClient::new(&base, SecretString::from("kga_not-the-token".to_owned()))?;
    let denied = intruder.get("/admin/v1/secrets").await;
    println!(
        "    GET /admin/v1/secrets -> {}",
        denied.err().map(|e| refusal(&e)).unwrap_or_default()
    );

    step(
        8,
        "keygate audit tail: who did what; secrets never appear, not even hashed",
    );
    let r = admin.get("/admin/v1/audit?tail=12").await?;
    for e in r["entries"].as_array().into_iter().flatten() {
        println!("    {}", super::audit::entry_line(e));
    }

    step(9, "keygate audit verify: the hash chain is intact");
    let v = admin.get("/admin/v1/audit/verify").await?;
    println!(
        "    ok={} entries={} head={}…",
        v["ok"],
        v["entries"],
        v["head_hash"]
            .as_str()
            .unwrap_or_default()
            .get(..16)
            .unwrap_or_default()
    );

    step(10, "at rest: the database files hold only ciphertext");
    let data = dir.path().join("keygate-data");
    let mut leaked = false;
    for file in ["keygate.db", "keygate.db-wal"] {
        let bytes = std::fs::read(data.join(file)).unwrap_or_default();
        let found = [&key_v1, &key_v2].iter().any(|k| {
            let k = k.expose_secret().as_bytes();
            bytes.windows(k.len()).any(|w| w == k)
        });
        leaked |= found;
        println!(
            "    {file}: {} bytes; plaintext keys in it: {}",
            bytes.len(),
            if found { "YES (a bug!)" } else { "none" }
        );
    }

    if a.keep {
        println!("\nThe server keeps running. In another terminal:");
        println!(
            "    export KEYGATE_ADDR={base} KEYGATE_TOKEN={}",
            init.admin_token.expose_secret()
        );
        println!("    keygate secret list");
        println!("Ctrl-C stops it and deletes {}.", dir.path().display());
        super::serve::wait_for_stop()
            .await
            .context("waiting for Ctrl-C")?;
    } else {
        println!(
            "\nDone. `keygate demo --keep` leaves the server running to explore; `keygate init` sets up a real one."
        );
    }
    server.shutdown().await;
    Ok(if leaked {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A random key shaped like an LLM provider's, so masking shows what it would show.
fn demo_key() -> SecretString {
    let mut raw = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    SecretString::from(format!("sk-demo-{}", hex::encode(raw)))
}
