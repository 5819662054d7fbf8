//! The open-loop send schedule and how a request's latency is measured against it.
//!
//! Requests are due at `n / rate` seconds after the start, for n = 0, 1, 2, …, and request
//! n goes to connection `n mod connections`. So one connection's requests are due every
//! `connections / rate` seconds, and the connections are staggered evenly inside that
//! period. An HTTP/1 connection carries one request at a time: when the server is slow,
//! a connection's due requests queue up behind it, and their latency is counted from the
//! time they were *due*, not from when they could finally be sent (the waiting the server
//! caused is part of what a client sees: no coordinated omission).

use std::time::Duration;

/// When each connection's requests are due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    rate: f64,
    connections: u64,
}

impl Schedule {
    /// `rate` requests per second over `connections` connections.
    pub fn new(rate: f64, connections: usize) -> Option<Self> {
        if !(rate.is_finite() && rate > 0.0) || connections == 0 {
            return None;
        }
        Some(Self {
            rate,
            connections: u64::try_from(connections).ok()?,
        })
    }

    /// How long after the start connection `conn`'s `k`-th request (from 0) is due.
    pub fn due(&self, conn: usize, k: u64) -> Duration {
        let n = k
            .saturating_mul(self.connections)
            .saturating_add(conn as u64);
        Duration::from_secs_f64(n as f64 / self.rate)
    }

    /// How many of connection `conn`'s requests are due before `horizon`.
    pub fn due_before(&self, conn: usize, horizon: Duration) -> u64 {
        // n/rate < horizon  ⇔  n < horizon·rate; n = k·C + conn.
        let limit = horizon.as_secs_f64() * self.rate;
        let first = conn as f64;
        if first >= limit {
            return 0;
        }
        let k = ((limit - first) / self.connections as f64).ceil() as u64;
        // Guard against rounding at the edge: step back while the last one is not due.
        let mut k = k;
        while k > 0 && self.due(conn, k - 1) >= horizon {
            k -= 1;
        }
        k
    }
}

/// Where a request's latency is measured from in the open loop.
///
/// If the connection was still busy with an earlier request when this one fell due, the
/// wait is the server's doing and counts: latency runs from the due time. If the
/// connection was idle, any gap between the due time and the actual send is the
/// generator's timer (tokio's timer has millisecond granularity) and is not charged to
/// the server: latency runs from the actual send. The gap is reported separately as the
/// generator's scheduling lag.
pub fn latency_origin(due: Duration, previous_done: Duration, sent: Duration) -> Duration {
    if previous_done > due {
        due
    } else {
        sent.max(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nonsense() {
        assert!(Schedule::new(0.0, 4).is_none());
        assert!(Schedule::new(-1.0, 4).is_none());
        assert!(Schedule::new(f64::NAN, 4).is_none());
        assert!(Schedule::new(100.0, 0).is_none());
    }

    #[test]
    fn all_connections_together_send_evenly_at_the_rate() {
        let s = Schedule::new(1000.0, 4).unwrap();
        let mut all: Vec<Duration> = (0..4)
            .flat_map(|c| (0..250).map(move |k| (c, k)))
            .map(|(c, k)| s.due(c, k))
            .collect();
        all.sort();
        assert_eq!(all.len(), 1000);
        // Request n is due at n ms: one a millisecond, none twice, none skipped.
        for (n, t) in all.iter().enumerate() {
            let expected = Duration::from_millis(n as u64);
            let diff = t.abs_diff(expected);
            assert!(diff < Duration::from_nanos(10), "{n}: {t:?}");
        }
    }

    #[test]
    fn one_connection_sends_every_connections_over_rate() {
        let s = Schedule::new(500.0, 10).unwrap();
        // 10 connections at 500/s: each connection every 20 ms, connection 3 at +6 ms.
        assert_eq!(s.due(3, 0), Duration::from_millis(6));
        let step = s.due(3, 1) - s.due(3, 0);
        assert!(step.abs_diff(Duration::from_millis(20)) < Duration::from_nanos(10));
        assert!(s.due(3, 100).abs_diff(Duration::from_millis(2006)) < Duration::from_nanos(10));
    }

    #[test]
    fn due_before_counts_exactly_the_requests_inside_the_horizon() {
        for (rate, conns) in [(1000.0, 4), (333.0, 7), (12_345.6, 32), (3.0, 5)] {
            let s = Schedule::new(rate, conns).unwrap();
            for horizon_ms in [0u64, 1, 10, 999, 1000, 2500] {
                let horizon = Duration::from_millis(horizon_ms);
                let mut total = 0;
                for c in 0..conns {
                    let n = s.due_before(c, horizon);
                    // Brute force: the first n are before the horizon, the next is not.
                    if n > 0 {
                        assert!(s.due(c, n - 1) < horizon);
                    }
                    assert!(s.due(c, n) >= horizon, "rate {rate} conns {conns} c {c}");
                    total += n;
                }
                // Together: ceil(horizon · rate) requests (n/rate < horizon).
                let expected = (horizon.as_secs_f64() * rate).ceil() as u64;
                assert!(
                    total.abs_diff(expected) <= 1,
                    "{rate}/{conns}/{horizon_ms}: {total} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn latency_counts_server_caused_waiting_but_not_timer_lateness() {
        let ms = Duration::from_millis;
        // Idle connection, timer fired 0.8 ms late: measured from the actual send.
        assert_eq!(
            latency_origin(ms(10), ms(5), ms(10) + Duration::from_micros(800)),
            ms(10) + Duration::from_micros(800)
        );
        // Idle connection, sent on time.
        assert_eq!(latency_origin(ms(10), ms(5), ms(10)), ms(10));
        // Busy connection: the previous answer came at 25 ms for a request due at 10 ms;
        // the 15 ms of queueing counts.
        assert_eq!(latency_origin(ms(10), ms(25), ms(25)), ms(10));
    }
}
