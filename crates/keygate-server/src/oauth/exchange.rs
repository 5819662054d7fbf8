//! RFC 8693 token exchange: an ID token from an identity provider trusted by
//! `[[tokens.issuers]]` becomes a DPoP-bound keygate access token and a rotating refresh
//! token, as the code flow would give. The user is created on first sight.
//!
//! The token's unverified `iss` only picks the issuer entry; everything else is checked by
//! [`keygate_auth::idtoken::verify`] against that entry's policy and JWKS. The JWKS is
//! cached per issuer ([`JwksCache`]): fetched again after `jwks_max_age`, and when a token
//! names an unknown `kid`, but never more than once per `jwks_refresh_cooldown`, so
//! tokens with made-up `kid`s cannot make keygate hammer the provider. The subject token
//! is never logged; audit entries hold its keyed hash only (S22).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::response::Response;
use keygate_audit::{AuditEvent, Outcome};
use keygate_auth::access::AccessGrant;
use keygate_auth::ids::{ClientId, ScopeSet, SessionId, UserId};
use keygate_auth::idtoken::{self, IdTokenError, IdTokenPolicy, Jwks, VerifiedIdToken};
use keygate_auth::opaque::{OpaqueToken, TokenKind};
use keygate_auth::refresh;
use keygate_store::{ClientRecord, FamilyRecord, StoreError, UserRecord};
use keygate_vault::now_ms;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::endpoints::{Form, client_type, grant_response, token_proof};
use super::{OAuthError, StartError, TokenService, unix_now};
use crate::config::{IssuerSettings, JwksLocation};

/// `grant_type` of token exchange (RFC 8693 §2.1).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Subject token types accepted (RFC 8693 §3).
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The token type issued (and the requested types understood).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const REFRESH_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:refresh_token";

/// How long one JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The JWKS could not be had (never fetched, or every fetch failed for too long).
#[derive(Debug, thiserror::Error)]
#[error("the issuer's JWKS is unavailable")]
pub struct JwksUnavailable;

enum JwksSource {
    File(PathBuf),
    Url {
        url: url::Url,
        http: reqwest::Client,
    },
}

#[derive(Clone)]
struct Cached {
    jwks: Arc<Jwks>,
    fetched: Instant,
}

/// One issuer's keys: cached, refreshed on age and on unknown `kid`s, rate-limited.
pub struct JwksCache {
    issuer_name: String,
    source: JwksSource,
    max_age: Duration,
    cooldown: Duration,
    current: std::sync::RwLock<Option<Cached>>,
    /// Serialises fetches and holds the time of the last attempt (the cooldown's start).
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    fetches: AtomicU64,
}

