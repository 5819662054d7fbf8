//! `keygate route list | show | apply`: proxy routes through the admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::Format;
use crate::client::AdminClient;

#[derive(Subcommand)]
pub enum RouteCommand {
    /// List live routes (from keygate.toml and applied through the API)
    #[command(after_help = "Example:\n  keygate route list")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show one route as configured
    #[command(after_help = "Example:\n  keygate route show openai")]
    Show { name: String },
    /// Validate and apply the [routes.*] tables of a TOML file, without a restart
    /// (replaces every route applied earlier through the API)
    #[command(after_help = "Example:\n  keygate route apply routes.toml")]
    Apply { file: PathBuf },
}

pub async fn run(c: RouteCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match c {
        RouteCommand::List { format } => {
            let r = api.get("/admin/v1/routes").await?;
            match format {
                Format::Json => println!("{r}"),
                Format::Text => {
                    println!(
                        "{:<16} {:<8} {:<36} {:<16} ALLOW",
                        "ROUTE", "SOURCE", "UPSTREAM", "SECRET"
                    );
                    for route in r["routes"].as_array().into_iter().flatten() {
                        let allow: Vec<&str> = route["allow"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        println!(
                            "{:<16} {:<8} {:<36} {:<16} {}",
                            route["name"].as_str().unwrap_or_default(),
                            route["source"].as_str().unwrap_or_default(),
                            route["upstream"].as_str().unwrap_or_default(),
                            route["secret"].as_str().unwrap_or_default(),
                            allow.join(", ")
                        );
                    }
                }
            }
        }
        RouteCommand::Show { name } => {
            let r = api.get(&format!("/admin/v1/routes/{name}")).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        RouteCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let r = api
                .call(Method::PUT, "/admin/v1/routes", Some(json!({"toml": text})))
                .await?;
            println!(
                "applied {} route(s); {} live",
                r["applied"].as_array().map_or(0, Vec::len),
                r["live"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
