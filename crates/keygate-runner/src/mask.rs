//! Streaming redaction of secret values (and common encodings of them) in a
//! byte stream.
//!
//! A [`Masker`] is built from the secret values. For every value of at least
//! [`MIN_MASK_LEN`] bytes it searches for the raw bytes and for the value
//! encoded as base64 (standard and URL alphabets, padded and unpadded), hex
//! (lower and upper case) and percent-encoding (upper and lower case hex
//! digits). Every occurrence is replaced by [`REPLACEMENT`].
//!
//! Output is fed in arbitrary chunks with [`Masker::push`]; the masker holds
//! back only the shortest tail that could still grow into a match, so a value
//! split across chunks is still masked while ordinary output passes through
//! without delay. [`Masker::finish`] releases what is held at end of stream.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use std::fmt;
use zeroize::Zeroizing;

/// Values shorter than this many bytes are not masked: replacing every `1`
/// or `ab` in the output would make it unreadable and hide nothing.
pub const MIN_MASK_LEN: usize = 4;

/// What each occurrence of a secret (or an encoding of one) becomes.
pub const REPLACEMENT: &[u8] = b"****";

/// The search automaton could not be built (the patterns exceed the
/// automaton's size limits).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the secret masker: {0}")]
pub struct MaskError(#[from] aho_corasick::BuildError);

/// A streaming redactor for one output stream.
///
/// Use one `Masker` per stream: it keeps the not-yet-emitted tail of the
/// stream. `Clone` copies that tail too; clone a fresh masker to start a new
/// stream.
#[derive(Clone)]
pub struct Masker {
    /// `None` when there is nothing to mask.
    matcher: Option<AhoCorasick>,
    /// Distinct patterns, zeroed on drop.
    patterns: Vec<Zeroizing<Vec<u8>>>,
    /// `first[b]` is true when some pattern begins with byte `b`.
    first: Vec<bool>,
    /// Length of the longest pattern.
    max_len: usize,
    /// Bytes received but not yet emitted (always shorter than `max_len`).
    pending: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("patterns", &self.patterns.len())
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// Builds a masker for `values` and their encodings. Values shorter than
    /// [`MIN_MASK_LEN`] are ignored (see [`Masker::too_short`]).
    pub fn new<I, V>(values: I) -> Result<Self, MaskError>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for value in values {
            let value = value.as_ref();
            if value.len() < MIN_MASK_LEN {
                continue;
            }
            for pattern in encodings(value) {
                if !patterns.iter().any(|p| p.as_slice() == pattern.as_slice()) {
                    patterns.push(pattern);
                }
            }
        }
        if patterns.is_empty() {
            return Ok(Self::empty());
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|p| p.as_slice()))?;
        let mut first = vec![false; 256];
        for p in &patterns {
            if let Some(slot) = p.first().and_then(|&b| first.get_mut(usize::from(b))) {
                *slot = true;
            }
        }
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        Ok(Self {
            matcher: Some(matcher),
            patterns,
            first,
            max_len,
            pending: Zeroizing::new(Vec::new()),
        })
    }

    /// A masker that passes everything through unchanged.
    pub fn empty() -> Self {
        Self {
            matcher: None,
            patterns: Vec::new(),
            first: Vec::new(),
            max_len: 0,
            pending: Zeroizing::new(Vec::new()),
        }
    }

    /// Indices (in iteration order) of the values that [`Masker::new`] would
    /// skip because they are shorter than [`MIN_MASK_LEN`], so a caller can
    /// warn about them.
    pub fn too_short<I, V>(values: I) -> Vec<usize>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        values
            .into_iter()
            .enumerate()
            .filter(|(_, v)| v.as_ref().len() < MIN_MASK_LEN)
            .map(|(i, _)| i)
            .collect()
    }

    /// Number of distinct byte patterns searched for.
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    /// A masker with the same patterns and an empty stream state.
    pub fn fresh(&self) -> Self {
        Self {
            matcher: self.matcher.clone(),
            patterns: self.patterns.clone(),
            first: self.first.clone(),
            max_len: self.max_len,
            pending: Zeroizing::new(Vec::new()),
        }
    }

    /// Masks a complete input in one go, independent of any stream state.
    pub fn mask(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        match &self.matcher {
            Some(matcher) => {
                let end = replace_matches(matcher, input, usize::MAX, &mut out);
                out.extend_from_slice(input.get(end..).unwrap_or_default());
            }
            None => out.extend_from_slice(input),
        }
        out
    }

    /// Feeds the next chunk of the stream and appends to `out` everything
    /// that can be emitted now. A tail that may be the start of a secret is
    /// held back until the next call (or [`Masker::finish`]).
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(matcher) = &self.matcher else {
            out.extend_from_slice(chunk);
            return;
        };
        self.pending.extend_from_slice(chunk);
        let hold = hold_point(&self.pending, &self.patterns, &self.first, self.max_len);
        // Matches that start before `hold` are final (no pattern starting
        // there can reach past the buffer) and are masked whole, even when
        // they end inside the held tail.
        let mut emitted = replace_matches(matcher, &self.pending, hold, out);
        if emitted < hold {
            out.extend_from_slice(self.pending.get(emitted..hold).unwrap_or_default());
            emitted = hold;
        }
        self.pending.drain(..emitted);
    }

    /// Ends the stream: masks and appends everything still held. A held
    /// partial prefix of a secret is emitted as it is: it never completed.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(matcher) = &self.matcher {
            let end = replace_matches(matcher, &self.pending, usize::MAX, out);
            out.extend_from_slice(self.pending.get(end..).unwrap_or_default());
        } else {
            out.extend_from_slice(&self.pending);
        }
        self.pending.clear();
    }
}

