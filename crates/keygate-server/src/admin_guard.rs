//! Failed admin authentication, limited and aggregated per source before the audit log.
//! The same guard, with its own instance and action name (`ci.login`), stands in front of
//! the unauthenticated CI login.
//!
//! Every refusal used to be one durable, hash-chained audit row, so anyone who could reach
//! `/admin/v1/` could grow the log at request rate. Now the first failure of a source in a
//! window is audited as before; later ones in the same window are counted in memory and
//! written as one `admin.auth` entry with their `count` when the window has closed (by the
//! flush task, or at that source's next audited failure, or when the source is evicted).
//! Past `limit` failures in a window the source is answered 429 with `Retry-After` before
//! its token is even looked at. Sources are client addresses, IPv6 by /64 (one host holds
//! a whole /64), and at most [`MAX_SOURCES`] are tracked.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use keygate_audit::{AuditEvent, Outcome};

use crate::bounded::BoundedMap;

/// Sources tracked at once; the least recently failing are dropped first (their pending
/// counts are still written).
pub const MAX_SOURCES: usize = 10_000;

/// Settings (`[admin]` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminAuthLimits {
    /// Failures of one source are aggregated per window of this length.
    pub window: Duration,
    /// Failures in a window after which the source is refused with 429.
    pub limit: u64,
}

impl Default for AdminAuthLimits {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            limit: 10,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    /// Failures in this window, audited or not.
    failures: u64,
    /// Failures not yet in the audit log.
    pending: u64,
    last_ms: i64,
}

impl Window {
    /// The window with one more failure at `now_ms`, not yet audited.
    fn counted(self, now_ms: i64) -> Self {
        Self {
            failures: self.failures.saturating_add(1),
            pending: self.pending.saturating_add(1),
            last_ms: now_ms,
            ..self
        }
    }
}

/// Failures of one source that are in no audit entry yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// The audit action of the entry (`admin.auth`, `ci.login`).
    pub action: &'static str,
    pub source: String,
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Burst {
    /// The single audit entry that stands for the whole burst.
    pub fn event(&self) -> AuditEvent {
        AuditEvent::new("anonymous", self.action, Outcome::Denied)
            .target("(repeated)")
            .detail("reason", "repeated")
            .detail("source", self.source.clone())
            .detail("count", self.count)
            .detail("first_ms", self.first_ms)
            .detail("last_ms", self.last_ms)
    }
}

/// What to do with a request before its token is checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Check the token.
    Check,
    /// Refuse with 429; retry after this many seconds.
    Refuse(u64),
}

/// What to do with a failed authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Audit this failure, after the earlier bursts (closed windows, evicted sources).
    Audit(Vec<Burst>),
    /// Counted; it will be part of a later burst entry.
    Counted,
}

#[derive(Debug)]
pub struct AdminAuthGuard {
    action: &'static str,
    limits: AdminAuthLimits,
    sources: Mutex<BoundedMap<IpAddr, Window>>,
    /// Bursts of evicted sources, written with the next audited failure or flush.
    evicted: Mutex<Vec<Burst>>,
}

/// The aggregation key: the address, or its /64 for IPv6.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

fn burst(action: &'static str, source: &IpAddr, w: &Window) -> Option<Burst> {
    (w.pending > 0).then(|| Burst {
        action,
        source: source.to_string(),
        count: w.pending,
        first_ms: w.start_ms,
        last_ms: w.last_ms,
    })
}

impl AdminAuthGuard {
    pub fn new(limits: AdminAuthLimits) -> Self {
        Self::for_action(limits, "admin.auth")
    }

    /// A guard whose aggregated entries are audited as `action`.
    pub fn for_action(limits: AdminAuthLimits, action: &'static str) -> Self {
        Self::with_capacity(limits, action, MAX_SOURCES)
    }

