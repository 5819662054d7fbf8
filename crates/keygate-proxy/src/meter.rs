//! Cost metering: reading what a call cost from the upstream's response, without holding
//! the response back from the app.
//!
//! A route's `cost.header` is read from the response head. A route's `cost.json` is read
//! at the end of the body from a bounded copy taken as frames pass to the app:
//! - `application/json` (and `+json`) bodies: the first [`MAX_JSON_COPY`] bytes; a longer
//!   body's cost is unreadable;
//! - `text/event-stream` bodies: [`SseLastEvent`] keeps only the data of the last complete
//!   event whose data is JSON (at most [`MAX_SSE_EVENT`] bytes), so `data: [DONE]` and
//!   similar markers are skipped.
//!
//! When the body stops early (the app went away, the upstream failed), the cost is read
//! from what had passed: for a stream, its last complete JSON event. Error responses
//! (4xx, 5xx) are not metered: they count at `per_call`.
//!
//! A cost is a non-negative JSON integer. A number with a fraction is rounded up (a cost
//! is charged, never given away). Anything else — a missing member, a string, a negative
//! number, a compressed or oversize body, another content type — makes the cost
//! unreadable: the call counts at the route's `per_call` and
//! `keygate_proxy_cost_unreadable_total` moves.

use bytes::Bytes;
use serde_json::Value;

use crate::route::{JsonPath, JsonStep, MAX_COST};

/// The largest JSON body copied for metering: 1 MiB.
pub const MAX_JSON_COPY: usize = 1024 * 1024;

/// The largest event data kept by [`SseLastEvent`]: 64 KiB.
pub const MAX_SSE_EVENT: usize = 64 * 1024;

/// Why a cost could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// The header, member or event is missing.
    #[error("no cost in the response")]
    Missing,
    /// The value is not a non-negative number.
    #[error("the cost is not a non-negative number")]
    NotANumber,
    /// The body is not valid JSON.
    #[error("the body is not JSON")]
    NotJson,
    /// The body or event is larger than the copy kept for metering.
    #[error("the body is too large to meter")]
    Oversize,
    /// The body's content type or encoding cannot be metered.
    #[error("the body's content type or encoding cannot be metered")]
    Unsupported,
}

/// Parses a header value: ASCII digits, surrounding whitespace allowed.
pub fn cost_from_header(value: &[u8]) -> Result<u64, Unreadable> {
    let text = value.trim_ascii();
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(Unreadable::NotANumber);
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|n| *n <= MAX_COST)
        .ok_or(Unreadable::NotANumber)
}

