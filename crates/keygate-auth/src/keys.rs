//! keygate's signing keys, the verification keys derived from them, and the rotating
//! key set that backs the JWKS (S06).
//!
//! A key moves through three states: **next** (published in the JWKS, not yet signing),
//! **active** (the one key that signs), **retired** (no longer signs, still published and
//! accepted until every token it signed has expired). [`SigningKeySet::promote`] refuses
//! to let a next key sign before it has been published for
//! [`RotationPolicy::min_publish_secs`], so relying parties that cache the JWKS already
//! know it.

use std::fmt;

use p256::ecdsa::signature::Signer as _;
use rand::rngs::OsRng;
use secrecy::SecretSlice;
use serde_json::{Map, Value};

use crate::clock::UnixTime;
use crate::jwk::{Jkt, PublicJwk};
use crate::jws::Algorithm;

/// Why a key operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key bytes of the wrong length or not a valid scalar.
    #[error("invalid key material")]
    InvalidKey,
    /// A `kid` that is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid kid")]
    InvalidKid,
    /// Two keys share a `kid`, or more than one key is active or next.
    #[error("inconsistent key set")]
    Inconsistent,
    /// There is already a next key.
    #[error("a next key already exists")]
    NextExists,
    /// There is no next key to promote.
    #[error("no next key")]
    NoNextKey,
    /// The next key has not been published long enough to sign.
    #[error("next key not published long enough")]
    NextTooFresh,
}

/// A public key keygate verifies signatures with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerificationKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// P-256.
    P256(p256::ecdsa::VerifyingKey),
}

impl VerificationKey {
    /// The one algorithm this key verifies (S01: one algorithm per key).
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::EdDsa,
            Self::P256(_) => Algorithm::Es256,
        }
    }

    /// The public JWK.
    pub fn to_jwk(&self) -> PublicJwk {
        match self {
            Self::Ed25519(vk) => PublicJwk::Ed25519 {
                x: crate::b64::encode(vk.as_bytes()),
            },
            Self::P256(vk) => {
                let point = vk.to_encoded_point(false);
                let coord = |c: Option<&p256::FieldBytes>| {
                    crate::b64::encode(c.map(|b| -> &[u8] { b }).unwrap_or_default())
                };
                PublicJwk::P256 {
                    x: coord(point.x()),
                    y: coord(point.y()),
                }
            }
        }
    }

    /// The RFC 7638 thumbprint of the public JWK.
    pub fn thumbprint(&self) -> Jkt {
        self.to_jwk().thumbprint()
    }
}

enum SecretKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

/// A private signing key. Zeroized on drop; `Debug` shows only the algorithm and public
/// thumbprint.
pub struct SigningKey {
    secret: SecretKey,
    public: VerificationKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.algorithm())
            .field("thumbprint", &self.public.thumbprint())
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl SigningKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate(alg: Algorithm) -> Self {
        match alg {
            Algorithm::EdDsa | Algorithm::Ed25519 => {
                Self::from_ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng))
            }
            Algorithm::Es256 => Self::from_p256(p256::ecdsa::SigningKey::random(&mut OsRng)),
        }
    }

    fn from_ed25519(sk: ed25519_dalek::SigningKey) -> Self {
        let public = VerificationKey::Ed25519(sk.verifying_key());
        Self {
            secret: SecretKey::Ed25519(sk),
            public,
        }
    }

    fn from_p256(sk: p256::ecdsa::SigningKey) -> Self {
        let public = VerificationKey::P256(*sk.verifying_key());
        Self {
            secret: SecretKey::P256(sk),
            public,
        }
    }

    /// Restores a key from its 32 secret bytes (Ed25519 seed or P-256 scalar), as stored
    /// encrypted by the vault.
    pub fn from_secret_bytes(alg: Algorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        match alg {
            Algorithm::EdDsa | Algorithm::Ed25519 => {
                let seed: &[u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidKey)?;
                Ok(Self::from_ed25519(ed25519_dalek::SigningKey::from_bytes(
                    seed,
                )))
            }
            Algorithm::Es256 => {
                if bytes.len() != 32 {
                    return Err(KeyError::InvalidKey);
                }
                let sk =
                    p256::ecdsa::SigningKey::from_slice(bytes).map_err(|_| KeyError::InvalidKey)?;
                Ok(Self::from_p256(sk))
            }
        }
    }

    /// The 32 secret bytes, for encrypted storage only.
    pub fn to_secret_bytes(&self) -> SecretSlice<u8> {
        match &self.secret {
            SecretKey::Ed25519(sk) => SecretSlice::from(sk.to_bytes().to_vec()),
            SecretKey::P256(sk) => SecretSlice::from(sk.to_bytes().to_vec()),
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    /// The public half.
    pub fn verification_key(&self) -> &VerificationKey {
        &self.public
    }

    /// Signs `input`: 64 bytes for both algorithms (ES256 as R‖S).
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        match &self.secret {
            SecretKey::Ed25519(sk) => {
                use ed25519_dalek::Signer as _;
                sk.sign(input).to_bytes().to_vec()
            }
            SecretKey::P256(sk) => {
                let sig: p256::ecdsa::Signature = sk.sign(input);
                sig.to_bytes().to_vec()
            }
        }
    }
}

