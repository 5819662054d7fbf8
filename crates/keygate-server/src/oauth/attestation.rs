//! App attestation at the token endpoint: the trust tier of a session and of each access
//! token (`att`), from Apple App Attest or Google Play Integrity evidence.
//!
//! The flow, for a client listed in `[[attestation.clients]]`:
//! 1. the app asks `POST /oauth2/attestation/challenge` (`client_id`) for a challenge:
//!    stateless (an expiry, 128 random bits and a MAC under a key every replica derives
//!    from the system key), single use (spent in the DPoP replay cache, which the replicas
//!    share);
//! 2. it makes its DPoP key, then the platform evidence over the *client data*
//!    `keygate-attestation/v1 LF challenge LF jkt`, where `jkt` is the DPoP key's RFC 7638
//!    thumbprint: App Attest `attestKey` (at sign-in) or `generateAssertion` (at refresh)
//!    with `clientDataHash = SHA-256(client data)`; Play Integrity with
//!    `nonce = base64url(SHA-256(client data))`. App Attest keys can only sign
//!    assertions, never a DPoP proof, so this is how the DPoP key is bound into what the
//!    hardware attested;
//! 3. the token request (authorization code or refresh, with its DPoP proof) carries
//!    `attestation_type` (`apple-app-attest`, `play-integrity` or `none`),
//!    `attestation_challenge` and the evidence (`attestation` and, for App Attest at
//!    sign-in, `attestation_key_id`; `attestation_assertion` at refresh).
//!
//! The outcome is a tier: `attested`; `unattested` (no evidence: older OS, emulator,
//! the platform's service down), so an outage degrades to the limits routes set for it;
//! or `failed` (evidence that did not verify; with `on_failure = "refuse"` the grant is
//! refused instead). Every outcome is counted (`keygate_attestation_total`) and the tier
//! and reason go into the grant's audit entry; a refusal is audited on its own. The app
//! only ever sees a generic `invalid_grant`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use keygate_attest::apple::{self, AppAttestConfig};
use keygate_attest::google::{self, PlayIntegrityConfig};
use keygate_audit::{AuditEvent, Outcome};
use keygate_auth::access::TrustTier;
use keygate_auth::dpop::{Freshness, ReplayCache, ReplayKey};
use keygate_auth::jwk::Jkt;
use keygate_store::{ClientRecord, FamilyRecord};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::endpoints::Form;
use super::login::mac;
use super::{OAuthError, TokenService, unix_now};

// ------------------------------------------------------------------ configuration

/// `[attestation]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAttestation {
    /// How long a challenge may be used.
    #[serde(default = "default_challenge_ttl", with = "humantime_serde")]
    challenge_ttl: Duration,
    #[serde(default)]
    clients: Vec<RawClientAttestation>,
}

impl Default for RawAttestation {
    fn default() -> Self {
        Self {
            challenge_ttl: default_challenge_ttl(),
            clients: Vec::new(),
        }
    }
}