impl JwksCache {
    fn cached(&self) -> Option<Cached> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// How many times the source was read or fetched.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    async fn read_source(&self) -> Result<Vec<u8>, String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match &self.source {
            JwksSource::File(path) => {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if meta.len() > idtoken::MAX_JWKS_BYTES as u64 {
                    return Err(format!("{} is too large for a JWKS", path.display()));
                }
                tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
            }
            JwksSource::Url { url, http } => {
                let mut resp = http
                    .get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| format!("fetching {url}: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("fetching {url}: status {}", resp.status()));
                }
                let too_large = || format!("fetching {url}: larger than a JWKS may be");
                if resp
                    .content_length()
                    .is_some_and(|l| l > idtoken::MAX_JWKS_BYTES as u64)
                {
                    return Err(too_large());
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| format!("fetching {url}: {e}"))?
                {
                    if body.len() + chunk.len() > idtoken::MAX_JWKS_BYTES {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }

    /// Reads the source once and, if it holds a usable JWKS, makes it current.
    async fn fetch(&self) -> Result<(), String> {
        let bytes = self.read_source().await?;
        let jwks = Jwks::parse(&bytes).map_err(|e| e.to_string())?;
        tracing::info!(
            issuer = %self.issuer_name,
            keys = jwks.keys().len(),
            skipped = jwks.skipped(),
            "trusted issuer JWKS loaded"
        );
        if let Ok(mut current) = self.current.write() {
            *current = Some(Cached {
                jwks: Arc::new(jwks),
                fetched: Instant::now(),
            });
        }
        Ok(())
    }

    async fn fetch_logged(&self) {
        if let Err(e) = self.fetch().await {
            tracing::warn!(issuer = %self.issuer_name, error = %e, "trusted issuer JWKS refresh failed");
        }
    }

    /// The current keys. Older than `max_age`: fetched again, at most once per cooldown;
    /// if that fails, the old keys serve until they are twice `max_age` old.
    pub async fn keys(&self) -> Result<Arc<Jwks>, JwksUnavailable> {
        if let Some(c) = self.cached().filter(|c| c.fetched.elapsed() < self.max_age) {
            return Ok(c.jwks);
        }
        let mut last = self.last_attempt.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(c) = self.cached().filter(|c| c.fetched.elapsed() < self.max_age) {
            return Ok(c.jwks);
        }
        if last.is_none_or(|t| t.elapsed() >= self.cooldown) {
            *last = Some(Instant::now());
            self.fetch_logged().await;
        }
        match self.cached() {
            Some(c) if c.fetched.elapsed() < self.max_age.saturating_mul(2) => Ok(c.jwks),
            _ => Err(JwksUnavailable),
        }
    }

    /// A token named `kid`, which the current keys lack: the provider may have rotated.
    /// Fetches again unless the last attempt is younger than the cooldown; returns keys
    /// that hold `kid`, or `None`.
    pub async fn refresh_for_kid(&self, kid: &str) -> Option<Arc<Jwks>> {
        let mut last = self.last_attempt.lock().await;
        if let Some(c) = self.cached().filter(|c| c.jwks.has_kid(kid)) {
            return Some(c.jwks);
        }
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return None;
        }
        *last = Some(Instant::now());
        self.fetch_logged().await;
        self.cached()
            .filter(|c| c.jwks.has_kid(kid))
            .map(|c| c.jwks)
    }
}

/// One trusted issuer: its settings, the verification policy and its keys.
pub struct TrustedIssuer {
    pub settings: IssuerSettings,
    pub policy: IdTokenPolicy,
    pub jwks: JwksCache,
}

/// The `[[tokens.issuers]]` of the configuration, ready to verify tokens.
#[derive(Default)]
pub struct TrustedIssuers(Vec<TrustedIssuer>);

impl TrustedIssuers {
    /// Whether no issuer is trusted (token exchange is then not offered).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Builds the issuers; JWKS files are read now (a missing or unusable file stops the
    /// start), URLs on first use.
    pub async fn load(settings: &[IssuerSettings]) -> Result<Self, StartError> {
        if settings.is_empty() {
            return Ok(Self::default());
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartError::Issuers(format!("HTTP client: {e}")))?;
        let mut issuers = Vec::with_capacity(settings.len());
        for s in settings {
            let source = match &s.jwks {
                JwksLocation::File(path) => JwksSource::File(path.clone()),
                JwksLocation::Url(url) => JwksSource::Url {
                    url: url.clone(),
                    http: http.clone(),
                },
            };
            let cache = JwksCache {
                issuer_name: s.name.clone(),
                source,
                max_age: s.jwks_max_age,
                cooldown: s.jwks_refresh_cooldown,
                current: Default::default(),
                last_attempt: Default::default(),
                fetches: AtomicU64::new(0),
            };
            if matches!(s.jwks, JwksLocation::File(_)) {
                cache
                    .fetch()
                    .await
                    .map_err(|e| StartError::Issuers(format!("issuer `{}`: {e}", s.name)))?;
            }
            let mut policy = IdTokenPolicy::new(s.issuer.clone(), s.audience.clone());
            policy.algorithms = s.algorithms.clone();
            policy.subject_claim = s.subject_claim.clone();
            issuers.push(TrustedIssuer {
                settings: s.clone(),
                policy,
                jwks: cache,
            });
        }
        Ok(Self(issuers))
    }

