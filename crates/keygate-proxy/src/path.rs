//! The one path normaliser (S29), used both to match a route's allow-list and to build the
//! upstream path, plus the split of `/proxy/{route}/{rest}` and query validation.
//!
//! "Normalising" here means *accepting one canonical spelling and rejecting everything
//! else*: nothing is decoded or rewritten, so the bytes that were matched are exactly the
//! bytes that are forwarded. An upstream server (or a framework in front of it) that
//! decodes `%2e%2e`, `%2f`, `..;` or a backslash differently from us could otherwise be
//! steered outside the allow-list.

use std::fmt;

use keygate_auth::uri::percent_escape;

/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 8 * 1024;
/// Most segments accepted in one path.
pub const MAX_SEGMENTS: usize = 128;
/// Longest accepted query, in bytes.
pub const MAX_QUERY_LEN: usize = 8 * 1024;

/// Why a path or query was refused. The client is at fault in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty or does not start with '/'")]
    NotAbsolute,
    #[error("path is too long")]
    TooLong,
    #[error("path has too many segments")]
    TooManySegments,
    #[error("path contains an empty segment ('//')")]
    EmptySegment,
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    #[error("path contains a character that is not allowed")]
    BadCharacter,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a ';' (path parameters are not accepted)")]
    Semicolon,
    #[error("path contains invalid percent-encoding")]
    BadPercentEncoding,
    #[error("path contains an encoded character that is not accepted")]
    ForbiddenEncoding,
    #[error("query contains a character or encoding that is not accepted")]
    BadQuery,
    #[error("request target is not /proxy/{{route}}/…")]
    NotProxyTarget,
    #[error("route name is malformed")]
    BadRouteName,
}

/// A path that passed [`normalize_path`]: starts with `/`, ASCII, no empty, `.` or `..`
/// segments, no raw or encoded separators, and one canonical percent-encoding.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NormalPath(String);

impl NormalPath {
    /// The path, exactly as received and accepted.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments after the leading `/`. A trailing `/` yields a last empty segment.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.get(1..).unwrap_or("").split('/')
    }
}

impl fmt::Debug for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NormalPath").field(&self.0).finish()
    }
}

