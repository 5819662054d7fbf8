//! The SQL implementation of [`Store`] for SQLite and PostgreSQL.
//!
//! Both back ends share one set of statements (`$1`-style parameters work in both). What
//! differs is set-up and write serialisation:
//! - SQLite: WAL, `synchronous=FULL`, one writer connection, write transactions begin with
//!   `BEGIN IMMEDIATE` so two writers never deadlock upgrading a read lock;
//! - PostgreSQL: a pool; a write transaction locks the audit head row (`FOR UPDATE`), which
//!   serialises appends to the hash chain across every replica.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use keygate_audit::{AuditEntry, AuditEvent, GENESIS, Outcome};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection, Executor, Row, Transaction};

use crate::group::{Answer, GroupCommit, Op, lost};
use crate::{
    AdminCredential, NewVersion, QuotaRow, Result, Sealed, SecretMeta, Store, StoreError,
    SystemKeys, UsageRow, VersionMeta, VersionRecord, WrappedKey,
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) type Tx = Transaction<'static, sqlx::Any>;

/// The audit chain's head: the last entry's sequence number and hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub(crate) seq: i64,
    pub(crate) hash: [u8; 32],
}

/// A [`Store`] on SQLite or PostgreSQL, chosen by the URL's scheme.
/// How long a PostgreSQL query waits for a connection before the store reports itself
/// unavailable.
pub const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) backend: Backend,
    /// SQLite: a single connection, so writes queue in-process instead of spinning on
    /// the file lock. PostgreSQL: the same pool as `read`.
    pub(crate) write: AnyPool,
    pub(crate) read: AnyPool,
    /// Bumped after every committed write through this handle that can change an answer
    /// an in-process cache holds (see [`Store::change_epoch`]).
    epoch: Arc<AtomicU64>,
    /// The part of `epoch` this handle's own writes made, and its notification.
    local: Arc<AtomicU64>,
    local_change: Arc<tokio::sync::Notify>,
    /// Set when a write failed for a storage reason; cleared only by a probe write that
    /// commits ([`Store::check_writes`]), so small writes that still fit cannot make a
    /// full disk look healthy.
    writes_failing: Arc<AtomicBool>,
    /// SQLite, tests only: a page limit every new writer connection applies, so a
    /// simulated full disk outlives the connection it was first set on.
    page_limit: Arc<AtomicU64>,
    /// The group committer for rotations (both back ends) and DPoP replay inserts
    /// (SQLite); `None` inside the committer itself.
    pub(crate) group: Option<GroupCommit>,
}

