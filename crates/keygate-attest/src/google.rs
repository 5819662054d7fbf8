//! Google Play Integrity verdict tokens, decrypted and verified locally.
//!
//! The token the app gets from the Integrity API is a compact JWE (`A256KW` key wrapping,
//! `A256GCM` content encryption) around a compact JWS (`ES256`) whose payload is the
//! verdict JSON. With "Manage and download my response encryption keys" in the Play
//! Console, Google hands out the AES decryption key and the EC verification key, and the
//! server can check verdicts without calling Google. Calling Google's `decodeIntegrityToken`
//! instead is out of scope: this crate does no network I/O.
//!
//! Only the classic request's `nonce` binding is supported (not the standard request's
//! `requestHash`): the app must pass [`expected_nonce`]`(client_data)` as the nonce.

use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::util::{b64_lenient, b64url, sha256};
use crate::{ConfigError, Refusal};

/// Longest token accepted, in bytes. Google's tokens are a few KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// How far a verdict's timestamp may lie in the future (clock skew between Google and us).
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);

/// Which app verdicts must be about, and the keys from the Play Console.
#[derive(Clone)]
pub struct PlayIntegrityConfig {
    /// The Android package name (`applicationId`).
    pub package_name: String,
    /// SHA-256 digests of the allowed app signing certificates (the Play App Signing key,
    /// and the upload key if sideloaded test builds must pass).
    pub certificate_sha256: Vec<[u8; 32]>,
    /// Oldest verdict accepted. Verdicts are requested per login, so keep this short.
    pub max_age: Duration,
    /// Require `MEETS_DEVICE_INTEGRITY` in `deviceRecognitionVerdict`.
    pub require_device_integrity: bool,
    /// Require `appLicensingVerdict` `LICENSED` (installed or bought from Play).
    pub require_licensed: bool,
    decryption_key: Zeroizing<[u8; 32]>,
    verification_key: p256::ecdsa::VerifyingKey,
}

impl std::fmt::Debug for PlayIntegrityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayIntegrityConfig")
            .field("package_name", &self.package_name)
            .field("certificate_sha256", &self.certificate_sha256.len())
            .field("max_age", &self.max_age)
            .field("require_device_integrity", &self.require_device_integrity)
            .field("require_licensed", &self.require_licensed)
            .field("decryption_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl PlayIntegrityConfig {
    /// A configuration from raw keys. Defaults: `max_age` 5 minutes, device integrity
    /// required, licensing not required.
    pub fn new(
        package_name: impl Into<String>,
        certificate_sha256: Vec<[u8; 32]>,
        decryption_key: [u8; 32],
        verification_key: p256::ecdsa::VerifyingKey,
    ) -> Self {
        Self {
            package_name: package_name.into(),
            certificate_sha256,
            max_age: Duration::from_secs(300),
            require_device_integrity: true,
            require_licensed: false,
            decryption_key: Zeroizing::new(decryption_key),
            verification_key,
        }
    }

    /// A configuration from the two keys as the Play Console gives them: the decryption key
    /// as base64 of 32 raw bytes, the verification key as base64 of a DER
    /// SubjectPublicKeyInfo (P-256). Either base64 alphabet, with or without padding.
    pub fn from_console_keys(
        package_name: impl Into<String>,
        certificate_sha256: Vec<[u8; 32]>,
        decryption_key_base64: &str,
        verification_key_base64: &str,
    ) -> Result<Self, ConfigError> {
        let raw = Zeroizing::new(
            b64_lenient(decryption_key_base64).ok_or(ConfigError::DecryptionKeyNotBase64)?,
        );
        let decryption_key = <[u8; 32]>::try_from(raw.as_slice())
            .map_err(|_| ConfigError::DecryptionKeyLength(raw.len()))?;
        let spki =
            b64_lenient(verification_key_base64).ok_or(ConfigError::VerificationKeyNotBase64)?;
        let verification_key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki)
            .map_err(|_| ConfigError::VerificationKeyNotP256)?;
        Ok(Self::new(
            package_name,
            certificate_sha256,
            decryption_key,
            verification_key,
        ))
    }
}

/// What a verified verdict says, for the caller's policy and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityVerdict {
    /// The package the verdict is about (equal to the configured one).
    pub package_name: String,
    /// `appIntegrity.versionCode`, when present.
    pub version_code: Option<i64>,
    /// `deviceIntegrity.deviceRecognitionVerdict`, e.g. `MEETS_DEVICE_INTEGRITY`.
    pub device_verdicts: Vec<String>,
    /// `accountDetails.appLicensingVerdict`, when present.
    pub licensing_verdict: Option<String>,
    /// `requestDetails.timestampMillis`: when Google made the verdict.
    pub timestamp_millis: i64,
}

/// The nonce the app must pass to the Integrity API for `client_data`:
/// base64url without padding (RFC 4648 §5) of `SHA-256(client_data)`, 43 characters.
pub fn expected_nonce(client_data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(sha256(&[client_data]))
}

