//! `keygate alert | throttle`: what the monitor saw and did, and undoing it.

use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::{Format, ts};
use crate::client::AdminClient;

#[derive(Subcommand)]
pub enum AlertCommand {
    /// List alerts, newest first: open ones unless --all, then webhook deliveries that
    /// failed for good (dead letters)
    #[command(
        after_help = "Example:\n  keygate alert list\n  keygate alert list --all --format json"
    )]
    List {
        /// Acknowledged alerts too
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Acknowledge an alert: it leaves the open list and the monitor starts its incident
    /// afresh (the next detection begins the rule's ladder again)
    #[command(after_help = "Example:\n  keygate alert ack al_4f2a9c0d1e2b3a45")]
    Ack { id: String },
    /// What the monitor watches: current rates and baselines per user and route
    #[command(after_help = "Example:\n  keygate alert monitor --format json")]
    Monitor {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Subcommand)]
pub enum ThrottleCommand {
    /// Throttles in force (set by the monitor)
    #[command(after_help = "Example:\n  keygate throttle list")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Lift a throttle early: SUBJECT as listed (user:ID, session:ID, client:ID, ip:PREFIX)
    #[command(after_help = "Example:\n  keygate throttle lift user:u_7Hq2")]
    Lift { subject: String },
}

fn print(format: Format, value: &Value, text: impl FnOnce(&Value)) {
    match format {
        Format::Json => println!("{value}"),
        Format::Text => text(value),
    }
}

fn evidence_line(evidence: &Value) -> String {
    evidence
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub async fn alert(cmd: AlertCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match cmd {
        AlertCommand::List { all, limit, format } => {
            let r = api
                .get(&format!("/admin/v1/alerts?all={all}&limit={limit}"))
                .await?;
            print(format, &r, |r| {
                let alerts = r["alerts"].as_array().cloned().unwrap_or_default();
                if alerts.is_empty() {
                    println!("no {}alerts", if all { "" } else { "open " });
                }
                for a in &alerts {
                    let state = match a["acked_by"].as_str() {
                        Some(by) => format!("acked by {by}"),
                        None => "open".to_owned(),
                    };
                    println!(
                        "{}  {}  {:<9} {:<18} {:<16} {}  [{}]",
                        a["id"].as_str().unwrap_or_default(),
                        ts(a["created_ms"].as_i64().unwrap_or_default()),
                        a["action"].as_str().unwrap_or_default(),
                        a["rule"].as_str().unwrap_or_default(),
                        a["subject"].as_str().unwrap_or_default(),
                        evidence_line(&a["evidence"]),
                        state,
                    );
                }
                let dead = r["dead_letters"].as_array().cloned().unwrap_or_default();
                if !dead.is_empty() {
                    println!("\nwebhook deliveries that failed for good:");
                    for d in &dead {
                        println!(
                            "  {}  {}  {}  after {} attempt(s): {}",
                            ts(d["created_ms"].as_i64().unwrap_or_default()),
                            d["event"].as_str().unwrap_or_default(),
                            d["target"].as_str().unwrap_or_default(),
                            d["attempts"],
                            d["last_error"].as_str().unwrap_or_default(),
                        );
                    }
                }
            });
        }
        AlertCommand::Ack { id } => {
            let r = api
                .call(Method::POST, &format!("/admin/v1/alerts/{id}/ack"), None)
                .await?;
            if r["changed"].as_bool().unwrap_or(false) {
                println!("alert {id} acknowledged");
            } else {
                println!("alert {id} was already acknowledged; nothing changed");
            }
        }
        AlertCommand::Monitor { format } => {
            let r = api.get("/admin/v1/monitor").await?;
            print(format, &r, |r| {
                println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn throttle(cmd: ThrottleCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match cmd {
        ThrottleCommand::List { format } => {
            let r = api.get("/admin/v1/throttles").await?;
            print(format, &r, |r| {
                let list = r["throttles"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no throttles in force");
                }
                for t in &list {
                    println!(
                        "{:<40} {:>5}/min until {}  ({})",
                        t["subject"].as_str().unwrap_or_default(),
                        t["per_minute"],
                        ts(t["until_ms"].as_i64().unwrap_or_default()),
                        t["reason"].as_str().unwrap_or_default(),
                    );
                }
            });
        }
        ThrottleCommand::Lift { subject } => {
            let r = api
                .call(
                    Method::DELETE,
                    &format!("/admin/v1/throttles/{subject}"),
                    None,
                )
                .await?;
            if r["lifted"].as_bool().unwrap_or(false) {
                println!("throttle on {subject} lifted");
            } else {
                println!("no throttle on {subject}; nothing changed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
