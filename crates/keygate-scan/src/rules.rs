//! Detection rules as data.
//!
//! A rule file is TOML with a `[[rules]]` array; each rule has an `id`, a `name`,
//! `keywords` for the prefilter, a `pattern` (Rust `regex` syntax, matched on bytes with
//! Unicode mode off), an optional `entropy` floor for the secret, optional `exclude`
//! patterns that veto a secret, and `examples` / `negatives` that `rules check` runs.
//!
//! The secret is the capture group named `secret`, else group 1, else the whole match.

use std::path::Path;

use regex::bytes::Regex;
use serde::Deserialize;

/// The rule files compiled into the binary, in priority order: when two rules report the
/// same span, the earlier one wins, and the generic rule always loses.
pub const BUILTIN_RULE_FILES: &[(&str, &str)] = &[
    ("cloud.toml", include_str!("../rules/cloud.toml")),
    ("payment.toml", include_str!("../rules/payment.toml")),
    ("messaging.toml", include_str!("../rules/messaging.toml")),
    ("ai.toml", include_str!("../rules/ai.toml")),
    ("mobile.toml", include_str!("../rules/mobile.toml")),
    ("devops.toml", include_str!("../rules/devops.toml")),
    ("crypto.toml", include_str!("../rules/crypto.toml")),
    ("generic.toml", include_str!("../rules/generic.toml")),
];

/// Values that are documentation placeholders rather than keys, whatever the rule.
const GLOBAL_EXCLUDE: &str =
    r"(?i)example|placeholder|xxxxxxxx|your_?api_?key|redacted|<your|\$\{|\{\{|\.\.\.\.";

/// Largest `window` a rule may ask for; the scanner's chunk overlap is larger.
pub const MAX_WINDOW: usize = 32 << 10;

/// Default distance (bytes) a pattern may reach past a keyword hit on the same line.
pub const DEFAULT_WINDOW: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: rule {id}: {message}")]
    Invalid {
        source_name: String,
        id: String,
        message: String,
    },
    #[error("cannot read rule file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// How bad a leak of this kind of secret is; maps onto SARIF levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rules: Vec<RuleDef>,
}

/// A rule as written in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub id: String,
    pub name: String,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    pub keywords: Vec<String>,
    pub pattern: String,
    #[serde(default)]
    pub entropy: Option<f64>,
    /// Bytes the pattern may reach past the keyword, across lines (multi-line secrets).
    #[serde(default)]
    pub window: Option<usize>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Patterns that veto a hit when they match the whole match together with up to
    /// 48 bytes before it on its line (the name a value is assigned to, say).
    #[serde(default)]
    pub exclude_match: Vec<String>,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default)]
    pub negatives: Vec<String>,
}

fn default_severity() -> Severity {
    Severity::High
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub def: RuleDef,
    pub source_name: String,
    pub(crate) regex: Regex,
    pub(crate) secret_group: usize,
    pub(crate) excludes: Vec<Regex>,
    pub(crate) excludes_match: Vec<Regex>,
    pub(crate) generic: bool,
}

impl Rule {
    pub fn id(&self) -> &str {
        &self.def.id
    }
    pub fn name(&self) -> &str {
        &self.def.name
    }
    pub fn severity(&self) -> Severity {
        self.def.severity
    }

    fn compile(def: RuleDef, source_name: &str) -> Result<Rule, RuleError> {
        let invalid = |message: String| RuleError::Invalid {
            source_name: source_name.to_string(),
            id: def.id.clone(),
            message,
        };
        if def.id.is_empty()
            || !def
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "id must be non-empty lowercase letters, digits and '-'".into(),
            ));
        }
        if def.keywords.is_empty() || def.keywords.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("needs at least one non-empty keyword".into()));
        }
        let regex = regex::bytes::RegexBuilder::new(&format!("(?-u){}", def.pattern))
            .size_limit(32 << 20)
            // Counted repetitions make large lazy DFAs; a bigger cache avoids thrashing.
            .dfa_size_limit(8 << 20)
            .build()
            .map_err(|e| invalid(format!("bad pattern: {e}")))?;
        let secret_group = match regex.capture_names().position(|n| n == Some("secret")) {
            Some(i) => i,
            None if regex.captures_len() > 1 => 1,
            None => 0,
        };
        let mut excludes = Vec::with_capacity(def.exclude.len());
        for e in &def.exclude {
            excludes.push(
                regex::bytes::Regex::new(&format!("(?-u){e}"))
                    .map_err(|err| invalid(format!("bad exclude pattern: {err}")))?,
            );
        }
        let mut excludes_match = Vec::with_capacity(def.exclude_match.len());
        for e in &def.exclude_match {
            excludes_match.push(
                regex::bytes::Regex::new(&format!("(?-u){e}"))
                    .map_err(|err| invalid(format!("bad exclude_match pattern: {err}")))?,
            );
        }
        if def.window.is_some_and(|w| w > MAX_WINDOW) {
            return Err(invalid(format!(
                "window must be at most {MAX_WINDOW} bytes"
            )));
        }
        if let Some(e) = def.entropy {
            if !(0.0..=8.0).contains(&e) {
                return Err(invalid(
                    "entropy must be between 0 and 8 bits per byte".into(),
                ));
            }
        }
        let generic = def.id.starts_with("generic");
        Ok(Rule {
            def,
            source_name: source_name.to_string(),
            regex,
            secret_group,
            excludes,
            excludes_match,
            generic,
        })
    }
}

