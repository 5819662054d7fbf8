//! Header hygiene (S26, S27): the outbound request header map is built from the inbound
//! one by removing everything the app must not control, then setting the forwarding
//! headers from trusted values and injecting the key last, so nothing the app sent can
//! remove or override it.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use smallvec::SmallVec;

use crate::error::ProxyError;
use crate::redact::Redactor;
use crate::route::Injection;

/// RFC 9110 §7.6.1 connection-specific fields, plus the legacy and HTTP/2 ones that
/// proxies must not forward.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
    )
}

/// Inbound headers that describe the app's hop to keygate or carry its credentials; the
/// upstream gets keygate's values or nothing.
fn is_inbound_stripped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "forwarded"
            | "x-real-ip"
            | "authorization"
            | "dpop"
            | "cookie"
            // keygate does not implement 100-continue towards the upstream.
            | "expect"
            // Method and URL overrides that some frameworks honour: they would let an
            // allow-listed `GET /v1/models` act as `DELETE` or as another path upstream.
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-original-uri"
            // Client-address claims: the upstream learns the address from
            // X-Forwarded-For only.
            | "x-host"
            | "true-client-ip"
            | "cf-connecting-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "client-ip"
    )
}

fn is_forwarding_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-forwarded-")
}

/// Whether a route may not inject its key into `name` (configuration check).
pub fn is_reserved_for_injection(name: &HeaderName) -> bool {
    is_hop_by_hop(name)
        || is_forwarding_header(name)
        || matches!(
            name.as_str(),
            "host" | "content-length" | "forwarded" | "x-real-ip" | "dpop" | "cookie" | "expect"
        )
}

/// The names listed in every `Connection` header (lower-cased), which are hop-by-hop for
/// this message (RFC 9110 §7.6.1). Names that are hop-by-hop anyway are left out: the
/// `Connection: keep-alive` of nearly every upstream response then costs nothing.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !token.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .filter(|name| !is_hop_by_hop(name))
        .collect()
}

/// Trusted facts about the inbound hop, set by the server (never read from the request).
#[derive(Clone, Debug)]
pub struct ForwardedInfo {
    /// The app's address as the server sees it (or as a configured trusted proxy said).
    pub client_ip: IpAddr,
    /// `https` or `http`: the scheme of the public URL.
    pub proto: &'static str,
    /// The host of the configured public URL.
    pub host: HeaderValue,
}

/// Builds the upstream request's headers from the app's, in place: the inbound map is
/// reused rather than copied field by field (every proxied call passes here).
///
/// Order matters: the `Connection`-listed and hop-by-hop names are removed first, then the
/// app's credentials and forwarding headers and the injected header, then the trusted
/// forwarding headers are set, then the key is injected. A header the app names in
/// `Connection` is therefore only ever one of *its own* headers.
pub fn outbound_request_headers(
    mut headers: HeaderMap,
    injected: &Injected,
    forwarded: &ForwardedInfo,
) -> Result<HeaderMap, ProxyError> {
    let listed = connection_listed(&headers);
    let injected_name = injected.replaces.as_ref();
    remove_names(&mut headers, |name| {
        is_hop_by_hop(name)
            || listed.contains(name)
            || is_forwarding_header(name)
            || is_inbound_stripped(name)
            || injected_name == Some(name)
    });
    headers.insert(
        HeaderName::from_static("x-forwarded-for"),
        address_value(forwarded.client_ip)
            .map_err(|_| ProxyError::keygate("client address is not a header value"))?,
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(forwarded.proto),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-host"),
        forwarded.host.clone(),
    );
    if let Some((name, value)) = &injected.header {
        headers.insert(name.clone(), value.clone());
    }
    Ok(headers)
}

