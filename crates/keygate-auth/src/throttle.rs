//! Login throttling without easy lock-out (S18).
//!
//! Failures are counted per key — the submitted account name (whether or not it exists,
//! so the answer reveals nothing) and, separately, the client or network. After a few
//! free attempts each further failure doubles the wait, up to a cap; a success or a quiet
//! window resets the count. An attacker can slow an account down but never lock it: the
//! owner waits at most [`ThrottlePolicy::max_delay_secs`].

use crate::clock::UnixTime;

/// Throttling rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed before any delay.
    pub free_attempts: u32,
    /// Delay after the first throttled failure; doubles with each further one.
    pub base_delay_secs: i64,
    /// The longest delay.
    pub max_delay_secs: i64,
    /// A key with no failure for this long starts over.
    pub reset_after_secs: i64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            free_attempts: 5,
            base_delay_secs: 1,
            max_delay_secs: 15 * 60,
            reset_after_secs: 24 * 3600,
        }
    }
}

/// What the store keeps per throttling key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureRecord {
    /// Consecutive failures.
    pub failures: u32,
    /// The last failure.
    pub last_failure_at: Option<UnixTime>,
}

impl ThrottlePolicy {
    fn live_failures(&self, record: &FailureRecord, now: UnixTime) -> u32 {
        match record.last_failure_at {
            Some(at) if now < at.plus(self.reset_after_secs) => record.failures,
            _ => 0,
        }
    }

    fn delay_for(&self, failures: u32) -> i64 {
        let over = failures.saturating_sub(self.free_attempts);
        if over == 0 {
            return 0;
        }
        let doublings = (over - 1).min(40);
        self.base_delay_secs
            .max(1)
            .saturating_mul(1i64 << doublings)
            .min(self.max_delay_secs)
    }

    /// Seconds to wait before the next attempt is even checked, or `None` to go ahead.
    /// Answer the same way for existing and unknown accounts (e.g. 429 with
    /// `Retry-After`).
    pub fn retry_after(&self, record: &FailureRecord, now: UnixTime) -> Option<i64> {
        let failures = self.live_failures(record, now);
        let delay = self.delay_for(failures);
        let at = record.last_failure_at?.plus(delay);
        (delay > 0 && now < at).then(|| at.0.saturating_sub(now.0))
    }

    /// The record after a failed attempt.
    pub fn after_failure(&self, record: &FailureRecord, now: UnixTime) -> FailureRecord {
        FailureRecord {
            failures: self.live_failures(record, now).saturating_add(1),
            last_failure_at: Some(now),
        }
    }

    /// The record after a successful sign-in.
    pub fn after_success(&self) -> FailureRecord {
        FailureRecord::default()
    }
}