fn default_challenge_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_max_age() -> Duration {
    Duration::from_secs(300)
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAttestation {
    client: String,
    #[serde(default)]
    on_failure: OnFailure,
    apple: Option<RawApple>,
    google: Option<RawGoogle>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApple {
    team_id: String,
    bundle_id: String,
    /// PEM of the App Attest root; Apple's (built in) when absent.
    root_file: Option<PathBuf>,
    #[serde(default)]
    allow_development: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGoogle {
    package_name: String,
    /// Signing certificate digests the app may carry, base64url of SHA-256 (as the
    /// verdict's `certificateSha256Digest`).
    certificate_sha256: Vec<String>,
    /// The Play Console's response decryption key (base64), in a file (mode 0600) or an
    /// environment variable; never in this file.
    decryption_key_file: Option<PathBuf>,
    decryption_key_env: Option<String>,
    /// The Play Console's response verification key (base64 DER SubjectPublicKeyInfo).
    verification_key: String,
    #[serde(default = "yes")]
    require_device_integrity: bool,
    #[serde(default)]
    require_licensed: bool,
    #[serde(default = "default_max_age", with = "humantime_serde")]
    max_age: Duration,
}

/// What a failed attestation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The token carries `att = "failed"`; routes decide (the default).
    #[default]
    Tier,
    /// The grant is refused.
    Refuse,
}

/// `[attestation]`, validated (keys are read when the token service starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationSettings {
    pub challenge_ttl: Duration,
    pub clients: Vec<ClientAttestationConfig>,
}

impl Default for AttestationSettings {
    fn default() -> Self {
        Self {
            challenge_ttl: default_challenge_ttl(),
            clients: Vec::new(),
        }
    }
}

/// One `[[attestation.clients]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAttestationConfig {
    /// The client's name (`keygate client add NAME`).
    pub client: String,
    pub on_failure: OnFailure,
    pub platform: PlatformConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformConfig {
    Apple {
        team_id: String,
        bundle_id: String,
        root_file: Option<PathBuf>,
        allow_development: bool,
    },
    Google {
        package_name: String,
        certificate_sha256: Vec<[u8; 32]>,
        decryption_key: KeyRef,
        verification_key: String,
        require_device_integrity: bool,
        require_licensed: bool,
        max_age: Duration,
    },
}

/// Where a secret key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    File(PathBuf),
    Env(String),
}

impl RawAttestation {
    /// Errors are `(field below "attestation", message)`.
    pub(crate) fn validate(self, base: &Path) -> Result<AttestationSettings, (String, String)> {
        if self.challenge_ttl < Duration::from_secs(10)
            || self.challenge_ttl > Duration::from_secs(3600)
        {
            return Err(("challenge_ttl".into(), "must be between 10s and 1h".into()));
        }
        let mut clients = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.clients.into_iter().enumerate() {
            let at = |f: &str| format!("clients[{i}]{f}");
            if c.client.is_empty() || c.client.len() > 64 {
                return Err((at(".client"), "must be a client's name".into()));
            }
            if !seen.insert(c.client.clone()) {
                return Err((at(".client"), format!("{} is listed twice", c.client)));
            }
            let platform = match (c.apple, c.google) {
                (Some(a), None) => {
                    if a.team_id.len() != 10
                        || !a.team_id.chars().all(|c| c.is_ascii_alphanumeric())
                    {
                        return Err((
                            at(".apple.team_id"),
                            "must be the 10-character Apple team ID".into(),
                        ));
                    }
                    if a.bundle_id.is_empty() || a.bundle_id.len() > 255 {
                        return Err((at(".apple.bundle_id"), "must be the app's bundle ID".into()));
                    }
                    PlatformConfig::Apple {
                        team_id: a.team_id,
                        bundle_id: a.bundle_id,
                        root_file: a
                            .root_file
                            .map(|p| if p.is_absolute() { p } else { base.join(p) }),
                        allow_development: a.allow_development,
                    }
                }
                (None, Some(g)) => {
                    if g.package_name.is_empty() {
                        return Err((
                            at(".google.package_name"),
                            "must be the app's package name".into(),
                        ));
                    }
                    let mut digests = Vec::new();
                    for (j, d) in g.certificate_sha256.iter().enumerate() {
                        let bytes = keygate_attest::decode_base64(d)
                            .filter(|b| b.len() == 32)
                            .ok_or_else(|| {
                                (
                                    at(&format!(".google.certificate_sha256[{j}]")),
                                    "must be base64 of a SHA-256 digest".to_owned(),
                                )
                            })?;
                        let mut a = [0u8; 32];
                        a.copy_from_slice(&bytes);
                        digests.push(a);
                    }
                    if digests.is_empty() {
                        return Err((
                            at(".google.certificate_sha256"),
                            "name at least one signing certificate digest".into(),
                        ));
                    }
                    let decryption_key = match (g.decryption_key_file, g.decryption_key_env) {
                        (Some(f), None) => {
                            KeyRef::File(if f.is_absolute() { f } else { base.join(f) })
                        }
                        (None, Some(e)) => KeyRef::Env(e),
                        _ => {
                            return Err((
                                at(".google"),
                                "set exactly one of decryption_key_file and decryption_key_env"
                                    .into(),
                            ));
                        }
                    };
                    if !(Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&g.max_age)
                    {
                        return Err((at(".google.max_age"), "must be between 10s and 1d".into()));
                    }
                    PlatformConfig::Google {
                        package_name: g.package_name,
                        certificate_sha256: digests,
                        decryption_key,
                        verification_key: g.verification_key,
                        require_device_integrity: g.require_device_integrity,
                        require_licensed: g.require_licensed,
                        max_age: g.max_age,
                    }
                }
                _ => return Err((at(""), "set exactly one of apple and google".into())),
            };
            clients.push(ClientAttestationConfig {
                client: c.client,
                on_failure: c.on_failure,
                platform,
            });
        }
        Ok(AttestationSettings {
            challenge_ttl: self.challenge_ttl,
            clients,
        })
    }
}

