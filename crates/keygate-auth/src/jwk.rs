//! Public JSON Web Keys (RFC 7517) and their RFC 7638 thumbprints.
//!
//! Only public keys are ever represented: a JWK with any private member (`d`, `p`, `q`,
//! `dp`, `dq`, `qi`, `oth`, `k`) is refused on input, and serialisation emits public
//! members only. RSA is parsed for thumbprints and for [`crate::idtoken`], which verifies
//! external providers' RS256 ID tokens; keygate's own tokens and DPoP proofs never use it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::b64;
use crate::jws::Algorithm;
use crate::keys::VerificationKey;

/// Members that only private or symmetric keys carry (RFC 7518 §6.3.2, §6.4).
pub(crate) const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a JWK is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The JWK carries private key material.
    #[error("jwk has private members")]
    PrivateMembers,
    /// Missing or malformed members, or not a valid point.
    #[error("jwk malformed")]
    Invalid,
    /// A key type or curve keygate does not use for this purpose.
    #[error("jwk type unsupported")]
    Unsupported,
}

/// A public JWK. Coordinates are kept as canonical base64url strings, so two values are
/// equal exactly when they name the same key (which lets it key a cache).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PublicJwk {
    /// `kty: OKP`, `crv: Ed25519` (RFC 8037).
    Ed25519 {
        /// The public key.
        x: String,
    },
    /// `kty: EC`, `crv: P-256`.
    P256 {
        /// X coordinate.
        x: String,
        /// Y coordinate.
        y: String,
    },
    /// `kty: RSA`: thumbprints, and external ID tokens ([`crate::idtoken`]) only.
    Rsa {
        /// Modulus.
        n: String,
        /// Exponent.
        e: String,
    },
}

fn member<'a>(map: &'a Map<String, Value>, name: &str) -> Result<&'a str, JwkError> {
    match map.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(JwkError::Invalid),
    }
}

fn fixed_b64<const N: usize>(map: &Map<String, Value>, name: &str) -> Result<String, JwkError> {
    let text = member(map, name)?;
    b64::decode_array::<N>(text).ok_or(JwkError::Invalid)?;
    Ok(text.to_owned())
}

impl PublicJwk {
    /// Parses a JWK object, refusing private members.
    pub fn from_json(map: &Map<String, Value>) -> Result<Self, JwkError> {
        if PRIVATE_MEMBERS.iter().any(|m| map.contains_key(*m)) {
            return Err(JwkError::PrivateMembers);
        }
        match (member(map, "kty")?, map.get("crv")) {
            ("OKP", Some(Value::String(crv))) if crv == "Ed25519" => Ok(Self::Ed25519 {
                x: fixed_b64::<32>(map, "x")?,
            }),
            ("EC", Some(Value::String(crv))) if crv == "P-256" => Ok(Self::P256 {
                x: fixed_b64::<32>(map, "x")?,
                y: fixed_b64::<32>(map, "y")?,
            }),
            ("RSA", None) => {
                let n = member(map, "n")?;
                let e = member(map, "e")?;
                if b64::decode(n).is_none() || b64::decode(e).is_none() {
                    return Err(JwkError::Invalid);
                }
                Ok(Self::Rsa {
                    n: n.to_owned(),
                    e: e.to_owned(),
                })
            }
            ("OKP" | "EC" | "RSA", _) => Err(JwkError::Unsupported),
            _ => Err(JwkError::Unsupported),
        }
    }

    /// The RFC 7638 canonical JSON: required members only, sorted, no whitespace.
    fn canonical_json(&self) -> String {
        // Members are base64url or fixed names, so nothing needs JSON escaping.
        match self {
            Self::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
            Self::P256 { x, y } => {
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            Self::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
        }
    }

    /// The RFC 7638 SHA-256 thumbprint.
    pub fn thumbprint(&self) -> Jkt {
        Jkt(Arc::from(b64::encode(Sha256::digest(
            self.canonical_json().as_bytes(),
        ))))
    }

    /// The public members as a JSON object (for a JWKS; callers add `kid`, `alg`, `use`).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |k: &str, v: &str| {
            map.insert(k.to_owned(), Value::String(v.to_owned()));
        };
        match self {
            Self::Ed25519 { x } => {
                put("kty", "OKP");
                put("crv", "Ed25519");
                put("x", x);
            }
            Self::P256 { x, y } => {
                put("kty", "EC");
                put("crv", "P-256");
                put("x", x);
                put("y", y);
            }
            Self::Rsa { n, e } => {
                put("kty", "RSA");
                put("n", n);
                put("e", e);
            }
        }
        map
    }

    /// The key for verifying signatures; fails for RSA and for invalid points.
    pub fn verification_key(&self) -> Result<VerificationKey, JwkError> {
        match self {
            Self::Ed25519 { x } => {
                let bytes = b64::decode_array::<32>(x).ok_or(JwkError::Invalid)?;
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| JwkError::Invalid)?;
                if vk.is_weak() {
                    return Err(JwkError::Invalid);
                }
                Ok(VerificationKey::Ed25519(vk))
            }
            Self::P256 { x, y } => {
                let xb = b64::decode_array::<32>(x).ok_or(JwkError::Invalid)?;
                let yb = b64::decode_array::<32>(y).ok_or(JwkError::Invalid)?;
                let point =
                    p256::EncodedPoint::from_affine_coordinates(&xb.into(), &yb.into(), false);
                let vk = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map_err(|_| JwkError::Invalid)?;
                Ok(VerificationKey::P256(vk))
            }
            Self::Rsa { .. } => Err(JwkError::Unsupported),
        }
    }

    /// The algorithm this key signs with, if keygate supports it.
    pub fn algorithm(&self) -> Option<Algorithm> {
        match self {
            Self::Ed25519 { .. } => Some(Algorithm::EdDsa),
            Self::P256 { .. } => Some(Algorithm::Es256),
            Self::Rsa { .. } => None,
        }
    }
}

/// A JWK SHA-256 thumbprint (RFC 7638) as used in `cnf.jkt` (RFC 9449 §6).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Jkt(Arc<str>);

impl Jkt {
    /// Parses a thumbprint: canonical unpadded base64url of 32 bytes.
    pub fn parse(text: &str) -> Option<Self> {
        b64::decode_array::<32>(text).map(|_| Self(Arc::from(text)))
    }

    /// The base64url text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The SHA-256 thumbprint of a DER X.509 certificate, unpadded base64url: the
/// `cnf.x5t#S256` of a certificate-bound access token (RFC 8705 §3.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertThumbprint(Arc<str>);

impl CertThumbprint {
    /// The thumbprint of a certificate in DER.
    pub fn of_der(der: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(Arc::from(b64::encode(sha2::Sha256::digest(der))))
    }

    /// Parses a thumbprint: canonical unpadded base64url of 32 bytes.
    pub fn parse(text: &str) -> Option<Self> {
        b64::decode_array::<32>(text).map(|_| Self(Arc::from(text)))
    }

    /// The base64url text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CertThumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Jkt {
    type Error = JwkError;
    fn try_from(value: String) -> Result<Self, JwkError> {
        Self::parse(&value).ok_or(JwkError::Invalid)
    }
}

impl From<Jkt> for String {
    fn from(value: Jkt) -> Self {
        value.0.as_ref().to_owned()
    }
}

impl std::fmt::Display for Jkt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
