//! Secret rotation: schedules kept in the store, hooks that make a new value, and the
//! scheduler that runs them.
//!
//! A hook is a command (`[rotation.hooks.NAME] command = ["/path/exe", "arg"]`: the
//! current value on stdin, the new value on stdout) or a URL (`url = "https://…"`: the
//! current value POSTed as the body, the response body is the new value). The new value
//! becomes a new version through the vault, audited as `secret.rotate` by `rotation` with
//! the hook's name. The previous version stays readable for the schedule's overlap, then
//! its value is destroyed. A failed attempt keeps the old version and records why; a due
//! time that passed by more than the grace without success raises an overdue notice once.
//!
//! Values exist only between the vault's decrypt and the hook, and between the hook's
//! answer and the vault's encrypt; no error text, log line or notice carries one (a
//! hook's stderr is never logged, only its length).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use keygate_store::{RotationDone, RotationSchedule, ScheduleWrite, Store, StoreError};
use keygate_vault::{SecretName, Vault, VaultError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::config::ConfigError;

/// The actor of the scheduler's audit entries.
pub const ACTOR: &str = "rotation";
/// The most a hook may print (or a URL hook answer).
pub const MAX_OUTPUT: usize = 64 * 1024;

/// `[rotation]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRotation {
    /// How often the scheduler looks for due rotations (default 5s).
    #[serde(default, with = "humantime_serde")]
    pub check_interval: Option<Duration>,
    /// After a failed attempt, the next one waits this long (default 5m).
    #[serde(default, with = "humantime_serde")]
    pub retry_interval: Option<Duration>,
    /// A rotation this late past its due time raises the overdue notice (default 1h).
    #[serde(default, with = "humantime_serde")]
    pub overdue_grace: Option<Duration>,
    /// `[rotation.hooks.NAME]`.
    #[serde(default)]
    pub hooks: BTreeMap<String, RawHook>,
}

/// `[rotation.hooks.NAME]` as written: exactly one of `command` and `url`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub command: Option<Vec<String>>,
    pub url: Option<String>,
    /// Default 30s.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// What a hook runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookKind {
    /// A program (absolute path) and its arguments.
    Command { program: PathBuf, args: Vec<String> },
    /// An `https` URL (plain `http` only to loopback).
    Url(url::Url),
}

/// A validated hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    pub kind: HookKind,
    pub timeout: Duration,
}

/// The validated `[rotation]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationConfig {
    pub check_interval: Duration,
    pub retry_interval: Duration,
    pub overdue_grace: Duration,
    pub hooks: BTreeMap<String, Hook>,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(300),
            overdue_grace: Duration::from_secs(3600),
            hooks: BTreeMap::new(),
        }
    }
}

impl RawRotation {
    /// Validates into [`RotationConfig`]; errors name the field (`rotation.hooks.x.url`).
    pub fn validate(self) -> Result<RotationConfig, ConfigError> {
        let err = |f: String, m: &str| ConfigError {
            field: f,
            message: m.to_owned(),
        };
        let d = RotationConfig::default();
        let check_interval = self.check_interval.unwrap_or(d.check_interval);
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&check_interval) {
            return Err(err(
                "rotation.check_interval".into(),
                "must be between 100ms and 1h",
            ));
        }
        let retry_interval = self.retry_interval.unwrap_or(d.retry_interval);
        if retry_interval > Duration::from_secs(7 * 86_400) {
            return Err(err("rotation.retry_interval".into(), "must be at most 7d"));
        }
        let overdue_grace = self.overdue_grace.unwrap_or(d.overdue_grace);
        let mut hooks = BTreeMap::new();
        for (name, raw) in self.hooks {
            let at = format!("rotation.hooks.{name}");
            if !valid_hook_name(&name) {
                return Err(err(at, "a hook name is 1-64 letters, digits, '-' and '_'"));
            }
            let timeout = raw.timeout.unwrap_or(Duration::from_secs(30));
            if !(Duration::from_millis(10)..=Duration::from_secs(600)).contains(&timeout) {
                return Err(err(format!("{at}.timeout"), "must be between 10ms and 10m"));
            }
            let kind = match (raw.command, raw.url) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(err(at, "set exactly one of `command` and `url`"));
                }
                (Some(cmd), None) => {
                    let mut parts = cmd.into_iter();
                    let program = PathBuf::from(parts.next().unwrap_or_default());
                    if !program.is_absolute() {
                        return Err(err(
                            format!("{at}.command"),
                            "must start with the program's absolute path",
                        ));
                    }
                    HookKind::Command {
                        program,
                        args: parts.collect(),
                    }
                }
                (None, Some(u)) => {
                    let url = url::Url::parse(&u)
                        .map_err(|_| err(format!("{at}.url"), "not an absolute URL"))?;
                    let ok = match url.scheme() {
                        "https" => url.host().is_some(),
                        "http" => crate::config::is_loopback(&url),
                        _ => false,
                    };
                    if !ok {
                        return Err(err(
                            format!("{at}.url"),
                            "must be https (plain http only to a loopback address)",
                        ));
                    }
                    HookKind::Url(url)
                }
            };
            hooks.insert(
                name.clone(),
                Hook {
                    name,
                    kind,
                    timeout,
                },
            );
        }
        Ok(RotationConfig {
            check_interval,
            retry_interval,
            overdue_grace,
            hooks,
        })
    }
}

