//! Rate limits (GCRA) and quotas (UTC day/month windows), behind traits so that Redis and
//! the store can back them on scale-out, and the [`RatePermit`] proof value the forwarder
//! requires.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT): a request at `now`
//! is allowed when `TAT - now <= tolerance`, and moves TAT forward by the emission
//! interval `period / count`. With `tolerance = (burst - 1) × interval`, `burst` requests
//! may arrive back to back. A key whose TAT is in the past is indistinguishable from an
//! unknown key, which is what makes eviction safe.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use http::header::HeaderName;

use keygate_auth::ids::UserId;

use crate::budget::Budgets;
use crate::error::{ProxyError, retry_after_secs};
use crate::path::RouteName;
use crate::route::{AuthorizedCall, LimitPer, QuotaPeriod, QuotaSpec, RateSpec};

/// A counter key: route, dimension and subject. It holds a user id or an IP address, so it
/// is for limiter stores only, never for metric labels or logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LimitKey(String);

impl LimitKey {
    /// The key of `call` under its route's `per` setting.
    pub fn for_call(call: &AuthorizedCall, client_ip: IpAddr) -> Self {
        use std::fmt::Write as _;
        let route = call.route();
        let name = route.name().as_str();
        let per = route.limits().per;
        let subject_len = match per {
            LimitPer::User => call.user().as_str().len(),
            LimitPer::Client => call.client().as_str().len(),
            // The longest IPv6 text.
            LimitPer::Ip => 39,
        };
        // Written straight into one string of the right size (every call builds its key,
        // and a limiter keeps each new one). The unit separator cannot appear in route
        // names or parsed ids (visible ASCII).
        let mut key = String::with_capacity(name.len() + 4 + subject_len);
        key.push_str(name);
        key.push('\u{1f}');
        match per {
            LimitPer::User => {
                key.push_str("u\u{1f}");
                key.push_str(call.user().as_str());
            }
            LimitPer::Client => {
                key.push_str("c\u{1f}");
                key.push_str(call.client().as_str());
            }
            LimitPer::Ip => {
                key.push_str("i\u{1f}");
                // Writing to a String cannot fail.
                let _ = write!(key, "{client_ip}");
            }
        }
        Self(key)
    }

    /// Builds a key from raw text (tests, stores that round-trip keys).
    pub fn from_raw(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The key text, for a limiter store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for LimitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys carry user ids; keep them out of debug output.
        f.write_str("LimitKey(…)")
    }
}

/// A rate in GCRA terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatePolicy {
    /// `period / count`.
    pub emission: Duration,
    /// `(burst - 1) × emission`.
    pub tolerance: Duration,
    /// Requests that may arrive at once.
    pub burst: u32,
    /// The configured window, for `RateLimit-Policy`.
    pub window: Duration,
}

impl RatePolicy {
    /// From a route's rate.
    pub fn from_spec(spec: &RateSpec) -> Self {
        let count = spec.count.max(1);
        let burst = spec.burst.max(1);
        let emission = spec.period / count;
        Self {
            emission,
            tolerance: emission.saturating_mul(burst - 1),
            burst,
            window: spec.period,
        }
    }

    /// A stricter copy for when the shared limiter is down (S35): each replica gets a
    /// `1/divisor` share of the rate and burst, never "unlimited".
    pub fn degraded(&self, divisor: u32) -> Self {
        let divisor = divisor.max(1);
        let burst = (self.burst / divisor).max(1);
        let emission = self.emission.saturating_mul(divisor);
        Self {
            emission,
            tolerance: emission.saturating_mul(burst - 1),
            burst,
            window: self.window,
        }
    }
}

/// A limiter's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// Allowed; `remaining` more may follow at once; full recovery after `reset`.
    Allowed {
        /// Requests still allowed right now.
        remaining: u32,
        /// Until the bucket is full again.
        reset: Duration,
    },
    /// Refused; retry after `retry_after`.
    Limited {
        /// Earliest time a retry can succeed.
        retry_after: Duration,
    },
}

/// The shared limiter could not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limiter unavailable")]
pub struct LimiterUnavailable;

