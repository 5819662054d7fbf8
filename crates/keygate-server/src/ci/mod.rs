//! Machine identities for CI/CD pipelines and servers.
//!
//! A **policy** (`keygate policy`, `/admin/v1/policies`) names the secrets an identity may
//! read (names and prefix globs such as `deploy.*`), how long its token lives and whether versions other
//! than the current one may be read. Two ways in, both ending in the same short-lived
//! machine token (`kgm_…`, stored as its hash) that carries one policy and can do nothing
//! else (the admin API answers it 403, the proxy 401):
//!
//! - **OIDC workload federation** (`[[ci.issuers]]`, `POST /ci/v1/login`): a CI job's ID
//!   token, verified by the same code as token exchange
//!   ([`crate::oauth::exchange::verify_subject_token`]: the issuer's own algorithm list and
//!   JWKS, exact `iss`/`aud`, times). Its claims must match a binding, its `jti` must be
//!   new (a replay within its lifetime is refused, across replicas on PostgreSQL), and the
//!   binding's policy must exist.
//! - **Static machine credentials** (`keygate machine add`): a client id (`m_…`) and
//!   secret, stored hashed, exchanged with `grant_type=client_credentials` at
//!   `/oauth2/token`; a rotated secret keeps working for the overlap it was given.
//!
//! Every login and every read, allowed or not, is audited with the identity and its
//! non-secret claims (repository, ref, run id…); tokens appear as keyed hashes only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_audit::{AuditEvent, AuditKey, Outcome};
use keygate_auth::idtoken::VerifiedIdToken;
use keygate_auth::opaque::{OpaqueToken, TokenHash, TokenKind};
use keygate_store::{MachineTokenRecord, PolicyRecord, Store};
use keygate_vault::now_ms;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::admin_guard::{AdminAuthGuard, Failure, source_of};
use crate::config::{CiBinding, CiSettings};
use crate::error::ApiError;
use crate::oauth::OAuthError;
use crate::oauth::endpoints::Form;
use crate::oauth::exchange::{Refusal, TrustedIssuers, verify_subject_token};

pub mod endpoints;

/// Prefix of a machine's client id.
pub const MACHINE_ID_PREFIX: &str = "m_";
/// Default lifetime of a machine token.
pub const DEFAULT_TOKEN_TTL_SECS: i64 = 15 * 60;
/// The shortest and longest a policy may let a machine token live.
pub const TOKEN_TTL_RANGE: std::ops::RangeInclusive<i64> = 60..=3600;
/// The claims of a CI ID token that are kept with its machine token and written to the
/// audit: what says which pipeline this was, never anything secret.
const AUDITED_CLAIMS: &[&str] = &[
    "sub",
    "repository",
    "repository_owner",
    "ref",
    "ref_type",
    "sha",
    "environment",
    "workflow",
    "job_workflow_ref",
    "run_id",
    "run_number",
    "run_attempt",
    "actor",
    "event_name",
    // GitLab
    "project_path",
    "namespace_path",
    "pipeline_id",
    "job_id",
    "user_login",
];
/// The longest claim value kept.
const MAX_CLAIM_LEN: usize = 256;

/// Whether `name` is a usable policy name.
pub fn policy_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Whether `name` is a usable machine name (the same rule as policy names).
pub fn machine_name_ok(name: &str) -> bool {
    policy_name_ok(name)
}

/// Whether a client id names a machine credential rather than an OAuth client.
pub fn is_machine_id(id: &str) -> bool {
    id.starts_with(MACHINE_ID_PREFIX)
}

/// One entry of a policy's secret list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretPattern {
    /// A secret's exact name.
    Exact(String),
    /// `prefix*`: every secret whose name starts with the prefix and is longer (`deploy.*`
    /// covers `deploy.stripe`, not `deploy`); `*` alone covers every secret.
    Prefix(String),
}

