//! `keygate vault rekey`: master-key rotation, straight on the store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use keygate_server::config::{Config, MasterKeySource};
use keygate_store::{SqlStore, Store};
use keygate_vault::{
    FileKeyProvider, Kek, MasterKey, MasterKeyProvider, Pkcs11KeyProvider, SoftKek, Vault,
    write_key_file,
};

#[derive(Subcommand)]
pub enum VaultCommand {
    /// Re-wrap every data key under a new master key, in one transaction
    #[command(after_help = "Examples:
  keygate vault rekey --config /etc/keygate/keygate.toml --new-key-file /etc/keygate/master-2.key
  keygate vault rekey --config /etc/keygate/keygate.toml --to-config /etc/keygate/keygate-hsm.toml

--new-key-file: a new key file; if it does not exist, a random key is generated into it
(mode 0600).
--to-config: another configuration for the same storage, whose [master_key] is the new
key: a file, an environment variable, or a PKCS#11 token. A token key that does not exist
yet is generated inside the token (AES-256, sensitive, not extractable).

Either way the old and the new key may each be a file or an HSM: rekey moves a store into
an HSM and back out. A server still running with the old key refuses to write until it
restarts with the new one.")]
    Rekey {
        #[arg(long)]
        config: PathBuf,
        #[arg(
            long,
            conflicts_with = "to_config",
            required_unless_present = "to_config"
        )]
        new_key_file: Option<PathBuf>,
        #[arg(long)]
        to_config: Option<PathBuf>,
    },
}

pub async fn run(c: VaultCommand) -> anyhow::Result<ExitCode> {
    match c {
        VaultCommand::Rekey {
            config,
            new_key_file,
            to_config,
        } => rekey(config, new_key_file, to_config).await,
    }
}

/// The new key, and a line saying what was made for it (if anything).
fn new_key(
    config: &Config,
    new_key_file: Option<PathBuf>,
    to_config: Option<PathBuf>,
) -> anyhow::Result<(Arc<dyn Kek>, Option<String>, String)> {
    if let Some(path) = new_key_file {
        let (key, made) = file_key(&path)?;
        return Ok((key, made, path.display().to_string()));
    }
    let Some(path) = to_config else {
        bail!("name the new key with --new-key-file or --to-config");
    };
    let target = Config::load(&path)?;
    if target.storage_url != config.storage_url {
        bail!(
            "{} names other storage than {}: --to-config must describe the same store with a new [master_key]",
            path.display(),
            "--config"
        );
    }
    let Some(source) = &target.master_key else {
        bail!("{} names no [master_key]", path.display());
    };
    let shown = path.display().to_string();
    match source {
        MasterKeySource::File(file) => {
            let (key, made) = file_key(file)?;
            Ok((key, made, shown))
        }
        MasterKeySource::Pkcs11(c) => {
            let provider = Pkcs11KeyProvider::new(c.clone());
            let made = provider
                .ensure_key()?
                .then(|| format!("generated {} (not extractable)", provider.describe()));
            Ok((provider.open()?, made, shown))
        }
        MasterKeySource::Env(_) => Ok((source.provider().open()?, None, shown)),
    }
}

fn file_key(path: &Path) -> anyhow::Result<(Arc<dyn Kek>, Option<String>)> {
    let describe = format!("file {}", path.display());
    if path.exists() {
        let key = FileKeyProvider::new(path.to_path_buf()).load()?;
        return Ok((Arc::new(SoftKek::new(&key, describe)), None));
    }
    let key = MasterKey::generate();
    write_key_file(path, &key).with_context(|| format!("writing {}", path.display()))?;
    Ok((
        Arc::new(SoftKek::new(&key, describe)),
        Some(format!("generated a new master key in {}", path.display())),
    ))
}

async fn rekey(
    config_path: PathBuf,
    new_key_file: Option<PathBuf>,
    to_config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(&config_path)?;
    let Some(source) = &config.master_key else {
        bail!("the configuration names no master key ([master_key] file, env or pkcs11)");
    };
    let old = source.provider().open()?;
    let (new, made, target) = new_key(&config, new_key_file, to_config)?;
    let store = SqlStore::connect(&config.storage_url)
        .await
        .context("opening storage")?;
    let result = Vault::rekey(&store, old.as_ref(), new.as_ref(), "cli:vault-rekey").await;
    store.close().await;
    let count = result?;
    if let Some(made) = made {
        println!("{made}");
    }
    println!(
        "re-wrapped {count} data keys and the system key: {} -> {}",
        old.describe(),
        new.describe()
    );
    println!(
        "next: serve with the new key ({target}) and restart keygate; keep the old key only for backups taken before now"
    );
    Ok(ExitCode::SUCCESS)
}
