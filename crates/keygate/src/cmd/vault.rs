//! `keygate vault rekey`: master-key rotation, straight on the store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use keygate_server::config::Config;
use keygate_store::{SqlStore, Store};
use keygate_vault::{FileKeyProvider, MasterKey, MasterKeyProvider, Vault, write_key_file};

#[derive(Subcommand)]
pub enum VaultCommand {
    /// Re-wrap every data key under a new master key, in one transaction
    #[command(
        after_help = "Example:\n  keygate vault rekey --config /etc/keygate/keygate.toml --new-key-file /etc/keygate/master-2.key\n\nIf the new key file does not exist, a random key is generated into it (mode 0600).\nA server still running with the old key refuses to write until it restarts with the new one."
    )]
    Rekey {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

pub async fn run(c: VaultCommand) -> anyhow::Result<ExitCode> {
    match c {
        VaultCommand::Rekey {
            config,
            new_key_file,
        } => rekey(config, new_key_file).await,
    }
}

async fn rekey(config_path: PathBuf, new_key_file: PathBuf) -> anyhow::Result<ExitCode> {
    let config = Config::load(&config_path)?;
    let Some(source) = &config.master_key else {
        bail!("the configuration names no master key ([master_key] file or env)");
    };
    let old = source.provider().load()?;
    let generated = !new_key_file.exists();
    let new = if generated {
        let key = MasterKey::generate();
        write_key_file(&new_key_file, &key)
            .with_context(|| format!("writing {}", new_key_file.display()))?;
        key
    } else {
        FileKeyProvider::new(new_key_file.clone()).load()?
    };
    if new.check_value() == old.check_value() {
        bail!("the new key is the key already in use");
    }
    let store = SqlStore::connect(&config.storage_url)
        .await
        .context("opening storage")?;
    let result = Vault::rekey(&store, &old, &new, "cli:vault-rekey").await;
    store.close().await;
    let count = result?;
    if generated {
        println!("generated a new master key in {}", new_key_file.display());
    }
    println!("re-wrapped {count} data keys and the system key under the new master key");
    println!(
        "next: point [master_key] in {} at {} and restart keygate; keep the old key only for backups taken before now",
        config_path.display(),
        new_key_file.display()
    );
    Ok(ExitCode::SUCCESS)
}
