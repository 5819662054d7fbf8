//! Identical replicas acting as one gatekeeper, over Redis (`[coordination]`).
//!
//! Three things are shared beyond the store:
//!
//! - **Rate limits** ([`RedisRateLimiter`]): the same GCRA step as the in-process limiter,
//!   in one Lua script (one round trip, atomic, on Redis's own clock so replicas' clocks
//!   do not matter). Every rate-limited call asks Redis: there is no local fast path, so
//!   the cluster admits exactly what one process would (the bound is zero), at the cost
//!   of one round trip per call.
//! - **The DPoP replay cache** ([`RedisReplay`]): `SET NX PX` on the proof's key, so a
//!   proof accepted by one replica is refused by every other.
//! - **Change announcements** ([`Coordinator::fan_out`]): every security-relevant write a
//!   replica commits (revocations, disabled users, removed clients, secret versions,
//!   routes, policies, keys) is published on one channel; every other replica bumps its
//!   store's change epoch at once, so each cache keyed to it (revocation answers, route
//!   keys) reads again on the next call. A replica that (re)subscribes bumps it too, as it
//!   may have missed announcements while disconnected.
//!
//! - **Quotas** ([`RedisQuota`]): each window's counter in Redis (one Lua script per
//!   counted call), seeded from the store and copied to it every second, so a Redis that
//!   loses its counters costs at most the last second's counts; while Redis is down the
//!   store counts directly, exactly as without coordination.
//! - **The monitor** ([`RedisMonitorPeers`]): each replica's interval counts go on a
//!   stream every other replica folds in, so every replica evaluates the cluster's
//!   traffic; one replica claims each incident step and records it (one alert per
//!   incident, not one per replica), and every replica applies its throttles.
//!
//! Fail rules (S35): Redis down → each replica limits alone to `1/replicas` of each rate
//! (`LimitGate`'s degraded fallback), never unlimited; DPoP calls get 503 (the replay
//! cache fails closed: no other cache knows which proofs Redis has seen); revocations
//! made elsewhere are seen within the revocation cache's bound (1 s) instead of at once;
//! and `/readyz` answers `degraded`. Everything
//! returns to normal when Redis answers again, without a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keygate_auth::UnixTime;
use keygate_auth::dpop::{Freshness, ReplayCache, ReplayCacheUnavailable, ReplayKey};
use keygate_proxy::limit::{LimitKey, LimiterUnavailable, RateDecision, RateLimiter, RatePolicy};
use keygate_store::Store;
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;
use sha2::Digest as _;
use tokio::sync::watch;

use crate::config::CoordinationSettings;

/// One GCRA step on Redis's clock, atomically: KEYS[1] holds the theoretical arrival
/// time (µs); ARGV[1] the emission interval and ARGV[2] the tolerance (µs). Answers
/// `{1, reset_µs, remaining}` or `{0, retry_after_µs}`. The key expires when the bucket
/// is full again, so idle users cost nothing.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local ahead = tat - now
if ahead > tolerance then
  return {0, ahead - tolerance}
end
local new_tat = tat + emission
local new_ahead = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor(new_ahead / 1000) + 1)
local remaining = math.floor((tolerance + emission - new_ahead) / emission)
if remaining < 0 then remaining = 0 end
return {1, new_ahead, remaining}
";

/// One quota count on Redis: KEYS[1] is the window's counter, ARGV[1] the limit. Answers
/// the requests left after counting this one, -1 when the window is used up (nothing
/// counted), or -2 when the counter does not exist yet (it is seeded from the store).
const QUOTA: &str = r"
local used = redis.call('GET', KEYS[1])
if not used then return -2 end
if tonumber(used) >= tonumber(ARGV[1]) then return -1 end
return tonumber(ARGV[1]) - redis.call('INCR', KEYS[1])
";

/// What went wrong, by kind only: a Redis error's text can carry connection details.
fn why(e: &redis::RedisError) -> String {
    format!("{:?}", e.kind())
}

/// The client for `settings`: over TLS with `rediss://`, trusting `ca` (else the system's
/// roots) and presenting `client_cert` when set.
fn client(settings: &CoordinationSettings) -> anyhow::Result<redis::Client> {
    let url = settings.redis_url.expose_secret();
    let tls = &settings.tls;
    if tls.ca.is_none() && tls.client.is_none() {
        return redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("coordination.redis: {}", why(&e)));
    }
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("coordination.{what}: {}: {e}", path.display()))
    };
    let root_cert = tls.ca.as_deref().map(|p| read("ca", p)).transpose()?;
    let client_tls = match &tls.client {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read("client_cert", cert)?,
            client_key: read("client_key", key)?,
        }),
        None => None,
    };
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| anyhow::anyhow!("coordination: the TLS settings for Redis: {}", why(&e)))
}

