//! RFC 9068 JWT access tokens: issuing and verifying (S01–S04, S07).
//!
//! Tokens are `typ: at+jwt`, signed by the active key of the [`SigningKeySet`], and carry
//! `iss`, `aud`, `sub`, `client_id`, `scope`, `jti`, `iat`, `nbf`, `exp`, `sid` (the
//! session, i.e. refresh-token family) and, when bound, `cnf.jkt` (DPoP, RFC 9449) and/or
//! `cnf.x5t#S256` (a client certificate, RFC 8705).
//! Verification trusts only keygate's own keys: `kid` is a lookup, and a token carrying
//! `jwk`, `jku`, `x5u`, `x5c` or `x5t` is refused.

use rand::RngCore as _;
use rand::rngs::OsRng;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::UnixTime;
use crate::error::{AuthError, Reason};
use crate::ids::{ClientId, ScopeSet, SessionId, UserId};
use crate::jwk::{CertThumbprint, Jkt};
use crate::jws::{self, Algorithm};
use crate::keys::SigningKeySet;

/// The `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The most clock skew keygate ever tolerates (S04).
pub const MAX_SKEW_SECS: i64 = 60;

/// How keygate issues and checks access tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenConfig {
    /// The issuer: keygate's public URL, compared exactly.
    pub issuer: String,
    /// The audience tokens are issued for and checked against.
    pub audience: String,
    /// Lifetime of issued tokens (S07: minutes; default 300 s).
    pub ttl_secs: i64,
    /// Tolerated clock skew, capped at [`MAX_SKEW_SECS`].
    pub skew_secs: i64,
    /// The longest `exp - iat` accepted on verification.
    pub max_lifetime_secs: i64,
    /// Algorithms accepted on access tokens (S01).
    pub allowed_algs: Vec<Algorithm>,
}

impl AccessTokenConfig {
    /// Defaults: 5-minute tokens, 60 s skew, EdDSA and ES256.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            ttl_secs: 300,
            skew_secs: MAX_SKEW_SECS,
            max_lifetime_secs: 3600,
            allowed_algs: vec![Algorithm::EdDsa, Algorithm::Es256],
        }
    }

    fn skew(&self) -> i64 {
        self.skew_secs.clamp(0, MAX_SKEW_SECS)
    }
}

/// What an access token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessGrant {
    /// The user (`sub`).
    pub user: UserId,
    /// The client (`client_id`).
    pub client: ClientId,
    /// The granted scopes only (S07).
    pub scopes: ScopeSet,
    /// The session / refresh family (`sid`).
    pub session: SessionId,
    /// The DPoP key thumbprint the token is bound to (`cnf.jkt`).
    pub jkt: Option<Jkt>,
    /// The client certificate the token is bound to (`cnf.x5t#S256`, RFC 8705 §3).
    pub x5t: Option<CertThumbprint>,
    /// What app attestation said about the app holding the token (`att`); `None` for a
    /// client that has no attestation configured.
    pub tier: Option<TrustTier>,
}

/// How far keygate trusts that a token is held by the genuine app on a real device,
/// from app attestation (Apple App Attest, Google Play Integrity) at sign-in and refresh.
///
/// Ordered from least to most trusted, so a route's minimum is a comparison. A failed
/// attestation is not the same as none: `unattested` covers devices that cannot attest
/// (older OS, emulators in development, the platform's service down), so an outage
/// degrades to the limits set for it rather than locking users out; `failed` is evidence
/// that did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrustTier {
    /// Attestation evidence was presented and did not verify.
    Failed,
    /// No evidence: the device or the platform's service could not attest.
    Unattested,
    /// The platform vouched for the genuine app, and the DPoP key is bound into it.
    Attested,
}

impl TrustTier {
    /// Every tier, least trusted first.
    pub const ALL: [TrustTier; 3] = [
        TrustTier::Failed,
        TrustTier::Unattested,
        TrustTier::Attested,
    ];

    /// The claim value and the name in configuration, metrics and audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustTier::Failed => "failed",
            TrustTier::Unattested => "unattested",
            TrustTier::Attested => "attested",
        }
    }

    /// The tier named `s` ([`TrustTier::as_str`]).
    pub fn parse(s: &str) -> Option<Self> {
        TrustTier::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for TrustTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A freshly issued access token.
#[derive(Debug)]
pub struct IssuedAccessToken {
    /// The compact JWT (secret).
    pub token: SecretString,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub expires_at: UnixTime,
    /// Seconds until `exp`, for the token response's `expires_in`.
    pub expires_in: i64,
}

/// Issuing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The key set has no active key.
    #[error("no active signing key")]
    NoActiveKey,
    /// The claims could not be encoded.
    #[error("claims encoding failed")]
    Encoding,
}

