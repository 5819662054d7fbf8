//! keygate's vault: versioned third-party secrets under envelope encryption.
//!
//! - Each secret version gets its own AES-256-GCM data key; the data key is wrapped by the
//!   master key's [`Kek`], and both ciphertexts are bound to (purpose, name, version) by
//!   associated data (S19).
//! - The master key comes from a [`MasterKeyProvider`]: a file or an environment variable
//!   ([`SoftKek`], an AES key derived by HKDF), or a non-extractable key in a PKCS#11 token
//!   that wraps inside the token ([`Pkcs11KeyProvider`]). It never reaches the store or a
//!   log (S20). A key check value tells a wrong key from the right one; with a wrong,
//!   missing or failing key the vault is [`Vault::sealed`] and refuses every secret
//!   operation (S21).
//! - Every change, and every operator read, commits an audit entry in the same
//!   transaction (S23).
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn keygate_store::Store>) -> Result<(), keygate_vault::VaultError> {
//! use keygate_vault::{FileKeyProvider, SecretName, Vault, VaultLimits};
//! use secrecy::SecretString;
//!
//! let provider = FileKeyProvider::new("master.key");
//! let vault = Vault::open(store, Some(&provider), VaultLimits::default()).await?;
//! let name = SecretName::parse("openai")?;
//! let v = vault.put(&name, SecretString::from("sk-…"), None, "admin:root").await?;
//! let (_version, _value) = vault.get(&name, Some(v), "admin:root").await?;
//! # Ok(()) }
//! ```

pub mod crypto;
mod master;
mod pkcs11;

/// Secret names are parsed by the one rule in `keygate-auth`, which the proxy's route
/// table shares.
pub use keygate_auth::ids::{InvalidSecretName as InvalidName, SecretName};
pub use master::{
    EnvKeyProvider, FileKeyProvider, Kek, KekError, MasterKey, MasterKeyError, MasterKeyProvider,
    SoftKek, check_key_file_permissions, write_key_file,
};
pub use pkcs11::{Pkcs11Config, Pkcs11KeyProvider, TokenSelector};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crypto::{Purpose, aad};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use keygate_audit::{AuditEvent, AuditKey, CheckpointKey, Outcome};
use keygate_store::{
    AdminCredential, NewVersion, Sealed, SecretMeta, Store, StoreError, SystemKeys, VersionMeta,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Why a vault operation failed. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault is sealed: {0}")]
    Sealed(String),
    #[error("secret not found")]
    NotFound,
    #[error("secret is deleted (undelete it to restore its versions)")]
    Deleted,
    #[error("version {0} does not exist")]
    NoSuchVersion(i64),
    #[error("version {0} was destroyed; its value is gone for good")]
    Destroyed(i64),
    #[error("check-and-set failed: current version is {current}")]
    Conflict { current: i64 },
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("secret value is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("secret value is empty")]
    Empty,
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A stored ciphertext failed authentication: tampering, a swapped row, or a key
    /// that was rotated without re-wrapping.
    #[error("stored secret data failed authentication ({0}); refusing to return it")]
    Tampered(String),
    #[error("the master key was rotated while this process ran; restart it with the new key")]
    KeyRotated,
    #[error("storage: {0}")]
    Store(StoreError),
    #[error("{0}")]
    MasterKey(#[from] MasterKeyError),
}

impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => VaultError::NotFound,
            StoreError::Conflict { current } => VaultError::Conflict { current },
            StoreError::KeyMismatch => VaultError::KeyRotated,
            other => VaultError::Store(other),
        }
    }
}

pub type Result<T, E = VaultError> = std::result::Result<T, E>;

/// Limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct VaultLimits {
    /// Largest accepted secret value, in bytes.
    pub max_value_bytes: usize,
    /// How many versions of a secret keep their value, unless the secret says otherwise.
    pub max_versions: i64,
}

impl Default for VaultLimits {
    fn default() -> Self {
        Self {
            max_value_bytes: 64 * 1024,
            max_versions: 10,
        }
    }
}

