//! The front-channel half of the authorization code flow with PKCE (RFC 7636, S256
//! only) and DPoP key binding (RFC 9449 §10): the URL to open in the system browser, and
//! the checks on the redirect that comes back.

use std::fmt;

use keygate_auth::jwk::Jkt;
use keygate_auth::pkce;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use url::Url;

use crate::error::ClientError;

/// What the app keeps between opening the authorization URL and receiving the redirect:
/// the `state` and the PKCE `code_verifier`, both secret. `Debug` shows neither.
pub struct PendingAuthorization {
    pub(crate) state: SecretString,
    pub(crate) code_verifier: SecretString,
    pub(crate) redirect_uri: String,
    pub(crate) scope: String,
    pub(crate) jkt: Jkt,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("state", &"[REDACTED]")
            .field("code_verifier", &"[REDACTED]")
            .field("redirect_uri", &self.redirect_uri)
            .field("scope", &self.scope)
            .field("dpop_jkt", &self.jkt)
            .finish()
    }
}

impl PendingAuthorization {
    /// The scopes requested, space-separated.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The redirect URI the code will be sent to.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }
}

/// A scope token as RFC 6749 §3.3 allows: `%x21 / %x23-5B / %x5D-7E`, non-empty.
fn valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// Builds the authorization request URL and the secrets to keep.
pub(crate) fn build(
    authorization_endpoint: &Url,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[&str],
    jkt: Jkt,
) -> Result<(Url, PendingAuthorization), ClientError> {
    if scopes.is_empty() || !scopes.iter().all(|s| valid_scope_token(s)) {
        return Err(ClientError::InvalidScope);
    }
    let scope = scopes.join(" ");
    let state = SecretString::from(keygate_auth::b64::encode(
        keygate_auth::opaque::random_bytes::<32>(),
    ));
    let code_verifier = pkce::generate_verifier();
    let challenge = pkce::challenge_for(&code_verifier);
    let mut url = authorization_endpoint.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scope)
        .append_pair("state", state.expose_secret())
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", "S256")
        .append_pair("dpop_jkt", jkt.as_str());
    Ok((
        url,
        PendingAuthorization {
            state,
            code_verifier,
            redirect_uri: redirect_uri.to_owned(),
            scope,
            jkt,
        },
    ))
}

/// The code from an authorization response, after its checks.
#[derive(Debug)]
pub(crate) struct AuthorizationCode(pub(crate) SecretString);

fn states_match(pending: &PendingAuthorization, presented: &str) -> bool {
    bool::from(
        pending
            .state
            .expose_secret()
            .as_bytes()
            .ct_eq(presented.as_bytes()),
    )
}

/// Checks the redirect (a full callback URL) or a bare code plus state, and extracts the
/// code.
///
/// With a callback URL: an `error` parameter becomes [`ClientError::AuthorizationDenied`];
/// `state` must match (and equal the `state` argument too, if given); `iss` (RFC 9207),
/// when present, must equal `issuer`; the URL must start with the registered redirect
/// URI. With a bare code, `state` is required.
pub(crate) fn parse_response(
    pending: &PendingAuthorization,
    callback_url_or_code: &str,
    state: Option<&str>,
    issuer: &str,
) -> Result<AuthorizationCode, ClientError> {
    let callback = Url::parse(callback_url_or_code)
        .ok()
        .filter(|u| u.query().is_some() && callback_url_or_code.contains(['?', '#']));
    let Some(callback) = callback else {
        let state = state.ok_or(ClientError::StateMismatch)?;
        if !states_match(pending, state) {
            return Err(ClientError::StateMismatch);
        }
        if callback_url_or_code.is_empty() {
            return Err(ClientError::MissingCode);
        }
        return Ok(AuthorizationCode(SecretString::from(
            callback_url_or_code.to_owned(),
        )));
    };
    if !same_redirect_target(&callback, &pending.redirect_uri) {
        return Err(ClientError::RedirectMismatch);
    }
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    let mut iss = None;
    for (k, v) in callback.query_pairs() {
        let slot = match k.as_ref() {
            "code" => &mut code,
            "state" => &mut got_state,
            "error" => &mut error,
            "iss" => &mut iss,
            _ => continue,
        };
        if slot.is_some() {
            // Repeated parameters are ambiguous (RFC 6749 §3.1): refuse.
            return Err(ClientError::InvalidCallback);
        }
        *slot = Some(v.into_owned());
    }
    let got_state = got_state.ok_or(ClientError::StateMismatch)?;
    if !states_match(pending, &got_state) || state.is_some_and(|s| !states_match(pending, s)) {
        return Err(ClientError::StateMismatch);
    }
    if let Some(iss) = iss {
        if iss.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(ClientError::IssuerMismatch);
        }
    }
    if let Some(error) = error {
        return Err(ClientError::AuthorizationDenied(sanitise_code(&error)));
    }
    let code = code
        .filter(|c| !c.is_empty())
        .ok_or(ClientError::MissingCode)?;
    Ok(AuthorizationCode(SecretString::from(code)))
}

/// The callback must be the registered redirect URI plus a query.
fn same_redirect_target(callback: &Url, redirect_uri: &str) -> bool {
    let Ok(registered) = Url::parse(redirect_uri) else {
        return false;
    };
    let mut got = callback.clone();
    got.set_query(None);
    got.set_fragment(None);
    let mut want = registered;
    want.set_query(None);
    want.set_fragment(None);
    got == want
}

