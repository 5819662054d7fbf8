//! Webhooks: an alert sink that POSTs signed JSON (or a Slack message) to operators'
//! endpoints.
//!
//! [`Webhooks::send`] never blocks: it puts the event on a bounded queue (dropping and
//! counting when full). A worker task delivers each event to every webhook that subscribes
//! to it, retrying with doubling backoff on connect errors, timeouts and non-2xx answers;
//! a delivery that fails every attempt is kept as a dead letter in the store (which
//! webhook, which event, why; never the payload) and listed by
//! `GET /admin/v1/webhooks/dead-letters`.
//!
//! Each request carries `X-Keygate-Event`, `X-Keygate-Timestamp` (Unix seconds) and
//! `X-Keygate-Signature: v1=<hex HMAC-SHA256(key, timestamp + "." + body)>`, the key being
//! the value of the vault secret the webhook names. Payloads carry names and versions,
//! never secret values.
//!
//! Configured as `[[monitor.webhooks]]` (see [`RawWebhook`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use keygate_store::{DeadLetter, Store};
use keygate_vault::{SecretName, Vault, now_ms};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::ConfigError;

/// Events a webhook may subscribe to (`"*"`: all of them).
pub const EVENTS: &[&str] = &[
    "alert",
    "secret.changed",
    "secret.rotated",
    "secret.rotation_failed",
    "secret.rotation_overdue",
];

/// Events waiting for the worker; beyond this, [`Webhooks::send`] drops and counts.
const QUEUE: usize = 1024;
/// Deliveries in flight at once (each with its own retries).
const IN_FLIGHT: usize = 32;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One `[[monitor.webhooks]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// `https://…` (plain `http` only to a loopback address).
    pub url: String,
    /// Events to deliver (see [`EVENTS`]; `"*"` for all).
    pub events: Vec<String>,
    /// Name of the vault secret that holds the HMAC key.
    pub secret: String,
    /// `json` (default) or `slack`.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after the first one.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubled after each, capped at 5 minutes.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

/// The body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"event", "id", "at", "data"}`.
    Json,
    /// `{"text": "…"}`: one readable line for a Slack incoming webhook.
    Slack,
}

/// A validated webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: url::Url,
    /// Subscribed events; empty means all (`"*"`).
    pub events: Vec<String>,
    pub secret: SecretName,
    pub format: WebhookFormat,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
}

impl WebhookConfig {
    /// Whether this webhook takes `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }

    /// How dead letters name it: its index and host (a URL's path or query may hold a
    /// token, e.g. Slack's).
    fn label(&self, index: usize) -> String {
        format!("{index} {}", self.url.host_str().unwrap_or("?"))
    }
}

/// Validates `[[monitor.webhooks]]`; errors name the field (`monitor.webhooks[0].url`).
pub fn validate(raw: &[RawWebhook]) -> Result<Vec<WebhookConfig>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, w)| w.validate(&format!("monitor.webhooks[{i}]")))
        .collect()
}

impl RawWebhook {
    fn validate(&self, at: &str) -> Result<WebhookConfig, ConfigError> {
        let err = |f: &str, m: &str| ConfigError {
            field: format!("{at}.{f}"),
            message: m.to_owned(),
        };
        let url = url::Url::parse(&self.url).map_err(|_| err("url", "not an absolute URL"))?;
        let ok = match url.scheme() {
            "https" => url.host().is_some(),
            "http" => crate::config::is_loopback(&url),
            _ => false,
        };
        if !ok {
            return Err(err(
                "url",
                "must be https (plain http only to a loopback address)",
            ));
        }
        if self.events.is_empty() {
            return Err(err("events", "name at least one event, or \"*\" for all"));
        }
        let mut events = Vec::new();
        for e in &self.events {
            if e == "*" {
                events.clear();
                break;
            }
            if !EVENTS.contains(&e.as_str()) {
                return Err(err(
                    "events",
                    &format!("`{e}` is not one of *, {}", EVENTS.join(", ")),
                ));
            }
            events.push(e.clone());
        }
        let secret = SecretName::parse(&self.secret)
            .map_err(|e| err("secret", &format!("must name a vault secret ({e})")))?;
        let format = match self.format.as_deref() {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(other) => {
                return Err(err(
                    "format",
                    &format!("`{other}` is not one of json, slack"),
                ));
            }
        };
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.timeout) {
            return Err(err("timeout", "must be between 10ms and 60s"));
        }
        if self.retries > 20 {
            return Err(err("retries", "must be at most 20"));
        }
        if !(Duration::from_millis(1)..=MAX_BACKOFF).contains(&self.backoff) {
            return Err(err("backoff", "must be between 1ms and 5m"));
        }
        Ok(WebhookConfig {
            url,
            events,
            secret,
            format,
            timeout: self.timeout,
            retries: self.retries,
            backoff: self.backoff,
        })
    }
}