impl SqlStore {
    /// Connects and runs the back end's migrations.
    ///
    /// `sqlite://PATH` creates the file if it is missing. For PostgreSQL, the URL's
    /// `options=-c search_path=…` selects a schema (the tests use one schema per run).
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl(
                "expected sqlite://PATH or postgres://… (the URL's scheme is not supported)".into(),
            ));
        };
        let store = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                };
                let opts = AnyConnectOptions::from_str(&url)
                    .map_err(|e| StoreError::BadUrl(e.to_string()))?;
                let page_limit = Arc::new(AtomicU64::new(0));
                let writes_failing = Arc::new(AtomicBool::new(false));
                let pool = |max: u32| {
                    let page_limit = page_limit.clone();
                    AnyPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(Duration::from_secs(30))
                        .after_connect(move |conn, _| {
                            let limit = page_limit.load(Ordering::SeqCst);
                            Box::pin(async move {
                                // Durability first: every commit reaches the disk (S33).
                                // secure_delete zeroes freed cells and pages, so a
                                // destroyed version's bytes do not linger in free space.
                                conn.execute(
                                    "PRAGMA journal_mode = WAL; \
                                     PRAGMA synchronous = FULL; \
                                     PRAGMA foreign_keys = ON; \
                                     PRAGMA secure_delete = ON; \
                                     PRAGMA busy_timeout = 10000;",
                                )
                                .await?;
                                if limit > 0 {
                                    conn.execute(&*format!("PRAGMA max_page_count = {limit}"))
                                        .await?;
                                }
                                Ok(())
                            })
                        })
                };
                let failing = writes_failing.clone();
                let write = pool(1)
                    .after_release(move |conn, _| {
                        let failing = failing.clone();
                        Box::pin(async move {
                            // A write that fails inside SQLite (disk full, I/O error) can
                            // end its transaction without sqlx knowing: the ROLLBACK sqlx
                            // then sends fails, its transaction depth stays at 1, and every
                            // later BEGIN on this, the only writer connection, is refused.
                            // Such a connection is closed; the pool opens a clean one.
                            // A committed write leaves the depth at 0 and costs nothing
                            // here; only a depth above 0 (a dropped transaction whose
                            // ROLLBACK may still be queued) takes the ping, which runs
                            // behind that ROLLBACK, so the depth read after it is final.
                            if !conn.is_in_transaction() {
                                return Ok(true);
                            }
                            conn.ping().await?;
                            if conn.is_in_transaction() {
                                failing.store(true, Ordering::SeqCst);
                                tracing::warn!(
                                    "a failed write left the SQLite writer connection inside a transaction; replacing the connection"
                                );
                                return Ok(false);
                            }
                            Ok(true)
                        })
                    })
                    .connect_with(opts.clone())
                    .await?;
                SQLITE_MIGRATIONS.run(&write).await?;
                let read = pool(4).connect_with(opts).await?;
                SqlStore {
                    backend,
                    write,
                    read,
                    epoch: Default::default(),
                    local: Default::default(),
                    local_change: Default::default(),
                    writes_failing,
                    page_limit,
                    group: None,
                }
            }
            Backend::Postgres => {
                let opts = AnyConnectOptions::from_str(url)
                    .map_err(|e| StoreError::BadUrl(e.to_string()))?;
                // A database that cannot be reached answers "unavailable" (503) within
                // POSTGRES_ACQUIRE_TIMEOUT instead of holding every request for long.
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                    .connect_with(opts)
                    .await?;
                POSTGRES_MIGRATIONS.run(&pool).await?;
                SqlStore {
                    backend,
                    write: pool.clone(),
                    read: pool,
                    epoch: Default::default(),
                    local: Default::default(),
                    local_change: Default::default(),
                    writes_failing: Default::default(),
                    page_limit: Default::default(),
                    group: None,
                }
            }
        };
        let group = GroupCommit::start(store.clone());
        Ok(SqlStore {
            group: Some(group),
            ..store
        })
    }

    /// The same store without group commit: every rotation and replay insert commits (and
    /// syncs) on its own. For the rotation benchmark's comparison; keygate never uses it.
    #[doc(hidden)]
    pub fn without_group_commit(&self) -> Self {
        Self {
            group: None,
            ..self.clone()
        }
    }

    /// Begins a write transaction that does not take the audit chain's lock (for data that
    /// is not a security event, such as usage counters).
    pub(crate) async fn begin_plain(&self) -> Result<Tx> {
        let tx = match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.write.begin().await,
        };
        self.note(tx.map_err(StoreError::from))
    }

    /// Passes `result` through, remembering a storage failure for [`Store::check_writes`].
    pub(crate) fn note<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if is_storage_failure(e) {
                self.writes_failing.store(true, Ordering::SeqCst);
            }
        }
        result
    }

    /// Test support: makes SQLite writes that need a new page fail with "database or disk
    /// is full" (`full`), or lifts that. A small real file system cannot be had in a
    /// test; `max_page_count` fails the same way, at the same places in SQLite, except
    /// that writes that fit into pages the file already has still succeed. The limit
    /// holds for every writer connection opened until it is lifted.
    #[doc(hidden)]
    pub async fn simulate_full_disk(&self, full: bool) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        let mut conn = self.write.acquire().await?;
        let limit = if full {
            sqlx::query("PRAGMA page_count")
                .fetch_one(&mut *conn)
                .await?
                .try_get::<i64, _>(0)?
        } else {
            // SQLite clamps this to its compiled-in maximum.
            i64::from(u32::MAX - 1)
        };
        sqlx::query(&format!("PRAGMA max_page_count = {limit}"))
            .execute(&mut *conn)
            .await?;
        self.page_limit
            .store(if full { limit as u64 } else { 0 }, Ordering::SeqCst);
        Ok(())
    }

    /// After values were erased on SQLite: copies the WAL into the database file and
    /// truncates it, so the page images that still held them are gone from the WAL too
    /// (secure_delete has already zeroed them in the pages themselves, including pages
    /// that earlier splits and merges freed with a copy of the row in them). A reader that
    /// holds an old snapshot for longer than the busy timeout makes it incomplete; that is
    /// logged, and the next checkpoint finishes the job.
    async fn truncate_wal(&self) {
        if self.backend != Backend::Sqlite {
            return;
        }
        match sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.write)
            .await
        {
            Ok(row) if row.try_get::<i64, _>(0).unwrap_or(1) == 0 => {}
            Ok(_) => tracing::warn!(
                "WAL checkpoint after erasing secret versions was blocked by a reader; old page images stay in the WAL until the next checkpoint"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "WAL checkpoint after erasing secret versions failed; old page images stay in the WAL until the next checkpoint"
            ),
        }
    }

    /// Begins a write transaction that holds the store's write lock from its first
    /// statement, so everything it reads stays current until it commits.
    /// SQLite's `(journal_mode, synchronous)` as a pooled connection sees them; `None`
    /// on PostgreSQL. `keygate check` and the durability test read it.
    pub async fn sqlite_durability(&self) -> Result<Option<(String, i64)>> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let mut conn = self.read.acquire().await?;
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
        Ok(Some((mode, sync)))
    }

    pub(crate) async fn begin_write(&self) -> Result<Tx> {
        Ok(match self.backend {
            Backend::Sqlite => self.begin_plain().await?,
            Backend::Postgres => {
                let mut tx = self.begin_plain().await?;
                // Every write appends to the audit chain, so writes are serialised on its
                // head anyway; taking that lock first makes check-then-write sequences
                // (versions, check-and-set) safe under READ COMMITTED.
                sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        })
    }

    /// Commits, then bumps the change epoch: a cache that read before the bump sees a
    /// different epoch afterwards and reads again. The default for every write.
    pub(crate) async fn commit(&self, tx: Tx) -> Result<()> {
        self.note(tx.commit().await.map_err(StoreError::from))?;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.local.fetch_add(1, Ordering::SeqCst);
        self.local_change.notify_waiters();
        Ok(())
    }

    /// Commits without bumping the change epoch: only for writes that add rows or move a
    /// live family forward (sign-ins, codes, new families, rotations, new users and
    /// clients, plain audit entries), which no cached answer can contradict. Caches hold
    /// keys, routes and "still live" answers; revocations, disabling, removal and secret
    /// writes must use [`Self::commit`]. Keeping the epoch quiet under sign-in load keeps
    /// those caches warm.
    pub(crate) async fn commit_additive(&self, tx: Tx) -> Result<()> {
        self.note(tx.commit().await.map_err(StoreError::from))
    }

    /// Runs one UPDATE that must change a row, with its audit entry, in one write
    /// transaction: `NotFound` (and nothing written) if it changed none.
    pub(crate) async fn update_one_audited<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if query.execute(&mut *tx).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await
    }

    /// Reads the chain head inside a write transaction.
    pub(crate) async fn head(&self, tx: &mut Tx) -> Result<Head> {
        // The row is already locked by `begin_write`.
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&mut **tx)
            .await?;
        Ok(Head {
            seq: row.try_get(0)?,
            hash: hash32(row.try_get(1)?)?,
        })
    }

    /// Writes the chain head.
    pub(crate) async fn set_head(&self, tx: &mut Tx, head: Head) -> Result<()> {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(head.seq)
            .bind(head.hash.to_vec())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Appends `event` to the chain inside `tx`.
    pub(crate) async fn append(
        &self,
        tx: &mut Tx,
        event: AuditEvent,
        now_ms: i64,
    ) -> Result<AuditEntry> {
        let mut head = self.head(tx).await?;
        let entry = self.append_at(tx, &mut head, event, now_ms).await?;
        self.set_head(tx, head).await?;
        Ok(entry)
    }

    /// Appends `event` after `head` and moves `head` on, without writing the head row:
    /// the caller writes it once after a run of appends (the group committer).
    pub(crate) async fn append_at(
        &self,
        tx: &mut Tx,
        head: &mut Head,
        event: AuditEvent,
        now_ms: i64,
    ) -> Result<AuditEntry> {
        let entry = AuditEntry::chain(head.seq + 1, head.hash, now_ms, event);
        sqlx::query(
            "INSERT INTO audit_log (seq, ts_ms, actor, action, target, outcome, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(entry.seq)
        .bind(entry.ts_ms)
        .bind(entry.actor.clone())
        .bind(entry.action.clone())
        .bind(entry.target.clone())
        .bind(entry.outcome.as_str())
        .bind(entry.details.clone())
        .bind(entry.prev_hash.to_vec())
        .bind(entry.hash.to_vec())
        .execute(&mut **tx)
        .await?;
        *head = Head {
            seq: entry.seq,
            hash: entry.hash,
        };
        Ok(entry)
    }

    /// One quota count inside the group committer's transaction.
    pub(crate) async fn quota_in(
        &self,
        tx: &mut Tx,
        key: &str,
        start: i64,
        end: i64,
        limit: i64,
    ) -> Result<Option<i64>> {
        quota_count(tx, key, start, end, limit).await
    }

    async fn meta_in(&self, tx: &mut Tx, name: &str) -> Result<Option<SecretMeta>> {
        let row = sqlx::query(SECRET_COLUMNS_WHERE_NAME)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?;
        row.map(|r| secret_meta(&r)).transpose()
    }
}

/// The meta key of [`Store::replay_horizon`].
const REPLAY_HORIZON: &str = "dpop_replay_horizon";

const SECRET_COLUMNS: &str =
    "SELECT name, current_version, max_versions, created_ms, updated_ms, deleted_ms FROM secrets";
const SECRET_COLUMNS_WHERE_NAME: &str = "SELECT name, current_version, max_versions, created_ms, updated_ms, deleted_ms FROM secrets WHERE name = $1";

/// Inserts the window's first count, or adds one while below the limit; what is left of
/// the quota if this request was counted, `None` if the quota is used up.
async fn quota_count(
    conn: &mut sqlx::AnyConnection,
    key: &str,
    start: i64,
    end: i64,
    limit: i64,
) -> Result<Option<i64>> {
    let row = sqlx::query(
        "INSERT INTO quota_counters (key, window_start, window_end, used) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (key, window_start) DO UPDATE SET used = quota_counters.used + 1 \
         WHERE quota_counters.used < $4 RETURNING used",
    )
    .bind(key)
    .bind(start)
    .bind(end)
    .bind(limit)
    .fetch_optional(conn)
    .await?;
    match row {
        Some(r) => Ok(Some(limit - r.try_get::<i64, _>(0)?)),
        None => Ok(None),
    }
}

/// Whether `e` says the database could not do its work (disk full, I/O, a lost or wedged
/// connection), as opposed to a refusal of this particular write (a constraint).
fn is_storage_failure(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.kind(), sqlx::error::ErrorKind::Other)
        }
        StoreError::Database(
            sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::InvalidSavePointStatement
            | sqlx::Error::BeginFailed,
        ) => true,
        StoreError::AuditUnavailable(inner) => is_storage_failure(inner),
        _ => false,
    }
}