// ------------------------------------------------------------------ the service

enum Verifier {
    Apple(AppAttestConfig),
    Google(Box<PlayIntegrityConfig>),
}

struct Client {
    on_failure: OnFailure,
    verifier: Verifier,
}

impl Client {
    /// The metrics and audit name of the platform.
    fn platform(&self) -> &'static str {
        match self.verifier {
            Verifier::Apple(_) => "apple",
            Verifier::Google(_) => "google",
        }
    }

    /// The `attestation_type` its evidence comes as.
    fn evidence_type(&self) -> &'static str {
        match self.verifier {
            Verifier::Apple(_) => "apple-app-attest",
            Verifier::Google(_) => "play-integrity",
        }
    }
}

/// Outcome counts: (client, platform, tier, reason, app version).
type Counts = BTreeMap<(String, &'static str, &'static str, &'static str, String), u64>;

/// The attestation verifiers of the configured clients, and their outcome counts.
pub struct Attestation {
    ttl: Duration,
    clients: HashMap<String, Client>,
    counts: Mutex<Counts>,
}

impl std::fmt::Debug for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestation")
            .field("clients", &self.clients.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Attestation {
    /// Builds the verifiers: reads root files and keys now, so a bad one stops the start.
    pub fn load(settings: &AttestationSettings) -> Result<Self, String> {
        let mut clients = HashMap::new();
        for c in &settings.clients {
            let at = |what: &str| format!("attestation for client {}: {what}", c.client);
            let verifier = match &c.platform {
                PlatformConfig::Apple {
                    team_id,
                    bundle_id,
                    root_file,
                    allow_development,
                } => {
                    let mut cfg = AppAttestConfig::apple(team_id.clone(), bundle_id.clone())
                        .map_err(|e| at(&e.to_string()))?;
                    if let Some(path) = root_file {
                        let pem = std::fs::read_to_string(path)
                            .map_err(|e| at(&format!("root_file {}: {e}", path.display())))?;
                        cfg.roots = vec![
                            apple::parse_pem_certificate(&pem)
                                .map_err(|e| at(&format!("root_file {}: {e}", path.display())))?,
                        ];
                    }
                    cfg.allow_development = *allow_development;
                    Verifier::Apple(cfg)
                }
                PlatformConfig::Google {
                    package_name,
                    certificate_sha256,
                    decryption_key,
                    verification_key,
                    require_device_integrity,
                    require_licensed,
                    max_age,
                } => {
                    let key = Zeroizing::new(match decryption_key {
                        KeyRef::File(path) => {
                            if let Err(reason) = keygate_vault::check_key_file_permissions(path) {
                                return Err(at(&format!(
                                    "decryption_key_file {}: {reason}",
                                    path.display()
                                )));
                            }
                            std::fs::read_to_string(path).map_err(|e| {
                                at(&format!("decryption_key_file {}: {e}", path.display()))
                            })?
                        }
                        KeyRef::Env(var) => std::env::var(var).map_err(|_| {
                            at(&format!(
                                "decryption_key_env: environment variable {var} is not set"
                            ))
                        })?,
                    });
                    let mut cfg = PlayIntegrityConfig::from_console_keys(
                        package_name.clone(),
                        certificate_sha256.clone(),
                        key.trim(),
                        verification_key,
                    )
                    .map_err(|e| at(&e.to_string()))?;
                    cfg.require_device_integrity = *require_device_integrity;
                    cfg.require_licensed = *require_licensed;
                    cfg.max_age = *max_age;
                    Verifier::Google(Box::new(cfg))
                }
            };
            clients.insert(
                c.client.clone(),
                Client {
                    on_failure: c.on_failure,
                    verifier,
                },
            );
        }
        Ok(Self {
            ttl: settings.challenge_ttl,
            clients,
            counts: Mutex::new(BTreeMap::new()),
        })
    }

    /// Whether the client named `name` attests.
    pub fn configured(&self, name: &str) -> bool {
        self.clients.contains_key(name)
    }

    /// A new challenge for `client`, and how many seconds it lasts.
    pub(crate) fn challenge(&self, key: &[u8; 32], client: &str) -> (String, u64) {
        let ttl = self.ttl.as_secs();
        let expires = unix_now().0.saturating_add(ttl as i64);
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(keygate_auth::opaque::random_bytes::<16>());
        let tag = mac(
            key,
            &[CHALLENGE_LABEL, client, &expires.to_string(), &nonce],
        );
        (format!("{expires}.{nonce}.{tag}"), ttl)
    }

    /// Renders the outcome counts in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::from(
            "# HELP keygate_attestation_total App attestation outcomes at the token endpoint, by client, platform, tier, reason and app version (Play Integrity's versionCode).\n# TYPE keygate_attestation_total counter\n",
        );
        if let Ok(counts) = self.counts.lock() {
            for ((client, platform, tier, reason, version), n) in counts.iter() {
                let _ = writeln!(
                    out,
                    "keygate_attestation_total{{client=\"{client}\",platform=\"{platform}\",tier=\"{tier}\",reason=\"{reason}\",app_version=\"{version}\"}} {n}"
                );
            }
        }
        out
    }

    fn count(&self, client: &str, v: &Verdict) {
        if let Ok(mut counts) = self.counts.lock() {
            // Bounded: a verified versionCode only, and at most 10,000 series.
            if counts.len() < 10_000 {
                *counts
                    .entry((
                        client.to_owned(),
                        v.platform,
                        v.tier.as_str(),
                        v.reason,
                        v.app_version.clone(),
                    ))
                    .or_insert(0) += 1;
            }
        }
    }
}

