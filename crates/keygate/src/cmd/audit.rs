//! `keygate audit verify | tail | export`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use keygate_server::config::Config;
use serde_json::Value;

use super::{Format, ts};
use crate::client::AdminClient;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; exit 1 naming the first bad entry
    #[command(
        after_help = "Examples:\n  keygate audit verify --config /etc/keygate/keygate.toml   # straight on the store, server up or down\n  keygate audit verify                                      # through the admin API"
    )]
    Verify {
        /// Read the store the configuration names instead of asking a server
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show the latest entries (through the admin API)
    #[command(after_help = "Example:\n  keygate audit tail -n 50 --follow")]
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        /// Keep printing new entries as they are written
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Write every entry as JSON lines to standard output (through the admin API)
    #[command(after_help = "Example:\n  keygate audit export > audit.jsonl")]
    Export {
        /// Start after this sequence number
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

pub async fn run(c: AuditCommand) -> anyhow::Result<ExitCode> {
    match c {
        AuditCommand::Verify { config, format } => verify(config, format).await,
        AuditCommand::Tail {
            lines,
            follow,
            format,
        } => tail(lines, follow, format).await,
        AuditCommand::Export { after } => export(after).await,
    }
}

async fn verify(config: Option<PathBuf>, format: Format) -> anyhow::Result<ExitCode> {
    let result = match config {
        Some(path) => {
            let config = Config::load(&path)?;
            let (store, vault) = keygate_server::open(&config).await?;
            let key = vault.keyring().map(|k| &k.checkpoint);
            let v = keygate_server::audit_ops::verify(store.as_ref(), &config.checkpoint_file, key)
                .await;
            let mut json = keygate_server::audit_ops::verification_json(&v);
            if v.report.is_ok() {
                if let (Err(e), Some(obj)) = (store.integrity_check().await, json.as_object_mut()) {
                    obj.insert("ok".into(), Value::Bool(false));
                    obj.insert("error".into(), Value::String(e.to_string()));
                }
            }
            store.close().await;
            json
        }
        None => {
            AdminClient::from_env()?
                .get("/admin/v1/audit/verify")
                .await?
        }
    };
    let ok = result["ok"].as_bool().unwrap_or(false);
    match format {
        Format::Json => println!("{result}"),
        Format::Text => {
            for w in result["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
            if ok {
                println!(
                    "audit log intact: {} entries, head {} ({}…), {} checkpoints matched",
                    result["entries"],
                    result["head_seq"],
                    result["head_hash"]
                        .as_str()
                        .unwrap_or_default()
                        .get(..16)
                        .unwrap_or_default(),
                    result["checkpoints_checked"],
                );
            } else {
                eprintln!(
                    "keygate: audit log BROKEN: {}",
                    result["error"].as_str().unwrap_or("unknown error")
                );
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One entry as a line of text. Control characters in fields are escaped so a field can
/// never start a line of its own (S24).
pub fn entry_line(e: &Value) -> String {
    let field = |k: &str| -> String {
        e[k].as_str()
            .unwrap_or("-")
            .chars()
            .flat_map(char::escape_default)
            .collect::<String>()
            .replace("\\'", "'")
            .replace("\\\"", "\"")
    };
    let details = e["details"].to_string();
    format!(
        "{:>6}  {}  {:<8} {:<22} {:<20} {}  {}",
        e["seq"],
        ts(e["ts_ms"].as_i64().unwrap_or_default()),
        field("outcome"),
        field("action"),
        field("actor"),
        field("target"),
        if details == "{}" {
            String::new()
        } else {
            details
        },
    )
}

async fn tail(lines: i64, follow: bool, format: Format) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_env()?;
    let r = client
        .get(&format!(
            "/admin/v1/audit?tail={}&limit=1000",
            lines.clamp(1, 1000)
        ))
        .await?;
    let mut last = 0;
    let print = |entries: &Vec<Value>, last: &mut i64| {
        for e in entries {
            *last = e["seq"].as_i64().unwrap_or(*last);
            match format {
                Format::Json => println!("{e}"),
                Format::Text => println!("{}", entry_line(e)),
            }
        }
    };
    print(r["entries"].as_array().unwrap_or(&Vec::new()), &mut last);
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = client
            .get(&format!("/admin/v1/audit?after={last}&limit=1000"))
            .await?;
        print(r["entries"].as_array().unwrap_or(&Vec::new()), &mut last);
    }
}

async fn export(mut after: i64) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_env()?;
    loop {
        let r = client
            .get(&format!("/admin/v1/audit?after={after}&limit=1000"))
            .await?;
        let entries = r["entries"].as_array().cloned().unwrap_or_default();
        if entries.is_empty() {
            break;
        }
        for e in &entries {
            println!("{e}");
            after = e["seq"].as_i64().unwrap_or(after);
        }
    }
    Ok(ExitCode::SUCCESS)
}