/// A rate limiter: one atomic GCRA step per call. The one implementation is
/// [`InMemoryRateLimiter`]; a limiter shared by replicas (planned for scale-out, e.g. on
/// Redis: a Lua script doing the same step atomically with the TAT as value and `reset`
/// as TTL) would implement this trait.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request against `key` under `policy`.
    async fn acquire(
        &self,
        key: &LimitKey,
        policy: &RatePolicy,
    ) -> Result<RateDecision, LimiterUnavailable>;
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One GCRA step on a stored TAT (nanoseconds on the limiter's clock).
pub fn gcra_step(
    stored_tat: Option<u64>,
    now: u64,
    policy: &RatePolicy,
) -> (RateDecision, Option<u64>) {
    let emission = nanos(policy.emission).max(1);
    let tolerance = nanos(policy.tolerance);
    let tat = stored_tat.unwrap_or(now).max(now);
    let ahead = tat - now;
    if ahead > tolerance {
        let retry_after = Duration::from_nanos(ahead - tolerance);
        return (RateDecision::Limited { retry_after }, None);
    }
    let new_tat = tat.saturating_add(emission);
    let new_ahead = new_tat - now;
    let remaining = if new_ahead > tolerance.saturating_add(emission) {
        0
    } else {
        (tolerance.saturating_add(emission) - new_ahead) / emission
    };
    let decision = RateDecision::Allowed {
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset: Duration::from_nanos(new_ahead),
    };
    (decision, Some(new_tat))
}

struct GcraState {
    tats: HashMap<LimitKey, u64>,
    /// Map size at which the next sweep happens; doubles with the live set so sweeping
    /// stays amortised O(1) per request.
    sweep_at: usize,
    /// When the last sweep ran (limiter clock, ns): idle keys are also swept by age, so
    /// memory shrinks after a burst of distinct keys even if the map stops growing.
    last_sweep: u64,
}

/// Sweep at least this often (limiter clock) when new keys arrive.
const SWEEP_INTERVAL: u64 = 10_000_000_000;

/// In-process GCRA with bounded memory: keys whose TAT has passed are swept out, and at
/// most `max_keys` are held (new keys beyond that are refused, conservatively, until a
/// sweep frees room).
pub struct InMemoryRateLimiter {
    state: Mutex<GcraState>,
    max_keys: usize,
    origin: Instant,
}

const MIN_SWEEP: usize = 1024;

impl InMemoryRateLimiter {
    /// A limiter holding at most `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self {
            state: Mutex::new(GcraState {
                tats: HashMap::new(),
                sweep_at: MIN_SWEEP.min(max_keys.max(1)),
                last_sweep: 0,
            }),
            max_keys: max_keys.max(1),
            origin: Instant::now(),
        }
    }

    /// The GCRA step at `now` (time since an arbitrary origin), for tests and for the
    /// trait implementation.
    pub fn acquire_at(&self, key: &LimitKey, policy: &RatePolicy, now: Duration) -> RateDecision {
        let now = nanos(now);
        let Ok(mut state) = self.state.lock() else {
            // A poisoned lock means a panic elsewhere; refuse rather than allow.
            return RateDecision::Limited {
                retry_after: policy.emission,
            };
        };
        let stored = state.tats.get(key).copied();
        let due = now.saturating_sub(state.last_sweep) >= SWEEP_INTERVAL;
        if stored.is_none() && (state.tats.len() >= state.sweep_at || due) {
            state.tats.retain(|_, tat| *tat > now);
            state.last_sweep = now;
            let live = state.tats.len();
            state.sweep_at = live.saturating_mul(2).max(MIN_SWEEP).min(self.max_keys);
            if live >= self.max_keys {
                return RateDecision::Limited {
                    retry_after: policy.emission,
                };
            }
        }
        let (decision, new_tat) = gcra_step(stored, now, policy);
        match (new_tat, state.tats.get_mut(key)) {
            (Some(tat), Some(slot)) => *slot = tat,
            // A new key is copied once, not on every call.
            (Some(tat), None) => {
                state.tats.insert(key.clone(), tat);
            }
            (None, _) => {}
        }
        decision
    }

    /// The GCRA step now, on the limiter's monotonic clock.
    pub fn acquire_now(&self, key: &LimitKey, policy: &RatePolicy) -> RateDecision {
        self.acquire_at(key, policy, self.origin.elapsed())
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.tats.len()).unwrap_or(0)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl RateLimiter for InMemoryRateLimiter {
    async fn acquire(
        &self,
        key: &LimitKey,
        policy: &RatePolicy,
    ) -> Result<RateDecision, LimiterUnavailable> {
        let now = self.origin.elapsed();
        Ok(self.acquire_at(key, policy, now))
    }
}