/// A key identifier: 1–64 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(String);

impl Kid {
    /// Validates a `kid`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(KeyError::InvalidKid)
        }
    }

    /// The `kid` keygate gives a key: its JWK thumbprint.
    pub fn for_key(key: &VerificationKey) -> Self {
        Self(key.thumbprint().as_str().to_owned())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// The signing key.
    Active,
    /// No longer signing since the given time; published until its tokens expire.
    Retired {
        /// When it stopped signing.
        since: UnixTime,
    },
}

/// One key of the set, as the store persists it (secret bytes encrypted by the vault).
#[derive(Debug)]
pub struct KeyEntry {
    /// Its identifier.
    pub kid: Kid,
    /// The key.
    pub key: SigningKey,
    /// Its state.
    pub state: KeyState,
    /// When it first appeared in the JWKS.
    pub published_at: UnixTime,
}

/// Timing rules of the rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a next key must be published before it may sign: at least the JWKS
    /// cache lifetime relying parties use.
    pub min_publish_secs: i64,
    /// How long a retired key stays published and accepted: at least the longest access
    /// token lifetime plus clock skew.
    pub retire_keep_secs: i64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            min_publish_secs: 3600,
            retire_keep_secs: 300 + 60,
        }
    }
}

/// The rotating set of keygate's signing keys.
#[derive(Debug)]
pub struct SigningKeySet {
    policy: RotationPolicy,
    entries: Vec<KeyEntry>,
}

impl SigningKeySet {
    /// A set whose first key signs at once (nobody can have cached an older JWKS).
    pub fn bootstrap(policy: RotationPolicy, key: SigningKey, now: UnixTime) -> Self {
        let kid = Kid::for_key(key.verification_key());
        Self {
            policy,
            entries: vec![KeyEntry {
                kid,
                key,
                state: KeyState::Active,
                published_at: now,
            }],
        }
    }

    /// Rebuilds a set from stored entries, checking its invariants: unique `kid`s, at
    /// most one active and at most one next key.
    pub fn from_entries(policy: RotationPolicy, entries: Vec<KeyEntry>) -> Result<Self, KeyError> {
        let active = entries
            .iter()
            .filter(|e| e.state == KeyState::Active)
            .count();
        let next = entries.iter().filter(|e| e.state == KeyState::Next).count();
        let mut kids: Vec<&Kid> = entries.iter().map(|e| &e.kid).collect();
        kids.sort();
        kids.dedup();
        if active > 1 || next > 1 || kids.len() != entries.len() {
            return Err(KeyError::Inconsistent);
        }
        Ok(Self { policy, entries })
    }

    /// The entries, for persistence.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// The rotation policy.
    pub fn policy(&self) -> RotationPolicy {
        self.policy
    }

    /// The key that signs now, if any.
    pub fn active(&self) -> Option<&KeyEntry> {
        self.entries.iter().find(|e| e.state == KeyState::Active)
    }