/// Keys derived from the system key: they survive master-key rotation, so checkpoints and
/// audit references stay comparable across it.
#[derive(Clone)]
pub struct SystemKeyring {
    pub audit: AuditKey,
    pub checkpoint: CheckpointKey,
    /// Seals keygate's own secrets ([`Vault::seal_internal`]).
    internal: Zeroizing<[u8; 32]>,
    /// Keys server-side MACs (CSRF tokens, DPoP nonces); stable across restarts and
    /// replicas.
    pub mac: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SystemKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemKeyring([redacted])")
    }
}

fn derive_keyring(system_key: &[u8; 32]) -> SystemKeyring {
    let hk = Hkdf::<Sha256>::new(Some(b"keygate-system"), system_key);
    let derive = |info: &[u8]| {
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's output limit; this cannot fail.
        let _ = hk.expand(info, out.as_mut());
        out
    };
    SystemKeyring {
        audit: AuditKey::from_bytes(*derive(b"keygate/v1/audit-reference")),
        checkpoint: CheckpointKey::from_bytes(*derive(b"keygate/v1/audit-checkpoint")),
        internal: derive(b"keygate/v1/internal-seal"),
        mac: derive(b"keygate/v1/server-mac"),
    }
}

struct Unsealed {
    kek: Arc<dyn Kek>,
    kcv: Vec<u8>,
    keyring: SystemKeyring,
    /// Why the key-encryption key failed at its last use (an HSM removed or logged
    /// out); the vault reports itself sealed until a use succeeds again.
    fault: std::sync::Mutex<Option<String>>,
}

impl Unsealed {
    fn kek_result<T>(
        &self,
        r: std::result::Result<T, KekError>,
    ) -> std::result::Result<T, KekError> {
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Err(KekError::Unavailable(reason)) => {
                if fault.is_none() {
                    tracing::error!(source = %self.kek.describe(), %reason, "master key unavailable: vault sealed");
                }
                *fault = Some(reason.clone());
            }
            _ => {
                if fault.take().is_some() {
                    tracing::warn!(source = %self.kek.describe(), "master key available again: vault unsealed");
                }
            }
        }
        r
    }

    fn wrap(&self, key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>> {
        self.kek_result(self.kek.wrap(key, aad))
            .map_err(|e| kek_error(e, "wrapping a data key"))
    }

    fn unwrap(
        &self,
        wrapped: &[u8],
        aad: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<Zeroizing<[u8; 32]>> {
        self.kek_result(self.kek.unwrap(wrapped, aad))
            .map_err(|e| kek_error(e, &what()))
    }
}

fn kek_error(e: KekError, what: &str) -> VaultError {
    match e {
        KekError::Rejected => VaultError::Tampered(what.to_string()),
        KekError::Unavailable(reason) => {
            VaultError::Sealed(format!("master key unavailable: {reason}"))
        }
    }
}

enum State {
    Sealed(String),
    Unsealed(Unsealed),
}

/// A keyed fingerprint of a current secret value, for `keygate scan --fingerprints`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fingerprint {
    pub name: String,
    pub version: i64,
    pub length: usize,
    /// Lowercase hex of HMAC-SHA256(key, value).
    pub fingerprint: String,
}

/// The fingerprint file (`keygate-fingerprints/v1`). The key is random per export, so
/// fingerprints from two exports cannot be linked, and without it they reveal nothing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FingerprintFile {
    pub format: &'static str,
    /// base64url (no padding) of the 32-byte HMAC key.
    pub key: String,
    pub secrets: Vec<Fingerprint>,
}