const CHALLENGE_LABEL: &str = "attestation-challenge";

/// The bytes the app hashes into its platform request.
pub fn client_data(challenge: &str, jkt: &str) -> Vec<u8> {
    format!("keygate-attestation/v1\n{challenge}\n{jkt}").into_bytes()
}

/// What the evidence of one grant said.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    pub tier: TrustTier,
    /// `ok`, `none`, or why the evidence failed (a stable code for audit and metrics).
    pub reason: &'static str,
    pub platform: &'static str,
    /// App Attest at sign-in: the attested public key (SEC1), kept with the session.
    pub attested_key: Option<Vec<u8>>,
    /// App Attest: the counter to store (0 at sign-in, the assertion's at refresh).
    pub counter: Option<i64>,
    /// Play Integrity: the verdict's versionCode.
    pub app_version: String,
}

impl Verdict {
    fn new(tier: TrustTier, reason: &'static str, platform: &'static str) -> Self {
        Self {
            tier,
            reason,
            platform,
            attested_key: None,
            counter: None,
            app_version: String::new(),
        }
    }
}

fn bytes_param(form: &Form, name: &str) -> Option<Vec<u8>> {
    let v = form.get(name)?;
    if v.len() > 96 * 1024 {
        return None;
    }
    keygate_attest::decode_base64(v)
}

/// Whether grants of `client` are judged (it is in `[[attestation.clients]]`).
pub(crate) fn attests(svc: &TokenService, client: &ClientRecord) -> bool {
    svc.attestation
        .as_ref()
        .is_some_and(|a| a.configured(&client.name))
}