/// Appends `input` with every match that starts before `limit` replaced, up
/// to the end of the last such match (or up to the last match-free byte
/// before it). Returns how far `input` was consumed.
fn replace_matches(matcher: &AhoCorasick, input: &[u8], limit: usize, out: &mut Vec<u8>) -> usize {
    let mut emitted = 0;
    for m in matcher.find_iter(input) {
        if m.start() >= limit {
            break;
        }
        out.extend_from_slice(input.get(emitted..m.start()).unwrap_or_default());
        out.extend_from_slice(REPLACEMENT);
        emitted = m.end();
    }
    emitted
}

/// Start of the longest suffix of `buf` that is a proper prefix of some
/// pattern, or `buf.len()` when there is none.
fn hold_point(
    buf: &[u8],
    patterns: &[Zeroizing<Vec<u8>>],
    first: &[bool],
    max_len: usize,
) -> usize {
    let len = buf.len();
    let start = len.saturating_sub(max_len.saturating_sub(1));
    for i in start..len {
        let Some(tail) = buf.get(i..) else { break };
        let starts = tail
            .first()
            .and_then(|&b| first.get(usize::from(b)))
            .copied()
            .unwrap_or(false);
        if starts
            && patterns
                .iter()
                .any(|p| p.len() > tail.len() && p.starts_with(tail))
        {
            return i;
        }
    }
    len
}

/// The raw value and each encoding of it that is searched for.
fn encodings(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    vec![
        Zeroizing::new(value.to_vec()),
        Zeroizing::new(STANDARD.encode(value).into_bytes()),
        Zeroizing::new(STANDARD_NO_PAD.encode(value).into_bytes()),
        Zeroizing::new(URL_SAFE.encode(value).into_bytes()),
        Zeroizing::new(URL_SAFE_NO_PAD.encode(value).into_bytes()),
        Zeroizing::new(hex::encode(value).into_bytes()),
        Zeroizing::new(hex::encode_upper(value).into_bytes()),
        percent_encode(value, b"0123456789ABCDEF"),
        percent_encode(value, b"0123456789abcdef"),
    ]
}

