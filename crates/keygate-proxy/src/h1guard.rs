//! A strict HTTP/1.1 framing guard on the raw byte stream (S28).
//!
//! HTTP servers "repair" some ambiguous heads before the application sees them: hyper,
//! for example, removes `Content-Length` when `Transfer-Encoding` is present and keeps a
//! single copy of repeated equal `Content-Length` lines. That is permitted by RFC 9112
//! §6.3, but it hides the ambiguity from [`crate::framing::check_head`], and keygate's
//! policy is to refuse such requests outright. [`StrictHttp1`] wraps an accepted
//! connection, reads every request head as raw bytes *before* the server's parser does,
//! and checks it with [`check_raw_head`]. On a violation it hands the server a head that
//! no parser accepts instead (so the server answers 400 and closes) and stops reading.
//!
//! Wrap only HTTP/1 connections (plain TCP, or TLS whose ALPN chose `http/1.1`): HTTP/2
//! framing carries lengths in frames, and the guard refuses its connection preface.

use std::io;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use http::Version;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::framing::{BodyFraming, FramingError, check_fields, is_token};

/// Largest request head accepted, in bytes (request line and fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most fields in one head.
pub const MAX_FIELDS: usize = 128;
const MAX_CHUNK_LINE: usize = 1024;

/// The end of a head. One searcher, set up once: `memmem::find` sets up a new one on
/// every call, which profiles showed per request.
static HEAD_END: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));

/// What the server's parser receives instead of a refused head: an invalid method token,
/// which every HTTP/1 parser answers with 400 and a closed connection.
pub const POISON: &[u8] = b"\x00 / HTTP/1.1\r\n\r\n";

/// Splits `text` on CRLF; a bare CR or LF anywhere is an error.
fn crlf_lines(text: &[u8]) -> Result<Vec<&[u8]>, FramingError> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'\r' => {
                if text.get(i + 1) != Some(&b'\n') {
                    return Err(FramingError::ControlCharacter);
                }
                lines.push(text.get(start..i).unwrap_or_default());
                i += 2;
                start = i;
            }
            b'\n' => return Err(FramingError::ControlCharacter),
            _ => i += 1,
        }
    }
    if start < text.len() {
        lines.push(text.get(start..).unwrap_or_default());
    }
    Ok(lines)
}

/// Checks a raw HTTP/1 request head (request line and fields, with or without the
/// final empty line): origin-form target, strict field syntax (no obs-fold, no bare
/// CR/LF, no NUL) and unambiguous body framing. This is the function the fuzz target
/// drives with arbitrary bytes.
pub fn check_raw_head(head: &[u8]) -> Result<BodyFraming, FramingError> {
    if head.len() > MAX_HEAD {
        return Err(FramingError::HeadTooLarge);
    }
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request.
    let mut head = head;
    while let Some(rest) = head.strip_prefix(b"\r\n") {
        head = rest;
    }
    // Every line break is CRLF: checked over the whole head first, so a bare CR or LF
    // is reported as such wherever it is, and the lines below split on CRLF alone.
    if has_bare_cr_or_lf(head) {
        return Err(FramingError::ControlCharacter);
    }
    let mut lines = CrlfLines(Some(head));
    let request_line = lines.next().ok_or(FramingError::NotOriginForm)?;
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FramingError::BadRequestLine);
    };
    if !is_token(method) {
        return Err(FramingError::BadRequestLine);
    }
    let version = match version {
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/1.0" => Version::HTTP_10,
        _ => return Err(FramingError::UnsupportedVersion),
    };
    if method == b"CONNECT" {
        return Err(FramingError::AuthorityForm);
    }
    if target == b"*" {
        return Err(FramingError::AsteriskForm);
    }
    match target.first() {
        Some(b'/') => {}
        _ if target.windows(3).any(|w| w == b"://") => return Err(FramingError::AbsoluteForm),
        _ => return Err(FramingError::AuthorityForm),
    }
    if !target
        .iter()
        .fold(true, |ok, b| ok & (0x21..=0x7e).contains(b))
    {
        return Err(FramingError::ControlCharacter);
    }
    // The field lines: up to the empty line that ends the head (anything after it is not
    // part of this head). Their shape is checked in a first pass, so the second can hand
    // `check_fields` the split fields without collecting them.
    let fields = || lines.clone().take_while(|line| !line.is_empty());
    let mut has_host = false;
    for (count, line) in fields().enumerate() {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // obs-fold (RFC 9112 §5.2): refused rather than unfolded.
            return Err(FramingError::ObsFold);
        }
        let (name, _) = split_field(line).ok_or(FramingError::BadHeaderName)?;
        if count >= MAX_FIELDS {
            return Err(FramingError::HeadTooLarge);
        }
        has_host |= name.eq_ignore_ascii_case(b"host");
    }
    // RFC 9112 §3.2: every HTTP/1.1 request carries Host (HTTP/1.0 may omit it). Checked
    // here, on the bytes of an HTTP/1 connection, rather than in `check_fields`, which
    // also sees HTTP/2 heads and requests built in process.
    let framing = check_fields(version, fields().filter_map(split_field))?;
    if version == Version::HTTP_11 && !has_host {
        return Err(FramingError::MissingHost);
    }
    Ok(framing)
}

