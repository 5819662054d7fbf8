//! PKCE (RFC 7636), `S256` only: `plain` and a missing method are refused (S10).

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::b64;

/// Why a PKCE parameter was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    /// No `code_challenge` in the authorization request.
    #[error("code_challenge missing")]
    MissingChallenge,
    /// `code_challenge_method` absent, `plain`, or unknown.
    #[error("code_challenge_method must be S256")]
    UnsupportedMethod,
    /// The challenge is not base64url of 32 bytes.
    #[error("code_challenge malformed")]
    MalformedChallenge,
}

/// A verified-syntax `S256` code challenge, as stored with an authorization code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// Parses the `code_challenge` and `code_challenge_method` request parameters.
    pub fn parse(challenge: Option<&str>, method: Option<&str>) -> Result<Self, PkceError> {
        let challenge = challenge.ok_or(PkceError::MissingChallenge)?;
        if method != Some("S256") {
            return Err(PkceError::UnsupportedMethod);
        }
        b64::decode_array::<32>(challenge).ok_or(PkceError::MalformedChallenge)?;
        Ok(Self(challenge.to_owned()))
    }

    /// The challenge for a verifier.
    pub fn for_verifier(verifier: &str) -> Self {
        Self(b64::encode(Sha256::digest(verifier.as_bytes())))
    }

    /// The challenge text, for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `verifier` (the token request's `code_verifier`) is well-formed
    /// (43–128 unreserved characters) and hashes to this challenge.
    pub fn verify(&self, verifier: &str) -> bool {
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        let computed = Self::for_verifier(verifier);
        well_formed && bool::from(computed.0.as_bytes().ct_eq(self.0.as_bytes()))
    }
}

/// A fresh code verifier (256 bits from the OS CSPRNG), for clients and tests.
pub fn generate_verifier() -> SecretString {
    SecretString::from(b64::encode(crate::opaque::random_bytes::<32>()))
}

/// The challenge for a secret verifier.
pub fn challenge_for(verifier: &SecretString) -> CodeChallenge {
    CodeChallenge::for_verifier(verifier.expose_secret())
}
