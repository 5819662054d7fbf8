//! The admin API's wire types: one struct per request body, query string and response,
//! shared by the server's handlers and the `keygate` CLI.
//!
//! They are plain serde types, so an OpenAPI description can be derived from them. The
//! JSON they make is the API's contract: a field's name, whether it is present when
//! empty, and whether it is a number or a string do not change without a new API version.
//!
//! Request bodies and query strings refuse unknown fields; responses accept them, so an
//! older CLI keeps working against a newer server. Values that are secret (a secret's
//! value, a client secret, an otpauth URI, a password) are [`SecretString`]s in both
//! directions: they are exposed only while being written to or read from the wire.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// Writes a secret on the wire (the one place the API exposes it).
fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_opt<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(v) => s.serialize_str(v.expose_secret()),
        None => s.serialize_none(),
    }
}

/// The body of every refusal: `{"error": code, "message": text}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// A moment as milliseconds since the Unix epoch (UTC). On the wire a plain number, as
/// every `…_ms` timestamp of the API has always been; in code it cannot be mixed up with
/// a duration, a count or a version.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[schema(value_type = i64, example = 1_767_225_600_000_i64)]
#[serde(transparent)]
pub struct UnixMs(pub i64);

impl UnixMs {
    pub fn as_i64(self) -> i64 {
        self.0
    }
}

impl From<i64> for UnixMs {
    fn from(ms: i64) -> Self {
        Self(ms)
    }
}

impl From<UnixMs> for i64 {
    fn from(ms: UnixMs) -> Self {
        ms.0
    }
}

impl std::fmt::Display for UnixMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

// --- secrets: /admin/v1/secrets… ---

/// A secret's metadata, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretInfo {
    pub name: String,
    /// 0 before the first version is written.
    pub current_version: i64,
    pub max_versions: Option<i64>,
    pub created_ms: UnixMs,
    pub updated_ms: UnixMs,
    pub deleted: bool,
    pub deleted_ms: Option<UnixMs>,
}

/// `GET /admin/v1/secrets`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// One version of a secret, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub version: i64,
    pub created_ms: UnixMs,
    pub destroyed: bool,
    pub destroyed_ms: Option<UnixMs>,
}

/// `GET /admin/v1/secrets/{name}/versions`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretHistory {
    pub secret: SecretInfo,
    pub versions: Vec<VersionInfo>,
}

/// `GET /admin/v1/secrets/{name}?version=N`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1)]
    pub version: Option<i64>,
}

/// The answer to `GET /admin/v1/secrets/{name}`: a value (sent with `Cache-Control:
/// no-store`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretValue {
    pub name: String,
    pub version: i64,
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub value: SecretString,
}

/// `PUT /admin/v1/secrets/{name}`: writes a new version.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String, min_length = 1, example = "example-secret-value")]
    pub value: SecretString,
    /// Check-and-set: only write if the current version is this (0: only if new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_806_i64)]
    pub cas: Option<i64>,
}

/// The answer to `PUT /admin/v1/secrets/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretWritten {
    pub name: String,
    pub version: i64,
}

/// `PATCH /admin/v1/secrets/{name}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureSecret {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000, example = 10)]
    pub max_versions: Option<i64>,
}

/// The answer to `PATCH /admin/v1/secrets/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretConfigured {
    pub name: String,
    pub max_versions: Option<i64>,
}

/// The answer to `DELETE /admin/v1/secrets/{name}` and `POST …/undelete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretDeleted {
    pub name: String,
    pub deleted: bool,
}

/// `POST /admin/v1/secrets/{name}/rollback`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    #[schema(minimum = 1, example = 3)]
    pub to: i64,
}

/// The answer to a rollback: `version` is new and holds the value of `from_version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolledBack {
    pub name: String,
    pub version: i64,
    pub from_version: i64,
}

/// `POST /admin/v1/secrets/{name}/destroy`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Destroy {
    #[schema(minimum = 1, example = 2)]
    pub version: i64,
}

/// The answer to a destroy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionDestroyed {
    pub name: String,
    pub version: i64,
    pub destroyed: bool,
}

