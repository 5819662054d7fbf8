//! `keygate audit verify | tail | export`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use keygate_server::admin::api::{AuditEntries, AuditEntry, AuditQuery, AuditVerification};
use keygate_server::config::Config;

use super::{Format, ts};
use crate::client::{AdminClient, print_json};

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
    let result: AuditVerification = match config {
        Some(path) => {
            let config = Config::load(&path)?;
            let (store, vault) = keygate_server::open(&config).await?;
            let key = vault.keyring().map(|k| &k.checkpoint);
            let v = keygate_server::audit_ops::verify(store.as_ref(), &config.checkpoint_file, key)
                .await;
            let mut result = keygate_server::audit_ops::verification(&v);
            if v.report.is_ok() {
                if let Err(e) = store.integrity_check().await {
                    result.ok = false;
                    result.error = Some(e.to_string());
                }
            }
            store.close().await;
            result
        }
        None => {
            AdminClient::from_env()?
                .get("/admin/v1/audit/verify")
                .await?
        }
    };
    let ok = result.ok;
    match format {
        Format::Json => print_json(&result)?,
        Format::Text => {
            for w in &result.warnings {
                eprintln!("warning: {w}");
            }
            if ok {
                println!(
                    "audit log intact: {} entries, head {} ({}…), {} checkpoints matched",
                    result.entries.unwrap_or_default(),
                    result.head_seq.unwrap_or_default(),
                    result
                        .head_hash
                        .as_deref()
                        .unwrap_or_default()
                        .get(..16)
                        .unwrap_or_default(),
                    result.checkpoints_checked.unwrap_or_default(),
                );
            } else {
                eprintln!(
                    "keygate: audit log BROKEN: {}",
                    result.error.as_deref().unwrap_or("unknown error")
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
pub fn entry_line(e: &AuditEntry) -> String {
    let field = |v: Option<&str>| -> String {
        v.unwrap_or("-")
            .chars()
            .flat_map(char::escape_default)
            .collect::<String>()
            .replace("\\'", "'")
            .replace("\\\"", "\"")
    };
    let details = e.details.to_string();
    format!(
        "{:>6}  {}  {:<8} {:<22} {:<20} {}  {}",
        e.seq,
        ts(e.ts_ms),
        field(Some(&e.outcome)),
        field(Some(&e.action)),
        field(Some(&e.actor)),
        field(e.target.as_deref()),
        if details == "{}" {
            String::new()
        } else {
            details
        },
    )
}

async fn tail(lines: i64, follow: bool, format: Format) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_env()?;
    let r: AuditEntries = client
        .get_query(
            "/admin/v1/audit",
            &AuditQuery {
                tail: Some(lines.clamp(1, 1000)),
                limit: Some(1000),
                after: None,
            },
        )
        .await?;
    let mut last = 0;
    let print = |entries: &[AuditEntry], last: &mut i64| -> anyhow::Result<()> {
        for e in entries {
            *last = e.seq;
            match format {
                Format::Json => print_json(e)?,
                Format::Text => println!("{}", entry_line(e)),
            }
        }
        Ok(())
    };
    print(&r.entries, &mut last)?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r: AuditEntries = client.get_query("/admin/v1/audit", &after(last)).await?;
        print(&r.entries, &mut last)?;
    }
}

fn after(seq: i64) -> AuditQuery {
    AuditQuery {
        after: Some(seq),
        limit: Some(1000),
        tail: None,
    }
}

async fn export(mut after_seq: i64) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_env()?;
    loop {
        let r: AuditEntries = client
            .get_query("/admin/v1/audit", &after(after_seq))
            .await?;
        if r.entries.is_empty() {
            break;
        }
        for e in &r.entries {
            print_json(e)?;
            after_seq = e.seq;
        }
    }
    Ok(ExitCode::SUCCESS)
}
