//! Output formats: human text, JSON, SARIF 2.1.0. None of them carries a secret: only
//! masked values and fingerprints.

use std::io::Write;

use serde_json::{Value, json};

use crate::finding::Finding;
use crate::rules::Severity;
use crate::scan::Warning;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    Sarif,
}

/// Totals for the summary line.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub findings: usize,
    pub warnings: usize,
    pub skipped_binary: u64,
    pub baselined: usize,
}

impl Summary {
    pub fn line(&self) -> String {
        let mb = self.bytes as f64 / 1e6;
        let rate = if self.seconds > 0.0 {
            mb / self.seconds
        } else {
            0.0
        };
        format!(
            "scanned {} files, {:.1} MB in {:.2} s ({:.1} MB/s); {} finding{}, {} warning{}{}{}",
            self.files,
            mb,
            self.seconds,
            rate,
            self.findings,
            if self.findings == 1 { "" } else { "s" },
            self.warnings,
            if self.warnings == 1 { "" } else { "s" },
            if self.skipped_binary > 0 {
                format!(", {} binary files skipped", self.skipped_binary)
            } else {
                String::new()
            },
            if self.baselined > 0 {
                format!(", {} known from the baseline", self.baselined)
            } else {
                String::new()
            },
        )
    }
}

fn location(f: &Finding) -> String {
    match (f.line, f.column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", f.path),
        (Some(l), None) => format!("{}:{l}", f.path),
        _ => f.path.clone(),
    }
}

pub fn write_text(out: &mut dyn Write, findings: &[Finding]) -> std::io::Result<()> {
    for f in findings {
        write!(
            out,
            "{}: {} [{}] {}  {}",
            location(f),
            f.rule_id,
            f.severity.as_str(),
            f.masked,
            f.message
        )?;
        if let Some(c) = &f.commit {
            let short: String = c.commit.chars().take(12).collect();
            write!(out, "  (commit {short}, {}, {})", c.author, c.date)?;
        }
        writeln!(out)?;
    }
    Ok(())
}

pub fn to_json(findings: &[Finding], warnings: &[Warning], summary: &Summary) -> Value {
    json!({
        "format": "keygate-scan/v1",
        "findings": findings,
        "warnings": warnings,
        "summary": summary,
    })
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "note",
    }
}

/// Percent-encodes a display path into a URI reference: relative paths stay relative
/// (as code-scanning tools expect), absolute ones become `file://` URIs.
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 7);
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub const SARIF_SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

pub fn to_sarif(findings: &[Finding], warnings: &[Warning]) -> Value {
    let mut rule_ids: Vec<&str> = findings.iter().map(|f| f.rule_id.as_str()).collect();
    rule_ids.sort_unstable();
    rule_ids.dedup();
    let rules: Vec<Value> = rule_ids
        .iter()
        .map(|id| {
            let f = findings.iter().find(|f| f.rule_id == *id);
            let (name, sev) = f.map_or(("", Severity::High), |f| (f.rule_name.as_str(), f.severity));
            json!({
                "id": id,
                "name": id,
                "shortDescription": { "text": name },
                "fullDescription": { "text": format!("{name}: a secret that must not be committed or shipped in an app.") },
                "help": { "text": "Remove the secret, rotate it at the provider, and serve it through keygate instead of shipping it." },
                "defaultConfiguration": { "level": level(sev) },
                "properties": { "tags": ["security", "secret"] },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut region = serde_json::Map::new();
            if let Some(l) = f.line {
                region.insert("startLine".into(), json!(l));
            }
            if let Some(c) = f.column {
                region.insert("startColumn".into(), json!(c));
            }
            let mut phys = json!({ "artifactLocation": { "uri": uri(&f.path) } });
            if !region.is_empty() {
                if let Some(o) = phys.as_object_mut() {
                    o.insert("region".into(), Value::Object(region));
                }
            }
            let mut result = json!({
                "ruleId": f.rule_id,
                "ruleIndex": rule_ids.iter().position(|r| *r == f.rule_id).unwrap_or(0),
                "level": level(f.severity),
                "message": { "text": format!("{} ({})", f.message, f.masked) },
                "locations": [ { "physicalLocation": phys } ],
                "partialFingerprints": { "keygateSecret/v1": f.fingerprint },
            });
            if let (Some(c), Some(o)) = (&f.commit, result.as_object_mut()) {
                o.insert(
                    "properties".into(),
                    json!({ "commit": c.commit, "author": c.author, "date": c.date }),
                );
            }
            result
        })
        .collect();
    let notifications: Vec<Value> = warnings
        .iter()
        .map(|w| {
            let mut n = json!({ "level": "warning", "message": { "text": w.message } });
            if !w.path.is_empty() {
                if let Some(o) = n.as_object_mut() {
                    o.insert(
                        "locations".into(),
                        json!([{ "physicalLocation": { "artifactLocation": { "uri": uri(&w.path) } } }]),
                    );
                }
            }
            n
        })
        .collect();
    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "keygate-scan",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_percent_encoded() {
        assert_eq!(uri("a b/c.apk!classes2.dex"), "a%20b/c.apk!classes2.dex");
        assert_eq!(uri("ü"), "%C3%BC");
        assert_eq!(uri("/tmp/a.env"), "file:///tmp/a.env");
    }

    #[test]
    fn summary_line_reads_well() {
        let s = Summary {
            files: 3,
            bytes: 2_000_000,
            seconds: 0.5,
            findings: 1,
            warnings: 0,
            ..Summary::default()
        };
        assert_eq!(
            s.line(),
            "scanned 3 files, 2.0 MB in 0.50 s (4.0 MB/s); 1 finding, 0 warnings"
        );
    }
}
