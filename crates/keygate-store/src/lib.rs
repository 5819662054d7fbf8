//! keygate's storage: one [`Store`] trait, on SQLite (the embedded default) and PostgreSQL
//! (scaled out).
//!
//! Every state change that is a security event takes an [`AuditEvent`] and commits its
//! audit entry in the same transaction (S23): if the audit write fails, the change fails.
//! The store never sees a plaintext secret: secret versions arrive sealed by the vault.
//!
//! Both back ends run the same SQL through sqlx's `Any` driver; each has its own
//! migrations (`migrations/sqlite`, `migrations/postgres`) and its own connection set-up
//! (see [`SqlStore::connect`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), keygate_store::StoreError> {
//! let store = keygate_store::SqlStore::connect("sqlite:///var/lib/keygate/keygate.db").await?;
//! let head = keygate_store::Store::audit_head(&store).await?;
//! println!("audit log holds {} entries", head.0);
//! # Ok(()) }
//! ```

pub mod alerts;
pub mod budgets;
pub mod console;
mod group;
pub mod machines;
pub mod rotation;
mod sql;
mod sql_alerts;
mod sql_budgets;
mod sql_console;
mod sql_machines;
mod sql_rotation;
mod sql_tokens;
pub mod testing;
pub mod tokens;

pub use alerts::{AlertRecord, AlertStore};
pub use budgets::{BudgetRow, BudgetSpent, BudgetStore};
pub use console::{ConsoleAdminRecord, ConsoleSessionRecord, ConsoleStore};
pub use machines::{MachineRecord, MachineStore, MachineTokenRecord, PolicyRecord};
pub use rotation::{DeadLetter, RotationDone, RotationSchedule, RotationStore, ScheduleWrite};
pub use sql::SqlStore;
pub use tokens::{
    ClientRecord, CodeRecord, FamilyRecord, Redemption, RotationWrite, SigningKeyRecord,
    TokenStore, UserRecord,
};

use async_trait::async_trait;
use keygate_audit::{AuditEntry, AuditEvent};

/// Errors a store operation can return.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// Check-and-set failed: the secret's current version is `current`.
    #[error("version conflict: current version is {current}")]
    Conflict { current: i64 },
    #[error("keygate is already initialised in this store")]
    AlreadyInitialized,
    /// A unique name is taken.
    #[error("{0} already exists")]
    Duplicate(String),
    /// The master key in use is not the one the store was sealed with (it was rotated
    /// under this process's feet).
    #[error("the store's master key check value does not match this process's key")]
    KeyMismatch,
    #[error("invalid storage URL: {0}")]
    BadUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// An audited operation (a secret read) was refused because its audit entry could not
    /// be written (S23); the inner error says why.
    #[error("the audit entry could not be written, so the operation was refused: {0}")]
    AuditUnavailable(#[source] Box<StoreError>),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A secret's metadata: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: String,
    /// 0 before the first version is written.
    pub current_version: i64,
    pub max_versions: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub deleted_ms: Option<i64>,
}

/// A version's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    pub version: i64,
    pub created_ms: i64,
    pub destroyed_ms: Option<i64>,
}

/// What the vault stores for one secret version: the data key wrapped by the master key,
/// and the value encrypted under the data key. Both are `nonce ‖ ciphertext ‖ tag`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field(
                "wrapped_key",
                &format_args!("{} bytes", self.wrapped_key.len()),
            )
            .field(
                "ciphertext",
                &format_args!("{} bytes", self.ciphertext.len()),
            )
            .finish()
    }
}

/// One stored version, with its sealed value unless it was destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub meta: VersionMeta,
    pub sealed: Option<Sealed>,
}

/// A new version to append.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub name: String,
    /// The version the caller read and encrypted against; the write fails with
    /// [`StoreError::Conflict`] unless it is still current. The new version is this + 1.
    pub expected_current: i64,
    pub sealed: Sealed,
    pub now_ms: i64,
    /// Versions beyond this many (newest kept) are destroyed in the same transaction.
    pub keep_versions: i64,
    /// Key check value of the master key that sealed `sealed`.
    pub kcv: Vec<u8>,
}

/// A wrapped data key, for master-key rotation.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub name: String,
    pub version: i64,
    pub wrapped_key: Vec<u8>,
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedKey({}@{})", self.name, self.version)
    }
}

