//! The audit log's data model: events, hash-chained entries, keyed references to secrets
//! and signed checkpoints.
//!
//! This crate is pure: it computes and checks hashes, it does not store anything. The store
//! appends an [`AuditEvent`] in the same transaction as the state change it describes
//! (requirement S23) by calling [`AuditEntry::chain`] with the current head of the chain.
//!
//! ```
//! use keygate_audit::{AuditEntry, AuditEvent, Outcome, GENESIS, verify_chain};
//!
//! let e1 = AuditEntry::chain(1, GENESIS, 1_700_000_000_000,
//!     AuditEvent::new("admin:root", "secret.put", Outcome::Success).target("openai"));
//! let e2 = AuditEntry::chain(2, e1.hash, 1_700_000_000_500,
//!     AuditEvent::new("admin:root", "secret.get", Outcome::Success).target("openai"));
//! let report = verify_chain([e1, e2].into_iter().map(Ok::<_, std::convert::Infallible>), &[])?;
//! assert_eq!(report.entries, 2);
//! # Ok::<(), keygate_audit::VerifyError>(())
//! ```

mod checkpoint;
mod keyed;

pub use checkpoint::{Checkpoint, CheckpointKey};
pub use keyed::AuditKey;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0u8; 32];

const DOMAIN: &[u8] = b"keygate-audit-v1";

/// How a security event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

/// A security event, before it has a place in the chain.
///
/// Nothing in here may be a secret: values that need a reference are passed through
/// [`AuditKey::reference`] first. `details` is a JSON object of plain facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl AuditEvent {
    pub fn new(actor: impl Into<String>, action: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: None,
            outcome,
            details: serde_json::Map::new(),
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The canonical text of `details` as it is stored and hashed.
    pub fn details_json(&self) -> String {
        // serde_json's Map keeps keys sorted (no `preserve_order` feature), so this is
        // canonical for a given set of details.
        serde_json::Value::Object(self.details.clone()).to_string()
    }
}

/// One entry of the chain as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub seq: i64,
    pub ts_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: Outcome,
    /// Canonical JSON text of the details object, exactly as hashed.
    pub details: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditEntry {
    /// Places `event` after the entry whose hash is `prev_hash`.
    pub fn chain(seq: i64, prev_hash: [u8; 32], ts_ms: i64, event: AuditEvent) -> Self {
        let details = event.details_json();
        let mut entry = AuditEntry {
            seq,
            ts_ms,
            actor: event.actor,
            action: event.action,
            target: event.target,
            outcome: event.outcome,
            details,
            prev_hash,
            hash: [0; 32],
        };
        entry.hash = entry.compute_hash();
        entry
    }

    /// The hash this entry should carry given its fields and `prev_hash`.
    ///
    /// Every field is length-prefixed, so no choice of field contents can make two
    /// different entries encode alike.
    pub fn compute_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(self.prev_hash);
        h.update(self.seq.to_be_bytes());
        h.update(self.ts_ms.to_be_bytes());
        for field in [
            Some(self.actor.as_str()),
            Some(self.action.as_str()),
            self.target.as_deref(),
            Some(self.outcome.as_str()),
            Some(self.details.as_str()),
        ] {
            match field {
                None => h.update([0u8]),
                Some(s) => {
                    h.update([1u8]);
                    h.update((s.len() as u64).to_be_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        h.finalize().into()
    }

    /// JSON form used by `audit export` and the admin API: one object per entry, so a
    /// CR or LF inside a field is escaped and can never start a forged line.
    pub fn to_json(&self) -> serde_json::Value {
        let details: serde_json::Value =
            serde_json::from_str(&self.details).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "seq": self.seq,
            "ts_ms": self.ts_ms,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome.as_str(),
            "details": details,
            "prev_hash": hex::encode(self.prev_hash),
            "hash": hex::encode(self.hash),
        })
    }
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub head_seq: i64,
    pub head_hash: [u8; 32],
    pub checkpoints_checked: usize,
}

/// Why the chain does not verify. `seq` names the first bad entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("entry {seq}: hash does not match its contents (modified entry)")]
    Modified { seq: i64 },
    #[error(
        "entry {seq}: expected sequence number {expected} (entry deleted, inserted or reordered)"
    )]
    Sequence { seq: i64, expected: i64 },
    #[error(
        "entry {seq}: previous-hash link broken (entry deleted, inserted or reordered before it)"
    )]
    Link { seq: i64 },
    #[error(
        "checkpoint at entry {seq}: the log ends at entry {head} (log truncated after a checkpoint)"
    )]
    Truncated { seq: i64, head: i64 },
    #[error(
        "checkpoint at entry {seq}: the entry's hash differs from the checkpoint (entries rewritten)"
    )]
    CheckpointMismatch { seq: i64 },
    #[error("checkpoint at entry {seq}: signature invalid (checkpoint file tampered)")]
    CheckpointForged { seq: i64 },
    #[error("reading entries failed: {0}")]
    Source(String),
}

