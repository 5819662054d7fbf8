//! DPoP proofs (RFC 9449): verification with every §4.3 check (S13), a replay cache
//! keyed by (`htu`, `jti`) (S14), stateless server nonces (S15) and proof creation for
//! clients and tests.
//!
//! `htu` is compared with the configured public base URL joined with the request path,
//! never with `Host` or `X-Forwarded-Host` (S16). Both sides are normalised (RFC 3986
//! §6.2.2–6.2.3: case, default port, dot segments, percent-encoding) and the query and
//! fragment dropped.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access::typ_matches;
use crate::b64;
use crate::clock::UnixTime;
use crate::error::{AuthError, Reason};
use crate::jwk::{Jkt, JwkError, PublicJwk};
use crate::jws::{self, Algorithm};
use crate::keys::{SigningKey, VerificationKey};
use crate::uri::percent_escape;

/// The `typ` of DPoP proofs.
pub const DPOP_TYP: &str = "dpop+jwt";

/// The longest `jti` accepted (S14).
pub const MAX_JTI_LEN: usize = 128;

/// `ath` for an access token: base64url(SHA-256(token)) (RFC 9449 §4.2).
pub fn ath_for(access_token: &str) -> String {
    b64::encode(Sha256::digest(access_token.as_bytes()))
}

/// The public base URL was unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("public base URL must be an absolute http(s) URL without credentials, query or fragment")]
pub struct InvalidBaseUrl;

/// keygate's configured external base URL, from which expected `htu` values are built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicBaseUrl {
    origin: String,
    base_path: String,
    /// Whether origin and base path come out of normalisation unchanged, as a prefix
    /// (see [`PublicBaseUrl::is_verbatim_htu`]).
    verbatim: bool,
}

impl PublicBaseUrl {
    /// Parses e.g. `https://gate.example.com` or `https://example.com/keygate`.
    pub fn parse(text: &str) -> Result<Self, InvalidBaseUrl> {
        let url = url::Url::parse(text).map_err(|_| InvalidBaseUrl)?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(InvalidBaseUrl);
        }
        let path = normalise_percent(url.path());
        let mut base = Self {
            origin: url.origin().ascii_serialization(),
            base_path: path.trim_end_matches('/').to_owned(),
            verbatim: false,
        };
        let probe = format!("{}{}/p", base.origin, base.base_path);
        base.verbatim = base.htu_for("/p").as_deref() == Some(probe.as_str());
        Ok(base)
    }

    /// The normalised `htu` a proof must carry for a request whose request target (as
    /// received, origin-form: path and optional query) is `target`.
    pub fn htu_for(&self, target: &str) -> Option<String> {
        if !target.starts_with('/') {
            return None;
        }
        let path = target.split('?').next().unwrap_or_default();
        normalise_htu(&format!("{}{}{}", self.origin, self.base_path, path))
    }

    /// Whether `htu` is exactly what [`PublicBaseUrl::htu_for`] gives for `target`, seen
    /// without parsing either: `htu` is the public URL followed by the target's path
    /// verbatim, and that path is already in normal form (only unreserved characters and
    /// `/`, no segment starting with a dot). The common case, since clients build the htu
    /// the same way; anything else goes the normalising way.
    pub fn is_verbatim_htu(&self, htu: &str, target: &str) -> bool {
        let path = target.split('?').next().unwrap_or_default();
        self.verbatim
            && path.starts_with('/')
            && !path.contains("/.")
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~'))
            && htu
                .strip_prefix(self.origin.as_str())
                .and_then(|rest| rest.strip_prefix(self.base_path.as_str()))
                == Some(path)
    }

    /// The base URL as text (origin and base path).
    pub fn as_string(&self) -> String {
        format!("{}{}", self.origin, self.base_path)
    }
}

/// Decodes percent-encoded unreserved characters and upper-cases the hex digits of the
/// rest (RFC 3986 §6.2.2.1–6.2.2.2).
fn normalise_percent(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let Some(v) = percent_escape(bytes, i) {
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(v));
                } else {
                    out.push_str(&format!("%{v:02X}"));
                }
                i += 3;
                continue;
            }
        }
        out.push(char::from(b));
        i += 1;
    }
    out
}

