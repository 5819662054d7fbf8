//! ID tokens of a trusted external identity provider (Firebase Auth, Sign in with Apple,
//! Auth0, any OIDC issuer with a JWKS), verified for RFC 8693 token exchange.
//!
//! This is the one place keygate checks a JWT it did not sign, so it has its own
//! algorithm list ([`ExternalAlg`]: RS256, ES256, EdDSA) apart from [`crate::jws`], which
//! serves keygate's own tokens and never learns RSA. The parsing is `jws`'s: the same
//! bound, split, strict JSON and shared header rules, refused with the same
//! [`JoseError`]s (inside [`IdTokenError::Jose`]). The rules:
//!
//! - `alg` must be in the issuer's configured allow-list *and* fit the key the `kid`
//!   names: its `kty`/`crv`, and its `alg` member when present. `none` in any spelling
//!   and every `HS*` are refused before a key is looked at, so a public key can never
//!   be used as an HMAC secret (RFC 8725 §3.1–3.2, S01).
//! - Keys come only from the issuer's JWKS; `kid` is a lookup. Tokens carrying `jwk`,
//!   `jku`, `x5u` or `x5c` are refused (S02); `crit` is refused (S05).
//! - RS256 is RSASSA-PKCS1-v1_5 with SHA-256 through `ring`, moduli of 2048–8192 bits.
//!   ES256 and EdDSA reuse [`crate::jws::verify_signature`] (64-byte R‖S, range checks,
//!   `verify_strict`).
//! - `iss` exactly, `aud` (a string or an array) contains the audience, `exp` required,
//!   `nbf` when present, `iat` required and not in the future, each with at most
//!   [`crate::access::MAX_SKEW_SECS`] of skew (S04).
//! - The subject comes from a configurable claim (default `sub`) and must be a string of
//!   1–[`MAX_SUBJECT_LEN`] bytes without control characters.
//!
//! Errors are [`IdTokenError`] values: fixed, safe to log, never holding token material.
//! A refusal shared with keygate's own tokens is [`IdTokenError::Jose`], whose text is the
//! [`JoseError`]'s own (audit entries name it so).

use serde_json::{Map, Value};

use crate::access::{MAX_SKEW_SECS, typ_matches};
use crate::clock::UnixTime;
use crate::jwk::{PRIVATE_MEMBERS, PublicJwk};
use crate::jws::{self, Algorithm, JoseError, Segments};
use crate::keys::VerificationKey;
use crate::{b64, json};

/// The largest ID token accepted (S05).
pub const MAX_ID_TOKEN_LEN: usize = jws::MAX_COMPACT_LEN;

/// The longest subject accepted (OpenID Connect Core §2: at most 255 ASCII characters).
pub const MAX_SUBJECT_LEN: usize = 255;

/// The most keys read from one JWKS; the rest are ignored.
pub const MAX_JWKS_KEYS: usize = 64;

/// The largest JWKS document accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A signature algorithm accepted on external ID tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExternalAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3), 2048–8192-bit keys.
    Rs256,
    /// ECDSA P-256 with SHA-256 (RFC 7518 §3.4).
    Es256,
    /// Ed25519 (RFC 8037).
    EdDsa,
}

impl ExternalAlg {
    /// Every algorithm, in the order they are documented.
    pub const ALL: [Self; 3] = [Self::Rs256, Self::Es256, Self::EdDsa];

    /// The `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Parses an `alg` name exactly (names are case-sensitive, RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl std::fmt::Display for ExternalAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an ID token was refused. Fixed values: safe to log, never shown to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// Refused by the rules every JWS keygate reads shares: longer than
    /// [`MAX_ID_TOKEN_LEN`], malformed, bad JSON or header, `crit`, `none`, HMAC, an
    /// `alg` that does not fit the key the `kid` names, or a signature that does not
    /// verify ([`JoseError::BadSignature`], also for a malformed one).
    #[error(transparent)]
    Jose(#[from] JoseError),
    /// `typ` is present and is not `JWT`.
    #[error("wrong typ")]
    WrongType,
    /// `jwk`, `jku`, `x5u` or `x5c` is present: keys come only from the JWKS.
    #[error("key-carrying header")]
    ForbiddenKeyHeader,
    /// `alg` is not in the issuer's allow-list (or not one keygate knows).
    #[error("algorithm not allowed for this issuer")]
    AlgNotAllowed,
    /// No `kid`, and the JWKS holds more than one key.
    #[error("missing kid")]
    MissingKid,
    /// The `kid` is not in the issuer's JWKS (the caller may refresh the JWKS once).
    #[error("unknown kid")]
    UnknownKid,
    /// A claim is missing or of the wrong type.
    #[error("malformed claims")]
    MalformedClaims,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `exp` has passed.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("issued in the future")]
    IssuedInFuture,
    /// The subject claim is absent.
    #[error("subject claim missing")]
    MissingSubject,
    /// The subject claim is not a string of sane length without control characters.
    #[error("subject claim malformed")]
    BadSubject,
}