/// Percent-encodes every byte outside the unreserved set `A-Za-z0-9-._~`.
fn percent_encode(value: &[u8], digits: &[u8; 16]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.push(b'%');
            out.extend(
                [b >> 4, b & 0x0f]
                    .iter()
                    .filter_map(|&n| digits.get(usize::from(n)).copied()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]

    use super::*;

    fn stream(m: &mut Masker, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            m.push(c, &mut out);
        }
        m.finish(&mut out);
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn masks_raw_and_every_encoding() {
        let v = b"s3cr3t/value+?";
        let m = Masker::new([v]).unwrap();
        for enc in encodings(v) {
            let mut input = b"before ".to_vec();
            input.extend_from_slice(&enc);
            input.extend_from_slice(b" after\n");
            assert_eq!(
                m.mask(&input),
                b"before **** after\n",
                "{}",
                String::from_utf8_lossy(&enc)
            );
        }
        assert_eq!(m.mask(b"s3cr3t%2fvalue%2b%3f"), b"****");
    }

    #[test]
    fn dedupes_patterns() {
        // All-unreserved value: both percent forms equal the raw value; hex
        // of a value made of hex digits is distinct.
        let m = Masker::new([b"abcd"]).unwrap();
        // raw, b64 pad, b64 nopad (== url nopad), url pad (== std pad), hex lo, hex up
        let expected: std::collections::HashSet<Vec<u8>> =
            encodings(b"abcd").iter().map(|p| p.to_vec()).collect();
        assert_eq!(m.pattern_count(), expected.len());
        assert!(m.pattern_count() < 9);
    }

    #[test]
    fn short_values_are_not_masked() {
        let values: [&[u8]; 3] = [b"abc", b"long-enough", b""];
        assert_eq!(Masker::too_short(values), vec![0, 2]);
        let m = Masker::new(values).unwrap();
        assert_eq!(m.mask(b"abc long-enough"), b"abc ****");
        assert_eq!(Masker::new([b"x"]).unwrap().pattern_count(), 0);
    }

    #[test]
    fn debug_hides_patterns() {
        let m = Masker::new([b"hunter22"]).unwrap();
        let d = format!("{m:?}");
        assert!(!d.contains("hunter22") && !d.contains("104"), "{d}");
        assert!(d.contains("patterns"));
    }

    #[test]
    fn value_split_across_pushes() {
        let mut m = Masker::new([b"abcdefgh"]).unwrap();
        let mut out = Vec::new();
        m.push(b"xx abcd", &mut out);
        assert_eq!(out, b"xx ");
        m.push(b"ef", &mut out);
        assert_eq!(out, b"xx ");
        m.push(b"gh yy\n", &mut out);
        assert_eq!(out, b"xx **** yy\n");
        m.finish(&mut out);
        assert_eq!(out, b"xx **** yy\n");
    }

    #[test]
    fn newline_flushes_immediately() {
        let mut m = Masker::new([b"abcdefgh"]).unwrap();
        let mut out = Vec::new();
        m.push(b"hello world\n", &mut out);
        assert_eq!(out, b"hello world\n");
    }

    #[test]
    fn match_straddling_hold_point_is_masked_whole() {
        let mut m = Masker::new([b"abab"]).unwrap();
        let mut out = Vec::new();
        m.push(b"xabab", &mut out);
        // "ab" at the end is a prefix of "abab" but belongs to the match.
        assert_eq!(out, b"x****");
        m.finish(&mut out);
        assert_eq!(out, b"x****");
    }

    #[test]
    fn longer_pattern_wins_over_prefix_pattern_across_pushes() {
        let mut m = Masker::new([&b"secret"[..], b"secretlonger"]).unwrap();
        assert_eq!(stream(&mut m, &[b"a secret", b"longer b"]), b"a **** b");
        let mut m = m.fresh();
        assert_eq!(stream(&mut m, &[b"a secret", b" b"]), b"a **** b");
    }

    #[test]
    fn held_partial_prefix_is_emitted_at_finish() {
        let mut m = Masker::new([b"abcdefgh"]).unwrap();
        assert_eq!(stream(&mut m, &[b"x abc"]), b"x abc");
    }

    #[test]
    fn held_tail_is_bounded() {
        let mut m = Masker::new([b"aaaaaaaa"]).unwrap();
        let mut out = Vec::new();
        for _ in 0..100 {
            m.push(b"aaa", &mut out);
            assert!(m.pending.len() < m.max_len);
        }
        m.finish(&mut out);
        assert_eq!(out, m.mask(&b"aaa".repeat(100)));
    }

    #[test]
    fn empty_masker_passes_through() {
        let mut m = Masker::empty();
        assert_eq!(stream(&mut m, &[b"abc", b"def"]), b"abcdef");
    }

    /// xorshift64*: small, deterministic.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_splits_match_one_shot() {
        let values: Vec<Vec<u8>> = vec![
            b"abab".to_vec(),
            b"ababab-xyz".to_vec(),
            b"p@ss w/rd?".to_vec(),
            vec![0x00, 0xff, 0x10, 0x80, 0x41],
            b"tok_1234567890".to_vec(),
        ];
        let masker = Masker::new(&values).unwrap();
        let mut all_patterns = Vec::new();
        for v in &values {
            all_patterns.extend(encodings(v).into_iter().map(|p| p.to_vec()));
        }
        let filler: &[&[u8]] = &[b"a", b"b", b"ab", b" ", b"\n", b"%", b"x", b"=", b"tok_"];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _round in 0..400 {
            let mut input = Vec::new();
            for _ in 0..(1 + rng.below(12)) {
                if rng.below(2) == 0 {
                    input.extend_from_slice(&all_patterns[rng.below(all_patterns.len())]);
                } else {
                    input.extend_from_slice(filler[rng.below(filler.len())]);
                }
            }
            let expected = masker.mask(&input);
            let mut m = masker.fresh();
            let mut out = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(7));
                let (chunk, tail) = rest.split_at(n);
                m.push(chunk, &mut out);
                rest = tail;
            }
            m.finish(&mut out);
            assert_eq!(out, expected, "input {:?}", String::from_utf8_lossy(&input));
            // The replacement itself may not recreate a secret, and the
            // fillers cannot form one, so nothing secret survives.
            for p in &all_patterns {
                assert!(
                    !contains(&out, p),
                    "{:?} in {:?}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
}