fn valid_hook_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Why a hook gave no new value. Never holds the value (nor the hook's stderr).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    #[error("hook could not be started: {0}")]
    Spawn(String),
    #[error("hook exited with {status} (stderr: {stderr_bytes} bytes, not logged)")]
    Exit { status: String, stderr_bytes: usize },
    #[error("hook did not finish within {0:?}")]
    Timeout(Duration),
    #[error("hook printed no value")]
    Empty,
    #[error("hook output is larger than {MAX_OUTPUT} bytes")]
    TooLarge,
    #[error("hook output is not UTF-8 text")]
    NotUtf8,
    #[error("hook URL answered {0}")]
    Status(u16),
    #[error("hook URL request failed: {0}")]
    Request(String),
}

impl Hook {
    /// Runs the hook on `current`; the new value, with one trailing newline removed.
    #[tracing::instrument(skip_all, fields(hook = %self.name))]
    pub async fn run(&self, current: &SecretString) -> Result<SecretString, HookError> {
        let mut out = match tokio::time::timeout(self.timeout, self.run_inner(current)).await {
            Ok(r) => r?,
            Err(_) => return Err(HookError::Timeout(self.timeout)),
        };
        if out.ends_with(b"\n") {
            out.pop();
            if out.ends_with(b"\r") {
                out.pop();
            }
        }
        if out.is_empty() {
            return Err(HookError::Empty);
        }
        let text = std::str::from_utf8(&out).map_err(|_| HookError::NotUtf8)?;
        Ok(SecretString::from(text.to_owned()))
    }

    async fn run_inner(&self, current: &SecretString) -> Result<Zeroizing<Vec<u8>>, HookError> {
        match &self.kind {
            HookKind::Command { program, args } => run_command(program, args, current).await,
            HookKind::Url(url) => run_url(url, self.timeout, current).await,
        }
    }
}

async fn run_command(
    program: &std::path::Path,
    args: &[String],
    current: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, HookError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timed-out hook is killed when its future is dropped.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookError::Spawn(e.kind().to_string()))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(HookError::Spawn("standard streams unavailable".into()));
    };
    let input = async {
        // A hook that exits without reading its input is not an error here.
        let _ = stdin.write_all(current.expose_secret().as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
        drop(stdin);
    };
    let output = async {
        let mut buf = Zeroizing::new(Vec::new());
        let read = stdout
            .take(MAX_OUTPUT as u64 + 1)
            .read_to_end(&mut buf)
            .await;
        read.map(|_| buf)
    };
    let errors = async {
        // Counted, never kept: a hook may echo the value on stderr.
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut stderr.take(1 << 20), &mut sink).await
    };
    let ((), out, err_bytes) = tokio::join!(input, output, errors);
    let out = out.map_err(|e| HookError::Spawn(format!("reading its output: {}", e.kind())))?;
    if out.len() > MAX_OUTPUT {
        return Err(HookError::TooLarge);
    }
    let status = child
        .wait()
        .await
        .map_err(|e| HookError::Spawn(format!("waiting for it: {}", e.kind())))?;
    if !status.success() {
        return Err(HookError::Exit {
            status: status.to_string(),
            stderr_bytes: err_bytes.unwrap_or(0) as usize,
        });
    }
    Ok(out)
}

