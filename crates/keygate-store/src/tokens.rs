//! The token service's state: users, clients, authorization codes, refresh families,
//! signing keys and the DPoP replay cache.
//!
//! Only hashes of tokens and codes are stored (S09); private signing keys and TOTP seeds
//! arrive sealed by the vault. Every write that is a security event takes its audit event
//! and commits it in the same transaction (S23).

use async_trait::async_trait;
use keygate_audit::AuditEvent;

use crate::Result;

/// A user as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    /// Argon2id PHC string; `None` for users who only sign in through token exchange.
    pub password_hash: Option<String>,
    /// Space-separated scopes the user may be granted.
    pub scopes: String,
    pub created_ms: i64,
    pub disabled_ms: Option<i64>,
    /// TOTP seed sealed by the vault; `None` until enrolled.
    pub totp_sealed: Option<Vec<u8>>,
    /// The last TOTP time step accepted (each code is accepted once).
    pub totp_last_step: Option<i64>,
    /// For users created by token exchange: the trusted issuer and its subject.
    pub issuer: Option<String>,
    pub subject: Option<String>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("disabled_ms", &self.disabled_ms)
            .field("mfa", &self.totp_sealed.is_some())
            .finish_non_exhaustive()
    }
}

/// An OAuth client as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub id: String,
    pub name: String,
    /// `public` or `confidential`.
    pub kind: String,
    /// SHA-256 of the client secret (confidential clients only).
    pub secret_hash: Option<Vec<u8>>,
    pub redirect_uris: Vec<String>,
    pub scopes: String,
    pub created_ms: i64,
    pub removed_ms: Option<i64>,
    /// `tls_client_auth` or `self_signed_tls_client_auth` (RFC 8705 §2); `None` for a
    /// client with a secret (confidential) or none (public).
    pub auth_method: Option<String>,
    /// With a TLS method, JSON naming the certificate: the subject DN or SAN a CA-issued
    /// one must carry, or the thumbprints of self-signed ones.
    pub tls_identity: Option<String>,
    /// The client's own DPoP policy, `optional` or `required`; `None` follows
    /// `tokens.dpop`.
    pub dpop: Option<String>,
    /// The app's name on the login page (else `name`).
    pub display_name: Option<String>,
    /// A link to the app's privacy notice on the login page.
    pub privacy_url: Option<String>,
    /// The login page's line on how long a sign-in lasts (else keygate's own).
    pub session_note: Option<String>,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("redirect_uris", &self.redirect_uris)
            .field("scopes", &self.scopes)
            .field("auth_method", &self.auth_method)
            .field("tls_identity", &self.tls_identity)
            .field("dpop", &self.dpop)
            .field("display_name", &self.display_name)
            .field("privacy_url", &self.privacy_url)
            .field("session_note", &self.session_note)
            .finish_non_exhaustive()
    }
}

/// What was stored with an authorization code (the code itself only as its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    pub hash: Vec<u8>,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub scopes: String,
    pub challenge: String,
    pub dpop_jkt: Option<String>,
    pub expires_ms: i64,
    pub used_ms: Option<i64>,
    pub family_id: Option<String>,
}

/// A refresh token family (a sign-in session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRecord {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub jkt: Option<String>,
    pub scopes: String,
    pub created_ms: i64,
    pub last_used_ms: i64,
    pub generation: i64,
    pub previous_generation: Option<i64>,
    pub rotated_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub revoke_reason: Option<String>,
    /// The trust tier decided at sign-in (`attested`, `unattested`, `failed`); `None`
    /// when the client has no attestation configured.
    pub tier: Option<String>,
    /// App Attest: the attested public key (SEC1), whose assertions refreshes carry.
    pub attest_key: Option<Vec<u8>>,
    /// App Attest: the last assertion counter accepted.
    pub attest_counter: Option<i64>,
}

impl FamilyRecord {
    /// A new session at generation 0, live, first used `now_ms`.
    pub fn started(
        id: String,
        user_id: String,
        client_id: String,
        jkt: Option<String>,
        scopes: String,
        now_ms: i64,
    ) -> Self {
        Self {
            id,
            user_id,
            client_id,
            jkt,
            scopes,
            created_ms: now_ms,
            last_used_ms: now_ms,
            generation: 0,
            previous_generation: None,
            rotated_ms: None,
            revoked_ms: None,
            revoke_reason: None,
            tier: None,
            attest_key: None,
            attest_counter: None,
        }
    }
}

/// A compare-and-set rotation of a family, with the new token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationWrite {
    pub family_id: String,
    pub expected_generation: i64,
    pub new_generation: i64,
    pub previous_generation: Option<i64>,
    pub rotated_ms: Option<i64>,
    pub now_ms: i64,
    pub new_token_hash: Vec<u8>,
    /// App Attest: the assertion counter this refresh carried. The rotation only
    /// happens if it is greater than the stored one (a replayed assertion loses).
    pub attest_counter: Option<i64>,
}

