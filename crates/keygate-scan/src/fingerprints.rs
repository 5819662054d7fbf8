//! Keyed fingerprints of the secrets keygate manages (`keygate secret fingerprints`).
//!
//! File format (`keygate-fingerprints/v1`):
//! ```json
//! {"format":"keygate-fingerprints/v1",
//!  "key":"<base64url, no padding, of 32 random bytes>",
//!  "secrets":[{"name":"openai","version":3,"length":51,
//!              "fingerprint":"<lowercase hex HMAC-SHA256(key, raw value bytes)>"}]}
//! ```
//!
//! # Candidate extraction, and its limits
//! The scanner cannot see values, only fingerprints, so it hashes candidates:
//! * a *run* is a maximal sequence of the bytes `A-Z a-z 0-9 _ - . ~ + / :`, followed by
//!   up to two `=` (base64 padding);
//! * inside a run, candidates are the substrings that start at the run's start or just
//!   after a `/ . + ~ :` separator, and end at the run's end or just before one (at most
//!   [`MAX_SEPARATORS`] separators per run are considered);
//! * a candidate is hashed only when its length is one the file announces: the secret's
//!   `length` in clear, `2×length` as hex (either case), or the standard / url-safe
//!   base64 length with or without padding; encoded candidates are decoded first and
//!   must decode to exactly `length` bytes.
//!
//! So a managed secret whose value holds bytes outside that set (a password with `!`,
//! `=` or a space, say) is only found base64- or hex-encoded, not in clear. Runs longer than
//! [`MAX_RUN`] bytes are skipped.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

pub const FORMAT: &str = "keygate-fingerprints/v1";
pub const MAX_SEPARATORS: usize = 16;
pub const MAX_RUN: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("cannot read fingerprints file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("fingerprints file is not valid: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    format: String,
    key: String,
    secrets: Vec<SecretDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretDoc {
    name: String,
    version: u64,
    length: usize,
    fingerprint: String,
}

/// Which managed secret a match belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedSecret {
    pub name: String,
    pub version: u64,
}

/// How the managed secret appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Clear,
    Hex,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedMatch {
    pub secret: ManagedSecret,
    pub encoding: Encoding,
    pub start: usize,
    pub end: usize,
    /// Hex of the keyed fingerprint, safe to store in a baseline.
    pub fingerprint_hex: String,
}

pub struct Fingerprints {
    key: Vec<u8>,
    by_mac: HashMap<[u8; 32], Vec<ManagedSecret>>,
    clear_lengths: BTreeSet<usize>,
    /// Encoded length → raw lengths it can stand for.
    hex_lengths: HashMap<usize, usize>,
    b64_lengths: HashMap<usize, Vec<usize>>,
}

impl std::fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingerprints")
            .field("secrets", &self.by_mac.len())
            .finish_non_exhaustive()
    }
}

