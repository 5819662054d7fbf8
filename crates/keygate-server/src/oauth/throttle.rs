//! Sign-in throttling (S18) by three keys, so that neither an attacker nor a shared address
//! locks anyone else out.
//!
//! - (account, address): the tight policy. One address guessing one account trips this
//!   first, so it slows only itself.
//! - account: the same growth after twice the free attempts: guessing one account from
//!   many addresses is still slowed, but a single address cannot reach it before its own
//!   pair key has pushed it into long waits.
//! - address (IPv6 by /64): a fixed window with a high ceiling (`tokens.login_ip_max_failures`
//!   per `tokens.login_ip_window`), against spraying one password over many accounts. A
//!   carrier NAT puts thousands of phones behind one address, so this is never the tight
//!   key, and a success does not reset it (an attacker's own account would reset it).
//!
//! All keys are kept for whatever name was submitted, existing or not, and checked before
//! the account is looked up, so the answer says nothing about which accounts exist.

use std::net::IpAddr;
use std::sync::Mutex;

use keygate_auth::clock::UnixTime;
use keygate_auth::throttle::{FailureRecord, ThrottlePolicy};

use crate::admin_guard::source_of;
use crate::bounded::BoundedMap;

/// Account and (account, address) records kept at most.
const MAX_ACCOUNT_KEYS: usize = 100_000;
/// Address windows kept at most.
const MAX_ADDRESSES: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Pair(String, IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct AddressWindow {
    start: i64,
    failures: u32,
}

#[derive(Debug)]
pub(crate) struct LoginThrottle {
    pair: ThrottlePolicy,
    account: ThrottlePolicy,
    address_max: u32,
    address_window: i64,
    records: Mutex<BoundedMap<Key, FailureRecord>>,
    addresses: Mutex<BoundedMap<IpAddr, AddressWindow>>,
}

impl LoginThrottle {
    /// `policy` for (account, address); the account key allows twice its free attempts.
    pub(crate) fn new(policy: ThrottlePolicy, address_max: u32, address_window_secs: i64) -> Self {
        Self {
            pair: policy,
            account: ThrottlePolicy {
                free_attempts: policy.free_attempts.saturating_mul(2),
                ..policy
            },
            address_max,
            address_window: address_window_secs.max(1),
            records: Mutex::new(BoundedMap::new(MAX_ACCOUNT_KEYS)),
            addresses: Mutex::new(BoundedMap::new(MAX_ADDRESSES)),
        }
    }

    fn keys(account: &str, ip: IpAddr) -> [Key; 2] {
        let name = account.to_lowercase();
        [Key::Pair(name.clone(), source_of(ip)), Key::Account(name)]
    }

    fn policy(&self, key: &Key) -> &ThrottlePolicy {
        match key {
            Key::Pair(..) => &self.pair,
            Key::Account(_) => &self.account,
        }
    }

    /// Seconds to wait before a sign-in attempt for `account` from `ip` is even checked.
    pub(crate) fn retry_after(&self, account: &str, ip: IpAddr, now: UnixTime) -> Option<i64> {
        let by_account = self.records.lock().ok().and_then(|records| {
            Self::keys(account, ip)
                .iter()
                .filter_map(|k| {
                    records
                        .get(k)
                        .and_then(|r| self.policy(k).retry_after(r, now))
                })
                .max()
        });
        let by_address = self.addresses.lock().ok().and_then(|addresses| {
            let w = addresses.get(&source_of(ip))?;
            let end = w.start.saturating_add(self.address_window);
            (now.0 < end && w.failures >= self.address_max).then(|| end - now.0)
        });
        by_account.max(by_address)
    }

    /// Records the outcome of a checked attempt.
    pub(crate) fn record(&self, account: &str, ip: IpAddr, success: bool, now: UnixTime) {
        if let Ok(mut records) = self.records.lock() {
            for k in Self::keys(account, ip) {
                if success {
                    records.remove(&k);
                    continue;
                }
                let previous = records.remove(&k).unwrap_or_default();
                let next = self.policy(&k).after_failure(&previous, now);
                records.insert(k, next);
            }
        }
        if success {
            return;
        }
        if let Ok(mut addresses) = self.addresses.lock() {
            let source = source_of(ip);
            let w = match addresses.remove(&source) {
                Some(w) if now.0 < w.start.saturating_add(self.address_window) => AddressWindow {
                    failures: w.failures.saturating_add(1),
                    ..w
                },
                _ => AddressWindow {
                    start: now.0,
                    failures: 1,
                },
            };
            addresses.insert(source, w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_pair_key_trips_before_the_account_key() {
        let t = LoginThrottle::new(ThrottlePolicy::default(), 100, 900);
        let now = UnixTime(1_000);
        for _ in 0..6 {
            t.record("Alice", ip("198.51.100.1"), false, now);
        }
        assert!(t.retry_after("alice", ip("198.51.100.1"), now).is_some());
        assert_eq!(t.retry_after("alice", ip("198.51.100.2"), now), None);
        assert_eq!(t.retry_after("bob", ip("198.51.100.1"), now), None);
        for n in 2..8 {
            t.record("alice", ip(&format!("198.51.100.{n}")), false, now);
        }
        assert!(
            t.retry_after("alice", ip("198.51.100.200"), now).is_some(),
            "the account key trips after twice the free attempts"
        );
    }

    #[test]
    fn the_address_ceiling_is_a_window_that_success_does_not_reset() {
        let t = LoginThrottle::new(ThrottlePolicy::default(), 10, 60);
        let nat = ip("2001:db8:1:2::7");
        for i in 0..10 {
            assert_eq!(t.retry_after(&format!("u{i}"), nat, UnixTime(0)), None);
            t.record(&format!("u{i}"), nat, false, UnixTime(0));
        }
        t.record("mine", nat, true, UnixTime(1));
        let other_host_same_64 = ip("2001:db8:1:2::8");
        assert_eq!(
            t.retry_after("new", other_host_same_64, UnixTime(1)),
            Some(59)
        );
        assert_eq!(t.retry_after("new", nat, UnixTime(60)), None, "window over");
    }
}
