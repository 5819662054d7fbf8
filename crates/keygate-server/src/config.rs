//! Configuration: `keygate.toml`, then `KEYGATE_…` environment overrides, validated into
//! domain types before any port is bound. An error names the field and what is wrong.
//!
//! Environment overrides: `KEYGATE_<FIELD>` for a top-level field (`KEYGATE_PUBLIC_URL`),
//! `KEYGATE_<TABLE>__<FIELD>` inside a table (`KEYGATE_STORAGE__URL`,
//! `KEYGATE_VAULT__MAX_VERSIONS`). Values are read as TOML scalars when they parse as one
//! (numbers, booleans), as strings otherwise. Variables that are not configuration
//! (`KEYGATE_ADDR`, `KEYGATE_TOKEN`, `KEYGATE_LOG`, `KEYGATE_TEST_…`, and the master key
//! and HSM PIN variables the configuration names) are left alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keygate_vault::{
    EnvKeyProvider, FileKeyProvider, MasterKeyProvider, Pkcs11Config, Pkcs11KeyProvider,
    TokenSelector, VaultLimits,
};
use serde::Deserialize;

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("config error at `{field}`: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        message: one_line(&message.into()),
    }
}

/// Config errors are printed as one line (`keygate: config error at …`); some library
/// messages carry line breaks (or a trailing one).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Environment variables with the `KEYGATE_` prefix that are not configuration fields.
const NOT_CONFIG: &[&str] = &[
    "KEYGATE_ADDR",
    "KEYGATE_TOKEN",
    "KEYGATE_LOG",
    "KEYGATE_MASTER_KEY",
    // The HSM PIN's documented name: set while a configuration without it is read too
    // (`keygate vault rekey` from a file key into an HSM).
    "KEYGATE_HSM_PIN",
    "KEYGATE_CONFIG",
    // `keygate run`'s machine identity.
    "KEYGATE_CLIENT_ID",
    "KEYGATE_CLIENT_SECRET",
    "KEYGATE_ID_TOKEN",
    "KEYGATE_ID_TOKEN_FILE",
    "KEYGATE_AUDIENCE",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_public_url")]
    public_url: String,
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    master_key: RawMasterKey,
    #[serde(default)]
    vault: RawVault,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    routes: std::collections::BTreeMap<String, keygate_proxy::route::RawRoute>,
    /// `[rotation]`: the scheduler and its `[rotation.hooks.NAME]`.
    #[serde(default)]
    rotation: crate::rotation::RawRotation,
    #[serde(default)]
    monitor: RawMonitorSection,
    /// `[ci]`: OIDC issuers whose CI job tokens log in as machine identities.
    #[serde(default)]
    ci: RawCi,
    /// `[tls]`: HTTPS termination and whether plain HTTP may leave loopback.
    #[serde(default)]
    tls: RawTls,
    /// `[coordination]`: Redis shared by the replicas.
    #[serde(default)]
    coordination: RawCoordination,
    /// `[attestation]`: app attestation per client.
    #[serde(default)]
    attestation: crate::oauth::attestation::RawAttestation,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordination {
    redis: Option<String>,
    key_prefix: Option<String>,
    replicas: Option<u32>,
    required: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    /// rediss:// only: the CA (PEM) that signed Redis's certificate, when it is not one
    /// the system trusts.
    ca: Option<PathBuf>,
    /// rediss:// only: this replica's certificate and key (PEM) for Redis servers that
    /// require clients to present one (`tls-auth-clients yes`).
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

/// TLS to Redis (`rediss://`) beyond the system's trust store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// CA certificate(s), PEM; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, PEM, for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// `[coordination]`: what identical replicas share beyond the store, on Redis: rate
/// limits, the DPoP replay cache, and the announcement of every security-relevant change.
#[derive(Clone)]
pub struct CoordinationSettings {
    /// `redis://` or `rediss://` (TLS) URL; may carry a password, so never printed.
    pub redis_url: secrecy::SecretString,
    /// With `rediss://`: the CA and client certificate, when set.
    pub tls: RedisTls,
    /// Prefix of every key and channel (several deployments may share one Redis).
    pub key_prefix: String,
    /// How many replicas share the limits: while Redis is down each replica allows this
    /// share of a limit (limit ÷ replicas), never more.
    pub replicas: u32,
    /// Refuse to start when Redis cannot be reached (else start degraded).
    pub required: bool,
    /// The longest wait for one Redis answer before it counts as down.
    pub timeout: Duration,
}

impl std::fmt::Debug for CoordinationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinationSettings")
            .field("redis_url", &"(redacted)")
            .field("tls", &self.tls)
            .field("key_prefix", &self.key_prefix)
            .field("replicas", &self.replicas)
            .field("required", &self.required)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RawCoordination {
    fn validate(self, base: &Path) -> Result<Option<CoordinationSettings>, ConfigError> {
        let Some(url) = self.redis else {
            if self.key_prefix.is_some()
                || self.replicas.is_some()
                || self.required.is_some()
                || self.ca.is_some()
                || self.client_cert.is_some()
                || self.client_key.is_some()
            {
                return Err(err(
                    "coordination.redis",
                    "set `redis` (redis://host:6379) for the other coordination settings to mean anything",
                ));
            }
            return Ok(None);
        };
        // Parse without echoing the URL: it may hold a password.
        let parsed = url::Url::parse(&url).map_err(|e| {
            err(
                "coordination.redis",
                format!("not a URL like redis://host:6379/0 ({e})"),
            )
        })?;
        if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host_str().is_none() {
            return Err(err(
                "coordination.redis",
                "must be redis://[user:password@]host:port[/db], or rediss:// for TLS",
            ));
        }
        let tls_wanted = parsed.scheme() == "rediss";
        if !tls_wanted
            && (self.ca.is_some() || self.client_cert.is_some() || self.client_key.is_some())
        {
            return Err(err(
                "coordination.ca",
                "ca, client_cert and client_key are for TLS: use a rediss:// URL",
            ));
        }
        let client = match (self.client_cert, self.client_key) {
            (Some(c), Some(k)) => Some((resolve(base, &c), resolve(base, &k))),
            (None, None) => None,
            _ => {
                return Err(err(
                    "coordination.client_cert",
                    "client_cert and client_key go together",
                ));
            }
        };
        let tls = RedisTls {
            ca: self.ca.map(|c| resolve(base, &c)),
            client,
        };
        let key_prefix = self.key_prefix.unwrap_or_else(|| "keygate".to_owned());
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || !key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            return Err(err(
                "coordination.key_prefix",
                "1 to 64 letters, digits, '-', '_', '.' or ':'",
            ));
        }
        let replicas = self.replicas.unwrap_or(1);
        if !(1..=1000).contains(&replicas) {
            return Err(err("coordination.replicas", "must be between 1 and 1000"));
        }
        let timeout = self.timeout.unwrap_or(Duration::from_millis(250));
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&timeout) {
            return Err(err("coordination.timeout", "must be between 10ms and 10s"));
        }
        Ok(Some(CoordinationSettings {
            redis_url: secrecy::SecretString::from(url),
            tls,
            key_prefix,
            replicas,
            required: self.required.unwrap_or(true),
            timeout,
        }))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ocsp: Option<PathBuf>,
    #[serde(default)]
    sni: Vec<RawSni>,
    listen: Option<String>,
    #[serde(default)]
    allow_plain: bool,
    #[serde(default, with = "humantime_serde")]
    reload_interval: Option<Duration>,
    /// `[tls.pins]`: the pin set published at `/.well-known/keygate-pins`.
    pins: Option<RawPins>,
    /// `[tls.mtls]`: the listener where clients may present certificates (RFC 8705).
    mtls: Option<RawMtls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMtls {
    listen: String,
    public_url: Option<String>,
    client_ca: Option<PathBuf>,
}

/// `[tls.mtls]`: a listener that asks every client for a certificate (without requiring
/// one) and serves what `listen` serves, so confidential clients can authenticate with a
/// certificate and use certificate-bound tokens (RFC 8705). A listener of its own, as
/// RFC 8705 §5 suggests, so browsers on the login page are never asked for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsSettings {
    pub listen: SocketAddr,
    /// Its public URL, published as `mtls_endpoint_aliases` in the metadata; by default
    /// `https://` and the listen address.
    pub public_url: String,
    /// CAs (PEM) whose certificates `tls_client_auth` clients may present; without it only
    /// `self_signed_tls_client_auth` clients can authenticate.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPins {
    /// Backup keys (public or private key PEM, or certificates) kept offline.
    backup: Vec<PathBuf>,
    #[serde(default = "default_pins_max_age", with = "humantime_serde")]
    max_age: Duration,
    #[serde(default)]
    include_subdomains: bool,
}

fn default_pins_max_age() -> Duration {
    Duration::from_secs(60 * 24 * 3600)
}

/// `[tls.pins]`: publish a signed pin set for apps that update their pins over the air.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinsSettings {
    pub backup: Vec<PathBuf>,
    /// How long from now a published set is valid (its `exp`).
    pub max_age: Duration,
    pub include_subdomains: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSni {
    names: Vec<String>,
    cert: PathBuf,
    key: PathBuf,
    ocsp: Option<PathBuf>,
}

/// `[admin] listen`: the admin API on a listener of its own, over TLS with the `[tls]`
/// certificate when there is one, requiring client certificates from `client_ca` if set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminListener {
    pub listen: SocketAddr,
    pub client_ca: Option<PathBuf>,
}

/// A certificate chain (leaf first), its private key and an optional OCSP response to
/// staple, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ocsp: Option<PathBuf>,
}

/// `[tls]` with certificates: keygate terminates TLS itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Served when the client names no host, or one no `[[tls.sni]]` entry has.
    pub default: CertFiles,
    /// Certificates chosen by the server name the client asks for (lower case).
    pub sni: Vec<(Vec<String>, CertFiles)>,
    /// A separate HTTPS listener; `None`: `listen` itself speaks HTTPS.
    pub listen: Option<SocketAddr>,
    /// How often the files are checked for changes (they are also reloaded on SIGHUP).
    pub reload_interval: Duration,
    /// The pin set to publish, if any.
    pub pins: Option<PinsSettings>,
    /// The listener for clients with certificates (RFC 8705), if any.
    pub mtls: Option<MtlsSettings>,
}