/// The tier of a grant for `client`, from the request's evidence: `None` when the client
/// does not attest. At sign-in `family` is `None`; at refresh it is the session, whose
/// attested key (App Attest) the assertion must be signed with; a session whose sign-in
/// evidence failed stays `failed`. A refusal under
/// `on_failure = "refuse"` is audited here and answered with a generic `invalid_grant`.
pub(crate) async fn evaluate(
    svc: &TokenService,
    record: &ClientRecord,
    form: &Form,
    jkt: Option<&Jkt>,
    family: Option<&FamilyRecord>,
) -> Result<Option<Verdict>, OAuthError> {
    let Some(att) = &svc.attestation else {
        return Ok(None);
    };
    let Some(c) = att.clients.get(&record.name) else {
        return Ok(None);
    };
    let client = record.id.as_str();
    let platform = c.platform();
    // Evidence that failed at sign-in marks the session for its lifetime: a later refresh
    // without a key to assert with must not turn it into `unattested`.
    let verdict = if family.and_then(|f| f.tier.as_deref()) == Some(TrustTier::Failed.as_str()) {
        Verdict::new(TrustTier::Failed, "failed_at_sign_in", platform)
    } else {
        judge(svc, att, c, client, form, jkt, family).await?
    };
    att.count(&record.name, &verdict);
    if verdict.tier == TrustTier::Failed && c.on_failure == OnFailure::Refuse {
        let audit = AuditEvent::new(
            format!("client:{client}"),
            "token.attestation",
            Outcome::Denied,
        )
        .detail("platform", platform)
        .detail("reason", verdict.reason)
        .detail(
            "grant",
            if family.is_some() {
                "refresh_token"
            } else {
                "authorization_code"
            },
        );
        let audit = match family {
            Some(f) => audit.target(f.id.clone()),
            None => audit,
        };
        svc.store
            .append_audit(audit, keygate_vault::now_ms())
            .await
            .map_err(|e| OAuthError::unavailable(&e))?;
        tracing::warn!(
            client,
            platform,
            reason = verdict.reason,
            "attestation failed: grant refused"
        );
        return Err(OAuthError::invalid_grant());
    }
    Ok(Some(verdict))
}

async fn judge(
    svc: &TokenService,
    att: &Attestation,
    c: &Client,
    client: &str,
    form: &Form,
    jkt: Option<&Jkt>,
    family: Option<&FamilyRecord>,
) -> Result<Verdict, OAuthError> {
    let platform = c.platform();
    let failed = |reason: &'static str| Ok(Verdict::new(TrustTier::Failed, reason, platform));
    let kind = form.get("attestation_type").unwrap_or("none");
    let expected = c.evidence_type();
    if kind == "none" {
        return Ok(Verdict::new(TrustTier::Unattested, "none", platform));
    }
    if kind != expected {
        return failed("wrong_attestation_type");
    }
    // The challenge: ours, for this client, in time, and used once.
    let Some(challenge) = form.get("attestation_challenge") else {
        return failed("challenge_missing");
    };
    match check_challenge(&svc.csrf_key, client, challenge) {
        Ok(()) => {}
        Err(reason) => return failed(reason),
    }
    let Some(jkt) = jkt else {
        // Without a DPoP key there is nothing to bind the evidence to.
        return failed("no_dpop_key");
    };
    let key = ReplayKey::new("keygate:attestation-challenge", challenge);
    let now = unix_now();
    match svc
        .replay
        .insert_if_absent(key, now, now.plus(att.ttl.as_secs() as i64 + 60))
        .await
    {
        Ok(Freshness::Fresh) => {}
        Ok(Freshness::Replayed) => return failed("challenge_reused"),
        Err(_) => {
            return Err(OAuthError::unavailable(
                &"attestation challenge cache unavailable",
            ));
        }
    }
    let data = client_data(challenge, jkt.as_str());
    let now_secs = now.0;
    match &c.verifier {
        Verifier::Apple(cfg) => match family {
            None => {
                let (Some(object), Some(key_id)) = (
                    bytes_param(form, "attestation"),
                    bytes_param(form, "attestation_key_id"),
                ) else {
                    return failed("malformed_request");
                };
                match apple::verify_attestation(cfg, &object, &key_id, &data, now_secs) {
                    Ok(k) => Ok(Verdict {
                        attested_key: Some(k.public_key_sec1.clone()),
                        counter: Some(i64::from(k.counter)),
                        ..Verdict::new(TrustTier::Attested, "ok", platform)
                    }),
                    Err(r) => failed(r.code()),
                }
            }
            Some(f) => {
                let (Some(stored), Some(counter)) = (&f.attest_key, f.attest_counter) else {
                    // Signed in without an attested key: nothing to assert with.
                    return Ok(Verdict::new(
                        TrustTier::Unattested,
                        "no_attested_key",
                        platform,
                    ));
                };
                let Some(assertion) = bytes_param(form, "attestation_assertion") else {
                    return failed("malformed_request");
                };
                let counter = u32::try_from(counter).unwrap_or(u32::MAX);
                match apple::verify_assertion(cfg, stored, counter, &assertion, &data) {
                    Ok(next) => Ok(Verdict {
                        counter: Some(i64::from(next)),
                        ..Verdict::new(TrustTier::Attested, "ok", platform)
                    }),
                    Err(r) => failed(r.code()),
                }
            }
        },
        Verifier::Google(cfg) => {
            let Some(token) = form.get("attestation") else {
                return failed("malformed_request");
            };
            match google::verify_token(cfg, token, &data, now_secs) {
                Ok(v) => Ok(Verdict {
                    app_version: v.version_code.map(|n| n.to_string()).unwrap_or_default(),
                    ..Verdict::new(TrustTier::Attested, "ok", platform)
                }),
                Err(r) => failed(r.code()),
            }
        }
    }
}