/// Why a JWKS document was refused as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Larger than [`MAX_JWKS_BYTES`].
    #[error("JWKS too large")]
    TooLarge,
    /// Not a JSON object with a `keys` array.
    #[error("not a JWKS document")]
    Malformed,
    /// A key carries private or symmetric key material: a misconfigured source.
    #[error("JWKS holds private or symmetric key material")]
    PrivateMembers,
    /// No key in it is usable for any supported algorithm.
    #[error("JWKS has no usable signing key")]
    NoUsableKey,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyMaterial {
    /// Big-endian modulus (no leading zero) and exponent.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Curve(VerificationKey),
}

/// One key of a trusted issuer's JWKS, with the one algorithm it verifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    kid: Option<String>,
    alg: ExternalAlg,
    material: KeyMaterial,
}

impl TrustedKey {
    /// The `kid`, if the JWK has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> ExternalAlg {
        self.alg
    }

    /// Verifies `signature` over `input` under `alg`, which must be the key's own.
    pub fn verify(
        &self,
        alg: ExternalAlg,
        input: &[u8],
        signature: &[u8],
    ) -> Result<(), IdTokenError> {
        if alg != self.alg {
            return Err(JoseError::AlgKeyMismatch.into());
        }
        match (&self.material, alg) {
            (KeyMaterial::Rsa { n, e }, ExternalAlg::Rs256) => {
                ring::signature::RsaPublicKeyComponents { n, e }
                    .verify(
                        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                        input,
                        signature,
                    )
                    .map_err(|_| JoseError::BadSignature.into())
            }
            (KeyMaterial::Curve(key), ExternalAlg::Es256 | ExternalAlg::EdDsa) => {
                let own = match alg {
                    ExternalAlg::Es256 => Algorithm::Es256,
                    _ => Algorithm::EdDsa,
                };
                // A malformed signature is named as one that does not verify, as for RS256.
                jws::verify_signature(key, own, input, signature).map_err(|e| match e {
                    JoseError::AlgKeyMismatch => e.into(),
                    _ => JoseError::BadSignature.into(),
                })
            }
            _ => Err(JoseError::AlgKeyMismatch.into()),
        }
    }
}

/// The usable keys of a trusted issuer's JWKS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<TrustedKey>,
    skipped: usize,
}

fn rsa_material(n: &str, e: &str) -> Option<KeyMaterial> {
    let n = b64::decode(n)?;
    let e = b64::decode(e)?;
    // Leading zero octets carry no value (RFC 7518 §6.3.1.1 forbids them; be lenient).
    let n: Vec<u8> = n.into_iter().skip_while(|&b| b == 0).collect();
    let e: Vec<u8> = e.into_iter().skip_while(|&b| b == 0).collect();
    let bits = n
        .first()
        .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
    // ring verifies only 2048–8192-bit moduli with an odd exponent 3 ≤ e < 2^33.
    let e_ok = (1..=5).contains(&e.len())
        && e.last().is_some_and(|b| b & 1 == 1)
        && !(e.len() == 1 && e.first().is_some_and(|&b| b < 3));
    ((2048..=8192).contains(&bits) && e_ok).then_some(KeyMaterial::Rsa { n, e })
}

/// One JWK to a key, or `None` when keygate cannot use it for signatures.
fn trusted_key(map: &Map<String, Value>) -> Option<TrustedKey> {
    let kid = match map.get("kid") {
        None => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k.clone()),
        Some(_) => return None,
    };
    match map.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return None,
    }
    match map.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|o| o == "verify") => {}
        Some(_) => return None,
    }
    let declared = match map.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(a.as_str()),
        Some(_) => return None,
    };
    let (alg, material) = match PublicJwk::from_json(map).ok()? {
        PublicJwk::Rsa { n, e } => (ExternalAlg::Rs256, rsa_material(&n, &e)?),
        jwk @ PublicJwk::P256 { .. } => (
            ExternalAlg::Es256,
            KeyMaterial::Curve(jwk.verification_key().ok()?),
        ),
        jwk @ PublicJwk::Ed25519 { .. } => (
            ExternalAlg::EdDsa,
            KeyMaterial::Curve(jwk.verification_key().ok()?),
        ),
    };
    // A key that names another algorithm (RS384, PS256, ...) verifies nothing here.
    if declared.is_some_and(|d| d != alg.as_str()) {
        return None;
    }
    Some(TrustedKey { kid, alg, material })
}