impl RawTls {
    /// The TLS settings (if any certificate is configured) and `allow_plain`.
    fn validate(self, base: &Path) -> Result<(Option<TlsSettings>, bool), ConfigError> {
        let files = |cert: PathBuf, key: PathBuf, ocsp: Option<PathBuf>| CertFiles {
            cert: resolve(base, &cert),
            key: resolve(base, &key),
            ocsp: ocsp.map(|o| resolve(base, &o)),
        };
        let default = match (self.cert, self.key) {
            (Some(c), Some(k)) => files(c, k, self.ocsp),
            (None, None) => {
                if !self.sni.is_empty()
                    || self.listen.is_some()
                    || self.ocsp.is_some()
                    || self.pins.is_some()
                    || self.mtls.is_some()
                {
                    return Err(err(
                        "tls.cert",
                        "set `cert` and `key` (the default certificate) to serve HTTPS",
                    ));
                }
                return Ok((None, self.allow_plain));
            }
            (Some(_), None) => return Err(err("tls.key", "`cert` is set but `key` is not")),
            (None, Some(_)) => return Err(err("tls.cert", "`key` is set but `cert` is not")),
        };
        let mut sni = Vec::with_capacity(self.sni.len());
        for (i, raw) in self.sni.into_iter().enumerate() {
            if raw.names.is_empty() {
                return Err(err(
                    &format!("tls.sni[{i}].names"),
                    "list at least one host name",
                ));
            }
            let mut names = Vec::with_capacity(raw.names.len());
            for n in &raw.names {
                let ok = (1..=253).contains(&n.len())
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*'));
                if !ok {
                    return Err(err(
                        &format!("tls.sni[{i}].names"),
                        format!("`{n}` is not a host name"),
                    ));
                }
                names.push(n.to_ascii_lowercase());
            }
            sni.push((names, files(raw.cert, raw.key, raw.ocsp)));
        }
        let listen = self
            .listen
            .map(|l| {
                l.parse::<SocketAddr>().map_err(|e| {
                    err(
                        "tls.listen",
                        format!("not an address like 0.0.0.0:8443 ({e})"),
                    )
                })
            })
            .transpose()?;
        let reload_interval = self.reload_interval.unwrap_or(Duration::from_secs(5));
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&reload_interval) {
            return Err(err("tls.reload_interval", "must be between 100ms and 1h"));
        }
        let pins = match self.pins {
            None => None,
            Some(p) => {
                if p.backup.is_empty() {
                    return Err(err(
                        "tls.pins.backup",
                        "list at least one backup key kept offline (keygate pins keygen): a set without one locks apps out at the next key change",
                    ));
                }
                let days = p.max_age.as_secs() / 86_400;
                if !(1..=365).contains(&days) {
                    return Err(err("tls.pins.max_age", "must be between 1d and 365d"));
                }
                Some(PinsSettings {
                    backup: p.backup.iter().map(|b| resolve(base, b)).collect(),
                    max_age: p.max_age,
                    include_subdomains: p.include_subdomains,
                })
            }
        };
        let mtls = match self.mtls {
            None => None,
            Some(m) => {
                let listen = m.listen.parse::<SocketAddr>().map_err(|e| {
                    err(
                        "tls.mtls.listen",
                        format!("not an address like 0.0.0.0:8444 ({e})"),
                    )
                })?;
                let public_url = match m.public_url {
                    Some(u) => {
                        let parsed = url::Url::parse(&u)
                            .map_err(|e| err("tls.mtls.public_url", format!("not a URL ({e})")))?;
                        if parsed.scheme() != "https"
                            || parsed.path() != "/"
                            || parsed.query().is_some()
                        {
                            return Err(err(
                                "tls.mtls.public_url",
                                "must be an https:// origin, like https://mtls.example.com:8444",
                            ));
                        }
                        u.trim_end_matches('/').to_owned()
                    }
                    None => format!("https://{listen}"),
                };
                Some(MtlsSettings {
                    listen,
                    public_url,
                    client_ca: m.client_ca.map(|c| resolve(base, &c)),
                })
            }
        };
        Ok((
            Some(TlsSettings {
                default,
                sni,
                listen,
                reload_interval,
                pins,
                mtls,
            }),
            self.allow_plain,
        ))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCi {
    #[serde(default)]
    issuers: Vec<RawCiIssuer>,
}

/// `[[ci.issuers]]`: the JWKS fields of `[[tokens.issuers]]` (no scopes: a CI identity
/// gets a policy, never user scopes) and the bindings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCiIssuer {
    name: String,
    issuer: String,
    audience: String,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    #[serde(default = "default_issuer_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "default_subject_claim")]
    subject_claim: String,
    #[serde(default = "default_jwks_max_age", with = "humantime_serde")]
    jwks_max_age: Duration,
    #[serde(default = "default_jwks_refresh_cooldown", with = "humantime_serde")]
    jwks_refresh_cooldown: Duration,
    #[serde(default)]
    bindings: Vec<RawBinding>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinding {
    policy: String,
    claims: std::collections::BTreeMap<String, String>,
}

/// A claim condition of a CI binding: the exact value, or a glob where `*` stands for
/// any run of characters (`refs/heads/release/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPattern(String);

impl ClaimPattern {
    #[cfg(test)]
    pub(crate) fn from_test(pattern: &str) -> Self {
        Self(pattern.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `value` fits the pattern (case-sensitive, whole value).
    pub fn matches(&self, value: &str) -> bool {
        let mut parts = self.0.split('*');
        let Some(first) = parts.next() else {
            return false;
        };
        let Some(mut rest) = value.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            // No `*`: exact.
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// One `[[ci.issuers.bindings]]`: a job whose token's claims all match gets `policy`.
#[derive(Debug, Clone)]
pub struct CiBinding {
    pub policy: String,
    /// Claim name and pattern; every one must match.
    pub claims: Vec<(String, ClaimPattern)>,
}

/// One `[[ci.issuers]]` entry.
#[derive(Debug, Clone)]
pub struct CiIssuerSettings {
    /// The issuer, its audience and keys (verified by the same code as token exchange).
    pub issuer: IssuerSettings,
    /// Tried in order; the first binding whose conditions all hold decides the policy.
    pub bindings: Vec<CiBinding>,
}

/// `[ci]`: CI/CD workload identities.
#[derive(Debug, Clone, Default)]
pub struct CiSettings {
    pub issuers: Vec<CiIssuerSettings>,
}

impl RawCi {
    fn validate(self, base: &Path) -> Result<CiSettings, ConfigError> {
        let mut issuers: Vec<CiIssuerSettings> = Vec::with_capacity(self.issuers.len());
        for (i, raw) in self.issuers.into_iter().enumerate() {
            let at = format!("ci.issuers[{i}]");
            let bindings_raw = raw.bindings;
            let issuer = RawIssuer {
                name: raw.name,
                issuer: raw.issuer,
                audience: raw.audience,
                jwks_file: raw.jwks_file,
                jwks_url: raw.jwks_url,
                algorithms: raw.algorithms,
                subject_claim: raw.subject_claim,
                scopes: Vec::new(),
                jwks_max_age: raw.jwks_max_age,
                jwks_refresh_cooldown: raw.jwks_refresh_cooldown,
            }
            .validate(&at, base)?;
            if issuers.iter().any(|o| o.issuer.name == issuer.name) {
                return Err(err(
                    &format!("{at}.name"),
                    format!("`{}` names another CI issuer too", issuer.name),
                ));
            }
            if issuers.iter().any(|o| o.issuer.issuer == issuer.issuer) {
                return Err(err(
                    &format!("{at}.issuer"),
                    "another entry trusts the same issuer (tokens are matched to an entry by `iss`)",
                ));
            }
            if bindings_raw.is_empty() {
                return Err(err(
                    &format!("{at}.bindings"),
                    "list at least one binding: claim conditions and the policy they get",
                ));
            }
            let mut bindings = Vec::with_capacity(bindings_raw.len());
            for (b, raw) in bindings_raw.into_iter().enumerate() {
                let field = |f: &str| format!("{at}.bindings[{b}].{f}");
                if !crate::ci::policy_name_ok(&raw.policy) {
                    return Err(err(
                        &field("policy"),
                        "must be 1-64 characters of letters, digits, '.', '-' and '_'",
                    ));
                }
                if raw.claims.is_empty() {
                    // Without a condition every job the issuer signs for (any repository
                    // on GitHub) would get the policy.
                    return Err(err(
                        &field("claims"),
                        "name at least one claim condition (e.g. repository = \"acme/app\")",
                    ));
                }
                let mut claims = Vec::with_capacity(raw.claims.len());
                for (name, pattern) in raw.claims {
                    if !plain_text(&name, 64) {
                        return Err(err(&field("claims"), "a claim name must be a plain word"));
                    }
                    if pattern.is_empty()
                        || pattern.len() > 1024
                        || pattern.chars().all(|c| c == '*')
                    {
                        return Err(err(
                            &field(&format!("claims.{name}")),
                            "must be a value or a glob with some fixed text (`*` alone would match anything)",
                        ));
                    }
                    claims.push((name, ClaimPattern(pattern)));
                }
                bindings.push(CiBinding {
                    policy: raw.policy,
                    claims,
                });
            }
            issuers.push(CiIssuerSettings { issuer, bindings });
        }
        Ok(CiSettings { issuers })
    }
}

/// `[monitor]`: the monitor's own schema (rules, baselines, GeoIP; keygate-monitor's
/// `RawMonitor`) and the alert sinks `[[monitor.webhooks]]`, which the server owns. Split
/// by hand rather than with `#[serde(flatten)]`, which would let a misspelt key through.
#[derive(Debug, Default)]
struct RawMonitorSection {
    webhooks: Vec<crate::webhooks::RawWebhook>,
    monitor: keygate_monitor::config::RawMonitor,
}

impl<'de> Deserialize<'de> for RawMonitorSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        // Errors keep their path: `webhooks[0].url`, `rules[1].factor`.
        let at = |e: serde_path_to_error::Error<toml::de::Error>| {
            D::Error::custom(format!("{}: {}", e.path(), e.inner().message()))
        };
        let webhooks = match table.remove("webhooks") {
            None => Vec::new(),
            Some(v) => serde_path_to_error::deserialize(v).map_err(|e| {
                D::Error::custom(format!("webhooks{}: {}", e.path(), e.inner().message()))
            })?,
        };
        let monitor = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(at)?;
        Ok(Self { webhooks, monitor })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    #[serde(default = "default_access_ttl", with = "humantime_serde")]
    access_ttl: Duration,
    #[serde(default = "default_dpop")]
    dpop: String,
    #[serde(default)]
    dpop_nonce: bool,
    #[serde(default = "default_mfa")]
    mfa: String,
    #[serde(default = "default_signing_alg")]
    signing_alg: String,
    #[serde(default = "default_refresh_idle", with = "humantime_serde")]
    refresh_idle: Duration,
    #[serde(default = "default_refresh_absolute", with = "humantime_serde")]
    refresh_absolute: Duration,
    #[serde(default = "default_refresh_grace", with = "humantime_serde")]
    refresh_grace: Duration,
    #[serde(default = "default_key_rotation", with = "humantime_serde")]
    key_rotation: Duration,
    /// `[[tokens.issuers]]`: identity providers whose ID tokens are exchanged (RFC 8693).
    #[serde(default)]
    issuers: Vec<RawIssuer>,
    #[serde(default = "default_login_ip_max_failures")]
    login_ip_max_failures: i64,
    #[serde(default = "default_login_ip_window", with = "humantime_serde")]
    login_ip_window: Duration,
}

fn default_login_ip_max_failures() -> i64 {
    100
}
fn default_login_ip_window() -> Duration {
    Duration::from_secs(15 * 60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "default_auth_failure_window", with = "humantime_serde")]
    auth_failure_window: Duration,
    #[serde(default = "default_auth_failure_limit")]
    auth_failure_limit: i64,
    /// A listener of its own for the admin API (then served nowhere else).
    listen: Option<String>,
    /// Client certificates the admin listener requires, from this CA (PEM).
    client_ca: Option<PathBuf>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            auth_failure_window: default_auth_failure_window(),
            auth_failure_limit: default_auth_failure_limit(),
            listen: None,
            client_ca: None,
        }
    }
}

fn default_auth_failure_window() -> Duration {
    crate::admin_guard::AdminAuthLimits::default().window
}
fn default_auth_failure_limit() -> i64 {
    crate::admin_guard::AdminAuthLimits::default().limit as i64
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    name: String,
    issuer: String,
    audience: String,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    #[serde(default = "default_issuer_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "default_subject_claim")]
    subject_claim: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default = "default_jwks_max_age", with = "humantime_serde")]
    jwks_max_age: Duration,
    #[serde(default = "default_jwks_refresh_cooldown", with = "humantime_serde")]
    jwks_refresh_cooldown: Duration,
}

