//! Time as whole seconds since the Unix epoch, and an injectable clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// A source of the current time; tests inject a [`FixedClock`].
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> UnixTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        UnixTime(secs)
    }
}

/// A clock that stands still until told otherwise.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock showing `at`.
    pub fn new(at: UnixTime) -> Self {
        Self(AtomicI64::new(at.0))
    }

    /// Sets the time.
    pub fn set(&self, at: UnixTime) {
        self.0.store(at.0, Ordering::SeqCst);
    }

    /// Moves the time forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}