    /// The entry whose `issuer` is exactly `iss`.
    pub fn by_issuer(&self, iss: &str) -> Option<&TrustedIssuer> {
        self.0.iter().find(|i| i.settings.issuer == iss)
    }
}

/// Why a subject token was refused; fixed values for logs and audit entries.
pub(crate) enum Refusal {
    UnknownIssuer,
    Token(IdTokenError),
    KeysUnavailable,
}

impl Refusal {
    pub(crate) fn reason(&self) -> String {
        match self {
            Self::UnknownIssuer => "issuer not trusted".into(),
            Self::Token(e) => e.to_string(),
            Self::KeysUnavailable => "issuer keys unavailable".into(),
        }
    }
}

/// Verifies an ID token against the issuer its unverified `iss` names among `issuers`
/// (token exchange's `[[tokens.issuers]]`, CI login's `[[ci.issuers]]`).
pub(crate) async fn verify_subject_token<'a>(
    issuers: &'a TrustedIssuers,
    token: &str,
) -> Result<(&'a TrustedIssuer, VerifiedIdToken), (Option<&'a TrustedIssuer>, Refusal)> {
    // Parsed once: the unverified `iss` picks the issuer, then the same parse is verified.
    let unverified =
        idtoken::UnverifiedIdToken::parse(token).map_err(|e| (None, Refusal::Token(e)))?;
    let iss = unverified.issuer().map_err(|e| (None, Refusal::Token(e)))?;
    let issuer = issuers
        .by_issuer(iss)
        .ok_or((None, Refusal::UnknownIssuer))?;
    let fail = |r| (Some(issuer), r);
    let keys = issuer
        .jwks
        .keys()
        .await
        .map_err(|_| fail(Refusal::KeysUnavailable))?;
    match unverified.verify(&issuer.policy, &keys, unix_now()) {
        Ok(v) => Ok((issuer, v)),
        Err(IdTokenError::UnknownKid) => {
            let kid = unverified
                .kid()
                .ok_or_else(|| fail(Refusal::Token(IdTokenError::UnknownKid)))?;
            let fresh = issuer
                .jwks
                .refresh_for_kid(kid)
                .await
                .ok_or_else(|| fail(Refusal::Token(IdTokenError::UnknownKid)))?;
            unverified
                .verify(&issuer.policy, &fresh, unix_now())
                .map(|v| (issuer, v))
                .map_err(|e| fail(Refusal::Token(e)))
        }
        Err(e) => Err(fail(Refusal::Token(e))),
    }
}

/// A readable, unique user name for an exchanged identity: `<issuer name>:<subject>`
/// when the subject is short and of the characters admin-created names use; otherwise
/// a cleaned prefix and 64 bits of the subject's SHA-256, after a `~` that a verbatim
/// subject can never contain.
pub fn exchanged_user_name(issuer_name: &str, subject: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if subject.len() <= 64 && subject.chars().all(plain) {
        return format!("{issuer_name}:{subject}");
    }
    let prefix: String = subject
        .chars()
        .take(32)
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    let digest = Sha256::digest(subject.as_bytes());
    let tag = hex::encode(digest.get(..8).unwrap_or_default());
    format!("{issuer_name}:{prefix}~{tag}")
}

/// The user for a verified identity, created on first sight (no password: this user can
/// only ever sign in through exchange). `None` when the user is disabled.
async fn user_for(
    svc: &TokenService,
    issuer: &TrustedIssuer,
    id: &VerifiedIdToken,
    client: &ClientRecord,
) -> Result<Option<UserRecord>, OAuthError> {
    let lookup = || async {
        svc.store
            .user_by_subject(id.issuer(), id.subject())
            .await
            .map_err(|e| OAuthError::unavailable(&e))
    };
    let user = match lookup().await? {
        Some(u) => u,
        None => {
            let now = now_ms();
            let user = UserRecord {
                id: format!(
                    "u_{}",
                    hex::encode(keygate_auth::opaque::random_bytes::<12>())
                ),
                name: exchanged_user_name(&issuer.settings.name, id.subject()),
                password_hash: None,
                scopes: issuer.settings.scopes.to_string(),
                created_ms: now,
                disabled_ms: None,
                totp_sealed: None,
                totp_last_step: None,
                issuer: Some(id.issuer().to_owned()),
                subject: Some(id.subject().to_owned()),
            };
            let audit = AuditEvent::new(
                format!("issuer:{}", issuer.settings.name),
                "user.add",
                Outcome::Success,
            )
            .target(user.name.clone())
            .detail("via", "token_exchange")
            .detail("client", client.id.clone())
            .detail("user_id", user.id.clone());
            match svc.store.create_user(user.clone(), audit, now).await {
                Ok(()) => {
                    tracing::info!(issuer = %issuer.settings.name, user = %user.id, "user created by token exchange");
                    user
                }
                // A concurrent first exchange of the same identity won: use its user.
                Err(StoreError::Duplicate(what)) => lookup().await?.ok_or_else(|| {
                    OAuthError::unavailable(&format!("exchanged user not created: {what} exists"))
                })?,
                Err(e) => return Err(OAuthError::unavailable(&e)),
            }
        }
    };
    Ok(user.disabled_ms.is_none().then_some(user))
}