impl SecretPattern {
    /// Parses a secret name, or a glob whose only `*` ends it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.find('*').is_some_and(|at| at + 1 != raw.len()) {
            return Err(format!(
                "`{raw}`: `*` may only end a pattern (e.g. `deploy.*`)"
            ));
        }
        match raw.strip_suffix('*') {
            Some(prefix) => {
                if !prefix.is_empty() {
                    // A prefix is the start of a valid name: check it as one (a trailing
                    // separator such as `.` is a valid name character too).
                    keygate_vault::SecretName::parse(prefix).map_err(|e| {
                        format!("`{raw}`: the part before `*` is not a secret name's start: {e}")
                    })?;
                }
                Ok(Self::Prefix(prefix.to_owned()))
            }
            None => {
                let name =
                    keygate_vault::SecretName::parse(raw).map_err(|e| format!("`{raw}`: {e}"))?;
                Ok(Self::Exact(name.as_str().to_owned()))
            }
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => n == name,
            Self::Prefix(p) => name.len() > p.len() && name.starts_with(p.as_str()),
        }
    }
}

/// A policy's parsed secret list.
#[derive(Debug, Clone)]
pub struct Grants(Vec<SecretPattern>);

impl Grants {
    /// From the stored JSON array.
    pub fn from_stored(json: &str) -> Result<Self, String> {
        let list: Vec<String> =
            serde_json::from_str(json).map_err(|_| "a stored policy does not parse".to_owned())?;
        Self::parse(&list)
    }

    pub fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .map(|p| SecretPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn allows(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.matches(name))
    }

    pub fn patterns(&self) -> &[SecretPattern] {
        &self.0
    }
}

/// The identity behind a presented machine token.
#[derive(Debug, Clone)]
pub struct MachineIdentity {
    /// `machine:NAME` or `ci:ISSUER:SUBJECT`.
    pub identity: String,
    pub policy: PolicyRecord,
    pub grants: Grants,
    /// The claims kept at login (JSON object).
    pub claims: Map<String, Value>,
    pub expires_ms: i64,
    /// Keyed hash of the token, to tie reads to their login in the audit.
    pub token_ref: String,
}

impl MachineIdentity {
    /// An audit entry by this identity, with its policy and claims.
    pub fn audit(&self, action: &str, outcome: Outcome) -> AuditEvent {
        with_claims(
            AuditEvent::new(self.identity.clone(), action, outcome)
                .detail("policy", self.policy.name.clone())
                .detail("token_ref", self.token_ref.clone()),
            &self.claims,
        )
    }
}

fn with_claims(mut event: AuditEvent, claims: &Map<String, Value>) -> AuditEvent {
    for (k, v) in claims {
        event = match v {
            Value::String(s) => event.detail(k.as_str(), s.clone()),
            other => event.detail(k.as_str(), other.to_string()),
        };
    }
    event
}

/// The CI service: trusted CI issuers and their bindings, machine tokens.
pub struct CiService {
    issuers: TrustedIssuers,
    /// Failed logins per source: aggregated in the audit, 429 past the limit.
    pub(crate) guard: Arc<AdminAuthGuard>,
    bindings: HashMap<String, Vec<CiBinding>>,
    store: Arc<dyn Store>,
    audit_key: AuditKey,
}

/// Why a login or a token was refused: the status, a stable code and a message that
/// names the problem without repeating the token.
#[derive(Debug)]
pub struct CiRefusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl CiRefusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<CiRefusal> for ApiError {
    fn from(r: CiRefusal) -> Self {
        ApiError::new(r.status, r.code, r.message)
    }
}

