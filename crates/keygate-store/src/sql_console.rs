//! [`ConsoleStore`] on SQLite and PostgreSQL.

use async_trait::async_trait;
use keygate_audit::AuditEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::console::{ConsoleAdminRecord, ConsoleSessionRecord, ConsoleStore};
use crate::{Result, SqlStore, StoreError};

const ADMIN_COLUMNS: &str = "SELECT id, name, password_hash, totp_sealed, totp_last_step, role, \
     created_ms, disabled_ms FROM console_admins";
const SESSION_COLUMNS: &str =
    "SELECT id_hash, admin_id, created_ms, last_seen_ms, expires_ms FROM console_sessions";

fn admin(r: &AnyRow) -> Result<ConsoleAdminRecord> {
    Ok(ConsoleAdminRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        password_hash: r.try_get(2)?,
        totp_sealed: r.try_get(3)?,
        totp_last_step: r.try_get(4)?,
        role: r.try_get(5)?,
        created_ms: r.try_get(6)?,
        disabled_ms: r.try_get(7)?,
    })
}

fn session(r: &AnyRow) -> Result<ConsoleSessionRecord> {
    Ok(ConsoleSessionRecord {
        id_hash: r.try_get(0)?,
        admin_id: r.try_get(1)?,
        created_ms: r.try_get(2)?,
        last_seen_ms: r.try_get(3)?,
        expires_ms: r.try_get(4)?,
    })
}

#[async_trait]
impl ConsoleStore for SqlStore {
    async fn create_console_admin(
        &self,
        a: ConsoleAdminRecord,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let taken: i64 = sqlx::query("SELECT COUNT(*) FROM console_admins WHERE name = $1")
            .bind(&a.name)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if taken > 0 {
            return Err(StoreError::Duplicate(format!("console admin {}", a.name)));
        }
        sqlx::query(
            "INSERT INTO console_admins (id, name, password_hash, totp_sealed, totp_last_step, \
             role, created_ms, disabled_ms) VALUES ($1, $2, $3, $4, NULL, $5, $6, NULL)",
        )
        .bind(a.id)
        .bind(a.name)
        .bind(a.password_hash)
        .bind(a.totp_sealed)
        .bind(a.role)
        .bind(a.created_ms)
        .execute(&mut *tx)
        .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn console_admin_by_name(&self, name: &str) -> Result<Option<ConsoleAdminRecord>> {
        let row = sqlx::query(&format!("{ADMIN_COLUMNS} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(admin).transpose()
    }

    async fn console_admin_by_id(&self, id: &str) -> Result<Option<ConsoleAdminRecord>> {
        let row = sqlx::query(&format!("{ADMIN_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(admin).transpose()
    }

    async fn list_console_admins(&self) -> Result<Vec<ConsoleAdminRecord>> {
        let rows = sqlx::query(&format!("{ADMIN_COLUMNS} ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(admin).collect()
    }

    async fn disable_console_admin(
        &self,
        name: &str,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT id FROM console_admins WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let id: String = row.try_get(0)?;
        sqlx::query(
            "UPDATE console_admins SET disabled_ms = COALESCE(disabled_ms, $1) WHERE id = $2",
        )
        .bind(now_ms)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM console_sessions WHERE admin_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn consume_console_totp_step(&self, admin_id: &str, step: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE console_admins SET totp_last_step = $1 \
             WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(admin_id)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn create_console_session(
        &self,
        s: ConsoleSessionRecord,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Sessions past their absolute end go as new ones come.
        sqlx::query("DELETE FROM console_sessions WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, admin_id, created_ms, last_seen_ms, \
             expires_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(s.id_hash)
        .bind(s.admin_id)
        .bind(s.created_ms)
        .bind(s.last_seen_ms)
        .bind(s.expires_ms)
        .execute(&mut *tx)
        .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn console_session(&self, id_hash: &[u8]) -> Result<Option<ConsoleSessionRecord>> {
        let row = sqlx::query(&format!("{SESSION_COLUMNS} WHERE id_hash = $1"))
            .bind(id_hash.to_vec())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(session).transpose()
    }

    async fn touch_console_session(&self, id_hash: &[u8], now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE console_sessions SET last_seen_ms = $1 \
             WHERE id_hash = $2 AND last_seen_ms < $1",
        )
        .bind(now_ms)
        .bind(id_hash.to_vec())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn end_console_session(
        &self,
        id_hash: &[u8],
        audit: Option<AuditEvent>,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash.to_vec())
            .execute(&mut *tx)
            .await?;
        if let Some(audit) = audit {
            self.append(&mut tx, audit, now_ms).await?;
        }
        self.commit(tx).await?;
        Ok(())
    }
}