/// A signing key as stored; the private key sealed by the vault.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub sealed_private: Vec<u8>,
    /// `next`, `active` or `retired`.
    pub state: String,
    pub created_ms: i64,
    pub changed_ms: i64,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKeyRecord({} {} {})",
            self.kid, self.alg, self.state
        )
    }
}

/// The result of redeeming an authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The code was unused: the family and its first refresh token are stored.
    Redeemed,
    /// The code had been used already; the family it created (if any) is now revoked.
    AlreadyUsed { revoked_family: Option<String> },
}

/// The token service's persistence. Part of [`crate::Store`].
#[async_trait]
pub trait TokenStore: Send + Sync {
    // --- users ---

    /// Fails with [`crate::StoreError::Duplicate`] if the name (or issuer/subject) exists.
    async fn create_user(&self, user: UserRecord, audit: AuditEvent, now_ms: i64) -> Result<()>;
    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>>;
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>>;
    async fn user_by_subject(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>>;
    async fn list_users(&self) -> Result<Vec<UserRecord>>;
    /// Disables a user and revokes every family of theirs, in one transaction (S12).
    /// Returns how many families were revoked.
    async fn disable_user(&self, id: &str, audit: AuditEvent, now_ms: i64) -> Result<u64>;
    /// Lets a disabled user sign in again (their revoked sessions stay revoked).
    /// [`crate::StoreError::NotFound`] if there is no such user; false if not disabled.
    async fn enable_user(&self, id: &str, audit: AuditEvent, now_ms: i64) -> Result<bool>;
    async fn set_user_totp(
        &self,
        id: &str,
        sealed: Vec<u8>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;
    /// Records `step` as used if it is later than the last used step; false if not
    /// (a replayed code).
    async fn consume_totp_step(&self, id: &str, step: i64) -> Result<bool>;

    // --- clients ---

    async fn create_client(
        &self,
        client: ClientRecord,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;
    async fn client_by_id(&self, id: &str) -> Result<Option<ClientRecord>>;
    async fn list_clients(&self) -> Result<Vec<ClientRecord>>;
    /// Removes a client and revokes its families. Returns how many were revoked.
    async fn remove_client(&self, id: &str, audit: AuditEvent, now_ms: i64) -> Result<u64>;
    /// Sets a client's own DPoP policy (`optional`, `required`, or `None` to follow
    /// `tokens.dpop`); a security-relevant change, announced like a revocation.
    /// [`crate::StoreError::NotFound`] for an unknown or removed client.
    async fn set_client_dpop(
        &self,
        id: &str,
        dpop: Option<&str>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;

    // --- authorization codes ---

    /// Stores a new code; the audit event records the sign-in that produced it.
    async fn insert_code(&self, code: CodeRecord, audit: AuditEvent, now_ms: i64) -> Result<()>;
    async fn code_by_hash(&self, hash: &[u8]) -> Result<Option<CodeRecord>>;
    /// Marks the code used and stores the new family with its first refresh token, in
    /// one transaction; if the code was used already, revokes the family it created.
    async fn redeem_code(
        &self,
        hash: &[u8],
        family: FamilyRecord,
        first_token_hash: Vec<u8>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<Redemption>;

    // --- refresh families ---

    /// Stores a family and its first refresh token (client credentials and token
    /// exchange start families without a code).
    async fn insert_family(
        &self,
        family: FamilyRecord,
        first_token_hash: Vec<u8>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()>;
    /// The family and generation of a refresh token, by the token's hash.
    async fn refresh_token(&self, hash: &[u8]) -> Result<Option<(String, i64)>>;
    async fn family(&self, id: &str) -> Result<Option<FamilyRecord>>;
    /// The conditional update of S34: true if this call rotated the family, false if
    /// another request won (nothing is written then).
    async fn rotate_family(&self, rotation: RotationWrite, audit: AuditEvent) -> Result<bool>;
    /// Revokes a family; false if it was already revoked or does not exist.
    async fn revoke_family(
        &self,
        id: &str,
        reason: &str,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<bool>;
    /// Families, newest first; only live ones unless `include_revoked`.
    async fn list_families(
        &self,
        user_id: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<FamilyRecord>>;
    /// Whether the family is revoked, or its user disabled: the check every proxied call
    /// makes (S12).
    async fn family_revoked(&self, id: &str) -> Result<bool>;

    // --- signing keys ---

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Replaces the whole key set (the first set, a rotation, a prune) in one
    /// transaction, if the stored key ids are still exactly `expected` (none for the
    /// first set). `false`, and nothing written, when another writer (a replica starting
    /// or rotating at the same moment) changed them first: the caller reads them again.
    async fn save_signing_keys(
        &self,
        keys: Vec<SigningKeyRecord>,
        expected: &[String],
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<bool>;

    // --- DPoP replay cache (S14) ---

    /// Records a proof's replay key until `expires_ms`. True if it was fresh; false if the
    /// key is already recorded and unexpired (a replay).
    async fn dpop_seen(&self, key: &[u8], expires_ms: i64, now_ms: i64) -> Result<bool>;
    /// Deletes expired replay keys; returns how many.
    async fn purge_dpop(&self, now_ms: i64) -> Result<u64>;
}