async fn run_url(
    url: &url::Url,
    timeout: Duration,
    current: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, HookError> {
    // The URL itself may carry a token: errors go out without it.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| HookError::Request(e.without_url().to_string()))?;
    let mut resp = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "text/plain")
        .body(current.expose_secret().to_owned())
        .send()
        .await
        .map_err(|e| HookError::Request(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(HookError::Status(resp.status().as_u16()));
    }
    let mut buf = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| HookError::Request(e.without_url().to_string()))?
    {
        if buf.len() + chunk.len() > MAX_OUTPUT {
            return Err(HookError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// What the scheduler reports, for alerts and webhooks. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationNotice {
    /// A new version was written by `hook`.
    Rotated {
        secret: String,
        version: i64,
        hook: String,
    },
    /// An attempt failed; the old version stays current.
    Failed { secret: String, reason: String },
    /// The rotation due at `due_ms` has not succeeded within the grace (raised once per
    /// due time).
    Overdue { secret: String, due_ms: i64 },
    /// The previous version's value was destroyed at the end of its overlap.
    PreviousDestroyed { secret: String, version: i64 },
}

impl RotationNotice {
    /// The webhook event name and its payload.
    pub fn event(&self) -> (&'static str, serde_json::Value) {
        use serde_json::json;
        match self {
            Self::Rotated {
                secret,
                version,
                hook,
            } => (
                "secret.rotated",
                json!({"secret": secret, "version": version, "hook": hook}),
            ),
            Self::Failed { secret, reason } => (
                "secret.rotation_failed",
                json!({"secret": secret, "reason": reason}),
            ),
            Self::Overdue { secret, due_ms } => (
                "secret.rotation_overdue",
                json!({"secret": secret, "due_ms": due_ms}),
            ),
            Self::PreviousDestroyed { secret, version } => (
                "secret.changed",
                json!({"secret": secret, "version": version, "action": "destroyed"}),
            ),
        }
    }
}

/// Where notices go (the integrator routes them into alerts).
pub trait RotationNotify: Send + Sync {
    fn notify(&self, notice: RotationNotice);
}

/// Hands each notice to several sinks, and logs it.
pub struct TeeNotify(pub Vec<Arc<dyn RotationNotify>>);

impl RotationNotify for TeeNotify {
    fn notify(&self, notice: RotationNotice) {
        match &notice {
            RotationNotice::Rotated {
                secret, version, ..
            } => tracing::info!(%secret, version, "secret rotated"),
            RotationNotice::Failed { secret, reason } => {
                tracing::warn!(%secret, %reason, "secret rotation failed")
            }
            RotationNotice::Overdue { secret, due_ms } => {
                tracing::warn!(%secret, due_ms, "secret rotation overdue")
            }
            RotationNotice::PreviousDestroyed { secret, version } => {
                tracing::info!(%secret, version, "previous version destroyed after its overlap")
            }
        }
        for sink in &self.0 {
            sink.notify(notice.clone());
        }
    }
}

impl RotationNotify for crate::webhooks::Webhooks {
    fn notify(&self, notice: RotationNotice) {
        let (event, payload) = notice.event();
        self.send(event, payload);
    }
}

/// The server's clock (Unix milliseconds); injectable so tests drive time.
pub type Clock = Arc<dyn keygate_auth::clock::Clock>;

/// Why a schedule change or a manual rotation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("secret not found")]
    UnknownSecret,
    #[error("secret has no rotation schedule")]
    NotScheduled,
    #[error("rotation failed: {0}")]
    Failed(String),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of one [`Rotator::run_due`] pass (names only).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// (secret, new version)
    pub rotated: Vec<(String, i64)>,
    pub failed: Vec<String>,
    /// (secret, destroyed version)
    pub destroyed: Vec<(String, i64)>,
    pub overdue: Vec<String>,
}

/// The scheduler.
pub struct Rotator {
    vault: Arc<Vault>,
    store: Arc<dyn Store>,
    config: RotationConfig,
    clock: Clock,
    notify: Arc<dyn RotationNotify>,
    /// One pass (or manual rotation) at a time, so a secret is never rotated twice at once.
    running: tokio::sync::Mutex<()>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Rotator {
    pub fn new(
        vault: Arc<Vault>,
        store: Arc<dyn Store>,
        config: RotationConfig,
        clock: Clock,
        notify: Arc<dyn RotationNotify>,
    ) -> Self {
        Self {
            vault,
            store,
            config,
            clock,
            notify,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The configured hooks.
    pub fn hooks(&self) -> &BTreeMap<String, Hook> {
        &self.config.hooks
    }

    /// Now, by the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Creates or replaces `name`'s schedule from the operator's strings (`"30d"`,
    /// `"1h"`); errors name the field.
    pub async fn set_schedule(
        &self,
        name: &SecretName,
        rotate_every: &str,
        overlap: Option<&str>,
        hook: &str,
        actor: &str,
    ) -> Result<RotationSchedule, ScheduleError> {
        let invalid = |field, message: &str| ScheduleError::Invalid {
            field,
            message: message.to_owned(),
        };
        let every = humantime::parse_duration(rotate_every)
            .map_err(|_| invalid("rotate_every", "not a duration like 30d or 12h"))?;
        if every < Duration::from_secs(60) {
            return Err(invalid("rotate_every", "must be at least 1m"));
        }
        if every > Duration::from_secs(10 * 365 * 86_400) {
            return Err(invalid("rotate_every", "must be at most 10 years"));
        }
        let overlap = match overlap {
            None => Duration::ZERO,
            Some(o) => humantime::parse_duration(o)
                .map_err(|_| invalid("overlap", "not a duration like 1h or 0s"))?,
        };
        if overlap >= every {
            return Err(invalid("overlap", "must be shorter than rotate_every"));
        }
        if !self.config.hooks.contains_key(hook) {
            return Err(invalid(
                "hook",
                "no such hook in the configuration ([rotation.hooks.NAME])",
            ));
        }
        match self.store.secret_meta(name.as_str()).await? {
            Some(m) if m.deleted_ms.is_none() && m.current_version > 0 => {}
            _ => return Err(ScheduleError::UnknownSecret),
        }
        let now = self.now_ms();
        let existing = self.store.schedule(name.as_str()).await?;
        let since = existing.and_then(|s| s.last_rotated_ms).unwrap_or(now);
        let write = ScheduleWrite {
            secret: name.as_str().to_owned(),
            every_ms: ms(every),
            overlap_ms: ms(overlap),
            hook: hook.to_owned(),
            next_due_ms: since.saturating_add(ms(every)),
        };
        let audit = keygate_audit::AuditEvent::new(
            actor,
            "secret.schedule",
            keygate_audit::Outcome::Success,
        )
        .target(name.as_str())
        .detail("rotate_every_ms", write.every_ms)
        .detail("overlap_ms", write.overlap_ms)
        .detail("hook", hook);
        self.store.set_schedule(write, audit, now).await?;
        self.store
            .schedule(name.as_str())
            .await?
            .ok_or(ScheduleError::NotScheduled)
    }

    /// Removes `name`'s schedule.
    pub async fn clear_schedule(
        &self,
        name: &SecretName,
        actor: &str,
    ) -> Result<(), ScheduleError> {
        let audit = keygate_audit::AuditEvent::new(
            actor,
            "secret.unschedule",
            keygate_audit::Outcome::Success,
        )
        .target(name.as_str());
        match self
            .store
            .clear_schedule(name.as_str(), audit, self.now_ms())
            .await
        {
            Err(StoreError::NotFound) => Err(ScheduleError::NotScheduled),
            other => Ok(other?),
        }
    }

    /// One pass: destroys previous versions whose overlap ended, rotates due secrets
    /// (a failed one again after the retry interval), and raises overdue notices.
    pub async fn run_due(&self) -> Result<RunReport, StoreError> {
        let _one = self.running.lock().await;
        let mut report = RunReport::default();
        for s in self.store.schedules().await? {
            let now = self.now_ms();
            if let (Some(version), Some(ends)) = (s.previous_version, s.overlap_ends_ms) {
                if ends <= now && self.destroy_previous(&s.secret, version).await {
                    report.destroyed.push((s.secret.clone(), version));
                }
            }
            if s.next_due_ms > now {
                continue;
            }
            let retry_wait = s
                .last_error_ms
                .is_some_and(|at| now < at.saturating_add(ms(self.config.retry_interval)));
            if !retry_wait {
                match self.rotate(&s, now).await {
                    Ok(version) => {
                        report.rotated.push((s.secret.clone(), version));
                        continue;
                    }
                    Err(_) => report.failed.push(s.secret.clone()),
                }
            }
            let overdue_at = s.next_due_ms.saturating_add(ms(self.config.overdue_grace));
            if now > overdue_at && s.overdue_notified_ms.is_none() {
                self.store.mark_overdue_notified(&s.secret, now).await?;
                self.notify.notify(RotationNotice::Overdue {
                    secret: s.secret.clone(),
                    due_ms: s.next_due_ms,
                });
                report.overdue.push(s.secret.clone());
            }
        }
        Ok(report)
    }

    /// Rotates `name` now, by its schedule's hook (`POST /admin/v1/secrets/{name}/rotate`).
    /// The new version, or why not (also recorded as the schedule's last error).
    pub async fn rotate_now(&self, name: &SecretName) -> Result<i64, ScheduleError> {
        let _one = self.running.lock().await;
        let s = self
            .store
            .schedule(name.as_str())
            .await?
            .ok_or(ScheduleError::NotScheduled)?;
        let now = self.now_ms();
        self.rotate(&s, now).await.map_err(ScheduleError::Failed)
    }

    /// Destroys a previous version; whether it is gone now.
    async fn destroy_previous(&self, secret: &str, version: i64) -> bool {
        let Ok(name) = SecretName::parse(secret) else {
            return false;
        };
        match self.vault.destroy(&name, version, ACTOR).await {
            // Already pruned by max_versions, or the secret is gone: nothing left to erase.
            Ok(()) | Err(VaultError::NoSuchVersion(_) | VaultError::NotFound) => {}
            Err(e) => {
                tracing::error!(%secret, version, error = %e, "destroying the previous version failed");
                return false;
            }
        }
        if let Err(e) = self.store.clear_previous_version(secret).await {
            tracing::error!(%secret, error = %e, "recording the destroyed previous version failed");
        }
        self.notify.notify(RotationNotice::PreviousDestroyed {
            secret: secret.to_owned(),
            version,
        });
        true
    }

    /// Runs the hook and writes the new version; on failure records and notifies why.
    async fn rotate(&self, s: &RotationSchedule, now: i64) -> Result<i64, String> {
        match self.try_rotate(s, now).await {
            Ok(v) => Ok(v),
            Err(reason) => {
                if let Err(e) = self
                    .store
                    .record_rotation_failure(&s.secret, &reason, now)
                    .await
                {
                    tracing::error!(secret = %s.secret, error = %e, "recording a rotation failure failed");
                }
                self.notify.notify(RotationNotice::Failed {
                    secret: s.secret.clone(),
                    reason: reason.clone(),
                });
                Err(reason)
            }
        }
    }

    async fn try_rotate(&self, s: &RotationSchedule, now: i64) -> Result<i64, String> {
        let name = SecretName::parse(&s.secret).map_err(|e| e.to_string())?;
        let hook = self
            .config
            .hooks
            .get(&s.hook)
            .ok_or_else(|| format!("hook `{}` is not in the configuration", s.hook))?;
        let (current, value) = self
            .vault
            .get(&name, None, ACTOR)
            .await
            .map_err(|e| format!("reading the current value failed: {e}"))?;
        let new = hook.run(&value).await.map_err(|e| e.to_string())?;
        drop(value);
        let version = self
            .vault
            .put_rotated(&name, new, current, ACTOR, &hook.name)
            .await
            .map_err(|e| format!("writing the new version failed: {e}"))?;
        // A previous version still inside an earlier overlap is older than the one just
        // superseded: it goes now.
        if let Some(older) = s.previous_version.filter(|v| *v != current) {
            self.destroy_previous(&s.secret, older).await;
        }
        let (previous_version, overlap_ends_ms) = if s.overlap_ms == 0 {
            self.destroy_previous(&s.secret, current).await;
            (None, None)
        } else {
            (Some(current), Some(now.saturating_add(s.overlap_ms)))
        };
        let done = RotationDone {
            rotated_ms: now,
            next_due_ms: now.saturating_add(s.every_ms),
            previous_version,
            overlap_ends_ms,
        };
        if let Err(e) = self.store.record_rotation(&s.secret, done).await {
            // The version is written; the schedule catches up on the next success.
            tracing::error!(secret = %s.secret, error = %e, "recording a rotation failed");
        }
        self.notify.notify(RotationNotice::Rotated {
            secret: s.secret.clone(),
            version,
            hook: hook.name.clone(),
        });
        Ok(version)
    }

    /// Runs [`Rotator::run_due`] every `check_interval` until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if self.vault.sealed().is_some() {
                continue;
            }
            if let Err(e) = self.run_due().await {
                tracing::error!(error = %e, "rotation pass failed");
            }
        }
    }
}