fn default_issuer_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_jwks_max_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_jwks_refresh_cooldown() -> Duration {
    Duration::from_secs(60)
}

/// Where a trusted issuer's JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// A file, read at start and again (rate-limited) when a token names an unknown key.
    File(PathBuf),
    /// An `https` URL (plain `http` only to a loopback address), fetched and cached.
    Url(url::Url),
}

/// One `[[tokens.issuers]]` entry: an identity provider whose ID tokens keygate
/// exchanges for its own tokens (RFC 8693).
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// A short name for logs, audit entries and the names of the users it creates.
    pub name: String,
    /// The `iss` its tokens carry, compared exactly.
    pub issuer: String,
    /// The audience its tokens must name (e.g. the Firebase project id, the app's
    /// bundle id for Sign in with Apple, the Auth0 application's client id).
    pub audience: String,
    pub jwks: JwksLocation,
    /// Accepted signature algorithms (RS256, ES256, EdDSA).
    pub algorithms: Vec<keygate_auth::idtoken::ExternalAlg>,
    /// The claim that names the user.
    pub subject_claim: String,
    /// The most its users may be granted (further limited by the client's scopes).
    pub scopes: keygate_auth::ids::ScopeSet,
    /// Cached keys are fetched again after this long.
    pub jwks_max_age: Duration,
    /// The shortest time between two fetches of the JWKS (an unknown `kid` triggers one).
    pub jwks_refresh_cooldown: Duration,
}

impl Default for RawTokens {
    fn default() -> Self {
        Self {
            access_ttl: default_access_ttl(),
            dpop: default_dpop(),
            dpop_nonce: false,
            mfa: default_mfa(),
            signing_alg: default_signing_alg(),
            refresh_idle: default_refresh_idle(),
            refresh_absolute: default_refresh_absolute(),
            refresh_grace: default_refresh_grace(),
            key_rotation: default_key_rotation(),
            issuers: Vec::new(),
            login_ip_max_failures: default_login_ip_max_failures(),
            login_ip_window: default_login_ip_window(),
        }
    }
}

fn default_access_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_dpop() -> String {
    "required".into()
}
fn default_mfa() -> String {
    "optional".into()
}
fn default_signing_alg() -> String {
    "EdDSA".into()
}
fn default_refresh_idle() -> Duration {
    Duration::from_secs(14 * 24 * 3600)
}
fn default_refresh_absolute() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
fn default_refresh_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_key_rotation() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

/// Token-service settings (`[tokens]`).
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// Access-token lifetime in seconds (S07: minutes).
    pub access_ttl_secs: i64,
    /// DPoP required for public clients (`true`) or optional.
    pub dpop_required: bool,
    /// Require server nonces in DPoP proofs (RFC 9449 §8).
    pub dpop_nonce: bool,
    /// Every password sign-in needs a TOTP code (`tokens.mfa = "required"`): a user
    /// without one enrols on the login page, right after the password.
    pub mfa_required: bool,
    /// `EdDSA` or `ES256`.
    pub signing_alg: keygate_auth::jws::Algorithm,
    pub refresh_idle_secs: i64,
    pub refresh_absolute_secs: i64,
    pub refresh_grace_secs: i64,
    /// How often the signing key rotates on schedule.
    pub key_rotation_secs: i64,
    /// Identity providers trusted for token exchange (`[[tokens.issuers]]`).
    pub issuers: Vec<IssuerSettings>,
    /// Failed sign-ins from one address (all accounts together) per window before that
    /// address is throttled: high, since a carrier NAT puts thousands of phones behind one.
    pub login_ip_max_failures: u32,
    pub login_ip_window_secs: i64,
}

fn default_public_url() -> String {
    "http://127.0.0.1:8080".into()
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_data_dir() -> PathBuf {
    "./keygate-data".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMasterKey {
    file: Option<PathBuf>,
    env: Option<String>,
    pkcs11: Option<RawPkcs11>,
}

/// `[master_key] pkcs11 = { module, token_label | slot, key_label, pin_env }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    module: PathBuf,
    token_label: Option<String>,
    slot: Option<u64>,
    key_label: String,
    pin_env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    #[serde(default = "default_max_versions")]
    max_versions: i64,
    #[serde(default = "default_max_value_bytes")]
    max_value_bytes: i64,
}

impl Default for RawVault {
    fn default() -> Self {
        Self {
            max_versions: default_max_versions(),
            max_value_bytes: default_max_value_bytes(),
        }
    }
}

fn default_max_versions() -> i64 {
    10
}
fn default_max_value_bytes() -> i64 {
    64 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    checkpoint_interval: Duration,
    checkpoint_file: Option<PathBuf>,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            checkpoint_interval: default_checkpoint_interval(),
            checkpoint_file: None,
        }
    }
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: i64,
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    body_read_timeout: Duration,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    #[serde(default)]
    runtime: HttpRuntime,
    /// Load balancers whose `X-Forwarded-For` names the client: a list, or one
    /// comma-separated string (as an environment variable gives it).
    #[serde(default)]
    trusted_proxies: Option<toml::Value>,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body_bytes(),
            body_read_timeout: default_body_read_timeout(),
            request_timeout: default_request_timeout(),
            runtime: HttpRuntime::default(),
            trusted_proxies: None,
        }
    }
}

/// `http.trusted_proxies`: addresses (`10.0.0.5`) and prefixes (`10.0.0.0/8`).
fn trusted_proxies(value: Option<toml::Value>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let field = "http.trusted_proxies";
    let items: Vec<String> = match value {
        None => return Ok(Vec::new()),
        Some(toml::Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) => Ok(s),
                _ => Err(err(field, "list addresses or prefixes as strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err(field, "a list like [\"10.0.0.0/8\"]")),
    };
    items
        .iter()
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    err(
                        field,
                        format!("`{item}` is not an address or a prefix like 10.0.0.0/8"),
                    )
                })
        })
        .collect()
}

/// How HTTP connections are spread over the cores (`[http] runtime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpRuntime {
    /// One listener; connections are tasks on the process's work-stealing runtime.
    #[default]
    Shared,
    /// One single-threaded runtime per core, each on a thread of its own; accepted
    /// connections are dealt to them round-robin and stay there, so a connection's tasks
    /// never move between threads. Background work stays on the shared runtime.
    PerCore,
}

fn default_body_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_body_bytes() -> i64 {
    1024 * 1024
}

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    File(PathBuf),
    Env(String),
    /// A non-extractable AES-256 key in a PKCS#11 token (an HSM).
    Pkcs11(Pkcs11Config),
}

impl MasterKeySource {
    pub fn provider(&self) -> Box<dyn MasterKeyProvider> {
        self.provider_with(false)
    }

