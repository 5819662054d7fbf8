//! `keygate init --dir DIR [--storage-url URL]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use secrecy::ExposeSecret;

use super::Format;

#[derive(Args)]
#[command(
    after_help = "Example:\n  keygate init --dir /etc/keygate\n  keygate serve --config /etc/keygate/keygate.toml\n\nOn PostgreSQL:\n  keygate init --dir /etc/keygate --storage-url postgres://keygate@db.internal/keygate"
)]
pub struct InitArgs {
    /// Directory to set up (created if missing); an existing set-up is never overwritten
    #[arg(long)]
    dir: PathBuf,
    /// Address the server will listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Store to initialise and write into the configuration (postgres://… or sqlite://…);
    /// default: SQLite in DIR/keygate-data. A store that is already set up is refused.
    // The value may hold a database password: never shown in --help.
    #[arg(long, env = "KEYGATE_STORAGE__URL", hide_env_values = true)]
    storage_url: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub async fn run(a: InitArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.dir)?;
    let dir = a.dir.canonicalize()?;
    let out =
        keygate_server::init_dir_with_storage(&dir, a.listen, a.storage_url.as_deref()).await?;
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "admin_token": out.admin_token.expose_secret(),
                "config": out.config_path,
                "master_key": out.master_key_path,
                "data_dir": out.data_dir,
            })
        ),
        Format::Text => {
            println!("Created {}", out.config_path.display());
            println!(
                "Created {} (mode 0600; back it up apart from the data)",
                out.master_key_path.display()
            );
            println!("Created {}", out.data_dir.display());
            if a.storage_url.is_some() {
                println!(
                    "Initialised the store named by storage.url (written to the configuration)"
                );
            }
            println!();
            println!("Admin token (shown once, store it in your password manager):");
            println!("  {}", out.admin_token.expose_secret());
            println!();
            println!("Next:");
            println!("  keygate serve --config {}", out.config_path.display());
            println!(
                "  export KEYGATE_ADDR=http://{} KEYGATE_TOKEN=<the token above>",
                a.listen
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