    fn with_capacity(limits: AdminAuthLimits, action: &'static str, cap: usize) -> Self {
        Self {
            action,
            limits,
            sources: Mutex::new(BoundedMap::new(cap)),
            evicted: Mutex::new(Vec::new()),
        }
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.limits.window.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// Before the token check: refuses a source that is past its limit (the refusal counts
    /// as one more failure of the burst).
    pub fn gate(&self, ip: IpAddr, now_ms: i64) -> Gate {
        let source = source_of(ip);
        let Ok(mut sources) = self.sources.lock() else {
            return Gate::Check;
        };
        let window_ms = self.window_ms();
        let Some(w) = sources.get(&source).copied() else {
            return Gate::Check;
        };
        let end = w.start_ms.saturating_add(window_ms);
        if now_ms >= end || w.failures < self.limits.limit {
            return Gate::Check;
        }
        self.keep(&mut sources, source, w.counted(now_ms));
        let wait_ms = u64::try_from(end.saturating_sub(now_ms)).unwrap_or(0);
        Gate::Refuse(wait_ms.div_ceil(1000).max(1))
    }

    /// A request from `ip` failed authentication.
    pub fn failed(&self, ip: IpAddr, now_ms: i64) -> Failure {
        let source = source_of(ip);
        let window_ms = self.window_ms();
        let mut earlier = Vec::new();
        {
            let Ok(mut sources) = self.sources.lock() else {
                return Failure::Audit(earlier);
            };
            if let Some(w) = sources.remove(&source) {
                if now_ms < w.start_ms.saturating_add(window_ms) {
                    self.keep(&mut sources, source, w.counted(now_ms));
                    return Failure::Counted;
                }
                earlier.extend(burst(self.action, &source, &w));
            }
            let fresh = Window {
                start_ms: now_ms,
                failures: 1,
                pending: 0,
                last_ms: now_ms,
            };
            self.keep(&mut sources, source, fresh);
        }
        earlier.extend(self.take_evicted());
        Failure::Audit(earlier)
    }

    /// Bursts whose window has closed (and of evicted sources); their sources are
    /// forgotten. `all` takes every pending burst (at shutdown).
    pub fn take_closed(&self, now_ms: i64, all: bool) -> Vec<Burst> {
        let window_ms = self.window_ms();
        let mut out = self.take_evicted();
        if let Ok(mut sources) = self.sources.lock() {
            let closed =
                sources.extract_if(|_, w| all || now_ms >= w.start_ms.saturating_add(window_ms));
            out.extend(closed.iter().filter_map(|(s, w)| burst(self.action, s, w)));
        }
        out
    }

    fn keep(&self, sources: &mut BoundedMap<IpAddr, Window>, source: IpAddr, w: Window) {
        let dropped = sources.insert(source, w);
        if dropped.is_empty() {
            return;
        }
        if let Ok(mut evicted) = self.evicted.lock() {
            evicted.extend(dropped.iter().filter_map(|(s, w)| burst(self.action, s, w)));
        }
    }

    fn take_evicted(&self) -> Vec<Burst> {
        self.evicted
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdminAuthLimits {
        AdminAuthLimits {
            window: Duration::from_secs(10),
            limit: 3,
        }
    }

    #[test]
    fn a_burst_is_one_audited_failure_plus_one_counted_entry() {
        let g = AdminAuthGuard::new(limits());
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let mut audited = 0;
        let mut refused = 0;
        for i in 0..500 {
            match g.gate(ip, 1_000 + i) {
                Gate::Refuse(wait) => {
                    assert!((1..=10).contains(&wait));
                    refused += 1;
                }
                Gate::Check => match g.failed(ip, 1_000 + i) {
                    Failure::Audit(earlier) => {
                        assert!(earlier.is_empty());
                        audited += 1;
                    }
                    Failure::Counted => {}
                },
            }
        }
        assert_eq!((audited, refused), (1, 497));
        assert!(g.take_closed(5_000, false).is_empty(), "window still open");
        let bursts = g.take_closed(11_000, false);
        assert_eq!(bursts.len(), 1);
        assert_eq!(bursts[0].count, 499);
        assert_eq!(g.gate(ip, 11_001), Gate::Check, "a new window starts clean");
    }

    #[test]
    fn the_next_window_writes_the_previous_burst() {
        let g = AdminAuthGuard::new(limits());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let same_host: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert_eq!(g.failed(ip, 0), Failure::Audit(vec![]));
        assert_eq!(g.failed(same_host, 1), Failure::Counted, "same /64");
        let Failure::Audit(earlier) = g.failed(ip, 20_000) else {
            panic!("a new window is audited")
        };
        assert_eq!(earlier.len(), 1);
        assert_eq!(earlier[0].count, 1);
        assert_eq!(earlier[0].source, "2001:db8::");
    }

    #[test]
    fn tracked_sources_are_bounded_and_evicted_counts_still_written() {
        let g = AdminAuthGuard::with_capacity(limits(), "admin.auth", 100);
        let mut total = 0;
        for i in 0..1_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            for at in [0, 1] {
                if let Failure::Audit(earlier) = g.failed(ip, at) {
                    total += earlier.iter().map(|b| b.count).sum::<u64>();
                }
            }
        }
        assert!(g.sources.lock().unwrap().len() <= 100);
        total += g.take_closed(0, true).iter().map(|b| b.count).sum::<u64>();
        assert_eq!(
            total, 1_000,
            "each source's second failure is accounted for"
        );
    }
}