impl fmt::Display for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 3986 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims` minus `;` (which some servers treat as a path-parameter
/// separator, the `..;` trick) plus `:` and `@`: what `pchar` allows unencoded.
fn is_raw_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

/// Whether a percent-encoded byte may appear in a path segment.
///
/// Refused: separators and dots (`%2f`, `%5c`, `%2e`: traversal after decoding),
/// `%25` (double encoding decodes to a fresh `%xx` upstream), `%3b` (`;`), control
/// bytes and NUL, and unreserved characters (they have one canonical, unencoded
/// spelling, so the allow-list sees what the upstream sees).
fn encoded_byte_allowed(b: u8) -> bool {
    if b < 0x20 || b == 0x7f {
        return false;
    }
    if is_unreserved(b) {
        return false;
    }
    !matches!(b, b'/' | b'\\' | b'%' | b';')
}

/// Checks one non-empty segment.
fn check_segment(seg: &[u8]) -> Result<(), PathError> {
    if seg == b"." || seg == b".." {
        return Err(PathError::DotSegment);
    }
    // "..anything" is refused too: some servers trim trailing junk (`..%20`, `..;x`) and
    // then see `..`.
    if seg.starts_with(b"..") {
        return Err(PathError::DotSegment);
    }
    let mut has_high = false;
    let mut i = 0;
    while let Some(&b) = seg.get(i) {
        match b {
            b'%' => {
                let Some(byte) = percent_escape(seg, i) else {
                    return Err(PathError::BadPercentEncoding);
                };
                if !encoded_byte_allowed(byte) {
                    return Err(PathError::ForbiddenEncoding);
                }
                has_high |= byte >= 0x80;
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            _ if is_raw_pchar(b) => i += 1,
            _ => return Err(PathError::BadCharacter),
        }
    }
    // Encoded non-ASCII must be well-formed UTF-8: this refuses overlong forms such as
    // `%c0%ae`, which old decoders turned into '.'. Decoded only then: an ASCII segment,
    // nearly every one, is checked without a copy.
    if has_high {
        let decoded: Vec<u8> = percent_encoding::percent_decode(seg).collect();
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::ForbiddenEncoding);
        }
    }
    Ok(())
}

/// Accepts a raw request path (no query) in its one canonical form, or refuses it.
///
/// A single trailing `/` is allowed (some APIs distinguish `/items/` from `/items`);
/// every other empty segment is refused.
pub fn normalize_path(raw: &str) -> Result<NormalPath, PathError> {
    check_path(raw)?;
    Ok(NormalPath(raw.to_owned()))
}

/// [`normalize_path`]'s checks, without keeping the path.
fn check_path(raw: &str) -> Result<(), PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if bytes.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if !raw.is_ascii() {
        return Err(PathError::BadCharacter);
    }
    let rest = raw.get(1..).unwrap_or("");
    // Counted before any segment is looked at, so a path with too many segments is
    // refused as that whatever else is wrong with it.
    let segments = memchr::memchr_iter(b'/', rest.as_bytes()).count() + 1;
    if segments > MAX_SEGMENTS {
        return Err(PathError::TooManySegments);
    }
    let last = segments - 1;
    for (index, seg) in rest.split('/').enumerate() {
        if seg.is_empty() {
            // "/" alone, or one trailing slash; "a//" fails on the segment before.
            if index == last {
                continue;
            }
            return Err(PathError::EmptySegment);
        }
        check_segment(seg.as_bytes())?;
    }
    Ok(())
}

/// A query string that passed [`normalize_query`]: visible ASCII, valid percent-encoding,
/// no NUL or control bytes, even when encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalQuery(String);

impl NormalQuery {
    /// The query without the leading `?`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The query with every parameter whose decoded name equals `name`
    /// (ASCII case-insensitively) removed, so an app cannot supply its own copy of the
    /// parameter the route injects (upstreams differ on whether the first or last wins).
    pub fn without_param(&self, name: &str) -> NormalQuery {
        let kept: Vec<&str> = self
            .0
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| {
                let raw_name = pair.split_once('=').map_or(*pair, |(n, _)| n);
                let decoded = percent_encoding::percent_decode_str(&raw_name.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned();
                !decoded.eq_ignore_ascii_case(name)
            })
            .collect();
        NormalQuery(kept.join("&"))
    }
}

/// Accepts a raw query (without `?`).
pub fn normalize_query(raw: &str) -> Result<NormalQuery, PathError> {
    if raw.len() > MAX_QUERY_LEN {
        return Err(PathError::BadQuery);
    }
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let Some(byte) = percent_escape(bytes, i) else {
                    return Err(PathError::BadQuery);
                };
                if byte < 0x20 || byte == 0x7f {
                    return Err(PathError::BadQuery);
                }
                i += 3;
            }
            b'#' | b'\\' => return Err(PathError::BadQuery),
            0x21..=0x7e => i += 1,
            _ => return Err(PathError::BadQuery),
        }
    }
    Ok(NormalQuery(raw.to_owned()))
}

/// A route name: 1–64 of `a-z 0-9 _ -`, starting with a letter or digit. Route names
/// appear in metrics labels and logs, so their alphabet is kept small. Shared text: a clone
/// (each call's usage record takes one) is a reference count.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteName(std::sync::Arc<str>);

impl RouteName {
    /// Parses a route name.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && text
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(std::sync::Arc::from(text)))
        } else {
            Err(PathError::BadRouteName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `/proxy/{route}/{rest}?{query}` taken apart: the route name, the upstream-relative
/// path (normalised) and the query (validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    route: RouteName,
    path: NormalPath,
    query: Option<NormalQuery>,
}

impl ProxyTarget {
    /// Parses an origin-form target such as `/proxy/openai/v1/models?limit=5` under
    /// `prefix` (for example `/proxy/`, with both slashes).
    ///
    /// Use the raw target as received (`uri.path_and_query()`), never a decoded path:
    /// decoding first would hide encoded traversal from the checks.
    pub fn parse(prefix: &str, target: &str) -> Result<Self, PathError> {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        // The whole path is checked, so `/proxy/../admin` cannot slip past the split.
        check_path(path)?;
        let rest = path.strip_prefix(prefix).ok_or(PathError::NotProxyTarget)?;
        let (name, upstream_path) = match rest.find('/') {
            Some(at) => (rest.get(..at).unwrap_or(""), rest.get(at..).unwrap_or("/")),
            None => (rest, "/"),
        };
        let route = RouteName::parse(name)?;
        let path = normalize_path(upstream_path)?;
        let query = match query {
            Some("") | None => None,
            Some(q) => Some(normalize_query(q)?),
        };
        Ok(Self { route, path, query })
    }

    /// Builds a target directly from parts (for callers that route by other means).
    pub fn new(route: RouteName, path: NormalPath, query: Option<NormalQuery>) -> Self {
        Self { route, path, query }
    }

    /// The route name.
    pub fn route(&self) -> &RouteName {
        &self.route
    }
    /// The path under the route, as it will be matched and forwarded.
    pub fn path(&self) -> &NormalPath {
        &self.path
    }
    /// The query, if any.
    pub fn query(&self) -> Option<&NormalQuery> {
        self.query.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "/",
            "/v1/chat/completions",
            "/v1/models/",
            "/v1/models/gemini-pro:generateContent",
            "/maps/api/place/S%C3%A3o%20Paulo",
            "/.well-known/thing",
            "/a/b.c/d..e",
        ] {
            assert_eq!(normalize_path(p).unwrap().as_str(), p, "{p}");
        }
    }

    #[test]
    fn rejects_traversal_and_tricks() {
        let cases = [
            ("", PathError::NotAbsolute),
            ("v1", PathError::NotAbsolute),
            ("/v1/../admin", PathError::DotSegment),
            ("/v1/./x", PathError::DotSegment),
            ("/..", PathError::DotSegment),
            ("/v1/..;/admin", PathError::DotSegment),
            ("/v1/x;y", PathError::Semicolon),
            ("/v1/%2e%2e/admin", PathError::ForbiddenEncoding),
            ("/v1/%2E%2E/admin", PathError::ForbiddenEncoding),
            ("/v1/.%2e/admin", PathError::ForbiddenEncoding),
            ("/v1/a%2fb", PathError::ForbiddenEncoding),
            ("/v1/a%2Fb", PathError::ForbiddenEncoding),
            ("/v1/a%5cb", PathError::ForbiddenEncoding),
            ("/v1/a%00b", PathError::ForbiddenEncoding),
            ("/v1/a%252e", PathError::ForbiddenEncoding),
            ("/v1/%41", PathError::ForbiddenEncoding),
            ("/v1/%3b", PathError::ForbiddenEncoding),
            ("/v1/%c0%ae%c0%ae", PathError::ForbiddenEncoding),
            ("/v1/%zz", PathError::BadPercentEncoding),
            ("/v1/%2", PathError::BadPercentEncoding),
            ("/v1/a\\b", PathError::Backslash),
            ("//evil.example/x", PathError::EmptySegment),
            ("/v1//x", PathError::EmptySegment),
            ("/v1/x//", PathError::EmptySegment),
            ("/v1/é", PathError::BadCharacter),
            ("/v1/a b", PathError::BadCharacter),
            ("/v1/a\0b", PathError::BadCharacter),
            ("/v1/a\r\nb", PathError::BadCharacter),
            ("/v1/a#b", PathError::BadCharacter),
        ];
        for (p, want) in cases {
            assert_eq!(normalize_path(p), Err(want), "{p:?}");
        }
    }

    #[test]
    fn proxy_target_split() {
        let t = ProxyTarget::parse("/proxy/", "/proxy/openai/v1/models?limit=5").unwrap();
        assert_eq!(t.route().as_str(), "openai");
        assert_eq!(t.path().as_str(), "/v1/models");
        assert_eq!(t.query().unwrap().as_str(), "limit=5");
        let t = ProxyTarget::parse("/proxy/", "/proxy/openai").unwrap();
        assert_eq!(t.path().as_str(), "/");
        assert!(ProxyTarget::parse("/proxy/", "/proxy/../admin").is_err());
        assert!(ProxyTarget::parse("/proxy/", "/proxy/openai/%2e%2e/x").is_err());
        assert!(ProxyTarget::parse("/proxy/", "/admin/v1").is_err());
        assert!(ProxyTarget::parse("/proxy/", "/proxy/OpenAI/x").is_err());
        assert!(ProxyTarget::parse("/proxy/", "/proxy/openai/x?a=%00").is_err());
        assert!(ProxyTarget::parse("/proxy/", "/proxy/openai/x?a=b#c").is_err());
    }

    #[test]
    fn query_param_removal_sees_encoded_names() {
        let q = normalize_query("a=1&KEY=mine&k%65y=x&b=2&key").unwrap();
        assert_eq!(q.without_param("key").as_str(), "a=1&b=2");
    }
}