fn b64_len_padded(n: usize) -> usize {
    n.div_ceil(3) * 4
}
fn b64_len_unpadded(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

impl Fingerprints {
    pub fn load(path: &Path) -> Result<Fingerprints, FingerprintError> {
        let text = std::fs::read_to_string(path).map_err(|source| FingerprintError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Fingerprints::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Fingerprints, FingerprintError> {
        let doc: FileDoc =
            serde_json::from_str(text).map_err(|e| FingerprintError::Invalid(e.to_string()))?;
        if doc.format != FORMAT {
            return Err(FingerprintError::Invalid(format!(
                "format is {:?}, expected {FORMAT:?}",
                doc.format
            )));
        }
        let key = URL_SAFE_NO_PAD.decode(doc.key.as_bytes()).map_err(|_| {
            FingerprintError::Invalid("key is not base64url without padding".into())
        })?;
        if key.len() != 32 {
            return Err(FingerprintError::Invalid("key must be 32 bytes".into()));
        }
        let mut fp = Fingerprints {
            key,
            by_mac: HashMap::new(),
            clear_lengths: BTreeSet::new(),
            hex_lengths: HashMap::new(),
            b64_lengths: HashMap::new(),
        };
        for s in doc.secrets {
            if s.length == 0 || s.length > MAX_RUN / 2 {
                return Err(FingerprintError::Invalid(format!(
                    "secret {}: length {} out of range",
                    s.name, s.length
                )));
            }
            if s.fingerprint.len() != 64
                || !s
                    .fingerprint
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(FingerprintError::Invalid(format!(
                    "secret {}: fingerprint must be 64 lowercase hex digits",
                    s.name
                )));
            }
            let mut mac = [0u8; 32];
            hex::decode_to_slice(&s.fingerprint, &mut mac)
                .map_err(|e| FingerprintError::Invalid(e.to_string()))?;
            fp.by_mac.entry(mac).or_default().push(ManagedSecret {
                name: s.name,
                version: s.version,
            });
            fp.clear_lengths.insert(s.length);
            fp.hex_lengths.insert(s.length * 2, s.length);
            for l in [b64_len_padded(s.length), b64_len_unpadded(s.length)] {
                let v = fp.b64_lengths.entry(l).or_default();
                if !v.contains(&s.length) {
                    v.push(s.length);
                }
            }
        }
        Ok(fp)
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    fn lookup(&self, value: &[u8]) -> Option<(&ManagedSecret, [u8; 32])> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        mac.update(value);
        let out: [u8; 32] = mac.finalize().into_bytes().into();
        self.by_mac
            .get(&out)
            .and_then(|v| v.first())
            .map(|s| (s, out))
    }

    /// Finds managed secrets in `hay`, in clear, hex or base64.
    pub fn find(&self, hay: &[u8]) -> Vec<ManagedMatch> {
        let mut out = Vec::new();
        if self.by_mac.is_empty() {
            return out;
        }
        let mut i = 0;
        let n = hay.len();
        while i < n {
            if !hay.get(i).is_some_and(|&b| run_byte(b)) {
                i += 1;
                continue;
            }
            let start = i;
            while i < n && hay.get(i).is_some_and(|&b| run_byte(b)) {
                i += 1;
            }
            let mut end = i;
            let mut pad = 0;
            while pad < 2 && hay.get(end) == Some(&b'=') {
                end += 1;
                pad += 1;
            }
            i = end;
            if end - start > MAX_RUN {
                continue;
            }
            if let Some(run) = hay.get(start..end) {
                self.check_run(run, start, pad, &mut out);
            }
        }
        out
    }

    fn check_run(&self, run: &[u8], offset: usize, pad: usize, out: &mut Vec<ManagedMatch>) {
        let body_len = run.len() - pad;
        let mut starts = vec![0usize];
        let mut ends = vec![run.len()];
        if pad > 0 {
            ends.push(body_len);
        }
        let mut seps = 0;
        for (k, &b) in run.iter().enumerate().take(body_len) {
            if matches!(b, b'/' | b'.' | b'+' | b'~' | b':') {
                seps += 1;
                if seps > MAX_SEPARATORS {
                    break;
                }
                starts.push(k + 1);
                ends.push(k);
            }
        }
        for &s in &starts {
            for &e in &ends {
                if e <= s {
                    continue;
                }
                let Some(cand) = run.get(s..e) else { continue };
                if let Some(m) = self.check_candidate(cand) {
                    let (secret, mac, encoding) = m;
                    if out
                        .iter()
                        .any(|o| o.start == offset + s && o.end == offset + e)
                    {
                        continue;
                    }
                    out.push(ManagedMatch {
                        secret: secret.clone(),
                        encoding,
                        start: offset + s,
                        end: offset + e,
                        fingerprint_hex: hex::encode(mac),
                    });
                }
            }
        }
    }

    fn check_candidate(&self, cand: &[u8]) -> Option<(&ManagedSecret, [u8; 32], Encoding)> {
        let len = cand.len();
        if self.clear_lengths.contains(&len) && !cand.contains(&b'=') {
            if let Some((s, mac)) = self.lookup(cand) {
                return Some((s, mac, Encoding::Clear));
            }
        }
        if let Some(&raw_len) = self.hex_lengths.get(&len) {
            if cand.iter().all(u8::is_ascii_hexdigit) {
                if let Ok(raw) = hex::decode(cand) {
                    if raw.len() == raw_len {
                        if let Some((s, mac)) = self.lookup(&raw) {
                            return Some((s, mac, Encoding::Hex));
                        }
                    }
                }
            }
        }
        if let Some(raw_lens) = self.b64_lengths.get(&len) {
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                if let Ok(raw) = engine.decode(cand) {
                    if raw_lens.contains(&raw.len()) {
                        if let Some((s, mac)) = self.lookup(&raw) {
                            return Some((s, mac, Encoding::Base64));
                        }
                    }
                }
            }
        }
        None
    }
}

fn run_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~' | b'+' | b'/' | b':')
}

