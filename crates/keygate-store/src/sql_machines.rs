//! [`MachineStore`] on SQLite and PostgreSQL.

use async_trait::async_trait;
use keygate_audit::AuditEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::machines::{MachineRecord, MachineStore, MachineTokenRecord, PolicyRecord};
use crate::{Result, SqlStore, StoreError};

const POLICY_COLUMNS: &str = "SELECT name, secrets, token_ttl_secs, any_version, created_ms, \
     updated_ms FROM machine_policies";
const MACHINE_COLUMNS: &str = "SELECT id, name, policy, secret_hash, previous_hash, \
     previous_until_ms, created_ms, rotated_ms FROM machines";

fn policy(r: &AnyRow) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        name: r.try_get(0)?,
        secrets: r.try_get(1)?,
        token_ttl_secs: r.try_get(2)?,
        any_version: r.try_get::<i64, _>(3)? != 0,
        created_ms: r.try_get(4)?,
        updated_ms: r.try_get(5)?,
    })
}

fn machine(r: &AnyRow) -> Result<MachineRecord> {
    Ok(MachineRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        policy: r.try_get(2)?,
        secret_hash: r.try_get(3)?,
        previous_hash: r.try_get(4)?,
        previous_until_ms: r.try_get(5)?,
        created_ms: r.try_get(6)?,
        rotated_ms: r.try_get(7)?,
    })
}

#[async_trait]
impl MachineStore for SqlStore {
    async fn put_policy(&self, p: PolicyRecord, audit: AuditEvent, now_ms: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT created_ms FROM machine_policies WHERE name = $1")
            .bind(&p.name)
            .fetch_optional(&mut *tx)
            .await?;
        let created = existing.is_none();
        if created {
            sqlx::query(
                "INSERT INTO machine_policies (name, secrets, token_ttl_secs, any_version, \
                 created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&p.name)
            .bind(&p.secrets)
            .bind(p.token_ttl_secs)
            .bind(i64::from(p.any_version))
            .bind(p.created_ms)
            .bind(p.updated_ms)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE machine_policies SET secrets = $1, token_ttl_secs = $2, \
                 any_version = $3, updated_ms = $4 WHERE name = $5",
            )
            .bind(&p.secrets)
            .bind(p.token_ttl_secs)
            .bind(i64::from(p.any_version))
            .bind(p.updated_ms)
            .bind(&p.name)
            .execute(&mut *tx)
            .await?;
        }
        self.append(&mut tx, audit, now_ms).await?;
        // A narrower policy must hold for the next read through any cache.
        self.commit(tx).await?;
        Ok(created)
    }

    async fn policy(&self, name: &str) -> Result<Option<PolicyRecord>> {
        let row = sqlx::query(&format!("{POLICY_COLUMNS} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(policy).transpose()
    }

    async fn list_policies(&self) -> Result<Vec<PolicyRecord>> {
        let rows = sqlx::query(&format!("{POLICY_COLUMNS} ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(policy).collect()
    }

    async fn delete_policy(&self, name: &str, audit: AuditEvent, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM machine_policies WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM machine_tokens WHERE policy = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn insert_machine(&self, m: MachineRecord, audit: AuditEvent, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let taken: i64 = sqlx::query("SELECT COUNT(*) FROM machines WHERE name = $1")
            .bind(&m.name)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if taken > 0 {
            return Err(StoreError::Duplicate(format!("machine {}", m.name)));
        }
        sqlx::query(
            "INSERT INTO machines (id, name, policy, secret_hash, previous_hash, \
             previous_until_ms, created_ms, rotated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&m.id)
        .bind(&m.name)
        .bind(&m.policy)
        .bind(m.secret_hash.clone())
        .bind(m.previous_hash.clone())
        .bind(m.previous_until_ms)
        .bind(m.created_ms)
        .bind(m.rotated_ms)
        .execute(&mut *tx)
        .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit_additive(tx).await?;
        Ok(())
    }

    async fn machine_by_id(&self, id: &str) -> Result<Option<MachineRecord>> {
        let row = sqlx::query(&format!("{MACHINE_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(machine).transpose()
    }

    async fn machine_by_name(&self, name: &str) -> Result<Option<MachineRecord>> {
        let row = sqlx::query(&format!("{MACHINE_COLUMNS} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(machine).transpose()
    }

    async fn list_machines(&self) -> Result<Vec<MachineRecord>> {
        let rows = sqlx::query(&format!("{MACHINE_COLUMNS} ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(machine).collect()
    }

    async fn rotate_machine_secret(
        &self,
        name: &str,
        new_hash: Vec<u8>,
        previous_until_ms: i64,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        self.update_one_audited(
            sqlx::query(
                "UPDATE machines SET previous_hash = secret_hash, previous_until_ms = $1, \
                 secret_hash = $2, rotated_ms = $3 WHERE name = $4",
            )
            .bind(previous_until_ms)
            .bind(new_hash)
            .bind(now_ms)
            .bind(name),
            audit,
            now_ms,
        )
        .await
    }

    async fn delete_machine(&self, name: &str, audit: AuditEvent, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM machines WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM machine_tokens WHERE identity = $1")
            .bind(format!("machine:{name}"))
            .execute(&mut *tx)
            .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn insert_machine_token(
        &self,
        t: MachineTokenRecord,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO machine_tokens (hash, identity, policy, claims, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(t.hash.clone())
        .bind(&t.identity)
        .bind(&t.policy)
        .bind(&t.claims)
        .bind(t.created_ms)
        .bind(t.expires_ms)
        .execute(&mut *tx)
        .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit_additive(tx).await?;
        Ok(())
    }

    async fn machine_token(&self, hash: &[u8], now_ms: i64) -> Result<Option<MachineTokenRecord>> {
        let row = sqlx::query(
            "SELECT hash, identity, policy, claims, created_ms, expires_ms FROM machine_tokens \
             WHERE hash = $1 AND expires_ms > $2",
        )
        .bind(hash.to_vec())
        .bind(now_ms)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(MachineTokenRecord {
                hash: r.try_get(0)?,
                identity: r.try_get(1)?,
                policy: r.try_get(2)?,
                claims: r.try_get(3)?,
                created_ms: r.try_get(4)?,
                expires_ms: r.try_get(5)?,
            })
        })
        .transpose()
    }

    async fn purge_machine_tokens(&self, now_ms: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM machine_tokens WHERE expires_ms <= $1")
                .bind(now_ms)
                .execute(&self.write)
                .await?
                .rows_affected(),
        )
    }
}