impl CiService {
    /// Loads the `[[ci.issuers]]` (JWKS files now, URLs on first use).
    pub async fn start(
        settings: &CiSettings,
        store: Arc<dyn Store>,
        audit_key: AuditKey,
        guard: Arc<AdminAuthGuard>,
    ) -> anyhow::Result<Self> {
        let issuer_settings: Vec<_> = settings.issuers.iter().map(|i| i.issuer.clone()).collect();
        let issuers = TrustedIssuers::load(&issuer_settings)
            .await
            .map_err(|e| anyhow::anyhow!("ci.issuers: {e}"))?;
        let bindings = settings
            .issuers
            .iter()
            .map(|i| (i.issuer.name.clone(), i.bindings.clone()))
            .collect();
        Ok(Self {
            issuers,
            guard,
            bindings,
            store,
            audit_key,
        })
    }

    fn token_ref(&self, kind: &str, token: &str) -> String {
        self.audit_key.reference(kind, token.as_bytes())
    }

    /// Issues a machine token for `identity` under `policy`, stored with `audit`.
    async fn issue(
        &self,
        identity: String,
        policy: &PolicyRecord,
        claims: Map<String, Value>,
        audit: AuditEvent,
    ) -> Result<Issued, CiRefusal> {
        let token = OpaqueToken::generate(TokenKind::Machine);
        let ttl = policy
            .token_ttl_secs
            .clamp(*TOKEN_TTL_RANGE.start(), *TOKEN_TTL_RANGE.end());
        let now = now_ms();
        let token_ref = self.token_ref("machine_token", token.value().expose_secret());
        let audit = with_claims(
            audit
                .detail("policy", policy.name.clone())
                .detail("token_ref", token_ref)
                .detail("expires_in", ttl),
            &claims,
        );
        let record = MachineTokenRecord {
            hash: token.hash().as_bytes().to_vec(),
            identity: identity.clone(),
            policy: policy.name.clone(),
            claims: Value::Object(claims).to_string(),
            created_ms: now,
            expires_ms: now + ttl * 1000,
        };
        self.store
            .insert_machine_token(record, audit, now)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Issued {
            token,
            expires_in: ttl,
            policy: policy.name.clone(),
            identity,
        })
    }

    /// `POST /ci/v1/login`: a CI job's ID token for a machine token.
    pub async fn login_with_id_token(
        &self,
        id_token: &str,
        source: IpAddr,
    ) -> Result<Issued, CiRefusal> {
        let id_ref = self.token_ref("ci_id_token", id_token);
        let refuse = |issuer: Option<&str>, claims: Option<&Map<String, Value>>, r: CiRefusal| {
            let mut event = AuditEvent::new(
                format!("ci:{}", issuer.unwrap_or("-")),
                "ci.login",
                Outcome::Denied,
            )
            .detail("reason", r.message.clone())
            .detail("id_token_ref", id_ref.clone());
            if let Some(c) = claims {
                event = with_claims(event, c);
            }
            (event, r)
        };
        let outcome = self.check_id_token(id_token).await;
        let (issuer_name, verified, claims, policy) = match outcome {
            Ok(v) => v,
            Err((issuer, claims, r)) => {
                let verified = claims.is_some();
                let (event, r) = refuse(issuer.as_deref(), claims.as_ref(), r);
                let event = event.detail("source", source_of(source).to_string());
                tracing::info!(issuer = issuer.as_deref().unwrap_or("-"), reason = %r.message, "CI login refused");
                if verified {
                    // A genuine job token (its signature held) refused by policy: always
                    // one entry with the job's claims.
                    self.audit_or_log(event).await;
                } else if let Failure::Audit(earlier) = self.guard.failed(source, now_ms()) {
                    // Tokens anyone can make up (an unverifiable one during a JWKS outage
                    // included): the first refusal of a source in a window is audited in
                    // full, the rest of the burst as one entry with a count.
                    for e in earlier.iter().map(|b| b.event()) {
                        self.audit_or_log(e).await;
                    }
                    self.audit_or_log(event).await;
                }
                return Err(r);
            }
        };
        let identity = truncate(
            &format!("ci:{issuer_name}:{}", verified.subject()),
            MAX_CLAIM_LEN,
        );
        let audit = AuditEvent::new(identity.clone(), "ci.login", Outcome::Success)
            .detail("issuer", issuer_name.clone())
            .detail("id_token_ref", id_ref.clone());
        let issued = self.issue(identity, &policy, claims, audit).await?;
        tracing::info!(issuer = %issuer_name, policy = %issued.policy, "CI job logged in");
        Ok(issued)
    }

    async fn audit_or_log(&self, event: AuditEvent) {
        if let Err(e) = self.store.append_audit(event, now_ms()).await {
            tracing::error!(error = %e, "CI audit entry could not be written");
        }
    }

    /// Every check of a CI login, in order; on refusal, what is known of the token so far.
    #[allow(clippy::type_complexity)]
    async fn check_id_token(
        &self,
        id_token: &str,
    ) -> Result<
        (String, VerifiedIdToken, Map<String, Value>, PolicyRecord),
        (Option<String>, Option<Map<String, Value>>, CiRefusal),
    > {
        use StatusCode as S;
        if self.issuers.is_empty() {
            return Err((
                None,
                None,
                CiRefusal::new(
                    S::UNAUTHORIZED,
                    "untrusted_issuer",
                    "no CI issuer is trusted here ([[ci.issuers]] is empty)",
                ),
            ));
        }
        let (issuer, verified) = match verify_subject_token(&self.issuers, id_token).await {
            Ok(v) => v,
            Err((issuer, refusal)) => {
                let name = issuer.map(|i| i.settings.name.clone());
                let r = match refusal {
                    Refusal::UnknownIssuer => CiRefusal::new(
                        S::UNAUTHORIZED,
                        "untrusted_issuer",
                        "the ID token's issuer is not trusted by [[ci.issuers]]",
                    ),
                    Refusal::KeysUnavailable => CiRefusal::new(
                        S::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the CI issuer's keys (JWKS) are unavailable; try again later",
                    ),
                    Refusal::Token(e) => CiRefusal::new(
                        S::UNAUTHORIZED,
                        "invalid_id_token",
                        format!("the ID token was refused: {e}"),
                    ),
                };
                return Err((name, None, r));
            }
        };
        let name = issuer.settings.name.clone();
        let claims = kept_claims(&verified);
        let fail = |r: CiRefusal| (Some(name.clone()), Some(claims.clone()), r);
        let Some(jti) = verified
            .claim("jti")
            .and_then(Value::as_str)
            .filter(|j| (1..=256).contains(&j.len()))
        else {
            return Err(fail(CiRefusal::new(
                S::UNAUTHORIZED,
                "invalid_id_token",
                "the ID token has no `jti`, so a replay could not be refused",
            )));
        };
        let bindings = self.bindings.get(&name).map(Vec::as_slice).unwrap_or(&[]);
        let Some(binding) = bindings.iter().find(|b| binding_matches(b, &verified)) else {
            return Err(fail(CiRefusal::new(
                S::FORBIDDEN,
                "no_binding",
                format!("no binding of CI issuer `{name}` matches this job's claims"),
            )));
        };
        let policy = match self.store.policy(&binding.policy).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(fail(CiRefusal::new(
                    S::FORBIDDEN,
                    "no_policy",
                    format!(
                        "the matching binding names policy `{}`, which does not exist",
                        binding.policy
                    ),
                )));
            }
            Err(e) => return Err(fail(unavailable(&e))),
        };
        // Last, so a token refused for another reason can still be used once it is fixed.
        let key = Sha256::new()
            .chain_update(b"keygate/v1/ci-jti\0")
            .chain_update(verified.issuer().as_bytes())
            .chain_update(b"\0")
            .chain_update(jti.as_bytes())
            .finalize();
        let expires_ms = (verified.expires_at().0 + 60).saturating_mul(1000);
        match self.store.dpop_seen(&key, expires_ms, now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(fail(CiRefusal::new(
                    S::UNAUTHORIZED,
                    "replayed",
                    "this ID token was already used to log in (each job token logs in once)",
                )));
            }
            Err(e) => return Err(fail(unavailable(&e))),
        }
        Ok((name, verified, claims, policy))
    }

    /// `grant_type=client_credentials` with a machine's id and secret.
    pub async fn login_with_secret(
        &self,
        client_id: &str,
        secret: Option<&str>,
    ) -> Result<Issued, CiRefusal> {
        let now = now_ms();
        let bad = || {
            CiRefusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown machine or wrong secret",
            )
        };
        let machine = self
            .store
            .machine_by_id(client_id)
            .await
            .map_err(|e| unavailable(&e))?;
        let Some(machine) = machine else {
            return Err(bad());
        };
        let actor = format!("machine:{}", machine.name);
        let presented = secret.map(TokenHash::of);
        let fits = |stored: &[u8]| {
            let Ok(stored) = <[u8; 32]>::try_from(stored) else {
                return false;
            };
            presented
                .as_ref()
                .is_some_and(|p| p.ct_eq(&TokenHash::from_bytes(stored)))
        };
        let current = fits(&machine.secret_hash);
        let previous = machine
            .previous_hash
            .as_deref()
            .is_some_and(|h| fits(h) && machine.previous_until_ms.is_some_and(|u| u > now));
        if !current && !previous {
            self.audit_or_log(
                AuditEvent::new(actor, "machine.login", Outcome::Denied)
                    .detail("reason", "wrong or missing secret"),
            )
            .await;
            return Err(bad());
        }
        let policy = match self.store.policy(&machine.policy).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                let r = CiRefusal::new(
                    StatusCode::FORBIDDEN,
                    "no_policy",
                    format!(
                        "machine `{}` has policy `{}`, which does not exist",
                        machine.name, machine.policy
                    ),
                );
                self.audit_or_log(
                    AuditEvent::new(actor, "machine.login", Outcome::Denied)
                        .detail("reason", r.message.clone()),
                )
                .await;
                return Err(r);
            }
            Err(e) => return Err(unavailable(&e)),
        };
        let audit = AuditEvent::new(actor.clone(), "machine.login", Outcome::Success)
            .detail("secret", if current { "current" } else { "previous" });
        self.issue(actor, &policy, Map::new(), audit).await
    }

    /// The identity behind a presented machine token, or why there is none.
    pub async fn identify(&self, token: &str) -> Result<MachineIdentity, CiRefusal> {
        let invalid = || {
            CiRefusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "a valid machine token is required (Authorization: Bearer kgm_…); it may have expired",
            )
        };
        if !token.starts_with(TokenKind::Machine.prefix()) {
            return Err(invalid());
        }
        let hash = TokenHash::of(token);
        let record = self
            .store
            .machine_token(hash.as_bytes(), now_ms())
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(invalid)?;
        let policy = self
            .store
            .policy(&record.policy)
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(invalid)?;
        let grants = Grants::from_stored(&policy.secrets).map_err(|e| unavailable(&e))?;
        let claims = match serde_json::from_str(&record.claims) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        Ok(MachineIdentity {
            identity: record.identity,
            policy,
            grants,
            claims,
            expires_ms: record.expires_ms,
            token_ref: self.token_ref("machine_token", token),
        })
    }
}

