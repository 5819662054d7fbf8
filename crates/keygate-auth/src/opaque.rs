//! Opaque tokens (refresh tokens, authorization codes, CSRF tokens, client secrets) from
//! the OS CSPRNG, and the hash the database stores instead of them (S09).
//!
//! Tokens carry 256 bits of entropy, so a fast hash is enough: no one can search that
//! space, and a database dump yields nothing usable.

use std::fmt;

use rand::RngCore as _;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::b64;

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// What an opaque token is for; also its visible prefix, which lets `keygate scan` and
/// log redaction recognise keygate tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A refresh token (`kgr_`).
    Refresh,
    /// An authorization code (`kgc_`).
    AuthorizationCode,
    /// A confidential client's secret (`kgs_`).
    ClientSecret,
    /// An admin API token (`kga_`).
    Admin,
    /// A machine token for CI jobs and servers (`kgm_`): reads what its policy grants.
    Machine,
    /// Anything else that needs an unguessable value: CSRF tokens, state (`kgx_`).
    Other,
}

impl TokenKind {
    /// The prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Refresh => "kgr_",
            Self::AuthorizationCode => "kgc_",
            Self::ClientSecret => "kgs_",
            Self::Admin => "kga_",
            Self::Machine => "kgm_",
            Self::Other => "kgx_",
        }
    }
}

/// A freshly generated opaque token: shown once to its holder, stored only as its hash.
pub struct OpaqueToken {
    value: SecretString,
    hash: TokenHash,
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpaqueToken")
            .field("value", &"[REDACTED]")
            .field("hash", &self.hash)
            .finish()
    }
}

impl OpaqueToken {
    /// 256 random bits, base64url, with the kind's prefix.
    pub fn generate(kind: TokenKind) -> Self {
        let value = format!("{}{}", kind.prefix(), b64::encode(random_bytes::<32>()));
        let hash = TokenHash::of(&value);
        Self {
            value: SecretString::from(value),
            hash,
        }
    }

    /// The token, for the one response that hands it out.
    pub fn value(&self) -> &SecretString {
        &self.value
    }

    /// Its hash, for the database.
    pub fn hash(&self) -> &TokenHash {
        &self.hash
    }
}

/// SHA-256 of a token, domain-separated; what the store keeps and looks up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of a presented token.
    pub fn of(token: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"keygate opaque token v1\0");
        h.update(token.as_bytes());
        Self(h.finalize().into())
    }

    /// The hash of a presented secret token.
    pub fn of_secret(token: &SecretString) -> Self {
        Self::of(token.expose_secret())
    }

    /// Rebuilds a stored hash.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, for text columns.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time comparison (for the rare case of comparing instead of looking up).
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.to_hex())
    }
}