/// One entry of a fingerprint export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fingerprint {
    pub name: String,
    pub version: i64,
    pub length: usize,
    /// Lowercase hex of HMAC-SHA256(key, value).
    pub fingerprint: String,
}

/// `GET /admin/v1/secret-fingerprints`: the `keygate-fingerprints/v1` file (sent with
/// `Cache-Control: no-store`: the key makes the fingerprints checkable).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FingerprintExport {
    pub format: String,
    /// base64url (no padding) of the 32-byte HMAC key.
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub key: SecretString,
    pub secrets: Vec<Fingerprint>,
}

impl From<keygate_vault::FingerprintFile> for FingerprintExport {
    fn from(f: keygate_vault::FingerprintFile) -> Self {
        Self {
            format: f.format.to_owned(),
            key: SecretString::from(f.key),
            secrets: f
                .secrets
                .into_iter()
                .map(|s| Fingerprint {
                    name: s.name,
                    version: s.version,
                    length: s.length,
                    fingerprint: s.fingerprint,
                })
                .collect(),
        }
    }
}

// --- rotation: /admin/v1/secrets/{name}/schedule, …/rotate, /admin/v1/rotation ---

/// `PUT /admin/v1/secrets/{name}/schedule`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSchedule {
    /// A duration such as `30d` or `12h`.
    #[schema(example = "30d")]
    pub rotate_every: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    /// A `[rotation.hooks.NAME]` entry of the configuration.
    #[schema(example = "openai-admin-api")]
    pub hook: String,
}

/// A secret's rotation schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    pub secret: String,
    /// Human form of `rotate_every_ms`, e.g. `30days`.
    pub rotate_every: String,
    pub overlap: String,
    pub rotate_every_ms: i64,
    pub overlap_ms: i64,
    pub hook: String,
    pub last_rotated_ms: Option<UnixMs>,
    pub next_due_ms: UnixMs,
    pub previous_version: Option<i64>,
    pub overlap_ends_ms: Option<UnixMs>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<UnixMs>,
    pub overdue: bool,
}

impl From<&keygate_store::RotationSchedule> for Schedule {
    fn from(s: &keygate_store::RotationSchedule) -> Self {
        let human = |ms: i64| {
            humantime::format_duration(std::time::Duration::from_millis(
                u64::try_from(ms).unwrap_or(0),
            ))
            .to_string()
        };
        Self {
            secret: s.secret.clone(),
            rotate_every: human(s.every_ms),
            overlap: human(s.overlap_ms),
            rotate_every_ms: s.every_ms,
            overlap_ms: s.overlap_ms,
            hook: s.hook.clone(),
            last_rotated_ms: s.last_rotated_ms.map(UnixMs),
            next_due_ms: UnixMs(s.next_due_ms),
            previous_version: s.previous_version,
            overlap_ends_ms: s.overlap_ends_ms.map(UnixMs),
            last_error: s.last_error.clone(),
            last_error_ms: s.last_error_ms.map(UnixMs),
            overdue: s.overdue_notified_ms.is_some(),
        }
    }
}

/// The answer to `DELETE /admin/v1/secrets/{name}/schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleCleared {
    pub secret: String,
    pub scheduled: bool,
}

/// The answer to `POST /admin/v1/secrets/{name}/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rotated {
    pub secret: String,
    pub version: i64,
}

/// `GET /admin/v1/rotation`: every schedule, and the configured hooks' names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RotationList {
    pub schedules: Vec<Schedule>,
    pub hooks: Vec<String>,
}

// --- webhooks: /admin/v1/webhooks/dead-letters ---

/// `GET /admin/v1/webhooks/dead-letters?limit=N` (also `/admin/v1/alerts`' `limit`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A webhook delivery that failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: String,
    pub webhook: String,
    pub event: String,
    pub attempts: i64,
    pub last_error: String,
    pub failed_ms: UnixMs,
}

impl From<&keygate_store::DeadLetter> for DeadLetter {
    fn from(d: &keygate_store::DeadLetter) -> Self {
        Self {
            id: d.id.clone(),
            webhook: d.webhook.clone(),
            event: d.event.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            failed_ms: UnixMs(d.failed_ms),
        }
    }
}

