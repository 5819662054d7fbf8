//! Server-provided DPoP nonces (RFC 9449 §8, §9): remembered per origin, and recognised
//! in the two ways a server asks for one.

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use url::Url;

/// The `DPoP-Nonce` response header.
pub const DPOP_NONCE: &str = "DPoP-Nonce";

/// The longest nonce the client keeps; longer values are ignored.
pub const MAX_NONCE_LEN: usize = 512;

/// A nonce value as RFC 9449 §8.1 allows it: one or more NQCHAR
/// (`%x21 / %x23-5B / %x5D-7E`).
pub fn valid_nonce(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_NONCE_LEN
        && value
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// The well-formed `DPoP-Nonce` header of a response, if it has exactly one.
pub fn nonce_from_headers(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(DPOP_NONCE).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = first.to_str().ok()?;
    valid_nonce(text).then(|| text.to_owned())
}

/// The latest nonce each origin gave, so the next proof to that origin carries it.
#[derive(Debug, Default)]
pub struct NonceStore {
    by_origin: Mutex<HashMap<String, String>>,
}

fn origin_key(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl NonceStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The nonce last seen from `url`'s origin.
    pub fn get(&self, url: &Url) -> Option<String> {
        let map = self.by_origin.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&origin_key(url)).cloned()
    }

    /// Remembers `nonce` for `url`'s origin, replacing the previous one.
    pub fn set(&self, url: &Url, nonce: String) {
        let mut map = self.by_origin.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(origin_key(url), nonce);
    }

    /// Remembers the `DPoP-Nonce` of any response (a server may send a fresh nonce with
    /// any answer, §8.2). Returns the nonce if there was one.
    pub fn observe(&self, url: &Url, headers: &HeaderMap) -> Option<String> {
        let nonce = nonce_from_headers(headers)?;
        self.set(url, nonce.clone());
        Some(nonce)
    }
}

/// Splits a challenge list into (scheme, params) pairs. Accepts the shapes RFC 9110
/// §11.6.1 allows for auth-params (`k=token` or `k="quoted"`, comma-separated). A
/// `token68` yields a harmless empty parameter.
fn parse_challenges(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let skip_ws = |i: &mut usize| {
        while bytes
            .get(*i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b','))
        {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        let start = i;
        while bytes.get(i).copied().is_some_and(is_tchar) {
            i += 1;
        }
        if start == i {
            // Not a token (e.g. the padding of a token68): step over it.
            if i >= bytes.len() {
                break;
            }
            i += 1;
            continue;
        }
        let word = value.get(start..i).unwrap_or_default().to_owned();
        // Look ahead past spaces: '=' makes it a parameter of the current challenge.
        let mut j = i;
        while bytes.get(j).is_some_and(|b| matches!(b, b' ' | b'\t')) {
            j += 1;
        }
        if bytes.get(j) == Some(&b'=') && !out.is_empty() {
            i = j + 1;
            while bytes.get(i).is_some_and(|b| matches!(b, b' ' | b'\t')) {
                i += 1;
            }
            let mut param_value = String::new();
            if bytes.get(i) == Some(&b'"') {
                i += 1;
                while let Some(&b) = bytes.get(i) {
                    i += 1;
                    match b {
                        b'"' => break,
                        b'\\' => {
                            if let Some(&next) = bytes.get(i) {
                                param_value.push(char::from(next));
                                i += 1;
                            }
                        }
                        _ => param_value.push(char::from(b)),
                    }
                }
            } else {
                let vstart = i;
                while bytes.get(i).copied().is_some_and(is_tchar) {
                    i += 1;
                }
                param_value = value.get(vstart..i).unwrap_or_default().to_owned();
            }
            if let Some((_, params)) = out.last_mut() {
                params.push((word.to_ascii_lowercase(), param_value));
            }
        } else {
            out.push((word, Vec::new()));
        }
    }
    out
}

/// Whether a 401 response carries a `DPoP` challenge with this `error` code.
pub fn has_dpop_challenge_error(status: StatusCode, headers: &HeaderMap, code: &str) -> bool {
    status == StatusCode::UNAUTHORIZED
        && headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .any(|(scheme, params)| {
                scheme.eq_ignore_ascii_case("DPoP")
                    && params.iter().any(|(k, v)| k == "error" && v == code)
            })
}

