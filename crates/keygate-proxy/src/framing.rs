//! Strict framing checks on a request head (S28, RFC 9112 §6.3 and §3.2).
//!
//! RFC 9112 §3.2: an HTTP/1.1 request without `Host` (checked on the raw head, see
//! [`crate::h1guard::check_raw_head`]), with two `Host` lines or with an invalid one is
//! answered 400. Two `Authorization` lines are refused too: which one a
//! component reads (first, last, or both joined) differs, so a valid first credential
//! could cover a second one another reader acts on.
//!
//! A head that two parsers could read differently (`Content-Length` beside
//! `Transfer-Encoding`, two lengths, a length with junk in it, bare CR/LF/NUL in a value)
//! is how request smuggling starts, so it is refused with a 400 and the connection is
//! closed, instead of being "repaired". HTTP servers such as hyper already refuse some of
//! these; checking again here keeps the guarantee independent of the server's parser.

use http::{HeaderMap, Method, Uri, Version};

/// Why a request head was refused. Always the client's fault, always 400 + close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("Content-Length and Transfer-Encoding together")]
    LengthAndChunked,
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    #[error("Content-Length is not a decimal number")]
    InvalidContentLength,
    #[error("Transfer-Encoding other than a single 'chunked'")]
    UnsupportedTransferEncoding,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    #[error("CR, LF, NUL or another control byte in a header field")]
    ControlCharacter,
    #[error("malformed header name")]
    BadHeaderName,
    #[error("absolute-form request target")]
    AbsoluteForm,
    #[error("authority-form request target or CONNECT")]
    AuthorityForm,
    #[error("asterisk-form request target")]
    AsteriskForm,
    #[error("request target is not origin-form")]
    NotOriginForm,
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("malformed request line")]
    BadRequestLine,
    #[error("obsolete line folding in a header field")]
    ObsFold,
    #[error("malformed chunked body")]
    BadChunk,
    #[error("connection already refused")]
    Refused,
    #[error("HTTP/1.1 request without a Host field")]
    MissingHost,
    #[error("more than one Host field")]
    DuplicateHost,
    #[error("Host is not a valid host[:port]")]
    InvalidHost,
    #[error("more than one Authorization field")]
    DuplicateAuthorization,
}

/// The declared body length of a head that passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No `Content-Length` and no `Transfer-Encoding`: no body (HTTP/1.x), or
    /// end-of-stream framing (HTTP/2).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A byte class as a table by byte value: ASCII letters and digits, and the bytes of
/// `extra`. Tables, because every request's head passes through these classes.
// Evaluated at compile time: an index out of bounds would not compile.
#[allow(clippy::indexing_slicing)]
const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let mut j = 0;
    while j < extra.len() {
        table[extra[j] as usize] = true;
        j += 1;
    }
    table
}

/// RFC 9110 §5.6.2 `tchar`.
const TCHAR: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

/// RFC 3986 §3.2.2 `reg-name` bytes: unreserved, sub-delims and pct-encoded's `%` (Host
/// passes here twice per request: raw and parsed head).
const REG_NAME: [bool; 256] = alphanumeric_and(b"-._~!$&'()*+,;=%");

/// Whether `bytes` is an RFC 9110 token (a method or a field name): one or more `tchar`.
pub(crate) fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.iter().fold(true, |ok, &b| {
            ok & TCHAR.get(usize::from(b)).copied().unwrap_or(false)
        })
}

/// Whether `value` is a valid field value: no control byte but HTAB, no DEL. Every byte
/// is looked at (no early exit), which lets the compiler check many at a time: a token
/// in a value is hundreds of bytes, and every request's fields pass here.
fn is_field_value(value: &[u8]) -> bool {
    value.iter().fold(true, |ok, &b| {
        ok & ((b >= 0x20) | (b == b'\t')) & (b != 0x7f)
    })
}