/// The answer to `GET /admin/v1/webhooks/dead-letters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetters {
    pub dead_letters: Vec<DeadLetter>,
    /// Events dropped because the delivery queue was full.
    pub dropped: u64,
}

// --- audit: /admin/v1/audit, /admin/v1/audit/verify ---

/// `GET /admin/v1/audit`: `after` a sequence number, or the last `tail` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 0)]
    pub after: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// With `tail=N`: the last N entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1000)]
    pub tail: Option<i64>,
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub ts_ms: UnixMs,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// The entry's details object, as hashed (free-form: each action has its own).
    pub details: serde_json::Value,
    /// Hex.
    pub prev_hash: String,
    /// Hex.
    pub hash: String,
}

impl From<&keygate_audit::AuditEntry> for AuditEntry {
    fn from(e: &keygate_audit::AuditEntry) -> Self {
        Self {
            seq: e.seq,
            ts_ms: UnixMs(e.ts_ms),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            outcome: e.outcome.as_str().to_owned(),
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        }
    }
}

/// The answer to `GET /admin/v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntries {
    pub entries: Vec<AuditEntry>,
}

/// `GET /admin/v1/audit/verify` (and `keygate audit verify --config`): an intact chain
/// has `ok` and the counts; a broken one has `ok: false`, `first_bad_seq` and `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<i64>,
    /// Hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints_checked: Option<usize>,
    /// Present (possibly `null`) when the chain is broken.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "present_or_null"
    )]
    #[schema(value_type = Option<i64>)]
    pub first_bad_seq: Option<Option<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

/// `Option<Option<T>>` where the outer `None` is an absent field and `Some(None)` is
/// `null`.
mod present_or_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

// --- routes: /admin/v1/routes ---

/// A live route as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteInfo {
    pub name: String,
    /// `scheme://authority/base-path`.
    pub upstream: String,
    /// The secret injected into its calls (its name, never its value).
    pub secret: String,
    pub allow: Vec<String>,
    pub scopes: Vec<String>,
    /// `config` (keygate.toml) or `admin` (applied through the admin API).
    pub source: String,
}

/// `GET /admin/v1/routes`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteList {
    pub routes: Vec<RouteInfo>,
}

/// `GET /admin/v1/routes/{name}`: the route as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteShown {
    pub name: String,
    pub source: String,
    pub route: keygate_proxy::route::RawRoute,
}

/// `PUT /admin/v1/routes`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRoutes {
    /// A TOML document with `[routes.NAME]` tables: it replaces every admin-applied route.
    pub toml: String,
}

/// The answer to `PUT /admin/v1/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RoutesApplied {
    pub applied: Vec<String>,
    /// Routes live after the change, from the file and the API.
    pub live: usize,
}

// --- usage: /admin/v1/usage ---

/// `GET /admin/v1/usage`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// A user name (or a client id for client-credentials tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// How far back, in minutes (default 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 44640)]
    pub minutes: Option<i64>,
}

/// Calls in one minute by one user to one route with one status class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageRow {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    pub user_id: String,
    pub route: String,
    /// `2xx`, `4xx`, `429` (apart from the other 4xx), `5xx`, …
    pub status_class: String,
    pub calls: i64,
    pub latency_ms_avg: i64,
    pub latency_ms_max: i64,
}

impl From<&keygate_store::UsageRow> for UsageRow {
    fn from(r: &keygate_store::UsageRow) -> Self {
        Self {
            minute: r.minute,
            user_id: r.user_id.clone(),
            route: r.route.clone(),
            status_class: r.status_class.clone(),
            calls: r.calls,
            latency_ms_avg: if r.calls > 0 {
                r.latency_ms_sum / r.calls
            } else {
                0
            },
            latency_ms_max: r.latency_ms_max,
        }
    }
}

/// The answer to `GET /admin/v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub usage: Vec<UsageRow>,
}

// --- users: /admin/v1/users ---

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// A user who signs in on keygate's login page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_ms: UnixMs,
    pub disabled: bool,
    /// Whether TOTP is enrolled.
    pub mfa: bool,
}