/// The vault service. Cheap to share behind an `Arc`.
pub struct Vault {
    store: Arc<dyn Store>,
    state: State,
    limits: VaultLimits,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Vault {
    /// Sets up a new store: a random system key wrapped by `master`, its check value and
    /// the first admin credential, with the audit entry that records it.
    pub async fn initialize(
        store: &dyn Store,
        master: &dyn Kek,
        admin: AdminCredential,
    ) -> Result<()> {
        let system_key = crypto::random_key();
        let wrapped = master
            .wrap(&system_key, &aad(Purpose::SystemKey, "", 0))
            .map_err(|e| kek_error(e, "wrapping the system key"))?;
        let kcv = master
            .check_value()
            .map_err(|e| kek_error(e, "the key check value"))?;
        let audit = AuditEvent::new("system", "system.init", Outcome::Success)
            .detail("admin_credential", admin.id.clone());
        store
            .initialize(
                SystemKeys {
                    kcv,
                    wrapped_system_key: wrapped,
                },
                admin,
                audit,
                now_ms(),
            )
            .await?;
        Ok(())
    }

    /// Opens the vault. A missing, unreadable or wrong master key does not fail: the vault
    /// comes up sealed and says why (S21). Only a store error fails.
    pub async fn open(
        store: Arc<dyn Store>,
        provider: Option<&dyn MasterKeyProvider>,
        limits: VaultLimits,
    ) -> Result<Self> {
        let state = match store.system_keys().await? {
            None => State::Sealed("the store is not initialised (run `keygate init`)".into()),
            Some(keys) => match provider {
                None => State::Sealed("no master key source is configured".into()),
                Some(p) => match p.open() {
                    Err(e) => State::Sealed(format!("master key unavailable: {e}")),
                    Ok(kek) => Self::unseal(kek, &keys),
                },
            },
        };
        if let State::Sealed(reason) = &state {
            tracing::warn!(%reason, "vault sealed");
        }
        Ok(Self {
            store,
            state,
            limits,
        })
    }

    fn unseal(kek: Arc<dyn Kek>, keys: &SystemKeys) -> State {
        match kek.check_value() {
            Err(e) => {
                return State::Sealed(format!("master key unavailable: {}: {e}", kek.describe()));
            }
            Ok(kcv) if kcv != keys.kcv => {
                let held = if keys.kcv.starts_with(pkcs11::KCV_PREFIX) {
                    "; this store's master key is held in a PKCS#11 token"
                } else {
                    ""
                };
                return State::Sealed(format!(
                    "the master key from {} does not match this store (key check value differs{held})",
                    kek.describe()
                ));
            }
            Ok(_) => {}
        }
        match kek.unwrap(&keys.wrapped_system_key, &aad(Purpose::SystemKey, "", 0)) {
            Ok(system_key) => State::Unsealed(Unsealed {
                kcv: keys.kcv.clone(),
                keyring: derive_keyring(&system_key),
                kek,
                fault: std::sync::Mutex::new(None),
            }),
            Err(KekError::Rejected) => {
                State::Sealed("the wrapped system key failed authentication".into())
            }
            Err(KekError::Unavailable(reason)) => State::Sealed(format!(
                "master key unavailable: {}: {reason}",
                kek.describe()
            )),
        }
    }

    /// `Some(reason)` while sealed: no usable master key at start, or the key (an HSM)
    /// failed at its last use.
    pub fn sealed(&self) -> Option<String> {
        match &self.state {
            State::Sealed(r) => Some(r.clone()),
            State::Unsealed(u) => u
                .fault
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|reason| format!("master key unavailable: {reason}")),
        }
    }

    /// After a fault, tries the key again (its check value), so a token put back unseals
    /// the vault without a restart. `/readyz` calls it; cheap when there is no fault.
    pub fn recheck(&self) -> Option<String> {
        if let State::Unsealed(u) = &self.state {
            let faulted = u.fault.lock().unwrap_or_else(|p| p.into_inner()).is_some();
            if faulted {
                match u.kek_result(u.kek.check_value()) {
                    Ok(kcv) if kcv == u.kcv => {}
                    Ok(_) => {
                        *u.fault.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some("the key now answering has another check value".into());
                    }
                    Err(_) => {}
                }
            }
        }
        self.sealed()
    }

