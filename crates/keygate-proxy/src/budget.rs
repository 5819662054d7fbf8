//! Per-user cost budgets: `budget = { daily = N, monthly = M }` on a route, in the units
//! of its `cost` (see [`crate::meter`]).
//!
//! [`Budgets`] is both halves of the loop:
//! - the check, which [`crate::LimitGate::admit`] runs after the rate limit and before
//!   the quota, so that a call over budget never reaches the upstream. It reads spending
//!   through a small cache (at most one ledger read per user and route per `ttl`, and
//!   only for routes that have a budget), and fails closed when the ledger cannot answer;
//! - a [`UsageSink`] that sums the metered cost of finished calls per (user, route, UTC
//!   day) in memory, for its owner to [`Budgets::take`] and write to the shared ledger
//!   (the server does so once a second), and adds them at once to the cached spending,
//!   so this replica's own calls count without waiting for the flush.
//!
//! # How far a user can overshoot
//!
//! A call is admitted before its cost is known, so a budget is a soft limit. Spending can
//! exceed it by at most
//! - the cost of the user's calls in flight when it was crossed (each admitted while
//!   the spending was still below the budget), plus
//! - the cost of calls that finished within one flush interval plus one cache `ttl`
//!   before the check on *other* replicas (not yet written, or written after this
//!   replica's cached read), plus those finished on this replica within one flush
//!   interval before its cache entry was read.
//!
//! With the server's 1 s flush and 1 s `ttl`, that is the calls in flight plus about two
//! seconds of the user's calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keygate_auth::ids::{IdMap, IdSet, UserId};

use crate::error::{BudgetWindow, ProxyError};
use crate::limit::QuotaWindow;
use crate::path::RouteName;
use crate::route::{AuthorizedCall, QuotaPeriod};
use crate::usage::{UsageEvent, UsageSink};

const DAY: u64 = 86_400;

/// What a user has spent on a route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spent {
    /// In the current UTC day.
    pub day: u64,
    /// In the current UTC calendar month, today included.
    pub month: u64,
}

/// The spending ledger could not answer; budgeted calls are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("budget ledger unavailable")]
pub struct BudgetUnavailable;

/// Where spending is kept, shared by every replica (the store in the server).
#[async_trait::async_trait]
pub trait BudgetLedger: Send + Sync {
    /// What `user` spent on `route` on day `today` and on the days
    /// `month_first_day..=today` (days since the Unix epoch, UTC).
    async fn spent(
        &self,
        user: &UserId,
        route: &RouteName,
        month_first_day: i64,
        today: i64,
    ) -> Result<Spent, BudgetUnavailable>;
}

/// Cost summed for one (user, route, UTC day), to add to the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetSpend {
    /// The user.
    pub user: UserId,
    /// The route.
    pub route: RouteName,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Cost units.
    pub cost: u64,
}

/// An in-process ledger (tests, single-process embedding). Add with
/// [`InMemoryBudgetLedger::add`].
#[derive(Debug, Default)]
pub struct InMemoryBudgetLedger {
    days: Mutex<HashMap<(UserId, RouteName, i64), u64>>,
}

impl InMemoryBudgetLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds spending.
    pub fn add(&self, rows: Vec<BudgetSpend>) {
        if let Ok(mut days) = self.days.lock() {
            for r in rows {
                let slot = days.entry((r.user, r.route, r.day)).or_default();
                *slot = slot.saturating_add(r.cost);
            }
        }
    }
}