impl VerifyError {
    /// The sequence number of the first bad entry or checkpoint, if any.
    pub fn seq(&self) -> Option<i64> {
        match self {
            VerifyError::Modified { seq }
            | VerifyError::Sequence { seq, .. }
            | VerifyError::Link { seq }
            | VerifyError::Truncated { seq, .. }
            | VerifyError::CheckpointMismatch { seq }
            | VerifyError::CheckpointForged { seq } => Some(*seq),
            VerifyError::Source(_) => None,
        }
    }
}

/// Checks a chain one entry at a time, in sequence order, so a log of any length
/// verifies in constant memory.
///
/// `checkpoints` must already have had their signatures checked
/// ([`Checkpoint::verify`]); the verifier checks that each one is still backed by the log.
#[derive(Debug)]
pub struct ChainVerifier {
    pending: std::collections::VecDeque<Checkpoint>,
    expected_seq: i64,
    prev: [u8; 32],
    count: u64,
    checked: usize,
}

impl ChainVerifier {
    pub fn new(checkpoints: &[Checkpoint]) -> Self {
        let mut pending: Vec<Checkpoint> = checkpoints.to_vec();
        pending.sort_by_key(|c| c.seq);
        Self {
            pending: pending.into(),
            expected_seq: 1,
            prev: GENESIS,
            count: 0,
            checked: 0,
        }
    }

    /// Checks the next entry.
    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), VerifyError> {
        if entry.seq != self.expected_seq {
            return Err(VerifyError::Sequence {
                seq: entry.seq,
                expected: self.expected_seq,
            });
        }
        if entry.compute_hash() != entry.hash {
            return Err(VerifyError::Modified { seq: entry.seq });
        }
        if entry.prev_hash != self.prev {
            return Err(VerifyError::Link { seq: entry.seq });
        }
        while let Some(cp) = self.pending.front() {
            if cp.seq > entry.seq {
                break;
            }
            if cp.seq == entry.seq && cp.head_hash != entry.hash {
                return Err(VerifyError::CheckpointMismatch { seq: cp.seq });
            }
            self.pending.pop_front();
            self.checked += 1;
        }
        self.prev = entry.hash;
        self.expected_seq += 1;
        self.count += 1;
        Ok(())
    }

    /// Ends the walk: a checkpoint beyond the last entry means the log was truncated.
    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        let head_seq = self.expected_seq - 1;
        if let Some(cp) = self.pending.front() {
            return Err(VerifyError::Truncated {
                seq: cp.seq,
                head: head_seq,
            });
        }
        Ok(VerifyReport {
            entries: self.count,
            head_seq,
            head_hash: self.prev,
            checkpoints_checked: self.checked,
        })
    }
}

