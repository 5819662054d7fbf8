//! Identifier newtypes parsed at the edge: users, clients, sessions, scopes, and the
//! names of vault secrets (one rule for the vault and the proxy's route table).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use rand::RngCore as _;
use rand::rngs::OsRng;

/// A hash map keyed by what keygate issued or was configured with: ids of its own users,
/// clients and sessions, route names, digests of tokens it signed. Hashed with foldhash,
/// a fraction of SipHash's cost per lookup, which every proxied call pays a few times.
///
/// Never for keys a caller picks freely (addresses, proof keys, `jti`s, anything read off
/// a request before it is verified): those maps keep std's keyed SipHash, whose strength
/// is what stops a caller from crafting keys that all land in one bucket.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set of what keygate issued or was configured with; see [`IdMap`].
pub type IdSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// An identifier or scope was malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed identifier")]
pub struct InvalidId;

fn visible_ascii(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && text.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        ///
        /// Shared text: a clone (every proxied call copies the caller's ids into its
        /// usage record) is a reference count, not an allocation.
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses 1–
            #[doc = stringify!($max)]
            /// visible ASCII characters.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                if visible_ascii(text, $max) {
                    Ok(Self(Arc::from(text)))
                } else {
                    Err(InvalidId)
                }
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A user's stable identifier (the access token `sub`).
    UserId,
    128
);
id_type!(
    /// An OAuth client identifier (`client_id`).
    ClientId,
    128
);
id_type!(
    /// A session, i.e. a refresh token family (the access token `sid`).
    SessionId,
    64
);

impl SessionId {
    /// A fresh random session id (128 bits from the OS CSPRNG).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        Self(Arc::from(crate::b64::encode(bytes)))
    }
}

/// One scope token (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`), shared text like the ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

impl Scope {
    /// Parses one scope token of at most 64 characters.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if ok {
            Ok(Self(Arc::from(text)))
        } else {
            Err(InvalidId)
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of scopes, written space-separated on the wire. Never changed once built, and
/// shared: a clone is a reference count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(Arc<BTreeSet<Scope>>);

impl ScopeSet {
    /// Parses a space-separated scope string (single spaces; empty string = no scopes).
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if text.is_empty() {
            return Ok(Self::default());
        }
        if text.len() > 4096 {
            return Err(InvalidId);
        }
        text.split(' ')
            .map(Scope::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(|set| Self(Arc::new(set)))
    }

    /// Builds a set from scopes.
    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(Arc::new(scopes.into_iter().collect()))
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// Whether every scope of `self` is in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes present in both.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        Self(Arc::new(self.0.intersection(&other.0).cloned().collect()))
    }

    /// Iterates the scopes in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in self.0.iter() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

/// A valid secret name: 1–128 characters of `A–Z a–z 0–9 . _ -`, starting with a letter
/// or digit. Safe in URLs, file names and log lines. The vault stores secrets under it;
/// the proxy's route table checks a route's `secret` with it at load time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

/// Why a string is not a secret name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret name: {0}")]
pub struct InvalidSecretName(&'static str);

impl SecretName {
    /// The longest name, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Parses a secret name, saying which rule it breaks.
    pub fn parse(s: &str) -> Result<Self, InvalidSecretName> {
        if s.is_empty() {
            return Err(InvalidSecretName("it is empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(InvalidSecretName("it is longer than 128 characters"));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(InvalidSecretName("it must start with a letter or digit"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(InvalidSecretName(
                "only letters, digits, '.', '_' and '-' are allowed",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_reject_bad_tokens() {
        let set = ScopeSet::parse("b a").unwrap();
        assert_eq!(set.to_string(), "a b");
        assert!(ScopeSet::parse("a  b").is_err());
        assert!(ScopeSet::parse("a\"b").is_err());
        assert!(ScopeSet::parse("a\\b").is_err());
        assert!(ScopeSet::parse("").unwrap().is_empty());
        assert!(UserId::parse("has space").is_err());
        assert!(UserId::parse("").is_err());
    }

    #[test]
    fn secret_names_accept_plain_names_and_reject_the_rest() {
        for ok in ["openai", "stripe.live", "MAPS_key-2", "a", &"x".repeat(128)] {
            assert!(SecretName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "../etc",
            "a b",
            "naïve",
            "a\nb",
            &"x".repeat(129),
        ] {
            assert!(SecretName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