/// An ordered set of compiled rules.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    pub(crate) global_exclude: Regex,
}

impl RuleSet {
    /// The built-in rules only.
    pub fn builtin() -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::empty()?;
        for (name, text) in BUILTIN_RULE_FILES {
            set.add_source(name, text)?;
        }
        Ok(set)
    }

    pub fn empty() -> Result<RuleSet, RuleError> {
        let global_exclude = Regex::new(GLOBAL_EXCLUDE).map_err(|e| RuleError::Parse {
            source_name: "built-in".into(),
            message: e.to_string(),
        })?;
        Ok(RuleSet {
            rules: Vec::new(),
            global_exclude,
        })
    }

    /// Adds the rules of one TOML document. A rule whose id is already present replaces it,
    /// so a user file can override a built-in rule.
    pub fn add_source(&mut self, source_name: &str, text: &str) -> Result<(), RuleError> {
        let file: RuleFile = toml::from_str(text).map_err(|e| {
            // One line: the reason and where, without toml's multi-line snippet.
            let line = e
                .span()
                .map(|s| text.get(..s.start).unwrap_or("").matches('\n').count() + 1);
            let reason = e.message().replace('\n', " ");
            RuleError::Parse {
                source_name: source_name.to_string(),
                message: match line {
                    Some(l) => format!("line {l}: {reason}"),
                    None => reason,
                },
            }
        })?;
        let mut seen = std::collections::HashSet::new();
        for def in file.rules {
            if !seen.insert(def.id.clone()) {
                return Err(RuleError::Invalid {
                    source_name: source_name.to_string(),
                    id: def.id,
                    message: "duplicate id in the same file".into(),
                });
            }
            let rule = Rule::compile(def, source_name)?;
            if let Some(slot) = self.rules.iter_mut().find(|r| r.def.id == rule.def.id) {
                *slot = rule;
            } else {
                self.rules.push(rule);
            }
        }
        Ok(())
    }

    pub fn add_file(&mut self, path: &Path) -> Result<(), RuleError> {
        let text = std::fs::read_to_string(path).map_err(|source| RuleError::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.add_source(&path.display().to_string(), &text)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_load_and_are_many() {
        let set = RuleSet::builtin().unwrap();
        assert!(set.len() >= 100, "only {} rules", set.len());
        assert!(set.rules().iter().any(|r| r.generic));
        for r in set.rules() {
            assert!(!r.def.examples.is_empty(), "{} has no example", r.id());
            assert!(!r.def.negatives.is_empty(), "{} has no negative", r.id());
        }
    }

    #[test]
    fn entropy_of_known_strings() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"ab") - 1.0).abs() < 1e-9);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn bad_rule_files_are_rejected_with_their_name() {
        let mut set = RuleSet::empty().unwrap();
        let err = set.add_source("x.toml", "[[rules]]\nid='a'\n").unwrap_err();
        assert!(err.to_string().starts_with("x.toml"));
        let bad_regex = "[[rules]]\nid='a'\nname='A'\nkeywords=['a']\npattern='('\n";
        let err = set.add_source("y.toml", bad_regex).unwrap_err();
        assert!(err.to_string().contains("bad pattern"), "{err}");
        let no_kw = "[[rules]]\nid='a'\nname='A'\nkeywords=[]\npattern='a'\n";
        assert!(set.add_source("z.toml", no_kw).is_err());
        let wide = "[[rules]]\nid='a'\nname='A'\nkeywords=['a']\npattern='a'\nwindow=100000\n";
        assert!(
            set.add_source("w.toml", wide)
                .unwrap_err()
                .to_string()
                .contains("window")
        );
    }

    #[test]
    fn user_rule_overrides_builtin_by_id() {
        let mut set = RuleSet::builtin().unwrap();
        let n = set.len();
        set.add_source(
            "mine.toml",
            "[[rules]]\nid='github-pat-token'\nname='mine'\nkeywords=['ghp_']\npattern='ghp_x'\n",
        )
        .unwrap();
        assert_eq!(set.len(), n);
        let r = set
            .rules()
            .iter()
            .find(|r| r.id() == "github-pat-token")
            .unwrap();
        assert_eq!(r.name(), "mine");
    }
}
