//! The monitor in the server: keygate-monitor decides, this module carries it out.
//!
//! The proxy hands every finished call to the monitor through the usage tee (a short lock,
//! no allocation for a subject already seen); the token service and the proxy's refusals
//! add [`Signal`]s. Every `[monitor] interval` the loop below asks the monitor for
//! findings and acts on each: an alert row (audited), then the rule's action — a throttle
//! in the proxy, a revoked session family, a disabled user or a rotated route key — each
//! audited with the rule and its evidence, never a token or a key. Alerts also go to the
//! webhooks and the log, and move per-rule, per-action Prometheus counters.
//!
//! Time comes from a [`Clock`], so tests run hours of simulated traffic in seconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate_audit::{AuditEvent, Outcome};
use keygate_monitor::clock::Clock;
use keygate_monitor::{Action, Delta, Finding, Monitor, Signal, Subject};
use keygate_proxy::throttle::{NetPrefix, Throttle, ThrottleSubject, Throttles};
use keygate_store::{AlertRecord, Store, StoreError};
use serde_json::{Value, json};

/// The audit actor of everything the monitor does.
pub const ACTOR: &str = "monitor";

/// Carries out the route-key rotation a `rotate` action asks for (the rotation scheduler's
/// manual path). Returns the new version, or why it could not.
#[async_trait::async_trait]
pub trait RotateRoute: Send + Sync {
    /// Rotates the key of route `route` now.
    async fn rotate(&self, route: &str) -> Result<i64, String>;
}

/// Where alerts are announced besides the store and the log (the webhooks).
pub trait AlertNotify: Send + Sync {
    /// Announces one alert; must not block.
    fn alert(&self, alert: &Value);
}

/// The other replicas (`[coordination]`). Each replica's monitor folds in the others'
/// intervals ([`keygate_monitor::Monitor::evaluate_shared`]), so all of them see the
/// cluster's traffic and find the same incidents; one replica claims each incident step
/// and records and carries it out, and every replica applies a throttle to its own proxy.
#[async_trait::async_trait]
pub trait MonitorPeers: Send + Sync {
    /// The deltas the other replicas published since the last call; none while they
    /// cannot be reached.
    async fn receive(&self) -> Vec<Delta>;
    /// Publishes this replica's delta.
    async fn publish(&self, delta: &Delta);
    /// Claims step `step` of `incident` for this replica for `ttl`. True when this replica
    /// is to record and carry it out, which includes when no claim can be made: a
    /// duplicate alert is better than a missed action.
    async fn claim(&self, incident: &str, step: usize, ttl: Duration) -> bool;
    /// Forgets the claims on the first `steps` steps of `incident` (acknowledged).
    async fn release(&self, incident: &str, steps: usize);
}

/// The monitor and what it acts on.
pub struct MonitorService {
    pub monitor: Arc<Monitor>,
    pub clock: Arc<dyn Clock>,
    pub throttles: Arc<Throttles>,
    store: Arc<dyn Store>,
    rotate: Mutex<Option<Arc<dyn RotateRoute>>>,
    notify: Mutex<Option<Arc<dyn AlertNotify>>>,
    peers: Mutex<Option<Arc<dyn MonitorPeers>>>,
    /// Throttles lifted here since the last shared evaluation, for the other replicas.
    lifted: Mutex<Vec<String>>,
    /// (rule, action, outcome) → count, for `/metrics`. Rule names come from the
    /// configuration: a bounded label set with no user ids.
    counts: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
}

impl std::fmt::Debug for MonitorService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorService").finish_non_exhaustive()
    }
}