async fn audit_refusal(
    svc: &TokenService,
    client: &ClientRecord,
    issuer: Option<&TrustedIssuer>,
    reason: &str,
    token: &str,
) {
    let mut event = AuditEvent::new(
        format!("client:{}", client.id),
        "token.exchange",
        Outcome::Denied,
    )
    .detail("reason", reason)
    .detail("subject_token_ref", svc.token_ref("subject_token", token));
    if let Some(i) = issuer {
        event = event.detail("issuer", i.settings.name.clone());
    }
    if let Err(e) = svc.store.append_audit(event, now_ms()).await {
        tracing::error!(error = %e, "token exchange audit failed");
    }
}

/// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693).
pub(crate) async fn grant(
    svc: &TokenService,
    headers: &HeaderMap,
    form: &Form,
    client: &super::endpoints::AuthenticatedClient,
) -> Result<Response, OAuthError> {
    let proof_jkt = token_proof(svc, headers).await?;
    let jkt = if svc.dpop_required_for(client) {
        refresh::family_binding(client_type(client), proof_jkt.as_ref())
            .map_err(|e| OAuthError::at_token_endpoint(&e))?
    } else {
        proof_jkt
    };
    let token = form.require("subject_token")?;
    match form.require("subject_token_type")? {
        ID_TOKEN_TYPE | JWT_TOKEN_TYPE => {}
        _ => {
            return Err(OAuthError::invalid_request(
                "The subject token type is not supported",
            ));
        }
    }
    match form.get("requested_token_type") {
        None | Some(ACCESS_TOKEN_TYPE | REFRESH_TOKEN_TYPE) => {}
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "The requested token type is not supported",
            ));
        }
    }
    if form.get("actor_token").is_some() || form.get("actor_token_type").is_some() {
        return Err(OAuthError::invalid_request("Delegation is not supported"));
    }
    // keygate issues tokens for itself only.
    for target in ["audience", "resource"] {
        if form.get(target).is_some_and(|t| t != svc.issuer) {
            return Err(OAuthError::invalid_target());
        }
    }
    let requested = match form.get("scope") {
        Some(s) => Some(ScopeSet::parse(s).map_err(|_| OAuthError::invalid_scope())?),
        None => None,
    };

    let (issuer, verified) = match verify_subject_token(&svc.issuers, token).await {
        Ok(v) => v,
        Err((issuer, refusal)) => {
            let reason = refusal.reason();
            tracing::info!(
                client = %client.id,
                issuer = issuer.map(|i| i.settings.name.as_str()).unwrap_or("-"),
                reason = %reason,
                "token exchange refused"
            );
            audit_refusal(svc, client, issuer, &reason, token).await;
            return Err(match refusal {
                Refusal::KeysUnavailable => {
                    OAuthError::unavailable(&"a trusted issuer's JWKS is unavailable")
                }
                // RFC 8693 §2.2.2: an invalid or unacceptable subject token is
                // `invalid_request`.
                _ => OAuthError::invalid_request("The subject token is not acceptable"),
            });
        }
    };

    let client_scopes = ScopeSet::parse(&client.scopes).map_err(|_| OAuthError::invalid_scope())?;
    let allowed = issuer.settings.scopes.intersection(&client_scopes);
    let Some(scopes) = keygate_auth::code::grant_scopes(requested.as_ref(), &allowed) else {
        audit_refusal(svc, client, Some(issuer), "scope not allowed", token).await;
        return Err(OAuthError::invalid_scope());
    };

    let Some(user) = user_for(svc, issuer, &verified, client).await? else {
        audit_refusal(svc, client, Some(issuer), "user disabled", token).await;
        return Err(OAuthError::invalid_request(
            "The subject token is not acceptable",
        ));
    };

    let user_id = UserId::parse(&user.id)
        .map_err(|_| OAuthError::unavailable(&"a stored user id does not parse"))?;
    let client_id = ClientId::parse(&client.id).map_err(|_| OAuthError::invalid_client())?;
    let session = SessionId::generate();
    let now = now_ms();
    let refresh_token = OpaqueToken::generate(TokenKind::Refresh);
    let family = FamilyRecord::started(
        session.as_str().to_owned(),
        user.id.clone(),
        client.id.clone(),
        jkt.as_ref().map(|j| j.as_str().to_owned()),
        scopes.to_string(),
        now,
    );
    let audit = AuditEvent::new(format!("user:{}", user.id), "token.issue", Outcome::Success)
        .target(session.as_str())
        .detail("client", client.id.clone())
        .detail("grant", "token_exchange")
        .detail("issuer", issuer.settings.name.clone())
        .detail("dpop_bound", jkt.is_some())
        .detail("subject_token_ref", svc.token_ref("subject_token", token))
        .detail(
            "refresh_ref",
            svc.token_ref("refresh", refresh_token.value().expose_secret()),
        );
    svc.store
        .insert_family(family, refresh_token.hash().as_bytes().to_vec(), audit, now)
        .await
        .map_err(|e| OAuthError::unavailable(&e))?;
    grant_response(
        svc,
        client,
        AccessGrant {
            user: user_id,
            client: client_id,
            scopes: scopes.clone(),
            session,
            jkt: jkt.clone(),
            x5t: client.bound_cert().cloned(),
            tier: None,
        },
        Some(&refresh_token),
        Some(ACCESS_TOKEN_TYPE),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_readable_and_cannot_collide() {
        assert_eq!(
            exchanged_user_name("apple", "001234.abc"),
            "apple:001234.abc"
        );
        let auth0 = exchanged_user_name("auth0", "auth0|5f7c8ec7");
        assert!(auth0.starts_with("auth0:auth0_5f7c8ec7~"), "{auth0}");
        // A subject that cleans to a plain one still gets a different name.
        assert_ne!(auth0, exchanged_user_name("auth0", "auth0_5f7c8ec7"));
        assert_ne!(
            exchanged_user_name("x", "a|b"),
            exchanged_user_name("x", "a/b")
        );
        let long = exchanged_user_name("x", &"é\n".repeat(200));
        assert!(
            long.len() < 64 && !long.chars().any(char::is_control),
            "{long}"
        );
    }

    fn cache_on(path: PathBuf, cooldown: Duration) -> JwksCache {
        JwksCache {
            issuer_name: "t".into(),
            source: JwksSource::File(path),
            max_age: Duration::from_secs(3600),
            cooldown,
            current: Default::default(),
            last_attempt: Default::default(),
            fetches: AtomicU64::new(0),
        }
    }

    fn jwks_with(kid: &str) -> String {
        let key = keygate_auth::keys::SigningKey::generate(keygate_auth::jws::Algorithm::Es256);
        let mut jwk = key.verification_key().to_jwk().to_json();
        jwk.insert("kid".into(), kid.into());
        serde_json::json!({ "keys": [jwk] }).to_string()
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks_with("one")).unwrap();
        let cache = cache_on(path.clone(), Duration::from_secs(3600));
        // As at start: the file is read; that first read starts no cooldown.
        cache.fetch().await.unwrap();
        assert!(cache.keys().await.unwrap().has_kid("one"));
        assert_eq!(cache.fetch_count(), 1);
        // The provider rotates; the first unknown kid refetches, later ones wait.
        std::fs::write(&path, jwks_with("two")).unwrap();
        assert!(cache.refresh_for_kid("two").await.is_some());
        for kid in ["three", "four", "five", "two-again"] {
            assert!(cache.refresh_for_kid(kid).await.is_none());
        }
        assert!(cache.refresh_for_kid("two").await.is_some(), "cached");
        assert_eq!(cache.fetch_count(), 2);

        // With a short cooldown the next unknown kid may fetch again after it.
        let quick = cache_on(path.clone(), Duration::from_millis(50));
        assert!(quick.refresh_for_kid("nope").await.is_none());
        assert!(quick.refresh_for_kid("nope").await.is_none());
        assert_eq!(quick.fetch_count(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(quick.refresh_for_kid("nope").await.is_none());
        assert_eq!(quick.fetch_count(), 2);
    }

    #[tokio::test]
    async fn a_failed_source_is_unavailable_not_retried_in_a_loop() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_on(dir.path().join("missing.json"), Duration::from_secs(3600));
        for _ in 0..5 {
            assert!(cache.keys().await.is_err());
        }
        assert_eq!(cache.fetch_count(), 1);
    }
}
