//! One replica's closed interval, as replicas exchange it.
//!
//! With `[coordination]`, every replica publishes the counters of each interval it closes
//! and folds in the other replicas' before evaluating, so every replica's baselines and
//! rules see the cluster's traffic, not a third of it ([`crate::Monitor::evaluate_shared`]).
//! The wire form carries ids as text; a receiver parses each one again and drops what does
//! not parse, so a malformed delta costs counts, never a panic.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One interval's counts from one replica, plus the incidents its operators acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// When the sender closed the interval (its clock, Unix ms); stale deltas are dropped.
    pub(crate) at_ms: i64,
    /// `(user, calls, cost, first_ms)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) users: Vec<(String, u64, u64, i64)>,
    /// `(route, calls, cost, first_ms)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) routes: Vec<(String, u64, u64, i64)>,
    /// `(user, [failed, unattested, attested])` calls by app attestation tier, for the
    /// users in `users` that made calls of a tier other than `unattested` (a user without
    /// an entry made only unattested calls, as a sender from before tiers says of all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) user_tiers: Vec<(String, [u64; 3])>,
    /// The same for routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) route_tiers: Vec<(String, [u64; 3])>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) sessions: Vec<SessionDelta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) refusals: Vec<RefusalDelta>,
    /// `(session, user, ip, at_ms)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) mismatches: Vec<(String, String, IpAddr, i64)>,
    /// Incident keys acknowledged on the sender.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) resets: Vec<String>,
    /// Throttles an operator lifted on the sender (their subjects, as the admin API names
    /// them), for the server to lift everywhere; the monitor itself ignores them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) lifted: Vec<String>,
}

/// A session family's interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionDelta {
    pub(crate) session: String,
    pub(crate) user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) jkt: Option<String>,
    #[serde(default)]
    pub(crate) jkt_changed: bool,
    /// `(address, first seen ms)`, one per prefix.
    pub(crate) ips: Vec<(IpAddr, i64)>,
}

/// Refusals counted against one address prefix (any address in it), client or user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefusalDelta {
    #[serde(flatten)]
    pub(crate) key: RefusalKey,
    pub(crate) token: u64,
    pub(crate) proof: u64,
    pub(crate) login: u64,
    pub(crate) first_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RefusalKey {
    Ip(IpAddr),
    Client(String),
    User(String),
}

impl Delta {
    /// Nothing counted and nothing acknowledged: not worth sending.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.routes.is_empty()
            && self.sessions.is_empty()
            && self.refusals.is_empty()
            && self.mismatches.is_empty()
            && self.resets.is_empty()
            && self.lifted.is_empty()
    }

    /// Throttles lifted on the sender.
    pub fn lifted(&self) -> &[String] {
        &self.lifted
    }

    /// Announces throttles lifted here to the other replicas.
    pub fn add_lifted(&mut self, subjects: impl IntoIterator<Item = String>) {
        self.lifted.extend(subjects);
    }

    /// When the sender closed the interval, Unix ms on its clock.
    pub fn at_ms(&self) -> i64 {
        self.at_ms
    }
}
