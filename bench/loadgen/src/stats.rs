//! What one connection saw, merged into what the run saw.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use hdrhistogram::Histogram;

/// Latencies up to this are recorded exactly (3 significant digits); longer ones saturate.
const MAX_MICROS: u64 = 120_000_000;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status, body read to the end.
    Status(u16),
    /// The connection could not be (re)opened.
    Connect,
    /// The exchange failed midway (reset, closed, malformed).
    Io,
    /// No complete response within `--timeout`.
    Timeout,
}

impl Outcome {
    fn error_key(self) -> Option<String> {
        match self {
            Self::Status(s) if (200..300).contains(&s) => None,
            Self::Status(s) => Some(s.to_string()),
            Self::Connect => Some("connect".into()),
            Self::Io => Some("io".into()),
            Self::Timeout => Some("timeout".into()),
        }
    }
}

/// Counts and latency histograms.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latency of 2xx responses, µs. Errors are counted, not timed: a fast 401 would
    /// flatter the percentiles.
    pub latency: Histogram<u64>,
    /// Open loop: how late the generator's timer sent requests whose connection was idle.
    pub send_lag: Histogram<u64>,
    /// 2xx responses.
    pub ok: u64,
    /// Everything else, by status code or `connect`/`io`/`timeout`/`unsent`.
    pub errors: BTreeMap<String, u64>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).map_err(|e| anyhow!("histogram: {e}"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Stats {
    /// Empty.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency: histogram()?,
            send_lag: histogram()?,
            ok: 0,
            errors: BTreeMap::new(),
        })
    }

    /// Records one finished request.
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome.error_key() {
            None => {
                self.ok += 1;
                self.latency.saturating_record(micros(latency));
            }
            Some(key) => *self.errors.entry(key).or_default() += 1,
        }
    }

    /// Records requests that were due but never sent before the run gave up on them.
    pub fn unsent(&mut self, n: u64) {
        if n > 0 {
            *self.errors.entry("unsent".into()).or_default() += n;
        }
    }

    /// Records how late the timer fired for a request on an idle connection.
    pub fn lag(&mut self, lag: Duration) {
        self.send_lag.saturating_record(micros(lag));
    }

    /// All errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another connection's figures.
    pub fn merge(&mut self, other: &Self) -> anyhow::Result<()> {
        self.latency
            .add(&other.latency)
            .map_err(|e| anyhow!("histogram: {e:?}"))?;
        self.send_lag
            .add(&other.send_lag)
            .map_err(|e| anyhow!("histogram: {e:?}"))?;
        self.ok += other.ok;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        Ok(())
    }

    /// The latency at quantile `q` in µs (0 when nothing was recorded).
    pub fn latency_at(&self, q: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(q)
        }
    }
}

/// `1.23 ms` / `456 µs`.
pub fn fmt_micros(us: u64) -> String {
    if us >= 10_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_kind_and_not_timed() {
        let mut a = Stats::new().unwrap();
        a.record(Outcome::Status(200), Duration::from_micros(100));
        a.record(Outcome::Status(204), Duration::from_micros(300));
        a.record(Outcome::Status(401), Duration::from_micros(5));
        a.record(Outcome::Io, Duration::ZERO);
        let mut b = Stats::new().unwrap();
        b.record(Outcome::Status(401), Duration::from_micros(5));
        b.record(Outcome::Timeout, Duration::from_secs(10));
        b.unsent(3);
        b.unsent(0);
        a.merge(&b).unwrap();
        assert_eq!(a.ok, 2);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.error_count(), 7);
        assert_eq!(a.errors["401"], 2);
        assert_eq!(a.errors["io"], 1);
        assert_eq!(a.errors["timeout"], 1);
        assert_eq!(a.errors["unsent"], 3);
        assert!(!a.errors.contains_key("connect"));
        assert_eq!(a.latency_at(0.5), 100);
        assert!(a.latency_at(1.0) >= 300);
    }

    #[test]
    fn formats_durations() {
        assert_eq!(fmt_micros(87), "87 µs");
        assert_eq!(fmt_micros(1234), "1.23 ms");
        assert_eq!(fmt_micros(45_600), "45.6 ms");
        assert_eq!(fmt_micros(2_084_900), "2.08 s");
        assert_eq!(fmt_micros(12_000_000), "12.0 s");
    }
}