/// One event on its way to the webhooks.
struct Job {
    id: String,
    event: String,
    at_secs: i64,
    data: Value,
}

/// The webhook service. Cheap to share behind an `Arc`.
pub struct Webhooks {
    hooks: Arc<Vec<WebhookConfig>>,
    queue: mpsc::Sender<Job>,
    /// Taken by [`Webhooks::spawn`].
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Job>>>,
    dropped: AtomicU64,
}

impl Webhooks {
    /// The service for `hooks`; nothing is delivered until [`Webhooks::spawn`].
    pub fn new(hooks: Vec<WebhookConfig>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        Self {
            hooks: Arc::new(hooks),
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `event` for every webhook that subscribes to it. Never waits: when the queue
    /// is full the event is dropped and counted ([`Webhooks::dropped`]).
    pub fn send(&self, event: &str, payload: Value) {
        if !self.hooks.iter().any(|h| h.wants(event)) {
            return;
        }
        let job = Job {
            id: delivery_id(),
            event: event.to_owned(),
            at_secs: now_ms() / 1000,
            data: payload,
        };
        if self.queue.try_send(job).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(event, dropped = n, "webhook queue full; event dropped");
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Starts the worker (once; later calls return a finished task). It delivers until
    /// `stop`; deliveries still retrying then are abandoned.
    pub fn spawn(
        self: &Arc<Self>,
        vault: Arc<Vault>,
        store: Arc<dyn Store>,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let receiver = self.receiver.lock().ok().and_then(|mut r| r.take());
        let hooks = self.hooks.clone();
        tokio::spawn(async move {
            if let Some(receiver) = receiver {
                worker(hooks, receiver, vault, store, stop).await;
            }
        })
    }
}

fn delivery_id() -> String {
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    hex::encode(id)
}

async fn worker(
    hooks: Arc<Vec<WebhookConfig>>,
    mut receiver: mpsc::Receiver<Job>,
    vault: Arc<Vault>,
    store: Arc<dyn Store>,
    mut stop: watch::Receiver<bool>,
) {
    let clients: Vec<Option<reqwest::Client>> = hooks
        .iter()
        .map(|h| {
            reqwest::Client::builder()
                .timeout(h.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| tracing::error!(error = %e, "webhook client could not be built"))
                .ok()
        })
        .collect();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let job = tokio::select! {
            job = receiver.recv() => job,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(job) = job else { break };
        let job = Arc::new(job);
        for (index, hook) in hooks.iter().enumerate() {
            if !hook.wants(&job.event) {
                continue;
            }
            let Some(Some(client)) = clients.get(index).cloned() else {
                continue;
            };
            // Waits when IN_FLIGHT deliveries are retrying: the queue then fills and
            // `send` drops, instead of memory growing without bound.
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p,
                _ = stop.wait_for(|s| *s) => break,
            };
            let Ok(permit) = permit else { break };
            let (hook, job, vault, store) =
                (hook.clone(), job.clone(), vault.clone(), store.clone());
            tasks.spawn(async move {
                deliver(index, &hook, &client, &job, &vault, store.as_ref()).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
    }
    tasks.abort_all();
}

/// The request body for `job` in `format`.
fn body(format: WebhookFormat, job: &Job) -> Value {
    match format {
        WebhookFormat::Json => json!({
            "event": job.event,
            "id": job.id,
            "at": job.at_secs,
            "data": job.data,
        }),
        WebhookFormat::Slack => json!({"text": summary(&job.event, &job.data)}),
    }
}

/// One readable line for a chat message.
pub fn summary(event: &str, data: &Value) -> String {
    let s = |k: &str| match data.get(k) {
        Some(Value::String(v)) => v.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "?".to_owned(),
    };
    match event {
        "secret.rotated" => format!(
            "keygate: secret `{}` rotated to version {} (hook `{}`)",
            s("secret"),
            s("version"),
            s("hook")
        ),
        "secret.rotation_failed" => format!(
            "keygate: rotating secret `{}` failed: {}",
            s("secret"),
            s("reason")
        ),
        "secret.rotation_overdue" => format!(
            "keygate: rotation of secret `{}` is overdue (was due at {} ms)",
            s("secret"),
            s("due_ms")
        ),
        "secret.changed" => format!(
            "keygate: secret `{}` {} (version {})",
            s("secret"),
            s("action"),
            s("version")
        ),
        other => {
            let fields = match data {
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(t) => format!("{k}={t}"),
                        v => format!("{k}={v}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Value::Null => String::new(),
                v => v.to_string(),
            };
            format!("keygate: {other} {fields}").trim_end().to_owned()
        }
    }
}

/// `v1=<hex HMAC-SHA256(key, timestamp + "." + body)>`.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers `job` to one webhook with retries; dead-letters it after the last attempt.
async fn deliver(
    index: usize,
    hook: &WebhookConfig,
    client: &reqwest::Client,
    job: &Job,
    vault: &Vault,
    store: &dyn Store,
) {
    let body = match serde_json::to_vec(&body(hook.format, job)) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "webhook body could not be encoded");
            return;
        }
    };
    let attempts = hook.retries + 1;
    let mut wait = hook.backoff;
    let mut last_error = String::new();
    for attempt in 1..=attempts {
        match attempt_once(hook, client, job, &body, vault).await {
            Ok(()) => {
                tracing::debug!(webhook = index, event = %job.event, attempt, "webhook delivered");
                return;
            }
            Err(e) => last_error = e,
        }
        tracing::warn!(webhook = index, event = %job.event, attempt, error = %last_error, "webhook delivery failed");
        if attempt < attempts {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }
    let letter = DeadLetter {
        id: job.id.clone(),
        webhook: hook.label(index),
        event: job.event.clone(),
        attempts: i64::from(attempts),
        last_error,
        failed_ms: now_ms(),
    };
    if let Err(e) = store.add_dead_letter(letter).await {
        tracing::error!(error = %e, webhook = index, "webhook dead letter could not be stored");
    }
}

async fn attempt_once(
    hook: &WebhookConfig,
    client: &reqwest::Client,
    job: &Job,
    body: &[u8],
    vault: &Vault,
) -> Result<(), String> {
    // Read per attempt: a key rotated in the vault takes effect at once.
    let (_, key) = vault
        .resolve(hook.secret.as_str())
        .await
        .map_err(|e| format!("signing key `{}` unavailable: {e}", hook.secret.as_str()))?;
    let timestamp = now_ms() / 1000;
    let signature = signature(key.expose_secret().as_bytes(), timestamp, body);
    drop(key);
    let resp = client
        .post(hook.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Keygate-Event", job.event.as_str())
        .header("X-Keygate-Timestamp", timestamp.to_string())
        .header("X-Keygate-Signature", signature)
        .body(body.to_vec())
        .send()
        .await
        // The URL may hold a token (Slack's does): keep it out of the error.
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                e.without_url().to_string()
            }
        })?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", status.as_u16()))
    }
}
