//! `keygate scan rules check`: every rule's positive examples must be found by that rule
//! (through the full matcher, prefilter included) and its negatives must not be.

use crate::matcher::Matcher;

/// One failed expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    pub rule_id: String,
    pub source_name: String,
    pub message: String,
}

/// The result of checking a rule set.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub rules: usize,
    pub examples: usize,
    pub negatives: usize,
    pub failures: Vec<CheckFailure>,
}

pub fn check_rules(matcher: &Matcher) -> CheckReport {
    let mut report = CheckReport::default();
    for (ri, rule) in matcher.rules().rules().iter().enumerate() {
        report.rules += 1;
        let fail = |message: String| CheckFailure {
            rule_id: rule.id().to_string(),
            source_name: rule.source_name.clone(),
            message,
        };
        if rule.def.examples.is_empty() {
            report.failures.push(fail("has no positive example".into()));
        }
        if rule.def.negatives.is_empty() {
            report.failures.push(fail("has no negative example".into()));
        }
        for (i, ex) in rule.def.examples.iter().enumerate() {
            report.examples += 1;
            let lower = ex.to_ascii_lowercase();
            if !rule
                .def
                .keywords
                .iter()
                .any(|k| lower.contains(&k.to_ascii_lowercase()))
            {
                report.failures.push(fail(format!(
                    "example {} holds none of the keywords, so the prefilter would skip it",
                    i + 1
                )));
                continue;
            }
            if !matcher.find(ex.as_bytes()).iter().any(|m| m.rule == ri) {
                report
                    .failures
                    .push(fail(format!("example {} is not matched", i + 1)));
            }
        }
        for (i, neg) in rule.def.negatives.iter().enumerate() {
            report.negatives += 1;
            if matcher.find(neg.as_bytes()).iter().any(|m| m.rule == ri) {
                report
                    .failures
                    .push(fail(format!("negative {} is matched", i + 1)));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    #[test]
    fn every_builtin_rule_passes_its_own_examples() {
        let m = Matcher::new(RuleSet::builtin().unwrap()).unwrap();
        let r = check_rules(&m);
        assert!(r.failures.is_empty(), "{:#?}", r.failures);
        assert!(r.rules >= 100);
        assert!(r.examples >= r.rules && r.negatives >= r.rules);
    }

    #[test]
    fn a_broken_rule_is_reported() {
        let mut set = RuleSet::empty().unwrap();
        set.add_source(
            "bad.toml",
            r#"[[rules]]
id = "acme-key"
name = "Acme"
keywords = ["acme_"]
pattern = 'acme_[a-z]{8}'
examples = ["acme_ABCDEFGH", "no keyword here"]
negatives = ["acme_abcdefgh"]
"#,
        )
        .unwrap();
        let r = check_rules(&Matcher::new(set).unwrap());
        let msgs: Vec<&str> = r.failures.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            msgs,
            vec![
                "example 1 is not matched",
                "example 2 holds none of the keywords, so the prefilter would skip it",
                "negative 1 is matched"
            ]
        );
    }
}