impl From<&keygate_store::UserRecord> for User {
    fn from(u: &keygate_store::UserRecord) -> Self {
        Self {
            id: u.id.clone(),
            name: u.name.clone(),
            scopes: words(&u.scopes),
            created_ms: UnixMs(u.created_ms),
            disabled: u.disabled_ms.is_some(),
            mfa: u.totp_sealed.is_some(),
        }
    }
}

/// `POST /admin/v1/users`; answered with a [`User`].
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    #[schema(pattern = r"^[A-Za-z0-9._@-]{1,64}$", example = "alice")]
    pub name: String,
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String, min_length = 8)]
    pub password: SecretString,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `GET /admin/v1/users`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserList {
    pub users: Vec<User>,
}

/// The answer to `POST /admin/v1/users/{name}/disable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserDisabled {
    pub name: String,
    pub disabled: bool,
    pub revoked_sessions: u64,
}

/// The answer to `POST /admin/v1/users/{name}/enable`; `changed` is false when the user
/// was not disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserEnabled {
    pub name: String,
    pub enabled: bool,
    pub changed: bool,
}

/// The answer to `POST /admin/v1/users/{name}/mfa` (sent with `Cache-Control: no-store`):
/// the TOTP seed as an `otpauth://` URI, shown once.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MfaEnrolled {
    pub name: String,
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub otpauth_uri: SecretString,
}

// --- clients: /admin/v1/clients ---

/// A registered OAuth client.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    /// `public` or `confidential`.
    #[serde(rename = "type")]
    pub kind: String,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub created_ms: UnixMs,
    /// How it authenticates at the token endpoint: `none` (public), `client_secret_basic`
    /// (or `_post`), `tls_client_auth` or `self_signed_tls_client_auth` (RFC 8705).
    #[serde(default)]
    pub token_endpoint_auth_method: String,
    /// With a certificate method: the subject DN or SAN its CA-issued certificate must
    /// carry, or the thumbprints of its self-signed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_identity: Option<crate::mtls::TlsClientIdentity>,
    /// The client's own DPoP policy, `optional` (Bearer allowed: a migration) or
    /// `required`; absent when it follows `tokens.dpop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop: Option<String>,
    /// The app's name on the login page (else `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The app's privacy notice, linked from the login page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_url: Option<String>,
    /// The login page's line on how long a sign-in lasts (else keygate's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_note: Option<String>,
    /// A confidential client's secret: only in the answer to its registration (sent with
    /// `Cache-Control: no-store`), never again.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<SecretString>,
}

impl From<&keygate_store::ClientRecord> for Client {
    fn from(c: &keygate_store::ClientRecord) -> Self {
        Self {
            client_id: c.id.clone(),
            name: c.name.clone(),
            kind: c.kind.clone(),
            redirect_uris: c.redirect_uris.clone(),
            scopes: words(&c.scopes),
            created_ms: UnixMs(c.created_ms),
            token_endpoint_auth_method: match (c.auth_method.as_deref(), c.kind.as_str()) {
                (Some(m), _) => m.to_owned(),
                (None, "public") => "none".to_owned(),
                (None, _) => "client_secret_basic".to_owned(),
            },
            tls_identity: c
                .tls_identity
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok()),
            dpop: c.dpop.clone(),
            display_name: c.display_name.clone(),
            privacy_url: c.privacy_url.clone(),
            session_note: c.session_note.clone(),
            client_secret: None,
        }
    }
}

/// `POST /admin/v1/clients`; answered with a [`Client`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddClient {
    #[schema(pattern = r"^[A-Za-z0-9._@-]{1,64}$", example = "acme-app")]
    pub name: String,
    /// `public` or `confidential`.
    #[serde(rename = "type")]
    #[schema(pattern = r"^(public|confidential)$", example = "public")]
    pub kind: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `client_secret_basic` (a confidential client's default: a secret is made),
    /// `tls_client_auth` (with one of the three `tls_client_auth_*` below) or
    /// `self_signed_tls_client_auth` (with `certificates`); RFC 8705 §2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_method: Option<String>,
    /// `tls_client_auth`: the subject DN the certificate must have (`CN=svc,O=Acme`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    /// `tls_client_auth`: a DNS name the certificate must list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_dns: Option<String>,
    /// `tls_client_auth`: a URI the certificate must list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_uri: Option<String>,
    /// `self_signed_tls_client_auth`: the client's certificates, PEM (only their SHA-256
    /// thumbprints are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<String>,
    /// `optional` lets the client get short-lived Bearer tokens without a DPoP proof (an
    /// app that signs in with AppAuth alone, during its move to DPoP); `required`
    /// insists on DPoP even where `tokens.dpop` is optional. Absent: `tokens.dpop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(optional|required)$")]
    pub dpop: Option<String>,
    /// The app's name as its users know it, on the login page (default: `name`); at most
    /// 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The app's privacy notice (`https://`), linked from the login page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_url: Option<String>,
    /// The login page's line on how long a sign-in lasts, at most 200 characters (default:
    /// keygate's own, from `tokens.refresh_idle` and `refresh_absolute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_note: Option<String>,
}

