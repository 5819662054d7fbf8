//! Usage events for the server's batched per-minute aggregation, and Prometheus counters.
//!
//! Metric labels are the route name, the status class and the fault: bounded sets of
//! configuration-chosen values. User ids, client ids, IP addresses and keys never become
//! label values (S22); they travel only in [`UsageEvent`]s, which the server aggregates
//! into the store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::net::IpAddr;

use keygate_auth::ids::{ClientId, IdMap, SessionId, UserId};
use keygate_auth::jwk::Jkt;
use tokio::sync::mpsc;

use crate::error::{Fault, ProxyError};
use crate::path::RouteName;

/// The first digit of a status code, with 429 apart: a rate limit (keygate's or the
/// upstream's) is what an operator watches for, and is not a client's mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirect,
    /// 4xx but 429.
    ClientError,
    /// 429 Too Many Requests.
    RateLimited,
    /// 5xx (and anything out of range).
    ServerError,
}

impl StatusClass {
    /// From a status code.
    pub fn of(status: http::StatusCode) -> Self {
        match status.as_u16() {
            100..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirect,
            429 => Self::RateLimited,
            400..=499 => Self::ClientError,
            _ => Self::ServerError,
        }
    }

    /// `2xx` etc., and `429`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "1xx",
            Self::Success => "2xx",
            Self::Redirect => "3xx",
            Self::ClientError => "4xx",
            Self::RateLimited => "429",
            Self::ServerError => "5xx",
        }
    }
}

/// One finished proxied call: what the usage aggregation and the monitor see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageEvent {
    /// The token's user.
    pub user: UserId,
    /// The token's client.
    pub client: ClientId,
    /// The token's session (refresh family).
    pub session: SessionId,
    /// The DPoP key's thumbprint, for a DPoP-bound token.
    pub jkt: Option<Jkt>,
    /// The address the call came from.
    pub client_ip: IpAddr,
    /// What the call cost, in the route's cost units: read from the response when the
    /// route meters cost (see [`crate::meter`]), else the route's `per_call` (default 1);
    /// 0 when no upstream response came (keygate or the connection failed first).
    pub cost: u64,
    /// The route.
    pub route: RouteName,
    /// The status class answered to the app.
    pub status_class: StatusClass,
    /// From the start of forwarding to the end of the response body.
    pub latency: Duration,
    /// Who failed, when something did (including a body cut short mid-stream).
    pub fault: Option<Fault>,
    /// The app attestation tier the call counted as ([`crate::route::effective_tier`]).
    pub tier: keygate_auth::access::TrustTier,
}

/// Receives usage events. `record` is called on the response path, so it must not block.
pub trait UsageSink: Send + Sync {
    /// Takes one event.
    fn record(&self, event: UsageEvent);

    /// Looks at an event that another sink will own. The default clones it; a sink that
    /// only counts should read it in place, so a [`TeeUsageSink`] adds no copy per call.
    fn record_ref(&self, event: &UsageEvent) {
        self.record(event.clone());
    }
}

/// Hands every event to each of several sinks (the monitor, cost budgets, usage sums):
/// each but the last through [`UsageSink::record_ref`], the last takes it.
pub struct TeeUsageSink(pub Vec<std::sync::Arc<dyn UsageSink>>);

impl std::fmt::Debug for TeeUsageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeUsageSink")
            .field("sinks", &self.0.len())
            .finish()
    }
}

impl UsageSink for TeeUsageSink {
    fn record(&self, event: UsageEvent) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.record_ref(&event);
            }
            last.record(event);
        }
    }
}

/// Discards events.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoUsage;

impl UsageSink for NoUsage {
    fn record(&self, _event: UsageEvent) {}
}

/// What [`SummingUsageSink`] sums events under: one row per minute, user, route and
/// status class.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UsageKey {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    pub user: UserId,
    pub route: RouteName,
    pub status_class: StatusClass,
}

/// The sums of one [`UsageKey`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageSums {
    pub calls: i64,
    pub latency_ms_sum: i64,
    pub latency_ms_max: i64,
}

/// Sums events in memory until its owner drains them with [`SummingUsageSink::take`].
///
/// Recording is one short lock and an addition: no task is woken and no event is queued,
/// so the response path does the same small work however busy the proxy is. The number
/// of distinct keys between two drains is bounded; beyond it events are counted as
/// dropped rather than grow memory.
#[derive(Debug)]
pub struct SummingUsageSink {
    sums: Mutex<IdMap<UsageKey, UsageSums>>,
    max_keys: usize,
    dropped: AtomicU64,
}