impl Jwks {
    /// Parses a JWKS document (RFC 7517 §5). Keys keygate cannot use (other types,
    /// curves or algorithms, `use` other than `sig`, RSA under 2048 bits) are skipped
    /// and counted; a key with private or symmetric members refuses the whole document.
    pub fn parse(bytes: &[u8]) -> Result<Self, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let doc = json::parse_object(bytes).ok_or(JwksError::Malformed)?;
        let Some(Value::Array(list)) = doc.get("keys") else {
            return Err(JwksError::Malformed);
        };
        let mut jwks = Self::default();
        for item in list {
            let Value::Object(map) = item else {
                jwks.skipped += 1;
                continue;
            };
            if PRIVATE_MEMBERS.iter().any(|m| map.contains_key(*m)) {
                return Err(JwksError::PrivateMembers);
            }
            match trusted_key(map) {
                Some(k) if jwks.keys.len() < MAX_JWKS_KEYS => jwks.keys.push(k),
                _ => jwks.skipped += 1,
            }
        }
        if jwks.keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(jwks)
    }

    /// The usable keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// How many JWKs were skipped as unusable.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether a key with this `kid` is present.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid() == Some(kid))
    }

    /// The key for a token's `kid` and `alg`: by `kid` when present (the `alg` picks among
    /// keys sharing a `kid`), else the JWKS's only key.
    pub fn find(&self, kid: Option<&str>, alg: ExternalAlg) -> Result<&TrustedKey, IdTokenError> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid() == Some(kid)).peekable();
                if named.peek().is_none() {
                    return Err(IdTokenError::UnknownKid);
                }
                named
                    .find(|k| k.alg == alg)
                    .ok_or(JoseError::AlgKeyMismatch.into())
            }
            None => match self.keys.as_slice() {
                [only] if only.alg == alg => Ok(only),
                [_] => Err(JoseError::AlgKeyMismatch.into()),
                _ => Err(IdTokenError::MissingKid),
            },
        }
    }
}

/// What a trusted issuer's tokens must satisfy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdTokenPolicy {
    /// The `iss` value, compared exactly.
    pub issuer: String,
    /// The audience `aud` must contain (for OIDC ID tokens: keygate's client id at the
    /// provider, e.g. the Firebase project id or the app's bundle id).
    pub audience: String,
    /// Algorithms accepted from this issuer.
    pub algorithms: Vec<ExternalAlg>,
    /// The claim that names the user (default `sub`).
    pub subject_claim: String,
    /// Tolerated clock skew, capped at [`MAX_SKEW_SECS`].
    pub skew_secs: i64,
}

impl IdTokenPolicy {
    /// A policy with the defaults: RS256 and ES256, subject from `sub`, 60 s skew.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            algorithms: vec![ExternalAlg::Rs256, ExternalAlg::Es256],
            subject_claim: "sub".into(),
            skew_secs: MAX_SKEW_SECS,
        }
    }
}

/// An ID token whose signature, issuer, audience, times and subject were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdToken {
    issuer: String,
    subject: String,
    issued_at: UnixTime,
    expires_at: UnixTime,
    claims: Map<String, Value>,
}

impl VerifiedIdToken {
    /// `iss`: the configured issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The subject (from the policy's subject claim).
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// `iat`.
    pub fn issued_at(&self) -> UnixTime {
        self.issued_at
    }
    /// `exp`.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }
    /// A claim of the verified payload (e.g. a CI provider's `repository`, `ref`, `jti`).
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}

/// A parsed token, nothing cryptographic checked.
struct Parsed<'a> {
    alg_name: String,
    kid: Option<String>,
    input: &'a [u8],
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Splits `token` and applies the header rules; nothing cryptographic. The order of the
/// checks names an unsigned `alg: none` token as such, not as malformed.
fn parse(token: &str) -> Result<Parsed<'_>, IdTokenError> {
    let segments = Segments::split(token)?;
    let header = segments.header()?;
    let alg_name = jws::common_header(&header)?.to_owned();
    if ["jwk", "jku", "x5u", "x5c"]
        .iter()
        .any(|m| header.contains_key(*m))
    {
        return Err(IdTokenError::ForbiddenKeyHeader);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if typ_matches(Some(t), "JWT") => {}
        Some(Value::String(_)) => return Err(IdTokenError::WrongType),
        Some(_) => return Err(JoseError::BadHeader.into()),
    }
    let kid = jws::opt_string(&header, "kid")?;
    let signature = segments.signature()?;
    let payload = segments.payload()?;
    Ok(Parsed {
        alg_name,
        kid,
        input: segments.signing_input(),
        payload,
        signature,
    })
}