/// A machine token just issued.
pub struct Issued {
    pub token: OpaqueToken,
    pub expires_in: i64,
    pub policy: String,
    pub identity: String,
}

impl Issued {
    /// The token response (OAuth's shape: `access_token`, `token_type`, `expires_in`),
    /// never cached.
    pub fn response(&self) -> Response {
        let body = json!({
            "access_token": self.token.value().expose_secret(),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "policy": self.policy,
            "identity": self.identity,
        });
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        (StatusCode::OK, headers, Json(body)).into_response()
    }
}

fn unavailable(cause: &dyn std::fmt::Display) -> CiRefusal {
    tracing::error!(error = %cause, "CI service: dependency unavailable");
    CiRefusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "a dependency of keygate is unavailable; try again later",
    )
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

/// The claims of [`AUDITED_CLAIMS`] present in the token, strings and numbers only.
fn kept_claims(token: &VerifiedIdToken) -> Map<String, Value> {
    let mut kept = Map::new();
    for name in AUDITED_CLAIMS {
        let value = match token.claim(name) {
            Some(Value::String(s)) => {
                Value::String(truncate(&s.replace(char::is_control, "_"), MAX_CLAIM_LEN))
            }
            Some(Value::Number(n)) => Value::String(n.to_string()),
            _ => continue,
        };
        kept.insert((*name).to_owned(), value);
    }
    kept
}

