//! What the gatekeeper needs from the rest of the server, behind keygate-proxy's traits:
//! the token check ([`TokenVerifier`]), route keys from the vault ([`VaultKeys`]), quota
//! counters and cost budgets in the store ([`StoreQuota`], [`StoreBudgets`]), and the tasks
//! that write summed usage and spending to the store.

use std::sync::Arc;

use axum::http::{HeaderValue, header};
use keygate_auth::error::{AuthError, ErrorCode};
use keygate_auth::ids::UserId;
use keygate_auth::resource::{ResourceRequest, VerifiedAccess};
use keygate_proxy::RouteName;
use keygate_proxy::budget::{BudgetLedger, BudgetUnavailable, Spent};
use keygate_proxy::gatekeeper::{AccessRequest, AccessVerifier, KeySource, KeyUnavailable};
use keygate_proxy::limit::{LimitKey, QuotaDecision, QuotaStore, QuotaUnavailable, QuotaWindow};
use keygate_vault::now_ms;
use secrecy::SecretString;
use smallvec::SmallVec;

use crate::oauth::TokenService;

/// The token service's check of the access token, its DPoP proof and revocation; refused
/// tokens and proofs are signalled to the monitor with the caller's address.
pub struct TokenVerifier(pub Arc<TokenService>);

#[async_trait::async_trait]
impl AccessVerifier for TokenVerifier {
    async fn verify(&self, request: AccessRequest<'_>) -> Result<VerifiedAccess, AuthError> {
        {
            let authorization = values(request.headers.get_all(header::AUTHORIZATION));
            let dpop = values(request.headers.get_all("dpop"));
            let verified = self
                .0
                .verify_request(&ResourceRequest {
                    method: request.method.as_str(),
                    target: request.target,
                    authorization: &authorization,
                    dpop: &dpop,
                    client_cert: request.client_cert,
                })
                .await;
            if let (Err(e), Some(m)) = (&verified, self.0.monitor.get()) {
                let ip = request.peer;
                match e.code() {
                    ErrorCode::InvalidToken => {
                        m.signal(keygate_monitor::Signal::TokenRefused { ip, client: None });
                    }
                    ErrorCode::InvalidDpopProof => {
                        m.signal(keygate_monitor::Signal::ProofRefused {
                            ip,
                            client: None,
                            user: None,
                        });
                    }
                    _ => {}
                }
            }
            verified
        }
    }
}

/// A header field's values, held inline while there are at most two: a request has one
/// `Authorization` and at most one `DPoP` field (more are refused), so the token check
/// collects them without an allocation.
fn values(all: axum::http::header::GetAll<'_, HeaderValue>) -> SmallVec<[&[u8]; 2]> {
    all.iter().map(HeaderValue::as_bytes).collect()
}

/// Route keys: the current version from the vault, with the store's change epoch so a
/// rotation through this process is used by the very next call.
pub struct VaultKeys(pub Arc<keygate_vault::Vault>);

#[async_trait::async_trait]
impl KeySource for VaultKeys {
    fn epoch(&self) -> u64 {
        self.0.store().change_epoch()
    }

    async fn key(&self, secret: &str) -> Result<SecretString, KeyUnavailable> {
        self.0
            .resolve(secret)
            .await
            .map(|(_, value)| value)
            .map_err(|e| KeyUnavailable(e.to_string()))
    }
}

/// Quota counters in the store: one atomic statement per counted call, shared by every
/// replica and kept across restarts. An unreachable store refuses the call (S35).
pub struct StoreQuota(pub Arc<dyn keygate_store::Store>);

#[async_trait::async_trait]
impl QuotaStore for StoreQuota {
    async fn consume(
        &self,
        key: &LimitKey,
        window: QuotaWindow,
        limit: u64,
    ) -> Result<QuotaDecision, QuotaUnavailable> {
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self
            .0
            .quota_consume(
                key.as_str(),
                to_i64(window.start),
                to_i64(window.end),
                to_i64(limit),
            )
            .await
        {
            Ok(Some(remaining)) => Ok(QuotaDecision::Allowed {
                remaining: u64::try_from(remaining).unwrap_or(0),
            }),
            Ok(None) => Ok(QuotaDecision::Exhausted),
            Err(e) => {
                tracing::error!(error = %e, "quota store unavailable");
                Err(QuotaUnavailable)
            }
        }
    }
}

