//! `keygate admin`: the operator console's accounts, through the admin API.

use std::process::ExitCode;

use clap::Subcommand;
use keygate_server::admin::api::{
    AddConsoleAdmin, ConsoleAdminCreated, ConsoleAdminDisabled, ConsoleAdminList,
};
use reqwest::Method;
use secrecy::ExposeSecret;

use super::{Format, ts};
use crate::client::{AdminClient, print_json};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Add a console account (signs in at /console/ with its password and a TOTP code);
    /// the password is read from stdin, the TOTP enrolment URI is printed once
    #[command(
        after_help = "Example:\n  printf %s \"$PASSWORD\" | keygate admin add ops-alice --password-stdin\n  printf %s \"$PASSWORD\" | keygate admin add auditor --password-stdin --read-only"
    )]
    Add {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        /// Sees every console page, changes nothing
        #[arg(long)]
        read_only: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Disable a console account: its sessions end at once and it can no longer sign in
    #[command(after_help = "Example:\n  keygate admin disable ops-alice")]
    Disable { name: String },
    /// List console accounts
    #[command(after_help = "Example:\n  keygate admin list --format json")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

pub async fn run(c: AdminCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match c {
        AdminCommand::Add {
            name,
            password_stdin,
            read_only,
            format,
        } => {
            let password = super::password_from_stdin(password_stdin)?;
            let body = AddConsoleAdmin {
                name: name.clone(),
                password,
                role: read_only.then(|| "read-only".to_owned()),
            };
            let r: ConsoleAdminCreated = api
                .call(Method::POST, "/admin/v1/console/admins", &body)
                .await?;
            match format {
                Format::Json => print_json(&r)?,
                Format::Text => {
                    println!(
                        "console admin {} added ({}, id {})",
                        r.admin.name, r.admin.role, r.admin.id
                    );
                    println!(
                        "TOTP enrolment (shown once; add it to an authenticator app, then keep it nowhere else):"
                    );
                    println!("  {}", r.otpauth_uri.expose_secret());
                }
            }
        }
        AdminCommand::Disable { name } => {
            let r: ConsoleAdminDisabled = api
                .call_empty(
                    Method::POST,
                    &format!("/admin/v1/console/admins/{name}/disable"),
                )
                .await?;
            println!("console admin {} disabled; its sessions ended", r.name);
        }
        AdminCommand::List { format } => {
            let r: ConsoleAdminList = api.get("/admin/v1/console/admins").await?;
            match format {
                Format::Json => print_json(&r)?,
                Format::Text => {
                    println!(
                        "{:<24} {:<28} {:<10} {:<9} CREATED",
                        "NAME", "ID", "ROLE", "STATUS"
                    );
                    for a in &r.admins {
                        println!(
                            "{:<24} {:<28} {:<10} {:<9} {}",
                            a.name,
                            a.id,
                            a.role,
                            if a.disabled { "disabled" } else { "active" },
                            ts(a.created_ms.as_i64())
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