/// Normalises an `htu`: absolute http(s) URL, no credentials, query and fragment dropped.
pub fn normalise_htu(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    // Decoding unreserved characters may expose dot segments ("%2e%2e"); the URL parser
    // already resolved those, and a second parse would resolve any new ones.
    let path = normalise_percent(url.path());
    let again = url::Url::parse(&format!("{}{}", url.origin().ascii_serialization(), path)).ok()?;
    Some(format!(
        "{}{}",
        again.origin().ascii_serialization(),
        again.path()
    ))
}

/// The server key for stateless DPoP nonces (S15).
pub struct NonceIssuer {
    key: SecretBox<[u8; 32]>,
    window_secs: i64,
}

impl std::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceIssuer")
            .field("key", &"[REDACTED]")
            .field("window_secs", &self.window_secs)
            .finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl NonceIssuer {
    /// A nonce issuer with a 32-byte key and a window length (a nonce stays valid for one
    /// to two windows). All replicas must share the key.
    pub fn new(key: SecretBox<[u8; 32]>, window_secs: i64) -> Self {
        Self {
            key,
            window_secs: window_secs.max(1),
        }
    }

    fn window(&self, now: UnixTime) -> i64 {
        now.0.div_euclid(self.window_secs)
    }

    fn tag(&self, window: i64) -> Option<[u8; 16]> {
        let mut mac = HmacSha256::new_from_slice(self.key.expose_secret()).ok()?;
        mac.update(b"keygate dpop nonce v1\0");
        mac.update(&window.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; 16];
        for (t, f) in tag.iter_mut().zip(full.iter()) {
            *t = *f;
        }
        Some(tag)
    }

    /// The nonce for the current window.
    pub fn issue(&self, now: UnixTime) -> String {
        let window = self.window(now);
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&window.to_be_bytes());
        // HMAC takes keys of any length, so the tag always exists; were it ever missing
        // the nonce would be malformed and simply fail validation.
        if let Some(tag) = self.tag(window) {
            bytes.extend_from_slice(&tag);
        }
        b64::encode(bytes)
    }

    /// Whether `nonce` was issued in the current or the previous window.
    pub fn validate(&self, nonce: &str, now: UnixTime) -> bool {
        let Some(bytes) = b64::decode_array::<24>(nonce) else {
            return false;
        };
        let (w, tag) = bytes.split_at(8);
        let Ok(w) = <[u8; 8]>::try_from(w) else {
            return false;
        };
        let window = i64::from_be_bytes(w);
        let current = self.window(now);
        if window != current && window != current.saturating_sub(1) {
            return false;
        }
        self.tag(window)
            .is_some_and(|expected| bool::from(expected.ct_eq(tag)))
    }
}

/// How proofs are checked.
#[derive(Debug)]
pub struct DpopConfig {
    /// keygate's public base URL; expected `htu` values derive from it only.
    pub public_base: PublicBaseUrl,
    /// Algorithms accepted in proofs (asymmetric only by construction).
    pub allowed_algs: Vec<Algorithm>,
    /// How old a proof's `iat` may be.
    pub max_age_secs: i64,
    /// How far in the future a proof's `iat` may be (clock skew, ≤ 60).
    pub future_skew_secs: i64,
    /// When set, every proof must carry a current server nonce.
    pub nonces: Option<NonceIssuer>,
    /// Set when the replay cache lives in this process only: see [`RestartGuard`].
    pub restart_guard: Option<RestartGuard>,
    /// Proof keys already parsed, so a client's key is decoded and checked once rather
    /// than on every proof. It holds public keys only, never a verdict.
    pub key_cache: ProofKeyCache,
}

/// A bounded memo of the public keys named by proofs' `jwk` headers, keyed by the
/// canonical JWK members: a hit skips decoding the key and its point checks (for
/// Ed25519, decompression and the small-order test, about 5 µs of a 50 µs proof check;
/// see `benches/verify.rs`). Only keys that parsed are stored, and a key is a pure
/// function of its members, so a hit answers exactly as a fresh parse would. Every
/// proof is still checked in full with the key: signature, `htm`, `htu`, `iat`, `jti`,
/// `ath`, nonce. Nothing about a proof's outcome is remembered here.
///
/// When full, an arbitrary entry (the map's hash order is random per process) makes
/// room for the new one. A capacity of 0 turns the memo off.
pub struct ProofKeyCache {
    entries: Mutex<HashMap<PublicJwk, VerificationKey>>,
    capacity: usize,
}