/// Decrypts and verifies a Play Integrity token and checks its verdict against `cfg`.
///
/// `client_data` are the bytes whose [`expected_nonce`] the app passed (see the crate docs).
pub fn verify_token(
    cfg: &PlayIntegrityConfig,
    token: &str,
    client_data: &[u8],
    now_unix_secs: i64,
) -> Result<IntegrityVerdict, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::TooLarge);
    }
    let jws = decrypt(cfg, token)?;
    let payload = verify_jws(cfg, &jws)?;
    let verdict: VerdictPayload =
        serde_json::from_slice(&payload).map_err(|_| Refusal::MalformedVerdict)?;
    check_verdict(cfg, verdict, client_data, now_unix_secs)
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    enc: Option<String>,
    zip: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
}

fn header(part: &str) -> Result<JoseHeader, Refusal> {
    let json = b64url(part).ok_or(Refusal::MalformedToken)?;
    serde_json::from_slice(&json).map_err(|_| Refusal::MalformedToken)
}

/// RFC 7516 compact JWE with `A256KW` + `A256GCM`; returns the plaintext (the JWS).
fn decrypt(cfg: &PlayIntegrityConfig, token: &str) -> Result<Vec<u8>, Refusal> {
    let parts: Vec<&str> = token.split('.').collect();
    let [protected, encrypted_key, iv, ciphertext, tag] = parts.as_slice() else {
        return Err(Refusal::MalformedToken);
    };
    let head = header(protected)?;
    if head.alg != "A256KW"
        || head.enc.as_deref() != Some("A256GCM")
        || head.zip.is_some()
        || head.crit.is_some()
    {
        return Err(Refusal::UnsupportedAlgorithm);
    }
    let encrypted_key = b64url(encrypted_key).ok_or(Refusal::MalformedToken)?;
    let iv = b64url(iv).ok_or(Refusal::MalformedToken)?;
    let mut sealed = b64url(ciphertext).ok_or(Refusal::MalformedToken)?;
    let tag = b64url(tag).ok_or(Refusal::MalformedToken)?;
    // A wrapped 256-bit CEK is 40 bytes; GCM uses a 96-bit IV and a 128-bit tag.
    let iv = <[u8; 12]>::try_from(iv.as_slice()).map_err(|_| Refusal::MalformedToken)?;
    if encrypted_key.len() != 40 || tag.len() != 16 {
        return Err(Refusal::MalformedToken);
    }
    let cek = unwrap_key(&cfg.decryption_key, &encrypted_key).ok_or(Refusal::DecryptFailed)?;
    let cipher = Aes256Gcm::new_from_slice(cek.as_slice()).map_err(|_| Refusal::DecryptFailed)?;
    sealed.extend_from_slice(&tag);
    // RFC 7516 §5.1 step 14: the AAD is the ASCII of the encoded protected header.
    cipher
        .decrypt(
            &Nonce::from(iv),
            Payload {
                msg: &sealed,
                aad: protected.as_bytes(),
            },
        )
        .map_err(|_| Refusal::DecryptFailed)
}

/// RFC 3394 AES key unwrap of a 256-bit content key under a 256-bit KEK. `None` when the
/// integrity check fails (wrong KEK or tampered key).
pub(crate) fn unwrap_key(kek: &[u8; 32], wrapped: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let kek = aes_kw::KekAes256::from(*kek);
    let mut out = Zeroizing::new([0u8; 32]);
    if wrapped.len() != 40 {
        return None;
    }
    kek.unwrap(wrapped, out.as_mut_slice()).ok()?;
    Some(out)
}

/// RFC 3394 AES key wrap of a 256-bit key under a 256-bit KEK (the inverse of the unwrap
/// this verifier uses; public so tests and fixtures run the same code path). `None` only
/// if the underlying implementation refuses, which it does not for these fixed sizes.
pub fn wrap_key(kek: &[u8; 32], key: &[u8; 32]) -> Option<[u8; 40]> {
    let kek = aes_kw::KekAes256::from(*kek);
    let mut out = [0u8; 40];
    kek.wrap(key, &mut out).ok()?;
    Some(out)
}

/// RFC 3394 AES key unwrap, the public face of what [`verify_token`] does with the JWE
/// encrypted key. `None` when the integrity check fails (wrong KEK or tampered input) or
/// `wrapped` is not 40 bytes.
pub fn unwrap_key_256(kek: &[u8; 32], wrapped: &[u8]) -> Option<[u8; 32]> {
    unwrap_key(kek, wrapped).map(|key| *key)
}

