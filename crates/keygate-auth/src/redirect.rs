//! Redirect URI registration and exact matching (RFC 9700 §4.1.3, RFC 8252 §7).
//!
//! Registered URIs are compared byte for byte with the requested one. The one exception
//! is RFC 8252 §7.3: an `http` redirect to the loopback IP literal `127.0.0.1` or `[::1]`
//! matches with any port, because native apps bind an ephemeral port. `localhost` is not
//! accepted (RFC 8252 §8.3). Private-use schemes must look like a reversed domain name
//! (RFC 8252 §7.1).

use std::fmt;

/// Why a redirect URI cannot be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// Not an absolute URI, or it has a fragment or credentials.
    #[error("redirect URI malformed")]
    Malformed,
    /// Plain `http` to something other than a loopback IP literal.
    #[error("http redirect URIs must use 127.0.0.1 or [::1]")]
    InsecureHttp,
    /// A private-use scheme that is not a reversed domain name, or a dangerous scheme.
    #[error("custom scheme must be a reversed domain name")]
    BadScheme,
}

const LOOPBACK_PREFIXES: [&str; 2] = ["http://127.0.0.1", "http://[::1]"];

/// A registered redirect URI.
#[derive(Clone, PartialEq, Eq)]
pub struct RedirectUri {
    text: String,
    loopback: Option<(&'static str, String)>,
}

impl fmt::Debug for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedirectUri").field(&self.text).finish()
    }
}

/// Splits a loopback URI into its prefix and the part after the optional port.
fn split_loopback(text: &str) -> Option<(&'static str, &str)> {
    let prefix = LOOPBACK_PREFIXES
        .into_iter()
        .find(|p| text.starts_with(p))?;
    let rest = text.get(prefix.len()..)?;
    let rest = match rest.strip_prefix(':') {
        Some(after) => {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let port: u32 = after.get(..digits)?.parse().ok()?;
            if digits > 5 || !(1..=65535).contains(&port) {
                return None;
            }
            after.get(digits..)?
        }
        None => rest,
    };
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return None;
    }
    Some((prefix, rest))
}

impl RedirectUri {
    /// Validates a redirect URI for registration.
    pub fn register(text: &str) -> Result<Self, RedirectError> {
        if text.len() > 2048 || text.bytes().any(|b| b <= 0x20 || b == 0x7f) {
            return Err(RedirectError::Malformed);
        }
        let url = url::Url::parse(text).map_err(|_| RedirectError::Malformed)?;
        if url.fragment().is_some()
            || text.contains('#')
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(RedirectError::Malformed);
        }
        match url.scheme() {
            "https" => {
                if url.host().is_none() {
                    return Err(RedirectError::Malformed);
                }
                Ok(Self {
                    text: text.to_owned(),
                    loopback: None,
                })
            }
            "http" => {
                let (prefix, rest) = split_loopback(text).ok_or(RedirectError::InsecureHttp)?;
                Ok(Self {
                    text: text.to_owned(),
                    loopback: Some((prefix, rest.to_owned())),
                })
            }
            scheme => {
                let dangerous = matches!(
                    scheme,
                    "javascript"
                        | "data"
                        | "file"
                        | "vbscript"
                        | "blob"
                        | "about"
                        | "ftp"
                        | "ws"
                        | "wss"
                );
                if dangerous || !scheme.contains('.') {
                    return Err(RedirectError::BadScheme);
                }
                Ok(Self {
                    text: text.to_owned(),
                    loopback: None,
                })
            }
        }
    }

    /// The registered text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a requested `redirect_uri` matches this registration.
    pub fn matches(&self, requested: &str) -> bool {
        match &self.loopback {
            None => requested == self.text,
            Some((prefix, rest)) => {
                matches!(split_loopback(requested), Some((p, r)) if p == *prefix && r == rest)
                    && !requested.contains('#')
            }
        }
    }
}

/// Finds the registration a requested `redirect_uri` matches, if any.
pub fn find_match<'a>(registered: &'a [RedirectUri], requested: &str) -> Option<&'a RedirectUri> {
    registered.iter().find(|r| r.matches(requested))
}