    /// Audit and checkpoint keys; `None` while sealed.
    pub fn keyring(&self) -> Option<&SystemKeyring> {
        match &self.state {
            State::Unsealed(u) => Some(&u.keyring),
            State::Sealed(_) => None,
        }
    }

    pub fn limits(&self) -> VaultLimits {
        self.limits
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn keys(&self) -> Result<&Unsealed> {
        match &self.state {
            State::Unsealed(u) => Ok(u),
            State::Sealed(r) => Err(VaultError::Sealed(r.clone())),
        }
    }

    fn seal_value(
        &self,
        keys: &Unsealed,
        name: &str,
        version: i64,
        value: &[u8],
    ) -> Result<Sealed> {
        let dek = crypto::random_key();
        let ciphertext = crypto::encrypt(&dek, value, &aad(Purpose::SecretValue, name, version))
            .map_err(|e| VaultError::Tampered(e.to_string()))?;
        let wrapped_key = keys.wrap(&dek, &aad(Purpose::DataKey, name, version))?;
        Ok(Sealed {
            wrapped_key,
            ciphertext,
        })
    }

    fn open_value(
        &self,
        keys: &Unsealed,
        name: &str,
        version: i64,
        sealed: &Sealed,
    ) -> Result<SecretString> {
        let tampered =
            |what: &str| VaultError::Tampered(format!("{name} version {version}: {what}"));
        let dek = keys.unwrap(
            &sealed.wrapped_key,
            &aad(Purpose::DataKey, name, version),
            || format!("{name} version {version}: data key"),
        )?;
        let plain = crypto::decrypt(
            &dek,
            &sealed.ciphertext,
            &aad(Purpose::SecretValue, name, version),
        )
        .map_err(|_| tampered("value"))?;
        let text = String::from_utf8(plain.to_vec()).map_err(|e| {
            // Zeroise the bytes we failed to interpret before dropping them.
            let mut bytes = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut bytes);
            tampered("value is not UTF-8")
        })?;
        Ok(SecretString::from(text))
    }

