//! `keygate secret …`: the vault through the admin API.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use keygate_server::admin::api::{
    ConfigureSecret, Destroy, FingerprintExport, PutSecret, Rollback, RolledBack, Rotated,
    RotationList, Schedule, ScheduleCleared, SecretConfigured, SecretDeleted, SecretHistory,
    SecretList, SecretValue, SecretWritten, SetSchedule, VersionDestroyed, VersionQuery,
};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{Format, ts};
use crate::client::{AdminClient, print_json};

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Write a new version; the value is read from standard input
    #[command(
        after_help = "Example:\n  printf %s \"$OPENAI_KEY\" | keygate secret put openai --stdin\n\nOne trailing newline is removed, so `echo KEY | …` stores KEY."
    )]
    Put {
        name: String,
        /// Read the value from standard input (required: a value on the command line
        /// would be visible to every process on the machine)
        #[arg(long)]
        stdin: bool,
        /// Check-and-set: only write if the current version is N (0: only if new)
        #[arg(long)]
        cas: Option<i64>,
    },
    /// Print a version's value (the current one by default)
    #[command(after_help = "Example:\n  keygate secret get openai --version 2")]
    Get {
        name: String,
        #[arg(long)]
        version: Option<i64>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List secrets with their metadata (never values)
    #[command(after_help = "Example:\n  keygate secret list --format json")]
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show a secret's versions
    #[command(after_help = "Example:\n  keygate secret history openai")]
    History {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Write a new version holding the value of an older one
    #[command(after_help = "Example:\n  keygate secret rollback openai --to 2")]
    Rollback {
        name: String,
        #[arg(long)]
        to: i64,
    },
    /// Soft-delete a secret (its versions are kept; `undelete` restores it)
    #[command(after_help = "Example:\n  keygate secret delete openai")]
    Delete { name: String },
    /// Restore a soft-deleted secret
    #[command(after_help = "Example:\n  keygate secret undelete openai")]
    Undelete { name: String },
    /// Erase a version's data key: its value is gone for good
    #[command(after_help = "Example:\n  keygate secret destroy openai --version 1")]
    Destroy {
        name: String,
        #[arg(long)]
        version: i64,
    },
    /// Set how many versions of a secret keep their value
    #[command(after_help = "Example:\n  keygate secret configure openai --max-versions 3")]
    Configure {
        name: String,
        #[arg(long)]
        max_versions: i64,
    },
    /// Set (or with --clear remove) a secret's rotation schedule
    #[command(
        after_help = "Example:\n  keygate secret schedule openai --every 30d --overlap 1h --hook openai-admin\n  keygate secret schedule openai --clear\n\nThe hook is a [rotation.hooks.NAME] entry of keygate.toml. Inside the overlap the\nprevious version stays readable; after it, its value is destroyed."
    )]
    Schedule {
        name: String,
        /// Rotate this often (e.g. 30d, 12h)
        #[arg(long, required_unless_present = "clear")]
        every: Option<String>,
        /// Keep the previous version readable this long after a rotation (default 0s)
        #[arg(long, conflicts_with = "clear")]
        overlap: Option<String>,
        /// The hook that makes the new value
        #[arg(long, required_unless_present = "clear")]
        hook: Option<String>,
        /// Remove the schedule
        #[arg(long, conflicts_with_all = ["every", "hook"])]
        clear: bool,
    },
    /// Rotate a scheduled secret now, with its schedule's hook
    #[command(after_help = "Example:\n  keygate secret rotate openai")]
    Rotate { name: String },
    /// List rotation schedules: next due time and last error
    #[command(after_help = "Example:\n  keygate secret schedules")]
    Schedules {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Export keyed fingerprints of current values for `keygate scan --fingerprints`
    #[command(
        after_help = "Example:\n  keygate secret fingerprints --out managed.json\n  keygate scan . --fingerprints managed.json"
    )]
    Fingerprints {
        /// Write to this file (mode 0600) instead of standard output
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(c: SecretCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_env()?;
    match c {
        SecretCommand::Put { name, stdin, cas } => {
            if !stdin {
                bail!("pass the value on standard input with --stdin (never as an argument)");
            }
            let mut raw = Zeroizing::new(Vec::new());
            std::io::stdin()
                .read_to_end(&mut raw)
                .context("reading the value from standard input")?;
            if raw.ends_with(b"\n") {
                raw.pop();
                if raw.ends_with(b"\r") {
                    raw.pop();
                }
            }
            let value = String::from_utf8(std::mem::take(&mut *raw))
                .map_err(|_| anyhow::anyhow!("the value on standard input is not UTF-8 text"))?;
            let body = PutSecret {
                value: SecretString::from(value),
                cas,
            };
            let r: SecretWritten = client
                .call(Method::PUT, &format!("/admin/v1/secrets/{name}"), &body)
                .await?;
            println!("{name}: wrote version {}", r.version);
        }
        SecretCommand::Get {
            name,
            version,
            format,
        } => {
            let r: SecretValue = client
                .get_query(
                    &format!("/admin/v1/secrets/{name}"),
                    &VersionQuery { version },
                )
                .await?;
            match format {
                Format::Json => print_json(&r)?,
                Format::Text => println!("{}", r.value.expose_secret()),
            }
        }
        SecretCommand::List { format } => {
            let r: SecretList = client.get("/admin/v1/secrets").await?;
            match format {
                Format::Json => print_json(&r)?,
                Format::Text => print_list(&r),
            }
        }
        SecretCommand::History { name, format } => {
            let r: SecretHistory = client
                .get(&format!("/admin/v1/secrets/{name}/versions"))
                .await?;
            match format {
                Format::Json => print_json(&r)?,
                Format::Text => print_history(&r),
            }
        }
        SecretCommand::Rollback { name, to } => {
            let r: RolledBack = client
                .call(
                    Method::POST,
                    &format!("/admin/v1/secrets/{name}/rollback"),
                    &Rollback { to },
                )
                .await?;
            println!(
                "{name}: version {} now holds the value of version {to}",
                r.version
            );
        }
        SecretCommand::Delete { name } => {
            let _: SecretDeleted = client
                .call_empty(Method::DELETE, &format!("/admin/v1/secrets/{name}"))
                .await?;
            println!(
                "{name}: deleted (versions kept; `keygate secret undelete {name}` restores it)"
            );
        }
        SecretCommand::Undelete { name } => {
            let _: SecretDeleted = client
                .call_empty(Method::POST, &format!("/admin/v1/secrets/{name}/undelete"))
                .await?;
            println!("{name}: restored");
        }
        SecretCommand::Destroy { name, version } => {
            let _: VersionDestroyed = client
                .call(
                    Method::POST,
                    &format!("/admin/v1/secrets/{name}/destroy"),
                    &Destroy { version },
                )
                .await?;
            println!("{name}: version {version} destroyed");
        }
        SecretCommand::Configure { name, max_versions } => {
            let _: SecretConfigured = client
                .call(
                    Method::PATCH,
                    &format!("/admin/v1/secrets/{name}"),
                    &ConfigureSecret {
                        max_versions: Some(max_versions),
                    },
                )
                .await?;
            println!("{name}: keeps the values of its last {max_versions} versions");
        }
        SecretCommand::Schedule {
            name,
            every,
            overlap,
            hook,
            clear,
        } => {
            let path = format!("/admin/v1/secrets/{name}/schedule");
            if clear {
                let _: ScheduleCleared = client.call_empty(Method::DELETE, &path).await?;
                println!("{name}: rotation schedule removed");
            } else {
                let body = SetSchedule {
                    rotate_every: every.unwrap_or_default(),
                    overlap,
                    hook: hook.unwrap_or_default(),
                };
                let r: Schedule = client.call(Method::PUT, &path, &body).await?;
                println!(
                    "{name}: rotates every {} with hook {} (overlap {}); next due {}",
                    r.rotate_every,
                    r.hook,
                    r.overlap,
                    ts(r.next_due_ms)
                );
            }
        }
        SecretCommand::Rotate { name } => {
            let r: Rotated = client
                .call_empty(Method::POST, &format!("/admin/v1/secrets/{name}/rotate"))
                .await?;
            println!("{name}: rotated to version {}", r.version);
        }
        SecretCommand::Schedules { format } => {
            let r: RotationList = client.get("/admin/v1/rotation").await?;
            match format {
                Format::Json => print_json(&r)?,
                Format::Text => print_schedules(&r),
            }
        }
        SecretCommand::Fingerprints { out } => {
            let r: FingerprintExport = client.get("/admin/v1/secret-fingerprints").await?;
            // The file holds the fingerprint key: it stays in a `Zeroizing` buffer.
            let text = Zeroizing::new(format!("{}\n", serde_json::to_value(&r)?));
            match out {
                None => print!("{}", text.as_str()),
                Some(path) => {
                    write_private(&path, text.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!(
                        "wrote fingerprints of {} secrets to {}",
                        r.secrets.len(),
                        path.display()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

fn print_list(r: &SecretList) {
    if r.secrets.is_empty() {
        println!("no secrets yet: `keygate secret put NAME --stdin` adds one");
        return;
    }
    println!("{:<32} {:>7}  {:<20}  STATUS", "NAME", "VERSION", "UPDATED");
    for s in &r.secrets {
        println!(
            "{:<32} {:>7}  {:<20}  {}",
            s.name,
            s.current_version,
            ts(s.updated_ms),
            if s.deleted { "deleted" } else { "active" }
        );
    }
}

fn print_history(r: &SecretHistory) {
    let current = r.secret.current_version;
    println!("{:>7}  {:<20}  STATE", "VERSION", "CREATED");
    for v in &r.versions {
        let state = if v.destroyed {
            "destroyed"
        } else if v.version == current {
            "current"
        } else {
            "kept"
        };
        println!("{:>7}  {:<20}  {state}", v.version, ts(v.created_ms));
    }
}

fn print_schedules(r: &RotationList) {
    if r.schedules.is_empty() {
        println!(
            "no rotation schedules: `keygate secret schedule NAME --every 30d --hook HOOK` adds one"
        );
        return;
    }
    println!(
        "{:<32} {:<10} {:<16} {:<20}  LAST ERROR",
        "NAME", "EVERY", "HOOK", "NEXT DUE"
    );
    for s in &r.schedules {
        println!(
            "{:<32} {:<10} {:<16} {:<20}  {}",
            s.secret,
            s.rotate_every,
            s.hook,
            ts(s.next_due_ms),
            s.last_error.as_deref().unwrap_or("-"),
        );
    }
}