fn hash32(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("audit hash is not 32 bytes".into()))
}

fn secret_meta(r: &AnyRow) -> Result<SecretMeta> {
    Ok(SecretMeta {
        name: r.try_get(0)?,
        current_version: r.try_get(1)?,
        max_versions: r.try_get(2)?,
        created_ms: r.try_get(3)?,
        updated_ms: r.try_get(4)?,
        deleted_ms: r.try_get(5)?,
    })
}

fn version_meta(r: &AnyRow) -> Result<VersionMeta> {
    Ok(VersionMeta {
        version: r.try_get("version")?,
        created_ms: r.try_get("created_ms")?,
        destroyed_ms: r.try_get("destroyed_ms")?,
    })
}

fn audit_entry(r: &AnyRow) -> Result<AuditEntry> {
    let outcome: String = r.try_get("outcome")?;
    Ok(AuditEntry {
        seq: r.try_get("seq")?,
        ts_ms: r.try_get("ts_ms")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        // An unknown outcome cannot come from keygate; keep the row readable so that
        // `audit verify` reports it as a modified entry rather than failing to read.
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failure),
        details: r.try_get("details")?,
        prev_hash: hash32(r.try_get("prev_hash")?)?,
        hash: hash32(r.try_get("hash")?)?,
    })
}

