//! Throttles: tighter limits the monitor puts on one user, session, client or network
//! (an IPv4 /24 or IPv6 /48) for a while, checked after the token and before the route's
//! own limits.
//!
//! With no throttle in force the check is one atomic load. Expiry is by the caller's
//! clock (Unix milliseconds), so tests that simulate hours of traffic can move time;
//! the spacing of calls within a throttle uses the process's monotonic clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keygate_auth::ids::{ClientId, SessionId, UserId};
use keygate_auth::resource::VerifiedAccess;

use crate::error::ProxyError;
use crate::limit::{InMemoryRateLimiter, LimitKey, RateDecision, RatePolicy};
use crate::route::RateSpec;

/// A client network: the address with everything past /24 (IPv4) or /48 (IPv6) cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetPrefix(IpAddr);

impl NetPrefix {
    /// The /24 or /48 holding `ip` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        Self(match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                IpAddr::from([a, b, c, 0])
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
            }
        })
    }

    /// Parses the text [`std::fmt::Display`] writes (`192.0.2.0/24`, `2001:db8:1::/48`),
    /// or a bare address, which names its network.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let ip: IpAddr = addr.parse().ok()?;
        let prefix = Self::of(ip);
        match (len, ip) {
            (None, _) => Some(prefix),
            (Some("24"), IpAddr::V4(_)) | (Some("48"), IpAddr::V6(_)) if prefix.0 == ip => {
                Some(prefix)
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for NetPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}/24"),
            IpAddr::V6(v6) => write!(f, "{v6}/48"),
        }
    }
}

/// Who a throttle applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleSubject {
    /// Every call of one user.
    User(UserId),
    /// Every call of one session (refresh family).
    Session(SessionId),
    /// Every call of one client (app).
    Client(ClientId),
    /// Every call from one network.
    Network(NetPrefix),
}

impl std::fmt::Display for ThrottleSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(u) => write!(f, "user:{}", u.as_str()),
            Self::Session(s) => write!(f, "session:{}", s.as_str()),
            Self::Client(c) => write!(f, "client:{}", c.as_str()),
            Self::Network(p) => write!(f, "ip:{p}"),
        }
    }
}

impl ThrottleSubject {
    /// Parses what [`std::fmt::Display`] writes.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, value) = text.split_once(':')?;
        match kind {
            "user" => UserId::parse(value).ok().map(Self::User),
            "session" => SessionId::parse(value).ok().map(Self::Session),
            "client" => ClientId::parse(value).ok().map(Self::Client),
            "ip" => NetPrefix::parse(value).map(Self::Network),
            _ => None,
        }
    }
}

/// One throttle in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    /// Calls allowed per minute while it lasts.
    pub per_minute: u32,
    /// When it ends (Unix milliseconds).
    pub until_ms: i64,
    /// The monitor rule (or operator) that set it.
    pub reason: String,
}

/// The throttles in force.
pub struct Throttles {
    /// How many entries the map holds: the hot path reads only this when it is zero.
    count: AtomicUsize,
    entries: RwLock<HashMap<ThrottleSubject, Throttle>>,
    limiter: InMemoryRateLimiter,
    /// Replicas sharing each throttle: each allows this share of its rate (rounded up).
    share: u32,
}

impl std::fmt::Debug for Throttles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttles")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Throttles {
    fn default() -> Self {
        Self::new()
    }
}

impl Throttles {
    /// No throttles.
    pub fn new() -> Self {
        Self::shared(1)
    }

    /// Throttles applied by each of `replicas` identical replicas (every replica's
    /// monitor applies the same ones): each replica allows `per_minute ÷ replicas` of a
    /// throttle's rate, rounded up, so behind an even load balancer the cluster allows
    /// about the rate set, and never more than `replicas` calls above it per minute.
    pub fn shared(replicas: u32) -> Self {
        Self {
            count: AtomicUsize::new(0),
            entries: RwLock::new(HashMap::new()),
            limiter: InMemoryRateLimiter::new(100_000),
            share: replicas.max(1),
        }
    }

    /// The local policy of a throttle of `per_minute` across the cluster.
    fn policy(&self, per_minute: u32) -> RatePolicy {
        let local = per_minute.div_ceil(self.share).max(1);
        RatePolicy::from_spec(&RateSpec {
            count: local,
            period: Duration::from_secs(60),
            burst: local.clamp(1, 5),
        })
    }

    /// Puts `subject` under `throttle`, replacing a looser or shorter one (the tighter
    /// rate and the later end win). Returns whether anything changed.
    pub fn set(&self, subject: ThrottleSubject, throttle: Throttle) -> bool {
        let Ok(mut map) = self.entries.write() else {
            return false;
        };
        let changed = match map.get_mut(&subject) {
            Some(old) => {
                let merged = Throttle {
                    per_minute: old.per_minute.min(throttle.per_minute),
                    until_ms: old.until_ms.max(throttle.until_ms),
                    reason: throttle.reason,
                };
                let changed =
                    merged.per_minute != old.per_minute || merged.until_ms != old.until_ms;
                *old = merged;
                changed
            }
            None => {
                map.insert(subject, throttle);
                true
            }
        };
        self.count.store(map.len(), Ordering::Release);
        changed
    }

