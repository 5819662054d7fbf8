//! Group commit: hot small writes that arrive while one transaction is committing share
//! the next transaction, and so its one `fsync` (SQLite with `synchronous = FULL`) or its
//! one hold of the audit chain's lock (PostgreSQL).
//!
//! Nobody hears back before the commit: a caller told "rotated" or "fresh" holds an answer
//! that is on disk (S33). If a write of the batch fails, nothing of the batch is kept and
//! its writes run again one by one, so only the failing write fails.
//!
//! A write that arrives while the committer is idle runs at once, alone: batching never
//! adds a wait, it only lets writes that would have queued for the one writer connection
//! share its commit.

use keygate_audit::AuditEvent;
use tokio::sync::{mpsc, oneshot};

use crate::sql::Head;
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

    /// Runs `batch` in one write transaction and answers each write after the commit.
    ///
    /// The audit chain's head is read once and kept in memory through the batch, then
    /// written once. If any write fails, nothing of the batch is kept and each write is
    /// run again alone, so only the failing one fails (failures are rare: a duplicate
    /// token hash, a database error).
    pub(crate) async fn run_batch(&self, batch: Vec<Op>) {
        if batch.len() > 1 {
            match self.try_batch(&batch).await {
                Ok(results) => {
                    for (op, result) in batch.into_iter().zip(results) {
                        op.reply(Ok(result));
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, writes = batch.len(), "grouped write failed; running its writes one by one");
                }
            }
        }
        for op in batch {
            let result = self
                .try_batch(std::slice::from_ref(&op))
                .await
                .and_then(|mut r| r.pop().ok_or_else(lost));
            op.reply(result);
        }
    }

    /// One transaction for all of `ops`: every answer, or the first error (and nothing
    /// written).
    async fn try_batch(&self, ops: &[Op]) -> Result<Vec<Answer>> {
        let result = self.try_batch_in_one(ops).await;
        self.note(result)
    }

    async fn try_batch_in_one(&self, ops: &[Op]) -> Result<Vec<Answer>> {
        let mut tx = self.begin_write().await?;
        let mut head: Option<Head> = None;
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            answers.push(match op {
                Op::Rotate {
                    rotation, audit, ..
                } => {
                    let head = match &mut head {
                        Some(h) => h,
                        None => head.insert(self.head(&mut tx).await?),
                    };
                    yes_no(self.rotate_in(&mut tx, head, rotation, audit.clone()).await)?
                }
                Op::Seen {
                    key,
                    expires_ms,
                    now_ms,
                    ..
                } => yes_no(self.seen_in(&mut tx, key, *expires_ms, *now_ms).await)?,
                Op::Quota {
                    key,
                    start,
                    end,
                    limit,
                    ..
                } => self
                    .quota_in(&mut tx, key, *start, *end, *limit)
                    .await?
                    .map_or(Answer::No, Answer::Remaining),
            });
        }
        if let Some(head) = head {
            self.set_head(&mut tx, head).await?;
        }
        tx.commit().await?;
        Ok(answers)
    }
}

fn yes_no(result: Result<bool>) -> Result<Answer> {
    result.map(|yes| if yes { Answer::Yes } else { Answer::No })
}
