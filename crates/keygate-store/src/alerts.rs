//! The monitor's alerts: what it saw and what it did, kept for operators
//! (`keygate alert list`, `/admin/v1/alerts`) until acknowledged.

use async_trait::async_trait;
use keygate_audit::AuditEvent;

use crate::Result;

/// One alert: a rule fired for a subject and the monitor took `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    /// `al_` and 16 hex digits.
    pub id: String,
    /// The incident this step belongs to (rule and subject); steps of one incident share it.
    pub incident: String,
    pub rule: String,
    /// The rule's kind (`spike`, `new_network`, …) or the source (`rotation`).
    pub kind: String,
    /// `user:ID`, `session:ID`, `route:NAME`, `client:ID`, `ip:PREFIX`, `secret:NAME`.
    pub subject: String,
    /// `alert`, `throttle`, `revoke`, `disable`, `rotate`.
    pub action: String,
    /// The step of the rule's action ladder.
    pub step: i64,
    /// JSON object: counts, baseline, prefix, country. Never a token or a key.
    pub evidence: String,
    pub created_ms: i64,
    pub acked_ms: Option<i64>,
    pub acked_by: Option<String>,
}

/// Alert persistence. Part of [`crate::Store`].
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Stores a new alert and its audit entry in one transaction.
    async fn insert_alert(&self, alert: AlertRecord, audit: AuditEvent, now_ms: i64) -> Result<()>;

    /// The newest alerts first; only unacknowledged ones when `open_only`.
    async fn list_alerts(&self, open_only: bool, limit: i64) -> Result<Vec<AlertRecord>>;

    /// One alert.
    async fn alert(&self, id: &str) -> Result<Option<AlertRecord>>;

    /// Acknowledges an alert (audited). [`crate::StoreError::NotFound`] if there is no such
    /// alert; acknowledging twice keeps the first acknowledgement and returns false.
    async fn ack_alert(&self, id: &str, by: &str, audit: AuditEvent, now_ms: i64) -> Result<bool>;
}