/// The system's root material, written once by `keygate init`.
#[derive(Clone, PartialEq, Eq)]
pub struct SystemKeys {
    /// Key check value of the master key.
    pub kcv: Vec<u8>,
    /// The system key (audit and checkpoint keys derive from it), wrapped by the master key.
    pub wrapped_system_key: Vec<u8>,
}

impl std::fmt::Debug for SystemKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemKeys([wrapped])")
    }
}

/// An admin credential: only the hash of its token is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminCredential {
    pub id: String,
    pub token_hash: Vec<u8>,
    pub created_ms: i64,
    pub label: String,
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminCredential({}, {})", self.id, self.label)
    }
}

/// Proxy usage of one (minute, user, route, status class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Unix minute (seconds / 60).
    pub minute: i64,
    pub user_id: String,
    pub route: String,
    /// `2xx`, `4xx`, `429` (apart from the other 4xx), `5xx`, …
    pub status_class: String,
    pub calls: i64,
    pub latency_ms_sum: i64,
    pub latency_ms_max: i64,
}

/// Requests to add to one quota window ([`Store::quota_add`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRow {
    pub key: String,
    /// The window, Unix seconds `[start, end)`.
    pub start: i64,
    pub end: i64,
    /// Requests counted (a negative value adds nothing).
    pub used: i64,
}

