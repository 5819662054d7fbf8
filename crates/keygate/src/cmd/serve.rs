//! `keygate serve --config FILE`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use keygate_server::config::Config;

#[derive(Args)]
#[command(
    after_help = "Example:\n  keygate serve --config /etc/keygate/keygate.toml --listen 127.0.0.1:8080"
)]
pub struct ServeArgs {
    /// Configuration file (KEYGATE_… environment variables override its fields)
    #[arg(long, env = "KEYGATE_CONFIG")]
    config: PathBuf,
    /// Listen address, overriding the configuration's `listen`
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Start even if the master key file is readable by group or others (e.g. mode 0644);
    /// without it such a key file is refused
    #[arg(long)]
    allow_insecure_key_permissions: bool,
}

pub async fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&a.config)?;
    if let Some(listen) = a.listen {
        config.listen = listen;
    }
    config.allow_insecure_key_permissions = a.allow_insecure_key_permissions;
    keygate_server::logging::init(config.log_format, &config.log_level);
    let server = keygate_server::start(config).await?;
    wait_for_stop().await.context("waiting for a stop signal")?;
    tracing::info!("stopping");
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
pub async fn wait_for_stop() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
