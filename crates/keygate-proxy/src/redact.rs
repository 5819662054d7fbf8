//! Finding the injected key in upstream output (S30): some upstreams echo the credential
//! they received in error bodies ("invalid key sk-…"), in clear, base64 (HTTP Basic) or
//! URL-encoded form (query injection). The forwarder replaces every such occurrence
//! before the body reaches the app: [`Redactor`] in small buffered error bodies and
//! headers, [`StreamRedactor`] in every streamed body.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;
use memchr::memmem;
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

/// Redacts the key in a streamed response body (every body that is not a buffered error
/// body, S30) without buffering it.
///
/// Only the forms an upstream plausibly echoes in a successful answer are searched — the
/// clear key, its JSON form (`/` escaped) and the exact encoding it was injected in
/// (query value, Basic credentials) — so the scan stays one or two SIMD passes per chunk.
/// A match is replaced by a mask of the same length, so `Content-Length` stays true and no
/// body has to be held to re-frame it. A key split across chunks is caught by holding back
/// the end of a chunk only while it could still be the start of a key: an event stream's
/// `\n\n` is never held, so events still arrive one by one.
pub struct StreamRedactor {
    // memchr keeps its own copy of each needle, which is not zeroised on drop. The
    // finders are built once per key read and shared by that key's calls (see
    // [`crate::key::RouteKey`]), so they live as long as the cached key; the injected
    // header value (a plain `HeaderValue` in each outgoing request) is no better kept.
    finders: Arc<[memmem::Finder<'static>]>,
    /// Bytes held back from the previous chunk: a proper prefix of some needle.
    held: Zeroizing<Vec<u8>>,
    redacted: bool,
}

impl std::fmt::Debug for StreamRedactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamRedactor")
            .field("forms", &self.finders.len())
            .field("held", &self.held.len())
            .finish()
    }
}

impl StreamRedactor {
    /// The searched forms of `secret` as injected by `injection`.
    pub fn new(secret: &SecretString, injection: &Injection) -> Self {
        let clear = secret.expose_secret();
        let mut needles: Vec<Zeroizing<Vec<u8>>> = vec![Zeroizing::new(clear.as_bytes().to_vec())];
        needles.push(Zeroizing::new(clear.replace('/', "\\/").into_bytes()));
        match injection {
            Injection::Header { .. } => {}
            Injection::Query { .. } => needles.push(Zeroizing::new(
                utf8_percent_encode(clear, QUERY_VALUE)
                    .to_string()
                    .into_bytes(),
            )),
            Injection::Basic { username } => {
                let pair = Zeroizing::new(format!("{username}:{clear}"));
                needles.push(Zeroizing::new(
                    STANDARD.encode(pair.as_bytes()).into_bytes(),
                ));
            }
        }
        let mut finders: Vec<memmem::Finder<'static>> = Vec::with_capacity(needles.len());
        for n in &needles {
            if !n.is_empty() && !finders.iter().any(|f| f.needle() == n.as_slice()) {
                finders.push(memmem::Finder::new(n.as_slice()).into_owned());
            }
        }
        Self {
            finders: finders.into(),
            held: Zeroizing::new(Vec::new()),
            redacted: false,
        }
    }

    /// A redactor for another response, searching for the same forms: the searchers are
    /// shared, not built again; nothing is held and nothing counts as masked yet.
    pub fn fresh(&self) -> Self {
        Self {
            finders: Arc::clone(&self.finders),
            held: Zeroizing::new(Vec::new()),
            redacted: false,
        }
    }

    /// Whether any key was masked so far.
    pub fn redacted(&self) -> bool {
        self.redacted
    }

    /// Whether bytes are held back waiting for the next chunk.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// How many bytes are held back.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// The next chunk to pass on (possibly empty): what is known not to hold the key, masked.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        let buf = if self.held.is_empty() {
            chunk
        } else {
            let mut joined = Vec::with_capacity(self.held.len() + chunk.len());
            joined.extend_from_slice(&self.held);
            joined.extend_from_slice(&chunk);
            self.held.clear();
            Bytes::from(joined)
        };
        let buf = self.mask(buf);
        let keep = self.partial_match_len(&buf);
        if keep == 0 {
            return buf;
        }
        let cut = buf.len() - keep;
        self.held
            .extend_from_slice(buf.get(cut..).unwrap_or_default());
        buf.slice(..cut)
    }

    /// The held-back bytes at the end of the body: they turned out not to be a key.
    pub fn finish(&mut self) -> Bytes {
        let rest = Bytes::copy_from_slice(&self.held);
        self.held.clear();
        rest
    }

    fn mask(&mut self, buf: Bytes) -> Bytes {
        let mut hits: Vec<(usize, usize)> = Vec::new();
        for f in self.finders.iter() {
            let len = f.needle().len();
            hits.extend(f.find_iter(&buf).map(|at| (at, len)));
        }
        if hits.is_empty() {
            return buf;
        }
        self.redacted = true;
        let mut out = buf.to_vec();
        for (at, len) in hits {
            if let Some(range) = out.get_mut(at..at + len) {
                fill_mask(range);
            }
        }
        Bytes::from(out)
    }

    /// The length of the longest suffix of `buf` that is a proper prefix of a needle.
    fn partial_match_len(&self, buf: &[u8]) -> usize {
        let mut longest = 0;
        for f in self.finders.iter() {
            let needle = f.needle();
            let (Some(&first), Some(window)) = (needle.first(), needle.len().checked_sub(1)) else {
                continue;
            };
            let from = buf.len().saturating_sub(window);
            let tail = buf.get(from..).unwrap_or_default();
            // The leftmost candidate start is the longest suffix; stop at the first one.
            for at in memchr::memchr_iter(first, tail) {
                let suffix = tail.get(at..).unwrap_or_default();
                if suffix.len() > longest && needle.starts_with(suffix) {
                    longest = suffix.len();
                    break;
                }
            }
        }
        longest
    }
}