/// The user-facing message for a managed-secret leak.
pub fn leak_message(s: &ManagedSecret) -> String {
    format!(
        "managed secret {} (version {}) leaked; rotate it: `keygate secret put {} --stdin` \
         writes a new version, then revoke the old key at the provider",
        s.name, s.version, s.name
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a fingerprints file the way `keygate secret fingerprints` does.
    pub(crate) fn file_for(key: &[u8; 32], secrets: &[(&str, u64, &[u8])]) -> String {
        let entries: Vec<serde_json::Value> = secrets
            .iter()
            .map(|(name, version, value)| {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
                mac.update(value);
                serde_json::json!({
                    "name": name, "version": version, "length": value.len(),
                    "fingerprint": hex::encode(mac.finalize().into_bytes()),
                })
            })
            .collect();
        serde_json::json!({
            "format": FORMAT,
            "key": URL_SAFE_NO_PAD.encode(key),
            "secrets": entries,
        })
        .to_string()
    }

    const VALUE: &[u8] = b"sk-live-4f9Q2xK8mZ7pW1vR3tY6uB0nC5dE";

    fn fp() -> Fingerprints {
        Fingerprints::parse(&file_for(&[7u8; 32], &[("openai", 3, VALUE)])).unwrap()
    }

    fn encodings(fp: &Fingerprints, hay: &str) -> Vec<Encoding> {
        fp.find(hay.as_bytes()).iter().map(|m| m.encoding).collect()
    }

    #[test]
    fn finds_value_in_clear_hex_and_base64() {
        let fp = fp();
        let v = std::str::from_utf8(VALUE).unwrap();
        assert_eq!(
            encodings(&fp, &format!("key={v}&x=1")),
            vec![Encoding::Clear]
        );
        assert_eq!(
            encodings(&fp, &format!("url: https://x/api/{v}")),
            vec![Encoding::Clear]
        );
        assert_eq!(encodings(&fp, &hex::encode(VALUE)), vec![Encoding::Hex]);
        assert_eq!(
            encodings(&fp, &hex::encode_upper(VALUE)),
            vec![Encoding::Hex]
        );
        for enc in [
            STANDARD.encode(VALUE),
            STANDARD_NO_PAD.encode(VALUE),
            URL_SAFE.encode(VALUE),
            URL_SAFE_NO_PAD.encode(VALUE),
        ] {
            assert_eq!(
                encodings(&fp, &format!("\"{enc}\"")),
                vec![Encoding::Base64],
                "{enc}"
            );
        }
        let m = fp.find(format!("x {v} y").as_bytes());
        assert_eq!(m[0].secret.name, "openai");
        assert_eq!(m[0].secret.version, 3);
        assert_eq!(
            leak_message(&m[0].secret).split(';').next().unwrap(),
            "managed secret openai (version 3) leaked"
        );
    }

    #[test]
    fn a_near_miss_is_not_reported() {
        let fp = fp();
        let mut other = VALUE.to_vec();
        other[5] ^= 1;
        assert!(fp.find(&other).is_empty());
        assert!(fp.find(b"").is_empty());
        let longer = format!("{}Z", std::str::from_utf8(VALUE).unwrap());
        assert!(fp.find(longer.as_bytes()).is_empty());
    }

    #[test]
    fn malformed_files_are_rejected() {
        assert!(Fingerprints::parse("{}").is_err());
        assert!(Fingerprints::parse(r#"{"format":"other","key":"","secrets":[]}"#).is_err());
        let short_key = r#"{"format":"keygate-fingerprints/v1","key":"AAAA","secrets":[]}"#;
        assert!(Fingerprints::parse(short_key).is_err());
        let good = file_for(&[1u8; 32], &[("a", 1, b"value-value")]);
        let bad_fp = good.replace(
            &good[good.find("\"fingerprint\":\"").unwrap() + 15..][..64],
            "ZZ",
        );
        assert!(Fingerprints::parse(&bad_fp).is_err());
    }
}