/// A token split, its header checked and its claims read, its signature not yet
/// checked. Parse once: pick the trusted issuer by [`UnverifiedIdToken::issuer`], then
/// [`UnverifiedIdToken::verify`] against that issuer's policy and keys.
pub struct UnverifiedIdToken<'a> {
    parsed: Parsed<'a>,
    /// The claims, or why they do not parse (reported only after the signature check,
    /// as [`verify`] always has).
    claims: Result<Map<String, Value>, IdTokenError>,
}

impl<'a> UnverifiedIdToken<'a> {
    /// Splits `token` and checks its header; nothing cryptographic.
    pub fn parse(token: &'a str) -> Result<Self, IdTokenError> {
        let parsed = parse(token)?;
        let claims = json::parse_object(&parsed.payload).ok_or(JoseError::BadJson.into());
        Ok(Self { parsed, claims })
    }

    /// The `iss`, **unverified**: only for choosing which trusted issuer's policy and
    /// keys to verify the token with. Never use it for anything else.
    pub fn issuer(&self) -> Result<&str, IdTokenError> {
        match self.claims.as_ref().map_err(|e| *e)?.get("iss") {
            Some(Value::String(iss)) if !iss.is_empty() && iss.len() <= 1024 => Ok(iss),
            _ => Err(IdTokenError::WrongIssuer),
        }
    }

    /// The `kid`, unverified (to decide whether a JWKS refresh could help).
    pub fn kid(&self) -> Option<&str> {
        self.parsed.kid.as_deref()
    }

    /// Verifies the token against `policy` and the issuer's `jwks` at `now` (see
    /// [`verify`]).
    pub fn verify(
        &self,
        policy: &IdTokenPolicy,
        jwks: &Jwks,
        now: UnixTime,
    ) -> Result<VerifiedIdToken, IdTokenError> {
        verify_parsed(
            policy,
            jwks,
            &self.parsed,
            self.claims.as_ref().map_err(|e| *e),
            now,
        )
    }
}

/// The `iss` of a token, **unverified** (see [`UnverifiedIdToken::issuer`]).
pub fn unverified_issuer(token: &str) -> Result<String, IdTokenError> {
    UnverifiedIdToken::parse(token)?.issuer().map(str::to_owned)
}

/// The `kid` of a token, unverified (see [`UnverifiedIdToken::kid`]).
pub fn unverified_kid(token: &str) -> Result<Option<String>, IdTokenError> {
    Ok(UnverifiedIdToken::parse(token)?.kid().map(str::to_owned))
}

/// A NumericDate (RFC 7519 §2): an integer or a finite number, taken in whole seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, IdTokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            // Saturating cast of a finite float; out-of-range dates then fail the checks.
            (None, Some(f)) if f.is_finite() => Ok(Some(f.floor() as i64)),
            _ => Err(IdTokenError::MalformedClaims),
        },
        Some(_) => Err(IdTokenError::MalformedClaims),
    }
}

/// Verifies an external ID token against `policy` and the issuer's `jwks` at `now`.
///
/// [`IdTokenError::UnknownKid`] means the JWKS may be stale: a caller may refresh it
/// (rate-limited) and call again.
pub fn verify(
    policy: &IdTokenPolicy,
    jwks: &Jwks,
    token: &str,
    now: UnixTime,
) -> Result<VerifiedIdToken, IdTokenError> {
    UnverifiedIdToken::parse(token)?.verify(policy, jwks, now)
}