// ---------------------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------------------

/// A quota window `[start, end)` in Unix seconds (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuotaWindow {
    /// First second of the window.
    pub start: u64,
    /// First second after it.
    pub end: u64,
}

/// The calendar month (UTC) containing `now`, or `None` past what `time` represents
/// (after 9999-11).
fn month_containing(now: u64) -> Option<QuotaWindow> {
    let date = time::OffsetDateTime::from_unix_timestamp(i64::try_from(now).ok()?)
        .ok()?
        .date();
    let first = date.replace_day(1).ok()?;
    let next = match first.month() {
        time::Month::December => {
            time::Date::from_calendar_date(first.year().checked_add(1)?, time::Month::January, 1)
        }
        month => time::Date::from_calendar_date(first.year(), month.next(), 1),
    }
    .ok()?;
    let secs = |d: time::Date| u64::try_from(d.midnight().assume_utc().unix_timestamp()).ok();
    Some(QuotaWindow {
        start: secs(first)?,
        end: secs(next)?,
    })
}

impl QuotaWindow {
    /// The window of `period` that contains `now` (Unix seconds, UTC).
    pub fn containing(period: QuotaPeriod, now: u64) -> Self {
        const DAY: u64 = 86_400;
        match period {
            QuotaPeriod::Day => {
                let start = now - now % DAY;
                Self {
                    start,
                    end: start + DAY,
                }
            }
            // Past 9999-11 (beyond what `time` represents) a month falls back to a day.
            QuotaPeriod::Month => {
                month_containing(now).unwrap_or_else(|| Self::containing(QuotaPeriod::Day, now))
            }
        }
    }
}

/// A quota store's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaDecision {
    /// Counted; `remaining` left in this window.
    Allowed {
        /// Requests left in the window.
        remaining: u64,
    },
    /// The window is used up (nothing was counted).
    Exhausted,
}

/// The quota store could not answer; callers fail closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("quota store unavailable")]
pub struct QuotaUnavailable;

/// Quota counters: one atomic "increment if below limit" per call, per (key, window).
/// The store-backed implementation does `UPDATE … SET used = used + 1 WHERE used < limit`
/// (or an upsert) in one statement, and may delete rows of ended windows.
#[async_trait::async_trait]
pub trait QuotaStore: Send + Sync {
    /// Counts one request against `key` in `window` unless `limit` is reached.
    async fn consume(
        &self,
        key: &LimitKey,
        window: QuotaWindow,
        limit: u64,
    ) -> Result<QuotaDecision, QuotaUnavailable>;
}

/// In-process quota counters; counters of ended windows are dropped as time moves on.
#[derive(Default)]
pub struct InMemoryQuotaStore {
    counts: Mutex<QuotaCounts>,
}

#[derive(Default)]
struct QuotaCounts {
    /// (key, window start) → (used, window end).
    used: HashMap<(LimitKey, u64), (u64, u64)>,
    /// The latest window start a sweep ran for: sweeping again is only useful once a
    /// later window begins, so the O(n) sweep runs about once per window, not per call.
    swept_at: u64,
}