    fn check_value(&self, value: &SecretString) -> Result<()> {
        let size = value.expose_secret().len();
        if size == 0 {
            return Err(VaultError::Empty);
        }
        if size > self.limits.max_value_bytes {
            return Err(VaultError::TooLarge {
                size,
                limit: self.limits.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Writes a new version. With `cas = Some(n)`, only if the current version is `n`
    /// (0: only if the secret does not exist yet). Returns the new version number.
    pub async fn put(
        &self,
        name: &SecretName,
        value: SecretString,
        cas: Option<i64>,
        actor: &str,
    ) -> Result<i64> {
        let keys = self.keys()?;
        self.check_value(&value)?;
        self.write(keys, name, &value, cas, actor, "secret.put", None)
            .await
    }

    /// Writes a rotated value as the version after `expected_current` (check-and-set, so
    /// a version an operator wrote meanwhile is never overwritten), audited as
    /// `secret.rotate` by `actor` with the hook's name; never the value.
    pub async fn put_rotated(
        &self,
        name: &SecretName,
        value: SecretString,
        expected_current: i64,
        actor: &str,
        hook: &str,
    ) -> Result<i64> {
        let keys = self.keys()?;
        self.check_value(&value)?;
        self.write(
            keys,
            name,
            &value,
            Some(expected_current),
            actor,
            "secret.rotate",
            Some(("hook", hook.into())),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        keys: &Unsealed,
        name: &SecretName,
        value: &SecretString,
        cas: Option<i64>,
        actor: &str,
        action: &str,
        detail: Option<(&str, serde_json::Value)>,
    ) -> Result<i64> {
        // A check-and-set names a version that can exist: 0 (none yet) or more, and one
        // that can be followed.
        if cas.is_some_and(|n| !(0..i64::MAX).contains(&n)) {
            return Err(VaultError::Invalid(
                "cas: the version to write after must be 0 (a new secret) or more".into(),
            ));
        }
        // Optimistic: encrypt against the version we expect to follow, let the store's
        // conditional write decide; without CAS, retry a few times on a race.
        for _ in 0..8 {
            let current = match cas {
                Some(n) => n,
                None => self
                    .store
                    .secret_meta(name.as_str())
                    .await?
                    .map_or(0, |m| m.current_version),
            };
            let next = current.checked_add(1).ok_or_else(|| {
                VaultError::Invalid("the secret has no version number left".into())
            })?;
            let sealed =
                self.seal_value(keys, name.as_str(), next, value.expose_secret().as_bytes())?;
            let mut audit = AuditEvent::new(actor, action, Outcome::Success).target(name.as_str());
            if let Some((key, value)) = &detail {
                audit = audit.detail(key, value.clone());
            }
            let result = self
                .store
                .write_version(
                    NewVersion {
                        name: name.as_str().to_owned(),
                        expected_current: current,
                        sealed,
                        now_ms: now_ms(),
                        keep_versions: self.limits.max_versions,
                        kcv: keys.kcv.clone(),
                    },
                    audit,
                )
                .await;
            match result {
                Err(StoreError::Conflict { .. }) if cas.is_none() => continue,
                other => return Ok(other?),
            }
        }
        Err(VaultError::Conflict { current: -1 })
    }

    /// Reads a version (the current one by default). The read is audited in the same
    /// transaction (S23).
    pub async fn get(
        &self,
        name: &SecretName,
        version: Option<i64>,
        actor: &str,
    ) -> Result<(i64, SecretString)> {
        self.get_with(
            name,
            version,
            AuditEvent::new(actor, "secret.read", Outcome::Success),
        )
        .await
    }

    /// [`Vault::get`] with the caller's audit entry (actor, action and details such as a
    /// machine identity's claims); the vault adds the secret's name and the version read.
    pub async fn get_with(
        &self,
        name: &SecretName,
        version: Option<i64>,
        audit: AuditEvent,
    ) -> Result<(i64, SecretString)> {
        let keys = self.keys()?;
        let meta = self.live_meta(name).await?;
        let version = version.unwrap_or(meta.current_version);
        let audit = audit.target(name.as_str()).detail("version", version);
        let record = self
            .store
            .read_version(name.as_str(), version, Some((audit, now_ms())))
            .await?
            .ok_or(VaultError::NoSuchVersion(version))?;
        let sealed = record.sealed.ok_or(VaultError::Destroyed(version))?;
        Ok((
            version,
            self.open_value(keys, name.as_str(), version, &sealed)?,
        ))
    }

    /// The current value of a secret for injection by the proxy. Not audited per call
    /// (the proxy counts its calls); a deleted secret or a destroyed current version is
    /// an error, so a route never forwards without its key.
    pub async fn resolve(&self, name: &str) -> Result<(i64, SecretString)> {
        let keys = self.keys()?;
        let name = SecretName::parse(name)?;
        let meta = self.live_meta(&name).await?;
        let version = meta.current_version;
        let record = self
            .store
            .read_version(name.as_str(), version, None)
            .await?
            .ok_or(VaultError::NoSuchVersion(version))?;
        let sealed = record.sealed.ok_or(VaultError::Destroyed(version))?;
        Ok((
            version,
            self.open_value(keys, name.as_str(), version, &sealed)?,
        ))
    }

    async fn live_meta(&self, name: &SecretName) -> Result<SecretMeta> {
        let meta = self
            .store
            .secret_meta(name.as_str())
            .await?
            .ok_or(VaultError::NotFound)?;
        if meta.deleted_ms.is_some() {
            return Err(VaultError::Deleted);
        }
        Ok(meta)
    }

    /// Names and metadata; never values.
    pub async fn list(&self) -> Result<Vec<SecretMeta>> {
        self.keys()?;
        Ok(self.store.list_secrets().await?)
    }

    /// A secret's metadata and the metadata of its versions.
    pub async fn history(&self, name: &SecretName) -> Result<(SecretMeta, Vec<VersionMeta>)> {
        self.keys()?;
        let meta = self
            .store
            .secret_meta(name.as_str())
            .await?
            .ok_or(VaultError::NotFound)?;
        let versions = self.store.secret_versions(name.as_str()).await?;
        Ok((meta, versions))
    }

    /// Writes a new version holding the value of version `to`.
    pub async fn rollback(&self, name: &SecretName, to: i64, actor: &str) -> Result<i64> {
        let keys = self.keys()?;
        let meta = self.live_meta(name).await?;
        let record = self
            .store
            .read_version(name.as_str(), to, None)
            .await?
            .ok_or(VaultError::NoSuchVersion(to))?;
        let sealed = record.sealed.ok_or(VaultError::Destroyed(to))?;
        let value = self.open_value(keys, name.as_str(), to, &sealed)?;
        self.write(
            keys,
            name,
            &value,
            Some(meta.current_version),
            actor,
            "secret.rollback",
            Some(("from_version", to.into())),
        )
        .await
    }

    pub async fn delete(&self, name: &SecretName, actor: &str) -> Result<()> {
        self.keys()?;
        let audit = AuditEvent::new(actor, "secret.delete", Outcome::Success).target(name.as_str());
        Ok(self
            .store
            .set_deleted(name.as_str(), true, now_ms(), audit)
            .await?)
    }

    pub async fn undelete(&self, name: &SecretName, actor: &str) -> Result<()> {
        self.keys()?;
        let audit =
            AuditEvent::new(actor, "secret.undelete", Outcome::Success).target(name.as_str());
        Ok(self
            .store
            .set_deleted(name.as_str(), false, now_ms(), audit)
            .await?)
    }

    /// Erases a version's data key and ciphertext: its value is gone for good.
    pub async fn destroy(&self, name: &SecretName, version: i64, actor: &str) -> Result<()> {
        self.keys()?;
        let audit = AuditEvent::new(actor, "secret.destroy", Outcome::Success)
            .target(name.as_str())
            .detail("version", version);
        self.store
            .destroy_version(name.as_str(), version, now_ms(), audit)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => VaultError::NoSuchVersion(version),
                other => other.into(),
            })
    }

    /// Sets how many versions of this secret keep their value (`None`: the default).
    pub async fn set_max_versions(
        &self,
        name: &SecretName,
        max_versions: Option<i64>,
        actor: &str,
    ) -> Result<()> {
        self.keys()?;
        if let Some(n) = max_versions {
            if !(1..=1000).contains(&n) {
                return Err(VaultError::Invalid(
                    "max_versions must be between 1 and 1000".into(),
                ));
            }
        }
        let audit = AuditEvent::new(actor, "secret.configure", Outcome::Success)
            .target(name.as_str())
            .detail("max_versions", max_versions);
        Ok(self
            .store
            .set_max_versions(name.as_str(), max_versions, now_ms(), audit)
            .await?)
    }

    /// Seals one of keygate's own secrets (a signing key, a TOTP seed) under a key derived
    /// from the system key, bound to `(label, id)`. It survives master-key rotation.
    pub fn seal_internal(&self, label: &str, id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let keys = self.keys()?;
        crypto::encrypt(
            &keys.keyring.internal,
            plaintext,
            &aad(Purpose::Internal, &format!("{label}/{id}"), 0),
        )
        .map_err(|e| VaultError::Tampered(e.to_string()))
    }

    /// Opens what [`Vault::seal_internal`] sealed for the same `(label, id)`.
    pub fn open_internal(
        &self,
        label: &str,
        id: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let keys = self.keys()?;
        crypto::decrypt(
            &keys.keyring.internal,
            sealed,
            &aad(Purpose::Internal, &format!("{label}/{id}"), 0),
        )
        .map_err(|_| VaultError::Tampered(format!("{label} {id}")))
    }

    /// Keyed fingerprints of every live secret's current value (never the values).
    pub async fn fingerprints(&self, actor: &str) -> Result<FingerprintFile> {
        let keys = self.keys()?;
        let key = crypto::random_key();
        let mut secrets = Vec::new();
        for meta in self.store.list_secrets().await? {
            if meta.deleted_ms.is_some() || meta.current_version == 0 {
                continue;
            }
            let Some(record) = self
                .store
                .read_version(&meta.name, meta.current_version, None)
                .await?
            else {
                continue;
            };
            let Some(sealed) = record.sealed else {
                continue;
            };
            let value = self.open_value(keys, &meta.name, meta.current_version, &sealed)?;
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_ref())
                .map_err(|_| VaultError::Invalid("fingerprint key".into()))?;
            mac.update(value.expose_secret().as_bytes());
            secrets.push(Fingerprint {
                name: meta.name.clone(),
                version: meta.current_version,
                length: value.expose_secret().len(),
                fingerprint: hex::encode(mac.finalize().into_bytes()),
            });
        }
        self.store
            .append_audit(
                AuditEvent::new(actor, "secret.fingerprints", Outcome::Success)
                    .detail("count", secrets.len() as i64),
                now_ms(),
            )
            .await?;
        use base64::Engine;
        Ok(FingerprintFile {
            format: "keygate-fingerprints/v1",
            key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_ref()),
            secrets,
        })
    }

    /// Master-key rotation: re-wraps every data key and the system key under `new`, in one
    /// transaction. Values are never decrypted. Either key may be in an HSM: a data key
    /// is unwrapped by `old` and wrapped by `new` in this process's memory for that moment
    /// only, as the server itself does. Returns how many data keys were re-wrapped.
    pub async fn rekey(
        store: &dyn Store,
        old: &dyn Kek,
        new: &dyn Kek,
        actor: &str,
    ) -> Result<usize> {
        let keys = store
            .system_keys()
            .await?
            .ok_or_else(|| VaultError::Sealed("the store is not initialised".into()))?;
        let old_kcv = old
            .check_value()
            .map_err(|e| kek_error(e, "the current key's check value"))?;
        if keys.kcv != old_kcv {
            return Err(VaultError::Sealed(format!(
                "the current master key ({}) does not match this store",
                old.describe()
            )));
        }
        let new_kcv = new
            .check_value()
            .map_err(|e| kek_error(e, "the new key's check value"))?;
        if new_kcv == old_kcv {
            return Err(VaultError::Invalid(
                "the new key is the key already in use".into(),
            ));
        }
        let system_aad = aad(Purpose::SystemKey, "", 0);
        let system_key = old
            .unwrap(&keys.wrapped_system_key, &system_aad)
            .map_err(|e| kek_error(e, "system key"))?;
        let wrapped_system_key = new
            .wrap(&system_key, &system_aad)
            .map_err(|e| kek_error(e, "wrapping the system key"))?;
        for _ in 0..5 {
            let mut rewrapped = Vec::new();
            for mut k in store.wrapped_keys().await? {
                let ad = aad(Purpose::DataKey, &k.name, k.version);
                let dek = old.unwrap(&k.wrapped_key, &ad).map_err(|e| {
                    kek_error(e, &format!("{} version {}: data key", k.name, k.version))
                })?;
                k.wrapped_key = new
                    .wrap(&dek, &ad)
                    .map_err(|e| kek_error(e, "wrapping a data key"))?;
                rewrapped.push(k);
            }
            let count = rewrapped.len();
            let result = store
                .rewrap(
                    &keys.kcv,
                    rewrapped,
                    SystemKeys {
                        kcv: new_kcv.clone(),
                        wrapped_system_key: wrapped_system_key.clone(),
                    },
                    AuditEvent::new(actor, "vault.rekey", Outcome::Success)
                        .detail("from", old.describe())
                        .detail("to", new.describe()),
                    now_ms(),
                )
                .await;
            match result {
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
                Ok(()) => return Ok(count),
            }
        }
        Err(VaultError::Conflict { current: -1 })
    }
}
