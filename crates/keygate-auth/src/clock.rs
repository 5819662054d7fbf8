//! Time as whole seconds since the Unix epoch, and the one injectable clock every part of
//! keygate reads (tokens, the proxy's throttles, the monitor, secret rotation).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since 1970-01-01T00:00:00Z, as JWT `NumericDate` (RFC 7519 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// Adds `secs` seconds, saturating.
    #[must_use]
    pub fn plus(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// Subtracts `secs` seconds, saturating.
    #[must_use]
    pub fn minus(self, secs: i64) -> Self {
        Self(self.0.saturating_sub(secs))
    }
}

/// A source of the current time; tests inject a [`FixedClock`] (whole seconds) or a
/// [`ManualClock`] (milliseconds).
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// The current time in whole seconds.
    fn now(&self) -> UnixTime {
        UnixTime(self.now_ms().div_euclid(1000))
    }
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that stands still until told otherwise, set in whole seconds.
#[derive(Debug, Default)]
pub struct FixedClock(ManualClock);

impl FixedClock {
    /// A clock showing `at`.
    pub fn new(at: UnixTime) -> Self {
        Self(ManualClock::new(at.0.saturating_mul(1000)))
    }

    /// Sets the time.
    pub fn set(&self, at: UnixTime) {
        self.0.set(at.0.saturating_mul(1000));
    }

    /// Moves the time forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.advance_ms(secs.saturating_mul(1000));
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}

/// A clock that moves only when told to, in milliseconds: tests and the monitor's replay
/// drive hours of traffic through it in moments.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `ms` (Unix milliseconds).
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    /// Sets the reading to `ms`.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the reading forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.advance_ms(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }

    /// Moves the reading forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clocks_move_only_when_told() {
        let clock = ManualClock::new(1_500);
        assert_eq!((clock.now_ms(), clock.now()), (1_500, UnixTime(1)));
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_500);
        clock.set(-1);
        assert_eq!(
            clock.now(),
            UnixTime(-1),
            "seconds round down, before 1970 too"
        );

        let fixed = FixedClock::new(UnixTime(10));
        fixed.advance(5);
        assert_eq!((fixed.now(), fixed.now_ms()), (UnixTime(15), 15_000));
        fixed.set(UnixTime(3));
        assert_eq!(fixed.now(), UnixTime(3));
    }

    #[test]
    fn the_system_clock_agrees_with_itself() {
        let clock = SystemClock;
        let (ms, s) = (clock.now_ms(), clock.now());
        assert!(ms > 1_600_000_000_000);
        assert!((s.0 - ms / 1000).abs() <= 1);
    }
}
