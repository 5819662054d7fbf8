//! [`TokenStore`] on SQLite and PostgreSQL, with the same SQL for both (see `sql.rs`).

use async_trait::async_trait;
use keygate_audit::AuditEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

use tokio::sync::oneshot;

use crate::group::{Answer, Op, lost};
use crate::sql::{Backend, Head, Tx};
use crate::tokens::{
    ClientRecord, CodeRecord, FamilyRecord, Redemption, RotationWrite, SigningKeyRecord,
    TokenStore, UserRecord,
};
use crate::{Result, SqlStore, StoreError};

const USER_COLUMNS: &str = "SELECT id, name, password_hash, scopes, created_ms, disabled_ms, \
     totp_sealed, totp_last_step, issuer, subject FROM users";
const CLIENT_COLUMNS: &str = "SELECT id, name, kind, secret_hash, redirect_uris, scopes, \
     created_ms, removed_ms, auth_method, tls_identity, dpop, display_name, privacy_url, \
     session_note FROM clients";
const FAMILY_COLUMNS: &str = "SELECT id, user_id, client_id, jkt, scopes, created_ms, \
     last_used_ms, generation, previous_generation, rotated_ms, revoked_ms, revoke_reason, \
     tier, attest_key, attest_counter FROM refresh_families";
const CODE_COLUMNS: &str = "SELECT hash, client_id, user_id, redirect_uri, scopes, challenge, \
     dpop_jkt, expires_ms, used_ms, family_id FROM auth_codes";

fn user(r: &AnyRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        password_hash: r.try_get(2)?,
        scopes: r.try_get(3)?,
        created_ms: r.try_get(4)?,
        disabled_ms: r.try_get(5)?,
        totp_sealed: r.try_get(6)?,
        totp_last_step: r.try_get(7)?,
        issuer: r.try_get(8)?,
        subject: r.try_get(9)?,
    })
}

fn client(r: &AnyRow) -> Result<ClientRecord> {
    let uris: String = r.try_get(4)?;
    Ok(ClientRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        kind: r.try_get(2)?,
        secret_hash: r.try_get(3)?,
        redirect_uris: uris.lines().map(str::to_owned).collect(),
        scopes: r.try_get(5)?,
        created_ms: r.try_get(6)?,
        removed_ms: r.try_get(7)?,
        auth_method: r.try_get(8)?,
        tls_identity: r.try_get(9)?,
        dpop: r.try_get(10)?,
        display_name: r.try_get(11)?,
        privacy_url: r.try_get(12)?,
        session_note: r.try_get(13)?,
    })
}

fn family(r: &AnyRow) -> Result<FamilyRecord> {
    Ok(FamilyRecord {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        client_id: r.try_get(2)?,
        jkt: r.try_get(3)?,
        scopes: r.try_get(4)?,
        created_ms: r.try_get(5)?,
        last_used_ms: r.try_get(6)?,
        generation: r.try_get(7)?,
        previous_generation: r.try_get(8)?,
        rotated_ms: r.try_get(9)?,
        revoked_ms: r.try_get(10)?,
        revoke_reason: r.try_get(11)?,
        tier: r.try_get(12)?,
        attest_key: r.try_get(13)?,
        attest_counter: r.try_get(14)?,
    })
}

fn code(r: &AnyRow) -> Result<CodeRecord> {
    Ok(CodeRecord {
        hash: r.try_get(0)?,
        client_id: r.try_get(1)?,
        user_id: r.try_get(2)?,
        redirect_uri: r.try_get(3)?,
        scopes: r.try_get(4)?,
        challenge: r.try_get(5)?,
        dpop_jkt: r.try_get(6)?,
        expires_ms: r.try_get(7)?,
        used_ms: r.try_get(8)?,
        family_id: r.try_get(9)?,
    })
}

/// One atomic statement: insert, or take over an expired entry; a live entry is a replay
/// and changes nothing. True if the key was fresh.
async fn upsert_seen(
    conn: &mut sqlx::AnyConnection,
    key: &[u8],
    expires_ms: i64,
    now_ms: i64,
) -> std::result::Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "INSERT INTO dpop_replay (key, expires_ms) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET expires_ms = excluded.expires_ms \
         WHERE dpop_replay.expires_ms <= $3",
    )
    .bind(key.to_vec())
    .bind(expires_ms)
    .bind(now_ms)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