impl InMemoryQuotaStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The atomic step, synchronously.
    pub fn consume_now(
        &self,
        key: &LimitKey,
        window: QuotaWindow,
        limit: u64,
    ) -> Result<QuotaDecision, QuotaUnavailable> {
        let mut counts = self.counts.lock().map_err(|_| QuotaUnavailable)?;
        if window.start > counts.swept_at {
            // Windows never reopen, so counters of ended ones can go.
            counts.used.retain(|_, (_, end)| *end > window.start);
            counts.swept_at = window.start;
        }
        let entry = counts
            .used
            .entry((key.clone(), window.start))
            .or_insert((0, window.end));
        if entry.0 >= limit {
            return Ok(QuotaDecision::Exhausted);
        }
        entry.0 += 1;
        Ok(QuotaDecision::Allowed {
            remaining: limit - entry.0,
        })
    }

    /// Counters held.
    pub fn len(&self) -> usize {
        self.counts.lock().map(|c| c.used.len()).unwrap_or(0)
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl QuotaStore for InMemoryQuotaStore {
    async fn consume(
        &self,
        key: &LimitKey,
        window: QuotaWindow,
        limit: u64,
    ) -> Result<QuotaDecision, QuotaUnavailable> {
        self.consume_now(key, window, limit)
    }
}

// ---------------------------------------------------------------------------------------
// The gate and its proof value
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct RateState {
    policy: RatePolicy,
    remaining: u32,
    reset: Duration,
}

#[derive(Clone, Copy, Debug)]
struct QuotaState {
    spec: QuotaSpec,
    remaining: u64,
    window: QuotaWindow,
    now: u64,
}

/// Proof that a call passed its route's rate limit and quota. Only
/// [`LimitGate::admit`] makes one, and the forwarder checks that it belongs to the call.
#[derive(Debug)]
pub struct RatePermit {
    route: RouteName,
    user: UserId,
    rate: Option<RateState>,
    quota: Option<QuotaState>,
}

impl RatePermit {
    pub(crate) fn matches(&self, call: &AuthorizedCall) -> bool {
        &self.route == call.route().name() && &self.user == call.user()
    }

    /// The IETF `RateLimit-Policy` and `RateLimit` header values
    /// (draft-ietf-httpapi-ratelimit-headers, structured-field form), for the response.
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        use std::fmt::Write as _;
        // Written on the stack and copied once into each value: this runs on every
        // admitted call.
        let mut policy = FieldText::default();
        let mut state = FieldText::default();
        // Four numbers of at most 20 digits each fit easily; were a value ever too long,
        // both headers would be left out rather than one cut short.
        let mut fits = true;
        if let Some(r) = &self.rate {
            fits &= write!(
                policy,
                "\"rate\";q={};w={}",
                r.policy.burst,
                r.policy.window.as_secs().max(1)
            )
            .is_ok();
            fits &= write!(
                state,
                "\"rate\";r={};t={}",
                r.remaining,
                retry_after_secs(r.reset)
            )
            .is_ok();
        }
        if let Some(q) = &self.quota {
            let sep = if policy.is_empty() { "" } else { ", " };
            fits &= write!(
                policy,
                "{sep}\"quota\";q={};w={}",
                q.spec.count,
                q.window.end - q.window.start
            )
            .is_ok();
            fits &= write!(
                state,
                "{sep}\"quota\";r={};t={}",
                q.remaining,
                q.window.end.saturating_sub(q.now).max(1)
            )
            .is_ok();
        }
        let value = |text: &FieldText| {
            (fits && !text.is_empty())
                .then(|| HeaderValue::from_bytes(text.as_bytes()).ok())
                .flatten()
        };
        [
            value(&policy).map(|v| (HeaderName::from_static("ratelimit-policy"), v)),
            value(&state).map(|v| (HeaderName::from_static("ratelimit"), v)),
        ]
        .into_iter()
        .flatten()
    }
}

/// A short header value written in place (the rate-limit headers).
struct FieldText {
    bytes: [u8; 160],
    len: usize,
}

impl Default for FieldText {
    fn default() -> Self {
        Self {
            bytes: [0; 160],
            len: 0,
        }
    }
}

impl FieldText {
    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Write for FieldText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Applies a call's route limits: rate first (cheap, refuses floods before they touch
/// the stores), then the user's cost budget (read only, so a refused call uses up no
/// quota), then quota.
pub struct LimitGate {
    rate: Arc<dyn RateLimiter>,
    /// Used when `rate` is unavailable, with a degraded policy (S35).
    fallback: InMemoryRateLimiter,
    fallback_divisor: u32,
    quota: Arc<dyn QuotaStore>,
    /// Cost budgets; a route with a budget is refused (fail closed) while this is unset.
    budgets: Option<Arc<Budgets>>,
}

impl LimitGate {
    /// A gate over the given limiter and quota store. `fallback_divisor` is how much
    /// stricter the local fallback is than the shared limit (e.g. the replica count).
    pub fn new(
        rate: Arc<dyn RateLimiter>,
        quota: Arc<dyn QuotaStore>,
        fallback_divisor: u32,
    ) -> Self {
        Self {
            rate,
            fallback: InMemoryRateLimiter::new(100_000),
            fallback_divisor,
            quota,
            budgets: None,
        }
    }

