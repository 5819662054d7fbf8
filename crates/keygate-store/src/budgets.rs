//! The proxy's cost budgets: metered spending per (user, route, UTC day), added in
//! batches by every replica and read back to check a user's daily and monthly budget.
//!
//! Spending is not a security event (no audit entry) and no in-process cache of
//! security state depends on it, so writes do not move [`crate::Store::change_epoch`].

use async_trait::async_trait;

use crate::Result;

/// Cost to add to one (user, route, day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRow {
    pub user_id: String,
    pub route: String,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Cost units to add (a negative value adds nothing).
    pub cost: i64,
}

/// What one user spent on one route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetSpent {
    /// On the last day of the range asked for.
    pub day: i64,
    /// Over the whole range.
    pub range: i64,
}

/// Cost budget spending, shared by every replica and kept across restarts.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Adds a batch of costs in one transaction (each row adds to its day's total).
    async fn budget_add(&self, rows: Vec<BudgetRow>) -> Result<()>;

    /// What `user_id` spent on `route` on day `to_day`, and over the days
    /// `from_day..=to_day`.
    async fn budget_spent(
        &self,
        user_id: &str,
        route: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<BudgetSpent>;

    /// Deletes the spending of days before `before_day`; returns how many rows.
    async fn purge_budgets(&self, before_day: i64) -> Result<u64>;
}
