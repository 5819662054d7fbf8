//! Findings: what was found where. A finding never holds the secret itself, only a
//! masked form and a one-way fingerprint.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::rules::Severity;

/// Where the scanned bytes came from in git history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub commit: String,
    pub author: String,
    pub date: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Rule id, or `managed-secret` for a fingerprint match.
    pub rule_id: String,
    pub rule_name: String,
    pub severity: Severity,
    /// Display path; members of packages are joined with `!`
    /// (`build/app.apk!classes2.dex`).
    pub path: String,
    /// 1-based line and column in text; `None` inside binary formats.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The secret with all but a few characters hidden.
    pub masked: String,
    /// Hex SHA-256 over the rule id and the secret: stable across line moves, used by
    /// baselines. For managed secrets, derived from the keyed fingerprint instead.
    pub fingerprint: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub commit: Option<CommitInfo>,
}

/// Hides all but a short prefix and suffix: `sk-p…X1z`. Short secrets show less.
pub fn mask(secret: &[u8]) -> String {
    let s = String::from_utf8_lossy(secret);
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let (head, tail) = if n >= 24 {
        (4, 3)
    } else if n >= 12 {
        (2, 2)
    } else {
        (1, 0)
    };
    let mut out: String = chars.iter().take(head).collect();
    out.push('…');
    out.extend(chars.iter().skip(n.saturating_sub(tail)).take(tail));
    // Control characters must not reach a terminal.
    out.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The baseline fingerprint of a rule hit.
pub fn fingerprint(rule_id: &str, secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"keygate-scan/v1\0");
    h.update(rule_id.as_bytes());
    h.update(b"\0");
    h.update(secret);
    hex::encode(h.finalize())
}

/// Cleans a path or entry name for display: control characters become `?`.
pub fn display_path(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keeps_only_edges() {
        let m = mask(b"sk-proj-abcdefghijklmnopqrstuvwxyzX1z");
        assert_eq!(m, "sk-p…X1z");
        assert_eq!(mask(b"abcdefghijklmn"), "ab…mn");
        assert_eq!(mask(b"short"), "s…");
        assert!(!mask(b"\x1b[31mabcdefghijklmnopqrstuvwxyz").contains('\x1b'));
    }

    #[test]
    fn fingerprint_depends_on_rule_and_secret_only() {
        let a = fingerprint("r", b"s1");
        assert_eq!(a, fingerprint("r", b"s1"));
        assert_ne!(a, fingerprint("r", b"s2"));
        assert_ne!(a, fingerprint("q", b"s1"));
        assert_eq!(a.len(), 64);
    }
}
