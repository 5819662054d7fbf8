//! What an evaluation reports: findings, their subjects and the actions asked for.

use std::fmt;
use std::net::IpAddr;

use keygate_auth::ids::{ClientId, SessionId, UserId};
use keygate_proxy::RouteName;
use serde::{Serialize, Serializer};

/// The kind of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKind {
    /// A rate far above the subject's own baseline.
    Spike,
    /// An absolute calls-per-minute or cost-per-day limit.
    Ceiling,
    /// A session family used from a network (prefix or country) it never used.
    NewNetwork,
    /// Two locations of one session family too far apart for the time between them.
    ImpossibleTravel,
    /// A session family's DPoP key changed.
    KeyChange,
    /// A burst of refused tokens, proofs or logins.
    Refusals,
}

impl RuleKind {
    /// The stable snake_case name, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spike => "spike",
            Self::Ceiling => "ceiling",
            Self::NewNetwork => "new_network",
            Self::ImpossibleTravel => "impossible_travel",
            Self::KeyChange => "key_change",
            Self::Refusals => "refusals",
        }
    }

    /// Parses a configuration name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Spike,
            Self::Ceiling,
            Self::NewNetwork,
            Self::ImpossibleTravel,
            Self::KeyChange,
            Self::Refusals,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// What a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A user.
    User(UserId),
    /// A session (refresh token family) and its user.
    Session {
        /// The family.
        session: SessionId,
        /// Its user.
        user: UserId,
    },
    /// A proxy route.
    Route(RouteName),
    /// An OAuth client.
    Client(ClientId),
    /// An address prefix: a /24 for IPv4, a /48 for IPv6, e.g. `203.0.113.0/24`.
    Ip(String),
}

impl Subject {
    /// The scope name this subject belongs to (`user`, `session`, `route`, `client`, `ip`).
    pub fn scope(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Session { .. } => "session",
            Self::Route(_) => "route",
            Self::Client(_) => "client",
            Self::Ip(_) => "ip",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(u) => write!(f, "user:{u}"),
            Self::Session { session, user } => write!(f, "session:{session}@{user}"),
            Self::Route(r) => write!(f, "route:{r}"),
            Self::Client(c) => write!(f, "client:{c}"),
            Self::Ip(p) => write!(f, "ip:{p}"),
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = serde_json::Map::new();
        map.insert("scope".into(), self.scope().into());
        match self {
            Self::User(u) => {
                map.insert("user".into(), u.as_str().into());
            }
            Self::Session { session, user } => {
                map.insert("session".into(), session.as_str().into());
                map.insert("user".into(), user.as_str().into());
            }
            Self::Route(r) => {
                map.insert("route".into(), r.as_str().into());
            }
            Self::Client(c) => {
                map.insert("client".into(), c.as_str().into());
            }
            Self::Ip(p) => {
                map.insert("prefix".into(), p.as_str().into());
            }
        }
        map.serialize(s)
    }
}

/// What the server is asked to do about a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Tell the operator (log, audit, console).
    Alert,
    /// Rate-limit the subject to `per_minute` calls for `for_secs` seconds.
    Throttle {
        /// Calls allowed per minute.
        per_minute: u32,
        /// How long the throttle holds.
        for_secs: u64,
    },
    /// Revoke the session family (session subject) or every session of the user.
    Revoke,
    /// Disable the user.
    Disable,
    /// Rotate the route's upstream key.
    Rotate,
}

impl Action {
    /// The stable snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Throttle { .. } => "throttle",
            Self::Revoke => "revoke",
            Self::Disable => "disable",
            Self::Rotate => "rotate",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RuleKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = serde_json::Map::new();
        map.insert("action".into(), self.as_str().into());
        if let Self::Throttle {
            per_minute,
            for_secs,
        } = self
        {
            map.insert("per_minute".into(), (*per_minute).into());
            map.insert("for_secs".into(), (*for_secs).into());
        }
        map.serialize(s)
    }
}

/// One detection, with the action its incident's ladder asks for now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// The rule's configured name.
    pub rule: String,
    /// The rule's kind.
    pub kind: RuleKind,
    /// What it is about.
    pub subject: Subject,
    /// The action of `step`.
    pub action: Action,
    /// The ladder step (0 for the first detection of an incident).
    pub step: usize,
    /// The de-duplication key: rule name and subject. Holds no secret.
    pub incident: String,
    /// Counts, window, baseline, factor, prefix, country, distance, speed: never a token
    /// or a key.
    pub evidence: serde_json::Map<String, serde_json::Value>,
    /// When the triggering traffic began (first event of the window that fired), Unix ms.
    pub started_ms: i64,
    /// When the evaluation that emitted this ran, Unix ms.
    pub at_ms: i64,
}

/// An address's network prefix: the /24 of an IPv4 address, the /48 of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Prefix {
    V4([u8; 3]),
    V6([u16; 3]),
}

impl Prefix {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Self::V4([a, b, c])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of(IpAddr::V4(v4)),
                None => {
                    let [a, b, c, ..] = v6.segments();
                    Self::V6([a, b, c])
                }
            },
        }
    }

    /// The prefix's first address: `Prefix::of(p.base()) == p`.
    pub(crate) fn base(&self) -> IpAddr {
        match *self {
            Self::V4([a, b, c]) => IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, 0)),
            Self::V6([a, b, c]) => IpAddr::V6(std::net::Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0)),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Self::V6([a, b, c]) => write!(f, "{a:x}:{b:x}:{c:x}::/48"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_snake_case() {
        assert_eq!(RuleKind::NewNetwork.to_string(), "new_network");
        assert_eq!(
            RuleKind::parse("impossible_travel"),
            Some(RuleKind::ImpossibleTravel)
        );
        assert_eq!(RuleKind::parse("Spike"), None);
        let throttle = Action::Throttle {
            per_minute: 5,
            for_secs: 60,
        };
        assert_eq!(throttle.to_string(), "throttle");
        let json = serde_json::to_value(throttle).unwrap_or_default();
        assert_eq!(json["action"], "throttle");
        assert_eq!(json["per_minute"], 5);
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_48() {
        let v4: IpAddr = [203, 0, 113, 77].into();
        assert_eq!(Prefix::of(v4).to_string(), "203.0.113.0/24");
        let v6: IpAddr = "2001:db8:abcd:12::1".parse().unwrap_or(v4);
        assert_eq!(Prefix::of(v6).to_string(), "2001:db8:abcd::/48");
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap_or(v4);
        assert_eq!(Prefix::of(mapped), Prefix::of(v4));
    }
}
