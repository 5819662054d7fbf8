//! Finding the injected key in upstream output (S30): some upstreams echo the credential
//! they received in error bodies ("invalid key sk-…"), in clear, base64 (HTTP Basic) or
//! URL-encoded form (query injection). The forwarder replaces every such occurrence
//! before the body reaches the app.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::route::Injection;

/// Characters percent-encoded in a query value: everything but RFC 3986 `unreserved`.
pub const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What replaces a found key.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// Shortest base64 fragment searched for; shorter ones would match unrelated text.
const MIN_FRAGMENT: usize = 8;

/// The encodings of one key that are searched for.
pub struct Redactor {
    needles: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("forms", &self.needles.len())
            .finish()
    }
}

/// The part of `base64(prefix ++ data)` that depends only on `data`, for each of the three
/// byte alignments `data` can have inside a longer encoded string.
fn base64_cores(data: &[u8], engine: &impl base64::Engine) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for shift in 0..3usize {
        let mut buf = Zeroizing::new(vec![0u8; shift]);
        buf.extend_from_slice(data);
        let encoded = Zeroizing::new(engine.encode(buf.as_slice()));
        let bytes = encoded.as_bytes();
        // Groups of 4 chars encode 3 bytes; the first group mixes in the prefix when
        // shift > 0, the last one mixes in whatever follows unless it ends on a boundary.
        let start = if shift > 0 { 4 } else { 0 };
        let total = shift + data.len();
        let full_groups = total / 3;
        let end = full_groups * 4;
        if let Some(core) = bytes.get(start..end) {
            let core = core.trim_ascii_end();
            if core.len() >= MIN_FRAGMENT {
                out.push(core.to_vec());
            }
        }
    }
    out
}

impl Redactor {
    /// The forms of `secret` as injected by `injection`.
    pub fn new(secret: &SecretString, injection: &Injection) -> Self {
        let clear = secret.expose_secret().as_bytes();
        let mut needles: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut add = |n: Vec<u8>| {
            if !n.is_empty() && !needles.iter().any(|have| have.as_slice() == n.as_slice()) {
                needles.push(Zeroizing::new(n));
            }
        };
        add(clear.to_vec());
        for set in [NON_ALPHANUMERIC, QUERY_VALUE] {
            let encoded =
                Zeroizing::new(utf8_percent_encode(secret.expose_secret(), set).to_string());
            add(lowercase_escapes(&encoded));
            add(encoded.as_bytes().to_vec());
        }
        add(secret.expose_secret().replace('/', "\\/").into_bytes());
        let mut sources: Vec<Zeroizing<Vec<u8>>> = vec![Zeroizing::new(clear.to_vec())];
        if let Injection::Basic { username } = injection {
            let mut pair = Zeroizing::new(Vec::with_capacity(username.len() + 1 + clear.len()));
            pair.extend_from_slice(username.as_bytes());
            pair.push(b':');
            pair.extend_from_slice(clear);
            sources.push(pair);
        }
        for source in &sources {
            for engine in [&STANDARD, &URL_SAFE] {
                for core in base64_cores(source, engine) {
                    add(core);
                }
            }
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                add(engine.encode(source.as_slice()).into_bytes());
            }
        }
        Self { needles }
    }

    /// Whether `haystack` contains the key in any searched form.
    pub fn contains_secret(&self, haystack: &[u8]) -> bool {
        self.needles
            .iter()
            .any(|n| find(haystack, n.as_slice(), 0).is_some())
    }

    /// `haystack` with every occurrence replaced by [`REDACTED`], or `None` when there was
    /// nothing to replace.
    pub fn redact(&self, haystack: &[u8]) -> Option<Vec<u8>> {
        if !self.contains_secret(haystack) {
            return None;
        }
        let mut current = haystack.to_vec();
        // Longest first, so a clear key inside a longer encoded form is not half-replaced.
        let mut order: Vec<&[u8]> = self.needles.iter().map(|n| n.as_slice()).collect();
        order.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for needle in order {
            let mut out = Vec::with_capacity(current.len());
            let mut from = 0;
            while let Some(at) = find(&current, needle, from) {
                out.extend_from_slice(current.get(from..at).unwrap_or_default());
                out.extend_from_slice(REDACTED);
                from = at + needle.len();
            }
            out.extend_from_slice(current.get(from..).unwrap_or_default());
            current = out;
        }
        Some(current)
    }
}

/// `%2F` → `%2f`, leaving the other characters alone.
fn lowercase_escapes(encoded: &str) -> Vec<u8> {
    let mut out = encoded.as_bytes().to_vec();
    let mut i = 0;
    while i < out.len() {
        if out.get(i) == Some(&b'%') {
            for j in [i + 1, i + 2] {
                if let Some(b) = out.get_mut(j) {
                    b.make_ascii_lowercase();
                }
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn header() -> Injection {
        Injection::Header {
            name: HeaderName::from_static("x-api-key"),
            prefix: String::new(),
            suffix: String::new(),
        }
    }

    #[test]
    fn finds_every_encoding() {
        let secret = SecretString::from("sk-live/AbC+123=xyz");
        let r = Redactor::new(&secret, &header());
        let forms = [
            "error: key sk-live/AbC+123=xyz is invalid".to_owned(),
            format!("b64 {}", STANDARD.encode("sk-live/AbC+123=xyz")),
            format!("b64url {}", URL_SAFE_NO_PAD.encode("sk-live/AbC+123=xyz")),
            // embedded at each alignment inside a longer base64 string
            STANDARD.encode("x:sk-live/AbC+123=xyz;"),
            STANDARD.encode("xy:sk-live/AbC+123=xyz;;"),
            "q=sk%2Dlive%2FAbC%2B123%3Dxyz".to_owned(),
            "q=sk%2dlive%2fAbC%2b123%3dxyz".to_owned(),
            "{\"k\":\"sk-live\\/AbC+123=xyz\"}".to_owned(),
        ];
        for f in forms {
            let out = r
                .redact(f.as_bytes())
                .unwrap_or_else(|| panic!("missed {f}"));
            assert!(!r.contains_secret(&out), "{f}");
        }
        assert!(r.redact(b"nothing to see").is_none());
    }

    #[test]
    fn basic_pair_is_found() {
        let secret = SecretString::from("s3cret-value");
        let inj = Injection::Basic {
            username: "api".into(),
        };
        let r = Redactor::new(&secret, &inj);
        let echoed = format!("got Basic {}", STANDARD.encode("api:s3cret-value"));
        let out = r.redact(echoed.as_bytes()).unwrap();
        assert_eq!(out, b"got Basic [REDACTED]");
    }
}