/// Whether a resource response is RFC 9449 §9's request for a nonce: 401 with a `DPoP`
/// challenge whose `error` is `use_dpop_nonce`.
pub fn is_resource_nonce_challenge(status: StatusCode, headers: &HeaderMap) -> bool {
    has_dpop_challenge_error(status, headers, "use_dpop_nonce")
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn nonce_syntax() {
        assert!(valid_nonce("eyJ7S_zG.eyJH0-Z.HX4w-7v"));
        assert!(!valid_nonce(""));
        assert!(!valid_nonce("has space"));
        assert!(!valid_nonce("quote\"d"));
        assert!(!valid_nonce("back\\slash"));
        assert!(!valid_nonce(&"a".repeat(MAX_NONCE_LEN + 1)));
    }

    #[test]
    fn one_well_formed_header_only() {
        assert_eq!(
            nonce_from_headers(&headers(&[("dpop-nonce", "abc")])).as_deref(),
            Some("abc")
        );
        assert!(
            nonce_from_headers(&headers(&[("dpop-nonce", "a"), ("dpop-nonce", "b")])).is_none()
        );
        assert!(nonce_from_headers(&headers(&[("dpop-nonce", "a b")])).is_none());
        assert!(nonce_from_headers(&HeaderMap::new()).is_none());
    }

    #[test]
    fn store_is_per_origin() {
        let store = NonceStore::new();
        let a = Url::parse("https://gate.example.com/oauth2/token").unwrap();
        let a2 = Url::parse("https://gate.example.com:443/proxy/x?q").unwrap();
        let b = Url::parse("https://gate.example.com:8443/proxy/x").unwrap();
        store.set(&a, "n1".into());
        assert_eq!(store.get(&a2).as_deref(), Some("n1"));
        assert_eq!(store.get(&b), None);
        store.observe(&a2, &headers(&[("DPoP-Nonce", "n2")]));
        assert_eq!(store.get(&a).as_deref(), Some("n2"));
        // A response without a nonce keeps the last one.
        store.observe(&a, &HeaderMap::new());
        assert_eq!(store.get(&a).as_deref(), Some("n2"));
    }

    #[test]
    fn recognises_nonce_challenges() {
        let keygate = "DPoP error=\"use_dpop_nonce\", error_description=\"A DPoP nonce is required\", algs=\"EdDSA ES256\"";
        let h = headers(&[("www-authenticate", keygate)]);
        assert!(is_resource_nonce_challenge(StatusCode::UNAUTHORIZED, &h));
        assert!(!is_resource_nonce_challenge(StatusCode::BAD_REQUEST, &h));
        // Unquoted value, lower-case scheme, after another challenge.
        let h = headers(&[(
            "www-authenticate",
            "Bearer realm=\"x\", dpop error=use_dpop_nonce",
        )]);
        assert!(is_resource_nonce_challenge(StatusCode::UNAUTHORIZED, &h));
        // In a second header line.
        let h = headers(&[
            ("www-authenticate", "Basic realm=\"r\""),
            (
                "www-authenticate",
                "DPoP algs=\"ES256\", error=\"use_dpop_nonce\"",
            ),
        ]);
        assert!(is_resource_nonce_challenge(StatusCode::UNAUTHORIZED, &h));
        // Other errors, or the code under another scheme, are not nonce requests.
        for value in [
            "DPoP error=\"invalid_dpop_proof\"",
            "Bearer error=\"use_dpop_nonce\"",
            "DPoP error_description=\"use_dpop_nonce\"",
            "DPoP algs=\"ES256\"",
        ] {
            let h = headers(&[("www-authenticate", value)]);
            assert!(
                !is_resource_nonce_challenge(StatusCode::UNAUTHORIZED, &h),
                "{value}"
            );
        }
    }

    proptest::proptest! {
        /// Challenge headers come from the network: any value parses without panicking,
        /// and a well-formed nonce challenge is found wherever it sits in the list.
        #[test]
        fn challenge_parser_is_total(prefix in "[ -~]{0,80}", junk in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            if let Ok(v) = HeaderValue::from_bytes(&junk) {
                let mut h = HeaderMap::new();
                h.insert(WWW_AUTHENTICATE, v);
                let _ = is_resource_nonce_challenge(StatusCode::UNAUTHORIZED, &h);
            }
            let _ = parse_challenges(&prefix);
            let h = headers(&[
                ("www-authenticate", &prefix),
                ("www-authenticate", "DPoP error=\"use_dpop_nonce\""),
            ]);
            proptest::prop_assert!(is_resource_nonce_challenge(StatusCode::UNAUTHORIZED, &h));
        }
    }
}