#[async_trait::async_trait]
impl BudgetLedger for InMemoryBudgetLedger {
    async fn spent(
        &self,
        user: &UserId,
        route: &RouteName,
        month_first_day: i64,
        today: i64,
    ) -> Result<Spent, BudgetUnavailable> {
        self.days.lock().map_err(|_| BudgetUnavailable).map(|days| {
            let mut spent = Spent::default();
            for ((u, r, d), cost) in days.iter() {
                if u == user && r == route && (month_first_day..=today).contains(d) {
                    spent.month = spent.month.saturating_add(*cost);
                    if *d == today {
                        spent.day = spent.day.saturating_add(*cost);
                    }
                }
            }
            spent
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Cached {
    day: i64,
    spent: Spent,
    read_at: Instant,
}

#[derive(Default)]
struct Pending {
    /// route → user → (day, cost): nested so that recording looks keys up by reference.
    sums: IdMap<RouteName, IdMap<UserId, (i64, u64)>>,
    keys: usize,
    /// Sums of a day that ended before they were taken.
    rolled: Vec<BudgetSpend>,
}

/// Cost budgets: the check and the spending sink (see the module documentation).
pub struct Budgets {
    ledger: Arc<dyn BudgetLedger>,
    ttl: Duration,
    max_keys: usize,
    /// route → user → spending as last read plus what this replica recorded since.
    cache: Mutex<IdMap<RouteName, IdMap<UserId, Cached>>>,
    cached: AtomicU64,
    pending: Mutex<Pending>,
    /// Routes a budget was checked on: only their events are summed.
    routes: RwLock<IdSet<RouteName>>,
    /// Whether `routes` is non-empty: while no route has a budget, recording an event
    /// takes no lock.
    any_route: AtomicBool,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("ttl", &self.ttl)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

fn days_of(secs: u64) -> i64 {
    i64::try_from(secs / DAY).unwrap_or(i64::MAX)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Budgets {
    /// Budgets over `ledger`, caching spending for `ttl` and holding at most `max_keys`
    /// (user, route) pairs in the cache and in the unflushed sums (beyond that, checks
    /// read the ledger uncached and costs are counted as dropped).
    pub fn new(ledger: Arc<dyn BudgetLedger>, ttl: Duration, max_keys: usize) -> Self {
        Self {
            ledger,
            ttl,
            max_keys: max_keys.max(1),
            cache: Mutex::default(),
            cached: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            routes: RwLock::default(),
            any_route: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }
    }

    /// Refuses `call` when its user's budget on its route is used up; `Ok` for routes
    /// without a budget.
    pub async fn check(&self, call: &AuthorizedCall) -> Result<(), ProxyError> {
        self.check_at(call, now_unix()).await
    }

    /// [`Self::check`] at `now` (Unix seconds).
    pub async fn check_at(&self, call: &AuthorizedCall, now: u64) -> Result<(), ProxyError> {
        let route = call.route();
        let Some(budget) = route.budget() else {
            return Ok(());
        };
        let name = route.name();
        self.register(name);
        let today = days_of(now);
        let month = QuotaWindow::containing(QuotaPeriod::Month, now);
        let spent = match self.cached(name, call.user(), today) {
            Some(spent) => spent,
            None => {
                let spent = self
                    .ledger
                    .spent(call.user(), name, days_of(month.start), today)
                    .await
                    .map_err(|BudgetUnavailable| {
                        tracing::error!(route = %name, "budget ledger unavailable; refusing budgeted calls");
                        ProxyError::Unavailable("budget ledger")
                    })?;
                self.remember(name, call.user(), today, spent);
                spent
            }
        };
        let monthly_out = budget.monthly.is_some_and(|m| spent.month >= m);
        let daily_out = budget.daily.is_some_and(|d| spent.day >= d);
        let (window, end) = if monthly_out {
            (BudgetWindow::Monthly, month.end)
        } else if daily_out {
            (BudgetWindow::Daily, now - now % DAY + DAY)
        } else {
            return Ok(());
        };
        Err(ProxyError::BudgetExhausted {
            window,
            retry_after: Duration::from_secs(end.saturating_sub(now).max(1)),
        })
    }

    fn register(&self, route: &RouteName) {
        let known = self
            .routes
            .read()
            .map(|r| r.contains(route))
            .unwrap_or(false);
        if !known {
            if let Ok(mut routes) = self.routes.write() {
                routes.insert(route.clone());
                self.any_route.store(true, Ordering::Release);
            }
        }
    }

    fn cached(&self, route: &RouteName, user: &UserId, today: i64) -> Option<Spent> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(route)?.get(user)?;
        (entry.day == today && entry.read_at.elapsed() < self.ttl).then_some(entry.spent)
    }

    fn remember(&self, route: &RouteName, user: &UserId, today: i64, spent: Spent) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let entry = Cached {
            day: today,
            spent,
            read_at: Instant::now(),
        };
        if let Some(slot) = cache.get_mut(route).and_then(|users| users.get_mut(user)) {
            *slot = entry;
            return;
        }
        if self.cached.load(Ordering::Relaxed) as usize >= self.max_keys {
            let ttl = self.ttl;
            for users in cache.values_mut() {
                users.retain(|_, c| c.read_at.elapsed() < ttl);
            }
            cache.retain(|_, users| !users.is_empty());
            let live: usize = cache.values().map(IdMap::len).sum();
            self.cached.store(live as u64, Ordering::Relaxed);
            if live >= self.max_keys {
                return;
            }
        }
        cache
            .entry(route.clone())
            .or_default()
            .insert(user.clone(), entry);
        self.cached.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything summed since the last call, to add to the ledger.
    pub fn take(&self) -> Vec<BudgetSpend> {
        let Ok(mut pending) = self.pending.lock() else {
            return Vec::new();
        };
        let taken = std::mem::take(&mut *pending);
        drop(pending);
        let mut out = taken.rolled;
        for (route, users) in taken.sums {
            for (user, (day, cost)) in users {
                out.push(BudgetSpend {
                    user,
                    route: route.clone(),
                    day,
                    cost,
                });
            }
        }
        out
    }

    /// Puts back spending that could not be written, to be taken again with the next
    /// batch (the cache already counts it).
    pub fn restore(&self, rows: Vec<BudgetSpend>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.rolled.extend(rows);
        }
    }

    /// Costs dropped because the key limit was reached between two takes.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn add(&self, route: &RouteName, user: &UserId, day: i64, cost: u64) {
        let Ok(mut pending) = self.pending.lock() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let pending = &mut *pending;
        let existing = pending
            .sums
            .get_mut(route)
            .and_then(|users| users.get_mut(user));
        match existing {
            Some(slot) if slot.0 == day => slot.1 = slot.1.saturating_add(cost),
            Some(slot) => {
                // A new UTC day began since the last take: set the old day's sum aside.
                let (old_day, old_cost) = std::mem::replace(slot, (day, cost));
                pending.rolled.push(BudgetSpend {
                    user: user.clone(),
                    route: route.clone(),
                    day: old_day,
                    cost: old_cost,
                });
            }
            None if pending.keys < self.max_keys => {
                pending
                    .sums
                    .entry(route.clone())
                    .or_default()
                    .insert(user.clone(), (day, cost));
                pending.keys += 1;
            }
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl UsageSink for Budgets {
    fn record(&self, event: UsageEvent) {
        self.record_ref(&event);
    }

    /// Sums the event's cost when its route has a budget: no clone of the event, and no
    /// key clone unless the (user, route) pair is new since the last take.
    fn record_ref(&self, event: &UsageEvent) {
        self.record_on(event, now_unix());
    }
}

impl Budgets {
    /// Adds `event`'s cost to the day of `now` (seconds since the epoch): what
    /// [`UsageSink::record_ref`] does with the wall clock, and tests with theirs.
    fn record_on(&self, event: &UsageEvent, now: u64) {
        if event.cost == 0 || !self.any_route.load(Ordering::Acquire) {
            return;
        }
        let budgeted = self
            .routes
            .read()
            .map(|r| r.contains(&event.route))
            .unwrap_or(false);
        if !budgeted {
            return;
        }
        let today = days_of(now);
        self.add(&event.route, &event.user, today, event.cost);
        if let Ok(mut cache) = self.cache.lock() {
            if let Some(entry) = cache
                .get_mut(&event.route)
                .and_then(|users| users.get_mut(&event.user))
                .filter(|e| e.day == today)
            {
                entry.spent.day = entry.spent.day.saturating_add(event.cost);
                entry.spent.month = entry.spent.month.saturating_add(event.cost);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::ProxyTarget;
    use crate::route::RouteTable;
    use crate::usage::StatusClass;
    use keygate_auth::ids::{ClientId, SessionId};

    fn event(user: &str, route: &str, cost: u64) -> UsageEvent {
        UsageEvent {
            user: UserId::parse(user).unwrap(),
            client: ClientId::parse("c").unwrap(),
            session: SessionId::parse("s").unwrap(),
            jkt: None,
            client_ip: std::net::IpAddr::from([192, 0, 2, 1]),
            cost,
            route: RouteName::parse(route).unwrap(),
            status_class: StatusClass::Success,
            latency: Duration::from_millis(1),
            fault: None,
            tier: keygate_auth::access::TrustTier::Unattested,
        }
    }

    #[test]
    fn sums_per_user_route_and_day_and_bounds_keys() {
        let b = Budgets::new(
            Arc::new(InMemoryBudgetLedger::new()),
            Duration::from_secs(1),
            2,
        );
        let r = RouteName::parse("r").unwrap();
        b.register(&r);
        b.record_ref(&event("u1", "r", 5));
        b.record_ref(&event("u1", "r", 7));
        b.record_ref(&event("u1", "other", 100));
        b.record_ref(&event("u2", "r", 0));
        b.record_ref(&event("u2", "r", 1));
        b.record_ref(&event("u3", "r", 1));
        assert_eq!(b.dropped(), 1, "a third pair is over the bound");
        let mut rows = b.take();
        rows.sort_by(|a, b| a.user.as_str().cmp(b.user.as_str()));
        let costs: Vec<_> = rows.iter().map(|r| (r.user.as_str(), r.cost)).collect();
        assert_eq!(
            costs,
            vec![("u1", 12), ("u2", 1)],
            "unbudgeted routes are not summed"
        );
        assert!(b.take().is_empty(), "take drains");
        b.restore(rows);
        assert_eq!(b.take().len(), 2, "restored rows are taken again");
    }

    fn call_on(table: &RouteTable, user: &str) -> AuthorizedCall {
        let route = table.iter().next().unwrap().clone();
        let target = ProxyTarget::parse("/proxy/", "/proxy/r/a").unwrap();
        AuthorizedCall::for_tests(route, target, UserId::parse(user).unwrap())
    }

    #[tokio::test]
    async fn budget_refuses_at_the_limit_naming_the_window() {
        let table = RouteTable::from_toml(
            "[routes.r]\nupstream = \"https://u.example\"\nsecret = \"s\"\ninject = { query = \"k\" }\nallow = [\"GET /a\"]\nbudget = { daily = 10, monthly = 15 }\n",
        )
        .unwrap();
        let ledger = Arc::new(InMemoryBudgetLedger::new());
        let b = Budgets::new(ledger.clone(), Duration::from_secs(3600), 100);
        // 2026-12-06T12:00:00Z
        let now = 1_796_558_400;
        let day = days_of(now);
        let alice = call_on(&table, "alice");
        assert!(b.check_at(&alice, now).await.is_ok());
        // Recorded on this replica: counted at once through the cache. On the test's
        // clock: the wall clock's day would not be the one checked.
        b.record_on(&event("alice", "r", 10), now);
        let refused = b.check_at(&alice, now).await.unwrap_err();
        assert!(
            matches!(
                refused,
                ProxyError::BudgetExhausted { window: BudgetWindow::Daily, retry_after }
                    if retry_after == Duration::from_secs(12 * 3600)
            ),
            "{refused:?}"
        );
        assert_eq!(refused.code(), "budget_exhausted");
        assert!(
            b.check_at(&call_on(&table, "bob"), now).await.is_ok(),
            "bob is unaffected"
        );
        // Spending earlier in the month (another replica's, read from the ledger).
        ledger.add(vec![BudgetSpend {
            user: UserId::parse("carol").unwrap(),
            route: RouteName::parse("r").unwrap(),
            day: day - 3,
            cost: 15,
        }]);
        let refused = b
            .check_at(&call_on(&table, "carol"), now)
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                ProxyError::BudgetExhausted { window: BudgetWindow::Monthly, retry_after }
                    if retry_after == Duration::from_secs((25 * 24 + 12) * 3600)
            ),
            "{refused:?}"
        );
        // The next day starts over for alice.
        assert!(b.check_at(&alice, now + 12 * 3600).await.is_ok());
    }

    struct Down;
    #[async_trait::async_trait]
    impl BudgetLedger for Down {
        async fn spent(
            &self,
            _: &UserId,
            _: &RouteName,
            _: i64,
            _: i64,
        ) -> Result<Spent, BudgetUnavailable> {
            Err(BudgetUnavailable)
        }
    }

    #[tokio::test]
    async fn an_unreachable_ledger_refuses_budgeted_calls_only() {
        let b = Budgets::new(Arc::new(Down), Duration::from_secs(1), 100);
        let budgeted = RouteTable::from_toml(
            "[routes.r]\nupstream = \"https://u.example\"\nsecret = \"s\"\ninject = { query = \"k\" }\nallow = [\"GET /a\"]\nbudget = { daily = 10 }\n",
        )
        .unwrap();
        let err = b
            .check_at(&call_on(&budgeted, "alice"), 1_000_000)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "unavailable");
        let free = RouteTable::from_toml(
            "[routes.r]\nupstream = \"https://u.example\"\nsecret = \"s\"\ninject = { query = \"k\" }\nallow = [\"GET /a\"]\n",
        )
        .unwrap();
        assert!(
            b.check_at(&call_on(&free, "alice"), 1_000_000)
                .await
                .is_ok()
        );
    }
}