/// Removes every field whose name `drop` picks, all its values with it. A map has no
/// `retain`: the names are picked in one pass (the usual two or three held inline, so they
/// cost no allocation), then removed.
fn remove_names(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let picked: SmallVec<[HeaderName; 8]> =
        headers.keys().filter(|name| drop(name)).cloned().collect();
    for name in &picked {
        headers.remove(name);
    }
}

/// An IP address as a header value (`203.0.113.7`, `2001:db8::1`), an IPv4 address
/// written without the formatter (every proxied call writes one).
fn address_value(ip: IpAddr) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string());
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    let mut push = |b: u8| {
        if let Some(slot) = text.get_mut(len) {
            *slot = b;
            len += 1;
        }
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            push(b'.');
        }
        if octet >= 100 {
            push(b'0' + octet / 100);
        }
        if octet >= 10 {
            push(b'0' + octet / 10 % 10);
        }
        push(b'0' + octet % 10);
    }
    HeaderValue::from_bytes(text.get(..len).unwrap_or_default())
}

/// A route's injection with its key written in, made once per key read (it is part of
/// the gatekeeper's cached [`RouteKey`](crate::key::RouteKey)) rather than formatted for
/// every call.
pub struct Injected {
    /// The header the app may not send itself (it is replaced by the key).
    replaces: Option<HeaderName>,
    /// The header to set: name and value, marked sensitive. `None` for a query
    /// injection.
    header: Option<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injected")
            .field("header", &self.header.as_ref().map(|(n, _)| n))
            .finish_non_exhaustive()
    }
}

impl Injected {
    /// `secret` as `injection` injects it. An error if the key cannot be a header value.
    pub fn new(injection: &Injection, secret: &SecretString) -> Result<Self, ProxyError> {
        Ok(Self {
            replaces: injection.header_name(),
            header: injected_header(injection, secret)?,
        })
    }
}

fn injected_header(
    injection: &Injection,
    secret: &SecretString,
) -> Result<Option<(HeaderName, HeaderValue)>, ProxyError> {
    let (name, mut value) = match injection {
        Injection::Header {
            name,
            prefix,
            suffix,
        } => {
            let text = zeroize_on_drop(format!("{prefix}{}{suffix}", secret.expose_secret()));
            let value = HeaderValue::from_str(&text)
                .map_err(|_| ProxyError::keygate("secret is not a valid header value"))?;
            (name.clone(), value)
        }
        Injection::Basic { username } => {
            let text = zeroize_on_drop(basic_credentials(username, secret));
            let value = HeaderValue::from_str(&text)
                .map_err(|_| ProxyError::keygate("secret is not a valid header value"))?;
            (header::AUTHORIZATION, value)
        }
        Injection::Query { .. } => return Ok(None),
    };
    // Tells HPACK/QPACK never to index it, and hides it from `Debug`.
    value.set_sensitive(true);
    Ok(Some((name, value)))
}

/// `Basic base64(username:secret)`.
pub(crate) fn basic_credentials(username: &str, secret: &SecretString) -> String {
    use base64::Engine as _;
    let pair = zeroize_on_drop(format!("{username}:{}", secret.expose_secret()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    )
}

/// The temporary copies of the key made while building a header value are wiped on drop.
pub(crate) fn zeroize_on_drop(s: String) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(s)
}

