//! Group commit: hot small writes that arrive while one transaction is committing share
//! the next transaction, and so its one `fsync` (SQLite with `synchronous = FULL`) or its
//! one hold of the audit chain's lock (PostgreSQL).
//!
//! Each write runs inside its own `SAVEPOINT`, so one that fails is rolled back alone and
//! the others still commit. Nobody hears back before the commit: a caller told "rotated"
//! or "fresh" holds an answer that is on disk (S33), and if the commit fails every caller
//! in the batch gets the error and nothing of the batch is kept.
//!
//! A write that arrives while the committer is idle runs at once, alone: batching never
//! adds a wait, it only lets writes that would have queued for the one writer connection
//! share its commit.

use keygate_audit::AuditEvent;
use tokio::sync::{mpsc, oneshot};

use crate::sql::Tx;
use crate::tokens::RotationWrite;
use crate::{Result, SqlStore, StoreError};

/// The most writes in one transaction; more wait for the next one.
const MAX_BATCH: usize = 256;

/// One write the committer can batch.
pub(crate) enum Op {
    /// The compare-and-set rotation of S34 with its new token and audit entry.
    Rotate {
        rotation: RotationWrite,
        audit: AuditEvent,
        reply: Reply,
    },
    /// A DPoP replay-cache insert (S14).
    Seen {
        key: Vec<u8>,
        expires_ms: i64,
        now_ms: i64,
        reply: Reply,
    },
    /// One count against a quota window (SQLite).
    Quota {
        key: String,
        start: i64,
        end: i64,
        limit: i64,
        reply: Reply,
    },
}

/// What a batched write answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Rotated; a fresh replay key.
    Yes,
    /// Lost the race or revoked; a replayed key; a quota already used up.
    No,
    /// Counted, with this much of the quota left.
    Remaining(i64),
}

pub(crate) type Reply = oneshot::Sender<Result<Answer>>;

impl Op {
    fn reply(self, result: Result<Answer>) {
        let reply = match self {
            Op::Rotate { reply, .. } | Op::Seen { reply, .. } | Op::Quota { reply, .. } => reply,
        };
        // The caller may have gone away (its request was cancelled); the write stands.
        let _ = reply.send(result);
    }
}

/// The sending side, held by every clone of a [`SqlStore`].
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    tx: mpsc::UnboundedSender<Op>,
}

impl GroupCommit {
    /// Starts the committer on the current Tokio runtime. `store` must not itself hold a
    /// `GroupCommit`, or the committer would keep its own channel open forever.
    pub(crate) fn start(store: SqlStore) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Op>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                store.run_batch(std::mem::take(&mut batch)).await;
            }
        });
        Self { tx }
    }
}

/// The reply when the committer dropped a write without answering (it cannot, short of a
/// panic in the driver); the caller must treat the write as failed.
pub(crate) fn lost() -> StoreError {
    StoreError::Corrupt("the group committer stopped before answering".into())
}

impl SqlStore {
    /// Hands `op` to the committer; runs it alone, here, if there is none (inside the
    /// committer, or when the runtime that started it has gone). Its answer arrives on
    /// the op's reply channel either way.
    pub(crate) async fn submit(&self, op: Op) {
        let op = match &self.group {
            Some(group) => match group.tx.send(op) {
                Ok(()) => return,
                Err(refused) => refused.0,
            },
            None => op,
        };
        self.run_batch(vec![op]).await;
    }

    /// Runs `batch` in one write transaction, one savepoint per write, then answers each.
    pub(crate) async fn run_batch(&self, batch: Vec<Op>) {
        let mut tx = match self.begin_write().await {
            Ok(tx) => tx,
            Err(e) => {
                let message = e.to_string();
                for op in batch {
                    op.reply(Err(StoreError::Corrupt(message.clone())));
                }
                return;
            }
        };
        let mut results = Vec::with_capacity(batch.len());
        for op in &batch {
            match self.run_one(&mut tx, op).await {
                Ok(result) => results.push(result),
                Err(e) => {
                    // The savepoint machinery itself failed: the transaction's state is
                    // unknown, so none of it is kept (dropping `tx` rolls back).
                    let message = format!("batch aborted: {e}");
                    for op in batch {
                        op.reply(Err(StoreError::Corrupt(message.clone())));
                    }
                    return;
                }
            }
        }
        match tx.commit().await {
            Ok(()) => {
                for (op, result) in batch.into_iter().zip(results) {
                    op.reply(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "group commit failed");
                let message = format!("commit failed: {e}");
                for op in batch {
                    op.reply(Err(StoreError::Corrupt(message.clone())));
                }
            }
        }
    }

    /// One write inside its savepoint: kept if it succeeds, rolled back alone if not.
    /// The outer error is a failure of the savepoint statements themselves.
    async fn run_one(&self, tx: &mut Tx, op: &Op) -> Result<Result<Answer>> {
        sqlx::query("SAVEPOINT keygate_op")
            .execute(&mut **tx)
            .await?;
        let result = match op {
            Op::Rotate {
                rotation, audit, ..
            } => yes_no(self.rotate_in(tx, rotation, audit.clone()).await),
            Op::Seen {
                key,
                expires_ms,
                now_ms,
                ..
            } => yes_no(self.seen_in(tx, key, *expires_ms, *now_ms).await),
            Op::Quota {
                key,
                start,
                end,
                limit,
                ..
            } => self
                .quota_in(tx, key, *start, *end, *limit)
                .await
                .map(|left| left.map_or(Answer::No, Answer::Remaining)),
        };
        if result.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT keygate_op")
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT keygate_op")
            .execute(&mut **tx)
            .await?;
        Ok(result)
    }
}

fn yes_no(result: Result<bool>) -> Result<Answer> {
    result.map(|yes| if yes { Answer::Yes } else { Answer::No })
}