    /// The provider; with `allow_insecure`, a key file others may read is still used.
    pub fn provider_with(&self, allow_insecure: bool) -> Box<dyn MasterKeyProvider> {
        match self {
            MasterKeySource::File(path) => Box::new(FileKeyProvider {
                path: path.clone(),
                allow_insecure_permissions: allow_insecure,
            }),
            MasterKeySource::Env(var) => Box::new(EnvKeyProvider { var: var.clone() }),
            MasterKeySource::Pkcs11(c) => Box::new(Pkcs11KeyProvider::new(c.clone())),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub public_url: url::Url,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub storage_url: String,
    pub master_key: Option<MasterKeySource>,
    pub vault: VaultLimits,
    pub checkpoint_interval: Duration,
    pub checkpoint_file: PathBuf,
    pub log_format: LogFormat,
    pub log_level: String,
    pub max_body_bytes: usize,
    /// Non-proxy endpoints: the whole request body must arrive within this time. Proxied
    /// calls: the longest wait for the next piece of the body.
    pub body_read_timeout: Duration,
    /// Non-proxy endpoints: the longest time from the request head to the response head.
    /// Proxied calls are exempt (their responses stream, e.g. server-sent events).
    pub request_timeout: Duration,
    /// How connections are spread over the cores (`[http] runtime`).
    pub http_runtime: HttpRuntime,
    /// Load balancers whose `X-Forwarded-For` names the client (`[http] trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub tokens: TokenSettings,
    /// Start with a master key file that others may read (`keygate serve
    /// --allow-insecure-key-permissions`; never from the file).
    pub allow_insecure_key_permissions: bool,
    /// Failed admin authentication per source (`[admin]`).
    pub admin_auth: crate::admin_guard::AdminAuthLimits,
    /// The admin API's own listener (`[admin] listen`), if any.
    pub admin_listener: Option<AdminListener>,
    /// The routes of the `[routes.*]` tables, validated (and as written).
    pub routes: keygate_proxy::RouteTable,
    pub routes_raw: std::collections::BTreeMap<String, keygate_proxy::route::RawRoute>,
    /// `[monitor]`: rules, baselines, GeoIP.
    pub monitor: keygate_monitor::config::MonitorConfig,
    /// Secret rotation (`[rotation]`).
    pub rotation: crate::rotation::RotationConfig,
    /// Webhooks (`[[monitor.webhooks]]`).
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// CI/CD workload identities (`[ci]`).
    pub ci: CiSettings,
    /// HTTPS termination (`[tls]` with certificates).
    pub tls: Option<TlsSettings>,
    /// Redis shared by the replicas (`[coordination]`).
    pub coordination: Option<CoordinationSettings>,
    /// App attestation per client (`[attestation]`).
    pub attestation: crate::oauth::attestation::AttestationSettings,
}

impl Config {
    /// Reads `path`, applies the process environment and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("(file)", format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base, std::env::vars())
    }

    /// Parses TOML text, overlays `env` and validates. Relative paths are taken relative
    /// to `base` (the configuration file's directory).
    pub fn from_toml(
        text: &str,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // A value the parser refuses (an integer out of range) is reported at its
            // field when the field can be found.
            let field = e
                .span()
                .and_then(|span| field_at(text, span))
                .unwrap_or_else(|| "(file)".to_owned());
            err(
                &field,
                format!(
                    "not valid TOML{}: {}",
                    toml_error_position(text, &e),
                    e.message()
                ),
            )
        })?;
        // The variables holding the master key or the HSM PIN are secrets, not settings.
        let master = doc.get("master_key");
        let secret_vars: Vec<String> = [
            master.and_then(|m| m.get("env")),
            master
                .and_then(|m| m.get("pkcs11"))
                .and_then(|p| p.get("pin_env")),
        ]
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
        overlay_env(&mut doc, env, &secret_vars)?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
                let path = e.path().to_string();
                err(
                    if path == "." { "(file)" } else { &path },
                    e.into_inner().message(),
                )
            })?;
        raw.validate(base)
    }

    /// The default configuration `keygate init` writes, with a file master key.
    pub fn template(listen: SocketAddr) -> String {
        format!(
            r#"# keygate configuration. Every field can be overridden by an environment variable:
# KEYGATE_PUBLIC_URL, KEYGATE_LISTEN, KEYGATE_STORAGE__URL, KEYGATE_VAULT__MAX_VERSIONS, ...
public_url = "http://{listen}"   # external base URL: token issuer, redirects, DPoP htu
listen     = "{listen}"
data_dir   = "./keygate-data"      # SQLite file, audit checkpoints (relative to this file)

[storage]
url = "sqlite://./keygate-data/keygate.db"   # or "postgres://user@host/db"

[master_key]
file = "./master.key"                        # or env = "KEYGATE_MASTER_KEY", or an HSM:
# pkcs11 = {{ module = "/usr/lib/softhsm/libsofthsm2.so", token_label = "keygate", key_label = "keygate-master", pin_env = "KEYGATE_HSM_PIN" }}

[vault]
max_versions    = 10       # versions of a secret that keep their value
max_value_bytes = 65536    # largest secret value accepted

[audit]
checkpoint_interval = "60s"  # how often the chain head is signed into data_dir/audit-checkpoints.jsonl

[tokens]
access_ttl  = "5m"        # access-token lifetime
dpop        = "required"  # DPoP for public (mobile) clients: "required" or "optional"
                          # (one client in migration: `keygate client add … --dpop optional`)
signing_alg = "EdDSA"     # or "ES256"
mfa         = "optional"  # "required": every sign-in needs a TOTP code; a user without one
                          # sets it up on the login page, after the password
refresh_idle     = "14d"  # a session unused this long ends
refresh_absolute = "90d"  # a session ends this long after sign-in
key_rotation     = "30d"  # the signing key rotates on this schedule (and on `keygate keys rotate`)
# Sign-in guessing is throttled per account and per (account, address) after 5 failures;
# one address (a carrier NAT serves thousands of phones) only after this many failures
# of all its users together within the window:
login_ip_max_failures = 100
login_ip_window       = "15m"

# Token exchange (RFC 8693): apps that already sign users in with Firebase Auth, Sign in
# with Apple, Auth0 or any OIDC provider exchange its ID token at /oauth2/token
# (grant_type=urn:ietf:params:oauth:grant-type:token-exchange) for keygate tokens. A user
# is created on first sight (named "<name>:<subject>", no password). One entry per
# provider; these entries live in the file only (no environment overrides).
#
# [[tokens.issuers]]
# name          = "apple"                              # in user names, logs and audit entries
# issuer        = "https://appleid.apple.com"          # the exact `iss`
# audience      = "com.example.app"                    # the `aud` it must contain
# jwks_url      = "https://appleid.apple.com/auth/keys"  # https (http only to loopback); or jwks_file = "./apple-jwks.json"
# algorithms    = ["RS256", "ES256"]                   # allowed: RS256, ES256, EdDSA (never none or HS*)
# subject_claim = "sub"                                # the claim that names the user
# scopes        = ["ai"]                               # the most its users may get (also limited by the client's scopes)
# jwks_max_age  = "1h"                                 # cached keys are fetched again after this
# jwks_refresh_cooldown = "60s"                        # an unknown `kid` refetches at most this often
#
# Firebase Auth: issuer = "https://securetoken.google.com/PROJECT_ID", audience = "PROJECT_ID",
#   jwks_url = "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"
# Auth0: issuer = "https://TENANT.auth0.com/", audience = the application's client id,
#   jwks_url = "https://TENANT.auth0.com/.well-known/jwks.json"

# CI/CD jobs log in as machine identities with their OIDC ID token (POST /ci/v1/login,
# `keygate run`); a binding's claim conditions (exact, or `*` globs) pick the policy that
# says what the job may read (`keygate policy put`). `keygate ci example --provider github`
# prints a whole workflow.
#
# [[ci.issuers]]
# name       = "github"
# issuer     = "https://token.actions.githubusercontent.com"
# audience   = "https://keygate.example.com"   # the audience the job requests
# jwks_url   = "https://token.actions.githubusercontent.com/.well-known/jwks"
# algorithms = ["RS256"]
#
# [[ci.issuers.bindings]]                      # first match wins; every condition must hold
# policy = "deploy"
# claims = {{ repository = "acme/app", ref = "refs/heads/main", environment = "production" }}

[admin]
# Failed admin authentication per client address (IPv6 per /64): the first failure in a
# window is audited, later ones become one audit entry with their count; past the limit
# the address gets 429 with Retry-After.
auth_failure_window = "60s"
auth_failure_limit  = 10

# The monitor watches every proxied call and acts on abuse by itself: spikes against a
# user's own baseline, ceilings, impossible travel, a session's DPoP key changing, bursts
# of refused tokens. Actions (alert, throttle, revoke, disable, rotate) are audited and
# shown by `keygate alert list`. It is on, with its default rules, without this section;
# [[monitor.rules]] add to them.
# [monitor]
# enabled  = true
# interval = "2s"
# geoip_db = "./GeoLite2-City.mmdb"   # countries and locations: new-network and impossible-travel rules
#
# [[monitor.webhooks]]                # alerts and secret changes, signed with HMAC-SHA256
# url    = "https://hooks.example.com/keygate"
# events = ["alert", "secret.rotated", "secret.rotation_failed"]
# secret = "webhook-key"              # a vault secret holding the HMAC key
#
# Secret rotation on a schedule (`keygate secret schedule NAME --every 30d --hook NAME`):
# [rotation.hooks.openai-admin]
# command = ["/usr/local/bin/rotate-openai"]   # reads the current value on stdin, prints the new one

# Several replicas (storage.url on PostgreSQL): Redis shared by them for rate limits, the
# DPoP replay cache, change announcements and the monitor's counts; and the load balancer
# whose X-Forwarded-For names the client.
# [coordination]
# redis    = "rediss://:PASSWORD@redis.internal:6380/0"   # rediss:// is TLS; redis:// is not
# replicas = 3                      # while Redis is down each replica allows limit ÷ replicas
# ca          = "redis-ca.pem"      # when Redis's certificate is not from a CA the system trusts
# client_cert = "replica.crt"       # when Redis requires client certificates
# client_key  = "replica.key"
# [http]
# trusted_proxies = ["10.0.0.10"]

[log]
format = "json"   # or "text"
level  = "info"   # KEYGATE_LOG overrides this filter
"#
        )
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The dotted path (`vault.max_versions`, `tokens.issuers[0].jwks_max_age`) of the value
/// at `span`, found by putting a marker string in its place and parsing again.
fn field_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    const MARKER: &str = "\u{1}keygate-field-marker";
    // The span may cover only part of a scalar (a number, a date): take the whole token.
    let rest = text.get(span.start..)?;
    let end = if rest.starts_with(['"', '\'', '[', '{']) {
        span.end
    } else {
        let token = rest.find(['\n', '#', ',', ']', '}']).unwrap_or(rest.len());
        (span.start + rest.get(..token)?.trim_end().len()).max(span.end)
    };
    let patched = format!(
        "{}\"\\u0001keygate-field-marker\"{}",
        text.get(..span.start)?,
        text.get(end..)?
    );
    let doc: toml::Table = patched.parse().ok()?;
    fn find(v: &toml::Value, path: String) -> Option<String> {
        match v {
            toml::Value::String(s) if s == MARKER => Some(path),
            toml::Value::Table(t) => t.iter().find_map(|(k, v)| {
                find(
                    v,
                    if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    },
                )
            }),
            toml::Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, v)| find(v, format!("{path}[{i}]"))),
            _ => None,
        }
    }
    find(&toml::Value::Table(doc), String::new())
}

/// ` at line L column C` for a TOML parse error that has a position, else nothing.
pub(crate) fn toml_error_position(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let (line, column) = line_col(text, span.start);
            format!(" at line {line} column {column}")
        }
        None => String::new(),
    }
}

fn overlay_env(
    doc: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    secret_vars: &[String],
) -> Result<(), ConfigError> {
    for (key, value) in env {
        let Some(rest) = key.strip_prefix("KEYGATE_") else {
            continue;
        };
        if NOT_CONFIG.contains(&key.as_str())
            || key.starts_with("KEYGATE_TEST_")
            || secret_vars.contains(&key)
        {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(err(&key, "malformed variable name (empty segment)"));
        }
        let value = parse_scalar(&value);
        let mut table = &mut *doc;
        let (last, parents) = match path.split_last() {
            Some(x) => x,
            None => continue,
        };
        for p in parents {
            let entry = table
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => return Err(err(&key, format!("`{p}` is not a table"))),
            };
        }
        table.insert(last.clone(), value);
    }
    Ok(())
}

