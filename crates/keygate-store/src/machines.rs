//! Machine identities: policies naming the secrets a CI job or a server may read, static
//! machine credentials, and the short-lived machine tokens both kinds of login produce
//! (`keygate policy`, `keygate machine`, `/ci/v1/…`).
//!
//! Credentials and tokens are stored as SHA-256 hashes (they carry 256 random bits, so a
//! fast hash is enough); a policy holds names and globs only.

use async_trait::async_trait;
use keygate_audit::AuditEvent;

use crate::Result;

/// What a machine identity may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub name: String,
    /// JSON array of secret names and prefix globs (`deploy.*`).
    pub secrets: String,
    /// Lifetime of a machine token carrying this policy.
    pub token_ttl_secs: i64,
    /// Whether versions other than the current one may be read.
    pub any_version: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A static machine credential (`keygate machine add`).
#[derive(Clone, PartialEq, Eq)]
pub struct MachineRecord {
    /// The client id, `m_` and 24 hex digits.
    pub id: String,
    pub name: String,
    pub policy: String,
    /// SHA-256 of the current secret.
    pub secret_hash: Vec<u8>,
    /// SHA-256 of the secret before the last rotation, accepted until `previous_until_ms`.
    pub previous_hash: Option<Vec<u8>>,
    pub previous_until_ms: Option<i64>,
    pub created_ms: i64,
    pub rotated_ms: Option<i64>,
}

impl std::fmt::Debug for MachineRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("previous_until_ms", &self.previous_until_ms)
            .field("created_ms", &self.created_ms)
            .field("rotated_ms", &self.rotated_ms)
            .finish_non_exhaustive()
    }
}

/// An issued machine token, by its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct MachineTokenRecord {
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// `machine:NAME` or `ci:ISSUER:SUBJECT`.
    pub identity: String,
    pub policy: String,
    /// JSON object of the identity's non-secret claims (repository, ref, run id, …), for
    /// the audit entries of its reads.
    pub claims: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

impl std::fmt::Debug for MachineTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineTokenRecord")
            .field("identity", &self.identity)
            .field("policy", &self.policy)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// Machine identity persistence. Part of [`crate::Store`].
#[async_trait]
pub trait MachineStore: Send + Sync {
    /// Creates or replaces a policy (audited); true if it was created.
    async fn put_policy(
        &self,
        policy: PolicyRecord,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<bool>;
    async fn policy(&self, name: &str) -> Result<Option<PolicyRecord>>;
    async fn list_policies(&self) -> Result<Vec<PolicyRecord>>;
    /// Deletes a policy and every machine token that carries it (audited).
    /// [`crate::StoreError::NotFound`] if there is none.
    async fn delete_policy(&self, name: &str, audit: AuditEvent, now_ms: i64) -> Result<()>;

    /// Adds a machine credential (audited); [`crate::StoreError::Duplicate`] on a taken name.
    async fn insert_machine(
        &self,
        machine: MachineRecord,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;
    async fn machine_by_id(&self, id: &str) -> Result<Option<MachineRecord>>;
    async fn machine_by_name(&self, name: &str) -> Result<Option<MachineRecord>>;
    async fn list_machines(&self) -> Result<Vec<MachineRecord>>;
    /// Replaces a machine's secret; the old one stays valid until `previous_until_ms`
    /// (audited). [`crate::StoreError::NotFound`] if there is no such machine.
    async fn rotate_machine_secret(
        &self,
        name: &str,
        new_hash: Vec<u8>,
        previous_until_ms: i64,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;
    /// Deletes a machine and revokes its live tokens (audited).
    async fn delete_machine(&self, name: &str, audit: AuditEvent, now_ms: i64) -> Result<()>;

    /// Stores a new machine token with the login's audit entry.
    async fn insert_machine_token(
        &self,
        token: MachineTokenRecord,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;
    /// An unexpired token by its hash.
    async fn machine_token(&self, hash: &[u8], now_ms: i64) -> Result<Option<MachineTokenRecord>>;
    /// Deletes expired tokens; returns how many.
    async fn purge_machine_tokens(&self, now_ms: i64) -> Result<u64>;
}
