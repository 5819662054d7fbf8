//! The operator console's accounts and browser sessions (`keygate admin add`,
//! `/console/…`).
//!
//! A console admin signs in with a password (kept as its Argon2id PHC string) and a TOTP
//! code (the seed sealed by the vault; each time step accepted once). A session is kept as
//! the SHA-256 of its cookie value, which carries 256 random bits.

use async_trait::async_trait;
use keygate_audit::AuditEvent;

use crate::Result;

/// What a console admin may do.
pub const ROLE_ADMIN: &str = "admin";
/// Sees every page, changes nothing.
pub const ROLE_READ_ONLY: &str = "read-only";

/// A console admin account.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleAdminRecord {
    /// `ca_` and 24 hex digits.
    pub id: String,
    pub name: String,
    /// Argon2id, PHC string.
    pub password_hash: String,
    /// The TOTP seed, sealed by the vault (`console-totp-seed`, bound to `id`).
    pub totp_sealed: Vec<u8>,
    /// The last TOTP time step accepted (each step signs in once).
    pub totp_last_step: Option<i64>,
    /// [`ROLE_ADMIN`] or [`ROLE_READ_ONLY`].
    pub role: String,
    pub created_ms: i64,
    pub disabled_ms: Option<i64>,
}

impl std::fmt::Debug for ConsoleAdminRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleAdminRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_ms", &self.created_ms)
            .field("disabled_ms", &self.disabled_ms)
            .finish_non_exhaustive()
    }
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSessionRecord {
    /// SHA-256 of the cookie value.
    pub id_hash: Vec<u8>,
    pub admin_id: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    /// The absolute end, whatever the activity.
    pub expires_ms: i64,
}

#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// Fails with [`crate::StoreError::Duplicate`] if the name is taken.
    async fn create_console_admin(
        &self,
        admin: ConsoleAdminRecord,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;
    async fn console_admin_by_name(&self, name: &str) -> Result<Option<ConsoleAdminRecord>>;
    async fn console_admin_by_id(&self, id: &str) -> Result<Option<ConsoleAdminRecord>>;
    async fn list_console_admins(&self) -> Result<Vec<ConsoleAdminRecord>>;
    /// Disables an account and ends its sessions, audited in the same transaction;
    /// [`crate::StoreError::NotFound`] if there is no such account. Disabling twice is not
    /// an error (the first time stands).
    async fn disable_console_admin(&self, name: &str, audit: AuditEvent, now_ms: i64)
    -> Result<()>;
    /// Records `step` as used if it is later than the last one; false if it is not (a
    /// code replayed, or raced by a concurrent sign-in).
    async fn consume_console_totp_step(&self, admin_id: &str, step: i64) -> Result<bool>;
    /// Starts a session, audited in the same transaction.
    async fn create_console_session(
        &self,
        session: ConsoleSessionRecord,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;
    async fn console_session(&self, id_hash: &[u8]) -> Result<Option<ConsoleSessionRecord>>;
    /// Moves the idle clock.
    async fn touch_console_session(&self, id_hash: &[u8], now_ms: i64) -> Result<()>;
    /// Ends a session (sign-out, or found expired); audited when `audit` is given. Ending
    /// one that is gone already is not an error.
    async fn end_console_session(
        &self,
        id_hash: &[u8],
        audit: Option<AuditEvent>,
        now_ms: i64,
    ) -> Result<()>;
}