fn parse_scalar(s: &str) -> toml::Value {
    let doc = format!("v = {s}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_)),
            ) => v,
            _ => toml::Value::String(s.to_owned()),
        },
        Err(_) => toml::Value::String(s.to_owned()),
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

impl RawConfig {
    fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let public_url = url::Url::parse(&self.public_url)
            .map_err(|e| err("public_url", format!("not an absolute URL ({e})")))?;
        if !matches!(public_url.scheme(), "http" | "https") {
            return Err(err("public_url", "scheme must be http or https"));
        }
        if public_url.query().is_some() || public_url.fragment().is_some() {
            return Err(err("public_url", "must not have a query or fragment"));
        }
        if public_url.host().is_none() {
            return Err(err("public_url", "must name a host"));
        }
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            err(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:8080", self.listen),
            )
        })?;
        let data_dir = resolve(base, &self.data_dir);
        let storage_url = match self.storage.url {
            None => format!("sqlite://{}", data_dir.join("keygate.db").display()),
            Some(u) => {
                if let Some(path) = u.strip_prefix("sqlite://") {
                    let path = path.split('?').next().unwrap_or(path);
                    if path.is_empty() || path == ":memory:" {
                        return Err(err(
                            "storage.url",
                            "an in-memory SQLite database would lose every secret on restart",
                        ));
                    }
                    format!("sqlite://{}", resolve(base, Path::new(path)).display())
                } else if u.starts_with("postgres://") || u.starts_with("postgresql://") {
                    u
                } else {
                    return Err(err(
                        "storage.url",
                        "must start with sqlite:// or postgres://",
                    ));
                }
            }
        };
        // A name a shell can set: a letter or `_`, then letters, digits or `_`.
        let env_name = |v: &str| {
            !v.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let master_key = match (
            self.master_key.file,
            self.master_key.env,
            self.master_key.pkcs11,
        ) {
            (Some(f), None, None) => Some(MasterKeySource::File(resolve(base, &f))),
            (None, Some(v), None) => {
                if env_name(&v) {
                    return Err(err(
                        "master_key.env",
                        "must be an environment variable name (a letter or _, then letters, digits, _)",
                    ));
                }
                Some(MasterKeySource::Env(v))
            }
            (None, None, Some(p)) => {
                let token = match (p.token_label, p.slot) {
                    (Some(label), None) if !label.is_empty() && label.len() <= 32 => {
                        TokenSelector::Label(label)
                    }
                    (Some(_), None) => {
                        return Err(err(
                            "master_key.pkcs11.token_label",
                            "must be 1 to 32 characters (a PKCS#11 token label)",
                        ));
                    }
                    (None, Some(slot)) => TokenSelector::Slot(slot),
                    _ => {
                        return Err(err(
                            "master_key.pkcs11",
                            "set exactly one of `token_label` and `slot`",
                        ));
                    }
                };
                if p.key_label.is_empty() || p.key_label.len() > 64 {
                    return Err(err(
                        "master_key.pkcs11.key_label",
                        "must be 1 to 64 characters",
                    ));
                }
                if env_name(&p.pin_env) {
                    return Err(err(
                        "master_key.pkcs11.pin_env",
                        "must be an environment variable name (a letter or _, then letters, digits, _); the PIN itself never goes in the file",
                    ));
                }
                Some(MasterKeySource::Pkcs11(Pkcs11Config {
                    module: resolve(base, &p.module),
                    token,
                    key_label: p.key_label,
                    pin_env: p.pin_env,
                }))
            }
            // The server then starts sealed and says why.
            (None, None, None) => None,
            _ => {
                return Err(err(
                    "master_key",
                    "set exactly one of `file`, `env` and `pkcs11`",
                ));
            }
        };
        if !(1..=1000).contains(&self.vault.max_versions) {
            return Err(err("vault.max_versions", "must be between 1 and 1000"));
        }
        if !(1..=16 * 1024 * 1024).contains(&self.vault.max_value_bytes) {
            return Err(err(
                "vault.max_value_bytes",
                "must be between 1 and 16777216",
            ));
        }
        if self.audit.checkpoint_interval < Duration::from_secs(1) {
            return Err(err("audit.checkpoint_interval", "must be at least 1s"));
        }
        let log_format = match self.log.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(err(
                    "log.format",
                    format!("`{other}` is not one of json, text"),
                ));
            }
        };
        let log_level = self.log.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(err(
                "log.level",
                format!("`{log_level}` is not a valid filter"),
            ));
        }
        if !(1024..=1024 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            return Err(err(
                "http.max_body_bytes",
                "must be between 1024 and 1073741824",
            ));
        }
        let timeouts = Duration::from_millis(100)..=Duration::from_secs(3600);
        if !timeouts.contains(&self.http.body_read_timeout) {
            return Err(err(
                "http.body_read_timeout",
                "must be between 100ms and 1h",
            ));
        }
        if !timeouts.contains(&self.http.request_timeout) {
            return Err(err("http.request_timeout", "must be between 100ms and 1h"));
        }
        let tokens = self.tokens.validate(base)?;
        let admin_listen = self.admin.listen.clone();
        let admin_ca = self.admin.client_ca.clone();
        let admin_auth = self.admin.validate()?;
        let routes =
            keygate_proxy::RouteTable::from_raw(&self.routes).map_err(|e| ConfigError {
                field: e.field,
                message: one_line(&e.message),
            })?;
        // A rule may name only routes of this file: admin-applied routes come and go.
        let route_names = self.routes.keys().cloned().collect();
        let monitor = self
            .monitor
            .monitor
            .validate(base, &route_names)
            .map_err(|e| ConfigError {
                field: if e.field.starts_with("monitor") {
                    e.field
                } else {
                    format!("monitor.{}", e.field)
                },
                message: one_line(&e.message),
            })?;
        let rotation = self.rotation.validate()?;
        let webhooks = crate::webhooks::validate(&self.monitor.webhooks)?;
        let ci = self.ci.validate(base)?;
        let (tls, allow_plain) = self.tls.validate(base)?;
        let coordination = self.coordination.validate(base)?;
        let attestation = self
            .attestation
            .validate(base)
            .map_err(|(field, message)| {
                err(
                    format!("attestation.{field}").trim_end_matches('.'),
                    message,
                )
            })?;
        // Plain HTTP carries tokens and keys in clear: only on loopback, unless the operator
        // says a TLS proxy in front takes care of it.
        let plain = match &tls {
            Some(t) => t.listen.map(|_| listen),
            None => Some(listen),
        };
        if let Some(addr) = plain {
            if !addr.ip().is_loopback() && !allow_plain {
                return Err(err(
                    "listen",
                    format!(
                        "{addr} would serve plain HTTP beyond this machine: configure [tls] cert and key, listen on a loopback address, or set tls.allow_plain = true when a TLS proxy sits in front"
                    ),
                ));
            }
        }
        let admin_listener = match (admin_listen, admin_ca) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(err(
                    "admin.client_ca",
                    "needs admin.listen: client certificates are asked for on the admin API's own listener",
                ));
            }
            (Some(l), ca) => {
                let listen: SocketAddr = l.parse().map_err(|e| {
                    err(
                        "admin.listen",
                        format!("not an address like 127.0.0.1:9443 ({e})"),
                    )
                })?;
                if ca.is_some() && tls.is_none() {
                    return Err(err(
                        "admin.client_ca",
                        "client certificates need TLS: configure [tls] cert and key",
                    ));
                }
                if tls.is_none() && !listen.ip().is_loopback() && !allow_plain {
                    return Err(err(
                        "admin.listen",
                        "would serve the admin API in plain HTTP beyond this machine: configure [tls] or listen on loopback",
                    ));
                }
                Some(AdminListener {
                    listen,
                    client_ca: ca.map(|c| resolve(base, &c)),
                })
            }
        };
        if public_url.scheme() == "http" && !is_loopback(&public_url) && !allow_plain {
            return Err(err(
                "public_url",
                "must be https:// (tokens are bound to it), unless it is a loopback address or tls.allow_plain = true",
            ));
        }
        let max_value_bytes = self.vault.max_value_bytes as usize;
        // `data_dir` is resolved already: joining `base` again would double a relative
        // config directory (`--config gate/keygate.toml` → `gate/gate/…`).
        let checkpoint_file = match &self.audit.checkpoint_file {
            Some(p) => resolve(base, p),
            None => data_dir.join("audit-checkpoints.jsonl"),
        };
        Ok(Config {
            public_url,
            listen,
            data_dir,
            storage_url,
            master_key,
            vault: VaultLimits {
                max_value_bytes,
                max_versions: self.vault.max_versions,
            },
            checkpoint_interval: self.audit.checkpoint_interval,
            checkpoint_file,
            log_format,
            log_level,
            max_body_bytes: self.http.max_body_bytes as usize,
            body_read_timeout: self.http.body_read_timeout,
            request_timeout: self.http.request_timeout,
            http_runtime: self.http.runtime,
            trusted_proxies: trusted_proxies(self.http.trusted_proxies)?,
            tokens,
            allow_insecure_key_permissions: false,
            admin_auth,
            admin_listener,
            routes,
            routes_raw: self.routes,
            monitor,
            rotation,
            webhooks,
            ci,
            tls,
            coordination,
            attestation,
        })
    }
}