    /// Lifts a throttle; false if there was none.
    pub fn lift(&self, subject: &ThrottleSubject) -> bool {
        let Ok(mut map) = self.entries.write() else {
            return false;
        };
        let removed = map.remove(subject).is_some();
        self.count.store(map.len(), Ordering::Release);
        removed
    }

    /// Throttles in force at `now_ms`, dropping expired ones.
    pub fn list(&self, now_ms: i64) -> Vec<(ThrottleSubject, Throttle)> {
        self.expire(now_ms);
        let mut out: Vec<_> = self
            .entries
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        out.sort_by_key(|a| a.0.to_string());
        out
    }

    /// Drops throttles that ended before `now_ms`.
    pub fn expire(&self, now_ms: i64) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Ok(mut map) = self.entries.write() {
            map.retain(|_, t| t.until_ms > now_ms);
            self.count.store(map.len(), Ordering::Release);
        }
    }

    /// Refuses the call when a throttle on its user, session, client or network is in
    /// force and its rate is spent.
    pub fn check(
        &self,
        access: &VerifiedAccess,
        client_ip: IpAddr,
        now_ms: i64,
    ) -> Result<(), ProxyError> {
        if self.count.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let found: Vec<(ThrottleSubject, u32)> = {
            let Ok(map) = self.entries.read() else {
                return Err(ProxyError::Unavailable("throttles"));
            };
            [
                ThrottleSubject::User(access.user().clone()),
                ThrottleSubject::Session(access.session().clone()),
                ThrottleSubject::Client(access.client().clone()),
                ThrottleSubject::Network(NetPrefix::of(client_ip)),
            ]
            .into_iter()
            .filter_map(|s| {
                map.get(&s)
                    .filter(|t| t.until_ms > now_ms)
                    .map(|t| (s, t.per_minute))
            })
            .collect()
        };
        for (subject, per_minute) in found {
            let policy = self.policy(per_minute);
            let key = LimitKey::from_raw(format!("throttle:{subject}"));
            if let RateDecision::Limited { retry_after } = self.limiter.acquire_now(&key, &policy) {
                return Err(ProxyError::Throttled { retry_after });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_24_and_48_and_round_trip() {
        let p = NetPrefix::of("198.51.100.77".parse().unwrap());
        assert_eq!(p.to_string(), "198.51.100.0/24");
        assert_eq!(NetPrefix::parse("198.51.100.0/24"), Some(p));
        assert_eq!(NetPrefix::parse("198.51.100.9"), Some(p));
        assert_eq!(
            NetPrefix::parse("198.51.100.9/24"),
            None,
            "not a network address"
        );
        assert_eq!(NetPrefix::parse("198.51.100.0/16"), None);
        let v6 = NetPrefix::of("2001:db8:aa:bb::1".parse().unwrap());
        assert_eq!(v6.to_string(), "2001:db8:aa::/48");
        assert_eq!(
            NetPrefix::of("::ffff:198.51.100.1".parse().unwrap()),
            p,
            "mapped IPv4 is IPv4"
        );
        for s in ["user:u1", "session:s1", "client:c1", "ip:2001:db8:aa::/48"] {
            assert_eq!(ThrottleSubject::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(ThrottleSubject::parse("team:x"), None);
    }

    #[test]
    fn tighter_and_longer_wins_and_expiry_lifts() {
        let t = Throttles::new();
        let u = ThrottleSubject::User(UserId::parse("u1").unwrap());
        let th = |per_minute, until_ms| Throttle {
            per_minute,
            until_ms,
            reason: "spike".into(),
        };
        assert!(t.set(u.clone(), th(10, 1_000)));
        assert!(t.set(u.clone(), th(20, 2_000)));
        assert_eq!(t.list(0)[0].1.per_minute, 10, "the tighter rate stays");
        assert_eq!(t.list(0)[0].1.until_ms, 2_000, "the later end wins");
        assert!(
            !t.set(u.clone(), th(30, 500)),
            "looser and shorter changes nothing"
        );
        assert!(t.list(2_000).is_empty(), "expired at its end");
        assert!(t.set(u.clone(), th(10, 5_000)));
        assert!(t.lift(&u));
        assert!(!t.lift(&u));
    }

    #[test]
    fn replicas_each_allow_their_share_of_a_throttle() {
        let alone = Throttles::new();
        let three = Throttles::shared(3);
        let burst = |t: &Throttles, per_minute| {
            let key = LimitKey::from_raw("throttle:user:u1".to_owned());
            let policy = t.policy(per_minute);
            (0..20)
                .take_while(|_| {
                    matches!(
                        t.limiter.acquire_now(&key, &policy),
                        RateDecision::Allowed { .. }
                    )
                })
                .count()
        };
        assert_eq!(burst(&alone, 3), 3);
        assert_eq!(burst(&three, 3), 1, "a third of 3 a minute");
        assert_eq!(burst(&Throttles::shared(3), 10), 4, "10 ÷ 3, rounded up");
        assert_eq!(burst(&Throttles::shared(8), 1), 1, "never nothing");
    }
}