/// Checks one field: a token name and a value of visible ASCII, obs-text, SP or HTAB.
pub fn check_field(name: &[u8], value: &[u8]) -> Result<(), FramingError> {
    if !is_token(name) {
        return Err(FramingError::BadHeaderName);
    }
    if !is_field_value(value) {
        return Err(FramingError::ControlCharacter);
    }
    Ok(())
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2): an IP literal in brackets or a
/// reg-name, then an optional decimal port. Empty is allowed (RFC 9112 §3.2: a request
/// target without an authority sends an empty Host).
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let (literal, after) = rest.split_at(end);
        let after = after.get(1..).unwrap_or_default();
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match after {
            [] => return true,
            [b':', port @ ..] => (&b"x"[..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (
                value.get(..colon).unwrap_or_default(),
                Some(value.get(colon + 1..).unwrap_or_default()),
            ),
            None => (value, None),
        }
    };
    let reg_name = host.iter().fold(true, |ok, &b| {
        ok & REG_NAME.get(usize::from(b)).copied().unwrap_or(false)
    });
    // `port = *DIGIT` (empty allowed), at most 65535.
    let port_ok = port.is_none_or(|p| {
        p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && p.iter().fold(0_u32, |n, &d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX)
    });
    reg_name && port_ok
}

fn parse_content_length(value: &[u8]) -> Result<u64, FramingError> {
    // RFC 9110 §8.6: 1*DIGIT. No sign, no spaces inside, no lists ("5, 5"), no hex.
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(FramingError::InvalidContentLength);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(FramingError::InvalidContentLength)
}

/// Checks the framing fields of a head given as raw (name, value) pairs.
///
/// This is the part that sees attacker bytes most directly; the fuzz target drives it.
pub fn check_fields<'a, I>(version: Version, fields: I) -> Result<BodyFraming, FramingError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut host = false;
    let mut authorization = false;
    for (name, value) in fields {
        check_field(name, value)?;
        if name.eq_ignore_ascii_case(b"host") {
            if host {
                return Err(FramingError::DuplicateHost);
            }
            host = true;
            if !valid_host(value) {
                return Err(FramingError::InvalidHost);
            }
        } else if name.eq_ignore_ascii_case(b"authorization") {
            if authorization {
                return Err(FramingError::DuplicateAuthorization);
            }
            authorization = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(FramingError::DuplicateContentLength);
            }
            length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if transfer_encoding.is_some() {
                // Two TE lines combine into a list, which is never a single "chunked".
                return Err(FramingError::UnsupportedTransferEncoding);
            }
            transfer_encoding = Some(value);
        }
    }
    let framing = match (length, transfer_encoding) {
        (Some(_), Some(_)) => Err(FramingError::LengthAndChunked),
        (None, Some(te)) => {
            if version == Version::HTTP_10 {
                return Err(FramingError::TransferEncodingInHttp10);
            }
            if version != Version::HTTP_11 {
                // HTTP/2 and /3 forbid Transfer-Encoding (RFC 9113 §8.2.2).
                return Err(FramingError::UnsupportedTransferEncoding);
            }
            let trimmed = te.trim_ascii();
            if trimmed.eq_ignore_ascii_case(b"chunked") {
                Ok(BodyFraming::Chunked)
            } else {
                Err(FramingError::UnsupportedTransferEncoding)
            }
        }
        (Some(n), None) => Ok(BodyFraming::Length(n)),
        (None, None) => Ok(BodyFraming::None),
    }?;
    Ok(framing)
}

/// Checks the request target form: only origin-form (`/path?query`) is proxied.
///
/// For HTTP/2 the server's URI carries `:scheme` and `:authority` from pseudo-headers, so
/// only the method and path are checked there.
pub fn check_target(version: Version, method: &Method, uri: &Uri) -> Result<(), FramingError> {
    if *method == Method::CONNECT {
        return Err(FramingError::AuthorityForm);
    }
    let path = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("");
    if path == "*" {
        return Err(FramingError::AsteriskForm);
    }
    match version {
        Version::HTTP_10 | Version::HTTP_11 => {
            if uri.scheme().is_some() {
                return Err(FramingError::AbsoluteForm);
            }
            if uri.authority().is_some() {
                return Err(FramingError::AuthorityForm);
            }
        }
        Version::HTTP_2 => {}
        _ => return Err(FramingError::UnsupportedVersion),
    }
    if !path.starts_with('/') {
        return Err(FramingError::NotOriginForm);
    }
    Ok(())
}

