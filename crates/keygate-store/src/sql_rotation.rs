//! [`RotationStore`] on SQLite and PostgreSQL, with the same SQL for both (see `sql.rs`).

use async_trait::async_trait;
use keygate_audit::AuditEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::rotation::{DeadLetter, RotationDone, RotationSchedule, RotationStore, ScheduleWrite};
use crate::{Result, SqlStore, StoreError};

const SCHEDULE_COLUMNS: &str = "SELECT secret, every_ms, overlap_ms, hook, created_ms, \
     last_rotated_ms, next_due_ms, previous_version, overlap_ends_ms, last_error, \
     last_error_ms, overdue_notified_ms FROM rotation_schedules";

fn schedule(r: &AnyRow) -> Result<RotationSchedule> {
    Ok(RotationSchedule {
        secret: r.try_get(0)?,
        every_ms: r.try_get(1)?,
        overlap_ms: r.try_get(2)?,
        hook: r.try_get(3)?,
        created_ms: r.try_get(4)?,
        last_rotated_ms: r.try_get(5)?,
        next_due_ms: r.try_get(6)?,
        previous_version: r.try_get(7)?,
        overlap_ends_ms: r.try_get(8)?,
        last_error: r.try_get(9)?,
        last_error_ms: r.try_get(10)?,
        overdue_notified_ms: r.try_get(11)?,
    })
}

impl SqlStore {
    /// Runs one plain (unaudited) write on the writer; `NotFound` if `must_change` and no
    /// row changed.
    async fn plain_write<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        must_change: bool,
    ) -> Result<()> {
        let done = self.note(query.execute(&self.write).await.map_err(StoreError::from))?;
        if must_change && done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

#[async_trait]
impl RotationStore for SqlStore {
    async fn set_schedule(&self, s: ScheduleWrite, audit: AuditEvent, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO rotation_schedules (secret, every_ms, overlap_ms, hook, created_ms, \
             next_due_ms) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (secret) DO UPDATE SET every_ms = excluded.every_ms, \
             overlap_ms = excluded.overlap_ms, hook = excluded.hook, \
             next_due_ms = excluded.next_due_ms, overdue_notified_ms = NULL",
        )
        .bind(s.secret)
        .bind(s.every_ms)
        .bind(s.overlap_ms)
        .bind(s.hook)
        .bind(now_ms)
        .bind(s.next_due_ms)
        .execute(&mut *tx)
        .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await
    }

    async fn clear_schedule(&self, secret: &str, audit: AuditEvent, now_ms: i64) -> Result<()> {
        self.update_one_audited(
            sqlx::query("DELETE FROM rotation_schedules WHERE secret = $1").bind(secret),
            audit,
            now_ms,
        )
        .await
    }

    async fn schedule(&self, secret: &str) -> Result<Option<RotationSchedule>> {
        let r = sqlx::query(&format!("{SCHEDULE_COLUMNS} WHERE secret = $1"))
            .bind(secret)
            .fetch_optional(&self.read)
            .await?;
        r.as_ref().map(schedule).transpose()
    }

    async fn schedules(&self) -> Result<Vec<RotationSchedule>> {
        let rows = sqlx::query(&format!("{SCHEDULE_COLUMNS} ORDER BY secret"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(schedule).collect()
    }

    async fn record_rotation(&self, secret: &str, done: RotationDone) -> Result<()> {
        self.plain_write(
            sqlx::query(
                "UPDATE rotation_schedules SET last_rotated_ms = $1, next_due_ms = $2, \
                 previous_version = $3, overlap_ends_ms = $4, last_error = NULL, \
                 last_error_ms = NULL, overdue_notified_ms = NULL WHERE secret = $5",
            )
            .bind(done.rotated_ms)
            .bind(done.next_due_ms)
            .bind(done.previous_version)
            .bind(done.overlap_ends_ms)
            .bind(secret),
            true,
        )
        .await
    }

    async fn record_rotation_failure(&self, secret: &str, error: &str, now_ms: i64) -> Result<()> {
        self.plain_write(
            sqlx::query(
                "UPDATE rotation_schedules SET last_error = $1, last_error_ms = $2 \
                 WHERE secret = $3",
            )
            .bind(error)
            .bind(now_ms)
            .bind(secret),
            true,
        )
        .await
    }

    async fn mark_overdue_notified(&self, secret: &str, now_ms: i64) -> Result<()> {
        self.plain_write(
            sqlx::query("UPDATE rotation_schedules SET overdue_notified_ms = $1 WHERE secret = $2")
                .bind(now_ms)
                .bind(secret),
            true,
        )
        .await
    }

    async fn clear_previous_version(&self, secret: &str) -> Result<()> {
        self.plain_write(
            sqlx::query(
                "UPDATE rotation_schedules SET previous_version = NULL, overlap_ends_ms = NULL \
                 WHERE secret = $1",
            )
            .bind(secret),
            false,
        )
        .await
    }

    async fn add_dead_letter(&self, letter: DeadLetter) -> Result<()> {
        self.plain_write(
            sqlx::query(
                "INSERT INTO webhook_dead_letters (id, webhook, event, attempts, last_error, \
                 failed_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(letter.id)
            .bind(letter.webhook)
            .bind(letter.event)
            .bind(letter.attempts)
            .bind(letter.last_error)
            .bind(letter.failed_ms),
            true,
        )
        .await
    }

    async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT id, webhook, event, attempts, last_error, failed_ms FROM webhook_dead_letters \
             ORDER BY failed_ms DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.try_get(0)?,
                    webhook: r.try_get(1)?,
                    event: r.try_get(2)?,
                    attempts: r.try_get(3)?,
                    last_error: r.try_get(4)?,
                    failed_ms: r.try_get(5)?,
                })
            })
            .collect()
    }
}
