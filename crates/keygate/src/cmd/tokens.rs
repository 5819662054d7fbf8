//! `keygate user | client | session | keys`: the token service through the admin API.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use keygate_server::admin::api::{
    AddClient, AddUser, Client, ClientList, ClientRemoved, KeyList, KeysRotated, MfaEnrolled,
    SessionList, SessionQuery, SessionRevoked, SetClientDpop, UserDisabled, UserEnabled, UserList,
};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Serialize;

use super::{Format, ts};
use crate::client::{AdminClient, print_json};

fn list_arg(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn print<T: Serialize>(format: Format, value: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(value)?,
        Format::Text => text(value),
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user who signs in on keygate's login page; the password is read from stdin
    #[command(
        after_help = "Example:\n  printf %s \"$PASSWORD\" | keygate user add alice --password-stdin --scopes ai,maps"
    )]
    Add {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        /// Comma-separated scopes the user may be granted
        #[arg(long)]
        scopes: Option<String>,
    },
    /// List users
    #[command(after_help = "Example:\n  keygate user list --format json")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Disable a user: every session of theirs is revoked at once
    #[command(after_help = "Example:\n  keygate user disable alice")]
    Disable { name: String },
    /// Let a disabled user (by an operator or by the monitor) sign in again
    #[command(after_help = "Example:\n  keygate user enable alice")]
    Enable { name: String },
    /// Enrol TOTP; prints the otpauth:// URI once (scan it into an authenticator app)
    #[command(after_help = "Example:\n  keygate user mfa alice")]
    Mfa { name: String },
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register an app (public, e.g. mobile) or a server (confidential: prints a secret once)
    #[command(
        after_help = "Examples:\n  keygate client add ios-app --public --redirect-uri com.example.app:/oauth --scopes ai\n  keygate client add ios-app --public --redirect-uri com.example.app:/oauth --scopes ai --display-name \"Acme Chat\" --privacy-url https://acme.example/privacy\n  keygate client add backend --confidential --scopes reports\n  keygate client add billing --confidential --tls-san-dns billing.internal.example.com --scopes reports\n  keygate client add batch --confidential --self-signed-cert batch.crt --scopes reports\n\nWith --tls-subject-dn, --tls-san-dns or --tls-san-uri the client authenticates with a\ncertificate from a CA in [tls.mtls] client_ca (tls_client_auth); with --self-signed-cert,\nwith that certificate (self_signed_tls_client_auth). Either way on the [tls.mtls]\nlistener, with no secret, and its access tokens are bound to the certificate (RFC 8705)."
    )]
    Add {
        name: String,
        #[arg(
            long,
            conflicts_with = "confidential",
            required_unless_present = "confidential"
        )]
        public: bool,
        #[arg(long)]
        confidential: bool,
        /// Exact redirect URI (repeatable); loopback http URIs match any port (RFC 8252)
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        #[arg(long)]
        scopes: Option<String>,
        /// tls_client_auth: the subject DN its certificate must have (CN=svc,O=Acme)
        #[arg(long, group = "tls_auth", requires = "confidential")]
        tls_subject_dn: Option<String>,
        /// tls_client_auth: a DNS name its certificate must list
        #[arg(long, group = "tls_auth", requires = "confidential")]
        tls_san_dns: Option<String>,
        /// tls_client_auth: a URI its certificate must list
        #[arg(long, group = "tls_auth", requires = "confidential")]
        tls_san_uri: Option<String>,
        /// self_signed_tls_client_auth: a PEM file with its certificate(s)
        #[arg(long, group = "tls_auth", requires = "confidential")]
        self_signed_cert: Option<std::path::PathBuf>,
        /// The client's own DPoP policy; default: [tokens] dpop
        #[arg(long, value_enum)]
        dpop: Option<DpopPolicy>,
        /// The app's name on the login page (default: NAME)
        #[arg(long)]
        display_name: Option<String>,
        /// The app's privacy notice (https://…), linked from the login page
        #[arg(long)]
        privacy_url: Option<String>,
        /// The login page's line on how long a sign-in lasts (default: from [tokens])
        #[arg(long)]
        session_note: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Change a client's DPoP policy (end a migration with `required`)
    #[command(
        after_help = "Examples:\n  keygate client dpop ios-app-1a2b3c4d optional   # an AppAuth-only app, day one\n  keygate client dpop ios-app-1a2b3c4d required   # the app now sends DPoP proofs\n  keygate client dpop ios-app-1a2b3c4d default    # follow [tokens] dpop again\n\nWith `optional` the client may sign in and refresh without a DPoP proof and gets\nBearer access tokens that live at most 2 minutes; with a proof its tokens are\nbound as always. `required` also refuses its unbound tokens already issued."
    )]
    Dpop {
        client_id: String,
        #[arg(value_enum)]
        policy: DpopSetting,
    },
    /// List clients
    #[command(after_help = "Example:\n  keygate client list")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Remove a client; its sessions are revoked
    #[command(after_help = "Example:\n  keygate client remove ios-app-1a2b3c4d")]
    Remove { client_id: String },
}