impl SummingUsageSink {
    /// A sink holding at most `max_keys` distinct keys between drains.
    pub fn new(max_keys: usize) -> Self {
        Self {
            sums: Mutex::default(),
            max_keys: max_keys.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Everything summed since the last call.
    pub fn take(&self) -> IdMap<UsageKey, UsageSums> {
        self.sums
            .lock()
            .map(|mut sums| std::mem::take(&mut *sums))
            .unwrap_or_default()
    }

    /// Events dropped because the key limit was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn add(&self, key: UsageKey, latency: Duration) {
        let ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
        let Ok(mut sums) = self.sums.lock() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let len = sums.len();
        let slot = match sums.get_mut(&key) {
            Some(slot) => slot,
            None if len < self.max_keys => sums.entry(key).or_default(),
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        slot.calls += 1;
        slot.latency_ms_sum = slot.latency_ms_sum.saturating_add(ms);
        slot.latency_ms_max = slot.latency_ms_max.max(ms);
    }
}

impl UsageSink for SummingUsageSink {
    fn record(&self, event: UsageEvent) {
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs() / 60).unwrap_or(i64::MAX));
        self.add(
            UsageKey {
                minute,
                user: event.user,
                route: event.route,
                status_class: event.status_class,
            },
            event.latency,
        );
    }
}

/// Sends events into a bounded channel, for a consumer that wants every event (the
/// tests); when it lags, events are dropped and counted rather than slowing the proxy
/// down. The server sums with [`SummingUsageSink`] instead, which wakes no task.
#[derive(Debug)]
pub struct ChannelUsageSink {
    tx: mpsc::Sender<UsageEvent>,
    dropped: AtomicU64,
}

impl ChannelUsageSink {
    /// A sink and the receiver the aggregator reads.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<UsageEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Events dropped because the channel was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl UsageSink for ChannelUsageSink {
    fn record(&self, event: UsageEvent) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Series {
    count: u64,
    sum_secs: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Prometheus counters for the proxy.
#[derive(Default)]
pub struct ProxyMetrics {
    /// route → status class → series: looked up by `&str`, so a counted call allocates
    /// nothing once its route has been seen.
    responses: Mutex<BTreeMap<String, BTreeMap<&'static str, Series>>>,
    refusals: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    cost_unreadable: Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyMetrics")
    }
}

impl ProxyMetrics {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a forwarded call's response.
    pub fn observe(&self, route: &RouteName, class: StatusClass, latency: Duration) {
        let Ok(mut map) = self.responses.lock() else {
            return;
        };
        let classes = match map.get_mut(route.as_str()) {
            Some(classes) => classes,
            None => map.entry(route.as_str().to_owned()).or_default(),
        };
        let series = classes.entry(class.as_str()).or_default();
        let secs = latency.as_secs_f64();
        series.count += 1;
        series.sum_secs += secs;
        for (bound, slot) in BUCKETS.iter().zip(series.buckets.iter_mut()) {
            if secs <= *bound {
                *slot += 1;
            }
        }
    }

    /// Counts a call refused or failed before (or instead of) an upstream response.
    /// `route` is `None` when the route was unknown: the name the app sent is not a label.
    pub fn refused(&self, route: Option<&RouteName>, error: &ProxyError) {
        let Ok(mut map) = self.refusals.lock() else {
            return;
        };
        let route = route.map_or("unknown", RouteName::as_str).to_owned();
        *map.entry((route, error.code(), error.fault().as_str()))
            .or_default() += 1;
    }