    /// Enforces routes' cost budgets with `budgets` (which must also receive the
    /// forwarder's usage events, or spending never grows).
    pub fn with_budgets(mut self, budgets: Arc<Budgets>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// An in-process gate (embedded deployment, tests).
    pub fn in_memory(max_keys: usize) -> Self {
        Self::new(
            Arc::new(InMemoryRateLimiter::new(max_keys)),
            Arc::new(InMemoryQuotaStore::new()),
            1,
        )
    }

    /// Checks and counts `call` now.
    pub async fn admit(
        &self,
        call: &AuthorizedCall,
        client_ip: IpAddr,
    ) -> Result<RatePermit, ProxyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.admit_at(call, client_ip, now).await
    }

    /// [`Self::admit`] with the wall clock given (Unix seconds), for quota windows.
    pub async fn admit_at(
        &self,
        call: &AuthorizedCall,
        client_ip: IpAddr,
        now_unix: u64,
    ) -> Result<RatePermit, ProxyError> {
        let limits = call.route().limits();
        let key = LimitKey::for_call(call, client_ip);
        let (rate_spec, tier_rate) = call.rate();
        let rate = match rate_spec {
            None => None,
            Some(spec) => {
                let policy = RatePolicy::from_spec(spec);
                // A tier's own rate counts in a bucket of its own.
                let tier_key;
                let rate_key = if tier_rate {
                    tier_key = LimitKey(format!("{}\u{1f}t\u{1f}{}", key.0, call.tier()));
                    &tier_key
                } else {
                    &key
                };
                let decision = match self.rate.acquire(rate_key, &policy).await {
                    Ok(d) => d,
                    Err(LimiterUnavailable) => {
                        tracing::warn!(route = %call.route().name(), "shared rate limiter unavailable; using the local fallback");
                        let degraded = policy.degraded(self.fallback_divisor);
                        self.fallback
                            .acquire(rate_key, &degraded)
                            .await
                            .map_err(|_| ProxyError::Unavailable("rate limiter"))?
                    }
                };
                match decision {
                    RateDecision::Limited { retry_after } => {
                        return Err(ProxyError::RateLimited { retry_after });
                    }
                    RateDecision::Allowed { remaining, reset } => Some(RateState {
                        policy,
                        remaining,
                        reset,
                    }),
                }
            }
        };
        if call.route().budget().is_some() {
            match &self.budgets {
                Some(budgets) => budgets.check_at(call, now_unix).await?,
                None => return Err(ProxyError::Unavailable("cost budgets")),
            }
        }
        let quota = match &limits.quota {
            None => None,
            Some(spec) => {
                let window = QuotaWindow::containing(spec.period, now_unix);
                match self.quota.consume(&key, window, spec.count).await {
                    Err(QuotaUnavailable) => return Err(ProxyError::Unavailable("quota store")),
                    Ok(QuotaDecision::Exhausted) => {
                        return Err(ProxyError::QuotaExceeded {
                            retry_after: Duration::from_secs(
                                window.end.saturating_sub(now_unix).max(1),
                            ),
                        });
                    }
                    Ok(QuotaDecision::Allowed { remaining }) => Some(QuotaState {
                        spec: *spec,
                        remaining,
                        window,
                        now: now_unix,
                    }),
                }
            }
        };
        Ok(RatePermit {
            route: call.route().name().clone(),
            user: call.user().clone(),
            rate,
            quota,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only for a map hashed by std's keyed SipHash.
    fn keyed_sip<K, V>(_: &HashMap<K, V, std::hash::RandomState>) {}

    #[test]
    fn limiter_keys_keep_keyed_hashing() {
        // Limit keys hold client addresses (an IPv6 caller has billions): never a cheap,
        // unkeyed-in-effect hasher such as `IdMap`'s (ARCHITECTURE.md, Invariants).
        let l = InMemoryRateLimiter::new(10);
        keyed_sip(&l.state.lock().unwrap().tats);
    }

    fn policy(count: u32, secs: u64, burst: u32) -> RatePolicy {
        RatePolicy::from_spec(&RateSpec {
            count,
            period: Duration::from_secs(secs),
            burst,
        })
    }

    #[test]
    fn burst_then_limited_then_recovers() {
        let l = InMemoryRateLimiter::new(1000);
        let p = policy(20, 60, 5); // one per 3 s, 5 at once
        let k = LimitKey::from_raw("r\u{1f}u\u{1f}alice");
        let t0 = Duration::from_secs(100);
        for i in 0..5u32 {
            match l.acquire_at(&k, &p, t0) {
                RateDecision::Allowed { remaining, .. } => assert_eq!(remaining, 4 - i),
                other => panic!("request {i}: {other:?}"),
            }
        }
        let RateDecision::Limited { retry_after } = l.acquire_at(&k, &p, t0) else {
            panic!("6th request allowed");
        };
        assert_eq!(retry_after, Duration::from_secs(3));
        assert!(matches!(
            l.acquire_at(&k, &p, t0 + Duration::from_millis(2999)),
            RateDecision::Limited { .. }
        ));
        assert!(matches!(
            l.acquire_at(&k, &p, t0 + Duration::from_secs(3)),
            RateDecision::Allowed { remaining: 0, .. }
        ));
    }

    #[test]
    fn keys_are_isolated() {
        let l = InMemoryRateLimiter::new(1000);
        let p = policy(1, 60, 1);
        let a = LimitKey::from_raw("r\u{1f}u\u{1f}alice");
        let b = LimitKey::from_raw("r\u{1f}u\u{1f}bob");
        let t = Duration::from_secs(1);
        assert!(matches!(
            l.acquire_at(&a, &p, t),
            RateDecision::Allowed { .. }
        ));
        assert!(matches!(
            l.acquire_at(&a, &p, t),
            RateDecision::Limited { .. }
        ));
        assert!(matches!(
            l.acquire_at(&b, &p, t),
            RateDecision::Allowed { .. }
        ));
    }

    #[test]
    fn expired_keys_are_evicted() {
        let l = InMemoryRateLimiter::new(10_000);
        let p = policy(10, 1, 1); // TAT 100 ms ahead
        for i in 0..5_000 {
            l.acquire_at(
                &LimitKey::from_raw(format!("k{i}")),
                &p,
                Duration::from_secs(1),
            );
        }
        assert_eq!(l.len(), 5_000);
        // Later every TAT has passed: the next new key triggers a sweep.
        for i in 0..10 {
            l.acquire_at(
                &LimitKey::from_raw(format!("new{i}")),
                &p,
                Duration::from_secs(30),
            );
        }
        assert!(l.len() <= 10, "len {}", l.len());
    }

    #[test]
    fn memory_cap_refuses_rather_than_grows() {
        let l = InMemoryRateLimiter::new(50);
        let p = policy(1, 3600, 1);
        let t = Duration::from_secs(1);
        for i in 0..200 {
            l.acquire_at(&LimitKey::from_raw(format!("k{i}")), &p, t);
        }
        assert!(l.len() <= 50);
    }

    #[test]
    fn degraded_policy_is_stricter_never_unlimited() {
        let p = policy(20, 60, 5);
        let d = p.degraded(4);
        assert_eq!(d.burst, 1);
        assert_eq!(d.emission, Duration::from_secs(12));
        assert_eq!(p.degraded(0), p.degraded(1));
    }

    #[test]
    fn calendar_windows() {
        // 2024-02-29T13:00:00Z (leap day)
        let t = 1_709_211_600;
        let day = QuotaWindow::containing(QuotaPeriod::Day, t);
        assert_eq!(day.start, 1_709_164_800); // 2024-02-29T00:00Z
        assert_eq!(day.end, 1_709_251_200);
        let month = QuotaWindow::containing(QuotaPeriod::Month, t);
        assert_eq!(month.start, 1_706_745_600); // 2024-02-01
        assert_eq!(month.end, 1_709_251_200); // 2024-03-01
        // December rolls into the next year.
        let dec = QuotaWindow::containing(QuotaPeriod::Month, 1_735_603_200); // 2024-12-31
        assert_eq!(dec.start, 1_733_011_200); // 2024-12-01
        assert_eq!(dec.end, 1_735_689_600); // 2025-01-01
        // Month windows from 1970 to 9999-11: each holds its instant, is 28-31 days
        // long, and the next one starts where it ends.
        for d in [0u64, 1, 59, 365, 19_782, 2_932_865] {
            let t = d * 86_400 + 43_200;
            let w = QuotaWindow::containing(QuotaPeriod::Month, t);
            assert!(w.start <= t && t < w.end, "{d}");
            assert!((28..=31).contains(&((w.end - w.start) / 86_400)), "{d}");
            assert_eq!(
                QuotaWindow::containing(QuotaPeriod::Month, w.end).start,
                w.end
            );
        }
    }

    #[test]
    fn quota_rolls_over_at_utc_midnight() {
        let s = InMemoryQuotaStore::new();
        let k = LimitKey::from_raw("q");
        let before = QuotaWindow::containing(QuotaPeriod::Day, 1_709_251_199);
        let after = QuotaWindow::containing(QuotaPeriod::Day, 1_709_251_200);
        assert_eq!(
            s.consume_now(&k, before, 2),
            Ok(QuotaDecision::Allowed { remaining: 1 })
        );
        assert_eq!(
            s.consume_now(&k, before, 2),
            Ok(QuotaDecision::Allowed { remaining: 0 })
        );
        assert_eq!(s.consume_now(&k, before, 2), Ok(QuotaDecision::Exhausted));
        assert_eq!(
            s.consume_now(&k, after, 2),
            Ok(QuotaDecision::Allowed { remaining: 1 })
        );
        // The ended window's counter is gone.
        assert_eq!(s.len(), 1);
    }

    #[tokio::test]
    async fn a_budget_refusal_uses_no_quota_and_a_gate_without_budgets_fails_closed() {
        use crate::budget::{BudgetSpend, InMemoryBudgetLedger};
        use crate::path::ProxyTarget;
        use crate::route::RouteTable;
        use keygate_auth::ids::UserId;
        let table = RouteTable::from_toml(
            "[routes.r]\nupstream = \"https://u.example\"\nsecret = \"s\"\ninject = { query = \"k\" }\nallow = [\"GET /a\"]\nlimits = { quota = \"2/day\" }\nbudget = { daily = 10 }\n",
        )
        .unwrap();
        let route = table.iter().next().unwrap().clone();
        let call = AuthorizedCall::for_tests(
            route.clone(),
            ProxyTarget::parse("/proxy/", "/proxy/r/a").unwrap(),
            UserId::parse("alice").unwrap(),
        );
        let ip = IpAddr::from([192, 0, 2, 1]);
        let now = 1_796_558_400;
        let bare = LimitGate::in_memory(100);
        assert_eq!(
            bare.admit_at(&call, ip, now).await.unwrap_err().code(),
            "unavailable",
            "a budgeted route is refused when no budgets are wired"
        );
        let ledger = Arc::new(InMemoryBudgetLedger::new());
        ledger.add(vec![BudgetSpend {
            user: UserId::parse("alice").unwrap(),
            route: route.name().clone(),
            day: (now / 86_400) as i64,
            cost: 10,
        }]);
        let quota = Arc::new(InMemoryQuotaStore::new());
        let gate = LimitGate::new(Arc::new(InMemoryRateLimiter::new(100)), quota.clone(), 1)
            .with_budgets(Arc::new(Budgets::new(ledger, Duration::from_secs(1), 100)));
        for _ in 0..3 {
            let err = gate.admit_at(&call, ip, now).await.unwrap_err();
            assert_eq!(err.code(), "budget_exhausted");
        }
        assert!(quota.is_empty(), "no quota was counted for refused calls");
    }

    #[test]
    fn limit_keys_keep_their_text() {
        // Shared stores (Redis, PostgreSQL) hold counters under this text: changing it
        // would reset every user's limits on upgrade.
        use crate::path::ProxyTarget;
        use crate::route::RouteTable;
        use keygate_auth::ids::UserId;
        for (per, ip, want) in [
            ("user", "192.0.2.1", "r\u{1f}u\u{1f}alice"),
            ("client", "192.0.2.1", "r\u{1f}c\u{1f}test-client"),
            ("ip", "192.0.2.1", "r\u{1f}i\u{1f}192.0.2.1"),
            ("ip", "2001:db8::7", "r\u{1f}i\u{1f}2001:db8::7"),
        ] {
            let table = RouteTable::from_toml(&format!(
                "[routes.r]\nupstream = \"https://u.example\"\nsecret = \"s\"\ninject = {{ query = \"k\" }}\nallow = [\"GET /a\"]\nlimits = {{ rate = \"5/sec\", per = \"{per}\" }}\n"
            ))
            .unwrap();
            let call = AuthorizedCall::for_tests(
                table.iter().next().unwrap().clone(),
                ProxyTarget::parse("/proxy/", "/proxy/r/a").unwrap(),
                UserId::parse("alice").unwrap(),
            );
            let key = LimitKey::for_call(&call, ip.parse().unwrap());
            assert_eq!(key.as_str(), want, "per = {per}");
        }
    }
}
