//! The monitor: sharded per-interval counters on the hot path, and the evaluator that
//! folds them into baselines and runs the rules.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_auth::access::TrustTier;
use keygate_auth::ids::{ClientId, IdMap, SessionId, UserId};
use keygate_auth::jwk::Jkt;
use keygate_proxy::RouteName;
use keygate_proxy::usage::{UsageEvent, UsageSink};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::clock::Clock;
use crate::config::{MonitorConfig, Rule, RuleParams, Scope};
use crate::delta::{Delta, RefusalDelta, RefusalKey, SessionDelta};
use crate::finding::{Finding, Prefix, RuleKind, Subject};
use crate::geo::GeoDb;

/// Hot-path lock shards; a user's events always land in the same one.
const SHARDS: usize = 16;
/// Distinct prefixes remembered per session per interval.
const IPS_PER_INTERVAL: usize = 4;
/// Prefixes, countries and pending networks remembered per session family.
const FAMILY_HISTORY: usize = 8;
/// Signals buffered per interval.
const MAX_MISMATCHES: usize = 1024;
const MINUTE_MS: f64 = 60_000.0;
const DAY_MS: i64 = 86_400_000;

/// A refusal, key mismatch or failed login reported by the token service or the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// An access or refresh token was refused.
    TokenRefused {
        /// Where it came from.
        ip: IpAddr,
        /// The client it claimed, if known.
        client: Option<ClientId>,
    },
    /// A DPoP proof was refused.
    ProofRefused {
        /// Where it came from.
        ip: IpAddr,
        /// The client, if known.
        client: Option<ClientId>,
        /// The user, if known.
        user: Option<UserId>,
    },
    /// A login failed.
    LoginFailed {
        /// Where it came from.
        ip: IpAddr,
        /// The client, if known.
        client: Option<ClientId>,
        /// The user, if known.
        user: Option<UserId>,
    },
    /// A refresh token was presented with a DPoP key other than its family's.
    KeyMismatch {
        /// The family.
        session: SessionId,
        /// Its user.
        user: UserId,
        /// Its client.
        client: ClientId,
        /// Where it came from.
        ip: IpAddr,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Count {
    calls: u64,
    cost: u64,
    first_ms: i64,
    /// Calls per attestation tier ([`tier_index`]), replicas' deltas folded in.
    tiers: [u64; 3],
}

impl Count {
    fn new(now: i64) -> Self {
        Self {
            calls: 0,
            cost: 0,
            first_ms: now,
            tiers: [0; 3],
        }
    }
}

fn add_tiers(into: &mut [u64; 3], from: [u64; 3]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a = a.saturating_add(b);
    }
}

fn tier_index(t: TrustTier) -> usize {
    match t {
        TrustTier::Failed => 0,
        TrustTier::Unattested => 1,
        TrustTier::Attested => 2,
    }
}

#[derive(Debug)]
struct SessionCount {
    user: UserId,
    jkt: Option<Jkt>,
    /// A second thumbprint appeared within the interval.
    jkt_changed: bool,
    ips: [Option<(IpAddr, i64)>; IPS_PER_INTERVAL],
}

#[derive(Debug, Default)]
struct Accum {
    // Keyed by ids of verified calls (keygate's own), so the cheaper hasher: every
    // forwarded call looks each of the three up.
    users: IdMap<UserId, Count>,
    routes: IdMap<RouteName, Count>,
    sessions: IdMap<SessionId, SessionCount>,
}

impl Accum {
    fn keys(&self) -> usize {
        self.users.len() + self.routes.len() + self.sessions.len()
    }