    /// Counts a metered call whose cost could not be read (it was counted at the route's
    /// `per_call`).
    pub fn cost_unreadable(&self, route: &RouteName) {
        let Ok(mut map) = self.cost_unreadable.lock() else {
            return;
        };
        match map.get_mut(route.as_str()) {
            Some(n) => *n += 1,
            None => {
                map.insert(route.as_str().to_owned(), 1);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP keygate_proxy_requests_total Proxied calls answered by an upstream.\n",
        );
        out.push_str("# TYPE keygate_proxy_requests_total counter\n");
        let mut hist = String::new();
        hist.push_str("# HELP keygate_proxy_duration_seconds Time from forwarding to the end of the response body.\n");
        hist.push_str("# TYPE keygate_proxy_duration_seconds histogram\n");
        if let Ok(map) = self.responses.lock() {
            for (route, class, s) in map
                .iter()
                .flat_map(|(route, classes)| classes.iter().map(move |(c, s)| (route, c, s)))
            {
                let _ = writeln!(
                    out,
                    "keygate_proxy_requests_total{{route=\"{route}\",status=\"{class}\"}} {}",
                    s.count
                );
                for (bound, n) in BUCKETS.iter().zip(s.buckets.iter()) {
                    let _ = writeln!(
                        hist,
                        "keygate_proxy_duration_seconds_bucket{{route=\"{route}\",status=\"{class}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    hist,
                    "keygate_proxy_duration_seconds_bucket{{route=\"{route}\",status=\"{class}\",le=\"+Inf\"}} {}",
                    s.count
                );
                let _ = writeln!(
                    hist,
                    "keygate_proxy_duration_seconds_sum{{route=\"{route}\",status=\"{class}\"}} {}",
                    s.sum_secs
                );
                let _ = writeln!(
                    hist,
                    "keygate_proxy_duration_seconds_count{{route=\"{route}\",status=\"{class}\"}} {}",
                    s.count
                );
            }
        }
        out.push_str(&hist);
        out.push_str("# HELP keygate_proxy_refused_total Proxied calls refused or failed, by reason and fault.\n");
        out.push_str("# TYPE keygate_proxy_refused_total counter\n");
        if let Ok(map) = self.refusals.lock() {
            for ((route, code, fault), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "keygate_proxy_refused_total{{route=\"{route}\",reason=\"{code}\",fault=\"{fault}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP keygate_proxy_cost_unreadable_total Metered calls whose cost could not be read from the response; each counted at the route's per_call.\n");
        out.push_str("# TYPE keygate_proxy_cost_unreadable_total counter\n");
        if let Ok(map) = self.cost_unreadable.lock() {
            for (route, n) in map.iter() {
                let _ = writeln!(
                    out,
                    "keygate_proxy_cost_unreadable_total{{route=\"{route}\"}} {n}"
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_have_no_user_labels() {
        let m = ProxyMetrics::new();
        let r = RouteName::parse("openai").unwrap();
        m.observe(&r, StatusClass::Success, Duration::from_millis(20));
        m.refused(Some(&r), &ProxyError::NotAllowed);
        m.refused(None, &ProxyError::UnknownRoute);
        m.cost_unreadable(&r);
        m.cost_unreadable(&r);
        let text = m.render();
        assert!(text.contains("keygate_proxy_cost_unreadable_total{route=\"openai\"} 2"));
        assert!(text.contains("keygate_proxy_requests_total{route=\"openai\",status=\"2xx\"} 1"));
        assert!(text.contains("reason=\"not_allowed\",fault=\"client\"} 1"));
        assert!(text.contains("route=\"unknown\""));
        assert!(text.contains("le=\"0.025\"} 1"));
    }

    #[test]
    fn summing_sink_sums_per_key_and_bounds_its_keys() {
        let sink = SummingUsageSink::new(2);
        let event = |user: &str, ms: u64| UsageEvent {
            user: UserId::parse(user).unwrap(),
            client: ClientId::parse("c").unwrap(),
            session: SessionId::parse("s").unwrap(),
            jkt: None,
            client_ip: IpAddr::from([192, 0, 2, 1]),
            cost: 1,
            route: RouteName::parse("r").unwrap(),
            status_class: StatusClass::Success,
            latency: Duration::from_millis(ms),
            fault: None,
            tier: keygate_auth::access::TrustTier::Unattested,
        };
        sink.record(event("u1", 10));
        sink.record(event("u1", 30));
        sink.record(event("u2", 5));
        sink.record(event("u3", 5));
        assert_eq!(sink.dropped(), 1, "a third key is over the bound");
        let sums = sink.take();
        assert_eq!(sums.len(), 2);
        let u1 = sums
            .iter()
            .find(|(k, _)| k.user.as_str() == "u1")
            .map(|(_, v)| *v)
            .unwrap();
        assert_eq!(
            u1,
            UsageSums {
                calls: 2,
                latency_ms_sum: 40,
                latency_ms_max: 30
            }
        );
        assert!(sink.take().is_empty(), "take drains");
        sink.record(event("u3", 5));
        assert_eq!(sink.take().len(), 1, "room again after a drain");
    }

    #[tokio::test]
    async fn channel_sink_drops_when_full() {
        let (sink, mut rx) = ChannelUsageSink::new(1);
        let e = UsageEvent {
            user: UserId::parse("u").unwrap(),
            client: ClientId::parse("c").unwrap(),
            session: SessionId::parse("s").unwrap(),
            jkt: None,
            client_ip: IpAddr::from([192, 0, 2, 1]),
            cost: 1,
            route: RouteName::parse("r").unwrap(),
            status_class: StatusClass::Success,
            latency: Duration::from_millis(1),
            fault: None,
            tier: keygate_auth::access::TrustTier::Unattested,
        };
        sink.record(e.clone());
        sink.record(e.clone());
        assert_eq!(sink.dropped(), 1);
        assert_eq!(rx.recv().await, Some(e));
    }
}