/// The Redis side of a replica.
pub struct Coordinator {
    settings: CoordinationSettings,
    client: redis::Client,
    /// `None` until the first connection succeeds (a start with `required = false`).
    conn: RwLock<Option<ConnectionManager>>,
    /// The last command answered; false after a failure until one succeeds.
    healthy: AtomicBool,
    /// Subscribed to the change channel: announcements from others arrive.
    subscribed: AtomicBool,
    /// Tags this replica's announcements, so it ignores its own.
    replica_id: String,
    /// When a first connection last failed: calls meanwhile fail at once instead of each
    /// waiting for a connect timeout.
    failed_connect: std::sync::Mutex<Option<std::time::Instant>>,
    gcra: redis::Script,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("settings", &self.settings)
            .field("replica_id", &self.replica_id)
            .finish_non_exhaustive()
    }
}

/// Redis did not answer in time, or answered with an error.
#[derive(Debug, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct Unavailable(String);

impl Coordinator {
    /// Connects to Redis. An unreachable Redis is an error when `required`; otherwise the
    /// coordinator starts degraded and connects in the background
    /// ([`Coordinator::fan_out`] keeps trying).
    pub async fn connect(settings: CoordinationSettings) -> anyhow::Result<Arc<Self>> {
        let client = client(&settings)?;
        let replica_id = hex::encode(keygate_auth::opaque::random_bytes::<8>());
        let coordinator = Arc::new(Self {
            settings,
            client,
            conn: RwLock::new(None),
            healthy: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            replica_id,
            failed_connect: std::sync::Mutex::new(None),
            gcra: redis::Script::new(GCRA),
        });
        match coordinator.ensure_connected().await {
            Ok(_) => {}
            Err(e) if coordinator.settings.required => {
                anyhow::bail!(
                    "coordination.redis: cannot reach Redis ({e}); set coordination.required = false to start degraded"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "Redis unreachable at start: limits are local shares until it answers");
            }
        }
        Ok(coordinator)
    }