/// RFC 7515 compact JWS with `ES256` (RFC 7518 §3.4: raw `r || s`, 64 bytes); returns the
/// payload bytes.
fn verify_jws(cfg: &PlayIntegrityConfig, jws: &[u8]) -> Result<Vec<u8>, Refusal> {
    let jws = std::str::from_utf8(jws).map_err(|_| Refusal::MalformedToken)?;
    let parts: Vec<&str> = jws.split('.').collect();
    let [protected, payload, signature] = parts.as_slice() else {
        return Err(Refusal::MalformedToken);
    };
    let head = header(protected)?;
    if head.alg != "ES256" || head.crit.is_some() || head.zip.is_some() {
        return Err(Refusal::UnsupportedAlgorithm);
    }
    let signature = b64url(signature).ok_or(Refusal::MalformedToken)?;
    let signature =
        p256::ecdsa::Signature::from_slice(&signature).map_err(|_| Refusal::SignatureInvalid)?;
    let signing_input = format!("{protected}.{payload}");
    cfg.verification_key
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| Refusal::SignatureInvalid)?;
    b64url(payload).ok_or(Refusal::MalformedToken)
}

/// A JSON number or a string of digits (Google sends both spellings for 64-bit values).
#[derive(Deserialize)]
#[serde(untagged)]
enum Integer {
    Number(i64),
    Text(String),
}

impl Integer {
    fn value(&self) -> Option<i64> {
        match self {
            Integer::Number(n) => Some(*n),
            Integer::Text(s) => s.parse().ok(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerdictPayload {
    request_details: RequestDetails,
    #[serde(default)]
    app_integrity: AppIntegrity,
    #[serde(default)]
    device_integrity: DeviceIntegrity,
    #[serde(default)]
    account_details: AccountDetails,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestDetails {
    request_package_name: Option<String>,
    timestamp_millis: Option<Integer>,
    nonce: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AppIntegrity {
    app_recognition_verdict: Option<String>,
    package_name: Option<String>,
    #[serde(default)]
    certificate_sha256_digest: Vec<String>,
    version_code: Option<Integer>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeviceIntegrity {
    #[serde(default)]
    device_recognition_verdict: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AccountDetails {
    app_licensing_verdict: Option<String>,
}

fn check_verdict(
    cfg: &PlayIntegrityConfig,
    verdict: VerdictPayload,
    client_data: &[u8],
    now_unix_secs: i64,
) -> Result<IntegrityVerdict, Refusal> {
    let request = verdict.request_details;
    if request.request_package_name.as_deref() != Some(cfg.package_name.as_str()) {
        return Err(Refusal::PackageMismatch);
    }

    // The nonce is ASCII the app chose; compare in constant time anyway, it is cheap.
    let expected = expected_nonce(client_data);
    let nonce = request.nonce.as_deref().ok_or(Refusal::NonceMismatch)?;
    let nonce = nonce.strip_suffix('=').unwrap_or(nonce);
    if !bool::from(nonce.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(Refusal::NonceMismatch);
    }

    let timestamp_millis = request
        .timestamp_millis
        .as_ref()
        .and_then(Integer::value)
        .ok_or(Refusal::MalformedVerdict)?;
    let now_millis = i128::from(now_unix_secs) * 1000;
    let age_millis = now_millis - i128::from(timestamp_millis);
    if age_millis > i128::try_from(cfg.max_age.as_millis()).unwrap_or(i128::MAX) {
        return Err(Refusal::VerdictExpired);
    }
    if -age_millis > i128::try_from(MAX_FUTURE_SKEW.as_millis()).unwrap_or(i128::MAX) {
        return Err(Refusal::VerdictInFuture);
    }

    let app = verdict.app_integrity;
    if app.app_recognition_verdict.as_deref() != Some("PLAY_RECOGNIZED") {
        return Err(Refusal::AppNotRecognized);
    }
    if app.package_name.as_deref() != Some(cfg.package_name.as_str()) {
        return Err(Refusal::PackageMismatch);
    }
    let allowed = app.certificate_sha256_digest.iter().any(|digest| {
        b64_lenient(digest).is_some_and(|d| {
            cfg.certificate_sha256
                .iter()
                .any(|allowed| allowed.as_slice() == d.as_slice())
        })
    });
    if !allowed {
        return Err(Refusal::CertificateDigestMismatch);
    }

    let device_verdicts = verdict.device_integrity.device_recognition_verdict;
    if cfg.require_device_integrity
        && !device_verdicts
            .iter()
            .any(|v| v == "MEETS_DEVICE_INTEGRITY")
    {
        return Err(Refusal::DeviceIntegrityMissing);
    }
    let licensing_verdict = verdict.account_details.app_licensing_verdict;
    if cfg.require_licensed && licensing_verdict.as_deref() != Some("LICENSED") {
        return Err(Refusal::NotLicensed);
    }

    Ok(IntegrityVerdict {
        package_name: cfg.package_name.clone(),
        version_code: app.version_code.as_ref().and_then(Integer::value),
        device_verdicts,
        licensing_verdict,
        timestamp_millis,
    })
}
