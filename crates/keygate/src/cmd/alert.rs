//! `keygate alert | throttle`: what the monitor saw and did, and undoing it.

use std::process::ExitCode;

use clap::Subcommand;
use keygate_server::admin::api::{AlertAcked, AlertList, AlertQuery, ThrottleLifted, ThrottleList};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::{Format, ts};
use crate::client::{AdminClient, print_json};

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

fn print<T: Serialize>(format: Format, value: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(value)?,
        Format::Text => text(value),
    }
    Ok(())
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
            let query = AlertQuery {
                all: Some(all),
                limit: Some(i64::from(limit)),
            };
            let r: AlertList = api.get_query("/admin/v1/alerts", &query).await?;
            print(format, &r, |r| {
                if r.alerts.is_empty() {
                    println!("no {}alerts", if all { "" } else { "open " });
                }
                for a in &r.alerts {
                    let state = match &a.acked_by {
                        Some(by) => format!("acked by {by}"),
                        None => "open".to_owned(),
                    };
                    println!(
                        "{}  {}  {:<9} {:<18} {:<16} {}  [{}]",
                        a.id,
                        ts(a.created_ms),
                        a.action,
                        a.rule,
                        a.subject,
                        evidence_line(&a.evidence),
                        state,
                    );
                }
                if !r.dead_letters.is_empty() {
                    println!("\nwebhook deliveries that failed for good:");
                    for d in &r.dead_letters {
                        println!(
                            "  {}  {}  {}  after {} attempt(s): {}",
                            ts(d.created_ms),
                            d.event,
                            d.target,
                            d.attempts,
                            d.last_error,
                        );
                    }
                }
            })?;
        }
        AlertCommand::Ack { id } => {
            let r: AlertAcked = api
                .call_empty(Method::POST, &format!("/admin/v1/alerts/{id}/ack"))
                .await?;
            if r.changed {
                println!("alert {id} acknowledged");
            } else {
                println!("alert {id} was already acknowledged; nothing changed");
            }
        }
        AlertCommand::Monitor { format } => {
            // The snapshot is keygate-monitor's document, shown as it comes.
            let r: Value = api.get("/admin/v1/monitor").await?;
            print(format, &r, |r| {
                println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn throttle(cmd: ThrottleCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match cmd {
        ThrottleCommand::List { format } => {
            let r: ThrottleList = api.get("/admin/v1/throttles").await?;
            print(format, &r, |r| {
                if r.throttles.is_empty() {
                    println!("no throttles in force");
                }
                for t in &r.throttles {
                    println!(
                        "{:<40} {:>5}/min until {}  ({})",
                        t.subject,
                        t.per_minute,
                        ts(t.until_ms),
                        t.reason,
                    );
                }
            })?;
        }
        ThrottleCommand::Lift { subject } => {
            let r: ThrottleLifted = api
                .call_empty(Method::DELETE, &format!("/admin/v1/throttles/{subject}"))
                .await?;
            if r.lifted {
                println!("throttle on {subject} lifted");
            } else {
                println!("no throttle on {subject}; nothing changed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