/// Whether `text` holds an LF not preceded by CR or a CR not followed by LF (a CR at
/// the very end included).
fn has_bare_cr_or_lf(text: &[u8]) -> bool {
    memchr::memchr2_iter(b'\r', b'\n', text).any(|i| match text.get(i) {
        Some(b'\n') => i == 0 || text.get(i - 1) != Some(&b'\r'),
        _ => text.get(i + 1) != Some(&b'\n'),
    })
}

/// A field line split at its first colon: the name, and the value without the
/// whitespace around it. `None` without a colon.
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    Some((
        line.get(..colon).unwrap_or_default(),
        line.get(colon + 1..).unwrap_or_default().trim_ascii(),
    ))
}

/// The lines of a head already known to hold no bare CR or LF, split on CRLF (a final
/// line without one included, a final CRLF not followed by an empty line).
#[derive(Clone)]
struct CrlfLines<'a>(Option<&'a [u8]>);

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        // No bare CR here: every CR starts a CRLF.
        match memchr::memchr(b'\r', rest) {
            Some(at) => {
                self.0 = rest.get(at + 2..);
                rest.get(..at)
            }
            None => {
                self.0 = None;
                (!rest.is_empty()).then_some(rest)
            }
        }
    }
}

/// Whether `buf[from..end]` holds an LF not preceded by CR, or a CR followed by anything
/// but LF (a CR at `end - 1` waits for the next byte).
fn bare_line_break(buf: &[u8], from: usize, end: usize) -> bool {
    let region = buf.get(from..end.min(buf.len())).unwrap_or_default();
    memchr::memchr2_iter(b'\r', b'\n', region).any(|at| {
        let i = from + at;
        match buf.get(i) {
            Some(b'\n') => i == 0 || buf.get(i - 1) != Some(&b'\r'),
            Some(b'\r') => buf.get(i + 1).is_some_and(|&next| next != b'\n'),
            _ => false,
        }
    })
}

#[derive(Debug)]
enum Scan {
    /// Accumulating a head.
    Head(Vec<u8>),
    /// Passing `n` more body bytes.
    Length(u64),
    /// A chunk-size line.
    ChunkLine(Vec<u8>),
    /// Passing `n` chunk data bytes, then CRLF.
    ChunkData(u64),
    /// The CRLF after chunk data (bytes seen so far).
    ChunkEnd(Vec<u8>),
    /// Trailer section after the last chunk, until an empty line.
    Trailers(Vec<u8>),
    /// A violation was found; no more input goes to the server.
    Refused,
}