/// Reads the cost at `path` in a parsed document.
pub fn cost_at(doc: &Value, path: &JsonPath) -> Result<u64, Unreadable> {
    let mut here = doc;
    for step in path.steps() {
        here = match (step, here) {
            (JsonStep::Key(k), Value::Object(map)) => map.get(k),
            (JsonStep::Key(k), Value::Array(items)) => {
                k.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            (JsonStep::Index(i), Value::Array(items)) => items.get(*i),
            _ => None,
        }
        .ok_or(Unreadable::Missing)?;
    }
    let Value::Number(n) = here else {
        return Err(Unreadable::NotANumber);
    };
    if let Some(u) = n.as_u64() {
        return if u <= MAX_COST {
            Ok(u)
        } else {
            Err(Unreadable::NotANumber)
        };
    }
    match n.as_f64() {
        // `MAX_COST as f64` rounds up to 2^63, so `<` keeps the cast in range.
        Some(f) if f.is_finite() && f >= 0.0 && f.ceil() < MAX_COST as f64 => Ok(f.ceil() as u64),
        _ => Err(Unreadable::NotANumber),
    }
}

/// Reads the cost at `path` in a JSON text.
pub fn cost_in_json(text: &[u8], path: &JsonPath) -> Result<u64, Unreadable> {
    let doc: Value = serde_json::from_slice(text).map_err(|_| Unreadable::NotJson)?;
    cost_at(&doc, path)
}

/// An incremental `text/event-stream` parser that keeps only the data of the last
/// complete event whose data is JSON.
///
/// Frames may split the stream at any byte, including between the CR and LF of a line
/// end. Lines end with CRLF, LF or CR; an event ends with an empty line; its data is its
/// `data:` lines joined with `\n` (one space after the colon is dropped); other fields
/// and comments are ignored; an event still open when the stream ends is discarded (as
/// a browser's `EventSource` does). Memory is bounded by about twice `max` bytes.
#[derive(Debug)]
pub struct SseLastEvent {
    max: usize,
    /// The current line (bounded); `line_over` once it outgrew the bound.
    line: Vec<u8>,
    line_over: bool,
    /// The previous chunk ended with CR: a leading LF belongs to that line end.
    after_cr: bool,
    /// The data of the event being read.
    data: Vec<u8>,
    has_data: bool,
    data_over: bool,
    /// The data of the last complete JSON event, or why it was unreadable.
    last: Result<Vec<u8>, Unreadable>,
}

impl SseLastEvent {
    /// A parser keeping event data of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            line: Vec::new(),
            line_over: false,
            after_cr: false,
            data: Vec::new(),
            has_data: false,
            data_over: false,
            last: Err(Unreadable::Missing),
        }
    }

    /// Reads the next chunk of the stream.
    pub fn push(&mut self, mut chunk: &[u8]) {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while !chunk.is_empty() {
            match memchr::memchr2(b'\n', b'\r', chunk) {
                None => {
                    self.extend_line(chunk);
                    return;
                }
                Some(at) => {
                    let (line, rest) = chunk.split_at(at);
                    self.extend_line(line);
                    self.end_line();
                    let is_cr = rest.first() == Some(&b'\r');
                    let mut rest = rest.get(1..).unwrap_or_default();
                    if is_cr {
                        match rest.first() {
                            Some(b'\n') => rest = rest.get(1..).unwrap_or_default(),
                            None => self.after_cr = true,
                            Some(_) => {}
                        }
                    }
                    chunk = rest;
                }
            }
        }
    }

    /// The data of the last complete JSON event.
    pub fn last_event(&self) -> Result<&[u8], Unreadable> {
        self.last.as_deref().map_err(|e| *e)
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        if self.line_over {
            return;
        }
        // Room for "data: " before `max` bytes of value.
        if self.line.len() + bytes.len() > self.max + 6 {
            // Keep only the field name, to tell a data line from a long comment.
            let need = 5usize.saturating_sub(self.line.len()).min(bytes.len());
            self.line
                .extend_from_slice(bytes.get(..need).unwrap_or_default());
            self.line.truncate(5);
            self.line_over = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self) {
        let over = std::mem::replace(&mut self.line_over, false);
        let mut line = std::mem::take(&mut self.line);
        if over {
            if line.starts_with(b"data:") {
                self.has_data = true;
                self.data_over = true;
                self.data.clear();
            }
        } else if line.is_empty() {
            self.dispatch();
        } else if let Some(value) = data_value(&line) {
            let sep = usize::from(self.has_data);
            self.has_data = true;
            if self.data_over || self.data.len() + sep + value.len() > self.max {
                self.data_over = true;
                self.data.clear();
            } else {
                if sep == 1 {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            }
        }
        // Keep the allocation for the next line.
        line.clear();
        self.line = line;
    }

    fn dispatch(&mut self) {
        if self.has_data {
            if self.data_over {
                self.last = Err(Unreadable::Oversize);
            } else if serde_json::from_slice::<serde::de::IgnoredAny>(&self.data).is_ok() {
                match &mut self.last {
                    Ok(last) => std::mem::swap(last, &mut self.data),
                    Err(_) => self.last = Ok(std::mem::take(&mut self.data)),
                }
            }
        }
        self.data.clear();
        self.has_data = false;
        self.data_over = false;
    }
}

/// The value of a `data` line, or `None` for other lines.
fn data_value(line: &[u8]) -> Option<&[u8]> {
    if line == b"data" {
        return Some(b"");
    }
    let value = line.strip_prefix(b"data:")?;
    Some(value.strip_prefix(b" ").unwrap_or(value))
}

/// What a body meter observes.
#[derive(Debug)]
pub(crate) enum BodyMeter {
    /// A JSON body, copied up to [`MAX_JSON_COPY`] bytes.
    Json { copy: Vec<u8>, over: bool },
    /// An event stream.
    Sse(SseLastEvent),
    /// A body that cannot be metered; nothing is copied.
    Unsupported,
}

impl BodyMeter {
    /// The meter for a response with these headers.
    pub(crate) fn for_response(headers: &http::HeaderMap) -> Self {
        let encoded = headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
        if encoded {
            return Self::Unsupported;
        }
        let Some(essence) = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
        else {
            return Self::Unsupported;
        };
        if essence == "text/event-stream" {
            Self::Sse(SseLastEvent::new(MAX_SSE_EVENT))
        } else if essence == "application/json" || essence.ends_with("+json") {
            let over = headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > MAX_JSON_COPY as u64);
            Self::Json {
                copy: Vec::new(),
                over,
            }
        } else {
            Self::Unsupported
        }
    }

    /// Observes one data frame on its way to the app.
    pub(crate) fn observe(&mut self, data: &Bytes) {
        match self {
            Self::Json { copy, over } => {
                if *over {
                    return;
                }
                if copy.len() + data.len() > MAX_JSON_COPY {
                    *over = true;
                    *copy = Vec::new();
                } else {
                    copy.extend_from_slice(data);
                }
            }
            Self::Sse(parser) => parser.push(data),
            Self::Unsupported => {}
        }
    }

    /// The cost at `path`, once the body has ended (or stopped).
    pub(crate) fn finish(&self, path: &JsonPath) -> Result<u64, Unreadable> {
        match self {
            Self::Json { over: true, .. } => Err(Unreadable::Oversize),
            Self::Json { copy, .. } => cost_in_json(copy, path),
            Self::Sse(parser) => cost_in_json(parser.last_event()?, path),
            Self::Unsupported => Err(Unreadable::Unsupported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::MAX_JSON_PATH_STEPS;

    fn path(p: &str) -> JsonPath {
        JsonPath::parse(p).unwrap()
    }

    fn last_of(chunks: &[&[u8]]) -> Result<String, Unreadable> {
        let mut p = SseLastEvent::new(MAX_SSE_EVENT);
        for c in chunks {
            p.push(c);
        }
        p.last_event()
            .map(|d| String::from_utf8(d.to_vec()).unwrap())
    }

    const STREAM: &str = ": comment\r\n\
        event: delta\r\n\
        data: {\"n\":1}\r\n\
        \r\n\
        data:{\"usage\":\r\n\
        data: {\"total_tokens\": 42}}\r\n\
        id: 7\r\n\
        \r\n\
        data: [DONE]\n\n";

    #[test]
    fn sse_last_json_event_wins_and_done_is_skipped() {
        assert_eq!(
            last_of(&[STREAM.as_bytes()]).unwrap(),
            "{\"usage\":\n{\"total_tokens\": 42}}"
        );
        let mut p = SseLastEvent::new(MAX_SSE_EVENT);
        p.push(STREAM.as_bytes());
        assert_eq!(
            cost_in_json(p.last_event().unwrap(), &path("usage.total_tokens")),
            Ok(42)
        );
    }

    #[test]
    fn sse_split_at_every_byte_boundary_gives_the_same_event() {
        let want = last_of(&[STREAM.as_bytes()]).unwrap();
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(last_of(&[a, b]).unwrap(), want, "cut at {cut}");
        }
        // And one byte per chunk, with every line-end style.
        for eol in ["\n", "\r", "\r\n"] {
            let text = format!(
                "data: {{\"a\":1}}{eol}{eol}data: {{\"a\":{eol}data: 2}}{eol}{eol}data: x{eol}{eol}"
            );
            let chunks: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
            assert_eq!(last_of(&chunks).unwrap(), "{\"a\":\n2}", "{eol:?}");
        }
    }

    #[test]
    fn sse_incomplete_final_event_is_discarded() {
        assert_eq!(
            last_of(&[b"data: {\"a\":1}\n\ndata: {\"a\":2}\n"]).unwrap(),
            "{\"a\":1}"
        );
        assert_eq!(last_of(&[b"data: [DONE]\n\n"]), Err(Unreadable::Missing));
        assert_eq!(last_of(&[b""]), Err(Unreadable::Missing));
    }

    #[test]
    fn sse_bounds_oversize_events() {
        let mut p = SseLastEvent::new(16);
        p.push(b"data: {\"a\":1}\n\n");
        assert_eq!(p.last_event().unwrap(), b"{\"a\":1}");
        // One line over the bound, then a data line pushing the event over the bound.
        p.push(b"data: {\"a\":\"0123456789abcdefghij\"}\n\n");
        assert_eq!(p.last_event(), Err(Unreadable::Oversize));
        p.push(b"data: {\"a\":3}\n\n");
        assert_eq!(p.last_event().unwrap(), b"{\"a\":3}");
        p.push(b"data: {\"a\":\ndata: \"0123456789\"}\n\n");
        assert_eq!(p.last_event(), Err(Unreadable::Oversize));
        // A long comment is not data: it changes nothing.
        p.push(b"data: {\"a\":4}\n\n");
        p.push(&[b'x'; 1000]);
        assert!(p.line.len() <= 16 + 6, "the line buffer stays bounded");
        p.push(b"\n\n");
        assert!(p.data.len() <= 16 && p.line.is_empty());
        assert_eq!(p.last_event().unwrap(), b"{\"a\":4}");
    }

    #[test]
    fn json_paths_read_integers_and_round_fractions_up() {
        let doc: Value = serde_json::from_str(
            r#"{"usage":{"total_tokens":12,"f":2.1,"neg":-3,"s":"7","big":1e300,"whole":3.0},
                "choices":[{"cost":5},{"cost":6}]}"#,
        )
        .unwrap();
        assert_eq!(cost_at(&doc, &path("usage.total_tokens")), Ok(12));
        assert_eq!(cost_at(&doc, &path("usage.f")), Ok(3));
        assert_eq!(cost_at(&doc, &path("usage.whole")), Ok(3));
        assert_eq!(cost_at(&doc, &path("choices[1].cost")), Ok(6));
        assert_eq!(cost_at(&doc, &path("choices.0.cost")), Ok(5));
        assert_eq!(
            cost_at(&doc, &path("usage.neg")),
            Err(Unreadable::NotANumber)
        );
        assert_eq!(cost_at(&doc, &path("usage.s")), Err(Unreadable::NotANumber));
        assert_eq!(
            cost_at(&doc, &path("usage.big")),
            Err(Unreadable::NotANumber)
        );
        assert_eq!(cost_at(&doc, &path("usage")), Err(Unreadable::NotANumber));
        assert_eq!(cost_at(&doc, &path("usage.nope")), Err(Unreadable::Missing));
        assert_eq!(
            cost_at(&doc, &path("choices[2].cost")),
            Err(Unreadable::Missing)
        );
        assert_eq!(cost_at(&doc, &path("usage[0]")), Err(Unreadable::Missing));
        assert_eq!(
            cost_in_json(b"{\"usage\":", &path("usage")),
            Err(Unreadable::NotJson)
        );
    }

    #[test]
    fn json_path_syntax() {
        assert_eq!(
            path("a.b[2][0].c").steps(),
            &[
                JsonStep::Key("a".into()),
                JsonStep::Key("b".into()),
                JsonStep::Index(2),
                JsonStep::Index(0),
                JsonStep::Key("c".into()),
            ]
        );
        for bad in [
            "", "a..b", ".a", "a.", "[0]", "a[x]", "a[-1]", "a[0", "a]b", "a[0]b",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad:?}");
        }
        let deep = vec!["a"; MAX_JSON_PATH_STEPS + 1].join(".");
        assert!(JsonPath::parse(&deep).is_err());
    }

    #[test]
    fn header_costs_are_decimal_integers() {
        assert_eq!(cost_from_header(b" 17 "), Ok(17));
        for bad in [
            &b""[..],
            b"-1",
            b"1.5",
            b"0x10",
            b"12a",
            b"99999999999999999999",
        ] {
            assert_eq!(
                cost_from_header(bad),
                Err(Unreadable::NotANumber),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn json_body_copy_is_bounded() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        let mut m = BodyMeter::for_response(&headers);
        m.observe(&Bytes::from_static(b"{\"usage\":{\"total_tokens\""));
        m.observe(&Bytes::from_static(b":9}}"));
        assert_eq!(m.finish(&path("usage.total_tokens")), Ok(9));
        m.observe(&Bytes::from(vec![b' '; MAX_JSON_COPY]));
        assert_eq!(
            m.finish(&path("usage.total_tokens")),
            Err(Unreadable::Oversize)
        );
        assert!(matches!(&m, BodyMeter::Json { copy, .. } if copy.capacity() == 0));
        headers.insert(http::header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(
            BodyMeter::for_response(&headers).finish(&path("a")),
            Err(Unreadable::Unsupported)
        );
        headers.remove(http::header::CONTENT_ENCODING);
        headers.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(
            BodyMeter::for_response(&headers).finish(&path("a")),
            Err(Unreadable::Unsupported)
        );
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: no panic, the same answer as in one piece, and the
        /// kept data within its bound.
        #[test]
        fn sse_parser_is_split_invariant_and_bounded(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"data: {\"a\":1}"[..], b"data:[DONE]", b"data", b"\r", b"\n", b"\r\n",
                    b": c", b"event: x", b"{\"usage\":{\"n\":", b"2}}", b"data: ",
                ]),
                0..40,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let stream: Vec<u8> = parts.concat();
            let mut whole = SseLastEvent::new(32);
            whole.push(&stream);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut pieces = SseLastEvent::new(32);
            let mut from = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                pieces.push(&stream[from..cut]);
                from = cut;
            }
            proptest::prop_assert_eq!(whole.last_event(), pieces.last_event());
            proptest::prop_assert!(pieces.data.len() <= 32 && pieces.line.len() <= 32 + 6);
        }
    }
}