#[derive(Serialize, Deserialize)]
struct Confirmation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jkt: Option<String>,
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    x5t: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: Audience,
    sub: String,
    client_id: String,
    scope: String,
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    att: Option<String>,
}

/// Issues an access token for `grant`, signed by the active key.
pub fn issue(
    config: &AccessTokenConfig,
    keys: &SigningKeySet,
    grant: &AccessGrant,
    now: UnixTime,
) -> Result<IssuedAccessToken, IssueError> {
    let entry = keys.active().ok_or(IssueError::NoActiveKey)?;
    let mut jti_bytes = [0u8; 16];
    OsRng.fill_bytes(&mut jti_bytes);
    let jti = crate::b64::encode(jti_bytes);
    let ttl = config.ttl_secs.max(1);
    let exp = now.plus(ttl);
    let claims = Claims {
        iss: config.issuer.clone(),
        aud: Audience::One(config.audience.clone()),
        sub: grant.user.as_str().to_owned(),
        client_id: grant.client.as_str().to_owned(),
        scope: grant.scopes.to_string(),
        jti: jti.clone(),
        iat: now.0,
        nbf: now.0,
        exp: exp.0,
        sid: grant.session.as_str().to_owned(),
        cnf: (grant.jkt.is_some() || grant.x5t.is_some()).then(|| Confirmation {
            jkt: grant.jkt.as_ref().map(|j| j.as_str().to_owned()),
            x5t: grant.x5t.as_ref().map(|c| c.as_str().to_owned()),
        }),
        att: grant.tier.map(|t| t.as_str().to_owned()),
    };
    let mut header = Map::new();
    header.insert("typ".into(), Value::String(ACCESS_TOKEN_TYP.into()));
    header.insert("kid".into(), Value::String(entry.kid.as_str().to_owned()));
    let claims = serde_json::to_value(&claims).map_err(|_| IssueError::Encoding)?;
    let token = jws::sign_compact(&entry.key, header, &claims);
    Ok(IssuedAccessToken {
        token: SecretString::from(token),
        jti,
        expires_at: exp,
        expires_in: ttl,
    })
}

/// An access token whose signature, type, issuer, audience and times were checked.
///
/// Only [`verify`] makes one. It does not yet say the session is live or the DPoP proof
/// matches: [`crate::resource::verify_request`] turns it into a
/// [`crate::resource::VerifiedAccess`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedAccessToken {
    user: UserId,
    client: ClientId,
    scopes: ScopeSet,
    session: SessionId,
    jkt: Option<Jkt>,
    x5t: Option<CertThumbprint>,
    tier: Option<TrustTier>,
    jti: std::sync::Arc<str>,
    issued_at: UnixTime,
    expires_at: UnixTime,
}

impl VerifiedAccessToken {
    /// `sub`.
    pub fn user(&self) -> &UserId {
        &self.user
    }
    /// `client_id`.
    pub fn client(&self) -> &ClientId {
        &self.client
    }
    /// `scope`.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }
    /// `sid`.
    pub fn session(&self) -> &SessionId {
        &self.session
    }
    /// `cnf.jkt`, when DPoP-bound.
    pub fn jkt(&self) -> Option<&Jkt> {
        self.jkt.as_ref()
    }
    /// `cnf.x5t#S256`, when bound to a client certificate.
    pub fn x5t(&self) -> Option<&CertThumbprint> {
        self.x5t.as_ref()
    }
    /// `att`: the trust tier, when the client has attestation configured.
    pub fn tier(&self) -> Option<TrustTier> {
        self.tier
    }
    /// `jti`.
    pub fn jti(&self) -> &str {
        &self.jti
    }
    /// `iat`.
    pub fn issued_at(&self) -> UnixTime {
        self.issued_at
    }
    /// `exp`.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }
}

fn typ_is(typ: Option<&str>, expected: &str) -> bool {
    // Media types are case-insensitive and may carry the "application/" prefix
    // (RFC 7515 §4.1.9).
    typ.is_some_and(|t| {
        t.eq_ignore_ascii_case(expected)
            || t.get(..12)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/"))
                && t.get(12..)
                    .is_some_and(|s| s.eq_ignore_ascii_case(expected))
    })
}

pub(crate) fn typ_matches(typ: Option<&str>, expected: &str) -> bool {
    typ_is(typ, expected)
}

