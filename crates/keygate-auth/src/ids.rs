//! Identifier newtypes parsed at the edge: users, clients, sessions, scopes.

use std::collections::BTreeSet;
use std::fmt;

use rand::RngCore as _;
use rand::rngs::OsRng;

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
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses 1–
            #[doc = stringify!($max)]
            /// visible ASCII characters.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                if visible_ascii(text, $max) {
                    Ok(Self(text.to_owned()))
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
        Self(crate::b64::encode(bytes))
    }
}

/// One scope token (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

impl Scope {
    /// Parses one scope token of at most 64 characters.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidId)
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of scopes, written space-separated on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

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
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Builds a set from scopes.
    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().collect())
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
        Self(self.0.intersection(&other.0).cloned().collect())
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
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(scope.as_str())?;
        }
        Ok(())
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
}