/// `client add --dpop`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DpopPolicy {
    /// Bearer tokens (at most 2 minutes) without a proof: a client moving to DPoP
    Optional,
    /// DPoP always, even where [tokens] dpop is optional
    Required,
}

/// `client dpop`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DpopSetting {
    /// Bearer tokens (at most 2 minutes) without a proof: a client moving to DPoP
    Optional,
    /// DPoP always, even where [tokens] dpop is optional
    Required,
    /// Follow [tokens] dpop
    Default,
}

#[derive(Subcommand)]
pub enum SessionCommand {
    /// List live sessions (refresh token families)
    #[command(after_help = "Example:\n  keygate session list --user alice")]
    List {
        #[arg(long)]
        user: Option<String>,
        /// Include revoked sessions
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Revoke a session: its refresh and access tokens stop working on the next call
    #[command(after_help = "Example:\n  keygate session revoke 3q2-7w…")]
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Rotate the token signing key (publishes a next key; promotes it once published long enough)
    #[command(after_help = "Example:\n  keygate keys rotate")]
    Rotate,
    /// List signing keys and their states
    #[command(after_help = "Example:\n  keygate keys list")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

pub async fn user(c: UserCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match c {
        UserCommand::Add {
            name,
            password_stdin,
            scopes,
        } => {
            let password = super::password_from_stdin(password_stdin)?;
            let body = AddUser {
                name: name.clone(),
                password,
                scopes: list_arg(&scopes),
            };
            let r: keygate_server::admin::api::User =
                api.call(Method::POST, "/admin/v1/users", &body).await?;
            println!("user {} added (id {})", name, r.id);
        }
        UserCommand::List { format } => {
            let r: UserList = api.get("/admin/v1/users").await?;
            print(format, &r, |r| {
                println!(
                    "{:<24} {:<28} {:<9} {:<4} SCOPES",
                    "NAME", "ID", "STATUS", "MFA"
                );
                for u in &r.users {
                    println!(
                        "{:<24} {:<28} {:<9} {:<4} {}",
                        u.name,
                        u.id,
                        if u.disabled { "disabled" } else { "active" },
                        if u.mfa { "yes" } else { "no" },
                        u.scopes.join(",")
                    );
                }
            })?;
        }
        UserCommand::Disable { name } => {
            let r: UserDisabled = api
                .call_empty(Method::POST, &format!("/admin/v1/users/{name}/disable"))
                .await?;
            println!(
                "user {name} disabled; {} session(s) revoked",
                r.revoked_sessions
            );
        }
        UserCommand::Enable { name } => {
            let r: UserEnabled = api
                .call_empty(Method::POST, &format!("/admin/v1/users/{name}/enable"))
                .await?;
            if r.changed {
                println!("user {name} enabled; they sign in again to get a new session");
            } else {
                println!("user {name} was not disabled; nothing changed");
            }
        }
        UserCommand::Mfa { name } => {
            let r: MfaEnrolled = api
                .call_empty(Method::POST, &format!("/admin/v1/users/{name}/mfa"))
                .await?;
            println!("TOTP enrolled for {name}. Add it to an authenticator app now (shown once):");
            println!("{}", r.otpauth_uri.expose_secret());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn client(c: ClientCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match c {
        ClientCommand::Add {
            name,
            public,
            confidential: _,
            redirect_uris,
            scopes,
            tls_subject_dn,
            tls_san_dns,
            tls_san_uri,
            self_signed_cert,
            dpop,
            display_name,
            privacy_url,
            session_note,
            format,
        } => {
            let kind = if public { "public" } else { "confidential" };
            let certificates = self_signed_cert
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
                })
                .transpose()?;
            let method = if certificates.is_some() {
                Some("self_signed_tls_client_auth")
            } else if tls_subject_dn.is_some() || tls_san_dns.is_some() || tls_san_uri.is_some() {
                Some("tls_client_auth")
            } else {
                None
            };
            let body = AddClient {
                name,
                kind: kind.to_owned(),
                redirect_uris,
                scopes: list_arg(&scopes),
                token_endpoint_auth_method: method.map(str::to_owned),
                tls_client_auth_subject_dn: tls_subject_dn,
                tls_client_auth_san_dns: tls_san_dns,
                tls_client_auth_san_uri: tls_san_uri,
                certificates,
                dpop: dpop.map(|p| {
                    match p {
                        DpopPolicy::Optional => "optional",
                        DpopPolicy::Required => "required",
                    }
                    .to_owned()
                }),
                display_name,
                privacy_url,
                session_note,
            };
            let r: Client = api.call(Method::POST, "/admin/v1/clients", &body).await?;
            print(format, &r, |r| {
                println!("client_id: {}", r.client_id);
                if r.dpop.as_deref() == Some("optional") {
                    println!(
                        "DPoP optional: without a proof it gets Bearer tokens that live at most 2 minutes; end the migration with `keygate client dpop {} required`",
                        r.client_id
                    );
                }
                if r.tls_identity.is_some() {
                    println!(
                        "authenticates with its certificate ({}) on the [tls.mtls] listener",
                        r.token_endpoint_auth_method
                    );
                }
                if let Some(secret) = &r.client_secret {
                    println!(
                        "client_secret (shown once, store it in the server's secret store): {}",
                        secret.expose_secret()
                    );
                }
            })?;
        }
        ClientCommand::Dpop { client_id, policy } => {
            let dpop = match policy {
                DpopSetting::Optional => "optional",
                DpopSetting::Required => "required",
                DpopSetting::Default => "default",
            };
            let r: Client = api
                .call(
                    Method::POST,
                    &format!("/admin/v1/clients/{client_id}/dpop"),
                    &SetClientDpop {
                        dpop: dpop.to_owned(),
                    },
                )
                .await?;
            println!(
                "client {}: DPoP {}",
                r.client_id,
                r.dpop.as_deref().unwrap_or("as [tokens] dpop")
            );
        }
        ClientCommand::List { format } => {
            let r: ClientList = api.get("/admin/v1/clients").await?;
            print(format, &r, |r| {
                println!(
                    "{:<36} {:<13} {:<16} {:<9} REDIRECT URIS",
                    "CLIENT ID", "TYPE", "SCOPES", "DPOP"
                );
                for c in &r.clients {
                    println!(
                        "{:<36} {:<13} {:<16} {:<9} {}",
                        c.client_id,
                        c.kind,
                        c.scopes.join(","),
                        c.dpop.as_deref().unwrap_or("default"),
                        c.redirect_uris.join(",")
                    );
                }
            })?;
        }
        ClientCommand::Remove { client_id } => {
            let r: ClientRemoved = api
                .call_empty(Method::DELETE, &format!("/admin/v1/clients/{client_id}"))
                .await?;
            println!(
                "client {client_id} removed; {} session(s) revoked",
                r.revoked_sessions
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn session(c: SessionCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match c {
        SessionCommand::List { user, all, format } => {
            let r: SessionList = api
                .get_query("/admin/v1/sessions", &SessionQuery { user, all })
                .await?;
            print(format, &r, |r| {
                println!(
                    "{:<24} {:<28} {:<28} {:<20} STATE",
                    "SESSION", "USER", "CLIENT", "LAST USED"
                );
                for f in &r.sessions {
                    println!(
                        "{:<24} {:<28} {:<28} {:<20} {}",
                        f.id,
                        f.user_id,
                        f.client_id,
                        ts(f.last_used_ms),
                        if f.revoked { "revoked" } else { "live" }
                    );
                }
            })?;
        }
        SessionCommand::Revoke { id } => {
            let _: SessionRevoked = api
                .call_empty(Method::DELETE, &format!("/admin/v1/sessions/{id}"))
                .await?;
            println!("session {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn keys(c: KeysCommand) -> anyhow::Result<ExitCode> {
    let api = AdminClient::from_env()?;
    match c {
        KeysCommand::Rotate => {
            let r: KeysRotated = api
                .call_empty(Method::POST, "/admin/v1/keys/rotate")
                .await?;
            println!("{}", r.message);
        }
        KeysCommand::List { format } => {
            let r: KeyList = api.get("/admin/v1/keys").await?;
            print(format, &r, |r| {
                println!("{:<46} {:<6} {:<8} PUBLISHED", "KID", "ALG", "STATE");
                for k in &r.keys {
                    println!(
                        "{:<46} {:<6} {:<8} {}",
                        k.kid,
                        k.alg,
                        k.state,
                        ts(k.published_ms)
                    );
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
