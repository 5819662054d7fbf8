//! [`BudgetStore`] on SQLite and PostgreSQL, with the same SQL for both (see `sql.rs`).

use async_trait::async_trait;
use sqlx::Row;

use crate::budgets::{BudgetRow, BudgetSpent, BudgetStore};
use crate::{Result, SqlStore, StoreError};

#[async_trait]
impl BudgetStore for SqlStore {
    async fn budget_add(&self, rows: Vec<BudgetRow>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // A plain transaction on the writer: spending is not a security event and must
        // not wait for the audit chain.
        let mut tx = self.begin_plain().await?;
        for r in rows {
            let added = sqlx::query(
                "INSERT INTO budget_spend (user_id, route, day, spent) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, route, day) DO UPDATE SET \
                 spent = budget_spend.spent + excluded.spent",
            )
            .bind(r.user_id)
            .bind(r.route)
            .bind(r.day)
            .bind(r.cost.max(0))
            .execute(&mut *tx)
            .await;
            self.note(added.map_err(StoreError::from))?;
        }
        self.commit_additive(tx).await
    }

    async fn budget_spent(
        &self,
        user_id: &str,
        route: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<BudgetSpent> {
        // At most one row per day of the range: summed here, since SUM over BIGINT is
        // NUMERIC on PostgreSQL, which the `Any` driver does not decode.
        let rows = sqlx::query(
            "SELECT day, spent FROM budget_spend \
             WHERE user_id = $1 AND route = $2 AND day >= $3 AND day <= $4",
        )
        .bind(user_id)
        .bind(route)
        .bind(from_day)
        .bind(to_day)
        .fetch_all(&self.read)
        .await?;
        let mut spent = BudgetSpent::default();
        for row in &rows {
            let day: i64 = row.try_get(0)?;
            let cost: i64 = row.try_get(1)?;
            spent.range = spent.range.saturating_add(cost);
            if day == to_day {
                spent.day = spent.day.saturating_add(cost);
            }
        }
        Ok(spent)
    }

    async fn purge_budgets(&self, before_day: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM budget_spend WHERE day < $1")
            .bind(before_day)
            .execute(&self.write)
            .await?
            .rows_affected())
    }
}