    /// Publishes `key` as the next key. Returns its `kid`.
    pub fn add_next(&mut self, key: SigningKey, now: UnixTime) -> Result<Kid, KeyError> {
        if self.entries.iter().any(|e| e.state == KeyState::Next) {
            return Err(KeyError::NextExists);
        }
        let kid = Kid::for_key(key.verification_key());
        if self.entries.iter().any(|e| e.kid == kid) {
            return Err(KeyError::Inconsistent);
        }
        self.entries.push(KeyEntry {
            kid: kid.clone(),
            key,
            state: KeyState::Next,
            published_at: now,
        });
        Ok(kid)
    }

    /// Makes the next key active and retires the active one, if the next key has been
    /// published for at least [`RotationPolicy::min_publish_secs`].
    pub fn promote(&mut self, now: UnixTime) -> Result<(), KeyError> {
        let next = self
            .entries
            .iter()
            .position(|e| e.state == KeyState::Next)
            .ok_or(KeyError::NoNextKey)?;
        let published_at = self
            .entries
            .get(next)
            .map(|e| e.published_at)
            .ok_or(KeyError::NoNextKey)?;
        if now.0.saturating_sub(published_at.0) < self.policy.min_publish_secs {
            return Err(KeyError::NextTooFresh);
        }
        for entry in &mut self.entries {
            if entry.state == KeyState::Active {
                entry.state = KeyState::Retired { since: now };
            }
        }
        if let Some(entry) = self.entries.get_mut(next) {
            entry.state = KeyState::Active;
        }
        Ok(())
    }

    /// A scheduled rotation step: promote the next key, publish `new_next`, drop expired
    /// retired keys. Returns the dropped `kid`s.
    pub fn rotate(&mut self, new_next: SigningKey, now: UnixTime) -> Result<Vec<Kid>, KeyError> {
        self.promote(now)?;
        self.add_next(new_next, now)?;
        Ok(self.prune(now))
    }

    fn retired_expired(&self, state: KeyState, now: UnixTime) -> bool {
        match state {
            KeyState::Retired { since } => now >= since.plus(self.policy.retire_keep_secs),
            _ => false,
        }
    }

    /// Removes retired keys whose tokens have all expired; returns their `kid`s.
    pub fn prune(&mut self, now: UnixTime) -> Vec<Kid> {
        let mut removed = Vec::new();
        let policy = self.policy;
        self.entries.retain(|e| {
            let expired = match e.state {
                KeyState::Retired { since } => now >= since.plus(policy.retire_keep_secs),
                _ => false,
            };
            if expired {
                removed.push(e.kid.clone());
            }
            !expired
        });
        removed
    }

    /// The key for a token's `kid`: a lookup in keygate's own set only (S02).
    ///
    /// Next keys are accepted too, so a replica that has not yet reloaded the set still
    /// accepts tokens from a replica that already promoted.
    pub fn verification_key(&self, kid: &str, now: UnixTime) -> Option<&VerificationKey> {
        self.entries
            .iter()
            .find(|e| e.kid.as_str() == kid && !self.retired_expired(e.state, now))
            .map(|e| e.key.verification_key())
    }

    /// The published key set: every next, active and unexpired retired key, public
    /// members only (S06).
    pub fn jwks(&self, now: UnixTime) -> Jwks {
        let keys = self
            .entries
            .iter()
            .filter(|e| !self.retired_expired(e.state, now))
            .map(|e| {
                let vk = e.key.verification_key();
                let mut map = vk.to_jwk().to_json();
                map.insert("kid".into(), Value::String(e.kid.as_str().to_owned()));
                map.insert("alg".into(), Value::String(vk.algorithm().as_str().into()));
                map.insert("use".into(), Value::String("sig".into()));
                map
            })
            .collect();
        Jwks { keys }
    }
}

/// A JSON Web Key Set of public keys (RFC 7517 §5).
#[derive(Clone, Debug, PartialEq)]
pub struct Jwks {
    keys: Vec<Map<String, Value>>,
}

impl Jwks {
    /// The keys.
    pub fn keys(&self) -> &[Map<String, Value>] {
        &self.keys
    }

    /// `{"keys":[…]}`.
    pub fn to_json(&self) -> Value {
        let keys = self.keys.iter().cloned().map(Value::Object).collect();
        let mut root = Map::new();
        root.insert("keys".into(), Value::Array(keys));
        Value::Object(root)
    }
}