impl ProofKeyCache {
    /// The capacity [`DpopConfig::new`] uses: a few hundred bytes per key, about 2 MB full.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A memo of at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The verification key `jwk` names, from the memo or freshly parsed (and then kept).
    pub fn key_for(&self, jwk: &PublicJwk) -> Result<VerificationKey, JwkError> {
        if let Ok(map) = self.entries.lock() {
            if let Some(key) = map.get(jwk) {
                return Ok(key.clone());
            }
        }
        // Parsed outside the lock; a failure is not remembered.
        let key = jwk.verification_key()?;
        if self.capacity > 0 {
            if let Ok(mut map) = self.entries.lock() {
                if map.len() >= self.capacity && !map.contains_key(jwk) {
                    let victim = map.keys().next().cloned();
                    if let Some(victim) = victim {
                        map.remove(&victim);
                    }
                }
                map.insert(jwk.clone(), key.clone());
            }
        }
        Ok(key)
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for ProofKeyCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for ProofKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofKeyCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

/// Keeps S14 ("replay after a restart is still refused") for a replay cache held in
/// process memory, which a restart empties.
///
/// `until` is the latest `iat` an earlier process may have accepted (its recorded
/// horizon, or this process's start plus the future skew if nothing is known). A proof
/// with `iat` at or before it is accepted only with a nonce this process issued (RFC 9449
/// §8): the nonce key is random per process, so no earlier proof can carry one. A client
/// answers `use_dpop_nonce` by signing again with the nonce, once; proofs made after
/// `until` need no nonce, so the guard costs nothing a few seconds after a restart.
pub struct RestartGuard {
    until: UnixTime,
    nonces: NonceIssuer,
}

impl RestartGuard {
    /// A guard for proofs with `iat` up to `until`. `key` must be random and this
    /// process's own (never stored); the token endpoint and the resources of one process
    /// share it, so one nonce serves both.
    pub fn new(until: UnixTime, key: [u8; 32]) -> Self {
        Self {
            until,
            nonces: NonceIssuer::new(SecretBox::new(Box::new(key)), 300),
        }
    }
}

impl std::fmt::Debug for RestartGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestartGuard")
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

impl DpopConfig {
    /// Defaults: Ed25519 (named `EdDSA` or `Ed25519`) and ES256, proofs at most 60 s old, 5 s of future skew, no nonce.
    pub fn new(public_base: PublicBaseUrl) -> Self {
        Self {
            public_base,
            allowed_algs: vec![Algorithm::EdDsa, Algorithm::Ed25519, Algorithm::Es256],
            max_age_secs: 60,
            future_skew_secs: 5,
            nonces: None,
            restart_guard: None,
            key_cache: ProofKeyCache::default(),
        }
    }

    /// How long a replay-cache entry must live for a proof with this `iat`.
    fn replay_expiry(&self, iat: i64) -> UnixTime {
        UnixTime(iat).plus(self.max_age_secs.max(0).saturating_add(1))
    }
}

/// The key a replay-cache entry is stored under: SHA-256 of the normalised `htu` and the
/// `jti`, so entries have a fixed size and hold no request data in clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplayKey([u8; 32]);

impl ReplayKey {
    /// The key for (`htu`, `jti`).
    pub fn new(htu: &str, jti: &str) -> Self {
        let mut h = Sha256::new();
        h.update((htu.len() as u64).to_be_bytes());
        h.update(htu.as_bytes());
        h.update(jti.as_bytes());
        Self(h.finalize().into())
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Whether a replay-cache insertion found the key already present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// First sighting; the key is now stored.
    Fresh,
    /// Seen before: a replay.
    Replayed,
}

/// The replay cache could not answer; callers fail closed (S35).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("replay cache unavailable")]
pub struct ReplayCacheUnavailable;

/// A set of (`htu`, `jti`) keys seen within the acceptance window (S14).
///
/// Contract for implementations: `insert_if_absent` is one atomic step shared by every
/// replica (e.g. `INSERT … ON CONFLICT DO NOTHING` and checking the row count, or Redis
/// `SET key 1 NX EXAT expires_at`); an entry is kept at least until `expires_at` and
/// survives restarts; on any doubt answer `Err`, never `Fresh`.
pub trait ReplayCache: Send + Sync {
    /// Stores `key` until `expires_at` unless present.
    fn insert_if_absent(
        &self,
        key: ReplayKey,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> impl Future<Output = Result<Freshness, ReplayCacheUnavailable>> + Send;
}

#[derive(Debug, Default)]
struct MemoryInner {
    expiry_of: HashMap<ReplayKey, UnixTime>,
    by_expiry: BTreeSet<(UnixTime, ReplayKey)>,
}

/// An in-process [`ReplayCache`] for one replica (embedded mode and tests). Bounded: when
/// full of live entries it answers `Err` rather than forget one.
#[derive(Debug)]
pub struct InMemoryReplayCache {
    inner: Mutex<MemoryInner>,
    capacity: usize,
}

impl InMemoryReplayCache {
    /// A cache holding at most `capacity` live entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(MemoryInner::default()),
            capacity,
        }
    }

    fn insert_now(
        &self,
        key: ReplayKey,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<Freshness, ReplayCacheUnavailable> {
        let mut inner = self.inner.lock().map_err(|_| ReplayCacheUnavailable)?;
        while let Some(&(at, old)) = inner.by_expiry.first() {
            if at > now {
                break;
            }
            inner.by_expiry.remove(&(at, old));
            inner.expiry_of.remove(&old);
        }
        if inner.expiry_of.contains_key(&key) {
            return Ok(Freshness::Replayed);
        }
        if inner.expiry_of.len() >= self.capacity {
            return Err(ReplayCacheUnavailable);
        }
        inner.expiry_of.insert(key, expires_at);
        inner.by_expiry.insert((expires_at, key));
        Ok(Freshness::Fresh)
    }
}

impl ReplayCache for InMemoryReplayCache {
    fn insert_if_absent(
        &self,
        key: ReplayKey,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> impl Future<Output = Result<Freshness, ReplayCacheUnavailable>> + Send {
        std::future::ready(self.insert_now(key, now, expires_at))
    }
}

/// The parts of an HTTP request a proof is checked against.
#[derive(Clone, Copy, Debug)]
pub struct ProofRequest<'a> {
    /// The request method, e.g. `POST`.
    pub method: &'a str,
    /// The request target as received (origin-form: path and optional query).
    pub target: &'a str,
    /// Every `DPoP` header value of the request, raw.
    pub dpop_headers: &'a [&'a [u8]],
    /// At a resource: the presented access token; its hash must equal `ath`.
    pub access_token: Option<&'a str>,
    /// The thumbprint the proof key must have (`cnf.jkt`, or a refresh family's key).
    pub expected_jkt: Option<&'a Jkt>,
}

/// A proof that passed every check and was recorded in the replay cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProof {
    jkt: Jkt,
    jwk: PublicJwk,
}

impl VerifiedProof {
    /// The thumbprint of the proof key, to bind new tokens to (`cnf.jkt`).
    pub fn jkt(&self) -> &Jkt {
        &self.jkt
    }