/// All checks on a parsed head: target form, field bytes and body framing.
pub fn check_head(
    version: Version,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<BodyFraming, FramingError> {
    check_target(version, method, uri)?;
    check_fields(
        version,
        headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
    )
}

/// [`check_head`] on a whole request (the body is not touched).
pub fn check_request<B>(request: &http::Request<B>) -> Result<BodyFraming, FramingError> {
    check_head(
        request.version(),
        request.method(),
        request.uri(),
        request.headers(),
    )
}

/// [`check_head`] on a request's parts.
pub fn check_request_parts(parts: &http::request::Parts) -> Result<BodyFraming, FramingError> {
    check_head(parts.version, &parts.method, &parts.uri, &parts.headers)
}

/// A request whose head passed [`check_head`]. It is the only form
/// [`Forwarder::forward`](crate::Forwarder::forward) takes, so the head is checked once,
/// before anything reads it, and cannot change after (no mutable access).
#[derive(Debug)]
pub struct CheckedRequest<B> {
    request: http::Request<B>,
    framing: BodyFraming,
}

impl<B> CheckedRequest<B> {
    /// Checks the head of `request` (the body is not touched).
    pub fn new(request: http::Request<B>) -> Result<Self, FramingError> {
        let framing = check_request(&request)?;
        Ok(Self { request, framing })
    }

    /// The declared body length.
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// The request, for the forwarder to take apart.
    pub fn into_inner(self) -> http::Request<B> {
        self.request
    }
}

impl<B> std::ops::Deref for CheckedRequest<B> {
    type Target = http::Request<B>;

    fn deref(&self) -> &http::Request<B> {
        &self.request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&'static str, &'static [u8])]) -> Vec<(&'static [u8], &'static [u8])> {
        list.iter().map(|(n, v)| (n.as_bytes(), *v)).collect()
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn smuggling_shapes_are_refused() {
        use FramingError as F;
        let v = Version::HTTP_11;
        let cases: &[(&[(&str, &[u8])], F)] = &[
            (
                &[("content-length", b"5"), ("transfer-encoding", b"chunked")],
                F::LengthAndChunked,
            ),
            (
                &[("Transfer-Encoding", b"chunked"), ("Content-Length", b"0")],
                F::LengthAndChunked,
            ),
            (
                &[("content-length", b"5"), ("content-length", b"5")],
                F::DuplicateContentLength,
            ),
            (
                &[("content-length", b"5"), ("content-length", b"6")],
                F::DuplicateContentLength,
            ),
            (&[("content-length", b"5, 5")], F::InvalidContentLength),
            (&[("content-length", b"+5")], F::InvalidContentLength),
            (&[("content-length", b"-1")], F::InvalidContentLength),
            (&[("content-length", b"0x10")], F::InvalidContentLength),
            (&[("content-length", b"")], F::InvalidContentLength),
            (
                &[("content-length", b"99999999999999999999")],
                F::InvalidContentLength,
            ),
            (
                &[("transfer-encoding", b"gzip, chunked")],
                F::UnsupportedTransferEncoding,
            ),
            (
                &[("transfer-encoding", b"chunked, identity")],
                F::UnsupportedTransferEncoding,
            ),
            (
                &[("transfer-encoding", b"xchunked")],
                F::UnsupportedTransferEncoding,
            ),
            (
                &[
                    ("transfer-encoding", b"chunked"),
                    ("transfer-encoding", b"chunked"),
                ],
                F::UnsupportedTransferEncoding,
            ),
            (&[("x-a", b"a\r\nX-Injected: 1")], F::ControlCharacter),
            (&[("x-a", b"a\nb")], F::ControlCharacter),
            (&[("x-a", b"a\0b")], F::ControlCharacter),
            (&[("x-a", b"a\rb")], F::ControlCharacter),
            (&[("x a", b"b")], F::BadHeaderName),
            (&[("x-a:", b"b")], F::BadHeaderName),
        ];
        for (list, want) in cases {
            assert_eq!(check_fields(v, fields(list)), Err(*want), "{list:?}");
        }
        assert_eq!(
            check_fields(
                Version::HTTP_10,
                fields(&[("transfer-encoding", b"chunked")])
            ),
            Err(F::TransferEncodingInHttp10)
        );
        assert_eq!(
            check_fields(
                Version::HTTP_2,
                fields(&[("transfer-encoding", b"chunked")])
            ),
            Err(F::UnsupportedTransferEncoding)
        );
    }

    #[test]
    fn ordinary_heads_pass() {
        let v = Version::HTTP_11;
        assert_eq!(
            check_fields(v, fields(&[("host", b"g"), ("content-length", b"12")])),
            Ok(BodyFraming::Length(12))
        );
        assert_eq!(
            check_fields(
                v,
                fields(&[("Host", b"g"), ("transfer-encoding", b"Chunked")])
            ),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            check_fields(v, fields(&[("host", b"g"), ("x-a", b"tab\there")])),
            Ok(BodyFraming::None)
        );
        for host in [
            &b"gate.example.com"[..],
            b"gate.example.com:8443",
            b"127.0.0.1:80",
            b"[::1]:8080",
            b"[2001:db8::1]",
            b"",
        ] {
            assert_eq!(
                check_fields(v, [(&b"host"[..], host)]),
                Ok(BodyFraming::None),
                "{host:?}"
            );
        }
    }

    #[test]
    fn token_bytes_follow_rfc_9110() {
        for b in 0..=u8::MAX {
            let expected = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_token(&[b]), expected, "byte {b:#04x}");
        }
        assert!(!is_token(b""));
    }

    #[test]
    fn host_bytes_and_ports_follow_rfc_3986() {
        // reg-name = *( unreserved / pct-encoded / sub-delims ), byte by byte; `:` starts
        // the port and `[` an IP literal, so neither is a one-byte host.
        for b in 0..=u8::MAX {
            let expected = b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
            assert_eq!(valid_host(&[b, b'a']), expected, "byte {b:#04x}");
        }
        for (host, ok) in [
            (&b"a:65535"[..], true),
            (b"a:65536", false),
            (b"a:00080", true),
            (b"a:", true),
            (b"a:123456", false),
            (b"a:-1", false),
            (b"[::1]:65535", true),
            (b"[::1]:70000", false),
        ] {
            assert_eq!(valid_host(host), ok, "{host:?}");
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn host_and_authorization_must_be_single_and_valid() {
        use FramingError as F;
        let v = Version::HTTP_11;
        let cases: &[(&[(&str, &[u8])], F)] = &[
            (&[("host", b"a"), ("Host", b"b")], F::DuplicateHost),
            (&[("host", b"a"), ("host", b"a")], F::DuplicateHost),
            (&[("host", b"a b")], F::InvalidHost),
            (&[("host", b"a/b")], F::InvalidHost),
            (&[("host", b"user@a")], F::InvalidHost),
            (&[("host", b"a:80:80")], F::InvalidHost),
            (&[("host", b"a:99999")], F::InvalidHost),
            (&[("host", b"a:http")], F::InvalidHost),
            (&[("host", b"[::1")], F::InvalidHost),
            (&[("host", b"[::1]x")], F::InvalidHost),
            (&[("host", b"a\\b")], F::InvalidHost),
            (
                &[
                    ("host", b"a"),
                    ("authorization", b"Bearer x"),
                    ("Authorization", b"Bearer y"),
                ],
                F::DuplicateAuthorization,
            ),
        ];
        for (list, want) in cases {
            assert_eq!(check_fields(v, fields(list)), Err(*want), "{list:?}");
        }
        assert_eq!(
            check_fields(Version::HTTP_2, fields(&[("host", b"a"), ("host", b"b")])),
            Err(F::DuplicateHost)
        );
    }

    #[test]
    fn only_origin_form_targets() {
        let v = Version::HTTP_11;
        let get = Method::GET;
        let abs: Uri = "http://evil.example/proxy/openai/v1/models"
            .parse()
            .unwrap();
        assert_eq!(check_target(v, &get, &abs), Err(FramingError::AbsoluteForm));
        let auth: Uri = "evil.example:443".parse().unwrap();
        assert_eq!(
            check_target(v, &Method::CONNECT, &auth),
            Err(FramingError::AuthorityForm)
        );
        assert_eq!(
            check_target(v, &get, &auth),
            Err(FramingError::AuthorityForm)
        );
        let star: Uri = "*".parse().unwrap();
        assert_eq!(
            check_target(v, &Method::OPTIONS, &star),
            Err(FramingError::AsteriskForm)
        );
        let ok: Uri = "/proxy/openai/v1/models".parse().unwrap();
        assert_eq!(check_target(v, &get, &ok), Ok(()));
        // HTTP/2 URIs carry :scheme/:authority; they are ignored (never used for routing).
        assert_eq!(check_target(Version::HTTP_2, &get, &abs), Ok(()));
    }
}
