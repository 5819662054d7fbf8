//! `keygate route list | show | apply`: proxy routes through the admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use keygate_server::admin::api::{ApplyRoutes, RouteList, RouteShown, RoutesApplied};
use reqwest::Method;

use super::Format;
use crate::client::{AdminClient, print_json};

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
            let r: RouteList = api.get("/admin/v1/routes").await?;
            match format {
                Format::Json => print_json(&r)?,
                Format::Text => {
                    println!(
                        "{:<16} {:<8} {:<36} {:<16} ALLOW",
                        "ROUTE", "SOURCE", "UPSTREAM", "SECRET"
                    );
                    for route in &r.routes {
                        println!(
                            "{:<16} {:<8} {:<36} {:<16} {}",
                            route.name,
                            route.source,
                            route.upstream,
                            route.secret,
                            route.allow.join(", ")
                        );
                    }
                }
            }
        }
        RouteCommand::Show { name } => {
            let r: RouteShown = api.get(&format!("/admin/v1/routes/{name}")).await?;
            // Pretty, keys sorted (through a `Value`), as the server's JSON was shown.
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::to_value(&r)?)?
            );
        }
        RouteCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let r: RoutesApplied = api
                .call(Method::PUT, "/admin/v1/routes", &ApplyRoutes { toml: text })
                .await?;
            println!("applied {} route(s); {} live", r.applied.len(), r.live);
        }
    }
    Ok(ExitCode::SUCCESS)
}