/// `POST /admin/v1/clients/{id}/dpop`: changes a client's own DPoP policy; answered
/// with the [`Client`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetClientDpop {
    /// `optional`, `required`, or `default` (follow `tokens.dpop` again).
    #[schema(pattern = r"^(optional|required|default)$", example = "required")]
    pub dpop: String,
}

/// `GET /admin/v1/clients`
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientList {
    pub clients: Vec<Client>,
}

/// The answer to `DELETE /admin/v1/clients/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientRemoved {
    pub client_id: String,
    pub removed: bool,
    pub revoked_sessions: u64,
}

// --- sessions: /admin/v1/sessions ---

/// `GET /admin/v1/sessions`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// A user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Revoked sessions too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// A session: one refresh-token family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub dpop_bound: bool,
    pub created_ms: UnixMs,
    pub last_used_ms: UnixMs,
    pub revoked: bool,
    pub revoke_reason: Option<String>,
}

impl From<&keygate_store::FamilyRecord> for Session {
    fn from(f: &keygate_store::FamilyRecord) -> Self {
        Self {
            id: f.id.clone(),
            user_id: f.user_id.clone(),
            client_id: f.client_id.clone(),
            scopes: words(&f.scopes),
            dpop_bound: f.jkt.is_some(),
            created_ms: UnixMs(f.created_ms),
            last_used_ms: UnixMs(f.last_used_ms),
            revoked: f.revoked_ms.is_some(),
            revoke_reason: f.revoke_reason.clone(),
        }
    }
}

/// The answer to `GET /admin/v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

/// The answer to `DELETE /admin/v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionRevoked {
    pub id: String,
    pub revoked: bool,
}

// --- signing keys: /admin/v1/keys ---

/// A token signing key (its public half is in the JWKS while published).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SigningKey {
    pub kid: String,
    pub alg: String,
    /// `next`, `current` or `retired`.
    pub state: String,
    pub published_ms: UnixMs,
    pub changed_ms: UnixMs,
}

impl From<&keygate_store::SigningKeyRecord> for SigningKey {
    fn from(k: &keygate_store::SigningKeyRecord) -> Self {
        Self {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            state: k.state.clone(),
            published_ms: UnixMs(k.created_ms),
            changed_ms: UnixMs(k.changed_ms),
        }
    }
}

/// `GET /admin/v1/keys`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<SigningKey>,
}

/// The answer to `POST /admin/v1/keys/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeysRotated {
    pub changed: bool,
    pub message: String,
}

// --- the monitor: /admin/v1/alerts, /admin/v1/throttles, /admin/v1/monitor ---

/// `GET /admin/v1/alerts`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// Acknowledged alerts too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
}

/// An alert as the API, the CLI and the webhooks show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: String,
    /// The de-duplication key: one incident, many alerts as its ladder climbs.
    pub incident: String,
    pub rule: String,
    pub kind: String,
    pub subject: String,
    pub action: String,
    pub step: i64,
    /// What the rule saw (free-form: each rule kind has its own fields).
    pub evidence: serde_json::Value,
    pub created_ms: UnixMs,
    pub acked_ms: Option<UnixMs>,
    pub acked_by: Option<String>,
}