fn verify_parsed(
    policy: &IdTokenPolicy,
    jwks: &Jwks,
    parsed: &Parsed<'_>,
    claims: Result<&Map<String, Value>, IdTokenError>,
    now: UnixTime,
) -> Result<VerifiedIdToken, IdTokenError> {
    let alg = ExternalAlg::from_name(&parsed.alg_name)
        .filter(|a| policy.algorithms.contains(a))
        .ok_or(IdTokenError::AlgNotAllowed)?;
    let key = jwks.find(parsed.kid.as_deref(), alg)?;
    key.verify(alg, parsed.input, &parsed.signature)?;

    let claims = claims?;
    match claims.get("iss") {
        Some(Value::String(iss)) if *iss == policy.issuer => {}
        _ => return Err(IdTokenError::WrongIssuer),
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == policy.audience,
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str() == Some(policy.audience.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err(IdTokenError::WrongAudience);
    }
    let skew = policy.skew_secs.clamp(0, MAX_SKEW_SECS);
    let exp = numeric_date(claims, "exp")?.ok_or(IdTokenError::MalformedClaims)?;
    let iat = numeric_date(claims, "iat")?.ok_or(IdTokenError::MalformedClaims)?;
    if now.0 >= exp.saturating_add(skew) {
        return Err(IdTokenError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if nbf > now.0.saturating_add(skew) {
            return Err(IdTokenError::NotYetValid);
        }
    }
    if iat > now.0.saturating_add(skew) {
        return Err(IdTokenError::IssuedInFuture);
    }
    let subject = match claims.get(policy.subject_claim.as_str()) {
        None | Some(Value::Null) => return Err(IdTokenError::MissingSubject),
        Some(Value::String(s))
            if (1..=MAX_SUBJECT_LEN).contains(&s.len()) && !s.chars().any(char::is_control) =>
        {
            s.clone()
        }
        Some(_) => return Err(IdTokenError::BadSubject),
    };
    Ok(VerifiedIdToken {
        issuer: policy.issuer.clone(),
        subject,
        issued_at: UnixTime(iat),
        expires_at: UnixTime(exp),
        claims: claims.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use serde_json::json;

    // RFC 7520 §4.1 (RSA v1.5 signature): the public half of the example key, and the
    // compact JWS it produces over the "Fellowship of the Ring" payload.
    const RFC7520_N: &str = "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw";
    const RFC7520_KID: &str = "bilbo.baggins@hobbiton.example";
    const RFC7520_JWS: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg";

    // RFC 8037 A.4: Ed25519 public key, signing input and signature.
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    const RFC8037_SIG: &str =
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    const ISS: &str = "https://idp.example.com/";
    const AUD: &str = "com.example.app";
    const NOW: UnixTime = UnixTime(1_800_000_000);

    fn rfc7520_jwks() -> Jwks {
        let doc = json!({"keys": [{"kty": "RSA", "kid": RFC7520_KID, "use": "sig",
            "n": RFC7520_N, "e": "AQAB"}]});
        Jwks::parse(doc.to_string().as_bytes()).unwrap()
    }

    fn split(token: &str) -> (&[u8], Vec<u8>) {
        let (input, sig) = token.rsplit_once('.').unwrap();
        (input.as_bytes(), b64::decode(sig).unwrap())
    }

    #[test]
    fn rfc7520_rs256_vector_verifies_and_a_flipped_bit_does_not() {
        let jwks = rfc7520_jwks();
        let key = jwks.find(Some(RFC7520_KID), ExternalAlg::Rs256).unwrap();
        let (input, sig) = split(RFC7520_JWS);
        assert_eq!(key.verify(ExternalAlg::Rs256, input, &sig), Ok(()));
        for i in [0, 100, 255] {
            let mut bad = sig.clone();
            bad[i] ^= 1;
            assert_eq!(
                key.verify(ExternalAlg::Rs256, input, &bad),
                Err(IdTokenError::Jose(JoseError::BadSignature))
            );
        }
        let mut other = input.to_vec();
        other[10] ^= 1;
        assert_eq!(
            key.verify(ExternalAlg::Rs256, &other, &sig),
            Err(IdTokenError::Jose(JoseError::BadSignature))
        );
        // The RSA key never verifies under a curve algorithm.
        assert_eq!(
            key.verify(ExternalAlg::Es256, input, &sig),
            Err(IdTokenError::Jose(JoseError::AlgKeyMismatch))
        );
        // Its payload is text, not claims: the full verifier stops there, after the
        // signature check.
        let mut policy = IdTokenPolicy::new(ISS, AUD);
        policy.algorithms = vec![ExternalAlg::Rs256];
        assert_eq!(
            verify(&policy, &jwks, RFC7520_JWS, NOW),
            Err(IdTokenError::Jose(JoseError::BadJson))
        );
    }

    #[test]
    fn rfc8037_ed25519_vector_verifies() {
        let doc = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}]});
        let jwks = Jwks::parse(doc.to_string().as_bytes()).unwrap();
        let key = jwks.find(None, ExternalAlg::EdDsa).unwrap();
        let sig = b64::decode(RFC8037_SIG).unwrap();
        assert_eq!(
            key.verify(ExternalAlg::EdDsa, RFC8037_INPUT.as_bytes(), &sig),
            Ok(())
        );
        let mut bad = sig.clone();
        bad[63] ^= 0x40;
        assert_eq!(
            key.verify(ExternalAlg::EdDsa, RFC8037_INPUT.as_bytes(), &bad),
            Err(IdTokenError::Jose(JoseError::BadSignature))
        );
    }

    #[test]
    fn jwks_refuses_private_material_and_skips_unusable_keys() {
        // The RFC 7520 key with its private exponent: a misconfigured source.
        let private = json!({"keys": [{"kty": "RSA", "n": RFC7520_N, "e": "AQAB", "d": "AQAB"}]});
        assert_eq!(
            Jwks::parse(private.to_string().as_bytes()),
            Err(JwksError::PrivateMembers)
        );
        let symmetric = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert_eq!(
            Jwks::parse(symmetric.to_string().as_bytes()),
            Err(JwksError::PrivateMembers)
        );
        let mixed = json!({"keys": [
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": RFC7520_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "pss", "alg": "PS256", "n": RFC7520_N, "e": "AQAB"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "even-e", "n": RFC7520_N, "e": "Ag"},
            "not an object",
            {"kty": "RSA", "kid": "good", "alg": "RS256", "n": RFC7520_N, "e": "AQAB"},
        ]});
        let jwks = Jwks::parse(mixed.to_string().as_bytes()).unwrap();
        assert_eq!(jwks.keys().len(), 1);
        assert_eq!(jwks.skipped(), 6);
        assert!(jwks.has_kid("good") && !jwks.has_kid("pss"));
        for bad in [
            &b"[]"[..],
            b"{}",
            b"{\"keys\":{}}",
            b"{\"keys\":[],\"keys\":[]}",
        ] {
            assert_eq!(Jwks::parse(bad), Err(JwksError::Malformed));
        }
        assert_eq!(Jwks::parse(b"{\"keys\":[]}"), Err(JwksError::NoUsableKey));
        let huge = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(Jwks::parse(&huge), Err(JwksError::TooLarge));
    }

    /// Builds a token with an arbitrary header, signed by `key` (whatever `alg` says).
    fn token_with(key: &SigningKey, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string()),
            b64::encode(claims.to_string())
        );
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(sig))
    }

    fn claims() -> Value {
        json!({"iss": ISS, "aud": AUD, "sub": "user-123", "iat": NOW.0 - 10, "exp": NOW.0 + 600})
    }

    struct Idp {
        es: SigningKey,
        ed: SigningKey,
        jwks: Jwks,
        policy: IdTokenPolicy,
    }

    fn idp() -> Idp {
        let es = SigningKey::generate(Algorithm::Es256);
        let ed = SigningKey::generate(Algorithm::EdDsa);
        let mut keys = Vec::new();
        for (kid, key, alg) in [("es", &es, "ES256"), ("ed", &ed, "EdDSA")] {
            let mut jwk = key.verification_key().to_jwk().to_json();
            jwk.insert("kid".into(), json!(kid));
            jwk.insert("alg".into(), json!(alg));
            jwk.insert("use".into(), json!("sig"));
            keys.push(Value::Object(jwk));
        }
        let jwks = Jwks::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap();
        let mut policy = IdTokenPolicy::new(ISS, AUD);
        policy.algorithms = ExternalAlg::ALL.to_vec();
        Idp {
            es,
            ed,
            jwks,
            policy,
        }
    }

    fn es_token(idp: &Idp, claims: Value) -> String {
        token_with(
            &idp.es,
            json!({"alg": "ES256", "kid": "es", "typ": "JWT"}),
            claims,
        )
    }

    #[test]
    fn a_good_token_verifies_with_either_curve() {
        let idp = idp();
        let v = verify(&idp.policy, &idp.jwks, &es_token(&idp, claims()), NOW).unwrap();
        assert_eq!(v.subject(), "user-123");
        assert_eq!(v.issuer(), ISS);
        assert_eq!(v.expires_at(), UnixTime(NOW.0 + 600));
        let ed = token_with(&idp.ed, json!({"alg": "EdDSA", "kid": "ed"}), claims());
        assert!(verify(&idp.policy, &idp.jwks, &ed, NOW).is_ok());
        // `aud` as an array, `typ` as a media type, float dates.
        let mut c = claims();
        c["aud"] = json!(["other", AUD]);
        c["exp"] = json!(NOW.0 as f64 + 600.5);
        let t = token_with(
            &idp.es,
            json!({"alg": "ES256", "kid": "es", "typ": "application/jwt"}),
            c,
        );
        assert!(verify(&idp.policy, &idp.jwks, &t, NOW).is_ok());
    }

    #[test]
    fn each_claim_check_refuses_with_its_reason() {
        let idp = idp();
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            es_token(&idp, c)
        };
        let without = |k: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(k);
            es_token(&idp, c)
        };
        let cases: Vec<(String, IdTokenError)> = vec![
            (
                with("iss", json!("https://idp.example.com")),
                IdTokenError::WrongIssuer,
            ),
            (
                with("iss", json!("https://evil.example/")),
                IdTokenError::WrongIssuer,
            ),
            (without("iss"), IdTokenError::WrongIssuer),
            (
                with("aud", json!("com.example.other")),
                IdTokenError::WrongAudience,
            ),
            (with("aud", json!([])), IdTokenError::WrongAudience),
            (with("aud", json!(["a", "b"])), IdTokenError::WrongAudience),
            (without("aud"), IdTokenError::WrongAudience),
            (with("exp", json!(NOW.0 - 61)), IdTokenError::Expired),
            (with("exp", json!("soon")), IdTokenError::MalformedClaims),
            (without("exp"), IdTokenError::MalformedClaims),
            (without("iat"), IdTokenError::MalformedClaims),
            (with("nbf", json!(NOW.0 + 61)), IdTokenError::NotYetValid),
            (with("iat", json!(NOW.0 + 61)), IdTokenError::IssuedInFuture),
            (without("sub"), IdTokenError::MissingSubject),
            (with("sub", Value::Null), IdTokenError::MissingSubject),
            (with("sub", json!("")), IdTokenError::BadSubject),
            (with("sub", json!(12345)), IdTokenError::BadSubject),
            (with("sub", json!("a\nb")), IdTokenError::BadSubject),
            (
                with("sub", json!("x".repeat(256))),
                IdTokenError::BadSubject,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(
                verify(&idp.policy, &idp.jwks, &token, NOW),
                Err(expected),
                "{expected}"
            );
        }
        // Within the skew: accepted.
        for (k, v) in [
            ("exp", json!(NOW.0 - 59)),
            ("nbf", json!(NOW.0 + 59)),
            ("iat", json!(NOW.0 + 59)),
        ] {
            assert!(
                verify(&idp.policy, &idp.jwks, &with(k, v), NOW).is_ok(),
                "{k}"
            );
        }
        // Duplicate claims are refused outright.
        let dup = format!(
            "{}.{}",
            b64::encode(json!({"alg": "ES256", "kid": "es"}).to_string()),
            b64::encode(format!(r#"{{"iss":"{ISS}","sub":"a","sub":"b"}}"#))
        );
        let sig = idp.es.sign(dup.as_bytes());
        let dup = format!("{dup}.{}", b64::encode(sig));
        assert_eq!(
            verify(&idp.policy, &idp.jwks, &dup, NOW),
            Err(IdTokenError::Jose(JoseError::BadJson))
        );
    }

    #[test]
    fn the_subject_can_come_from_another_claim() {
        let mut idp = idp();
        idp.policy.subject_claim = "user_id".into();
        let mut c = claims();
        c["user_id"] = json!("firebase-uid-1");
        let v = verify(&idp.policy, &idp.jwks, &es_token(&idp, c), NOW).unwrap();
        assert_eq!(v.subject(), "firebase-uid-1");
        assert_eq!(
            verify(&idp.policy, &idp.jwks, &es_token(&idp, claims()), NOW),
            Err(IdTokenError::MissingSubject)
        );
    }

    #[test]
    fn algorithm_rules_leave_no_room_for_confusion() {
        let mut idp = idp();
        let sign = |h: Value| token_with(&idp.es, h, claims());
        let cases = [
            (
                json!({"alg": "none", "kid": "es"}),
                IdTokenError::Jose(JoseError::AlgNone),
            ),
            (
                json!({"alg": "NoNe", "kid": "es"}),
                IdTokenError::Jose(JoseError::AlgNone),
            ),
            (
                json!({"alg": "HS256", "kid": "es"}),
                IdTokenError::Jose(JoseError::AlgSymmetric),
            ),
            (
                json!({"alg": "hs512", "kid": "es"}),
                IdTokenError::Jose(JoseError::AlgSymmetric),
            ),
            (
                json!({"alg": "RS384", "kid": "es"}),
                IdTokenError::AlgNotAllowed,
            ),
            (
                json!({"alg": "es256", "kid": "es"}),
                IdTokenError::AlgNotAllowed,
            ),
            (
                json!({"alg": "PS256", "kid": "es"}),
                IdTokenError::AlgNotAllowed,
            ),
            // RS256 is allowed, but `es` is a P-256 key.
            (
                json!({"alg": "RS256", "kid": "es"}),
                IdTokenError::Jose(JoseError::AlgKeyMismatch),
            ),
            (
                json!({"alg": "EdDSA", "kid": "es"}),
                IdTokenError::Jose(JoseError::AlgKeyMismatch),
            ),
            (
                json!({"alg": "ES256", "kid": "nope"}),
                IdTokenError::UnknownKid,
            ),
            (json!({"alg": "ES256"}), IdTokenError::MissingKid),
            (
                json!({"alg": "ES256", "kid": 7}),
                IdTokenError::Jose(JoseError::BadHeader),
            ),
            (
                json!({"kid": "es"}),
                IdTokenError::Jose(JoseError::BadHeader),
            ),
            (
                json!({"alg": "ES256", "kid": "es", "crit": ["exp"]}),
                IdTokenError::Jose(JoseError::Crit),
            ),
            (
                json!({"alg": "ES256", "kid": "es", "typ": "at+jwt"}),
                IdTokenError::WrongType,
            ),
            (
                json!({"alg": "ES256", "kid": "es", "typ": "dpop+jwt"}),
                IdTokenError::WrongType,
            ),
            (
                json!({"alg": "ES256", "kid": "es", "jku": "https://evil/"}),
                IdTokenError::ForbiddenKeyHeader,
            ),
            (
                json!({"alg": "ES256", "kid": "es", "x5c": []}),
                IdTokenError::ForbiddenKeyHeader,
            ),
            (
                json!({"alg": "ES256", "kid": "es", "jwk": idp.es.verification_key().to_jwk().to_json()}),
                IdTokenError::ForbiddenKeyHeader,
            ),
            (
                json!({"alg": "ES256", "kid": "es", "enc": "A128GCM"}),
                IdTokenError::Jose(JoseError::BadHeader),
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(
                verify(&idp.policy, &idp.jwks, &sign(header.clone()), NOW),
                Err(expected),
                "{header}"
            );
        }
        // An allowed algorithm the issuer does not allow.
        idp.policy.algorithms = vec![ExternalAlg::Rs256];
        assert_eq!(
            verify(&idp.policy, &idp.jwks, &es_token(&idp, claims()), NOW),
            Err(IdTokenError::AlgNotAllowed)
        );
    }

    #[test]
    fn unsigned_tampered_and_malformed_tokens_are_refused() {
        let idp = idp();
        let good = es_token(&idp, claims());
        let (input, _) = good.rsplit_once('.').unwrap();
        let none = format!(
            "{}.{}.",
            b64::encode(json!({"alg": "none"}).to_string()),
            b64::encode(claims().to_string())
        );
        // The payload swapped under a valid signature.
        let mut c = claims();
        c["sub"] = json!("admin");
        let (h, _) = input.split_once('.').unwrap();
        let sig = good.rsplit_once('.').unwrap().1;
        let swapped = format!("{h}.{}.{sig}", b64::encode(c.to_string()));
        let cases = [
            (none, IdTokenError::Jose(JoseError::AlgNone)),
            (
                format!("{input}."),
                IdTokenError::Jose(JoseError::Malformed),
            ),
            (input.to_owned(), IdTokenError::Jose(JoseError::Malformed)),
            (
                format!("{good}.x"),
                IdTokenError::Jose(JoseError::Malformed),
            ),
            (
                format!("{input}.AAAA"),
                IdTokenError::Jose(JoseError::BadSignature),
            ),
            (
                format!("{input}.{}", b64::encode([0u8; 64])),
                IdTokenError::Jose(JoseError::BadSignature),
            ),
            (swapped, IdTokenError::Jose(JoseError::BadSignature)),
            (
                format!("{input}.{sig}="),
                IdTokenError::Jose(JoseError::Malformed),
            ),
            (
                "x".repeat(MAX_ID_TOKEN_LEN + 1),
                IdTokenError::Jose(JoseError::TooLarge),
            ),
            (
                "e30.e30.e30".into(),
                IdTokenError::Jose(JoseError::BadHeader),
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(
                verify(&idp.policy, &idp.jwks, &token, NOW),
                Err(expected),
                "{expected}"
            );
        }
    }

    #[test]
    fn unverified_issuer_only_reads_the_claim() {
        let idp = idp();
        assert_eq!(
            unverified_issuer(&es_token(&idp, claims())).as_deref(),
            Ok(ISS)
        );
        let mut c = claims();
        c["iss"] = json!(42);
        assert_eq!(
            unverified_issuer(&es_token(&idp, c)),
            Err(IdTokenError::WrongIssuer)
        );
        assert_eq!(
            unverified_issuer("a.b"),
            Err(IdTokenError::Jose(JoseError::Malformed))
        );
        assert_eq!(
            unverified_kid(&es_token(&idp, claims())),
            Ok(Some("es".into()))
        );
    }

    #[test]
    fn errors_do_not_carry_the_token() {
        let idp = idp();
        let mut c = claims();
        c["aud"] = json!("nope");
        let token = es_token(&idp, c);
        let e = verify(&idp.policy, &idp.jwks, &token, NOW).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(&token[..20]) && shown.len() < 64, "{shown}");
    }
}