    /// Whether Redis answered the last command and the change channel is subscribed.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst) && self.subscribed.load(Ordering::SeqCst)
    }

    /// The replica share each local fallback limit gets.
    pub fn replicas(&self) -> u32 {
        self.settings.replicas
    }

    fn key(&self, kind: &str, raw: &[u8]) -> String {
        // Hashed: limit keys carry user ids, replay keys proof material; Redis needs
        // neither in clear.
        let digest = sha2::Sha256::digest(raw);
        format!(
            "{}:{kind}:{}",
            self.settings.key_prefix,
            hex::encode(digest.get(..16).unwrap_or_default())
        )
    }

    fn channel(&self) -> String {
        format!("{}:changes", self.settings.key_prefix)
    }

    async fn ensure_connected(&self) -> Result<ConnectionManager, Unavailable> {
        if let Some(c) = self.conn.read().ok().and_then(|c| c.clone()) {
            return Ok(c);
        }
        let recently_failed = self
            .failed_connect
            .lock()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
        if recently_failed {
            return Err(Unavailable("not connected yet".into()));
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.settings.timeout)
            .set_response_timeout(self.settings.timeout)
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            self.settings.timeout * 4,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| Unavailable("connect timed out".into()))
        .and_then(|r| r.map_err(|e| Unavailable(why(&e))))
        .inspect_err(|_| {
            if let Ok(mut f) = self.failed_connect.lock() {
                *f = Some(std::time::Instant::now());
            }
        })?;
        if let Ok(mut c) = self.conn.write() {
            *c = Some(made.clone());
        }
        self.healthy.store(true, Ordering::SeqCst);
        Ok(made)
    }

    /// Runs one command with the configured timeout, keeping `healthy` current.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.ensure_connected().await.inspect_err(|_| {
            self.healthy.store(false, Ordering::SeqCst);
        })?;
        match tokio::time::timeout(self.settings.timeout, f(conn)).await {
            Ok(Ok(v)) => {
                self.healthy.store(true, Ordering::SeqCst);
                Ok(v)
            }
            Ok(Err(e)) => {
                if self.healthy.swap(false, Ordering::SeqCst) {
                    tracing::warn!(error = %why(&e), "Redis command failed");
                }
                Err(Unavailable(why(&e)))
            }
            Err(_) => {
                if self.healthy.swap(false, Ordering::SeqCst) {
                    tracing::warn!(timeout = ?self.settings.timeout, "Redis did not answer in time");
                }
                Err(Unavailable("timed out".into()))
            }
        }
    }

    /// One GCRA step for `key` under `policy` on Redis.
    pub async fn gcra(
        &self,
        key: &LimitKey,
        policy: &RatePolicy,
    ) -> Result<RateDecision, Unavailable> {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let emission = micros(policy.emission).max(1);
        let tolerance = micros(policy.tolerance);
        let redis_key = self.key("rl", key.as_str().as_bytes());
        let script = &self.gcra;
        let answer: Vec<i64> = self
            .run(|mut conn| async move {
                script
                    .key(redis_key)
                    .arg(emission)
                    .arg(tolerance)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        match answer.as_slice() {
            [1, reset, remaining] => Ok(RateDecision::Allowed {
                remaining: u32::try_from(*remaining).unwrap_or(0),
                reset: us(*reset),
            }),
            [0, retry] => Ok(RateDecision::Limited {
                retry_after: us(*retry).max(Duration::from_micros(1)),
            }),
            _ => Err(Unavailable("unexpected GCRA answer".into())),
        }
    }

    /// Records `key` until `ttl` from now unless present: `true` when it was new.
    pub async fn first_sight(
        &self,
        kind: &str,
        key: &[u8],
        ttl: Duration,
    ) -> Result<bool, Unavailable> {
        let redis_key = self.key(kind, key);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(redis_key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn announce(&self) -> Result<(), Unavailable> {
        let channel = self.channel();
        let id = self.replica_id.clone();
        self.run(|mut conn| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(id)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Announces this replica's security-relevant writes and applies the others' until
    /// `stop`: a write committed here is published; an announcement from another replica
    /// bumps `store`'s change epoch. Reconnects on its own; each (re)subscription bumps
    /// the epoch as well (announcements may have been missed meanwhile).
    pub async fn fan_out(self: Arc<Self>, store: Arc<dyn Store>, stop: watch::Receiver<bool>) {
        let publisher = tokio::spawn(self.clone().publish_loop(store.clone(), stop.clone()));
        self.subscribe_loop(store, stop).await;
        let _ = publisher.await;
    }

    async fn publish_loop(self: Arc<Self>, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
        let notify = store.local_change();
        let mut announced = store.local_changes();
        loop {
            let changed = notify.notified();
            tokio::pin!(changed);
            // Registered before the check, so a write between the two is not missed.
            changed.as_mut().enable();
            let now = store.local_changes();
            if now != announced {
                match self.announce().await {
                    Ok(()) => announced = now,
                    Err(_) => {
                        // Retried until Redis answers; meanwhile other replicas see the
                        // change within their cache bound.
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn subscribe_loop(&self, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
        use futures_util::StreamExt as _;
        let channel = self.channel();
        loop {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                p = tokio::time::timeout(self.settings.timeout * 4, subscribed) => p,
                _ = stop.wait_for(|s| *s) => return,
            };
            match pubsub {
                Ok(Ok(mut pubsub)) => {
                    self.subscribed.store(true, Ordering::SeqCst);
                    // Anything may have changed while this replica was not listening.
                    store.note_external_change();
                    tracing::info!("subscribed to the replicas' change announcements");
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            m = messages.next() => m,
                            _ = stop.wait_for(|s| *s) => return,
                        };
                        let Some(message) = message else { break };
                        let from: String = message.get_payload().unwrap_or_default();
                        if from != self.replica_id {
                            store.note_external_change();
                        }
                    }
                    self.subscribed.store(false, Ordering::SeqCst);
                    tracing::warn!("lost the replicas' change announcements; reconnecting");
                }
                Ok(Err(e)) => {
                    self.subscribed.store(false, Ordering::SeqCst);
                    tracing::debug!(error = %why(&e), "subscribing to change announcements failed");
                }
                Err(_) => self.subscribed.store(false, Ordering::SeqCst),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Deltas kept in the monitor's stream: enough for every replica to catch up after a
/// few missed intervals, trimmed approximately (cheap).
const MONITOR_STREAM_LEN: usize = 10_000;

/// The monitor's exchange between replicas: each interval's delta goes on one Redis
/// stream (`PREFIX:monitor:deltas`, tagged with the replica), every replica reads the
/// stream from where it last stopped and skips its own entries; incident steps are
/// claimed with `SET NX PX` on a hashed key. While Redis cannot be reached each replica
/// evaluates alone and acts on what it finds (possibly duplicating another's alert); its
/// cursor stays put, so it catches up with what it can still read, and the monitor drops
/// what has grown stale.
pub struct RedisMonitorPeers {
    coordinator: Arc<Coordinator>,
    /// The last stream id read; empty until the first read fixes a start on Redis's clock.
    cursor: tokio::sync::Mutex<String>,
}

impl RedisMonitorPeers {
    pub fn new(coordinator: Arc<Coordinator>) -> Self {
        Self {
            coordinator,
            cursor: tokio::sync::Mutex::new(String::new()),
        }
    }

    fn stream(&self) -> String {
        format!("{}:monitor:deltas", self.coordinator.settings.key_prefix)
    }

    fn claim_key(&self, incident: &str, step: usize) -> String {
        // Hashed: incident keys name users and sessions.
        self.coordinator
            .key("mclaim", format!("{incident}\n{step}").as_bytes())
    }
}

#[async_trait::async_trait]
impl crate::monitor::MonitorPeers for RedisMonitorPeers {
    async fn receive(&self) -> Vec<keygate_monitor::Delta> {
        use redis::streams::{StreamReadOptions, StreamReadReply};
        let mut cursor = self.cursor.lock().await;
        if cursor.is_empty() {
            // Start at now on Redis's clock: older deltas are another replica's past.
            let time: Result<(u64, u64), _> = self
                .coordinator
                .run(|mut conn| async move { redis::cmd("TIME").query_async(&mut conn).await })
                .await;
            match time {
                Ok((secs, micros)) => *cursor = format!("{}-0", secs * 1000 + micros / 1000),
                Err(_) => return Vec::new(),
            }
        }
        let mut out = Vec::new();
        // A bounded catch-up: at most a few pages per evaluation.
        for _ in 0..8 {
            let stream = self.stream();
            let from = cursor.clone();
            let reply: Result<StreamReadReply, _> = self
                .coordinator
                .run(|mut conn| async move {
                    redis::AsyncCommands::xread_options(
                        &mut conn,
                        &[stream],
                        &[from],
                        &StreamReadOptions::default().count(256),
                    )
                    .await
                })
                .await;
            let Ok(reply) = reply else { break };
            let entries: Vec<redis::streams::StreamId> =
                reply.keys.into_iter().flat_map(|k| k.ids).collect();
            let full = entries.len() >= 256;
            for entry in entries {
                *cursor = entry.id.clone();
                let from: Option<String> = entry.get("r");
                if from.as_deref() == Some(self.coordinator.replica_id.as_str()) {
                    continue;
                }
                let Some(json) = entry.get::<String>("d") else {
                    continue;
                };
                match serde_json::from_str(&json) {
                    Ok(delta) => out.push(delta),
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable monitor delta from another replica was skipped");
                    }
                }
            }
            if !full {
                break;
            }
        }
        out
    }

    async fn publish(&self, delta: &keygate_monitor::Delta) {
        let Ok(json) = serde_json::to_string(delta) else {
            return;
        };
        let stream = self.stream();
        let id = self.coordinator.replica_id.clone();
        let sent: Result<String, _> = self
            .coordinator
            .run(|mut conn| async move {
                redis::cmd("XADD")
                    .arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(MONITOR_STREAM_LEN)
                    .arg("*")
                    .arg("r")
                    .arg(id)
                    .arg("d")
                    .arg(json)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "this replica's monitor interval was not shared");
        }
    }

    async fn claim(&self, incident: &str, step: usize, ttl: Duration) -> bool {
        let key = self.claim_key(incident, step);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let id = self.coordinator.replica_id.clone();
        let set: Result<Option<String>, _> = self
            .coordinator
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(id)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match set {
            Ok(claimed) => claimed.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, %incident, "could not claim a monitor finding; acting on it here");
                true
            }
        }
    }

    async fn release(&self, incident: &str, steps: usize) {
        let keys: Vec<String> = (0..steps.max(1))
            .map(|step| self.claim_key(incident, step))
            .collect();
        let deleted: Result<i64, _> = self
            .coordinator
            .run(|mut conn| async move { redis::cmd("DEL").arg(keys).query_async(&mut conn).await })
            .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, %incident, "could not release an acknowledged incident's claims");
        }
    }
}

/// Quota counters on Redis, copied to the store (see the module docs). A window's counter
/// is seeded from the store the first time any replica counts in it (and again after
/// Redis lost it); every second each replica adds what it counted in Redis to the store
/// ([`flush_quotas`]). While Redis cannot answer, calls are counted in the store directly,
/// and the counters this replica touched meanwhile are seeded again from the store once
/// Redis is back. The store therefore lags Redis by at most one flush per replica, which
/// bounds how far a window can be overshot after Redis loses its counters: by what the
/// replicas counted in the last second.
pub struct RedisQuota {
    coordinator: Arc<Coordinator>,
    store: Arc<dyn Store>,
    /// Counted on Redis, not yet in the store: (key, window start) → (window end, count).
    pending: std::sync::Mutex<std::collections::HashMap<(String, i64), (i64, i64)>>,
    /// Windows counted in the store while Redis was down: Redis's copy is behind.
    reseed: std::sync::Mutex<std::collections::HashSet<(String, i64)>>,
    script: redis::Script,
}

/// How often each replica copies its Redis quota counts to the store.
pub const QUOTA_FLUSH: Duration = Duration::from_secs(1);

impl RedisQuota {
    pub fn new(coordinator: Arc<Coordinator>, store: Arc<dyn Store>) -> Self {
        Self {
            coordinator,
            store,
            pending: std::sync::Mutex::default(),
            reseed: std::sync::Mutex::default(),
            script: redis::Script::new(QUOTA),
        }
    }

    fn counter(&self, key: &str, start: i64) -> String {
        self.coordinator
            .key("quota", format!("{key}\n{start}").as_bytes())
    }

    /// Takes the counts not yet in the store.
    fn take(&self) -> Vec<keygate_store::QuotaRow> {
        let Ok(mut pending) = self.pending.lock() else {
            return Vec::new();
        };
        pending
            .drain()
            .map(|((key, start), (end, used))| keygate_store::QuotaRow {
                key,
                start,
                end,
                used,
            })
            .collect()
    }

    /// Puts back counts the store did not take.
    fn restore(&self, rows: Vec<keygate_store::QuotaRow>) {
        if let Ok(mut pending) = self.pending.lock() {
            for r in rows {
                pending.entry((r.key, r.start)).or_insert((r.end, 0)).1 += r.used;
            }
        }
    }

    fn pending_for(&self, key: &str, start: i64) -> i64 {
        self.pending
            .lock()
            .ok()
            .and_then(|p| p.get(&(key.to_owned(), start)).map(|(_, n)| *n))
            .unwrap_or(0)
    }

    /// Counts in the store directly (Redis unavailable), and marks the window for a new
    /// seed once Redis answers.
    async fn in_store(
        &self,
        key: &str,
        window: keygate_proxy::limit::QuotaWindow,
        limit: u64,
    ) -> Result<keygate_proxy::limit::QuotaDecision, keygate_proxy::limit::QuotaUnavailable> {
        let start = i64::try_from(window.start).unwrap_or(i64::MAX);
        if let Ok(mut r) = self.reseed.lock() {
            r.insert((key.to_owned(), start));
        }
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self
            .store
            .quota_consume(key, start, to_i64(window.end), to_i64(limit))
            .await
        {
            Ok(Some(left)) => Ok(keygate_proxy::limit::QuotaDecision::Allowed {
                remaining: u64::try_from(left).unwrap_or(0),
            }),
            Ok(None) => Ok(keygate_proxy::limit::QuotaDecision::Exhausted),
            Err(e) => {
                tracing::error!(error = %e, "quota store unavailable");
                Err(keygate_proxy::limit::QuotaUnavailable)
            }
        }
    }
}

#[async_trait::async_trait]
impl keygate_proxy::limit::QuotaStore for RedisQuota {
    async fn consume(
        &self,
        key: &keygate_proxy::limit::LimitKey,
        window: keygate_proxy::limit::QuotaWindow,
        limit: u64,
    ) -> Result<keygate_proxy::limit::QuotaDecision, keygate_proxy::limit::QuotaUnavailable> {
        use keygate_proxy::limit::{QuotaDecision, QuotaUnavailable};
        let key_text = key.as_str();
        let start = i64::try_from(window.start).unwrap_or(i64::MAX);
        let end = i64::try_from(window.end).unwrap_or(i64::MAX);
        let counter = self.counter(key_text, start);
        // Empty but after an outage: no key copy on the common path.
        let stale = self
            .reseed
            .lock()
            .map(|r| !r.is_empty() && r.contains(&(key_text.to_owned(), start)))
            .unwrap_or(false);
        if stale {
            let c = counter.clone();
            let deleted: Result<i64, _> = self
                .coordinator
                .run(
                    |mut conn| async move { redis::cmd("DEL").arg(c).query_async(&mut conn).await },
                )
                .await;
            if deleted.is_err() {
                return self.in_store(key_text, window, limit).await;
            }
            if let Ok(mut r) = self.reseed.lock() {
                r.remove(&(key_text.to_owned(), start));
            }
        }
        let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
        for _ in 0..2 {
            let script = &self.script;
            let c = counter.clone();
            let answer: Result<i64, _> =
                self.coordinator
                    .run(|mut conn| async move {
                        script.key(c).arg(limit_i).invoke_async(&mut conn).await
                    })
                    .await;
            match answer {
                Err(_) => return self.in_store(key_text, window, limit).await,
                Ok(-1) => return Ok(QuotaDecision::Exhausted),
                Ok(left) if left >= 0 => {
                    if let Ok(mut pending) = self.pending.lock() {
                        pending
                            .entry((key_text.to_owned(), start))
                            .or_insert((end, 0))
                            .1 += 1;
                    }
                    return Ok(QuotaDecision::Allowed {
                        remaining: u64::try_from(left).unwrap_or(0),
                    });
                }
                Ok(_) => {
                    // No counter: seed it with the store's count and this replica's
                    // unflushed one. NX: if another replica seeded first, its seed stands.
                    let used = self
                        .store
                        .quota_used(key_text, start)
                        .await
                        .map_err(|_| QuotaUnavailable)?
                        + self.pending_for(key_text, start);
                    let c = counter.clone();
                    let expire_ms = end.saturating_add(3600).saturating_mul(1000);
                    let seeded: Result<Option<String>, _> = self
                        .coordinator
                        .run(|mut conn| async move {
                            redis::cmd("SET")
                                .arg(c)
                                .arg(used)
                                .arg("NX")
                                .arg("PXAT")
                                .arg(expire_ms)
                                .query_async(&mut conn)
                                .await
                        })
                        .await;
                    if seeded.is_err() {
                        return self.in_store(key_text, window, limit).await;
                    }
                }
            }
        }
        Err(QuotaUnavailable)
    }
}

/// Copies each replica's Redis quota counts to the store every [`QUOTA_FLUSH`]; a batch the
/// store refuses is put back for the next. Ends after a last copy once it is the only
/// holder of `quota`.
pub async fn flush_quotas(store: Arc<dyn Store>, quota: Arc<RedisQuota>) {
    let mut tick = tokio::time::interval(QUOTA_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = Arc::strong_count(&quota) == 1;
        let rows = quota.take();
        if !rows.is_empty() {
            if let Err(e) = store.quota_add(rows.clone()).await {
                tracing::error!(error = %e, "copying quota counts to the store failed; retrying with the next batch");
                if !last {
                    quota.restore(rows);
                }
            }
        }
        if last {
            return;
        }
    }
}

/// The cluster-wide rate limiter (see the module docs).
pub struct RedisRateLimiter(pub Arc<Coordinator>);

#[async_trait::async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(
        &self,
        key: &LimitKey,
        policy: &RatePolicy,
    ) -> Result<RateDecision, LimiterUnavailable> {
        self.0
            .gcra(key, policy)
            .await
            .map_err(|_| LimiterUnavailable)
    }
}

/// The DPoP replay cache on Redis. While Redis is down it answers "unavailable", so
/// DPoP calls get 503 (S35: fail closed): falling back to another cache would let a
/// proof Redis already holds be used a second time.
pub struct RedisReplay(pub Arc<Coordinator>);

impl ReplayCache for RedisReplay {
    async fn insert_if_absent(
        &self,
        key: ReplayKey,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<Freshness, ReplayCacheUnavailable> {
        let secs = u64::try_from(expires_at.0.saturating_sub(now.0)).unwrap_or(0);
        match self
            .0
            .first_sight("dpop", key.as_bytes(), Duration::from_secs(secs.max(1)))
            .await
        {
            Ok(true) => Ok(Freshness::Fresh),
            Ok(false) => Ok(Freshness::Replayed),
            Err(e) => {
                tracing::error!(error = %e, "DPoP replay cache (Redis) unavailable");
                Err(ReplayCacheUnavailable)
            }
        }
    }
}
