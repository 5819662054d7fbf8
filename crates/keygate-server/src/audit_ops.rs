//! Audit operations that need more than the store: the checkpoint file outside the
//! database, and verification of the chain against it (S24).

use std::io::Write;
use std::path::Path;

use keygate_audit::{ChainVerifier, Checkpoint, CheckpointKey, VerifyError, VerifyReport};
use keygate_store::Store;

/// How many entries `verify` reads per page.
const PAGE: i64 = 1000;

/// The outcome of `audit verify`.
#[derive(Debug)]
pub struct Verification {
    pub report: Result<VerifyReport, VerifyError>,
    /// Things that weaken the verdict without failing it (e.g. no checkpoint key).
    pub warnings: Vec<String>,
}

/// Reads the checkpoint file. Lines that fail their signature are an error; a torn last
/// line (a crash while appending it) is skipped with a warning.
pub fn read_checkpoints(
    path: &Path,
    key: Option<&CheckpointKey>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Checkpoint>, VerifyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "no checkpoint file at {}: truncation of the log cannot be detected",
                path.display()
            ));
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(VerifyError::Source(format!(
                "cannot read checkpoint file {}: {e}",
                path.display()
            )));
        }
    };
    let Some(key) = key else {
        warnings
            .push("the master key is unavailable: checkpoint signatures were not checked".into());
        return Ok(Vec::new());
    };
    let terminated = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        match serde_json::from_str::<Checkpoint>(line) {
            Ok(cp) if cp.verify(key) => out.push(cp),
            Ok(cp) => return Err(VerifyError::CheckpointForged { seq: cp.seq }),
            Err(_) if last && !terminated => {
                warnings.push(format!(
                    "checkpoint file line {} is incomplete (interrupted write); skipped",
                    i + 1
                ));
            }
            Err(e) => {
                return Err(VerifyError::Source(format!(
                    "checkpoint file line {} is corrupt: {e}",
                    i + 1
                )));
            }
        }
    }
    Ok(out)
}

/// Walks the whole chain page by page and checks it against the checkpoints.
pub async fn verify(
    store: &dyn Store,
    checkpoint_file: &Path,
    key: Option<&CheckpointKey>,
) -> Verification {
    let mut warnings = Vec::new();
    let checkpoints = match read_checkpoints(checkpoint_file, key, &mut warnings) {
        Ok(c) => c,
        Err(e) => {
            return Verification {
                report: Err(e),
                warnings,
            };
        }
    };
    let mut verifier = ChainVerifier::new(&checkpoints);
    let mut after = 0;
    loop {
        let page = match store.audit_entries(after, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                return Verification {
                    report: Err(VerifyError::Source(e.to_string())),
                    warnings,
                };
            }
        };
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            if let Err(e) = verifier.push(entry) {
                return Verification {
                    report: Err(e),
                    warnings,
                };
            }
        }
    }
    Verification {
        report: verifier.finish(),
        warnings,
    }
}

/// Appends a signed checkpoint of the current head, unless the head is where the last
/// checkpoint left it. Returns the sequence number written, if any.
pub async fn write_checkpoint(
    store: &dyn Store,
    path: &Path,
    key: &CheckpointKey,
    last_written: Option<i64>,
    now_ms: i64,
) -> std::io::Result<Option<i64>> {
    let (seq, head) = store
        .audit_head()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if seq == 0 || last_written == Some(seq) {
        return Ok(None);
    }
    let cp = Checkpoint::sign(key, seq, head, now_ms);
    let mut line = serde_json::to_string(&cp).map_err(std::io::Error::other)?;
    line.push('\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if last_written.is_none() {
        drop_torn_tail(path)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_data()?;
    Ok(Some(seq))
}

/// A verification as the admin API and the CLI show it.
pub fn verification(v: &Verification) -> crate::admin::api::AuditVerification {
    let mut out = crate::admin::api::AuditVerification {
        ok: v.report.is_ok(),
        entries: None,
        head_seq: None,
        head_hash: None,
        checkpoints_checked: None,
        first_bad_seq: None,
        error: None,
        warnings: v.warnings.clone(),
    };
    match &v.report {
        Ok(r) => {
            out.entries = Some(r.entries);
            out.head_seq = Some(r.head_seq);
            out.head_hash = Some(hex::encode(r.head_hash));
            out.checkpoints_checked = Some(r.checkpoints_checked);
        }
        Err(e) => {
            out.first_bad_seq = Some(e.seq());
            out.error = Some(e.to_string());
        }
    }
    out
}

/// A crash while appending can leave a last line without its newline. It never carried a
/// complete signature, so it is cut off before the next append would bury it mid-file.
fn drop_torn_tail(path: &Path) -> std::io::Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(file = %path.display(), "dropping an incomplete last checkpoint line");
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(keep as u64)?;
    f.sync_data()
}