    fn clear(&mut self) {
        // `clear` keeps the capacity, so the next interval's first sights do not regrow.
        self.users.clear();
        self.routes.clear();
        self.sessions.clear();
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct RefCount {
    token: u64,
    proof: u64,
    login: u64,
    first_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RefKey {
    Ip(Prefix),
    Client(ClientId),
    User(UserId),
}

#[derive(Debug)]
struct Mismatch {
    session: SessionId,
    user: UserId,
    ip: IpAddr,
    at_ms: i64,
}

#[derive(Debug, Default)]
struct SignalAccum {
    refusals: HashMap<RefKey, RefCount>,
    mismatches: Vec<Mismatch>,
}

#[derive(Debug, Default)]
struct Dropped {
    users: AtomicU64,
    routes: AtomicU64,
    sessions: AtomicU64,
    addresses: AtomicU64,
    signals: AtomicU64,
    stale: AtomicU64,
}

/// An exponentially decayed call count: `sum` is Σ calls × e^(−age/τ), so `sum / τ` is
/// the rate, with O(1) lazy decay instead of a sweep over idle subjects.
#[derive(Clone, Copy, Debug, Default)]
struct Ewma {
    sum: f64,
    at_ms: i64,
}

impl Ewma {
    fn decay(&mut self, now: i64, tau_ms: f64) {
        if now > self.at_ms {
            self.sum *= (-((now - self.at_ms) as f64) / tau_ms).exp();
            self.at_ms = now;
        }
    }

    /// Calls per minute, corrected for a subject younger than τ (the sum has not filled).
    fn per_min(&self, now: i64, tau_ms: f64, age_ms: i64) -> f64 {
        let decayed = if now > self.at_ms {
            self.sum * (-((now - self.at_ms) as f64) / tau_ms).exp()
        } else {
            self.sum
        };
        let fill = 1.0 - (-(age_ms.max(1) as f64) / tau_ms).exp();
        decayed / (tau_ms * fill.max(1e-9)) * MINUTE_MS
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    end_ms: i64,
    calls: u64,
    first_ms: i64,
    tiers: [u64; 3],
}

#[derive(Debug)]
struct Stats {
    /// Intervals with calls, oldest first, within the longest window.
    slots: VecDeque<Slot>,
    short: Ewma,
    long: Ewma,
    first_ms: i64,
    last_ms: i64,
    total: u64,
    day: i64,
    cost_day: u64,
    /// While a spike rule fires for this subject (and a cooldown after), intervals fold
    /// into the baseline capped at twice the baseline, so an attack is absorbed slowly.
    hot_until_ms: i64,
}

impl Stats {
    fn new(now: i64, interval_ms: i64) -> Self {
        Self {
            slots: VecDeque::new(),
            short: Ewma {
                sum: 0.0,
                at_ms: now,
            },
            long: Ewma {
                sum: 0.0,
                at_ms: now,
            },
            // The subject's first interval began one interval ago.
            first_ms: now - interval_ms,
            last_ms: now,
            total: 0,
            day: now.div_euclid(DAY_MS),
            cost_day: 0,
            hot_until_ms: i64::MIN,
        }
    }

    /// Calls within the window, of the `tiers` only when given, and when the first of
    /// them came.
    fn window(&self, now: i64, window_ms: i64, tiers: Option<&BTreeSet<TrustTier>>) -> (u64, i64) {
        let mut calls = 0;
        let mut first = now;
        for s in self
            .slots
            .iter()
            .rev()
            .take_while(|s| s.end_ms > now - window_ms)
        {
            let n = match tiers {
                None => s.calls,
                Some(tiers) => tiers
                    .iter()
                    .filter_map(|t| s.tiers.get(tier_index(*t)))
                    .sum(),
            };
            if n > 0 {
                calls += n;
                first = first.min(s.first_ms);
            }
        }
        (calls, first)
    }
}

#[derive(Clone, Copy, Debug)]
struct Baseline {
    per_min: f64,
    counts: bool,
}

#[derive(Debug)]
struct Family {
    jkt: Option<Jkt>,
    prefixes: Vec<(Prefix, i64)>,
    countries: Vec<(String, i64)>,
    pending: Vec<(Prefix, Option<String>)>,
    last_loc: Option<(f64, f64, i64, Option<String>)>,
    last_ms: i64,
}

#[derive(Debug)]
struct RefStats {
    slots: VecDeque<(i64, RefCount)>,
    last_ms: i64,
}

#[derive(Debug)]
struct Incident {
    rule: usize,
    subject: Subject,
    step: usize,
    opened_ms: i64,
    started_ms: i64,
    last_step_ms: i64,
    last_fire_ms: i64,
}

struct Fire {
    rule: usize,
    subject: Subject,
    evidence: Map<String, Value>,
    started_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    spare: Vec<Accum>,
    spare_signals: SignalAccum,
    last_eval_ms: Option<i64>,
    ticks: u64,
    users: IdMap<UserId, Stats>,
    routes: IdMap<RouteName, Stats>,
    families: IdMap<SessionId, Family>,
    // Keyed partly by address prefixes: std's keyed SipHash.
    refusals: HashMap<RefKey, RefStats>,
    incidents: BTreeMap<String, Incident>,
    forgotten: u64,
}

/// What [`Monitor::snapshot`] reports about one user or route.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubjectSnapshot {
    /// The user id or route name.
    pub name: String,
    /// Calls per minute over the last minute.
    pub rate_per_min: f64,
    /// The baseline, calls per minute.
    pub baseline_per_min: f64,
    /// Whether the baseline is old and full enough for spike rules.
    pub baseline_counts: bool,
    /// Cost units since 00:00 UTC.
    pub cost_today: u64,
}

/// An open incident.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentSnapshot {
    /// The de-duplication key ([`Finding::incident`]).
    pub incident: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's kind (`spike`, `ceiling`, …).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: RuleKind,
    /// What it is about (`user:ID`, `route:NAME`, …).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub subject: Subject,
    /// The ladder step reached.
    pub step: usize,
    /// That step's action name.
    pub action: String,
    /// When the incident opened, Unix ms.
    pub opened_ms: i64,
    /// When its triggering traffic began, Unix ms.
    pub started_ms: i64,
    /// When the rule last fired for it, Unix ms.
    pub last_fired_ms: i64,
}

/// Events and keys dropped because a bound was reached.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DroppedCounts {
    /// User counts not taken (per-interval key bound).
    pub users: u64,
    /// Route counts not taken.
    pub routes: u64,
    /// Session counts not taken.
    pub sessions: u64,
    /// Extra addresses of one session within one interval, beyond the per-interval bound.
    pub addresses: u64,
    /// Signals not taken.
    pub signals: u64,
    /// Users, routes, families or refusal keys forgotten to stay within `max_subjects`.
    pub forgotten: u64,
    /// Other replicas' intervals that arrived too late to count, or did not parse.
    pub stale_deltas: u64,
}

/// The monitor's state for the console.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    /// When taken, Unix ms.
    pub at_ms: i64,
    /// Whether the monitor runs.
    pub enabled: bool,
    /// Evaluation interval, ms.
    pub interval_ms: u64,
    /// `none: prefix rules only`, or the database path.
    pub geoip: String,
    /// `active`, or why impossible travel is inactive.
    pub impossible_travel: String,
    /// Known users, by id.
    pub users: Vec<SubjectSnapshot>,
    /// Known routes, by name.
    pub routes: Vec<SubjectSnapshot>,
    /// Drop counters.
    pub dropped: DroppedCounts,
    /// Open incidents, by key.
    pub incidents: Vec<IncidentSnapshot>,
}

