//! [`AlertStore`] on SQLite and PostgreSQL.

use async_trait::async_trait;
use keygate_audit::AuditEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::alerts::{AlertRecord, AlertStore};
use crate::{Result, SqlStore, StoreError};

const ALERT_COLUMNS: &str = "SELECT id, incident, rule, kind, subject, action, step, evidence, \
     created_ms, acked_ms, acked_by FROM alerts";

fn alert(r: &AnyRow) -> Result<AlertRecord> {
    Ok(AlertRecord {
        id: r.try_get(0)?,
        incident: r.try_get(1)?,
        rule: r.try_get(2)?,
        kind: r.try_get(3)?,
        subject: r.try_get(4)?,
        action: r.try_get(5)?,
        step: r.try_get(6)?,
        evidence: r.try_get(7)?,
        created_ms: r.try_get(8)?,
        acked_ms: r.try_get(9)?,
        acked_by: r.try_get(10)?,
    })
}

#[async_trait]
impl AlertStore for SqlStore {
    async fn insert_alert(&self, a: AlertRecord, audit: AuditEvent, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO alerts (id, incident, rule, kind, subject, action, step, evidence, \
             created_ms, acked_ms, acked_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&a.id)
        .bind(&a.incident)
        .bind(&a.rule)
        .bind(&a.kind)
        .bind(&a.subject)
        .bind(&a.action)
        .bind(a.step)
        .bind(&a.evidence)
        .bind(a.created_ms)
        .bind(a.acked_ms)
        .bind(&a.acked_by)
        .execute(&mut *tx)
        .await?;
        self.append(&mut tx, audit, now_ms).await?;
        // No cache holds alerts.
        self.commit_additive(tx).await?;
        Ok(())
    }

    async fn list_alerts(&self, open_only: bool, limit: i64) -> Result<Vec<AlertRecord>> {
        let sql = if open_only {
            format!("{ALERT_COLUMNS} WHERE acked_ms IS NULL ORDER BY created_ms DESC, id LIMIT $1")
        } else {
            format!("{ALERT_COLUMNS} ORDER BY created_ms DESC, id LIMIT $1")
        };
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&self.read).await?;
        rows.iter().map(alert).collect()
    }

    async fn alert(&self, id: &str) -> Result<Option<AlertRecord>> {
        let row = sqlx::query(&format!("{ALERT_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(alert).transpose()
    }

    async fn ack_alert(&self, id: &str, by: &str, audit: AuditEvent, now_ms: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT acked_ms FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = exists else {
            return Err(StoreError::NotFound);
        };
        let acked: Option<i64> = row.try_get(0)?;
        if acked.is_some() {
            return Ok(false);
        }
        sqlx::query("UPDATE alerts SET acked_ms = $1, acked_by = $2 WHERE id = $3")
            .bind(now_ms)
            .bind(by)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.append(&mut tx, audit, now_ms).await?;
        // No cache holds alerts.
        self.commit_additive(tx).await?;
        Ok(true)
    }
}