    /// The proof's public key.
    pub fn jwk(&self) -> &PublicJwk {
        &self.jwk
    }
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, AuthError> {
    match claims.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(AuthError::proof(Reason::MalformedProof)),
    }
}

fn numeric_date(value: Option<&Value>) -> Option<i64> {
    let n = value?.as_number()?;
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f.floor() as i64)
    })
}

/// Verifies a DPoP proof with every check of RFC 9449 §4.3 and records its `jti`.
///
/// The replay cache is consulted last, so a proof failing another check does not use
/// up its `jti`.
pub async fn verify_proof<R: ReplayCache + ?Sized>(
    config: &DpopConfig,
    request: &ProofRequest<'_>,
    replay: &R,
    now: UnixTime,
) -> Result<VerifiedProof, AuthError> {
    let (key_for_replay, expires_at, verified) = check_proof(config, request, now)?;
    match replay
        .insert_if_absent(key_for_replay, now, expires_at)
        .await
    {
        Ok(Freshness::Fresh) => Ok(verified),
        Ok(Freshness::Replayed) => Err(AuthError::proof(Reason::Replayed)),
        Err(ReplayCacheUnavailable) => Err(AuthError::unavailable(Reason::ReplayCacheUnavailable)),
    }
}

/// Every stateless check; returns the replay key and its expiry.
fn check_proof(
    config: &DpopConfig,
    request: &ProofRequest<'_>,
    now: UnixTime,
) -> Result<(ReplayKey, UnixTime, VerifiedProof), AuthError> {
    // 1. Exactly one DPoP header.
    let raw = match request.dpop_headers {
        [] => return Err(AuthError::proof(Reason::MissingProof)),
        [one] => *one,
        _ => return Err(AuthError::proof(Reason::MultipleProofs)),
    };
    let text = std::str::from_utf8(raw).map_err(|_| AuthError::proof(Reason::MalformedProof))?;
    // 2. A well-formed JWT.
    let jws = jws::parse_compact(text).map_err(AuthError::proof)?;
    let header = jws.header();
    // 4. typ.
    if !typ_matches(header.typ(), DPOP_TYP) {
        return Err(AuthError::proof(Reason::WrongType));
    }
    // 5. An allowed asymmetric algorithm (none and HMAC never parse).
    if !config.allowed_algs.contains(&header.alg()) {
        return Err(AuthError::proof(Reason::AlgNotAllowed));
    }
    // 7. jwk: public only, and a key keygate can verify with.
    let jwk_json = header
        .jwk()
        .ok_or(AuthError::proof(Reason::MalformedProof))?;
    let jwk = PublicJwk::from_json(jwk_json).map_err(|e| match e {
        JwkError::PrivateMembers => AuthError::proof(Reason::ProofJwkPrivate),
        _ => AuthError::proof(Reason::ProofJwkInvalid),
    })?;
    let key = config
        .key_cache
        .key_for(&jwk)
        .map_err(|_| AuthError::proof(Reason::ProofJwkInvalid))?;
    // 6. Signature with that key (the alg must fit the key).
    jws.verify(&key).map_err(AuthError::proof)?;

    // 3. Required claims.
    let claims = jws.claims().map_err(AuthError::proof)?;
    let jti = string_claim(&claims, "jti")?;
    let htm = string_claim(&claims, "htm")?;
    let htu = string_claim(&claims, "htu")?;
    let iat = numeric_date(claims.get("iat")).ok_or(AuthError::proof(Reason::MalformedProof))?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(AuthError::proof(Reason::JtiInvalid));
    }
    // 8. htm.
    if htm != request.method {
        return Err(AuthError::proof(Reason::HtmMismatch));
    }
    // 9. htu against the configured public URL, never Host. An htu that is already the
    // normalised expected value, written out, needs no parsing (and is what the replay
    // key is made of either way).
    let expected = if config.public_base.is_verbatim_htu(htu, request.target) {
        std::borrow::Cow::Borrowed(htu)
    } else {
        let expected = config
            .public_base
            .htu_for(request.target)
            .ok_or(AuthError::request(Reason::HtuMismatch))?;
        let presented = normalise_htu(htu).ok_or(AuthError::proof(Reason::HtuMismatch))?;
        if presented != expected {
            return Err(AuthError::proof(Reason::HtuMismatch));
        }
        std::borrow::Cow::Owned(expected)
    };
    // 11. iat window.
    let future = config
        .future_skew_secs
        .clamp(0, crate::access::MAX_SKEW_SECS);
    if iat > now.0.saturating_add(future) || iat < now.0.saturating_sub(config.max_age_secs) {
        return Err(AuthError::proof(Reason::IatOutOfWindow));
    }
    // 10. Server nonce: one this process issued if the proof may predate the process
    // (its replay cache would not know it), else the configured one, if any.
    let guard = config
        .restart_guard
        .as_ref()
        .filter(|g| iat <= g.until.0)
        .map(|g| &g.nonces);
    if let Some(nonces) = guard.or(config.nonces.as_ref()) {
        match claims.get("nonce") {
            None => {
                return Err(AuthError::use_nonce(
                    Reason::NonceMissing,
                    nonces.issue(now),
                ));
            }
            Some(Value::String(n)) if nonces.validate(n, now) => {}
            Some(_) => {
                return Err(AuthError::use_nonce(
                    Reason::NonceInvalid,
                    nonces.issue(now),
                ));
            }
        }
    }
    // 12. At a resource: ath binds the proof to the token.
    if let Some(token) = request.access_token {
        let ath = match claims.get("ath") {
            Some(Value::String(a)) => a.as_str(),
            _ => return Err(AuthError::proof(Reason::AthMissing)),
        };
        if !bool::from(ath.as_bytes().ct_eq(ath_for(token).as_bytes())) {
            return Err(AuthError::proof(Reason::AthMismatch));
        }
    }
    let jkt = jwk.thumbprint();
    if let Some(expected_jkt) = request.expected_jkt {
        if *expected_jkt != jkt {
            return Err(AuthError::proof(Reason::JktMismatch));
        }
    }
    Ok((
        ReplayKey::new(&expected, jti),
        config.replay_expiry(iat),
        VerifiedProof { jkt, jwk },
    ))
}