/// A claim's value as text for matching: strings as they are, numbers and booleans in
/// their JSON form; anything else does not match.
fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn binding_matches(b: &CiBinding, token: &VerifiedIdToken) -> bool {
    b.claims.iter().all(|(name, pattern)| {
        token
            .claim(name)
            .and_then(claim_text)
            .is_some_and(|v| pattern.matches(&v))
    })
}

/// Answers a machine's client_credentials grant at `/oauth2/token` in OAuth's terms.
pub(crate) async fn machine_login(
    ci: &CiService,
    client_id: &str,
    secret: Option<&str>,
    form: &Form,
) -> Result<Response, OAuthError> {
    if form.get("scope").is_some() {
        // A machine token's reach is its policy; there is nothing to narrow by scope.
        return Err(OAuthError::invalid_scope());
    }
    match ci.login_with_secret(client_id, secret).await {
        Ok(issued) => Ok(issued.response()),
        Err(r) if r.status == StatusCode::UNAUTHORIZED => Err(OAuthError::invalid_client()),
        Err(r) if r.status == StatusCode::FORBIDDEN => Err(OAuthError::unauthorized_client()),
        Err(r) => Err(OAuthError::unavailable(&r.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_patterns_are_names_or_prefix_globs() {
        let p = |s: &str| SecretPattern::parse(s);
        assert_eq!(p("stripe").unwrap(), SecretPattern::Exact("stripe".into()));
        assert_eq!(
            p("deploy.*").unwrap(),
            SecretPattern::Prefix("deploy.".into())
        );
        assert_eq!(p("*").unwrap(), SecretPattern::Prefix(String::new()));
        for bad in [
            "a*b",
            "de*ploy.*",
            "*x",
            "a**",
            "",
            "bad name",
            "payments/*",
            ".x*",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let g = Grants::parse(&["deploy.*".into(), "maps".into()]).unwrap();
        assert!(g.allows("deploy.stripe"));
        assert!(g.allows("deploy.a.b"));
        assert!(g.allows("maps"));
        assert!(!g.allows("deploy."), "the prefix alone is not covered");
        assert!(!g.allows("deploy"));
        assert!(!g.allows("deployx"));
        assert!(!g.allows("mapsx"));
        assert!(!g.allows("other"));
        assert!(Grants::parse(&["*".into()]).unwrap().allows("anything"));
        assert!(!Grants::parse(&[]).unwrap().allows("anything"));
    }

    #[test]
    fn claim_globs_match_whole_values() {
        let p = |s: &str| crate::config::ClaimPattern::from_test(s);
        assert!(p("acme/app").matches("acme/app"));
        assert!(!p("acme/app").matches("acme/app2"));
        assert!(!p("acme/app").matches("xacme/app"));
        assert!(p("refs/heads/release/*").matches("refs/heads/release/1.2"));
        assert!(!p("refs/heads/release/*").matches("refs/heads/main"));
        assert!(p("acme/*").matches("acme/"));
        assert!(p("*/app").matches("acme/app"));
        assert!(p("a*b*c").matches("a-x-b-y-c"));
        assert!(!p("a*b*c").matches("a-x-c-y-b"));
        assert!(
            !p("ab*ba").matches("aba"),
            "overlapping ends do not count twice"
        );
    }
}
