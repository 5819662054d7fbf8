//! Verification of mobile app attestation for keygate: Apple App Attest and Google Play
//! Integrity.
//!
//! keygate hands API keys to mobile apps. A key embedded in an app binary can be lifted and
//! replayed from anywhere, so the token service can additionally ask the platform to vouch
//! that a request comes from the genuine app on a real device. This crate does only the
//! verification of what the platform produced; it keeps no state and does no I/O.
//!
//! # What is verified
//!
//! - [`apple::verify_attestation`]: a one-time App Attest attestation object. The
//!   certificate chain must lead to a configured root (Apple's, [`apple::APPLE_APP_ATTEST_ROOT_PEM`]),
//!   the credential certificate must carry the nonce computed from the authenticator data
//!   and the caller's client data, and the authenticator data must name this app (team ID
//!   and bundle ID), a fresh key (counter 0) and the expected environment. On success the
//!   caller stores the returned [`apple::AttestedKey`].
//! - [`apple::verify_assertion`]: a per-request App Attest assertion made with a stored
//!   key; its counter must be strictly greater than the stored one, which stops replays.
//! - [`google::verify_token`]: a Play Integrity verdict token (JWE wrapping a JWS), decrypted
//!   and verified locally with the keys from the Play Console. Verification through Google's
//!   server API (`decodeIntegrityToken`) is out of scope: this crate does no network I/O.
//!
//! # Client data: what binds the attestation to the request
//!
//! Every verification takes `client_data`, the exact bytes the app hashed into the platform
//! request (App Attest: `clientDataHash = SHA-256(client_data)`; Play Integrity:
//! `nonce = base64url(SHA-256(client_data))`, see [`google::expected_nonce`]). The token
//! service builds them from its one-time server challenge and the thumbprint of the app's
//! DPoP key. App Attest keys can only sign assertions, never a DPoP JWS, so this is how the
//! DPoP key gets bound into what the hardware attested: a DPoP key swapped in later does
//! not match the client data and the verification fails. This crate does not know how the
//! client data is built; the caller must rebuild it from its own state, never take it from
//! the request.
//!
//! # Time
//!
//! Verification never reads the clock: the caller passes `now_unix_secs`, so results are
//! reproducible and tests are deterministic.
//!
//! # Features and companions
//!
//! - `test-support` enables [`testing`](crate#features-and-companions): fixtures that make
//!   valid App Attest objects and Play Integrity tokens under test-only keys, with knobs
//!   that break one rule each. For tests of this crate and of its integrations only.
//! - [`fuzzing`] holds the bodies of the cargo-fuzz targets in `fuzz/` (nightly), which
//!   `tests/robustness.rs` also runs on stable.
//!
//! # Errors
//!
//! Every failure is a [`Refusal`] with a stable [`Refusal::code`] for audit entries. Refusals
//! are meant for operators; the app should only get a generic error. They never carry key
//! material, tokens or device data.

pub mod apple;
pub mod fuzzing;
pub mod google;
#[cfg(feature = "test-support")]
pub mod testing;

mod util;

/// Base64 in any of the four common spellings (standard or URL-safe, padded or not), as
/// values copied from the Play Console or sent by apps come.
pub use util::b64_lenient as decode_base64;