/// An error code from the redirect, reduced to the characters RFC 6749 allows in one, so
/// it is safe to show and log.
pub(crate) fn sanitise_code(code: &str) -> String {
    code.chars()
        .filter(|c| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use keygate_auth::pkce::CodeChallenge;

    use super::*;

    const ISSUER: &str = "https://gate.example.com";
    const REDIRECT: &str = "com.example.app:/oauth/callback";

    fn jkt() -> Jkt {
        Jkt::parse("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I").unwrap()
    }

    fn start() -> (Url, PendingAuthorization) {
        let endpoint = Url::parse("https://gate.example.com/oauth2/authorize").unwrap();
        build(&endpoint, "ios-app", REDIRECT, &["ai", "maps"], jkt()).unwrap()
    }

    fn query(url: &Url) -> HashMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn authorization_url_has_every_parameter() {
        let (url, pending) = start();
        assert_eq!(url.path(), "/oauth2/authorize");
        let q = query(&url);
        assert_eq!(q.len(), 8);
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "ios-app");
        assert_eq!(q["redirect_uri"], REDIRECT);
        assert_eq!(q["scope"], "ai maps");
        assert_eq!(q["state"], pending.state.expose_secret());
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["dpop_jkt"], "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
        // The challenge is S256 of the kept verifier, and keygate-auth accepts the pair.
        let challenge = CodeChallenge::parse(Some(&q["code_challenge"]), Some("S256")).unwrap();
        assert!(challenge.verify(pending.code_verifier.expose_secret()));
        assert_eq!(pending.code_verifier.expose_secret().len(), 43);
        // The verifier itself never appears in the URL.
        assert!(!url.as_str().contains(pending.code_verifier.expose_secret()));
    }

    #[test]
    fn each_request_has_fresh_state_and_verifier() {
        let (_, a) = start();
        let (_, b) = start();
        assert_ne!(a.state.expose_secret(), b.state.expose_secret());
        assert_ne!(
            a.code_verifier.expose_secret(),
            b.code_verifier.expose_secret()
        );
        assert!(a.state.expose_secret().len() >= 43);
    }

    #[test]
    fn bad_scopes_are_refused() {
        let endpoint = Url::parse("https://gate.example.com/oauth2/authorize").unwrap();
        for scopes in [&[][..], &["a b"][..], &[""][..], &["quo\"te"][..]] {
            assert!(matches!(
                build(&endpoint, "c", REDIRECT, scopes, jkt()),
                Err(ClientError::InvalidScope)
            ));
        }
    }

    fn callback(pending: &PendingAuthorization, extra: &str) -> String {
        format!(
            "{REDIRECT}?code=kgc_abc&state={}{extra}",
            pending.state.expose_secret()
        )
    }

    #[test]
    fn callback_url_checks() {
        let (_, pending) = start();
        let ok = parse_response(&pending, &callback(&pending, ""), None, ISSUER).unwrap();
        assert_eq!(ok.0.expose_secret(), "kgc_abc");
        let with_iss = callback(&pending, "&iss=https%3A%2F%2Fgate.example.com");
        assert!(parse_response(&pending, &with_iss, None, ISSUER).is_ok());
        let wrong_iss = callback(&pending, "&iss=https%3A%2F%2Fevil.example");
        assert!(matches!(
            parse_response(&pending, &wrong_iss, None, ISSUER),
            Err(ClientError::IssuerMismatch)
        ));
        let wrong_state = format!("{REDIRECT}?code=kgc_abc&state=forged");
        assert!(matches!(
            parse_response(&pending, &wrong_state, None, ISSUER),
            Err(ClientError::StateMismatch)
        ));
        let no_state = format!("{REDIRECT}?code=kgc_abc");
        assert!(matches!(
            parse_response(&pending, &no_state, None, ISSUER),
            Err(ClientError::StateMismatch)
        ));
        // The explicit state argument must agree as well.
        assert!(matches!(
            parse_response(&pending, &callback(&pending, ""), Some("other"), ISSUER),
            Err(ClientError::StateMismatch)
        ));
        let twice = callback(&pending, "&code=kgc_other");
        assert!(matches!(
            parse_response(&pending, &twice, None, ISSUER),
            Err(ClientError::InvalidCallback)
        ));
        let elsewhere = format!(
            "https://evil.example/cb?code=kgc_abc&state={}",
            pending.state.expose_secret()
        );
        assert!(matches!(
            parse_response(&pending, &elsewhere, None, ISSUER),
            Err(ClientError::RedirectMismatch)
        ));
    }

    #[test]
    fn denied_authorization_names_the_code_only() {
        let (_, pending) = start();
        let denied = format!(
            "{REDIRECT}?error=access_denied&error_description=nope&state={}",
            pending.state.expose_secret()
        );
        match parse_response(&pending, &denied, None, ISSUER) {
            Err(ClientError::AuthorizationDenied(code)) => assert_eq!(code, "access_denied"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bare_code_needs_matching_state() {
        let (_, pending) = start();
        let state = pending.state.expose_secret().to_owned();
        let ok = parse_response(&pending, "kgc_abc", Some(&state), ISSUER).unwrap();
        assert_eq!(ok.0.expose_secret(), "kgc_abc");
        assert!(matches!(
            parse_response(&pending, "kgc_abc", None, ISSUER),
            Err(ClientError::StateMismatch)
        ));
        assert!(matches!(
            parse_response(&pending, "kgc_abc", Some("x"), ISSUER),
            Err(ClientError::StateMismatch)
        ));
    }

    #[test]
    fn debug_hides_state_and_verifier() {
        let (_, pending) = start();
        let debug = format!("{pending:?}");
        assert!(!debug.contains(pending.state.expose_secret()));
        assert!(!debug.contains(pending.code_verifier.expose_secret()));
    }
}