impl RawTokens {
    fn validate(self, base: &Path) -> Result<TokenSettings, ConfigError> {
        let secs = |d: Duration| d.as_secs() as i64;
        let access_ttl_secs = secs(self.access_ttl);
        if !(30..=3600).contains(&access_ttl_secs) {
            return Err(err(
                "tokens.access_ttl",
                "must be between 30s and 1h (access tokens live minutes)",
            ));
        }
        let dpop_required = match self.dpop.as_str() {
            "required" => true,
            "optional" => false,
            other => {
                return Err(err(
                    "tokens.dpop",
                    format!("`{other}` is not one of required, optional"),
                ));
            }
        };
        let mfa_required = match self.mfa.as_str() {
            "required" => true,
            "optional" => false,
            other => {
                return Err(err(
                    "tokens.mfa",
                    format!("`{other}` is not one of required, optional"),
                ));
            }
        };
        let signing_alg = match self.signing_alg.as_str() {
            "EdDSA" => keygate_auth::jws::Algorithm::EdDsa,
            "ES256" => keygate_auth::jws::Algorithm::Es256,
            other => {
                return Err(err(
                    "tokens.signing_alg",
                    format!("`{other}` is not one of EdDSA, ES256"),
                ));
            }
        };
        let refresh_grace_secs = secs(self.refresh_grace);
        if refresh_grace_secs > keygate_auth::refresh::MAX_GRACE_SECS {
            return Err(err("tokens.refresh_grace", "must be at most 30s"));
        }
        let refresh_idle_secs = secs(self.refresh_idle);
        let refresh_absolute_secs = secs(self.refresh_absolute);
        if refresh_idle_secs < 60 || refresh_absolute_secs < refresh_idle_secs {
            return Err(err(
                "tokens.refresh_absolute",
                "must be at least tokens.refresh_idle, which must be at least 1m",
            ));
        }
        let key_rotation_secs = secs(self.key_rotation);
        if key_rotation_secs < 2 * 3600 {
            return Err(err(
                "tokens.key_rotation",
                "must be at least 2h (a next key is published an hour before it signs)",
            ));
        }
        let login_ip_max_failures = u32::try_from(self.login_ip_max_failures)
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                err(
                    "tokens.login_ip_max_failures",
                    "must be between 1 and 1000000",
                )
            })?;
        let login_ip_window_secs = secs(self.login_ip_window);
        if !(1..=24 * 3600).contains(&login_ip_window_secs) {
            return Err(err("tokens.login_ip_window", "must be between 1s and 24h"));
        }
        let mut issuers: Vec<IssuerSettings> = Vec::with_capacity(self.issuers.len());
        for (i, raw) in self.issuers.into_iter().enumerate() {
            let issuer = raw.validate(&format!("tokens.issuers[{i}]"), base)?;
            if issuers.iter().any(|o| o.name == issuer.name) {
                return Err(err(
                    &format!("tokens.issuers[{i}].name"),
                    format!("`{}` names another issuer too", issuer.name),
                ));
            }
            if issuers.iter().any(|o| o.issuer == issuer.issuer) {
                return Err(err(
                    &format!("tokens.issuers[{i}].issuer"),
                    "another entry trusts the same issuer (tokens are matched to an entry by `iss`)",
                ));
            }
            issuers.push(issuer);
        }
        Ok(TokenSettings {
            access_ttl_secs,
            dpop_required,
            dpop_nonce: self.dpop_nonce,
            mfa_required,
            signing_alg,
            refresh_idle_secs,
            refresh_absolute_secs,
            refresh_grace_secs,
            key_rotation_secs,
            issuers,
            login_ip_max_failures,
            login_ip_window_secs,
        })
    }
}

impl RawAdmin {
    fn validate(self) -> Result<crate::admin_guard::AdminAuthLimits, ConfigError> {
        if !(1..=3600).contains(&self.auth_failure_window.as_secs()) {
            return Err(err(
                "admin.auth_failure_window",
                "must be between 1s and 1h",
            ));
        }
        let limit = u64::try_from(self.auth_failure_limit)
            .ok()
            .filter(|l| (1..=1_000_000).contains(l))
            .ok_or_else(|| err("admin.auth_failure_limit", "must be between 1 and 1000000"))?;
        Ok(crate::admin_guard::AdminAuthLimits {
            window: self.auth_failure_window,
            limit,
        })
    }
}

/// Whether a URL's host is a loopback address (plain `http` is allowed only there).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn plain_text(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