/// Cost budget spending in the store, read by [`keygate_proxy::Budgets`] through its
/// cache (at most one read per user and budgeted route per second). An unreachable store
/// refuses budgeted calls (fail closed, like quotas).
pub struct StoreBudgets(pub Arc<dyn keygate_store::Store>);

#[async_trait::async_trait]
impl BudgetLedger for StoreBudgets {
    async fn spent(
        &self,
        user: &UserId,
        route: &RouteName,
        month_first_day: i64,
        today: i64,
    ) -> Result<Spent, BudgetUnavailable> {
        match self
            .0
            .budget_spent(user.as_str(), route.as_str(), month_first_day, today)
            .await
        {
            Ok(s) => Ok(Spent {
                day: u64::try_from(s.day).unwrap_or(0),
                month: u64::try_from(s.range).unwrap_or(0),
            }),
            Err(e) => {
                tracing::error!(error = %e, "budget store unavailable");
                Err(BudgetUnavailable)
            }
        }
    }
}

/// How often summed costs are written to the store, and how long a replica reuses a
/// user's spending as read from it: together they bound how far a budget can be
/// overshot (see [`keygate_proxy::budget`]).
pub const BUDGET_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Days of budget spending kept: the current month needs at most 31.
const BUDGET_KEEP_DAYS: i64 = 62;

/// Writes the costs [`keygate_proxy::Budgets`] summed since the last tick to the store,
/// once every [`BUDGET_FLUSH`]; a batch that fails is put back and retried with the next
/// (spending that is never written would let users overshoot). Drops days older than
/// [`BUDGET_KEEP_DAYS`] once an hour. Ends after a last write once it is the only holder.
pub(super) async fn flush_budgets(
    store: Arc<dyn keygate_store::Store>,
    budgets: Arc<keygate_proxy::Budgets>,
) {
    let mut tick = tokio::time::interval(BUDGET_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let last = Arc::strong_count(&budgets) == 1;
        let taken = budgets.take();
        if !taken.is_empty() {
            let rows = taken
                .iter()
                .map(|s| keygate_store::BudgetRow {
                    user_id: s.user.as_str().to_owned(),
                    route: s.route.as_str().to_owned(),
                    day: s.day,
                    cost: i64::try_from(s.cost).unwrap_or(i64::MAX),
                })
                .collect();
            if let Err(e) = store.budget_add(rows).await {
                tracing::error!(error = %e, "writing budget spending failed; retrying with the next batch");
                if !last {
                    budgets.restore(taken);
                }
            }
        }
        if ticks % 3600 == 1 {
            let today = now_ms() / 86_400_000;
            if let Err(e) = store.purge_budgets(today - BUDGET_KEEP_DAYS).await {
                tracing::warn!(error = %e, "purging old budget spending failed");
            }
        }
        if last {
            return;
        }
    }
}

/// Usage aggregation off the hot path: the forwarder sums events in memory per (minute,
/// user, route, status class); this task writes what has been summed once a second, and a
/// last time when it is the sink's only holder (the proxy has shut down).
pub(super) async fn flush_usage(
    store: Arc<dyn keygate_store::Store>,
    sink: Arc<keygate_proxy::usage::SummingUsageSink>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = Arc::strong_count(&sink) == 1;
        let rows: Vec<_> = sink
            .take()
            .into_iter()
            .map(|(key, sums)| keygate_store::UsageRow {
                minute: key.minute,
                user_id: key.user.as_str().to_owned(),
                route: key.route.as_str().to_owned(),
                status_class: key.status_class.as_str().to_owned(),
                calls: sums.calls,
                latency_ms_sum: sums.latency_ms_sum,
                latency_ms_max: sums.latency_ms_max,
            })
            .collect();
        if !rows.is_empty() {
            if let Err(e) = store.record_usage(rows).await {
                tracing::error!(error = %e, "writing proxy usage failed; this batch is lost");
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn every_value_of_a_field_is_passed_to_the_token_check() {
        for n in 0..4 {
            let mut headers = HeaderMap::new();
            for i in 0..n {
                headers.append(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer t{i}")).unwrap(),
                );
            }
            let got = values(headers.get_all(header::AUTHORIZATION));
            assert_eq!(got.len(), n, "{n} fields");
            for (i, value) in got.iter().enumerate() {
                assert_eq!(*value, format!("Bearer t{i}").as_bytes());
            }
        }
    }
}