/// Watches usage events and signals, and reports findings at each evaluation.
pub struct Monitor {
    config: MonitorConfig,
    geo: Option<GeoDb>,
    clock: Arc<dyn Clock>,
    /// Picks the shard of a user or a route: keygate's own ids, so foldhash (see
    /// `keygate_auth::ids::IdMap`).
    hasher: foldhash::fast::RandomState,
    shards: Vec<Mutex<Accum>>,
    signals: Mutex<SignalAccum>,
    per_shard_keys: usize,
    dropped: Dropped,
    state: Mutex<State>,
    /// Incidents acknowledged here since the last shared evaluation, for the others.
    resets: Mutex<Vec<String>>,
    interval_ms: i64,
    keep_ms: i64,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("enabled", &self.config.enabled)
            .field("rules", &self.config.rules.len())
            .field("geo", &self.geo)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn bump<'m, K: Hash + Eq + Clone, V, S: BuildHasher>(
    map: &'m mut HashMap<K, V, S>,
    key: &K,
    room: bool,
    fresh: impl FnOnce() -> V,
    dropped: &AtomicU64,
) -> Option<&'m mut V> {
    // A seen key costs two lookups (`contains_key`, then `get_mut`: one `get_mut` whose
    // miss falls through to an insert does not pass today's borrow checker) and no
    // allocation; a new key three and one clone.
    if map.contains_key(key) {
        return map.get_mut(key);
    }
    if room {
        Some(map.entry(key.clone()).or_insert_with(fresh))
    } else {
        dropped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn evidence(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Forgets the least recently seen eighth of `map` once it is over `max`.
fn forget_oldest<K: Hash + Eq + Clone, V, S: BuildHasher>(
    map: &mut HashMap<K, V, S>,
    max: usize,
    last: impl Fn(&V) -> i64,
) -> u64 {
    if map.len() <= max {
        return 0;
    }
    let mut ages: Vec<(i64, K)> = map.iter().map(|(k, v)| (last(v), k.clone())).collect();
    ages.sort_unstable_by_key(|(t, _)| *t);
    let excess = map.len() - max + max / 8;
    let mut n = 0;
    for (_, key) in ages.into_iter().take(excess) {
        map.remove(&key);
        n += 1;
    }
    n
}

impl Monitor {
    /// A monitor for `config`; `geo` enables country and travel rules.
    pub fn new(config: MonitorConfig, geo: Option<GeoDb>, clock: Arc<dyn Clock>) -> Self {
        let interval_ms = ms(config.interval).max(1);
        let longest = config
            .rules
            .iter()
            .map(|r| match r.params {
                RuleParams::Spike { window, .. }
                | RuleParams::Ceiling { window, .. }
                | RuleParams::Refusals { window, .. } => ms(window),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let per_shard_keys = config.max_keys.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Accum::default())).collect(),
            signals: Mutex::new(SignalAccum::default()),
            state: Mutex::new(State {
                spare: (0..SHARDS).map(|_| Accum::default()).collect(),
                ..State::default()
            }),
            per_shard_keys,
            resets: Mutex::new(Vec::new()),
            dropped: Dropped::default(),
            hasher: foldhash::fast::RandomState::default(),
            keep_ms: longest.max(60_000),
            interval_ms,
            config,
            geo,
            clock,
        }
    }

    /// The evaluation interval: the server calls [`Monitor::evaluate`] this often.
    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    /// Whether the monitor runs; when not, observing and evaluating do nothing.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The configuration in force.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Counts one finished call. One shard lock and a few additions; allocates only on
    /// the first sight of a user, route or session in the current interval.
    pub fn observe(&self, event: &UsageEvent) {
        if !self.config.enabled {
            return;
        }
        let now = self.clock.now_ms();
        let index = (self.hasher.hash_one(&event.user) % SHARDS as u64) as usize;
        let Some(Ok(mut acc)) = self.shards.get(index).map(|m| m.lock()) else {
            self.dropped.users.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let acc = &mut *acc;
        let mut keys = acc.keys();
        let room = keys < self.per_shard_keys;
        let before = acc.users.len();
        if let Some(c) = bump(
            &mut acc.users,
            &event.user,
            room,
            || Count::new(now),
            &self.dropped.users,
        ) {
            c.calls += 1;
            c.cost = c.cost.saturating_add(event.cost);
            if let Some(n) = c.tiers.get_mut(tier_index(event.tier)) {
                *n += 1;
            }
        }
        keys += acc.users.len() - before;
        let room = keys < self.per_shard_keys;
        let before = acc.routes.len();
        if let Some(c) = bump(
            &mut acc.routes,
            &event.route,
            room,
            || Count::new(now),
            &self.dropped.routes,
        ) {
            c.calls += 1;
            c.cost = c.cost.saturating_add(event.cost);
            if let Some(n) = c.tiers.get_mut(tier_index(event.tier)) {
                *n += 1;
            }
        }
        keys += acc.routes.len() - before;
        let room = keys < self.per_shard_keys;
        let fresh = || SessionCount {
            user: event.user.clone(),
            jkt: event.jkt.clone(),
            jkt_changed: false,
            ips: [None; IPS_PER_INTERVAL],
        };
        if let Some(s) = bump(
            &mut acc.sessions,
            &event.session,
            room,
            fresh,
            &self.dropped.sessions,
        ) {
            match (&s.jkt, &event.jkt) {
                (Some(a), Some(b)) if a != b => s.jkt_changed = true,
                (None, Some(b)) => s.jkt = Some(b.clone()),
                _ => {}
            }
            let prefix = Prefix::of(event.client_ip);
            let seen = s
                .ips
                .iter()
                .flatten()
                .any(|(ip, _)| Prefix::of(*ip) == prefix);
            if !seen {
                match s.ips.iter_mut().find(|slot| slot.is_none()) {
                    Some(slot) => *slot = Some((event.client_ip, now)),
                    None => {
                        self.dropped.addresses.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Takes a signal from the token service or the proxy. One short lock.
    pub fn signal(&self, signal: Signal) {
        if !self.config.enabled {
            return;
        }
        let now = self.clock.now_ms();
        let Ok(mut acc) = self.signals.lock() else {
            self.dropped.signals.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (ip, client, user, which) = match signal {
            Signal::KeyMismatch {
                session,
                user,
                client: _,
                ip,
            } => {
                if acc.mismatches.len() < MAX_MISMATCHES {
                    acc.mismatches.push(Mismatch {
                        session,
                        user,
                        ip,
                        at_ms: now,
                    });
                } else {
                    self.dropped.signals.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Signal::TokenRefused { ip, client } => (ip, client, None, 0),
            Signal::ProofRefused { ip, client, user } => (ip, client, user, 1),
            Signal::LoginFailed { ip, client, user } => (ip, client, user, 2),
        };
        let keys = [
            Some(RefKey::Ip(Prefix::of(ip))),
            client.map(RefKey::Client),
            user.map(RefKey::User),
        ];
        for key in keys.into_iter().flatten() {
            let room = acc.refusals.len() < self.config.max_keys;
            if let Some(c) = bump(
                &mut acc.refusals,
                &key,
                room,
                || RefCount {
                    first_ms: now,
                    ..RefCount::default()
                },
                &self.dropped.signals,
            ) {
                match which {
                    0 => c.token += 1,
                    1 => c.proof += 1,
                    _ => c.login += 1,
                }
            }
        }
    }

    fn rules_of(&self, kind: RuleKind) -> impl Iterator<Item = (usize, &Rule)> {
        self.config
            .rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.kind == kind)
    }

    fn baseline(&self, stats: &Stats, now: i64) -> Baseline {
        let b = &self.config.baseline;
        let age = now - stats.first_ms;
        let short = stats.short.per_min(now, ms(b.short) as f64, age);
        let long = stats.long.per_min(now, ms(b.long) as f64, age);
        Baseline {
            // The larger of the two: the short one follows the day's rhythm, the long one
            // remembers a user through a quiet hour.
            per_min: short.max(long),
            counts: age >= ms(b.min_age) && stats.total >= b.min_calls,
        }
    }

    /// Closes the current interval, folds it into the baselines, runs every rule and
    /// applies each incident's ladder. Returns the actions due now.
    pub fn evaluate(&self) -> Vec<Finding> {
        if let Ok(mut resets) = self.resets.lock() {
            // Only a shared evaluation sends acknowledgements on.
            resets.clear();
        }
        self.close(Vec::new(), false).0
    }

    /// [`Monitor::evaluate`] for one of several replicas: `remote` are the deltas the
    /// other replicas published since the last call; they are folded into this interval
    /// with this replica's own counts, and their acknowledgements close the same
    /// incidents here. Returns the findings and this replica's own delta (its counts
    /// alone, and its acknowledgements) for the others. Deltas closed more than ten
    /// intervals (at least 30 s) ago, plus 60 s for the senders' clock skew, are dropped
    /// and counted (`stale_deltas`).
    pub fn evaluate_shared(&self, remote: Vec<Delta>) -> (Vec<Finding>, Delta) {
        self.close(remote, true)
    }

    fn close(&self, remote: Vec<Delta>, export: bool) -> (Vec<Finding>, Delta) {
        if !self.config.enabled {
            return (Vec::new(), Delta::default());
        }
        let now = self.clock.now_ms();
        let Ok(mut guard) = self.state.lock() else {
            return (Vec::new(), Delta::default());
        };
        let st = &mut *guard;
        // The only work under the hot-path locks: swapping in last round's cleared maps.
        let mut spare = std::mem::take(&mut st.spare);
        for (shard, accum) in self.shards.iter().zip(spare.iter_mut()) {
            if let Ok(mut current) = shard.lock() {
                std::mem::swap(&mut *current, accum);
            }
        }
        if let Ok(mut sig) = self.signals.lock() {
            std::mem::swap(&mut *sig, &mut st.spare_signals);
        }
        let mut local = Delta::default();
        if export {
            local = self.export(&spare, &st.spare_signals, now);
            if let Ok(mut resets) = self.resets.lock() {
                local.resets = std::mem::take(&mut *resets);
            }
        }
        // Senders' clocks may be off by as much as the token skew (60 s, S04).
        let stale_ms = (self.interval_ms * 10).max(30_000) + 60_000;
        for delta in remote {
            if now - delta.at_ms > stale_ms {
                self.dropped.stale.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            for incident in &delta.resets {
                self.reset_in(st, incident, now);
            }
            self.merge(&mut spare, &mut st.spare_signals, delta);
        }
        let dt = st
            .last_eval_ms
            .map_or(self.interval_ms, |last| (now - last).max(1));
        st.last_eval_ms = Some(now);
        st.ticks += 1;
        let mut fires = Vec::new();
        for accum in &spare {
            for (user, count) in &accum.users {
                let Some(stats) =
                    seen_or_insert(&mut st.users, user, || Stats::new(now, self.interval_ms))
                else {
                    continue;
                };
                self.fold_subject(
                    stats,
                    count,
                    now,
                    dt,
                    Scope::User,
                    &mut fires,
                    || Subject::User(user.clone()),
                    None,
                );
            }
        }
        let mut routes: HashMap<&RouteName, Count> = HashMap::new();
        for accum in &spare {
            for (route, count) in &accum.routes {
                let sum = routes.entry(route).or_insert(Count::new(count.first_ms));
                sum.calls += count.calls;
                sum.cost = sum.cost.saturating_add(count.cost);
                for (s, c) in sum.tiers.iter_mut().zip(count.tiers) {
                    *s += c;
                }
                sum.first_ms = sum.first_ms.min(count.first_ms);
            }
        }
        for (route, count) in &routes {
            let Some(stats) =
                seen_or_insert(&mut st.routes, *route, || Stats::new(now, self.interval_ms))
            else {
                continue;
            };
            self.fold_subject(
                stats,
                count,
                now,
                dt,
                Scope::Route,
                &mut fires,
                || Subject::Route((*route).clone()),
                Some(route),
            );
        }
        drop(routes);
        for accum in &spare {
            for (session, count) in &accum.sessions {
                self.check_family(st, session, count, now, &mut fires);
            }
        }
        self.check_signals(st, now, &mut fires);
        for accum in &mut spare {
            accum.clear();
        }
        st.spare = spare;
        st.spare_signals.refusals.clear();
        st.spare_signals.mismatches.clear();

        let findings = self.ladder(st, fires, now);
        let max = self.config.max_subjects;
        st.forgotten += forget_oldest(&mut st.users, max, |s| s.last_ms);
        st.forgotten += forget_oldest(&mut st.routes, max, |s| s.last_ms);
        st.forgotten += forget_oldest(&mut st.families, max, |f| f.last_ms);
        if st.ticks % 32 == 0 {
            let keep = self.keep_ms;
            st.refusals.retain(|_, r| now - r.last_ms < keep);
        }
        st.forgotten += forget_oldest(&mut st.refusals, max, |r| r.last_ms);
        (findings, local)
    }

    fn shard_of<K: Hash>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// This replica's closed interval, as the others receive it.
    fn export(&self, spare: &[Accum], signals: &SignalAccum, now: i64) -> Delta {
        let mut d = Delta {
            at_ms: now,
            ..Delta::default()
        };
        for accum in spare {
            for (user, c) in &accum.users {
                d.users
                    .push((user.as_str().to_owned(), c.calls, c.cost, c.first_ms));
                if c.tiers[0] > 0 || c.tiers[2] > 0 {
                    d.user_tiers.push((user.as_str().to_owned(), c.tiers));
                }
            }
            for (route, c) in &accum.routes {
                d.routes
                    .push((route.as_str().to_owned(), c.calls, c.cost, c.first_ms));
                if c.tiers[0] > 0 || c.tiers[2] > 0 {
                    d.route_tiers.push((route.as_str().to_owned(), c.tiers));
                }
            }
            for (session, s) in &accum.sessions {
                d.sessions.push(SessionDelta {
                    session: session.as_str().to_owned(),
                    user: s.user.as_str().to_owned(),
                    jkt: s.jkt.as_ref().map(|j| j.as_str().to_owned()),
                    jkt_changed: s.jkt_changed,
                    ips: s.ips.iter().flatten().copied().collect(),
                });
            }
        }
        for (key, r) in &signals.refusals {
            d.refusals.push(RefusalDelta {
                key: match key {
                    RefKey::Ip(prefix) => RefusalKey::Ip(prefix.base()),
                    RefKey::Client(c) => RefusalKey::Client(c.as_str().to_owned()),
                    RefKey::User(u) => RefusalKey::User(u.as_str().to_owned()),
                },
                token: r.token,
                proof: r.proof,
                login: r.login,
                first_ms: r.first_ms,
            });
        }
        for m in &signals.mismatches {
            d.mismatches.push((
                m.session.as_str().to_owned(),
                m.user.as_str().to_owned(),
                m.ip,
                m.at_ms,
            ));
        }
        d
    }

    /// Adds another replica's interval to this one's, within the same bounds as
    /// [`Monitor::observe`]; ids that do not parse are dropped and counted.
    fn merge(&self, spare: &mut [Accum], signals: &mut SignalAccum, delta: Delta) {
        let dropped = &self.dropped;
        let user_tiers: HashMap<String, [u64; 3]> = delta.user_tiers.into_iter().collect();
        let route_tiers: HashMap<String, [u64; 3]> = delta.route_tiers.into_iter().collect();
        for (user, calls, cost, first_ms) in delta.users {
            let tiers = user_tiers.get(&user).copied().unwrap_or([0, calls, 0]);
            let Ok(user) = UserId::parse(&user) else {
                dropped.stale.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(acc) = spare.get_mut(self.shard_of(&user)) else {
                continue;
            };
            let room = acc.keys() < self.per_shard_keys;
            if let Some(c) = bump(
                &mut acc.users,
                &user,
                room,
                || Count::new(first_ms),
                &dropped.users,
            ) {
                c.calls = c.calls.saturating_add(calls);
                c.cost = c.cost.saturating_add(cost);
                c.first_ms = c.first_ms.min(first_ms);
                add_tiers(&mut c.tiers, tiers);
            }
        }
        for (route, calls, cost, first_ms) in delta.routes {
            let tiers = route_tiers.get(&route).copied().unwrap_or([0, calls, 0]);
            let Ok(route) = RouteName::parse(&route) else {
                dropped.stale.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(acc) = spare.get_mut(self.shard_of(&route)) else {
                continue;
            };
            let room = acc.keys() < self.per_shard_keys;
            if let Some(c) = bump(
                &mut acc.routes,
                &route,
                room,
                || Count::new(first_ms),
                &dropped.routes,
            ) {
                c.calls = c.calls.saturating_add(calls);
                c.cost = c.cost.saturating_add(cost);
                c.first_ms = c.first_ms.min(first_ms);
                add_tiers(&mut c.tiers, tiers);
            }
        }
        for s in delta.sessions {
            let (Ok(session), Ok(user)) = (SessionId::parse(&s.session), UserId::parse(&s.user))
            else {
                dropped.stale.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let jkt = s.jkt.as_deref().and_then(Jkt::parse);
            let Some(acc) = spare.get_mut(self.shard_of(&user)) else {
                continue;
            };
            let room = acc.keys() < self.per_shard_keys;
            let fresh = || SessionCount {
                user: user.clone(),
                jkt: None,
                jkt_changed: false,
                ips: [None; IPS_PER_INTERVAL],
            };
            let Some(count) = bump(&mut acc.sessions, &session, room, fresh, &dropped.sessions)
            else {
                continue;
            };
            count.jkt_changed |= s.jkt_changed;
            match (&count.jkt, jkt) {
                (Some(a), Some(b)) if *a != b => count.jkt_changed = true,
                (None, Some(b)) => count.jkt = Some(b),
                _ => {}
            }
            for (ip, at_ms) in s.ips {
                let prefix = Prefix::of(ip);
                if count
                    .ips
                    .iter()
                    .flatten()
                    .any(|(seen, _)| Prefix::of(*seen) == prefix)
                {
                    continue;
                }
                match count.ips.iter_mut().find(|slot| slot.is_none()) {
                    Some(slot) => *slot = Some((ip, at_ms)),
                    None => {
                        dropped.addresses.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        for r in delta.refusals {
            let key = match r.key {
                RefusalKey::Ip(ip) => Some(RefKey::Ip(Prefix::of(ip))),
                RefusalKey::Client(c) => ClientId::parse(&c).ok().map(RefKey::Client),
                RefusalKey::User(u) => UserId::parse(&u).ok().map(RefKey::User),
            };
            let Some(key) = key else {
                dropped.stale.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let room = signals.refusals.len() < self.config.max_keys;
            if let Some(c) = bump(
                &mut signals.refusals,
                &key,
                room,
                || RefCount {
                    first_ms: r.first_ms,
                    ..RefCount::default()
                },
                &dropped.signals,
            ) {
                c.token = c.token.saturating_add(r.token);
                c.proof = c.proof.saturating_add(r.proof);
                c.login = c.login.saturating_add(r.login);
                c.first_ms = c.first_ms.min(r.first_ms);
            }
        }
        for (session, user, ip, at_ms) in delta.mismatches {
            let (Ok(session), Ok(user)) = (SessionId::parse(&session), UserId::parse(&user)) else {
                dropped.stale.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if signals.mismatches.len() < MAX_MISMATCHES {
                signals.mismatches.push(Mismatch {
                    session,
                    user,
                    ip,
                    at_ms,
                });
            } else {
                dropped.signals.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fold_subject(
        &self,
        stats: &mut Stats,
        count: &Count,
        now: i64,
        dt: i64,
        scope: Scope,
        fires: &mut Vec<Fire>,
        subject: impl Fn() -> Subject,
        route: Option<&RouteName>,
    ) {
        stats.slots.push_back(Slot {
            end_ms: now,
            calls: count.calls,
            first_ms: count.first_ms,
            tiers: count.tiers,
        });
        while stats
            .slots
            .front()
            .is_some_and(|s| s.end_ms <= now - self.keep_ms)
        {
            stats.slots.pop_front();
        }
        let day = now.div_euclid(DAY_MS);
        if day != stats.day {
            stats.day = day;
            stats.cost_day = 0;
        }
        stats.cost_day = stats.cost_day.saturating_add(count.cost);
        stats.last_ms = now;
        // Rules see the baseline as it was before this interval.
        let base = self.baseline(stats, now);
        let mut spiking: Option<Duration> = None;
        for (i, rule) in self.config.rules.iter().enumerate() {
            if rule.scope != scope {
                continue;
            }
            if let (Some(only), Some(route)) = (&rule.routes, route) {
                if !only.contains(route) {
                    continue;
                }
            }
            match rule.params {
                RuleParams::Spike {
                    window,
                    factor,
                    min_calls,
                } => {
                    if !base.counts {
                        continue;
                    }
                    let w = ms(window);
                    let (calls, first) = stats.window(now, w, None);
                    let rate = calls as f64 * MINUTE_MS / w as f64;
                    if calls >= min_calls && rate >= factor * base.per_min {
                        spiking = Some(spiking.map_or(rule.cooldown, |c| c.max(rule.cooldown)));
                        fires.push(Fire {
                            rule: i,
                            subject: subject(),
                            started_ms: first,
                            evidence: evidence(vec![
                                ("calls", json!(calls)),
                                ("window_secs", json!(window.as_secs_f64())),
                                ("rate_per_min", json!(round1(rate))),
                                ("baseline_per_min", json!(round1(base.per_min))),
                                ("factor", json!(factor)),
                                ("min_calls", json!(min_calls)),
                            ]),
                        });
                    }
                }
                RuleParams::Ceiling {
                    window,
                    calls_per_minute,
                    cost_per_day,
                } => {
                    let w = ms(window);
                    let (calls, first) = stats.window(now, w, rule.tiers.as_ref());
                    let rate = calls as f64 * MINUTE_MS / w as f64;
                    let over_rate = calls_per_minute.filter(|limit| rate >= *limit as f64);
                    let over_cost = cost_per_day.filter(|limit| stats.cost_day >= *limit);
                    if over_rate.is_some() || over_cost.is_some() {
                        let mut ev = evidence(vec![
                            ("calls", json!(calls)),
                            ("window_secs", json!(window.as_secs_f64())),
                            ("rate_per_min", json!(round1(rate))),
                            ("cost_today", json!(stats.cost_day)),
                        ]);
                        if let Some(limit) = calls_per_minute {
                            ev.insert("calls_per_minute".into(), json!(limit));
                        }
                        if let Some(limit) = cost_per_day {
                            ev.insert("cost_per_day".into(), json!(limit));
                        }
                        if let Some(tiers) = &rule.tiers {
                            let names: Vec<&str> = tiers.iter().map(|t| t.as_str()).collect();
                            ev.insert("tiers".into(), json!(names));
                        }
                        let started_ms = if over_rate.is_some() {
                            first
                        } else {
                            count.first_ms
                        };
                        fires.push(Fire {
                            rule: i,
                            subject: subject(),
                            started_ms,
                            evidence: ev,
                        });
                    }
                }
                _ => {}
            }
        }
        if let Some(cooldown) = spiking {
            stats.hot_until_ms = now + ms(cooldown);
        }
        let b = &self.config.baseline;
        let mut calls = count.calls as f64;
        if now < stats.hot_until_ms && base.counts {
            calls = calls.min(2.0 * base.per_min * dt as f64 / MINUTE_MS);
        }
        stats.short.decay(now, ms(b.short) as f64);
        stats.long.decay(now, ms(b.long) as f64);
        stats.short.sum += calls;
        stats.long.sum += calls;
        stats.total += count.calls;
    }

    fn check_family(
        &self,
        st: &mut State,
        session: &SessionId,
        count: &SessionCount,
        now: i64,
        fires: &mut Vec<Fire>,
    ) {
        let Some(family) = seen_or_insert(&mut st.families, session, || Family {
            jkt: None,
            prefixes: Vec::new(),
            countries: Vec::new(),
            pending: Vec::new(),
            last_loc: None,
            last_ms: now,
        }) else {
            return;
        };
        family.last_ms = now;
        let subject = || Subject::Session {
            session: session.clone(),
            user: count.user.clone(),
        };
        let mut key_changed = count.jkt_changed;
        match (&family.jkt, &count.jkt) {
            (None, Some(jkt)) => family.jkt = Some(jkt.clone()),
            (Some(first), Some(now_jkt)) if first != now_jkt => key_changed = true,
            _ => {}
        }
        if key_changed {
            for (i, _) in self.rules_of(RuleKind::KeyChange) {
                fires.push(Fire {
                    rule: i,
                    subject: subject(),
                    started_ms: now - self.interval_ms,
                    evidence: evidence(vec![
                        ("source", json!("event")),
                        (
                            "thumbprints_in_interval",
                            json!(if count.jkt_changed { 2 } else { 1 }),
                        ),
                    ]),
                });
            }
        }
        let mut ips: Vec<(IpAddr, i64)> = count.ips.iter().flatten().copied().collect();
        ips.sort_unstable_by_key(|(_, t)| *t);
        for (ip, seen_ms) in ips {
            let prefix = Prefix::of(ip);
            let geo = self.geo.as_ref().and_then(|g| g.lookup(ip));
            let country = geo.as_ref().map(|g| g.country.clone());
            if family.prefixes.is_empty() {
                // First sight sets the family's home: nothing to compare with.
                family.prefixes.push((prefix, seen_ms));
                if let Some(c) = &country {
                    family.countries.push((c.clone(), seen_ms));
                }
            } else if let Some(p) = family.prefixes.iter_mut().find(|(p, _)| *p == prefix) {
                p.1 = seen_ms;
            } else if let Some(c) = country
                .as_ref()
                .and_then(|c| family.countries.iter_mut().find(|(k, _)| k == c))
            {
                c.1 = seen_ms;
                remember(&mut family.prefixes, prefix, seen_ms);
            } else {
                if !family.pending.iter().any(|(p, _)| *p == prefix) {
                    if family.pending.len() >= FAMILY_HISTORY {
                        family.pending.remove(0);
                    }
                    family.pending.push((prefix, country.clone()));
                }
                for (i, _) in self.rules_of(RuleKind::NewNetwork) {
                    let mut ev = evidence(vec![
                        ("prefix", json!(prefix.to_string())),
                        ("known_prefixes", json!(family.prefixes.len())),
                        (
                            "by",
                            json!(if self.geo.is_some() {
                                "country"
                            } else {
                                "prefix"
                            }),
                        ),
                    ]);
                    if let Some(c) = &country {
                        ev.insert("country".into(), json!(c));
                        let known: Vec<&str> =
                            family.countries.iter().map(|(c, _)| c.as_str()).collect();
                        ev.insert("known_countries".into(), json!(known));
                    }
                    fires.push(Fire {
                        rule: i,
                        subject: subject(),
                        started_ms: seen_ms,
                        evidence: ev,
                    });
                }
            }
            let Some(loc) = geo.as_ref().and_then(|g| g.location) else {
                continue;
            };
            if let Some((lat, lon, at, from)) = &family.last_loc {
                let km = haversine_km((*lat, *lon), loc);
                let hours = ((seen_ms - at).max(1000) as f64) / 3_600_000.0;
                let speed = km / hours;
                for (i, rule) in self.rules_of(RuleKind::ImpossibleTravel) {
                    let RuleParams::ImpossibleTravel {
                        max_speed_kmh,
                        min_distance_km,
                    } = rule.params
                    else {
                        continue;
                    };
                    if km >= min_distance_km && speed > max_speed_kmh {
                        fires.push(Fire {
                            rule: i,
                            subject: subject(),
                            started_ms: seen_ms,
                            evidence: evidence(vec![
                                ("distance_km", json!(km.round())),
                                ("hours", json!((hours * 1000.0).round() / 1000.0)),
                                ("speed_kmh", json!(speed.round())),
                                ("max_speed_kmh", json!(max_speed_kmh)),
                                ("from_country", json!(from)),
                                ("to_country", json!(country)),
                                ("prefix", json!(prefix.to_string())),
                            ]),
                        });
                    }
                }
            }
            family.last_loc = Some((loc.0, loc.1, seen_ms, country));
        }
    }

    fn check_signals(&self, st: &mut State, now: i64, fires: &mut Vec<Fire>) {
        let signals = std::mem::take(&mut st.spare_signals);
        for m in &signals.mismatches {
            for (i, _) in self.rules_of(RuleKind::KeyChange) {
                fires.push(Fire {
                    rule: i,
                    subject: Subject::Session {
                        session: m.session.clone(),
                        user: m.user.clone(),
                    },
                    started_ms: m.at_ms,
                    evidence: evidence(vec![
                        ("source", json!("signal")),
                        ("prefix", json!(Prefix::of(m.ip).to_string())),
                    ]),
                });
            }
        }
        for (key, count) in &signals.refusals {
            let Some(stats) = seen_or_insert(&mut st.refusals, key, || RefStats {
                slots: VecDeque::new(),
                last_ms: now,
            }) else {
                continue;
            };
            stats.last_ms = now;
            stats.slots.push_back((now, *count));
            while stats
                .slots
                .front()
                .is_some_and(|(end, _)| *end <= now - self.keep_ms)
            {
                stats.slots.pop_front();
            }
            let scope = match key {
                RefKey::Ip(_) => Scope::Ip,
                RefKey::Client(_) => Scope::Client,
                RefKey::User(_) => Scope::User,
            };
            for (i, rule) in self.rules_of(RuleKind::Refusals) {
                let RuleParams::Refusals { window, min_count } = rule.params else {
                    continue;
                };
                if rule.scope != scope {
                    continue;
                }
                let w = ms(window);
                let mut sum = RefCount {
                    first_ms: now,
                    ..RefCount::default()
                };
                for (_, c) in stats
                    .slots
                    .iter()
                    .rev()
                    .take_while(|(end, _)| *end > now - w)
                {
                    sum.token += c.token;
                    sum.proof += c.proof;
                    sum.login += c.login;
                    sum.first_ms = sum.first_ms.min(c.first_ms);
                }
                let total = sum.token + sum.proof + sum.login;
                if total >= min_count {
                    let subject = match key {
                        RefKey::Ip(p) => Subject::Ip(p.to_string()),
                        RefKey::Client(c) => Subject::Client(c.clone()),
                        RefKey::User(u) => Subject::User(u.clone()),
                    };
                    fires.push(Fire {
                        rule: i,
                        subject,
                        started_ms: sum.first_ms,
                        evidence: evidence(vec![
                            ("refusals", json!(total)),
                            ("tokens_refused", json!(sum.token)),
                            ("proofs_refused", json!(sum.proof)),
                            ("logins_failed", json!(sum.login)),
                            ("window_secs", json!(window.as_secs_f64())),
                            ("min_count", json!(min_count)),
                        ]),
                    });
                }
            }
        }
        // Hand the (cleared) maps back for the next swap, keeping their capacity.
        let mut signals = signals;
        signals.refusals.clear();
        signals.mismatches.clear();
        st.spare_signals = signals;
    }

    fn ladder(&self, st: &mut State, fires: Vec<Fire>, now: i64) -> Vec<Finding> {
        let mut out = Vec::new();
        for fire in fires {
            let Some(rule) = self.config.rules.get(fire.rule) else {
                continue;
            };
            let key = format!("{}:{}", rule.name, fire.subject);
            let step = match st.incidents.get_mut(&key) {
                None => {
                    st.incidents.insert(
                        key.clone(),
                        Incident {
                            rule: fire.rule,
                            subject: fire.subject.clone(),
                            step: 0,
                            opened_ms: now,
                            started_ms: fire.started_ms,
                            last_step_ms: now,
                            last_fire_ms: now,
                        },
                    );
                    Some(0)
                }
                Some(inc) => {
                    inc.last_fire_ms = now;
                    let due = now - inc.last_step_ms >= ms(rule.escalate_after);
                    if inc.step + 1 < rule.ladder.len() && due {
                        inc.step += 1;
                        inc.last_step_ms = now;
                        Some(inc.step)
                    } else {
                        None
                    }
                }
            };
            let Some(step) = step else { continue };
            let Some(action) = rule.ladder.get(step) else {
                continue;
            };
            tracing::info!(rule = %rule.name, kind = %rule.kind, action = %action, step, incident = %key, "monitor finding");
            out.push(Finding {
                rule: rule.name.clone(),
                kind: rule.kind,
                subject: fire.subject,
                action: *action,
                step,
                incident: key,
                evidence: fire.evidence,
                started_ms: fire.started_ms,
                at_ms: now,
            });
        }
        let rules = &self.config.rules;
        let mut quiet_families = Vec::new();
        st.incidents.retain(|_, inc| {
            let open = rules
                .get(inc.rule)
                .is_some_and(|r| now - inc.last_fire_ms < ms(r.cooldown));
            if !open && rules.get(inc.rule).map(|r| r.kind) == Some(RuleKind::NewNetwork) {
                if let Subject::Session { session, .. } = &inc.subject {
                    quiet_families.push(session.clone());
                }
            }
            open
        });
        // A new network known only by its prefix was alerted once and then went quiet:
        // it joins the family's networks, so a mobile user's second network alerts once,
        // not every cooldown. A network in a new country stays flagged until acknowledged.
        for session in quiet_families {
            if let Some(f) = st.families.get_mut(&session) {
                let pending = std::mem::take(&mut f.pending);
                for (prefix, country) in pending {
                    if country.is_none() {
                        remember(&mut f.prefixes, prefix, now);
                    } else {
                        f.pending.push((prefix, country));
                    }
                }
            }
        }
        out
    }

    /// Operator acknowledgement: closes `incident` (a [`Finding::incident`] key) so its
    /// ladder restarts at step 0. For a new-network incident the family's flagged networks
    /// become known; for a spike the baseline may learn the new rate at full speed.
    /// With replicas, the acknowledgement travels in this replica's next delta and
    /// closes the incident on the others too.
    pub fn reset_incident(&self, incident: &str) {
        if let Ok(mut resets) = self.resets.lock() {
            if resets.len() < MAX_MISMATCHES {
                resets.push(incident.to_owned());
            }
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let now = self.clock.now_ms();
        self.reset_in(&mut st, incident, now);
    }

    fn reset_in(&self, st: &mut State, incident: &str, now: i64) {
        let Some(inc) = st.incidents.remove(incident) else {
            return;
        };
        let kind = self.config.rules.get(inc.rule).map(|r| r.kind);
        match (&inc.subject, kind) {
            (Subject::Session { session, .. }, Some(RuleKind::NewNetwork)) => {
                if let Some(f) = st.families.get_mut(session) {
                    for (prefix, country) in std::mem::take(&mut f.pending) {
                        remember(&mut f.prefixes, prefix, now);
                        if let Some(c) = country {
                            remember(&mut f.countries, c, now);
                        }
                    }
                }
            }
            (Subject::User(u), Some(RuleKind::Spike)) => {
                if let Some(s) = st.users.get_mut(u) {
                    s.hot_until_ms = i64::MIN;
                }
            }
            (Subject::Route(r), Some(RuleKind::Spike)) => {
                if let Some(s) = st.routes.get_mut(r) {
                    s.hot_until_ms = i64::MIN;
                }
            }
            _ => {}
        }
    }

    /// The state for the console: rates, baselines, costs, GeoIP status, drops, incidents.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.clock.now_ms();
        let geoip = match &self.geo {
            None => "none: prefix rules only".to_owned(),
            Some(db) => db.path().display().to_string(),
        };
        let impossible_travel = match &self.geo {
            None => "inactive: no GeoIP database".to_owned(),
            Some(db) if !db.has_locations() => {
                "inactive: the GeoIP database has no locations".to_owned()
            }
            Some(_) => "active".to_owned(),
        };
        let d = &self.dropped;
        let mut dropped = DroppedCounts {
            users: d.users.load(Ordering::Relaxed),
            routes: d.routes.load(Ordering::Relaxed),
            sessions: d.sessions.load(Ordering::Relaxed),
            addresses: d.addresses.load(Ordering::Relaxed),
            signals: d.signals.load(Ordering::Relaxed),
            forgotten: 0,
            stale_deltas: d.stale.load(Ordering::Relaxed),
        };
        let mut users = Vec::new();
        let mut routes = Vec::new();
        let mut incidents = Vec::new();
        if let Ok(st) = self.state.lock() {
            dropped.forgotten = st.forgotten;
            let today = now.div_euclid(DAY_MS);
            let row = |name: String, s: &Stats| {
                let (calls, _) = s.window(now, 60_000, None);
                let base = self.baseline(s, now);
                SubjectSnapshot {
                    name,
                    rate_per_min: calls as f64,
                    baseline_per_min: round1(base.per_min),
                    baseline_counts: base.counts,
                    cost_today: if s.day == today { s.cost_day } else { 0 },
                }
            };
            users = st
                .users
                .iter()
                .map(|(u, s)| row(u.to_string(), s))
                .collect();
            routes = st
                .routes
                .iter()
                .map(|(r, s)| row(r.to_string(), s))
                .collect();
            for (key, inc) in &st.incidents {
                let Some(rule) = self.config.rules.get(inc.rule) else {
                    continue;
                };
                incidents.push(IncidentSnapshot {
                    incident: key.clone(),
                    rule: rule.name.clone(),
                    kind: rule.kind,
                    subject: inc.subject.clone(),
                    step: inc.step,
                    action: rule
                        .ladder
                        .get(inc.step)
                        .map_or("", |a| a.as_str())
                        .to_owned(),
                    opened_ms: inc.opened_ms,
                    started_ms: inc.started_ms,
                    last_fired_ms: inc.last_fire_ms,
                });
            }
        }
        users.sort_by(|a, b| a.name.cmp(&b.name));
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            at_ms: now,
            enabled: self.config.enabled,
            interval_ms: u64::try_from(self.interval_ms).unwrap_or(0),
            geoip,
            impossible_travel,
            users,
            routes,
            dropped,
            incidents,
        }
    }
}

/// The entry for `key`, cloning the key only when it is new (evaluation runs every
/// interval over every active subject; most are already known).
fn seen_or_insert<'m, K: Hash + Eq + Clone, V, S: BuildHasher>(
    map: &'m mut HashMap<K, V, S>,
    key: &K,
    fresh: impl FnOnce() -> V,
) -> Option<&'m mut V> {
    if !map.contains_key(key) {
        map.insert(key.clone(), fresh());
    }
    map.get_mut(key)
}

/// Adds or refreshes `item` in a bounded history, forgetting the least recent entry.
fn remember<T: PartialEq>(list: &mut Vec<(T, i64)>, item: T, at: i64) {
    if let Some(entry) = list.iter_mut().find(|(k, _)| *k == item) {
        entry.1 = at;
        return;
    }
    if list.len() >= FAMILY_HISTORY {
        if let Some(oldest) = list
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, t))| *t)
            .map(|(i, _)| i)
        {
            list.swap_remove(oldest);
        }
    }
    list.push((item, at));
}

impl UsageSink for Monitor {
    fn record(&self, event: UsageEvent) {
        self.observe(&event);
    }

    fn record_ref(&self, event: &UsageEvent) {
        self.observe(event);
    }
}

#[cfg(test)]
mod hashing_tests {
    use super::*;

    /// Compiles only for a map hashed by std's keyed SipHash.
    fn keyed_sip<K, V>(_: &HashMap<K, V, std::hash::RandomState>) {}

    #[test]
    fn refusals_by_network_keep_keyed_hashing() {
        // Refusals are keyed partly by address prefixes a caller picks: never an `IdMap`
        // (ARCHITECTURE.md, Invariants).
        keyed_sip(&SignalAccum::default().refusals);
        keyed_sip(&State::default().refusals);
    }
}
