//! Baselines: known findings a team accepts for now, so the scanner can gate new ones.
//!
//! An entry is `(rule, path, fingerprint)`; the fingerprint hashes the rule and the
//! secret, not the line, so entries survive code moving around in a file. The file
//! holds no secret, masked or not.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::finding::Finding;

pub const FORMAT: &str = "keygate-baseline/v1";

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read baseline {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write baseline {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("baseline {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub rule: String,
    pub path: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub format: String,
    pub findings: Vec<Entry>,
}

impl Baseline {
    pub fn from_findings(findings: &[Finding]) -> Baseline {
        let mut entries: Vec<Entry> = findings
            .iter()
            .map(|f| Entry {
                rule: f.rule_id.clone(),
                path: f.path.clone(),
                fingerprint: f.fingerprint.clone(),
            })
            .collect();
        entries.sort();
        entries.dedup();
        Baseline {
            format: FORMAT.to_string(),
            findings: entries,
        }
    }

    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let b: Baseline = serde_json::from_str(&text).map_err(|e| BaselineError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if b.format != FORMAT {
            return Err(BaselineError::Invalid {
                path: path.display().to_string(),
                message: format!("format is {:?}, expected {FORMAT:?}", b.format),
            });
        }
        Ok(b)
    }

    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| BaselineError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        text.push('\n');
        std::fs::write(path, text).map_err(|source| BaselineError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Drops the findings the baseline knows; returns how many were dropped.
    pub fn filter(&self, findings: &mut Vec<Finding>) -> usize {
        let known: HashSet<(&str, &str, &str)> = self
            .findings
            .iter()
            .map(|e| (e.rule.as_str(), e.path.as_str(), e.fingerprint.as_str()))
            .collect();
        let before = findings.len();
        findings.retain(|f| {
            !known.contains(&(f.rule_id.as_str(), f.path.as_str(), f.fingerprint.as_str()))
        });
        before - findings.len()
    }
}