impl RawIssuer {
    fn validate(self, at: &str, base: &Path) -> Result<IssuerSettings, ConfigError> {
        use keygate_auth::idtoken::ExternalAlg;
        let field = |f: &str| format!("{at}.{f}");
        let name_ok = (1..=32).contains(&self.name.len())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !name_ok {
            return Err(err(
                &field("name"),
                "must be 1-32 characters of letters, digits, '-' and '_'",
            ));
        }
        if !plain_text(&self.issuer, 1024) {
            return Err(err(
                &field("issuer"),
                "must be the exact `iss` value, without spaces (e.g. https://appleid.apple.com)",
            ));
        }
        if !plain_text(&self.audience, 1024) {
            return Err(err(
                &field("audience"),
                "must be the exact `aud` value keygate's tokens from this issuer carry",
            ));
        }
        let jwks = match (self.jwks_file, self.jwks_url) {
            (Some(_), Some(_)) => {
                return Err(err(
                    at,
                    "set exactly one of `jwks_file` and `jwks_url`, not both",
                ));
            }
            (None, None) => {
                return Err(err(at, "set one of `jwks_file` and `jwks_url`"));
            }
            (Some(f), None) => JwksLocation::File(resolve(base, &f)),
            (None, Some(u)) => {
                let url = url::Url::parse(&u)
                    .map_err(|e| err(&field("jwks_url"), format!("not an absolute URL ({e})")))?;
                let ok = match url.scheme() {
                    "https" => url.host().is_some(),
                    "http" => is_loopback(&url),
                    _ => false,
                };
                if !ok {
                    return Err(err(
                        &field("jwks_url"),
                        "must be https (plain http only to a loopback address)",
                    ));
                }
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(err(&field("jwks_url"), "must not carry credentials"));
                }
                JwksLocation::Url(url)
            }
        };
        if self.algorithms.is_empty() {
            return Err(err(
                &field("algorithms"),
                "list at least one of RS256, ES256, EdDSA",
            ));
        }
        let mut algorithms = Vec::new();
        for a in &self.algorithms {
            let alg = ExternalAlg::from_name(a).ok_or_else(|| {
                let why = if a.trim().eq_ignore_ascii_case("none")
                    || a.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("hs"))
                {
                    " (unsigned and HMAC tokens are never accepted)"
                } else {
                    ""
                };
                err(
                    &field("algorithms"),
                    format!("`{a}` is not one of RS256, ES256, EdDSA{why}"),
                )
            })?;
            if !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if !plain_text(&self.subject_claim, 64) {
            return Err(err(&field("subject_claim"), "must be a claim name"));
        }
        let scopes = self
            .scopes
            .iter()
            .map(|s| keygate_auth::ids::Scope::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map(keygate_auth::ids::ScopeSet::from_scopes)
            .map_err(|_| {
                err(
                    &field("scopes"),
                    "invalid scope (RFC 6749 §3.3 characters, no spaces)",
                )
            })?;
        let max_age = self.jwks_max_age;
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600)).contains(&max_age) {
            return Err(err(&field("jwks_max_age"), "must be between 1m and 7d"));
        }
        let cooldown = self.jwks_refresh_cooldown;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&cooldown)
            || cooldown > max_age
        {
            return Err(err(
                &field("jwks_refresh_cooldown"),
                "must be between 1s and 1h, and at most jwks_max_age",
            ));
        }
        Ok(IssuerSettings {
            name: self.name,
            issuer: self.issuer,
            audience: self.audience,
            jwks,
            algorithms,
            subject_claim: self.subject_claim,
            scopes,
            jwks_max_age: max_age,
            jwks_refresh_cooldown: cooldown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            Path::new("/etc/keygate"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn http_runtime_defaults_to_shared_and_names_its_choices() {
        let template = Config::template("127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            load(&template, &[]).unwrap().http_runtime,
            HttpRuntime::Shared
        );
        let per_core = format!("{template}\n[http]\nruntime = \"per_core\"\n");
        assert_eq!(
            load(&per_core, &[]).unwrap().http_runtime,
            HttpRuntime::PerCore
        );
        let from_env = load(&template, &[("KEYGATE_HTTP__RUNTIME", "per_core")]).unwrap();
        assert_eq!(from_env.http_runtime, HttpRuntime::PerCore);
        let e = load(&format!("{template}\n[http]\nruntime = \"threads\"\n"), &[]).unwrap_err();
        assert_eq!(e.field, "http.runtime");
        assert!(
            e.message.contains("shared") && e.message.contains("per_core"),
            "{}",
            e.message
        );
    }

    #[test]
    fn mfa_is_optional_by_default_and_names_its_choices() {
        let template = Config::template("127.0.0.1:9000".parse().unwrap());
        assert!(!load(&template, &[]).unwrap().tokens.mfa_required);
        let required = load(&template, &[("KEYGATE_TOKENS__MFA", "required")]).unwrap();
        assert!(required.tokens.mfa_required);
        let e = load(&template, &[("KEYGATE_TOKENS__MFA", "sometimes")]).unwrap_err();
        assert_eq!(e.field, "tokens.mfa");
        assert!(e.message.contains("required, optional"), "{}", e.message);
    }

    #[test]
    fn template_is_valid_and_paths_are_relative_to_the_file() {
        let c = load(&Config::template("127.0.0.1:9000".parse().unwrap()), &[]).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, Path::new("/etc/keygate/./keygate-data"));
        assert_eq!(
            c.storage_url,
            "sqlite:///etc/keygate/./keygate-data/keygate.db"
        );
        assert_eq!(
            c.master_key,
            Some(MasterKeySource::File("/etc/keygate/./master.key".into()))
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.checkpoint_file,
            Path::new("/etc/keygate/./keygate-data/audit-checkpoints.jsonl")
        );
        // A relative config directory (`--config gate/keygate.toml`) is joined once.
        let c = Config::from_toml(
            &Config::template("127.0.0.1:9000".parse().unwrap()),
            Path::new("gate"),
            std::iter::empty(),
        )
        .unwrap();
        assert_eq!(
            c.checkpoint_file,
            Path::new("gate/./keygate-data/audit-checkpoints.jsonl")
        );
    }

    #[test]
    fn environment_overrides_fields_and_tables() {
        let c = load(
            "",
            &[
                ("KEYGATE_LISTEN", "0.0.0.0:7000"),
                ("KEYGATE_TLS__ALLOW_PLAIN", "true"),
                ("KEYGATE_VAULT__MAX_VERSIONS", "3"),
                ("KEYGATE_STORAGE__URL", "postgres://db/keygate"),
                ("KEYGATE_ADDR", "http://ignored"),
                ("KEYGATE_TEST_POSTGRES_URL", "ignored"),
                ("OTHER", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.vault.max_versions, 3);
        assert_eq!(c.storage_url, "postgres://db/keygate");
    }

    #[test]
    fn errors_name_the_field() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("listen = \"nope\"", &[], "listen"),
            ("public_url = \"ftp://x\"", &[], "public_url"),
            ("[storage]\nurl = \"mysql://x\"", &[], "storage.url"),
            ("[storage]\nurl = \"sqlite://:memory:\"", &[], "storage.url"),
            ("[master_key]\nfile = \"a\"\nenv = \"B\"", &[], "master_key"),
            (
                "[master_key]\nfile = \"a\"\npkcs11 = { module = \"m.so\", token_label = \"t\", key_label = \"k\", pin_env = \"P\" }",
                &[],
                "master_key",
            ),
            (
                "[master_key]\npkcs11 = { module = \"m.so\", key_label = \"k\", pin_env = \"P\" }",
                &[],
                "master_key.pkcs11",
            ),
            (
                "[master_key]\npkcs11 = { module = \"m.so\", token_label = \"t\", slot = 1, key_label = \"k\", pin_env = \"P\" }",
                &[],
                "master_key.pkcs11",
            ),
            (
                "[master_key]\npkcs11 = { module = \"m.so\", token_label = \"t\", key_label = \"k\", pin_env = \"1234\" }",
                &[],
                "master_key.pkcs11.pin_env",
            ),
            (
                "[master_key]\npkcs11 = { module = \"m.so\", token_label = \"t\", key_label = \"k\", pin_env = \"P\", pin = \"1234\" }",
                &[],
                "master_key.pkcs11.pin",
            ),
            ("[vault]\nmax_versions = 0", &[], "vault.max_versions"),
            ("[vault]\nmax_versions = \"ten\"", &[], "vault.max_versions"),
            (
                "[vault]\nmax_value_bytes = -1",
                &[],
                "vault.max_value_bytes",
            ),
            (
                "[audit]\ncheckpoint_interval = \"soon\"",
                &[],
                "audit.checkpoint_interval",
            ),
            ("[log]\nformat = \"xml\"", &[], "log.format"),
            ("colour = true", &[], "colour"),
            ("[vault]\nmax_verions = 3", &[], "vault.max_verions"),
            (
                "",
                &[("KEYGATE_VAULT__MAX_VERSIONS", "lots")],
                "vault.max_versions",
            ),
            ("", &[("KEYGATE_BOGUS", "1")], "bogus"),
            ("listen = [", &[], "(file)"),
            (
                "[monitor]\ngeoip_db = \"missing.mmdb\"",
                &[],
                "monitor.geoip_db",
            ),
            ("[monitor]\ninterval = \"5ms\"", &[], "monitor.interval"),
            (
                "[monitor]\n[[monitor.rules]]\nname = \"r\"\nkind = \"spike\"\nscope = \"route\"\nroutes = [\"nope\"]",
                &[],
                "monitor.rules[0].routes[0]",
            ),
            (
                "[monitor]\n[[monitor.rules]]\nname = \"r\"\nkind = \"spike\"\nactions = [\"rotate\"]",
                &[],
                "monitor.rules[0].actions[0]",
            ),
            ("[monitor]\nrulez = []", &[], "monitor"),
            ("[monitor]\n[[monitor.webhooks]]\nurl = 5", &[], "monitor"),
        ];
        for (text, env, field) in cases {
            let e = load(text, env).unwrap_err();
            assert!(
                e.field == *field || e.field.starts_with(field),
                "{text:?}: expected field {field}, got {e}"
            );
        }
    }

    #[test]
    fn monitor_section_errors_keep_their_path() {
        let e = load("[monitor]\nrulez = []", &[]).unwrap_err().to_string();
        assert!(e.contains("rulez"), "{e}");
        let e = load(
            "[monitor]\n[[monitor.rules]]\nname = \"r\"\nkind = \"spike\"\nfactor = \"big\"",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rules[0].factor"), "{e}");
        let e = load("[monitor]\n[[monitor.webhooks]]\nurll = \"https://x\"", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("webhooks[0]") && e.contains("urll"), "{e}");
    }

    #[test]
    fn config_messages_are_one_line_with_position_and_field() {
        // A TOML syntax error: its line and column.
        let e = load(
            "listen = \"127.0.0.1:1\"\n[vault]\nmax_versions = = 3\n",
            &[],
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 3 column"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        // An integer too large for TOML: reported at its field, with the position.
        let e = load("[vault]\nmax_versions = 99999999999999999999\n", &[]).unwrap_err();
        assert_eq!(e.field, "vault.max_versions", "{e}");
        assert!(e.to_string().contains("line 2 column 16"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
        let e = load(
            &format!("{ISSUER}jwks_max_age = 99999999999999999999\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, "tokens.issuers[0].jwks_max_age", "{e}");
        // Messages from the deserializer and validation stay on one line.
        for text in [
            "[vault]\nmax_versions = \"ten\"",
            "[vault]\nmax_verions = 3",
            "colour = true",
            "[audit]\ncheckpoint_interval = \"soon\"",
            "[http]\nbody_read_timeout = \"0s\"",
            "[routes.r]\nupstream = 1",
        ] {
            let e = load(text, &[]).unwrap_err().to_string();
            assert_eq!(e.trim_end().lines().count(), 1, "{text:?}: {e:?}");
            assert!(!e.contains('\n'), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn http_timeouts_default_and_are_bounded() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.body_read_timeout, Duration::from_secs(10));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        let c = load(
            "[http]\nbody_read_timeout = \"2s\"\nrequest_timeout = \"1m\"",
            &[],
        )
        .unwrap();
        assert_eq!(c.body_read_timeout, Duration::from_secs(2));
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        let e = load("[http]\nrequest_timeout = \"2h\"", &[]).unwrap_err();
        assert_eq!(e.field, "http.request_timeout");
    }

    const ISSUER: &str = r#"
[[tokens.issuers]]
name     = "apple"
issuer   = "https://appleid.apple.com"
audience = "com.example.app"
jwks_url = "https://appleid.apple.com/auth/keys"
scopes   = ["ai"]
"#;

    #[test]
    fn issuers_load_with_defaults_and_relative_files() {
        let file = "\n[[tokens.issuers]]\nname = \"local\"\nissuer = \"i\"\naudience = \"a\"\n\
                    jwks_file = \"jwks.json\"\nalgorithms = [\"EdDSA\", \"EdDSA\"]\n";
        let c = load(&format!("{ISSUER}{file}"), &[]).unwrap();
        let [apple, local] = c.tokens.issuers.as_slice() else {
            panic!("two issuers");
        };
        assert_eq!(apple.name, "apple");
        assert_eq!(
            apple.jwks,
            JwksLocation::Url("https://appleid.apple.com/auth/keys".parse().unwrap())
        );
        assert_eq!(
            apple.algorithms,
            [
                keygate_auth::idtoken::ExternalAlg::Rs256,
                keygate_auth::idtoken::ExternalAlg::Es256
            ]
        );
        assert_eq!(apple.subject_claim, "sub");
        assert_eq!(apple.scopes.to_string(), "ai");
        assert_eq!(apple.jwks_max_age, Duration::from_secs(3600));
        assert_eq!(apple.jwks_refresh_cooldown, Duration::from_secs(60));
        assert_eq!(
            local.jwks,
            JwksLocation::File("/etc/keygate/jwks.json".into())
        );
        assert_eq!(
            local.algorithms,
            [keygate_auth::idtoken::ExternalAlg::EdDsa]
        );
        // Loopback may use plain http.
        for url in [
            "http://127.0.0.1:9/jwks",
            "http://[::1]/k",
            "http://localhost/k",
        ] {
            let text = ISSUER.replace("https://appleid.apple.com/auth/keys", url);
            assert!(load(&text, &[]).is_ok(), "{url}");
        }
        // The template documents an entry and stays valid.
        assert!(Config::template("127.0.0.1:1".parse().unwrap()).contains("[[tokens.issuers]]"));
    }

    #[test]
    fn issuer_errors_name_the_field() {
        let swap = |from: &str, to: &str| ISSUER.replace(from, to);
        let cases: Vec<(String, &str, &str)> = vec![
            (
                swap("jwks_url", "jwks_file = \"k.json\"\njwks_url"),
                "tokens.issuers[0]",
                "not both",
            ),
            (
                swap("jwks_url = \"https://appleid.apple.com/auth/keys\"", ""),
                "tokens.issuers[0]",
                "one of",
            ),
            (
                swap(
                    "https://appleid.apple.com/auth/keys",
                    "http://keys.example.com/",
                ),
                "tokens.issuers[0].jwks_url",
                "https",
            ),
            (
                swap("https://appleid.apple.com/auth/keys", "ftp://127.0.0.1/"),
                "tokens.issuers[0].jwks_url",
                "https",
            ),
            (
                swap(
                    "https://appleid.apple.com/auth/keys",
                    "https://u:p@keys.example.com/",
                ),
                "tokens.issuers[0].jwks_url",
                "credentials",
            ),
            (
                swap("scopes", "algorithms = [\"RS512\"]\nscopes"),
                "tokens.issuers[0].algorithms",
                "RS512",
            ),
            (
                swap("scopes", "algorithms = [\"HS256\"]\nscopes"),
                "tokens.issuers[0].algorithms",
                "never",
            ),
            (
                swap("scopes", "algorithms = [\"none\"]\nscopes"),
                "tokens.issuers[0].algorithms",
                "never",
            ),
            (
                swap("scopes", "algorithms = []\nscopes"),
                "tokens.issuers[0].algorithms",
                "at least one",
            ),
            (
                swap("\"apple\"", "\"ap ple\""),
                "tokens.issuers[0].name",
                "letters",
            ),
            (
                swap("\"com.example.app\"", "\"\""),
                "tokens.issuers[0].audience",
                "aud",
            ),
            (
                swap("[\"ai\"]", "[\"a i\"]"),
                "tokens.issuers[0].scopes",
                "scope",
            ),
            (
                swap("scopes", "jwks_refresh_cooldown = \"2h\"\nscopes"),
                "tokens.issuers[0].jwks_refresh_cooldown",
                "1h",
            ),
            (
                swap("scopes", "colour = 1\nscopes"),
                "tokens.issuers[0].colour",
                "",
            ),
            (
                format!("{ISSUER}{ISSUER}"),
                "tokens.issuers[1].name",
                "another",
            ),
            (
                format!("{ISSUER}{}", swap("\"apple\"", "\"apple2\"")),
                "tokens.issuers[1].issuer",
                "same issuer",
            ),
        ];
        for (text, field, words) in cases {
            let e = load(&text, &[]).unwrap_err();
            assert!(
                e.field.starts_with(field) && e.message.contains(words),
                "expected {field} ({words}), got {e}"
            );
        }
    }

    #[test]
    fn master_key_env_variable_is_not_mistaken_for_config() {
        let c = load(
            "[master_key]\nenv = \"KEYGATE_MASTER_KEY\"",
            &[("KEYGATE_MASTER_KEY", "00")],
        )
        .unwrap();
        assert_eq!(
            c.master_key,
            Some(MasterKeySource::Env("KEYGATE_MASTER_KEY".into()))
        );
    }

    #[test]
    fn pkcs11_master_key_names_its_token_and_pin_variable() {
        let c = load(
            "[master_key]\npkcs11 = { module = \"/usr/lib/softhsm/libsofthsm2.so\", token_label = \"keygate\", key_label = \"master\", pin_env = \"KEYGATE_HSM_PIN\" }",
            // The PIN's variable is not mistaken for configuration either.
            &[("KEYGATE_HSM_PIN", "1234")],
        )
        .unwrap();
        assert_eq!(
            c.master_key,
            Some(MasterKeySource::Pkcs11(Pkcs11Config {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token: TokenSelector::Label("keygate".into()),
                key_label: "master".into(),
                pin_env: "KEYGATE_HSM_PIN".into(),
            }))
        );
        let c = load(
            "[master_key]\npkcs11 = { module = \"/m.so\", slot = 7, key_label = \"master\", pin_env = \"KEYGATE_VAULT_PIN\" }",
            // Whatever the PIN's variable is called, it is not read as configuration.
            &[("KEYGATE_VAULT_PIN", "1234")],
        )
        .unwrap();
        assert!(matches!(
            c.master_key,
            Some(MasterKeySource::Pkcs11(Pkcs11Config {
                token: TokenSelector::Slot(7),
                ..
            }))
        ));
    }

    #[test]
    fn ci_issuers_need_bindings_with_conditions_and_refuse_unsafe_algorithms() {
        let base = r#"
[[ci.issuers]]
name = "github"
issuer = "https://token.actions.githubusercontent.com"
audience = "https://keygate.example.com"
jwks_file = "gh.json"
"#;
        let ok = format!(
            "{base}\n[[ci.issuers.bindings]]\npolicy = \"deploy\"\nclaims = {{ repository = \"acme/app\", ref = \"refs/heads/*\" }}\n"
        );
        let c = load(&ok, &[]).unwrap();
        let issuer = &c.ci.issuers[0];
        assert_eq!(
            issuer.issuer.jwks,
            JwksLocation::File("/etc/keygate/gh.json".into())
        );
        assert_eq!(issuer.bindings[0].policy, "deploy");
        let claims: Vec<(&str, &str)> = issuer.bindings[0]
            .claims
            .iter()
            .map(|(k, p)| (k.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            claims,
            [("ref", "refs/heads/*"), ("repository", "acme/app")]
        );

        let e = load(base, &[]).unwrap_err();
        assert_eq!(e.field, "ci.issuers[0].bindings", "{e}");
        let e = load(
            &format!("{base}\n[[ci.issuers.bindings]]\npolicy = \"p\"\nclaims = {{}}\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, "ci.issuers[0].bindings[0].claims", "{e}");
        let e = load(
            &format!("{base}\n[[ci.issuers.bindings]]\npolicy = \"p\"\nclaims = {{ repository = \"*\" }}\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.field, "ci.issuers[0].bindings[0].claims.repository",
            "{e}"
        );
        let e = load(
            &format!(
                "{base}\n[[ci.issuers.bindings]]\npolicy = \"bad name\"\nclaims = {{ a = \"b\" }}\n"
            ),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, "ci.issuers[0].bindings[0].policy", "{e}");
        let hs = ok.replace(
            "jwks_file = \"gh.json\"",
            "jwks_file = \"gh.json\"\nalgorithms = [\"HS256\"]",
        );
        let e = load(&hs, &[]).unwrap_err();
        assert_eq!(e.field, "ci.issuers[0].algorithms", "{e}");
        assert!(e.message.contains("never accepted"), "{e}");
        let scoped = ok.replace(
            "jwks_file = \"gh.json\"",
            "jwks_file = \"gh.json\"\nscopes = [\"x\"]",
        );
        assert!(load(&scoped, &[]).is_err(), "a CI identity has no scopes");
    }

    #[test]
    fn plain_http_stays_on_loopback_unless_allowed_and_tls_needs_both_files() {
        let e = load("listen = \"0.0.0.0:8080\"", &[]).unwrap_err();
        assert_eq!(e.field, "listen", "{e}");
        assert!(e.message.contains("tls.allow_plain"), "{e}");
        let e = load("public_url = \"http://keygate.example.com\"", &[]).unwrap_err();
        assert_eq!(e.field, "public_url", "{e}");
        // Behind a TLS proxy, said so.
        let c = load(
            "listen = \"0.0.0.0:8080\"\npublic_url = \"https://keygate.example.com\"\n[tls]\nallow_plain = true\n",
            &[],
        )
        .unwrap();
        assert!(c.tls.is_none());
        // HTTPS on `listen` itself: a non-loopback address is fine.
        let c = load(
            "listen = \"0.0.0.0:8443\"\npublic_url = \"https://keygate.example.com\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
            &[],
        )
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.default.cert, Path::new("/etc/keygate/c.pem"));
        assert_eq!(tls.listen, None);
        // A separate HTTPS listener leaves `listen` plain: loopback only.
        let e = load(
            "listen = \"0.0.0.0:8080\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nlisten = \"0.0.0.0:8443\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, "listen", "{e}");
        let e = load("[tls]\ncert = \"c.pem\"\n", &[]).unwrap_err();
        assert_eq!(e.field, "tls.key", "{e}");
        let e = load("[tls]\nlisten = \"127.0.0.1:8443\"\n", &[]).unwrap_err();
        assert_eq!(e.field, "tls.cert", "{e}");
        let e = load(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[[tls.sni]]\nnames = [\"bad name\"]\ncert = \"a\"\nkey = \"b\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, "tls.sni[0].names", "{e}");
        let tls = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
        let e = load(&format!("{tls}[tls.pins]\nbackup = []\n"), &[]).unwrap_err();
        assert_eq!(e.field, "tls.pins.backup", "{e}");
        let e = load(
            &format!("{tls}[tls.pins]\nbackup = [\"b.pub\"]\nmax_age = \"400d\"\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, "tls.pins.max_age", "{e}");
        let c = load(&format!("{tls}[tls.pins]\nbackup = [\"b.pub\"]\n"), &[]).unwrap();
        let pins = c.tls.unwrap().pins.unwrap();
        assert_eq!(pins.backup, [Path::new("/etc/keygate/b.pub")]);
        assert_eq!(pins.max_age.as_secs(), 60 * 86_400);
        // [tls.mtls]: an address, an https origin, the CA file resolved against the config.
        let e = load(&format!("{tls}[tls.mtls]\nlisten = \"nope\"\n"), &[]).unwrap_err();
        assert_eq!(e.field, "tls.mtls.listen", "{e}");
        let e = load(
            &format!(
                "{tls}[tls.mtls]\nlisten = \"127.0.0.1:8444\"\npublic_url = \"http://mtls.example.com\"\n"
            ),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, "tls.mtls.public_url", "{e}");
        let c = load(
            &format!("{tls}[tls.mtls]\nlisten = \"127.0.0.1:8444\"\nclient_ca = \"clients.pem\"\n"),
            &[],
        )
        .unwrap();
        let mtls = c.tls.unwrap().mtls.unwrap();
        assert_eq!(mtls.public_url, "https://127.0.0.1:8444");
        assert_eq!(
            mtls.client_ca.unwrap(),
            Path::new("/etc/keygate/clients.pem")
        );
        let e = load("[tls.mtls]\nlisten = \"127.0.0.1:8444\"\n", &[]).unwrap_err();
        assert_eq!(e.field, "tls.cert", "{e}");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_prefixes_from_a_list_or_the_environment() {
        let c = load(
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.trusted_proxies,
            [
                "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "192.0.2.1/32".parse().unwrap()
            ]
        );
        let c = load(
            "",
            &[("KEYGATE_HTTP__TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8")],
        )
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        let e = load("[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", &[]).unwrap_err();
        assert_eq!(e.field, "http.trusted_proxies", "{e}");
        assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
        assert!(load("", &[]).unwrap().trusted_proxies.is_empty());
    }

    #[test]
    fn coordination_needs_a_redis_url_and_never_prints_it() {
        let c = load(
            "[coordination]\nredis = \"redis://:hunter2@10.0.0.9:6379/0\"\nreplicas = 3\n",
            &[],
        )
        .unwrap();
        let co = c.coordination.unwrap();
        assert_eq!(
            (co.replicas, co.required, co.key_prefix.as_str()),
            (3, true, "keygate")
        );
        assert!(!format!("{co:?}").contains("hunter2"));
        for (toml, field) in [
            ("[coordination]\nreplicas = 3\n", "coordination.redis"),
            (
                "[coordination]\nredis = \"http://x:6379\"\n",
                "coordination.redis",
            ),
            (
                "[coordination]\nredis = \"redis://x:6379\"\nca = \"ca.pem\"\n",
                "coordination.ca",
            ),
            (
                "[coordination]\nredis = \"rediss://x:6379\"\nclient_cert = \"c.pem\"\n",
                "coordination.client_cert",
            ),
            ("[coordination]\nca = \"ca.pem\"\n", "coordination.redis"),
            (
                "[coordination]\nredis = \"redis://x\"\nreplicas = 0\n",
                "coordination.replicas",
            ),
            (
                "[coordination]\nredis = \"redis://x\"\nkey_prefix = \"a b\"\n",
                "coordination.key_prefix",
            ),
            (
                "[coordination]\nredis = \"redis://x\"\ntimeout = \"1ms\"\n",
                "coordination.timeout",
            ),
        ] {
            let e = load(toml, &[]).unwrap_err();
            assert_eq!(e.field, field, "{toml}: {e}");
            assert!(!e.to_string().contains("hunter2"));
        }
        let e = load("[coordination]\nredis = \"redis://:hunter2@[bad\"\n", &[]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let env = load(
            "",
            &[("KEYGATE_COORDINATION__REDIS", "redis://127.0.0.1:6379")],
        )
        .unwrap();
        assert!(env.coordination.is_some());
    }

    #[test]
    fn the_admin_listener_needs_tls_for_client_certificates_and_off_loopback() {
        let env = |pairs: &[(&'static str, &'static str)]| pairs.to_vec();
        let e = load("", &env(&[("KEYGATE_ADMIN__CLIENT_CA", "ca.pem")])).unwrap_err();
        assert_eq!(e.field, "admin.client_ca", "{e}");
        let e = load(
            "",
            &env(&[
                ("KEYGATE_ADMIN__LISTEN", "127.0.0.1:9443"),
                ("KEYGATE_ADMIN__CLIENT_CA", "ca.pem"),
            ]),
        )
        .unwrap_err();
        assert!(e.message.contains("need TLS"), "{e}");
        let e = load("", &env(&[("KEYGATE_ADMIN__LISTEN", "0.0.0.0:9443")])).unwrap_err();
        assert_eq!(e.field, "admin.listen", "{e}");
        let c = load(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
            &env(&[
                ("KEYGATE_ADMIN__LISTEN", "0.0.0.0:9443"),
                ("KEYGATE_ADMIN__CLIENT_CA", "ca.pem"),
            ]),
        )
        .unwrap();
        let a = c.admin_listener.unwrap();
        assert_eq!(a.listen.port(), 9443);
        assert_eq!(a.client_ca.unwrap(), Path::new("/etc/keygate/ca.pem"));
    }
}