/// `[REDACTED]` padded with `*` to the length of what it replaces (all `*` when shorter).
fn fill_mask(range: &mut [u8]) {
    let marker = if range.len() >= REDACTED.len() {
        REDACTED
    } else {
        &[]
    };
    for (i, b) in range.iter_mut().enumerate() {
        *b = marker.get(i).copied().unwrap_or(b'*');
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

/// Below this length a text is searched by its needle's first byte (`memchr`) rather than
/// with a `memmem` searcher, whose set-up costs more than the search: response header
/// values, each searched for every form of the key on every call, are mostly this short.
const SHORT_TEXT: usize = 64;

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let rest = haystack.get(from..)?;
    // Most response header values are shorter than most of the key's forms.
    if needle.is_empty() || rest.len() < needle.len() {
        return None;
    }
    let found = if rest.len() < SHORT_TEXT {
        find_in_short(rest, needle)
    } else {
        memmem::find(rest, needle)
    };
    found.map(|p| p + from)
}

/// The first occurrence of a non-empty `needle` in a short `text`.
fn find_in_short(text: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = 0;
    while let Some(offset) = memchr::memchr(first, text.get(at..)?) {
        let candidate = at + offset;
        if text.get(candidate..candidate + needle.len())? == needle {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
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
        // A value that is exactly the key is found; one byte short of it is not.
        assert!(r.contains_secret(b"sk-live/AbC+123=xyz"));
        assert!(!r.contains_secret(b"sk-live/AbC+123=xy"));
        assert!(!r.contains_secret(b""));
    }

    proptest::proptest! {
        /// `find` agrees with a plain window search on both sides of `SHORT_TEXT`, over a
        /// three-letter alphabet so that near-misses and overlaps are common.
        #[test]
        fn find_agrees_with_a_window_search(
            text in proptest::collection::vec(0u8..3, 0..150),
            needle in proptest::collection::vec(0u8..3, 0..6),
            from in 0usize..160,
        ) {
            let expected = if needle.is_empty() || from > text.len() {
                None
            } else {
                text[from..]
                    .windows(needle.len())
                    .position(|w| w == needle.as_slice())
                    .map(|p| p + from)
            };
            proptest::prop_assert_eq!(find(&text, &needle, from), expected);
        }
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

    fn stream(r: &mut StreamRedactor, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Bytes>) {
        let mut frames = Vec::new();
        for c in chunks {
            frames.push(r.push(Bytes::copy_from_slice(c)));
        }
        frames.push(r.finish());
        (frames.concat(), frames)
    }

    #[test]
    fn success_body_key_split_across_chunks_is_masked_at_every_split() {
        let key = "sk-live-0123456789abcdef";
        let body = format!("{{\"echo\":\"Bearer {key}\",\"again\":\"{key}\"}}");
        for split in 0..=body.len() {
            for second in split..=body.len() {
                let mut r = StreamRedactor::new(&SecretString::from(key), &header());
                let b = body.as_bytes();
                let (out, _) = stream(&mut r, &[&b[..split], &b[split..second], &b[second..]]);
                assert_eq!(out.len(), b.len(), "masks keep the length");
                assert!(
                    !out.windows(key.len()).any(|w| w == key.as_bytes()),
                    "split at {split}/{second}: {}",
                    String::from_utf8_lossy(&out)
                );
                assert!(r.redacted());
            }
        }
    }

    #[test]
    fn success_body_without_key_passes_unchanged_and_unheld() {
        let key = "sk-live-0123456789abcdef";
        let mut r = StreamRedactor::new(&SecretString::from(key), &header());
        // Ends of events never look like the start of the key: nothing is held back.
        let events: [&[u8]; 3] = [b"data: {\"a\":1}\n\n", b"data: sk-\n\n", b"data: s"];
        let (out, frames) = stream(&mut r, &events);
        assert_eq!(out, events.concat());
        assert_eq!(frames[0].as_ref(), events[0]);
        assert_eq!(frames[1].as_ref(), events[1]);
        // "s" could begin the key: held until the next chunk or the end.
        assert_eq!(frames[2].as_ref(), b"data: ");
        assert_eq!(frames[3].as_ref(), b"s");
        assert!(!r.redacted());
    }

    #[test]
    fn success_body_masks_injected_forms() {
        let key = "k/ey+with=odd&chars";
        let basic = Injection::Basic {
            username: "api".into(),
        };
        let query = Injection::Query { name: "key".into() };
        let forms = [
            (basic, STANDARD.encode(format!("api:{key}"))),
            (query, utf8_percent_encode(key, QUERY_VALUE).to_string()),
            (header(), key.replace('/', "\\/")),
        ];
        for (inj, form) in forms {
            let mut r = StreamRedactor::new(&SecretString::from(key), &inj);
            let body = format!("you sent {form} ok");
            let (out, _) = stream(&mut r, &[body.as_bytes()]);
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains(&form), "{out}");
            assert!(
                out.starts_with("you sent [REDACTED]*") && out.ends_with(" ok"),
                "{out}"
            );
        }
    }
}