impl MonitorService {
    pub fn new(
        monitor: Arc<Monitor>,
        clock: Arc<dyn Clock>,
        throttles: Arc<Throttles>,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            monitor,
            clock,
            throttles,
            store,
            rotate: Mutex::new(None),
            notify: Mutex::new(None),
            peers: Mutex::new(None),
            lifted: Mutex::new(Vec::new()),
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Connects the rotation path for `rotate` actions.
    pub fn set_rotator(&self, rotate: Arc<dyn RotateRoute>) {
        if let Ok(mut r) = self.rotate.lock() {
            *r = Some(rotate);
        }
    }

    /// Connects the webhooks.
    pub fn set_notify(&self, notify: Arc<dyn AlertNotify>) {
        if let Ok(mut n) = self.notify.lock() {
            *n = Some(notify);
        }
    }

    /// Connects the other replicas.
    pub fn set_peers(&self, peers: Arc<dyn MonitorPeers>) {
        if let Ok(mut p) = self.peers.lock() {
            *p = Some(peers);
        }
    }

    fn peers(&self) -> Option<Arc<dyn MonitorPeers>> {
        self.peers.lock().ok().and_then(|p| p.clone())
    }

    /// How long a claim on one of `rule`'s incident steps holds: the incident's expected
    /// life (its cooldown and the ladder's escalations), at least a minute.
    fn claim_ttl(&self, rule: &str) -> Duration {
        let life = self
            .monitor
            .config()
            .rules
            .iter()
            .find(|r| r.name == rule)
            .map(|r| {
                let steps = u32::try_from(r.ladder.len()).unwrap_or(u32::MAX);
                r.cooldown
                    .saturating_add(r.escalate_after.saturating_mul(steps))
            })
            .unwrap_or_default();
        life.max(Duration::from_secs(60))
    }

    fn ladder_len(&self, rule: &str) -> usize {
        self.monitor
            .config()
            .rules
            .iter()
            .find(|r| r.name == rule)
            .map_or(0, |r| r.ladder.len())
    }

    /// A signal from the token service or the proxy's refusals.
    pub fn signal(&self, signal: Signal) {
        self.monitor.signal(signal);
    }

    /// Now, on the monitor's clock (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// One evaluation: asks the monitor for findings and acts on each. Returns the
    /// alerts written.
    ///
    /// With other replicas, their intervals are folded in first and this one's published
    /// after; each finding is carried out here only if this replica claims it, and
    /// otherwise only its throttle is applied to this replica's proxy.
    pub async fn run_once(&self) -> Vec<AlertRecord> {
        let now = self.clock.now_ms();
        self.throttles.expire(now);
        let peers = self.peers();
        let findings = match &peers {
            None => self.monitor.evaluate(),
            Some(p) => {
                let remote = p.receive().await;
                for subject in remote.iter().flat_map(|d| d.lifted()) {
                    if let Some(s) = ThrottleSubject::parse(subject) {
                        self.throttles.lift(&s);
                    }
                }
                let (findings, mut local) = self.monitor.evaluate_shared(remote);
                if let Ok(mut lifted) = self.lifted.lock() {
                    local.add_lifted(lifted.drain(..));
                }
                if !local.is_empty() {
                    p.publish(&local).await;
                }
                findings
            }
        };
        let mut out = Vec::with_capacity(findings.len());
        for finding in findings {
            if let Some(p) = &peers {
                let ttl = self.claim_ttl(&finding.rule);
                if !p.claim(&finding.incident, finding.step, ttl).await {
                    self.follow(&finding, now);
                    continue;
                }
            }
            match self.act(&finding, now).await {
                Ok(alert) => out.push(alert),
                Err(e) => {
                    tracing::error!(rule = %finding.rule, action = %finding.action, error = %e, "the monitor could not record or carry out an action");
                }
            }
        }
        out
    }

    /// A finding another replica claimed: it records and carries it out; this replica
    /// only applies a throttle to its own proxy.
    fn follow(&self, f: &Finding, now: i64) {
        let action = action_name(&f.action);
        if let Action::Throttle { .. } = f.action {
            if let Err(why) = self.throttle(f, now) {
                tracing::warn!(rule = %f.rule, error = %why, "the monitor could not apply another replica's throttle");
                self.count(&f.rule, action, "failed");
                return;
            }
        }
        tracing::debug!(rule = %f.rule, action, incident = %f.incident, "monitor finding recorded by another replica");
        self.count(&f.rule, action, "other_replica");
    }

    /// Applies a `throttle` finding to this replica's proxy: the subject and the end.
    fn throttle(&self, f: &Finding, now: i64) -> Result<(ThrottleSubject, u32, i64), String> {
        let Action::Throttle {
            per_minute,
            for_secs,
        } = f.action
        else {
            return Err("not a throttle".into());
        };
        let subject = throttle_subject(&f.subject)
            .ok_or_else(|| format!("{} cannot be throttled", f.subject))?;
        let until_ms = now.saturating_add(i64::try_from(for_secs).unwrap_or(i64::MAX / 2) * 1000);
        self.throttles.set(
            subject.clone(),
            Throttle {
                per_minute,
                until_ms,
                reason: f.rule.clone(),
            },
        );
        Ok((subject, per_minute, until_ms))
    }

    fn count(&self, rule: &str, action: &'static str, outcome: &'static str) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((rule.to_owned(), action, outcome)).or_default() += 1;
        }
    }

    /// Carries out one finding. The alert row is written whatever the action's outcome,
    /// with the outcome in its evidence.
    async fn act(&self, f: &Finding, now: i64) -> Result<AlertRecord, StoreError> {
        let action = action_name(&f.action);
        let mut evidence = f.evidence.clone();
        let outcome = self.carry_out(f, now, &mut evidence).await;
        let (result, label) = match &outcome {
            Ok(done) => (Value::String(done.clone()), "done"),
            Err(why) => (Value::String(format!("failed: {why}")), "failed"),
        };
        evidence.insert("result".into(), result);
        evidence.insert("detected_after_ms".into(), json!(f.at_ms - f.started_ms));
        self.count(&f.rule, action, label);
        let alert = AlertRecord {
            id: alert_id(),
            incident: f.incident.clone(),
            rule: f.rule.clone(),
            kind: f.kind.to_string(),
            subject: f.subject.to_string(),
            action: action.to_owned(),
            step: i64::try_from(f.step).unwrap_or(i64::MAX),
            evidence: Value::Object(evidence.clone()).to_string(),
            created_ms: now,
            acked_ms: None,
            acked_by: None,
        };
        let audit = AuditEvent::new(
            ACTOR,
            "monitor.alert",
            if outcome.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failure
            },
        )
        .target(alert.subject.clone())
        .detail("alert", alert.id.clone())
        .detail("rule", alert.rule.clone())
        .detail("action", action)
        .detail("evidence", Value::Object(evidence));
        self.store.insert_alert(alert.clone(), audit, now).await?;
        tracing::warn!(
            alert = %alert.id,
            rule = %alert.rule,
            subject = %alert.subject,
            action,
            outcome = label,
            "monitor alert"
        );
        if let Some(n) = self.notify.lock().ok().and_then(|n| n.clone()) {
            n.alert(&alert_json(&alert));
        }
        Ok(alert)
    }

    /// The action itself; what was done, or why it was not.
    async fn carry_out(
        &self,
        f: &Finding,
        now: i64,
        evidence: &mut serde_json::Map<String, Value>,
    ) -> Result<String, String> {
        let audit = |what: &str| {
            AuditEvent::new(ACTOR, what, Outcome::Success)
                .target(f.subject.to_string())
                .detail("rule", f.rule.clone())
                .detail("evidence", Value::Object(f.evidence.clone()))
        };
        match &f.action {
            Action::Alert => Ok("alerted".into()),
            Action::Throttle { .. } => {
                let (subject, per_minute, until_ms) = self.throttle(f, now)?;
                evidence.insert("throttle_until_ms".into(), json!(until_ms));
                let entry = audit("monitor.throttle")
                    .detail("per_minute", per_minute)
                    .detail("until_ms", until_ms);
                self.store
                    .append_audit(entry, now)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!("{subject} limited to {per_minute}/min"))
            }
            Action::Revoke => {
                let families: Vec<String> = match &f.subject {
                    Subject::Session { session, .. } => vec![session.as_str().to_owned()],
                    Subject::User(user) => self
                        .store
                        .list_families(Some(user.as_str()), false)
                        .await
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .map(|fam| fam.id)
                        .collect(),
                    other => return Err(format!("{other} has no sessions to revoke")),
                };
                let mut revoked = 0u64;
                for id in &families {
                    let reason = format!("monitor: {}", f.rule);
                    match self
                        .store
                        .revoke_family(id, &reason, audit("monitor.revoke"), now)
                        .await
                    {
                        Ok(true) => revoked += 1,
                        Ok(false) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                evidence.insert("revoked_sessions".into(), json!(revoked));
                Ok(format!("{revoked} session(s) revoked"))
            }
            Action::Disable => {
                let user = match &f.subject {
                    Subject::User(user) | Subject::Session { user, .. } => user,
                    other => return Err(format!("{other} is not a user")),
                };
                let revoked = self
                    .store
                    .disable_user(user.as_str(), audit("monitor.disable"), now)
                    .await
                    .map_err(|e| e.to_string())?;
                evidence.insert("revoked_sessions".into(), json!(revoked));
                Ok(format!("user disabled, {revoked} session(s) revoked"))
            }
            Action::Rotate => {
                let Subject::Route(route) = &f.subject else {
                    return Err(format!("{} has no key to rotate", f.subject));
                };
                let rotator = self
                    .rotate
                    .lock()
                    .ok()
                    .and_then(|r| r.clone())
                    .ok_or_else(|| "no rotation path is configured".to_owned())?;
                let version = rotator.rotate(route.as_str()).await?;
                evidence.insert("new_version".into(), json!(version));
                Ok(format!("route key rotated to version {version}"))
            }
        }
    }

    /// Lifts a throttle (an operator's decision); with replicas, the others lift it at
    /// their next evaluation. Whether this replica had it.
    pub fn lift(&self, subject: &ThrottleSubject) -> bool {
        if self.peers().is_some() {
            if let Ok(mut lifted) = self.lifted.lock() {
                lifted.push(subject.to_string());
            }
        }
        self.throttles.lift(subject)
    }

    /// Acknowledges an alert: it leaves the open list and its incident starts afresh.
    pub async fn ack(&self, id: &str, by: &str) -> Result<bool, StoreError> {
        let alert = self.store.alert(id).await?.ok_or(StoreError::NotFound)?;
        let audit = AuditEvent::new(by, "alert.ack", Outcome::Success)
            .target(alert.subject.clone())
            .detail("alert", id.to_owned())
            .detail("rule", alert.rule.clone());
        let changed = self.store.ack_alert(id, by, audit, self.now_ms()).await?;
        // With replicas, the acknowledgement reaches the others in this one's next delta.
        self.monitor.reset_incident(&alert.incident);
        if let Some(p) = self.peers() {
            p.release(&alert.incident, self.ladder_len(&alert.rule))
                .await;
        }
        Ok(changed)
    }

    /// Counters per rule and action, in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::from(
            "# HELP keygate_monitor_actions_total Actions the monitor took, by rule, action and outcome.\n# TYPE keygate_monitor_actions_total counter\n",
        );
        if let Ok(counts) = self.counts.lock() {
            for ((rule, action, outcome), n) in counts.iter() {
                let _ = writeln!(
                    out,
                    "keygate_monitor_actions_total{{rule=\"{rule}\",action=\"{action}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        out
    }
}

/// Monitor alerts go to the webhooks as `alert` events.
impl AlertNotify for crate::webhooks::Webhooks {
    fn alert(&self, alert: &Value) {
        self.send("alert", alert.clone());
    }
}

/// A `rotate` action: the route's key, through the rotation scheduler's manual path (the
/// secret needs a schedule with a hook; without one the alert says so).
pub struct RouteKeyRotation {
    pub proxy: Arc<crate::proxy::ProxyState>,
    pub rotator: Arc<crate::rotation::Rotator>,
}

#[async_trait::async_trait]
impl RotateRoute for RouteKeyRotation {
    async fn rotate(&self, route: &str) -> Result<i64, String> {
        let secret = keygate_proxy::RouteName::parse(route)
            .ok()
            .and_then(|name| {
                self.proxy
                    .routes()
                    .get(&name)
                    .map(|r| r.secret_name().to_owned())
            })
            .ok_or_else(|| "the route no longer exists".to_owned())?;
        let name = keygate_vault::SecretName::parse(&secret).map_err(|e| e.to_string())?;
        self.rotator
            .rotate_now(&name)
            .await
            .map_err(|e| format!("rotating secret {secret}: {e}"))
    }
}

/// Rotation failures and overdue rotations become alerts (kind `rotation`), like the
/// monitor's own, so `keygate alert list` shows them; successes stay in the audit log.
pub struct RotationAlerts {
    store: Arc<dyn Store>,
}

impl RotationAlerts {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

impl crate::rotation::RotationNotify for RotationAlerts {
    fn notify(&self, notice: crate::rotation::RotationNotice) {
        use crate::rotation::RotationNotice as N;
        let (rule, secret, evidence) = match &notice {
            N::Failed { secret, reason } => (
                "rotation-failed",
                secret.clone(),
                json!({"reason": reason, "result": "the old version stays current"}),
            ),
            N::Overdue { secret, due_ms } => (
                "rotation-overdue",
                secret.clone(),
                json!({"due_ms": due_ms}),
            ),
            N::Rotated { .. } | N::PreviousDestroyed { .. } => return,
        };
        let now = keygate_vault::now_ms();
        let subject = format!("secret:{secret}");
        let alert = AlertRecord {
            id: alert_id(),
            incident: format!("{rule}:{subject}"),
            rule: rule.to_owned(),
            kind: "rotation".to_owned(),
            subject: subject.clone(),
            action: "alert".to_owned(),
            step: 0,
            evidence: evidence.to_string(),
            created_ms: now,
            acked_ms: None,
            acked_by: None,
        };
        let audit = AuditEvent::new(ACTOR, "monitor.alert", Outcome::Failure)
            .target(subject)
            .detail("alert", alert.id.clone())
            .detail("rule", rule)
            .detail("evidence", evidence);
        let store = self.store.clone();
        // Notices come from the scheduler's task; the alert is written beside it.
        tokio::spawn(async move {
            if let Err(e) = store.insert_alert(alert, audit, now).await {
                tracing::error!(error = %e, "could not record a rotation alert");
            }
        });
    }
}

/// The evaluation loop: every interval until `stop`.
pub async fn run(service: Arc<MonitorService>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(service.monitor.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        service.run_once().await;
    }
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Alert => "alert",
        Action::Throttle { .. } => "throttle",
        Action::Revoke => "revoke",
        Action::Disable => "disable",
        Action::Rotate => "rotate",
    }
}

fn throttle_subject(subject: &Subject) -> Option<ThrottleSubject> {
    Some(match subject {
        Subject::User(u) => ThrottleSubject::User(u.clone()),
        Subject::Session { session, .. } => ThrottleSubject::Session(session.clone()),
        Subject::Client(c) => ThrottleSubject::Client(c.clone()),
        Subject::Ip(prefix) => ThrottleSubject::Network(NetPrefix::parse(prefix)?),
        Subject::Route(_) => return None,
    })
}

fn alert_id() -> String {
    let bytes: [u8; 8] = rand::random();
    format!("al_{}", hex::encode(bytes))
}

/// An alert as the API, the CLI and the webhooks show it ([`crate::admin::api::Alert`]).
pub fn alert_json(a: &AlertRecord) -> Value {
    serde_json::to_value(crate::admin::api::Alert::from(a)).unwrap_or(Value::Null)
}