/// Why an attestation, assertion or integrity token was refused.
///
/// The variants and their [`code`](Refusal::code)s are stable: audit entries and dashboards
/// rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The input is larger than the bound for its kind (checked before any parsing).
    #[error("input exceeds the size limit")]
    TooLarge,
    /// Not well-formed CBOR, trailing bytes, a missing or duplicated field or a field of
    /// the wrong type.
    #[error("malformed CBOR object")]
    MalformedCbor,
    /// The attestation statement format is not `apple-appattest`.
    #[error("attestation format is not apple-appattest")]
    WrongFormat,
    /// The authenticator data is shorter than its layout requires.
    #[error("malformed authenticator data")]
    MalformedAuthData,
    /// A certificate in `x5c` does not parse as DER X.509, or lacks a required part (a
    /// P-256 key in the credential certificate, the nonce extension).
    #[error("malformed certificate")]
    MalformedCertificate,
    /// A certificate is not signed by the next one, the names do not link, the chain has
    /// the wrong length or the intermediate is not a CA.
    #[error("certificate chain is invalid")]
    ChainInvalid,
    /// The intermediate is not signed by any configured root.
    #[error("certificate chain does not lead to a configured root")]
    WrongRoot,
    /// A certificate of the chain is outside its validity period at the given time.
    #[error("certificate is expired or not yet valid")]
    CertExpired,
    /// The nonce the platform attested does not match the one computed from the client data.
    #[error("nonce does not match the client data")]
    NonceMismatch,
    /// The authenticator data names another app (team ID and bundle ID).
    #[error("RP ID hash does not match the configured app")]
    RpIdMismatch,
    /// The credential key or credential ID does not match the key ID the app sent.
    #[error("key ID does not match the attested key")]
    KeyIdMismatch,
    /// An attestation whose counter is not 0: not a freshly generated key.
    #[error("attestation counter is not zero")]
    CounterNotZero,
    /// An assertion whose counter is not greater than the stored one: a replay.
    #[error("assertion counter did not increase")]
    CounterNotIncreasing,
    /// The AAGUID is neither the production one nor an allowed development one.
    #[error("AAGUID is not allowed")]
    WrongAaguid,
    /// A signature (assertion, JWS) does not verify or does not parse.
    #[error("signature is invalid")]
    SignatureInvalid,
    /// The stored public key given to assertion verification is not a P-256 point.
    #[error("stored public key is invalid")]
    InvalidStoredKey,
    /// Not a compact JWE of five parts (or its inner JWS of three), bad base64url, bad JSON
    /// header or wrong part sizes.
    #[error("malformed token")]
    MalformedToken,
    /// The JWE is not `A256KW`/`A256GCM`, the JWS is not `ES256`, or the header asks for a
    /// feature this verifier does not implement (`zip`, `crit`).
    #[error("unsupported token algorithm or header")]
    UnsupportedAlgorithm,
    /// The content key does not unwrap or the content does not decrypt: another key, or
    /// a tampered token.
    #[error("token does not decrypt")]
    DecryptFailed,
    /// The verdict payload is not the expected JSON.
    #[error("malformed verdict payload")]
    MalformedVerdict,
    /// The verdict names another package.
    #[error("package name does not match")]
    PackageMismatch,
    /// None of the app's signing certificate digests is allowed.
    #[error("signing certificate digest is not allowed")]
    CertificateDigestMismatch,
    /// Play did not recognize the app (`appRecognitionVerdict` is not `PLAY_RECOGNIZED`).
    #[error("app is not recognized by Play")]
    AppNotRecognized,
    /// `MEETS_DEVICE_INTEGRITY` is required and missing.
    #[error("device integrity verdict missing")]
    DeviceIntegrityMissing,
    /// A licensed install is required and the verdict is not `LICENSED`.
    #[error("app is not licensed")]
    NotLicensed,
    /// The verdict is older than the configured maximum age.
    #[error("verdict is too old")]
    VerdictExpired,
    /// The verdict's timestamp is more than the allowed skew in the future.
    #[error("verdict timestamp is in the future")]
    VerdictInFuture,
}

impl Refusal {
    /// A stable snake_case code for audit entries and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::TooLarge => "too_large",
            Refusal::MalformedCbor => "malformed_cbor",
            Refusal::WrongFormat => "wrong_format",
            Refusal::MalformedAuthData => "malformed_auth_data",
            Refusal::MalformedCertificate => "malformed_certificate",
            Refusal::ChainInvalid => "chain_invalid",
            Refusal::WrongRoot => "wrong_root",
            Refusal::CertExpired => "cert_expired",
            Refusal::NonceMismatch => "nonce_mismatch",
            Refusal::RpIdMismatch => "rp_id_mismatch",
            Refusal::KeyIdMismatch => "key_id_mismatch",
            Refusal::CounterNotZero => "counter_not_zero",
            Refusal::CounterNotIncreasing => "counter_not_increasing",
            Refusal::WrongAaguid => "wrong_aaguid",
            Refusal::SignatureInvalid => "signature_invalid",
            Refusal::InvalidStoredKey => "invalid_stored_key",
            Refusal::MalformedToken => "malformed_token",
            Refusal::UnsupportedAlgorithm => "unsupported_algorithm",
            Refusal::DecryptFailed => "decrypt_failed",
            Refusal::MalformedVerdict => "malformed_verdict",
            Refusal::PackageMismatch => "package_mismatch",
            Refusal::CertificateDigestMismatch => "certificate_digest_mismatch",
            Refusal::AppNotRecognized => "app_not_recognized",
            Refusal::DeviceIntegrityMissing => "device_integrity_missing",
            Refusal::NotLicensed => "not_licensed",
            Refusal::VerdictExpired => "verdict_expired",
            Refusal::VerdictInFuture => "verdict_in_future",
        }
    }
}

/// A configuration value that cannot be used; names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `decryption_key` is not base64.
    #[error("decryption_key is not base64")]
    DecryptionKeyNotBase64,
    /// `decryption_key` does not decode to 32 bytes (an AES-256 key).
    #[error("decryption_key must decode to 32 bytes (AES-256), got {0}")]
    DecryptionKeyLength(usize),
    /// `verification_key` is not base64.
    #[error("verification_key is not base64")]
    VerificationKeyNotBase64,
    /// `verification_key` is not a DER SubjectPublicKeyInfo of a P-256 key.
    #[error("verification_key is not a DER SubjectPublicKeyInfo of a P-256 public key")]
    VerificationKeyNotP256,
    /// A root certificate is not a PEM `CERTIFICATE` block.
    #[error("root certificate is not a PEM CERTIFICATE block")]
    RootNotPem,
    /// A root certificate does not parse as DER X.509.
    #[error("root certificate does not parse as X.509")]
    RootNotX509,
}