impl From<&keygate_store::AlertRecord> for Alert {
    fn from(a: &keygate_store::AlertRecord) -> Self {
        Self {
            id: a.id.clone(),
            incident: a.incident.clone(),
            rule: a.rule.clone(),
            kind: a.kind.clone(),
            subject: a.subject.clone(),
            action: a.action.clone(),
            step: a.step,
            evidence: serde_json::from_str(&a.evidence).unwrap_or(serde_json::Value::Null),
            created_ms: UnixMs(a.created_ms),
            acked_ms: a.acked_ms.map(UnixMs),
            acked_by: a.acked_by.clone(),
        }
    }
}

/// A dead letter as `GET /admin/v1/alerts` lists it (named as the alert list names
/// things; [`DeadLetter`] is the webhook view of the same row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertDeadLetter {
    pub id: String,
    pub target: String,
    pub event: String,
    pub attempts: i64,
    pub last_error: String,
    pub created_ms: UnixMs,
}

impl From<&keygate_store::DeadLetter> for AlertDeadLetter {
    fn from(d: &keygate_store::DeadLetter) -> Self {
        Self {
            id: d.id.clone(),
            target: d.webhook.clone(),
            event: d.event.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            created_ms: UnixMs(d.failed_ms),
        }
    }
}

/// The answer to `GET /admin/v1/alerts`: alerts, newest first, then webhook deliveries
/// that failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
    pub dead_letters: Vec<AlertDeadLetter>,
}

/// The answer to `POST /admin/v1/alerts/{id}/ack`; `changed` is false when it was
/// already acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertAcked {
    pub id: String,
    pub acked: bool,
    pub changed: bool,
}

/// A throttle in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Throttle {
    /// `user:ID`, `session:ID`, `client:ID` or `ip:PREFIX`.
    pub subject: String,
    pub per_minute: u32,
    pub until_ms: UnixMs,
    /// The monitor rule (or operator) that set it.
    pub reason: String,
}

/// `GET /admin/v1/throttles`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThrottleList {
    pub throttles: Vec<Throttle>,
}

/// The answer to `DELETE /admin/v1/throttles/{subject}`; `lifted` is false when there
/// was none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThrottleLifted {
    pub subject: String,
    pub lifted: bool,
}

/// `GET /admin/v1/monitor`: the monitor's state (defined by keygate-monitor).
pub type MonitorSnapshot = keygate_monitor::Snapshot;

// ---- machine identities: policies and machine credentials ----

/// `PUT /admin/v1/policies/{name}`: what a machine identity may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicy {
    /// Secret names and prefix globs (`deploy.*`; `*` alone: every secret).
    pub secrets: Vec<String>,
    /// Lifetime of the machine tokens it is given, in seconds (60..=3600; default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60, maximum = 3600, example = 900)]
    pub token_ttl_secs: Option<i64>,
    /// Whether versions other than the current one may be read (default false).
    #[serde(default)]
    pub any_version: bool,
}

/// A policy as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policy {
    pub name: String,
    pub secrets: Vec<String>,
    pub token_ttl_secs: i64,
    pub any_version: bool,
    pub created_ms: UnixMs,
    pub updated_ms: UnixMs,
}

/// The answer to `PUT /admin/v1/policies/{name}`, with what looked wrong but was kept
/// (a pattern that names no secret yet, a policy that grants nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyWritten {
    pub policy: Policy,
    pub created: bool,
    pub warnings: Vec<String>,
}

/// `GET /admin/v1/policies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyList {
    pub policies: Vec<Policy>,
}

/// `POST /admin/v1/machines`: a static machine credential for a server without OIDC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMachine {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "deploy-server")]
    pub name: String,
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "deploy")]
    pub policy: String,
}

/// A machine credential as the admin API shows it; the secret only in the answer that
/// creates or rotates it (sent with `Cache-Control: no-store`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Machine {
    pub name: String,
    pub client_id: String,
    pub policy: String,
    pub created_ms: UnixMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_ms: Option<UnixMs>,
    /// Until when the secret before the last rotation is still accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until_ms: Option<UnixMs>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl From<&keygate_store::MachineRecord> for Machine {
    fn from(m: &keygate_store::MachineRecord) -> Self {
        Self {
            name: m.name.clone(),
            client_id: m.id.clone(),
            policy: m.policy.clone(),
            created_ms: UnixMs(m.created_ms),
            rotated_ms: m.rotated_ms.map(UnixMs),
            previous_valid_until_ms: m.previous_until_ms.map(UnixMs),
            client_secret: None,
            warnings: Vec::new(),
        }
    }
}