impl SqlStore {
    async fn exists(&self, tx: &mut Tx, sql: &str, key: &str) -> Result<bool> {
        let n: i64 = sqlx::query(sql)
            .bind(key)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        Ok(n > 0)
    }

    async fn insert_family_in(
        &self,
        tx: &mut Tx,
        f: &FamilyRecord,
        first_token_hash: Vec<u8>,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO refresh_families (id, user_id, client_id, jkt, scopes, created_ms, \
             last_used_ms, generation, previous_generation, rotated_ms, revoked_ms, revoke_reason, \
             tier, attest_key, attest_counter) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, NULL, $9, $10, $11)",
        )
        .bind(f.id.clone())
        .bind(f.user_id.clone())
        .bind(f.client_id.clone())
        .bind(f.jkt.clone())
        .bind(f.scopes.clone())
        .bind(f.created_ms)
        .bind(f.last_used_ms)
        .bind(f.generation)
        .bind(f.tier.clone())
        .bind(f.attest_key.clone())
        .bind(f.attest_counter)
        .execute(&mut **tx)
        .await?;
        self.insert_token_in(tx, first_token_hash, &f.id, f.generation, now_ms)
            .await
    }

    async fn insert_token_in(
        &self,
        tx: &mut Tx,
        hash: Vec<u8>,
        family_id: &str,
        generation: i64,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, family_id, generation, issued_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(family_id)
        .bind(generation)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Marks a user or client inactive with `update` (`$1` = now, `$2` = id) and revokes
    /// every live family whose `family_column` is `id`, with the audit entry, in one
    /// transaction. Returns how many families were revoked.
    async fn deactivate(
        &self,
        update: &str,
        family_column: &'static str,
        reason: &str,
        id: &str,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(update)
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        let revoked = sqlx::query(&format!(
            "UPDATE refresh_families SET revoked_ms = $1, revoke_reason = $2 \
             WHERE {family_column} = $3 AND revoked_ms IS NULL"
        ))
        .bind(now_ms)
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.append(&mut tx, audit.detail("revoked_sessions", revoked), now_ms)
            .await?;
        self.commit(tx).await?;
        Ok(revoked)
    }

    /// A rotation inside the group committer's transaction: the conditional update of
    /// S34, then the new token and the audit entry after `head`. False (nothing written)
    /// if another request rotated the family first or it is revoked.
    pub(crate) async fn rotate_in(
        &self,
        tx: &mut Tx,
        head: &mut Head,
        rot: &RotationWrite,
        audit: AuditEvent,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE refresh_families SET generation = $1, previous_generation = $2, \
             rotated_ms = $3, last_used_ms = $4, attest_counter = COALESCE($7, attest_counter) \
             WHERE id = $5 AND generation = $6 AND revoked_ms IS NULL \
             AND ($7 IS NULL OR attest_counter IS NULL OR attest_counter < $7)",
        )
        .bind(rot.new_generation)
        .bind(rot.previous_generation)
        .bind(rot.rotated_ms)
        .bind(rot.now_ms)
        .bind(rot.family_id.clone())
        .bind(rot.expected_generation)
        .bind(rot.attest_counter)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(false);
        }
        self.insert_token_in(
            tx,
            rot.new_token_hash.clone(),
            &rot.family_id,
            rot.new_generation,
            rot.now_ms,
        )
        .await?;
        self.append_at(tx, head, audit, rot.now_ms).await?;
        Ok(true)
    }

    /// A DPoP replay insert inside the group committer's transaction.
    pub(crate) async fn seen_in(
        &self,
        tx: &mut Tx,
        key: &[u8],
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        Ok(upsert_seen(tx, key, expires_ms, now_ms).await?)
    }

    async fn revoke_in(&self, tx: &mut Tx, id: &str, reason: &str, now_ms: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE refresh_families SET revoked_ms = $1, revoke_reason = $2 \
             WHERE id = $3 AND revoked_ms IS NULL",
        )
        .bind(now_ms)
        .bind(reason)
        .bind(id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

#[async_trait]
impl TokenStore for SqlStore {
    async fn create_user(&self, u: UserRecord, audit: AuditEvent, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if self
            .exists(
                &mut tx,
                "SELECT COUNT(*) FROM users WHERE name = $1",
                &u.name,
            )
            .await?
        {
            return Err(StoreError::Duplicate(format!("user {}", u.name)));
        }
        if let (Some(iss), Some(sub)) = (&u.issuer, &u.subject) {
            let n: i64 =
                sqlx::query("SELECT COUNT(*) FROM users WHERE issuer = $1 AND subject = $2")
                    .bind(iss.clone())
                    .bind(sub.clone())
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
            if n > 0 {
                return Err(StoreError::Duplicate(
                    "user for this issuer and subject".into(),
                ));
            }
        }
        sqlx::query(
            "INSERT INTO users (id, name, password_hash, scopes, created_ms, disabled_ms, \
             totp_sealed, totp_last_step, issuer, subject) \
             VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL, $6, $7)",
        )
        .bind(u.id)
        .bind(u.name)
        .bind(u.password_hash)
        .bind(u.scopes)
        .bind(u.created_ms)
        .bind(u.issuer)
        .bind(u.subject)
        .execute(&mut *tx)
        .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit_additive(tx).await?;
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>> {
        let r = sqlx::query(&format!("{USER_COLUMNS} WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        r.map(|r| user(&r)).transpose()
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>> {
        let r = sqlx::query(&format!("{USER_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        r.map(|r| user(&r)).transpose()
    }

    async fn user_by_subject(&self, issuer: &str, subject: &str) -> Result<Option<UserRecord>> {
        let r = sqlx::query(&format!(
            "{USER_COLUMNS} WHERE issuer = $1 AND subject = $2"
        ))
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.read)
        .await?;
        r.map(|r| user(&r)).transpose()
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(&format!("{USER_COLUMNS} ORDER BY name"))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(user).collect()
    }

    async fn disable_user(&self, id: &str, audit: AuditEvent, now_ms: i64) -> Result<u64> {
        self.deactivate(
            "UPDATE users SET disabled_ms = COALESCE(disabled_ms, $1) WHERE id = $2",
            "user_id",
            "user disabled",
            id,
            audit,
            now_ms,
        )
        .await
    }

    async fn enable_user(&self, id: &str, audit: AuditEvent, now_ms: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT disabled_ms FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let disabled: Option<i64> = row.try_get(0)?;
        if disabled.is_none() {
            return Ok(false);
        }
        sqlx::query("UPDATE users SET disabled_ms = NULL WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    async fn set_user_totp(
        &self,
        id: &str,
        sealed: Vec<u8>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        self.update_one_audited(
            sqlx::query("UPDATE users SET totp_sealed = $1, totp_last_step = NULL WHERE id = $2")
                .bind(sealed)
                .bind(id),
            audit,
            now_ms,
        )
        .await
    }

    async fn consume_totp_step(&self, id: &str, step: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE users SET totp_last_step = $1 \
             WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(id)
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn create_client(&self, c: ClientRecord, audit: AuditEvent, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if self
            .exists(
                &mut tx,
                "SELECT COUNT(*) FROM clients WHERE name = $1",
                &c.name,
            )
            .await?
        {
            return Err(StoreError::Duplicate(format!("client {}", c.name)));
        }
        sqlx::query(
            "INSERT INTO clients (id, name, kind, secret_hash, redirect_uris, scopes, created_ms, \
             removed_ms, auth_method, tls_identity, dpop, display_name, privacy_url, \
             session_note) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11, $12, $13)",
        )
        .bind(c.id)
        .bind(c.name)
        .bind(c.kind)
        .bind(c.secret_hash)
        .bind(c.redirect_uris.join("\n"))
        .bind(c.scopes)
        .bind(c.created_ms)
        .bind(c.auth_method)
        .bind(c.tls_identity)
        .bind(c.dpop)
        .bind(c.display_name)
        .bind(c.privacy_url)
        .bind(c.session_note)
        .execute(&mut *tx)
        .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit_additive(tx).await?;
        Ok(())
    }

    async fn client_by_id(&self, id: &str) -> Result<Option<ClientRecord>> {
        let r = sqlx::query(&format!("{CLIENT_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        r.map(|r| client(&r)).transpose()
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        let rows = sqlx::query(&format!(
            "{CLIENT_COLUMNS} WHERE removed_ms IS NULL ORDER BY name"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(client).collect()
    }

    async fn remove_client(&self, id: &str, audit: AuditEvent, now_ms: i64) -> Result<u64> {
        self.deactivate(
            "UPDATE clients SET removed_ms = $1 WHERE id = $2 AND removed_ms IS NULL",
            "client_id",
            "client removed",
            id,
            audit,
            now_ms,
        )
        .await
    }

    async fn set_client_dpop(
        &self,
        id: &str,
        dpop: Option<&str>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        self.update_one_audited(
            sqlx::query("UPDATE clients SET dpop = $1 WHERE id = $2 AND removed_ms IS NULL")
                .bind(dpop)
                .bind(id),
            audit,
            now_ms,
        )
        .await
    }

    async fn insert_code(&self, c: CodeRecord, audit: AuditEvent, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO auth_codes (hash, client_id, user_id, redirect_uri, scopes, challenge, \
             dpop_jkt, expires_ms, used_ms, family_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)",
        )
        .bind(c.hash)
        .bind(c.client_id)
        .bind(c.user_id)
        .bind(c.redirect_uri)
        .bind(c.scopes)
        .bind(c.challenge)
        .bind(c.dpop_jkt)
        .bind(c.expires_ms)
        .execute(&mut *tx)
        .await?;
        // Expired codes are of no use to anyone; keep the table small.
        sqlx::query("DELETE FROM auth_codes WHERE expires_ms < $1 AND used_ms IS NULL")
            .bind(now_ms - 3_600_000)
            .execute(&mut *tx)
            .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit_additive(tx).await?;
        Ok(())
    }

    async fn code_by_hash(&self, hash: &[u8]) -> Result<Option<CodeRecord>> {
        let r = sqlx::query(&format!("{CODE_COLUMNS} WHERE hash = $1"))
            .bind(hash.to_vec())
            .fetch_optional(&self.read)
            .await?;
        r.map(|r| code(&r)).transpose()
    }

    async fn redeem_code(
        &self,
        hash: &[u8],
        f: FamilyRecord,
        first_token_hash: Vec<u8>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<Redemption> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE auth_codes SET used_ms = $1, family_id = $2 WHERE hash = $3 AND used_ms IS NULL",
        )
        .bind(now_ms)
        .bind(f.id.clone())
        .bind(hash.to_vec())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            // Replayed code: revoke what the first redemption created (RFC 6749 §4.1.2).
            let earlier: Option<String> =
                sqlx::query("SELECT family_id FROM auth_codes WHERE hash = $1")
                    .bind(hash.to_vec())
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get::<Option<String>, _>(0))
                    .transpose()?
                    .flatten();
            let mut revoked = None;
            if let Some(id) = &earlier {
                if self
                    .revoke_in(&mut tx, id, "authorization code replayed", now_ms)
                    .await?
                {
                    revoked = Some(id.clone());
                }
            }
            let mut event = audit.detail("reason", "code replayed");
            event.outcome = keygate_audit::Outcome::Denied;
            self.append(&mut tx, event, now_ms).await?;
            self.commit(tx).await?;
            return Ok(Redemption::AlreadyUsed {
                revoked_family: revoked,
            });
        }
        self.insert_family_in(&mut tx, &f, first_token_hash, now_ms)
            .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit_additive(tx).await?;
        Ok(Redemption::Redeemed)
    }

    async fn insert_family(
        &self,
        f: FamilyRecord,
        first_token_hash: Vec<u8>,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        self.insert_family_in(&mut tx, &f, first_token_hash, now_ms)
            .await?;
        self.append(&mut tx, audit, now_ms).await?;
        self.commit_additive(tx).await?;
        Ok(())
    }

    async fn refresh_token(&self, hash: &[u8]) -> Result<Option<(String, i64)>> {
        let r = sqlx::query("SELECT family_id, generation FROM refresh_tokens WHERE hash = $1")
            .bind(hash.to_vec())
            .fetch_optional(&self.read)
            .await?;
        r.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    async fn family(&self, id: &str) -> Result<Option<FamilyRecord>> {
        let r = sqlx::query(&format!("{FAMILY_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        r.map(|r| family(&r)).transpose()
    }

    async fn rotate_family(&self, rotation: RotationWrite, audit: AuditEvent) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        let op = Op::Rotate {
            rotation,
            audit,
            reply,
        };
        self.submit(op).await;
        Ok(answer.await.map_err(|_| lost())?? == Answer::Yes)
    }

    async fn revoke_family(
        &self,
        id: &str,
        reason: &str,
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let changed = self.revoke_in(&mut tx, id, reason, now_ms).await?;
        if changed {
            self.append(&mut tx, audit, now_ms).await?;
            self.commit(tx).await?;
        }
        Ok(changed)
    }

    async fn list_families(
        &self,
        user_id: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<FamilyRecord>> {
        let live = if include_revoked {
            ""
        } else {
            " AND revoked_ms IS NULL"
        };
        let rows =
            match user_id {
                Some(u) => sqlx::query(&format!(
                    "{FAMILY_COLUMNS} WHERE user_id = $1{live} ORDER BY created_ms DESC LIMIT 1000"
                ))
                .bind(u)
                .fetch_all(&self.read)
                .await?,
                None => {
                    sqlx::query(&format!(
                        "{FAMILY_COLUMNS} WHERE 1 = 1{live} ORDER BY created_ms DESC LIMIT 1000"
                    ))
                    .fetch_all(&self.read)
                    .await?
                }
            };
        rows.iter().map(family).collect()
    }

    async fn family_revoked(&self, id: &str) -> Result<bool> {
        let r = sqlx::query(
            "SELECT f.revoked_ms, u.disabled_ms, c.removed_ms, c.id FROM refresh_families f \
             LEFT JOIN users u ON u.id = f.user_id \
             LEFT JOIN clients c ON c.id = f.client_id WHERE f.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = r else { return Ok(true) };
        let revoked: Option<i64> = r.try_get(0)?;
        let disabled: Option<i64> = r.try_get(1)?;
        let removed: Option<i64> = r.try_get(2)?;
        let client: Option<String> = r.try_get(3)?;
        Ok(revoked.is_some() || disabled.is_some() || removed.is_some() || client.is_none())
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, alg, sealed_private, state, created_ms, changed_ms FROM signing_keys ORDER BY created_ms",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRecord {
                    kid: r.try_get(0)?,
                    alg: r.try_get(1)?,
                    sealed_private: r.try_get(2)?,
                    state: r.try_get(3)?,
                    created_ms: r.try_get(4)?,
                    changed_ms: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn save_signing_keys(
        &self,
        keys: Vec<SigningKeyRecord>,
        expected: &[String],
        audit: AuditEvent,
        now_ms: i64,
    ) -> Result<bool> {
        // Write transactions are serialised (one SQLite writer; the audit head row locked
        // on PostgreSQL), so the check and the replacement cannot interleave with another.
        let mut tx = self.begin_write().await?;
        let mut stored: Vec<String> = sqlx::query("SELECT kid FROM signing_keys")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()?;
        let mut wanted = expected.to_vec();
        stored.sort();
        wanted.sort();
        if stored != wanted {
            return Ok(false);
        }
        sqlx::query("DELETE FROM signing_keys")
            .execute(&mut *tx)
            .await?;
        for k in keys {
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, sealed_private, state, created_ms, changed_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(k.kid)
            .bind(k.alg)
            .bind(k.sealed_private)
            .bind(k.state)
            .bind(k.created_ms)
            .bind(k.changed_ms)
            .execute(&mut *tx)
            .await?;
        }
        self.append(&mut tx, audit, now_ms).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    async fn dpop_seen(&self, key: &[u8], expires_ms: i64, now_ms: i64) -> Result<bool> {
        match self.backend {
            // SQLite has one writer: replay inserts share its commits (and fsyncs).
            Backend::Sqlite => {
                let (reply, answer) = oneshot::channel();
                let op = Op::Seen {
                    key: key.to_vec(),
                    expires_ms,
                    now_ms,
                    reply,
                };
                self.submit(op).await;
                Ok(answer.await.map_err(|_| lost())?? == Answer::Yes)
            }
            // PostgreSQL commits concurrent statements in parallel (and groups their WAL
            // flushes itself); a replay check must not queue behind the audit chain's lock.
            Backend::Postgres => {
                let mut conn = self.write.acquire().await?;
                Ok(upsert_seen(&mut conn, key, expires_ms, now_ms).await?)
            }
        }
    }

    async fn purge_dpop(&self, now_ms: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM dpop_replay WHERE expires_ms <= $1")
                .bind(now_ms)
                .execute(&self.write)
                .await?
                .rows_affected(),
        )
    }
}