#[async_trait]
impl Store for SqlStore {
    fn change_epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn local_changes(&self) -> u64 {
        self.local.load(Ordering::SeqCst)
    }

    fn local_change(&self) -> Arc<tokio::sync::Notify> {
        self.local_change.clone()
    }

    fn note_external_change(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    async fn initialize(
        &self,
        keys: SystemKeys,
        admin: AdminCredential,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT COUNT(*) FROM meta WHERE key = 'kcv'")
            .fetch_one(&mut *tx)
            .await?;
        if existing.try_get::<i64, _>(0)? > 0 {
            return Err(StoreError::AlreadyInitialized);
        }
        for (key, value) in [
            ("kcv", keys.kcv),
            ("wrapped_system_key", keys.wrapped_system_key),
            // A new store: no process has accepted a DPoP proof yet.
            (REPLAY_HORIZON, 0i64.to_be_bytes().to_vec()),
        ] {
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO admin_credentials (id, token_hash, created_ms, label) VALUES ($1, $2, $3, $4)",
        )
        .bind(admin.id)
        .bind(admin.token_hash)
        .bind(admin.created_ms)
        .bind(admin.label)
        .execute(&mut *tx)
        .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn system_keys(&self) -> Result<Option<SystemKeys>> {
        let rows = sqlx::query(
            "SELECT key, value FROM meta WHERE key IN ('kcv', 'wrapped_system_key') ORDER BY key",
        )
        .fetch_all(&self.read)
        .await?;
        let mut kcv = None;
        let mut wrapped = None;
        for r in rows {
            let key: String = r.try_get(0)?;
            let value: Vec<u8> = r.try_get(1)?;
            match key.as_str() {
                "kcv" => kcv = Some(value),
                _ => wrapped = Some(value),
            }
        }
        match (kcv, wrapped) {
            (Some(kcv), Some(wrapped_system_key)) => Ok(Some(SystemKeys {
                kcv,
                wrapped_system_key,
            })),
            (None, None) => Ok(None),
            _ => Err(StoreError::Corrupt(
                "system keys are incomplete (kcv without wrapped system key)".into(),
            )),
        }
    }

    async fn admin_credentials(&self) -> Result<Vec<AdminCredential>> {
        let rows = sqlx::query(
            "SELECT id, token_hash, created_ms, label FROM admin_credentials ORDER BY created_ms",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AdminCredential {
                    id: r.try_get(0)?,
                    token_hash: r.try_get(1)?,
                    created_ms: r.try_get(2)?,
                    label: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| r.try_get::<Vec<u8>, _>(0).map_err(StoreError::from))
            .transpose()
    }

    async fn set_meta(
        &self,
        key: &str,
        value: Vec<u8>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        if matches!(key, "kcv" | "wrapped_system_key" | REPLAY_HORIZON) {
            return Err(StoreError::Corrupt(format!("meta key {key} is reserved")));
        }
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM meta WHERE key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn replay_horizon(&self) -> Result<Option<i64>> {
        Ok(match self.get_meta(REPLAY_HORIZON).await? {
            None => None,
            Some(bytes) => Some(i64::from_be_bytes(bytes.try_into().map_err(|_| {
                StoreError::Corrupt("the DPoP replay horizon is not 8 bytes".into())
            })?)),
        })
    }

    async fn set_replay_horizon(&self, secs: i64) -> Result<()> {
        let mut tx = self.begin_plain().await?;
        sqlx::query("DELETE FROM meta WHERE key = $1")
            .bind(REPLAY_HORIZON)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
            .bind(REPLAY_HORIZON)
            .bind(secs.to_be_bytes().to_vec())
            .execute(&mut *tx)
            .await?;
        self.commit_additive(tx).await
    }

    async fn list_secrets(&self) -> Result<Vec<SecretMeta>> {
        let rows = sqlx::query(&format!("{SECRET_COLUMNS} ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(secret_meta).collect()
    }

    async fn secret_meta(&self, name: &str) -> Result<Option<SecretMeta>> {
        let row = sqlx::query(SECRET_COLUMNS_WHERE_NAME)
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| secret_meta(&r)).transpose()
    }

    async fn secret_versions(&self, name: &str) -> Result<Vec<VersionMeta>> {
        let rows = sqlx::query(
            "SELECT version, created_ms, destroyed_ms FROM secret_versions WHERE name = $1 ORDER BY version",
        )
        .bind(name)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(version_meta).collect()
    }

    async fn read_version(
        &self,
        name: &str,
        version: i64,
        audit: Option<(AuditEvent, i64)>,
    ) -> Result<Option<VersionRecord>> {
        const SQL: &str = "SELECT version, created_ms, destroyed_ms, wrapped_key, ciphertext \
                           FROM secret_versions WHERE name = $1 AND version = $2";
        let row = match audit {
            None => {
                sqlx::query(SQL)
                    .bind(name)
                    .bind(version)
                    .fetch_optional(&self.read)
                    .await?
            }
            Some((event, now_ms)) => {
                let audit_failed = |e: StoreError| StoreError::AuditUnavailable(Box::new(e));
                let mut tx = self.begin_write().await.map_err(audit_failed)?;
                let row = sqlx::query(SQL)
                    .bind(name)
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
                // The entry records what the read found, not only that it was tried.
                let found = match &row {
                    None => Some("no such version"),
                    Some(r) if r.try_get::<Option<Vec<u8>>, _>("ciphertext")?.is_none() => {
                        Some("destroyed")
                    }
                    Some(_) => None,
                };
                let event = match found {
                    Some(reason) => {
                        let mut e = event.detail("reason", reason);
                        e.outcome = Outcome::Failure;
                        e
                    }
                    None => event,
                };
                let appended = self.append(&mut tx, event, now_ms).await;
                self.note(appended).map_err(audit_failed)?;
                self.commit(tx).await.map_err(audit_failed)?;
                row
            }
        };
        let Some(r) = row else { return Ok(None) };
        let meta = version_meta(&r)?;
        let wrapped: Option<Vec<u8>> = r.try_get("wrapped_key")?;
        let ciphertext: Option<Vec<u8>> = r.try_get("ciphertext")?;
        let sealed = match (wrapped, ciphertext) {
            (Some(wrapped_key), Some(ciphertext)) => Some(Sealed {
                wrapped_key,
                ciphertext,
            }),
            _ => None,
        };
        Ok(Some(VersionRecord { meta, sealed }))
    }

    async fn write_version(&self, new: NewVersion, audit: AuditEvent) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let kcv = sqlx::query("SELECT value FROM meta WHERE key = 'kcv'")
            .fetch_optional(&mut *tx)
            .await?;
        match kcv {
            Some(r) if r.try_get::<Vec<u8>, _>(0)? == new.kcv => {}
            _ => return Err(StoreError::KeyMismatch),
        }
        let current = self.meta_in(&mut tx, &new.name).await?;
        let current_version = current.as_ref().map_or(0, |m| m.current_version);
        if current_version != new.expected_current {
            return Err(StoreError::Conflict {
                current: current_version,
            });
        }
        let version = current_version + 1;
        if current.is_none() {
            sqlx::query(
                "INSERT INTO secrets (name, current_version, max_versions, created_ms, updated_ms, deleted_ms) \
                 VALUES ($1, $2, NULL, $3, $3, NULL)",
            )
            .bind(new.name.clone())
            .bind(version)
            .bind(new.now_ms)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE secrets SET current_version = $1, updated_ms = $2, deleted_ms = NULL WHERE name = $3",
            )
            .bind(version)
            .bind(new.now_ms)
            .bind(new.name.clone())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO secret_versions (name, version, created_ms, wrapped_key, ciphertext, destroyed_ms) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(new.name.clone())
        .bind(version)
        .bind(new.now_ms)
        .bind(new.sealed.wrapped_key)
        .bind(new.sealed.ciphertext)
        .execute(&mut *tx)
        .await?;
        let keep = current
            .as_ref()
            .and_then(|m| m.max_versions)
            .unwrap_or(new.keep_versions)
            .max(1);
        let pruned = sqlx::query(
            "UPDATE secret_versions SET wrapped_key = NULL, ciphertext = NULL, destroyed_ms = $1 \
             WHERE name = $2 AND version <= $3 AND destroyed_ms IS NULL",
        )
        .bind(new.now_ms)
        .bind(new.name.clone())
        .bind(version - keep)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let audit = if pruned > 0 {
            audit.detail("pruned_versions", pruned)
        } else {
            audit
        };
        self.append(&mut tx, audit.detail("version", version), new.now_ms)
            .await?;
        self.commit(tx).await?;
        if pruned > 0 {
            self.truncate_wal().await;
        }
        Ok(version)
    }

    async fn set_deleted(
        &self,
        name: &str,
        deleted: bool,
        now_ms: i64,
        audit: AuditEvent,
    ) -> Result<()> {
        let sql = if deleted {
            "UPDATE secrets SET deleted_ms = $1, updated_ms = $1 WHERE name = $2"
        } else {
            "UPDATE secrets SET deleted_ms = NULL, updated_ms = $1 WHERE name = $2"
        };
        self.update_one_audited(sqlx::query(sql).bind(now_ms).bind(name), audit, now_ms)
            .await
    }

    async fn destroy_version(
        &self,
        name: &str,
        version: i64,
        now_ms: i64,
        audit: AuditEvent,
    ) -> Result<()> {
        self.update_one_audited(
            sqlx::query(
                "UPDATE secret_versions SET wrapped_key = NULL, ciphertext = NULL, \
                 destroyed_ms = COALESCE(destroyed_ms, $1) WHERE name = $2 AND version = $3",
            )
            .bind(now_ms)
            .bind(name)
            .bind(version),
            audit,
            now_ms,
        )
        .await?;
        self.truncate_wal().await;
        Ok(())
    }

    async fn set_max_versions(
        &self,
        name: &str,
        max_versions: Option<i64>,
        now_ms: i64,
        audit: AuditEvent,
    ) -> Result<()> {
        self.update_one_audited(
            sqlx::query("UPDATE secrets SET max_versions = $1, updated_ms = $2 WHERE name = $3")
                .bind(max_versions)
                .bind(now_ms)
                .bind(name),
            audit,
            now_ms,
        )
        .await
    }

    async fn wrapped_keys(&self) -> Result<Vec<WrappedKey>> {
        let rows = sqlx::query(
            "SELECT name, version, wrapped_key FROM secret_versions \
             WHERE wrapped_key IS NOT NULL ORDER BY name, version",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WrappedKey {
                    name: r.try_get(0)?,
                    version: r.try_get(1)?,
                    wrapped_key: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn rewrap(
        &self,
        old_kcv: &[u8],
        keys: Vec<WrappedKey>,
        system: SystemKeys,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let kcv = sqlx::query("SELECT value FROM meta WHERE key = 'kcv'")
            .fetch_optional(&mut *tx)
            .await?;
        match kcv {
            Some(r) if r.try_get::<Vec<u8>, _>(0)? == old_kcv => {}
            _ => return Err(StoreError::KeyMismatch),
        }
        let live =
            sqlx::query("SELECT COUNT(*) FROM secret_versions WHERE wrapped_key IS NOT NULL")
                .fetch_one(&mut *tx)
                .await?
                .try_get::<i64, _>(0)?;
        if live != keys.len() as i64 {
            return Err(StoreError::Conflict { current: live });
        }
        for k in &keys {
            let n = sqlx::query(
                "UPDATE secret_versions SET wrapped_key = $1 \
                 WHERE name = $2 AND version = $3 AND wrapped_key IS NOT NULL",
            )
            .bind(k.wrapped_key.clone())
            .bind(k.name.clone())
            .bind(k.version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(StoreError::Conflict { current: live });
            }
        }
        for (key, value) in [
            ("kcv", system.kcv),
            ("wrapped_system_key", system.wrapped_system_key),
        ] {
            sqlx::query("UPDATE meta SET value = $1 WHERE key = $2")
                .bind(value)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        self.append(
            &mut tx,
            audit.detail("rewrapped_keys", keys.len() as i64),
            now_ms,
        )
        .await?;
        self.commit(tx).await?;
        // The data keys wrapped by the old master key must not stay readable in the WAL.
        self.truncate_wal().await;
        Ok(())
    }

    async fn append_audit(&self, event: AuditEvent, now_ms: i64) -> Result<AuditEntry> {
        let mut tx = self.begin_write().await?;
        let entry = self.append(&mut tx, event, now_ms).await?;
        self.commit_additive(tx).await?;
        Ok(entry)
    }

    async fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT seq, ts_ms, actor, action, target, outcome, details, prev_hash, hash \
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(audit_entry).collect()
    }

    async fn audit_head(&self) -> Result<(i64, [u8; 32])> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&self.read)
            .await?;
        match row {
            Some(r) => Ok((r.try_get(0)?, hash32(r.try_get(1)?)?)),
            None => Ok((0, GENESIS)),
        }
    }

    async fn quota_consume(
        &self,
        key: &str,
        start: i64,
        end: i64,
        limit: i64,
    ) -> Result<Option<i64>> {
        if limit <= 0 {
            return Ok(None);
        }
        match self.backend {
            // SQLite has one writer: counts share its commits (and fsyncs).
            Backend::Sqlite => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                self.submit(Op::Quota {
                    key: key.to_owned(),
                    start,
                    end,
                    limit,
                    reply,
                })
                .await;
                Ok(match answer.await.map_err(|_| lost())?? {
                    Answer::Remaining(left) => Some(left),
                    Answer::Yes | Answer::No => None,
                })
            }
            Backend::Postgres => {
                let mut conn = self.write.acquire().await?;
                quota_count(&mut conn, key, start, end, limit).await
            }
        }
    }

    async fn quota_used(&self, key: &str, start: i64) -> Result<i64> {
        let row =
            sqlx::query("SELECT used FROM quota_counters WHERE key = $1 AND window_start = $2")
                .bind(key)
                .bind(start)
                .fetch_optional(&self.read)
                .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)?,
            None => 0,
        })
    }

    async fn quota_add(&self, rows: Vec<QuotaRow>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // Counts, not security events: a plain transaction, not behind the audit chain.
        let mut tx = self.begin_plain().await?;
        for r in rows {
            let added = sqlx::query(
                "INSERT INTO quota_counters (key, window_start, window_end, used) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (key, window_start) DO UPDATE SET \
                 used = quota_counters.used + excluded.used",
            )
            .bind(r.key)
            .bind(r.start)
            .bind(r.end)
            .bind(r.used.max(0))
            .execute(&mut *tx)
            .await;
            self.note(added.map_err(StoreError::from))?;
        }
        self.commit_additive(tx).await
    }

    async fn purge_quotas(&self, before: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM quota_counters WHERE window_end < $1")
                .bind(before)
                .execute(&self.write)
                .await?
                .rows_affected(),
        )
    }