/// Checks a challenge's MAC, client and expiry (not its single use).
fn check_challenge(key: &[u8; 32], client: &str, challenge: &str) -> Result<(), &'static str> {
    let mut parts = challenge.splitn(3, '.');
    let (Some(expires), Some(nonce), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("challenge_invalid");
    };
    let expected = mac(key, &[CHALLENGE_LABEL, client, expires, nonce]);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        tag.as_bytes(),
    )) {
        return Err("challenge_invalid");
    }
    let expires: i64 = expires.parse().map_err(|_| "challenge_invalid")?;
    if unix_now().0 > expires {
        return Err("challenge_expired");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_bound_to_the_client_and_the_key() {
        let att = Attestation::load(&AttestationSettings::default()).unwrap();
        let key = [7u8; 32];
        let (c, ttl) = att.challenge(&key, "ios-app");
        assert_eq!(ttl, 300);
        assert_eq!(check_challenge(&key, "ios-app", &c), Ok(()));
        assert_eq!(
            check_challenge(&key, "other-app", &c),
            Err("challenge_invalid")
        );
        assert_eq!(
            check_challenge(&[8u8; 32], "ios-app", &c),
            Err("challenge_invalid")
        );
        // Moving the expiry breaks the MAC.
        let (_, rest) = c.split_once('.').unwrap();
        let forged = format!("{}.{rest}", unix_now().0 + 999_999);
        assert_eq!(
            check_challenge(&key, "ios-app", &forged),
            Err("challenge_invalid")
        );
        assert_eq!(
            check_challenge(&key, "ios-app", "garbage"),
            Err("challenge_invalid")
        );
        // An expired one, made by hand with a valid MAC.
        let past = (unix_now().0 - 1).to_string();
        let tag = mac(&key, &[CHALLENGE_LABEL, "ios-app", &past, "n"]);
        assert_eq!(
            check_challenge(&key, "ios-app", &format!("{past}.n.{tag}")),
            Err("challenge_expired")
        );
    }

    #[test]
    fn client_data_binds_challenge_and_key() {
        assert_eq!(
            client_data("c", "j"),
            b"keygate-attestation/v1\nc\nj".to_vec()
        );
        assert_ne!(client_data("c", "j1"), client_data("c", "j2"));
    }
}