/// `GET /admin/v1/machines`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineList {
    pub machines: Vec<Machine>,
}

/// `POST /admin/v1/machines/{name}/rotate`: a new secret; the old one keeps working for
/// `overlap_secs` (default 3600, at most 7 days; 0 ends it at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateMachine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 604800, example = 3600)]
    pub overlap_secs: Option<i64>,
}

/// A deleted policy or machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deleted {
    pub name: String,
}

// ---- the operator console's accounts: /admin/v1/console/admins ----

/// `POST /admin/v1/console/admins`: a console admin account (password and TOTP).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddConsoleAdmin {
    #[schema(pattern = r"^[A-Za-z0-9._@-]{1,64}$", example = "ops-alice")]
    pub name: String,
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String, min_length = 8)]
    pub password: SecretString,
    /// `admin` (default) or `read-only` (sees every page, changes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^(admin|read-only)$")]
    pub role: Option<String>,
}

/// A console admin account as listed (never its password or TOTP seed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsoleAdmin {
    pub id: String,
    pub name: String,
    /// `admin` or `read-only`.
    pub role: String,
    pub created_ms: UnixMs,
    pub disabled: bool,
}

impl From<&keygate_store::ConsoleAdminRecord> for ConsoleAdmin {
    fn from(a: &keygate_store::ConsoleAdminRecord) -> Self {
        Self {
            id: a.id.clone(),
            name: a.name.clone(),
            role: a.role.clone(),
            created_ms: UnixMs(a.created_ms),
            disabled: a.disabled_ms.is_some(),
        }
    }
}

/// The answer to `POST /admin/v1/console/admins` (sent with `Cache-Control: no-store`):
/// the account and its TOTP seed as an `otpauth://` URI, shown once.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsoleAdminCreated {
    pub admin: ConsoleAdmin,
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub otpauth_uri: SecretString,
}

/// The answer to `POST /admin/v1/console/admins/{name}/disable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsoleAdminDisabled {
    pub name: String,
    pub disabled: bool,
}

/// `GET /admin/v1/console/admins`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsoleAdminList {
    pub admins: Vec<ConsoleAdmin>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_numbers_and_an_absent_client_secret_is_absent() {
        let client = Client {
            client_id: "app-1a2b".into(),
            name: "app".into(),
            kind: "public".into(),
            redirect_uris: vec![],
            scopes: vec!["ai".into()],
            created_ms: UnixMs(1_700_000_000_000),
            token_endpoint_auth_method: "none".into(),
            tls_identity: None,
            dpop: None,
            display_name: None,
            privacy_url: None,
            session_note: None,
            client_secret: None,
        };
        let v = serde_json::to_value(&client).unwrap();
        assert_eq!(v["created_ms"], 1_700_000_000_000_i64);
        assert_eq!(v["type"], "public");
        assert!(v.get("client_secret").is_none(), "{v}");
    }

    #[test]
    fn a_broken_chain_keeps_a_null_first_bad_seq() {
        let broken = AuditVerification {
            ok: false,
            entries: None,
            head_seq: None,
            head_hash: None,
            checkpoints_checked: None,
            first_bad_seq: Some(None),
            error: Some("x".into()),
            warnings: vec![],
        };
        let v = serde_json::to_value(&broken).unwrap();
        assert!(
            v.get("first_bad_seq")
                .is_some_and(serde_json::Value::is_null),
            "{v}"
        );
        assert!(v.get("entries").is_none(), "{v}");
        let back: AuditVerification = serde_json::from_value(v).unwrap();
        assert_eq!(back, broken);
    }

    #[test]
    fn request_bodies_refuse_unknown_fields_and_put_omits_an_absent_cas() {
        assert!(serde_json::from_str::<Rollback>(r#"{"to":1,"extra":2}"#).is_err());
        let put = PutSecret {
            value: SecretString::from("v"),
            cas: None,
        };
        assert_eq!(serde_json::to_string(&put).unwrap(), r#"{"value":"v"}"#);
    }
}