/// keygate's persistent state: the vault and audit operations below, the token
/// service's in [`TokenStore`], the monitor's alerts in [`AlertStore`], the proxy's cost
/// budgets in [`BudgetStore`], rotation schedules and webhook dead letters in
/// [`RotationStore`], machine identities in [`MachineStore`], and the operator console's
/// accounts and sessions in [`ConsoleStore`].
#[async_trait]
pub trait Store:
    TokenStore
    + AlertStore
    + BudgetStore
    + RotationStore
    + MachineStore
    + ConsoleStore
    + Send
    + Sync
    + 'static
{
    /// Which back end this is, for logs and `keygate check`.
    fn backend(&self) -> &'static str;

    /// A counter bumped after every committed security-relevant write through this
    /// handle (secret versions, deletions, revocations, disabled users, removed clients…)
    /// and for every such change another replica announces ([`Store::note_external_change`]).
    /// In-process caches of such state compare it, so a change made through this process
    /// is seen by the very next read; changes by other replicas as soon as they are
    /// announced, or when the cache entry expires.
    fn change_epoch(&self) -> u64;

    /// Security-relevant writes committed through this handle: what the coordinator
    /// announces to the other replicas. [`Store::local_change`] is notified on each.
    fn local_changes(&self) -> u64;

    /// Notified after each security-relevant write through this handle.
    fn local_change(&self) -> std::sync::Arc<tokio::sync::Notify>;

    /// Another replica (or a reconnect that may have missed announcements) says the
    /// shared state changed: bumps [`Store::change_epoch`] so every cache reads again.
    fn note_external_change(&self);

    // --- system ---

    /// Writes the system keys and the first admin credential. Fails with
    /// [`StoreError::AlreadyInitialized`] if the store already has system keys.
    async fn initialize(
        &self,
        keys: SystemKeys,
        admin: AdminCredential,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;

    /// The system keys, or `None` before `initialize`.
    async fn system_keys(&self) -> Result<Option<SystemKeys>>;

    async fn admin_credentials(&self) -> Result<Vec<AdminCredential>>;

    /// A small piece of configuration state kept in the store (e.g. applied routes).
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Sets a configuration value, audited in the same transaction. Keys of the vault's
    /// own (`kcv`, `wrapped_system_key`) are refused.
    async fn set_meta(
        &self,
        key: &str,
        value: Vec<u8>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;

    /// The latest DPoP `iat` (Unix seconds) that a process keeping its replay cache in
    /// memory may have accepted; `Some(0)` for a new store, `None` if never recorded.
    /// The next process makes proofs up to it carry a nonce of its own, so a proof the
    /// forgotten cache held cannot be replayed (S14).
    async fn replay_horizon(&self) -> Result<Option<i64>>;

    /// Records the horizon. Not audited: a watermark written every second, not an event.
    async fn set_replay_horizon(&self, secs: i64) -> Result<()>;

    // --- secrets ---

    async fn list_secrets(&self) -> Result<Vec<SecretMeta>>;

    async fn secret_meta(&self, name: &str) -> Result<Option<SecretMeta>>;

    /// Metadata of every version still listed, oldest first.
    async fn secret_versions(&self, name: &str) -> Result<Vec<VersionMeta>>;

    /// Reads one version. With `audit`, the read is itself a security event and its entry
    /// commits before the value is returned; if that entry cannot be written the read fails
    /// with [`StoreError::AuditUnavailable`].
    async fn read_version(
        &self,
        name: &str,
        version: i64,
        audit: Option<(AuditEvent, i64)>,
    ) -> Result<Option<VersionRecord>>;

    /// Appends a version (creating the secret on first write, undeleting a deleted one).
    /// Returns the new version number.
    async fn write_version(&self, new: NewVersion, audit: AuditEvent) -> Result<i64>;

    /// Soft-deletes (`deleted = true`) or restores a secret.
    async fn set_deleted(
        &self,
        name: &str,
        deleted: bool,
        now_ms: i64,
        audit: AuditEvent,
    ) -> Result<()>;

    /// Erases a version's data key and ciphertext for good.
    async fn destroy_version(
        &self,
        name: &str,
        version: i64,
        now_ms: i64,
        audit: AuditEvent,
    ) -> Result<()>;

    async fn set_max_versions(
        &self,
        name: &str,
        max_versions: Option<i64>,
        now_ms: i64,
        audit: AuditEvent,
    ) -> Result<()>;

    // --- master-key rotation ---

    /// Every data key that still exists, for re-wrapping.
    async fn wrapped_keys(&self) -> Result<Vec<WrappedKey>>;

    /// Replaces every wrapped data key and the system keys in one transaction. Fails with
    /// [`StoreError::KeyMismatch`] if the stored check value is not `old_kcv`, and with
    /// [`StoreError::Conflict`] if the set of data keys changed since it was read.
    async fn rewrap(
        &self,
        old_kcv: &[u8],
        keys: Vec<WrappedKey>,
        system: SystemKeys,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;

    // --- audit ---

    /// Appends a standalone security event (a failed login, a refused admin call).
    async fn append_audit(&self, event: AuditEvent, now_ms: i64) -> Result<AuditEntry>;

    /// Entries with `seq > after`, in order, at most `limit`.
    async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>>;

    /// The last entry's sequence number and hash (0 and the genesis hash when empty).
    async fn audit_head(&self) -> Result<(i64, [u8; 32])>;

    // --- proxy quotas ---

    /// Counts one request against `key` in the window `[start, end)` unless `limit` is
    /// reached, in one atomic statement shared by every replica. Returns the requests left,
    /// or `None` when the window is used up (nothing counted).
    async fn quota_consume(
        &self,
        key: &str,
        start: i64,
        end: i64,
        limit: i64,
    ) -> Result<Option<i64>>;

    /// The requests counted against `key` in the window starting at `start` (0 when
    /// none were).
    async fn quota_used(&self, key: &str, start: i64) -> Result<i64>;

    /// Adds requests counted elsewhere (the replicas' Redis counters) to their windows,
    /// without a limit check, in one transaction.
    async fn quota_add(&self, rows: Vec<QuotaRow>) -> Result<()>;

    /// Deletes counters of windows that ended before `before`; returns how many.
    async fn purge_quotas(&self, before: i64) -> Result<u64>;

    // --- proxy usage ---

    /// Adds a batch of per-minute aggregates in one transaction.
    async fn record_usage(&self, rows: Vec<UsageRow>) -> Result<()>;

    /// Aggregates with `minute >= since_minute`, optionally for one user and/or route,
    /// newest first, at most `limit`.
    async fn usage(
        &self,
        since_minute: i64,
        user_id: Option<&str>,
        route: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UsageRow>>;

    /// Runs the database's own consistency check (SQLite `integrity_check`).
    async fn integrity_check(&self) -> Result<()>;

    /// Whether writes go through, for readiness. Free while no write has failed for a
    /// storage reason (disk full, I/O error, a lost connection); after such a failure it
    /// tries one small committed write, and reports healthy again once that succeeds.
    async fn check_writes(&self) -> Result<()> {
        Ok(())
    }

    /// Closes connections, flushing what the back end buffers.
    async fn close(&self);
}
