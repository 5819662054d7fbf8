//! The core matcher: an Aho-Corasick keyword prefilter, then each triggered rule's
//! regex on windows around its keyword hits.
//!
//! A window is the line holding the keyword (capped at [`DEFAULT_WINDOW`] bytes either
//! side of the hit, widened to the end of a token it would cut), or for multi-line rules
//! the `window` bytes after the hit. Windows of one rule are merged, so a span is matched
//! once.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

use crate::rules::{DEFAULT_WINDOW, RuleSet, shannon_entropy};

/// A rule hit in a haystack: byte offsets of the whole match and of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMatch {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
    pub secret_start: usize,
    pub secret_end: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build keyword prefilter: {0}")]
pub struct MatcherError(String);

pub struct Matcher {
    rules: RuleSet,
    ac: AhoCorasick,
    /// For each keyword pattern, the rules that list it.
    keyword_rules: Vec<Vec<usize>>,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// Bytes before a match that `exclude_match` patterns also see.
const CONTEXT_BEFORE: usize = 48;

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'/' | b'=' | b'.' | b'~')
}

impl Matcher {
    pub fn new(rules: RuleSet) -> Result<Matcher, MatcherError> {
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (ri, rule) in rules.rules().iter().enumerate() {
            for kw in &rule.def.keywords {
                let kw = kw.to_ascii_lowercase();
                match keywords.iter().position(|k| *k == kw) {
                    Some(i) => {
                        if let Some(v) = keyword_rules.get_mut(i) {
                            if !v.contains(&ri) {
                                v.push(ri);
                            }
                        }
                    }
                    None => {
                        keywords.push(kw);
                        keyword_rules.push(vec![ri]);
                    }
                }
            }
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            // A full DFA: overlapping search cannot use the fast prefilters, so the
            // automaton's per-byte cost is what counts.
            .kind(Some(AhoCorasickKind::DFA))
            .build(&keywords)
            .map_err(|e| MatcherError(e.to_string()))?;
        Ok(Matcher {
            rules,
            ac,
            keyword_rules,
        })
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Finds every rule match in `hay`, sorted by position, with duplicates of one span
    /// resolved in favour of the earlier, more specific rule.
    pub fn find(&self, hay: &[u8]) -> Vec<RawMatch> {
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        let mut any = false;
        for m in self.ac.find_overlapping_iter(hay) {
            let Some(rule_ids) = self.keyword_rules.get(m.pattern().as_usize()) else {
                continue;
            };
            for &ri in rule_ids {
                let Some(rule) = self.rules.get(ri) else {
                    continue;
                };
                let w = window(hay, m.start(), m.end(), rule.def.window);
                if let Some(v) = windows.get_mut(ri) {
                    // Most hits come in order; merge with the last window cheaply.
                    if let Some(last) = v.last_mut() {
                        if w.0 >= last.0 && w.0 <= last.1 {
                            last.1 = last.1.max(w.1);
                            continue;
                        }
                    }
                    v.push(w);
                    any = true;
                }
            }
        }
        if !any {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (ri, mut ws) in windows.into_iter().enumerate() {
            if ws.is_empty() {
                continue;
            }
            let Some(rule) = self.rules.get(ri) else {
                continue;
            };
            ws.sort_unstable();
            let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ws.len());
            for w in ws {
                match merged.last_mut() {
                    Some(last) if w.0 <= last.1 => last.1 = last.1.max(w.1),
                    _ => merged.push(w),
                }
            }
            for (ws, we) in merged {
                let Some(slice) = hay.get(ws..we) else {
                    continue;
                };
                for caps in rule.regex.captures_iter(slice) {
                    let Some(whole) = caps.get(0) else { continue };
                    let secret = caps.get(rule.secret_group).unwrap_or(whole);
                    let value = secret.as_bytes();
                    if value.is_empty() {
                        continue;
                    }
                    if let Some(floor) = rule.def.entropy {
                        if shannon_entropy(value) < floor {
                            continue;
                        }
                    }
                    if self.rules.global_exclude.is_match(value)
                        || rule.excludes.iter().any(|x| x.is_match(value))
                        || (!rule.excludes_match.is_empty() && {
                            // The match plus the start of its line: the name a value is
                            // assigned to often begins before the keyword.
                            let abs = ws + whole.start();
                            let lo = abs.saturating_sub(CONTEXT_BEFORE);
                            let ls = memchr::memrchr(b'\n', hay.get(lo..abs).unwrap_or(&[]))
                                .map_or(lo, |p| lo + p + 1);
                            let ctx = hay.get(ls..ws + whole.end()).unwrap_or(&[]);
                            rule.excludes_match.iter().any(|x| x.is_match(ctx))
                        })
                    {
                        continue;
                    }
                    out.push(RawMatch {
                        rule: ri,
                        start: ws + whole.start(),
                        end: ws + whole.end(),
                        secret_start: ws + secret.start(),
                        secret_end: ws + secret.end(),
                    });
                }
            }
        }
        self.resolve_overlaps(out)
    }

    fn resolve_overlaps(&self, mut out: Vec<RawMatch>) -> Vec<RawMatch> {
        if out.len() < 2 {
            return out;
        }
        let is_generic = |ri: usize| self.rules.get(ri).is_some_and(|r| r.generic);
        out.sort_by_key(|m| (m.secret_start, m.rule));
        let mut keep = vec![true; out.len()];
        for i in 0..out.len() {
            for j in (i + 1)..out.len() {
                let (Some(a), Some(b)) = (out.get(i), out.get(j)) else {
                    break;
                };
                if b.secret_start >= a.secret_end {
                    break;
                }
                let overlap = a.secret_start < b.secret_end && b.secret_start < a.secret_end;
                if !overlap {
                    continue;
                }
                let (ga, gb) = (is_generic(a.rule), is_generic(b.rule));
                let same_span = a.secret_start == b.secret_start && a.secret_end == b.secret_end;
                let drop = if ga && !gb {
                    Some(i)
                } else if gb && !ga {
                    Some(j)
                } else if same_span {
                    Some(if a.rule <= b.rule { j } else { i })
                } else {
                    None
                };
                if let Some(d) = drop {
                    if let Some(k) = keep.get_mut(d) {
                        *k = false;
                    }
                }
            }
        }
        out.into_iter()
            .zip(keep)
            .filter_map(|(m, k)| k.then_some(m))
            .collect()
    }
}

fn window(hay: &[u8], start: usize, end: usize, multi_line: Option<usize>) -> (usize, usize) {
    let len = hay.len();
    // Only look for line breaks within the window: scanning a whole minified line for
    // every keyword hit would be quadratic.
    let lo = start.saturating_sub(DEFAULT_WINDOW);
    let before = hay.get(lo..start).unwrap_or(&[]);
    let mut ws = memchr::memrchr(b'\n', before).map_or(lo, |p| lo + p + 1);
    // Do not cut a token in half: a truncated token could pass a boundary check.
    let floor = ws.saturating_sub(DEFAULT_WINDOW);
    while ws > floor
        && hay
            .get(ws.wrapping_sub(1))
            .is_some_and(|&b| is_token_byte(b))
    {
        ws -= 1;
    }
    let we = match multi_line {
        Some(n) => end.saturating_add(n).min(len),
        None => {
            let hi = end.saturating_add(DEFAULT_WINDOW).min(len);
            let after = hay.get(end..hi).unwrap_or(&[]);
            let mut we = memchr::memchr(b'\n', after).map_or(hi, |p| end + p);
            let ceil = we.saturating_add(DEFAULT_WINDOW).min(len);
            while we < ceil && hay.get(we).is_some_and(|&b| is_token_byte(b)) {
                we += 1;
            }
            we
        }
    };
    (ws, we.max(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> Matcher {
        Matcher::new(RuleSet::builtin().unwrap()).unwrap()
    }

    fn ids(m: &Matcher, hay: &str) -> Vec<String> {
        m.find(hay.as_bytes())
            .iter()
            .map(|r| m.rules().get(r.rule).unwrap().id().to_string())
            .collect()
    }

    #[test]
    fn finds_a_github_token_and_its_secret_span() {
        let m = matcher();
        let tok = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"; // keygate:allow (test value)
        let hay = format!("x = \"{tok}\"\n");
        let found = m.find(hay.as_bytes());
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(
            &hay.as_bytes()[f.secret_start..f.secret_end],
            tok.as_bytes()
        );
    }

    #[test]
    fn keyword_prefilter_is_case_insensitive_but_pattern_is_not() {
        let m = matcher();
        assert!(ids(&m, "GHP_abcdefghijklmnopqrstuvwxyz0123456789").is_empty());
    }

    #[test]
    fn specific_rule_beats_generic_rule_on_same_value() {
        let m = matcher();
        let hay = "const API_KEY = \"ghp_abcdefghijklmnopqrstuvwxyz0123456789\";"; // keygate:allow (test value)
        assert_eq!(ids(&m, hay), vec!["github-pat-token".to_string()]);
    }

    #[test]
    fn window_does_not_cut_tokens_on_long_lines() {
        let m = matcher();
        // The keyword sits far from the end of a very long token: the window widens to
        // the token's end, and the too-long token must not match.
        let long = format!("ghp_{}", "a1".repeat(1500));
        assert!(ids(&m, &long).is_empty());
        let pad = "x".repeat(5000);
        let hay = format!("{pad} ghp_abcdefghijklmnopqrstuvwxyz0123456789 {pad}"); // keygate:allow (test value)
        assert_eq!(ids(&m, &hay), vec!["github-pat-token".to_string()]);
    }

    #[test]
    fn multi_line_private_key_is_found() {
        let m = matcher();
        let body: String = (0..4)
            .map(|i| {
                format!("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC{i}KcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n")
            })
            .collect();
        let hay = format!("-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n");
        assert_eq!(ids(&m, &hay), vec!["private-key".to_string()]);
    }
}