/// Filters the upstream response's headers, in place: hop-by-hop and `Connection`-listed
/// headers are dropped (S27), and any header value that contains the key in one of its
/// encodings is replaced (an upstream echoing the key in a `Location` or debug header).
pub fn inbound_response_headers(mut headers: HeaderMap, redactor: &Redactor) -> HeaderMap {
    let listed = connection_listed(&headers);
    remove_names(&mut headers, |name| {
        is_hop_by_hop(name) || listed.contains(name)
    });
    for value in headers.values_mut() {
        if redactor.contains_secret(value.as_bytes()) {
            *value = HeaderValue::from_static("[redacted]");
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn info() -> ForwardedInfo {
        ForwardedInfo {
            client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            proto: "https",
            host: HeaderValue::from_static("gate.example.com"),
        }
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn connection_cannot_remove_the_key() {
        let inj = Injection::Header {
            name: HeaderName::from_static("x-api-key"),
            prefix: String::new(),
            suffix: String::new(),
        };
        let inbound = map(&[
            ("connection", "x-api-key, x-custom, keep-alive"),
            ("x-api-key", "app-supplied"),
            ("x-custom", "hop"),
            ("x-other", "kept"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("te", "trailers"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=10.0.0.1;host=evil.example"),
            ("x-real-ip", "10.0.0.1"),
            ("authorization", "DPoP token"),
            ("dpop", "proof"),
            ("cookie", "a=b"),
            ("host", "evil.example"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/admin"),
            ("true-client-ip", "10.0.0.1"),
        ]);
        let secret = SecretString::from("sk-live-123");
        let injected = Injected::new(&inj, &secret).unwrap();
        let out = outbound_request_headers(inbound, &injected, &info()).unwrap();
        assert_eq!(out.get("x-api-key").unwrap(), "sk-live-123");
        assert_eq!(out.get_all("x-api-key").iter().count(), 1);
        assert_eq!(out.get("x-other").unwrap(), "kept");
        for gone in [
            "connection",
            "x-custom",
            "keep-alive",
            "upgrade",
            "http2-settings",
            "te",
            "forwarded",
            "x-real-ip",
            "authorization",
            "dpop",
            "cookie",
            "host",
        ] {
            assert!(out.get(gone).is_none(), "{gone}");
        }
        assert_eq!(out.get("x-forwarded-for").unwrap(), "203.0.113.7");
        assert_eq!(out.get("x-forwarded-host").unwrap(), "gate.example.com");
        assert_eq!(out.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(out.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn every_field_named_in_connection_is_removed_however_many() {
        // More than the eight names `remove_names` keeps on the stack.
        let mut inbound = HeaderMap::new();
        let names: Vec<String> = (0..20).map(|i| format!("x-hop-{i}")).collect();
        inbound.insert(
            header::CONNECTION,
            HeaderValue::from_str(&names.join(", ")).unwrap(),
        );
        for name in &names {
            inbound.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
            inbound.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("second value"),
            );
        }
        inbound.insert("x-kept", HeaderValue::from_static("yes"));
        let inj = Injection::Header {
            name: HeaderName::from_static("x-api-key"),
            prefix: String::new(),
            suffix: String::new(),
        };
        let injected = Injected::new(&inj, &SecretString::from("sk-live-123")).unwrap();
        let out = outbound_request_headers(inbound.clone(), &injected, &info()).unwrap();
        let redactor = Redactor::new(&SecretString::from("sk-live-123"), &inj);
        let back = inbound_response_headers(inbound, &redactor);
        for map in [&out, &back] {
            for name in &names {
                assert!(map.get(name.as_str()).is_none(), "{name}");
            }
            assert!(map.get(header::CONNECTION).is_none());
            assert_eq!(map.get("x-kept").unwrap(), "yes");
        }
    }

    #[test]
    fn client_addresses_are_written_as_the_formatter_would() {
        for ip in [
            "0.0.0.0",
            "10.0.99.100",
            "255.255.255.255",
            "9.80.1.254",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(address_value(ip).unwrap(), ip.to_string().as_str());
        }
    }

    #[test]
    fn basic_injection_replaces_app_authorization() {
        let inj = Injection::Basic {
            username: "api".into(),
        };
        let inbound = map(&[("authorization", "Basic YXBwOmFwcA==")]);
        let injected = Injected::new(&inj, &SecretString::from("s3cret")).unwrap();
        let out = outbound_request_headers(inbound, &injected, &info()).unwrap();
        // base64("api:s3cret")
        assert_eq!(out.get("authorization").unwrap(), "Basic YXBpOnMzY3JldA==");
    }
}