/// Verifies a whole chain with [`ChainVerifier`].
pub fn verify_chain<I, E>(
    entries: I,
    checkpoints: &[Checkpoint],
) -> Result<VerifyReport, VerifyError>
where
    I: IntoIterator<Item = Result<AuditEntry, E>>,
    E: std::fmt::Display,
{
    let mut v = ChainVerifier::new(checkpoints);
    for entry in entries {
        let entry = entry.map_err(|e| VerifyError::Source(e.to_string()))?;
        v.push(&entry)?;
    }
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        let mut prev = GENESIS;
        for seq in 1..=n {
            let e = AuditEntry::chain(
                seq,
                prev,
                1000 + seq,
                AuditEvent::new("admin:root", "secret.put", Outcome::Success)
                    .target(format!("s{seq}"))
                    .detail("version", seq),
            );
            prev = e.hash;
            out.push(e);
        }
        out
    }

    fn verify(entries: Vec<AuditEntry>, cps: &[Checkpoint]) -> Result<VerifyReport, VerifyError> {
        verify_chain(entries.into_iter().map(Ok::<_, Infallible>), cps)
    }

    #[test]
    fn intact_chain_verifies() {
        let r = verify(chain(5), &[]).unwrap();
        assert_eq!(r.entries, 5);
        assert_eq!(r.head_seq, 5);
    }

    #[test]
    fn modified_entry_is_named() {
        let mut c = chain(5);
        c[2].target = Some("other".into());
        assert_eq!(verify(c, &[]), Err(VerifyError::Modified { seq: 3 }));
    }

    #[test]
    fn modified_details_are_detected() {
        let mut c = chain(5);
        c[1].details = r#"{"version":99}"#.into();
        assert_eq!(verify(c, &[]), Err(VerifyError::Modified { seq: 2 }));
    }

    #[test]
    fn deleted_entry_is_detected() {
        let mut c = chain(5);
        c.remove(2);
        assert_eq!(
            verify(c, &[]),
            Err(VerifyError::Sequence {
                seq: 4,
                expected: 3
            })
        );
    }

    #[test]
    fn deleted_entry_with_renumbering_breaks_the_link() {
        let mut c = chain(5);
        c.remove(2);
        // An attacker renumbers and rehashes the moved entries but cannot fix prev links
        // without rewriting the whole tail.
        for (i, e) in c.iter_mut().enumerate().skip(2) {
            e.seq = i as i64 + 1;
            e.hash = e.compute_hash();
        }
        assert_eq!(verify(c, &[]), Err(VerifyError::Link { seq: 3 }));
    }

    #[test]
    fn inserted_entry_is_detected() {
        let mut c = chain(5);
        let forged =
            AuditEntry::chain(3, c[1].hash, 1, AuditEvent::new("x", "y", Outcome::Success));
        c.insert(2, forged);
        for (i, e) in c.iter_mut().enumerate().skip(3) {
            e.seq = i as i64 + 1;
            e.hash = e.compute_hash();
        }
        assert_eq!(verify(c, &[]), Err(VerifyError::Link { seq: 4 }));
    }

    #[test]
    fn reordered_entries_are_detected() {
        let mut c = chain(5);
        c.swap(1, 2);
        assert!(matches!(
            verify(c.clone(), &[]),
            Err(VerifyError::Sequence { seq: 3, .. })
        ));
        // Swapping the sequence numbers too changes the hashed contents.
        c[1].seq = 2;
        c[2].seq = 3;
        assert_eq!(verify(c, &[]), Err(VerifyError::Modified { seq: 2 }));
    }

    #[test]
    fn truncation_after_checkpoint_is_detected() {
        let c = chain(6);
        let key = CheckpointKey::from_bytes([7; 32]);
        let cp = Checkpoint::sign(&key, 5, c[4].hash, 0);
        let truncated: Vec<_> = c.into_iter().take(3).collect();
        assert_eq!(
            verify(truncated, &[cp]),
            Err(VerifyError::Truncated { seq: 5, head: 3 })
        );
    }

    #[test]
    fn rewritten_tail_is_caught_by_checkpoint() {
        let mut c = chain(6);
        let key = CheckpointKey::from_bytes([7; 32]);
        let cp = Checkpoint::sign(&key, 4, c[3].hash, 0);
        // Rewrite entry 3 and every hash after it consistently.
        c[2].actor = "someone-else".into();
        let mut prev = c[1].hash;
        for e in c.iter_mut().skip(2) {
            e.prev_hash = prev;
            e.hash = e.compute_hash();
            prev = e.hash;
        }
        assert_eq!(
            verify(c, &[cp]),
            Err(VerifyError::CheckpointMismatch { seq: 4 })
        );
    }

    #[test]
    fn checkpoint_within_chain_is_counted() {
        let c = chain(4);
        let key = CheckpointKey::from_bytes([7; 32]);
        let cp = Checkpoint::sign(&key, 2, c[1].hash, 0);
        assert_eq!(verify(c, &[cp]).unwrap().checkpoints_checked, 1);
    }

    #[test]
    fn length_prefixing_separates_fields() {
        let a = AuditEntry::chain(1, GENESIS, 0, AuditEvent::new("ab", "c", Outcome::Success));
        let b = AuditEntry::chain(1, GENESIS, 0, AuditEvent::new("a", "bc", Outcome::Success));
        assert_ne!(a.hash, b.hash);
        let none = AuditEntry::chain(1, GENESIS, 0, AuditEvent::new("a", "b", Outcome::Success));
        let empty = AuditEntry::chain(
            1,
            GENESIS,
            0,
            AuditEvent::new("a", "b", Outcome::Success).target(""),
        );
        assert_ne!(none.hash, empty.hash);
    }

    #[test]
    fn newline_in_a_field_cannot_forge_an_export_line() {
        let e = AuditEntry::chain(
            1,
            GENESIS,
            0,
            AuditEvent::new("admin", "secret.put", Outcome::Success)
                .target("x\n{\"seq\":2,\"action\":\"forged\"}\r"),
        );
        let line = e.to_json().to_string();
        assert!(!line.contains('\n') && !line.contains('\r'));
    }
}
