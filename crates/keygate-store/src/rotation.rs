//! Secret rotation schedules and webhook dead letters.
//!
//! A schedule holds timings, the name of the hook that makes a new value, and the text of
//! the last failure; never a value (the scheduler builds its error texts without one).
//! Dead letters hold which webhook, which event, how many attempts and why the last one
//! failed; never the payload.

use async_trait::async_trait;
use keygate_audit::AuditEvent;

use crate::Result;

/// A secret's rotation schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationSchedule {
    pub secret: String,
    /// Rotate this often.
    pub every_ms: i64,
    /// How long the previous version stays readable after a rotation (0: destroyed at
    /// once).
    pub overlap_ms: i64,
    /// The name of a `[rotation.hooks.NAME]` entry.
    pub hook: String,
    pub created_ms: i64,
    pub last_rotated_ms: Option<i64>,
    /// When the next rotation is due.
    pub next_due_ms: i64,
    /// The version that was current before the last rotation, while its value is still
    /// kept for the overlap; `None` once destroyed.
    pub previous_version: Option<i64>,
    /// When `previous_version` is destroyed.
    pub overlap_ends_ms: Option<i64>,
    /// Why the last attempt failed (`None` after a success).
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    /// When the "rotation overdue" notice was raised for the current due time (`None`
    /// until then, and again after a success).
    pub overdue_notified_ms: Option<i64>,
}

/// A schedule to create or replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleWrite {
    pub secret: String,
    pub every_ms: i64,
    pub overlap_ms: i64,
    pub hook: String,
    pub next_due_ms: i64,
}

/// What a successful rotation leaves in the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationDone {
    pub rotated_ms: i64,
    pub next_due_ms: i64,
    /// The version to destroy when the overlap ends (`None`: already destroyed).
    pub previous_version: Option<i64>,
    pub overlap_ends_ms: Option<i64>,
}

/// A webhook delivery that failed every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The delivery's id (also sent to the receiver).
    pub id: String,
    /// Which webhook: its index and URL host, never its path or query.
    pub webhook: String,
    pub event: String,
    pub attempts: i64,
    pub last_error: String,
    pub failed_ms: i64,
}

/// Rotation schedules and webhook dead letters.
#[async_trait]
pub trait RotationStore: Send + Sync {
    /// Creates or replaces a secret's schedule, audited in the same transaction. A
    /// replaced schedule keeps its rotation history (last rotation, a pending previous
    /// version, the last error).
    async fn set_schedule(&self, s: ScheduleWrite, audit: AuditEvent, now_ms: i64) -> Result<()>;

    /// Removes a secret's schedule, audited in the same transaction; `NotFound` if it has
    /// none. A previous version still inside its overlap is then no longer destroyed
    /// automatically.
    async fn clear_schedule(&self, secret: &str, audit: AuditEvent, now_ms: i64) -> Result<()>;

    async fn schedule(&self, secret: &str) -> Result<Option<RotationSchedule>>;

    /// Every schedule, by secret name.
    async fn schedules(&self) -> Result<Vec<RotationSchedule>>;

    /// Records a successful rotation: clears the last error and the overdue notice.
    /// Not audited here: the vault audits the new version.
    async fn record_rotation(&self, secret: &str, done: RotationDone) -> Result<()>;

    /// Records a failed attempt; the schedule's due time stays.
    async fn record_rotation_failure(&self, secret: &str, error: &str, now_ms: i64) -> Result<()>;

    /// Records that the overdue notice was raised, so it is raised once.
    async fn mark_overdue_notified(&self, secret: &str, now_ms: i64) -> Result<()>;

    /// Forgets the previous version once its value was destroyed.
    async fn clear_previous_version(&self, secret: &str) -> Result<()>;

    /// Keeps a failed webhook delivery.
    async fn add_dead_letter(&self, letter: DeadLetter) -> Result<()>;

    /// Failed deliveries, newest first, at most `limit`.
    async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>>;
}