/// What goes into a proof created by [`create_proof`].
#[derive(Clone, Debug)]
pub struct ProofClaims<'a> {
    /// `htm`.
    pub htm: &'a str,
    /// `htu`.
    pub htu: &'a str,
    /// `iat`.
    pub iat: UnixTime,
    /// `jti`.
    pub jti: &'a str,
    /// `nonce`, when the server asked for one.
    pub nonce: Option<&'a str>,
    /// The access token the proof accompanies (its hash becomes `ath`).
    pub access_token: Option<&'a str>,
}

/// Creates a DPoP proof signed by `key` (for the client SDK and tests).
pub fn create_proof(key: &SigningKey, claims: &ProofClaims<'_>) -> String {
    let mut header = Map::new();
    header.insert("typ".into(), Value::String(DPOP_TYP.into()));
    header.insert(
        "jwk".into(),
        Value::Object(key.verification_key().to_jwk().to_json()),
    );
    let mut body = Map::new();
    body.insert("jti".into(), Value::String(claims.jti.into()));
    body.insert("htm".into(), Value::String(claims.htm.into()));
    body.insert("htu".into(), Value::String(claims.htu.into()));
    body.insert("iat".into(), Value::from(claims.iat.0));
    if let Some(nonce) = claims.nonce {
        body.insert("nonce".into(), Value::String(nonce.into()));
    }
    if let Some(token) = claims.access_token {
        body.insert("ath".into(), Value::String(ath_for(token)));
    }
    jws::sign_compact(key, header, &Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only for a map hashed by std's keyed SipHash.
    fn keyed_sip<K, V>(_: &HashMap<K, V, std::hash::RandomState>) {}

    #[test]
    fn caller_chosen_keys_keep_keyed_hashing() {
        // Any caller picks its proof keys and `jti`s: these maps are never `IdMap`s
        // (ARCHITECTURE.md, Invariants).
        keyed_sip(&ProofKeyCache::new(1).entries.lock().unwrap());
        keyed_sip(&MemoryInner::default().expiry_of);
    }

    proptest::proptest! {
        /// The verbatim shortcut accepts an htu only when it is exactly the normalised
        /// expected value (so the replay key is the same either way), and takes the
        /// ordinary paths.
        #[test]
        fn verbatim_htu_is_the_normalised_value(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("/"), proptest::strategy::Just("a"),
                    proptest::strategy::Just("."), proptest::strategy::Just(".."),
                    proptest::strategy::Just("%2e"), proptest::strategy::Just("%2F"),
                    proptest::strategy::Just("%41"), proptest::strategy::Just("%zz"),
                    proptest::strategy::Just("\\"), proptest::strategy::Just(";x"),
                    proptest::strategy::Just("~"), proptest::strategy::Just("@"),
                    proptest::strategy::Just(":"), proptest::strategy::Just("?q=1"),
                    proptest::strategy::Just("#f"), proptest::strategy::Just("%"),
                    proptest::strategy::Just("B-_"),
                ],
                0..8,
            ),
            base in proptest::prop_oneof![
                proptest::strategy::Just("https://gate.example.com"),
                proptest::strategy::Just("http://127.0.0.1:8080/kg/"),
                proptest::strategy::Just("https://Gate.Example.com:443/a%2e/"),
                proptest::strategy::Just("https://gate.example.com/x%2Fy/"),
            ],
        ) {
            let base = PublicBaseUrl::parse(base).unwrap();
            let target = format!("/{}", pieces.concat());
            let path = target.split('?').next().unwrap();
            let htu = format!("{}{}", base.as_string(), path);
            if base.is_verbatim_htu(&htu, &target) {
                proptest::prop_assert_eq!(base.htu_for(&target), Some(htu));
            }
        }
    }

    #[test]
    fn verbatim_htu_needs_the_exact_normal_text() {
        let base = PublicBaseUrl::parse("https://gate.example.com/kg").unwrap();
        for (htu, target) in [
            ("https://gate.example.com/kg/proxy/a", "/proxy/a?x=1"),
            (
                "https://gate.example.com/kg/v1/chat.completions",
                "/v1/chat.completions",
            ),
        ] {
            assert!(base.is_verbatim_htu(htu, target), "{htu}");
        }
        for (htu, target) in [
            ("https://gate.example.com:443/kg/proxy/a", "/proxy/a"),
            ("https://GATE.example.com/kg/proxy/a", "/proxy/a"),
            ("https://gate.example.com/kg/proxy/b", "/proxy/a"),
            ("https://gate.example.com/proxy/a", "/proxy/a"),
            ("https://gate.example.com/kg/proxy/a?x=1", "/proxy/a?x=1"),
            ("http://gate.example.com/kg/proxy/a", "/proxy/a"),
            // Not in normal form: these go the normalising way.
            ("https://gate.example.com/kg/proxy/a/../b", "/proxy/a/../b"),
            ("https://gate.example.com/kg/proxy/%61", "/proxy/%61"),
            ("https://gate.example.com/kg*", "*"),
        ] {
            assert!(!base.is_verbatim_htu(htu, target), "{htu}");
        }
    }

    #[test]
    fn htu_normalisation() {
        let base = PublicBaseUrl::parse("https://Gate.Example.com:443/").unwrap();
        assert_eq!(
            base.htu_for("/proxy/a?x=1").unwrap(),
            "https://gate.example.com/proxy/a"
        );
        assert_eq!(
            normalise_htu("HTTPS://gate.example.com:443/proxy/%61?q#f").unwrap(),
            "https://gate.example.com/proxy/a"
        );
        assert_eq!(
            normalise_htu("https://gate.example.com/x/%2e%2e/proxy/%2fa").unwrap(),
            "https://gate.example.com/proxy/%2Fa"
        );
        assert!(normalise_htu("https://user@gate.example.com/").is_none());
        assert!(normalise_htu("ftp://gate.example.com/").is_none());
        let sub = PublicBaseUrl::parse("https://example.com/kg").unwrap();
        assert_eq!(
            sub.htu_for("/oauth2/token").unwrap(),
            "https://example.com/kg/oauth2/token"
        );
        assert!(sub.htu_for("oauth2/token").is_none());
    }

    #[test]
    fn nonce_windows() {
        let issuer = NonceIssuer::new(SecretBox::new(Box::new([7u8; 32])), 300);
        let t = UnixTime(1_000_000);
        let n = issuer.issue(t);
        assert!(issuer.validate(&n, t));
        assert!(issuer.validate(&n, t.plus(300)));
        assert!(!issuer.validate(&n, t.plus(600)));
        let other = NonceIssuer::new(SecretBox::new(Box::new([8u8; 32])), 300);
        assert!(!other.validate(&n, t));
        assert!(!issuer.validate("garbage", t));
    }

    #[test]
    fn memory_cache_expires_and_bounds() {
        let cache = InMemoryReplayCache::new(2);
        let k = |s: &str| ReplayKey::new("https://a/", s);
        let t = UnixTime(100);
        assert_eq!(
            cache.insert_now(k("1"), t, t.plus(10)),
            Ok(Freshness::Fresh)
        );
        assert_eq!(
            cache.insert_now(k("1"), t, t.plus(10)),
            Ok(Freshness::Replayed)
        );
        assert_eq!(
            cache.insert_now(k("2"), t, t.plus(10)),
            Ok(Freshness::Fresh)
        );
        assert_eq!(
            cache.insert_now(k("3"), t, t.plus(10)),
            Err(ReplayCacheUnavailable)
        );
        assert_eq!(
            cache.insert_now(k("3"), t.plus(10), t.plus(20)),
            Ok(Freshness::Fresh)
        );
    }
}
