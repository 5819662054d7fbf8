//! `keygate policy …` and `keygate machine …`: what CI jobs and servers may read, and the
//! static machine credentials for servers without OIDC.

use std::process::ExitCode;

use clap::Subcommand;
use keygate_server::admin::api::{
    AddMachine, Deleted, Machine, MachineList, Policy, PolicyList, PolicyWritten, PutPolicy,
    RotateMachine,
};
use reqwest::Method;
use secrecy::ExposeSecret;

use super::{Format, ts};
use crate::client::{AdminClient, print_json};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Create or replace a policy: the secrets a machine identity may read
    #[command(
        after_help = "Examples:\n  keygate policy put deploy --secret 'deploy.*' --secret maps --ttl 10m\n  keygate policy put release --secret signing-key --any-version\n\nA glob ends in `*` and covers every longer name with that start (`deploy.*`: deploy.stripe, not deploy).\nA pattern that matches no secret yet is kept, with a warning."
    )]
    Put {
        name: String,
        /// A secret name or a glob ending in `*` (repeat for more)
        #[arg(long = "secret", value_name = "NAME|PREFIX*")]
        secrets: Vec<String>,
        /// Lifetime of the machine tokens this policy is given (1m to 1h)
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Allow reading versions other than the current one
        #[arg(long)]
        any_version: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List policies
    #[command(after_help = "Example:\n  keygate policy list")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show one policy
    #[command(after_help = "Example:\n  keygate policy show deploy --format json")]
    Show {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Delete a policy; machine tokens that carry it stop working at once
    #[command(after_help = "Example:\n  keygate policy delete deploy")]
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum MachineCommand {
    /// Add a machine credential; prints its client id and secret once
    #[command(
        after_help = "Example:\n  keygate machine add billing-worker --policy billing\n\nThe server exchanges them for a short-lived machine token:\n  KEYGATE_CLIENT_ID=m_… KEYGATE_CLIENT_SECRET=kgs_… keygate run --secret KEY=billing.stripe -- ./worker"
    )]
    Add {
        name: String,
        #[arg(long)]
        policy: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List machine credentials (never their secrets)
    #[command(after_help = "Example:\n  keygate machine list")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Give a machine a new secret; the old one keeps working for --overlap
    #[command(after_help = "Example:\n  keygate machine rotate billing-worker --overlap 1h")]
    Rotate {
        name: String,
        /// How long the previous secret is still accepted (0s: not at all; at most 7d)
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Delete a machine credential; its machine tokens stop working at once
    #[command(after_help = "Example:\n  keygate machine delete billing-worker")]
    Delete { name: String },
}

fn policy_line(p: &Policy) {
    println!(
        "{:<24} ttl {:>5}s  {}{}",
        p.name,
        p.token_ttl_secs,
        if p.secrets.is_empty() {
            "(grants nothing)".to_owned()
        } else {
            p.secrets.join(", ")
        },
        if p.any_version { "  [any version]" } else { "" }
    );
}

fn machine_line(m: &Machine) {
    let rotated = m
        .rotated_ms
        .map(|r| format!("  rotated {}", ts(r.as_i64())))
        .unwrap_or_default();
    let overlap = m
        .previous_valid_until_ms
        .map(|u| format!("  previous secret valid until {}", ts(u.as_i64())))
        .unwrap_or_default();
    println!(
        "{:<24} {}  policy {}  created {}{rotated}{overlap}",
        m.name,
        m.client_id,
        m.policy,
        ts(m.created_ms.as_i64())
    );
}

fn print_credentials(m: &Machine, format: Format, verb: &str) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(m);
    }
    let secret = m
        .client_secret
        .as_ref()
        .map(|s| s.expose_secret().to_owned())
        .unwrap_or_default();
    println!("machine {} {verb} (policy {})", m.name, m.policy);
    println!("client id:     {}", m.client_id);
    println!("client secret: {secret}");
    println!("The secret is shown once; keygate keeps only its hash.");
    if let Some(until) = m.previous_valid_until_ms {
        println!(
            "The previous secret is accepted until {}.",
            ts(until.as_i64())
        );
    }
    Ok(())
}

pub async fn policy(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match cmd {
        PolicyCommand::Put {
            name,
            secrets,
            ttl,
            any_version,
            format,
        } => {
            let body = PutPolicy {
                secrets,
                token_ttl_secs: Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
                any_version,
            };
            let r: PolicyWritten = api
                .call(Method::PUT, &format!("/admin/v1/policies/{name}"), &body)
                .await?;
            if format == Format::Json {
                print_json(&r)?;
            } else {
                println!(
                    "policy {} {}",
                    r.policy.name,
                    if r.created { "created" } else { "replaced" }
                );
                policy_line(&r.policy);
            }
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
        }
        PolicyCommand::List { format } => {
            let r: PolicyList = api.get("/admin/v1/policies").await?;
            if format == Format::Json {
                print_json(&r)?;
            } else if r.policies.is_empty() {
                println!("no policies");
            } else {
                r.policies.iter().for_each(policy_line);
            }
        }
        PolicyCommand::Show { name, format } => {
            let r: Policy = api.get(&format!("/admin/v1/policies/{name}")).await?;
            if format == Format::Json {
                print_json(&r)?;
            } else {
                policy_line(&r);
            }
        }
        PolicyCommand::Delete { name } => {
            let r: Deleted = api
                .call_empty(Method::DELETE, &format!("/admin/v1/policies/{name}"))
                .await?;
            println!(
                "policy {} deleted; its machine tokens no longer work",
                r.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn machine(cmd: MachineCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match cmd {
        MachineCommand::Add {
            name,
            policy,
            format,
        } => {
            let r: Machine = api
                .call(
                    Method::POST,
                    "/admin/v1/machines",
                    &AddMachine { name, policy },
                )
                .await?;
            print_credentials(&r, format, "added")?;
        }
        MachineCommand::List { format } => {
            let r: MachineList = api.get("/admin/v1/machines").await?;
            if format == Format::Json {
                print_json(&r)?;
            } else if r.machines.is_empty() {
                println!("no machines");
            } else {
                r.machines.iter().for_each(machine_line);
            }
        }
        MachineCommand::Rotate {
            name,
            overlap,
            format,
        } => {
            let body = RotateMachine {
                overlap_secs: Some(i64::try_from(overlap.as_secs()).unwrap_or(i64::MAX)),
            };
            let r: Machine = api
                .call(
                    Method::POST,
                    &format!("/admin/v1/machines/{name}/rotate"),
                    &body,
                )
                .await?;
            print_credentials(&r, format, "rotated")?;
        }
        MachineCommand::Delete { name } => {
            let r: Deleted = api
                .call_empty(Method::DELETE, &format!("/admin/v1/machines/{name}"))
                .await?;
            println!(
                "machine {} deleted; its machine tokens no longer work",
                r.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