impl Scan {
    /// What follows a head that passed the checks: its body, or the next head.
    fn after_head(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::None | BodyFraming::Length(0) => Scan::Head(Vec::new()),
            BodyFraming::Length(n) => Scan::Length(n),
            BodyFraming::Chunked => Scan::ChunkLine(Vec::new()),
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    // chunk-size [ chunk-ext ]: hex digits, then optionally ';' extensions.
    let size = line.split(|&b| b == b';').next()?.trim_ascii_end();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

/// The byte-level state of one connection's request stream.
#[derive(Debug)]
pub struct RequestScanner {
    state: Scan,
}

impl Default for RequestScanner {
    fn default() -> Self {
        Self {
            state: Scan::Head(Vec::new()),
        }
    }
}

impl RequestScanner {
    /// Feeds received bytes; appends to `out` what may be passed to the server. Returns
    /// `Err` once a violation was found (after appending the poison head).
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FramingError> {
        while !input.is_empty() {
            match &mut self.state {
                Scan::Refused => return Err(FramingError::Refused),
                Scan::Head(buf) => {
                    let old = buf.len();
                    buf.extend_from_slice(input);
                    // The terminator may start in what was buffered before.
                    let from = old.saturating_sub(3);
                    let found = HEAD_END.find(buf.get(from..).unwrap_or_default());
                    // A head is CRLF-delimited: a bare LF (`GET / HTTP/1.1\nHost: x\n\n`)
                    // or CR is refused as soon as it arrives. Waiting for a CRLF CRLF that
                    // never comes would leave such a request unanswered.
                    let head_end = found.map_or(buf.len(), |at| from + at + 4);
                    if bare_line_break(buf, old.saturating_sub(1), head_end) {
                        return self.refuse(FramingError::ControlCharacter, out);
                    }
                    let Some(at) = found else {
                        input = &[];
                        if buf.len() > MAX_HEAD {
                            return self.refuse(FramingError::HeadTooLarge, out);
                        }
                        continue;
                    };
                    let end = from + at + 4;
                    // `end > old`: the buffered part alone held no terminator.
                    input = input.get(end.saturating_sub(old)..).unwrap_or_default();
                    buf.truncate(end);
                    if buf.len() > MAX_HEAD {
                        return self.refuse(FramingError::HeadTooLarge, out);
                    }
                    let head = std::mem::take(buf);
                    match check_raw_head(&head) {
                        Err(e) => return self.refuse(e, out),
                        Ok(framing) => {
                            out.extend_from_slice(&head);
                            self.state = Scan::after_head(framing);
                        }
                    }
                }
                Scan::Length(n) => {
                    let take = usize::try_from(*n).unwrap_or(usize::MAX).min(input.len());
                    let (body, rest) = input.split_at(take);
                    out.extend_from_slice(body);
                    input = rest;
                    *n -= take as u64;
                    if *n == 0 {
                        self.state = Scan::Head(Vec::new());
                    }
                }
                Scan::ChunkLine(line) => {
                    let (b, rest) = input.split_at(1);
                    input = rest;
                    line.extend_from_slice(b);
                    if line.len() > MAX_CHUNK_LINE {
                        return self.refuse(FramingError::BadChunk, out);
                    }
                    if line.ends_with(b"\r\n") {
                        let text = line.get(..line.len() - 2).unwrap_or_default();
                        if text.contains(&b'\r') || text.contains(&b'\n') {
                            return self.refuse(FramingError::BadChunk, out);
                        }
                        let Some(size) = parse_chunk_size(text) else {
                            return self.refuse(FramingError::BadChunk, out);
                        };
                        out.extend_from_slice(line);
                        self.state = if size == 0 {
                            Scan::Trailers(Vec::new())
                        } else {
                            Scan::ChunkData(size)
                        };
                    } else if line.ends_with(b"\n") {
                        return self.refuse(FramingError::BadChunk, out);
                    }
                }
                Scan::ChunkData(n) => {
                    let take = usize::try_from(*n).unwrap_or(usize::MAX).min(input.len());
                    let (body, rest) = input.split_at(take);
                    out.extend_from_slice(body);
                    input = rest;
                    *n -= take as u64;
                    if *n == 0 {
                        self.state = Scan::ChunkEnd(Vec::new());
                    }
                }
                Scan::ChunkEnd(seen) => {
                    let (b, rest) = input.split_at(1);
                    input = rest;
                    seen.extend_from_slice(b);
                    if !b"\r\n".starts_with(seen) {
                        return self.refuse(FramingError::BadChunk, out);
                    }
                    if seen.len() == 2 {
                        out.extend_from_slice(b"\r\n");
                        self.state = Scan::ChunkLine(Vec::new());
                    }
                }
                Scan::Trailers(buf) => {
                    let (b, rest) = input.split_at(1);
                    input = rest;
                    buf.extend_from_slice(b);
                    if buf.len() > MAX_HEAD {
                        return self.refuse(FramingError::HeadTooLarge, out);
                    }
                    if buf.as_slice() == b"\r\n" || buf.ends_with(b"\r\n\r\n") {
                        // Trailer fields obey the same field rules as the head.
                        let lines = match crlf_lines(buf) {
                            Ok(l) => l,
                            Err(e) => return self.refuse(e, out),
                        };
                        for line in lines.iter().filter(|l| !l.is_empty()) {
                            let ok = !matches!(line.first(), Some(b' ' | b'\t'))
                                && line.iter().position(|&c| c == b':').is_some_and(|c| {
                                    crate::framing::check_field(
                                        line.get(..c).unwrap_or_default(),
                                        line.get(c + 1..).unwrap_or_default().trim_ascii(),
                                    )
                                    .is_ok()
                                });
                            if !ok {
                                return self.refuse(FramingError::BadChunk, out);
                            }
                        }
                        out.extend_from_slice(buf);
                        self.state = Scan::Head(Vec::new());
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the scanner holds bytes it has not cleared yet (part of a head, a chunk
    /// line or trailers).
    pub fn holding(&self) -> bool {
        match &self.state {
            Scan::Head(buf) | Scan::ChunkLine(buf) | Scan::ChunkEnd(buf) | Scan::Trailers(buf) => {
                !buf.is_empty()
            }
            Scan::Length(_) | Scan::ChunkData(_) | Scan::Refused => false,
        }
    }

    /// [`RequestScanner::feed`] for bytes already where the server will read them: when
    /// the scanner holds nothing ([`RequestScanner::holding`] is false), what it clears of
    /// `input` is always a prefix of it. Returns that prefix's length, with the violation
    /// found right after it, if any (the caller then passes the same invalid head `feed`
    /// would have appended instead of the rest). The bytes after the prefix that are not
    /// refused are held, as `feed` holds them. Whole heads and bodies of known length are
    /// checked where they lie, without a copy; chunked bodies go through `feed`.
    ///
    /// Called while holding (use `feed` then), it fails closed: nothing is cleared and the
    /// stream is refused.
    pub fn pass(&mut self, input: &[u8]) -> (usize, Option<FramingError>) {
        if self.holding() {
            let mut held = Vec::new();
            return match self.feed(input, &mut held) {
                Ok(()) if held.is_empty() => (0, None),
                // Cannot be told as a prefix of `input`: refuse rather than guess.
                Ok(()) | Err(_) => {
                    self.state = Scan::Refused;
                    (0, Some(FramingError::Refused))
                }
            };
        }
        let mut at = 0;
        while let Some(rest) = input.get(at..).filter(|r| !r.is_empty()) {
            match &mut self.state {
                Scan::Refused => return (at, Some(FramingError::Refused)),
                Scan::Head(buf) if buf.is_empty() => {
                    let found = HEAD_END.find(rest);
                    let head_end = found.map_or(rest.len(), |i| i + 4);
                    if bare_line_break(rest, 0, head_end) {
                        self.state = Scan::Refused;
                        return (at, Some(FramingError::ControlCharacter));
                    }
                    let Some(i) = found else {
                        if rest.len() > MAX_HEAD {
                            self.state = Scan::Refused;
                            return (at, Some(FramingError::HeadTooLarge));
                        }
                        buf.extend_from_slice(rest);
                        return (at, None);
                    };
                    let head = rest.get(..i + 4).unwrap_or_default();
                    match check_raw_head(head) {
                        Err(e) => {
                            self.state = Scan::Refused;
                            return (at, Some(e));
                        }
                        Ok(framing) => {
                            at += head.len();
                            self.state = Scan::after_head(framing);
                        }
                    }
                }
                Scan::Length(n) => {
                    let take = usize::try_from(*n).unwrap_or(usize::MAX).min(rest.len());
                    at += take;
                    *n -= take as u64;
                    if *n == 0 {
                        self.state = Scan::Head(Vec::new());
                    }
                }
                _ => {
                    // Chunked bodies, byte by byte through `feed`: it clears a prefix of
                    // `rest` (nothing was held), then the poison head if it refused.
                    let mut out = Vec::new();
                    return match self.feed(rest, &mut out) {
                        Ok(()) => (at + out.len(), None),
                        Err(e) => (at + out.len().saturating_sub(POISON.len()), Some(e)),
                    };
                }
            }
        }
        (at, None)
    }

    fn refuse(&mut self, why: FramingError, out: &mut Vec<u8>) -> Result<(), FramingError> {
        self.state = Scan::Refused;
        out.extend_from_slice(POISON);
        Err(why)
    }
}

/// An accepted HTTP/1 connection whose request stream is checked by [`RequestScanner`]
/// before the server reads it. Writes pass through unchanged.
#[derive(Debug)]
pub struct StrictHttp1<IO> {
    io: IO,
    scanner: RequestScanner,
    /// Bytes cleared for the server, not yet read by it.
    ready: Vec<u8>,
    ready_at: usize,
    refused: bool,
}

impl<IO> StrictHttp1<IO> {
    /// Wraps a connection.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            scanner: RequestScanner::default(),
            ready: Vec::new(),
            ready_at: 0,
            refused: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StrictHttp1<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let pending = this.ready.get(this.ready_at..).unwrap_or_default();
                let n = pending.len().min(buf.remaining());
                buf.put_slice(pending.get(..n).unwrap_or_default());
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.refused {
                // EOF after the poison head: the server answers it and closes.
                return Poll::Ready(Ok(()));
            }
            // Read straight into the server's buffer, then take back what may not pass
            // yet: no copy for whole heads and bodies of known length.
            let before = buf.filled().len();
            match Pin::new(&mut this.io).poll_read(cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let new = buf.filled().get(before..).unwrap_or_default();
            if new.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if this.scanner.holding() {
                // The cleared bytes start with held ones: they go through `ready`.
                let fed = this.scanner.feed(new, &mut this.ready);
                buf.set_filled(before);
                if let Err(why) = fed {
                    tracing::info!(reason = %why, "request refused by the framing guard");
                    this.refused = true;
                }
                // Loop: deliver what was cleared, or read more of an incomplete head.
                continue;
            }
            let (cleared, refused) = this.scanner.pass(new);
            buf.set_filled(before + cleared);
            if let Some(why) = refused {
                tracing::info!(reason = %why, "request refused by the framing guard");
                this.refused = true;
                this.ready.extend_from_slice(POISON);
            }
            if cleared > 0 {
                return Poll::Ready(Ok(()));
            }
            // Nothing cleared: deliver the poison head, or read more of an incomplete head.
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StrictHttp1<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8], step: usize) -> (Vec<u8>, Result<(), FramingError>) {
        let mut s = RequestScanner::default();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            if let Err(e) = s.feed(piece, &mut out) {
                return (out, Err(e));
            }
        }
        (out, Ok(()))
    }

    #[test]
    fn pipelined_requests_pass_unchanged_in_any_split() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: g\r\n\r\n\
POST /c HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nabcde\r\n0\r\nX-T: 1\r\n\r\n\
GET /d HTTP/1.1\r\nHost: g\r\n\r\n";
        for step in [1, 2, 3, 7, 64, 4096] {
            let (out, r) = scan_all(stream, step);
            assert_eq!(r, Ok(()), "step {step}");
            assert_eq!(out, stream, "step {step}");
        }
    }

    #[test]
    fn pass_while_holding_fails_closed() {
        let mut s = RequestScanner::default();
        assert_eq!(s.pass(b"GET /a HTTP/1.1\r\nHo"), (0, None));
        assert!(s.holding());
        // The rest of the head cannot be cleared as a prefix of this input: refused.
        assert_eq!(s.pass(b"st: g\r\n\r\n"), (0, Some(FramingError::Refused)));
        assert!(!s.holding());
        assert_eq!(
            s.pass(b"GET /b HTTP/1.1\r\n"),
            (0, Some(FramingError::Refused))
        );
    }

    #[test]
    fn smuggling_after_a_good_request_is_poisoned() {
        let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: g\r\n\r\n\
POST /b HTTP/1.1\r\nHost: g\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (out, r) = scan_all(stream, 5);
        assert_eq!(r, Err(FramingError::LengthAndChunked));
        let first = b"GET /a HTTP/1.1\r\nHost: g\r\n\r\n";
        assert!(out.starts_with(first));
        assert_eq!(&out[first.len()..], POISON);
    }

    #[test]
    fn raw_heads() {
        use FramingError as F;
        let cases: [(&[u8], F); 12] = [
            (
                b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                F::DuplicateContentLength,
            ),
            (b"GET /x HTTP/1.1\r\nA: b\r\n c\r\n\r\n", F::ObsFold),
            (
                b"GET /x HTTP/1.1\r\nA: b\nC: d\r\n\r\n",
                F::ControlCharacter,
            ),
            (b"GET /x HTTP/1.1\r\nA : b\r\n\r\n", F::BadHeaderName),
            (b"GET /x HTTP/1.1\r\nA: b\x00\r\n\r\n", F::ControlCharacter),
            (b"GET http://h/x HTTP/1.1\r\n\r\n", F::AbsoluteForm),
            (b"GET h:80 HTTP/1.1\r\n\r\n", F::AuthorityForm),
            (b"CONNECT h:80 HTTP/1.1\r\n\r\n", F::AuthorityForm),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", F::AsteriskForm),
            (b"GET /x HTTP/2.0\r\n\r\n", F::UnsupportedVersion),
            (b"GET  /x HTTP/1.1\r\n\r\n", F::BadRequestLine),
            (b"GET /x\x7f HTTP/1.1\r\n\r\n", F::ControlCharacter),
        ];
        for (head, want) in cases {
            assert_eq!(
                check_raw_head(head),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(
            check_raw_head(b"\r\nPOST /x HTTP/1.1\r\nHost: g\r\nContent-Length:  7 \r\n\r\n"),
            Ok(BodyFraming::Length(7))
        );
    }

    #[test]
    fn lf_only_head_is_refused_without_waiting_for_crlf_and_host_is_required() {
        for step in [1, 3, 64] {
            let (out, r) = scan_all(b"GET / HTTP/1.1\nHost: x\n\n", step);
            assert_eq!(r, Err(FramingError::ControlCharacter), "step {step}");
            assert_eq!(out, POISON);
        }
        let (_, r) = scan_all(b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", 1);
        assert_eq!(r, Err(FramingError::ControlCharacter));
        assert_eq!(
            check_raw_head(b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"),
            Err(FramingError::MissingHost)
        );
        assert_eq!(
            check_raw_head(b"GET / HTTP/1.0\r\n\r\n"),
            Ok(BodyFraming::None)
        );
        // A body after a good head may hold bare LFs.
        let ok = b"POST /a HTTP/1.1\r\nHost: g\r\nContent-Length: 3\r\n\r\na\nb";
        assert_eq!(scan_all(ok, 4096), (ok.to_vec(), Ok(())));
    }

    #[test]
    fn bad_chunks_are_refused() {
        for body in [
            &b"zz\r\n"[..],
            b"5\r\nabcdeXX",
            b"5\nabcde\r\n",
            b"0\r\nA b: c\r\n\r\n",
        ] {
            let mut stream =
                b"POST /c HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            stream.extend_from_slice(body);
            let (_, r) = scan_all(&stream, 3);
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }
}