/// Verifies an access token against keygate's own key set at `now`.
pub fn verify(
    config: &AccessTokenConfig,
    keys: &SigningKeySet,
    token: &str,
    now: UnixTime,
) -> Result<VerifiedAccessToken, AuthError> {
    let jws = jws::parse_compact(token).map_err(AuthError::token)?;
    let header = jws.header();
    if !typ_is(header.typ(), ACCESS_TOKEN_TYP) {
        return Err(AuthError::token(Reason::WrongType));
    }
    if header.has_key_reference() || header.jwk().is_some() {
        return Err(AuthError::token(Reason::ForbiddenKeyHeader));
    }
    if !config.allowed_algs.contains(&header.alg()) {
        return Err(AuthError::token(Reason::AlgNotAllowed));
    }
    let kid = header.kid().ok_or(AuthError::token(Reason::MissingKid))?;
    let key = keys
        .verification_key(kid, now)
        .ok_or(AuthError::token(Reason::UnknownKid))?;
    jws.verify(key).map_err(AuthError::token)?;

    let map = jws.claims().map_err(AuthError::token)?;
    let claims: Claims = serde_json::from_value(Value::Object(map))
        .map_err(|_| AuthError::token(Reason::MalformedClaims))?;
    if claims.iss != config.issuer {
        return Err(AuthError::token(Reason::WrongIssuer));
    }
    let audience_ok = match &claims.aud {
        Audience::One(a) => *a == config.audience,
        Audience::Many(list) => list.contains(&config.audience),
    };
    if !audience_ok {
        return Err(AuthError::token(Reason::WrongAudience));
    }
    let skew = config.skew();
    if now.0 >= claims.exp.saturating_add(skew) {
        return Err(AuthError::token(Reason::Expired));
    }
    if claims.nbf > now.0.saturating_add(skew) {
        return Err(AuthError::token(Reason::NotYetValid));
    }
    if claims.iat > now.0.saturating_add(skew) {
        return Err(AuthError::token(Reason::IssuedInFuture));
    }
    if claims.exp.saturating_sub(claims.iat) > config.max_lifetime_secs {
        return Err(AuthError::token(Reason::LifetimeTooLong));
    }
    let bad = |_| AuthError::token(Reason::MalformedClaims);
    let malformed = || AuthError::token(Reason::MalformedClaims);
    let (jkt, x5t) = match claims.cnf {
        None => (None, None),
        // A confirmation that confirms nothing is not a token keygate issued.
        Some(Confirmation {
            jkt: None,
            x5t: None,
        }) => return Err(malformed()),
        Some(c) => (
            c.jkt
                .map(|j| Jkt::parse(&j).ok_or_else(malformed))
                .transpose()?,
            c.x5t
                .map(|x| CertThumbprint::parse(&x).ok_or_else(malformed))
                .transpose()?,
        ),
    };
    Ok(VerifiedAccessToken {
        user: UserId::parse(&claims.sub).map_err(bad)?,
        client: ClientId::parse(&claims.client_id).map_err(bad)?,
        scopes: ScopeSet::parse(&claims.scope).map_err(bad)?,
        session: SessionId::parse(&claims.sid).map_err(bad)?,
        jkt,
        x5t,
        tier: claims
            .att
            .map(|t| TrustTier::parse(&t).ok_or_else(malformed))
            .transpose()?,
        jti: std::sync::Arc::from(claims.jti),
        issued_at: UnixTime(claims.iat),
        expires_at: UnixTime(claims.exp),
    })
}

/// A bounded cache of signature-checked access tokens, keyed by the SHA-256 of the
/// token (an [`IdMap`](crate::ids::IdMap): only tokens keygate signed are ever inserted).
/// A hit skips parsing and the signature check; expiry is still checked on every use.
/// Revocation is not cached here: [`crate::resource::verify_request`] asks the
/// [`crate::resource::RevocationCheck`] on every call.
#[derive(Debug)]
pub struct AccessTokenCache {
    entries: std::sync::Mutex<crate::ids::IdMap<[u8; 32], VerifiedAccessToken>>,
    capacity: usize,
}

impl AccessTokenCache {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: std::sync::Mutex::default(),
            capacity,
        }
    }

    /// [`verify`], answering from the cache when the same token was verified before.
    pub fn verify(
        &self,
        config: &AccessTokenConfig,
        keys: &SigningKeySet,
        token: &str,
        now: UnixTime,
    ) -> Result<VerifiedAccessToken, AuthError> {
        use sha2::Digest as _;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let skew = config.skew();
        if let Ok(mut map) = self.entries.lock() {
            if let Some(hit) = map.get(&key) {
                if now.0 < hit.expires_at.0.saturating_add(skew) {
                    return Ok(hit.clone());
                }
                map.remove(&key);
                return Err(AuthError::token(Reason::Expired));
            }
        }
        let verified = verify(config, keys, token, now)?;
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= self.capacity {
                map.retain(|_, v| now.0 < v.expires_at.0.saturating_add(skew));
                if map.len() >= self.capacity {
                    map.clear();
                }
            }
            if self.capacity > 0 {
                map.insert(key, verified.clone());
            }
        }
        Ok(verified)
    }
}