    async fn record_usage(&self, rows: Vec<UsageRow>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // Plain transaction on the writer: usage is not a security event and must not
        // wait for the audit chain.
        let mut tx = self.begin_plain().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO usage_minutes (minute, user_id, route, status_class, calls, latency_ms_sum, latency_ms_max) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (minute, user_id, route, status_class) DO UPDATE SET \
                 calls = usage_minutes.calls + excluded.calls, \
                 latency_ms_sum = usage_minutes.latency_ms_sum + excluded.latency_ms_sum, \
                 latency_ms_max = CASE WHEN usage_minutes.latency_ms_max > excluded.latency_ms_max \
                 THEN usage_minutes.latency_ms_max ELSE excluded.latency_ms_max END",
            )
            .bind(r.minute)
            .bind(r.user_id)
            .bind(r.route)
            .bind(r.status_class)
            .bind(r.calls)
            .bind(r.latency_ms_sum)
            .bind(r.latency_ms_max)
            .execute(&mut *tx)
            .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    async fn usage(
        &self,
        since_minute: i64,
        user_id: Option<&str>,
        route: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UsageRow>> {
        let rows = sqlx::query(
            "SELECT minute, user_id, route, status_class, calls, latency_ms_sum, latency_ms_max \
             FROM usage_minutes WHERE minute >= $1 AND ($2 = '' OR user_id = $2) AND ($3 = '' OR route = $3) \
             ORDER BY minute DESC, user_id, route, status_class LIMIT $4",
        )
        .bind(since_minute)
        .bind(user_id.unwrap_or(""))
        .bind(route.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    minute: r.try_get(0)?,
                    user_id: r.try_get(1)?,
                    route: r.try_get(2)?,
                    status_class: r.try_get(3)?,
                    calls: r.try_get(4)?,
                    latency_ms_sum: r.try_get(5)?,
                    latency_ms_max: r.try_get(6)?,
                })
            })
            .collect()
    }

    async fn integrity_check(&self) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        let row = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.read)
            .await?;
        let verdict: String = row.try_get(0)?;
        if verdict == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!(
                "SQLite integrity_check: {verdict}"
            )))
        }
    }

    async fn check_writes(&self) -> Result<()> {
        if !self.writes_failing.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Big enough to need new pages (and WAL space) on any page size SQLite allows, so
        // a disk that only has room for small writes still reads as failing.
        const PROBE: &str = "readiness_probe";
        let mut tx = self.begin_plain().await?;
        let probe = async {
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
                .bind(PROBE)
                .bind(vec![0u8; 128 * 1024])
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM meta WHERE key = $1")
                .bind(PROBE)
                .execute(&mut *tx)
                .await?;
            Ok::<_, StoreError>(())
        };
        self.note(probe.await)?;
        self.commit_additive(tx).await?;
        self.writes_failing.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}
