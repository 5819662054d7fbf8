//! The authorization endpoint's server-rendered login page: authorization request checks
//! (exact redirect URIs, PKCE S256 only), a CSRF-protected form, a TOTP step when the
//! user enrolled, throttling without user enumeration (S17, S18), and the redirect with
//! the code.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use keygate_audit::{AuditEvent, Outcome};
use keygate_auth::code::CODE_TTL_SECS;
use keygate_auth::ids::ScopeSet;
use keygate_auth::opaque::{OpaqueToken, TokenKind};
use keygate_auth::password::{PasswordCheck, StoredPasswordHash};
use keygate_auth::pkce::CodeChallenge;
use keygate_auth::redirect::{RedirectUri, find_match};
use keygate_auth::totp::{Totp, TotpSeed};
use keygate_store::{ClientRecord, CodeRecord, UserRecord};
use keygate_vault::now_ms;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::endpoints::{Form, service};
use super::{TokenService, unix_now};
use crate::AppState;

const CSRF_COOKIE: &str = "kg_csrf";
/// What the TOTP step asks for.
const TOTP_PROMPT: &str = "Enter the code from your authenticator app.";
/// How long the password step's ticket stays valid for the TOTP step.
const TICKET_SECS: i64 = 300;
const ENROL_PROMPT: &str = "This sign-in needs a second step. Add the key below to an authenticator app, then enter the code it shows.";
/// Seal context of a TOTP seed offered on the login page, before it is confirmed.
const ENROL_CONTEXT: &str = "totp-enrol";

/// A validated authorization request.
struct AuthzRequest {
    client: ClientRecord,
    redirect_uri: String,
    state: Option<String>,
    scopes: ScopeSet,
    challenge: CodeChallenge,
    dpop_jkt: Option<String>,
}

/// Why an authorization request fails: before the redirect URI is trusted, the user sees
/// a page; after, the client gets an error redirect (RFC 6749 §4.1.2.1).
enum Refusal {
    Page(StatusCode, &'static str),
    Redirect(String),
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn redirect_with(uri: &str, params: &[(&str, &str)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", ser.finish())
}

async fn validate(
    svc: &TokenService,
    p: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<AuthzRequest, Refusal> {
    let client_id = p("client_id").ok_or(Refusal::Page(
        StatusCode::BAD_REQUEST,
        "The request names no client.",
    ))?;
    let client = svc
        .store
        .client_by_id(&client_id)
        .await
        .map_err(|_| {
            Refusal::Page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is unavailable right now. Try again later.",
            )
        })?
        .filter(|c| c.removed_ms.is_none())
        .ok_or(Refusal::Page(
            StatusCode::BAD_REQUEST,
            "This app is not registered with keygate.",
        ))?;
    let requested = p("redirect_uri").ok_or(Refusal::Page(
        StatusCode::BAD_REQUEST,
        "The request has no redirect URI.",
    ))?;
    let registered: Vec<RedirectUri> = client
        .redirect_uris
        .iter()
        .filter_map(|u| RedirectUri::register(u).ok())
        .collect();
    if find_match(&registered, &requested).is_none() {
        return Err(Refusal::Page(
            StatusCode::BAD_REQUEST,
            "The app's redirect URI is not registered; keygate will not send you there.",
        ));
    }
    let state = p("state");
    let fail = |error: &str| {
        let mut params = vec![("error", error), ("iss", svc.issuer.as_str())];
        if let Some(s) = &state {
            params.push(("state", s));
        }
        Refusal::Redirect(redirect_with(&requested, &params))
    };
    if p("response_type").as_deref() != Some("code") {
        return Err(fail("unsupported_response_type"));
    }
    let challenge = CodeChallenge::parse(
        p("code_challenge").as_deref(),
        p("code_challenge_method").as_deref(),
    )
    .map_err(|_| fail("invalid_request"))?;
    let allowed = ScopeSet::parse(&client.scopes).map_err(|_| fail("invalid_scope"))?;
    let requested_scopes = match p("scope") {
        Some(s) => Some(ScopeSet::parse(&s).map_err(|_| fail("invalid_scope"))?),
        None => None,
    };
    let scopes = keygate_auth::code::grant_scopes(requested_scopes.as_ref(), &allowed)
        .ok_or_else(|| fail("invalid_scope"))?;
    let dpop_jkt = p("dpop_jkt");
    if dpop_jkt
        .as_deref()
        .is_some_and(|j| keygate_auth::jwk::Jkt::parse(j).is_none())
    {
        return Err(fail("invalid_request"));
    }
    Ok(AuthzRequest {
        client,
        redirect_uri: requested,
        state,
        scopes,
        challenge,
        dpop_jkt,
    })
}

pub(crate) fn mac(key: &[u8; 32], parts: &[&str]) -> String {
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p.as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The hidden fields that carry the authorization request through the form.
const CARRIED: [&str; 7] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

struct Page<'a> {
    svc: &'a TokenService,
    req: &'a AuthzRequest,
    params: &'a (dyn Fn(&str) -> Option<String> + Sync),
    csrf_cookie: String,
    message: Option<&'a str>,
    totp_ticket: Option<String>,
    /// The enrolment step (`tokens.mfa = "required"`, a user without TOTP yet).
    enrol: Option<&'a Enrolment>,
    username: &'a str,
}

/// A TOTP seed offered on the login page. It travels in the form sealed by the vault to
/// the user (`sealed`), under a ticket that binds it to this user, this authorization
/// request and a deadline; it is stored only once a code from it is entered.
struct Enrolment {
    ticket: String,
    /// base64url of the sealed seed.
    sealed: String,
    seed: TotpSeed,
    account: String,
}

fn render(page: Page<'_>, status: StatusCode, set_cookie: bool) -> Response {
    let mut hidden = String::new();
    for name in CARRIED.iter().chain(std::iter::once(&"dpop_jkt")) {
        if let Some(v) = (page.params)(name) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                html_escape(&v)
            ));
        }
    }
    let csrf = mac(&page.svc.csrf_key, &[&page.csrf_cookie]);
    let scopes: Vec<&str> = page.req.scopes.iter().map(|s| s.as_str()).collect();
    // The TOTP step's prompt is an instruction, not a failure: it is not styled or
    // announced as an alert.
    let message = match (page.message, &page.totp_ticket) {
        (None, _) => String::new(),
        (Some(m), _) if m == TOTP_PROMPT || m == ENROL_PROMPT => {
            format!("<p class=\"note\">{}</p>", html_escape(m))
        }
        (Some(m), _) => format!("<p class=\"msg\" role=\"alert\">{}</p>", html_escape(m)),
    };
    let fields = match (&page.totp_ticket, page.enrol) {
        (_, Some(e)) => {
            let key = e.seed.to_base32();
            let grouped: Vec<String> = key
                .expose_secret()
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            let uri =
                Totp::default().otpauth_uri(&e.seed, &issuer_host(&page.svc.issuer), &e.account);
            format!(
                "<input type=\"hidden\" name=\"username\" value=\"{user}\">\
                 <input type=\"hidden\" name=\"ticket\" value=\"{ticket}\">\
                 <input type=\"hidden\" name=\"enrol\" value=\"{sealed}\">\
                 <p><a class=\"otpauth\" href=\"{uri}\">Add to an authenticator app on this device</a></p>\
                 <p>Or type this key into it:</p><p class=\"key\"><code>{key}</code></p>\
                 <label>The code the app shows\
                 <input name=\"totp\" inputmode=\"numeric\" pattern=\"[0-9]*\" autocomplete=\"one-time-code\" required></label>",
                user = html_escape(page.username),
                ticket = html_escape(&e.ticket),
                sealed = html_escape(&e.sealed),
                uri = html_escape(uri.expose_secret()),
                key = html_escape(&grouped.join(" ")),
            )
        }
        (None, None) => format!(
            "<label>Username<input name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" required value=\"{}\"></label>\
             <label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>",
            html_escape(page.username)
        ),
        (Some(ticket), None) => format!(
            "<input type=\"hidden\" name=\"username\" value=\"{}\">\
             <input type=\"hidden\" name=\"ticket\" value=\"{}\">\
             <label>One-time code from your authenticator app\
             <input name=\"totp\" inputmode=\"numeric\" pattern=\"[0-9]*\" autocomplete=\"one-time-code\" required autofocus></label>",
            html_escape(page.username),
            html_escape(ticket)
        ),
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Sign in · keygate</title><style>\
body{{font-family:system-ui,sans-serif;margin:0;padding:1.5rem;background:#f5f5f7;color:#111}}\
main{{max-width:24rem;margin:2rem auto;background:#fff;padding:1.5rem;border-radius:12px;box-shadow:0 1px 4px #0002}}\
h1{{font-size:1.4rem;margin:0 0 .5rem}}p{{margin:.25rem 0 1rem;color:#444}}\
label{{display:block;margin:.75rem 0;font-weight:600}}\
input:not([type=hidden]){{display:block;width:100%;box-sizing:border-box;font-size:1.1rem;padding:.7rem;margin-top:.3rem;border:1px solid #bbb;border-radius:8px}}\
button{{width:100%;font-size:1.1rem;padding:.8rem;margin-top:1rem;border:0;border-radius:8px;background:#1a5fd0;color:#fff}}\
.msg{{color:#a00;font-weight:600}}.note{{color:#111}}\
.where{{margin:0 0 1rem;font-size:.95rem}}.key code{{font-size:1.05rem;letter-spacing:.05em;word-break:break-all}}.small{{font-size:.9rem;margin:1rem 0 0}}a{{color:#1a5fd0}}</style></head><body><main>\
<h1>Sign in</h1><p class=\"where\">at <strong>{host}</strong></p>\
<p><strong>{app}</strong> asks for: {scopes}</p>{message}\
<form method=\"post\" action=\"/oauth2/authorize\">{hidden}<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{fields}\
<button type=\"submit\">Continue</button></form><p class=\"small\">{session}</p>{privacy}</main></body></html>",
        host = html_escape(&issuer_host(&page.svc.issuer)),
        app = html_escape(
            page.req
                .client
                .display_name
                .as_deref()
                .unwrap_or(&page.req.client.name)
        ),
        scopes = html_escape(&scopes.join(", ")),
        session = html_escape(&session_line(page.svc, &page.req.client)),
        privacy = page
            .req
            .client
            .privacy_url
            .as_deref()
            .map(|u| format!(
                "<p class=\"small\"><a href=\"{}\" rel=\"noopener noreferrer\">Privacy notice</a></p>",
                html_escape(u)
            ))
            .unwrap_or_default(),
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // `form-action` governs the form's whole navigation, and browsers (Chromium at least)
    // check it again at every redirect the post is answered with. The post ends in a 303
    // to the app's redirect URI, so `'self'` alone blocks the very sign-in it protects.
    // The directive therefore names keygate and the one redirect target this page was
    // rendered for, already checked against the client's registered URIs: the form still
    // cannot be sent anywhere else, and every other directive stays as strict as before.
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {}; frame-ancestors 'none'",
        form_action_source(&page.req.redirect_uri)
    );
    // Should the header ever not build, the page keeps the strict policy rather than none.
    let csp = HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    ));
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    if set_cookie {
        let secure = if page.svc.issuer.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={}; Path=/oauth2/authorize; HttpOnly; SameSite=Strict{secure}",
            page.csrf_cookie
        )) {
            headers.insert(header::SET_COOKIE, v);
        }
    }
    (status, headers, Html(body)).into_response()
}

/// The host users sign in at, shown on the page (a visible check against look-alike
/// pages): the issuer's host and port.
fn issuer_host(issuer: &str) -> String {
    url::Url::parse(issuer)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| issuer.to_owned())
}

/// How long a sign-in lasts: the client's own line, else one from the refresh policy.
fn session_line(svc: &TokenService, client: &ClientRecord) -> String {
    if let Some(note) = &client.session_note {
        return note.clone();
    }
    let days = |secs: i64| match secs / 86_400 {
        0 => format!("{} hours", (secs / 3_600).max(1)),
        1 => "1 day".to_owned(),
        d => format!("{d} days"),
    };
    format!(
        "You stay signed in on this device for up to {}; after {} without use you sign in again.",
        days(svc.refresh_policy.absolute_secs),
        days(svc.refresh_policy.idle_secs)
    )
}

/// The CSP source expression (CSP3 §2.3.1) that lets the login form's redirect reach
/// `redirect_uri`, a URI already matched against the client's registration (which never
/// holds `javascript:`, `data:` or another scheme that runs or embeds content):
/// - `http(s)` with a host name or IPv4 address: exactly its origin, port included (for a
///   loopback redirect that is the port the app listens on for this one request);
/// - an IPv6 literal, which CSP's host grammar cannot express: the scheme (`http:`);
/// - a private-use scheme (RFC 8252 §7.1, `com.example.app:/cb`): that scheme.
///
/// Anything that cannot be written as a source yields `'none'`, which adds nothing.
fn form_action_source(redirect_uri: &str) -> String {
    let Ok(url) = url::Url::parse(redirect_uri) else {
        return "'none'".to_owned();
    };
    // The url crate already holds the scheme to RFC 3986's grammar, which is CSP's too;
    // checked again because the value lands in a header.
    let scheme = url.scheme();
    let scheme_ok = scheme
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || scheme.is_empty() {
        return "'none'".to_owned();
    }
    match (scheme, url.host()) {
        ("http" | "https", Some(url::Host::Domain(host))) => {
            let host_ok = host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            match url.port_or_known_default() {
                Some(port) if host_ok => format!("{scheme}://{host}:{port}"),
                _ => "'none'".to_owned(),
            }
        }
        ("http" | "https", Some(url::Host::Ipv4(ip))) => match url.port_or_known_default() {
            Some(port) => format!("{scheme}://{ip}:{port}"),
            None => "'none'".to_owned(),
        },
        // IPv6 loopback (`http://[::1]:port/…`) and private-use schemes.
        _ => format!("{scheme}:"),
    }
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>keygate</title></head>\
<body style=\"font-family:system-ui,sans-serif;padding:1.5rem\"><h1>Cannot sign in</h1><p>{}</p></body></html>",
        html_escape(message)
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Page(status, message) => error_page(status, message),
        Refusal::Redirect(to) => (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response(),
    }
}

pub(super) async fn show(
    State(s): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let Ok(svc) = service(&s) else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is unavailable right now. Try again later.",
        );
    };
    let mut seen = std::collections::HashSet::new();
    if q.iter().any(|(k, _)| !seen.insert(k.clone())) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "A parameter of the request is repeated.",
        );
    }
    let get = |k: &str| {
        q.iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let req = match validate(&svc, &get).await {
        Ok(r) => r,
        Err(r) => return refusal(r),
    };
    let cookie = OpaqueToken::generate(TokenKind::Other);
    render(
        Page {
            svc: &svc,
            req: &req,
            params: &get,
            csrf_cookie: cookie.value().expose_secret().to_owned(),
            message: None,
            totp_ticket: None,
            enrol: None,
            username: "",
        },
        StatusCode::OK,
        true,
    )
}

pub(super) async fn submit(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(svc) = service(&s) else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is unavailable right now. Try again later.",
        );
    };
    let Ok(form) = Form::parse(&body) else {
        return error_page(StatusCode::BAD_REQUEST, "A field of the form is repeated.");
    };
    let get = |k: &str| form.get(k).map(str::to_owned);
    let req = match validate(&svc, &get).await {
        Ok(r) => r,
        Err(r) => return refusal(r),
    };
    // CSRF: the form's token must be the MAC of this browser's cookie.
    let Some(cookie) = cookie_value(&headers, CSRF_COOKIE) else {
        return error_page(
            StatusCode::FORBIDDEN,
            "Your sign-in form expired. Go back to the app and start again.",
        );
    };
    let expected = mac(&svc.csrf_key, &[&cookie]);
    let presented = form.get("csrf").unwrap_or_default();
    if !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Your sign-in form expired. Go back to the app and start again.",
        );
    }
    let username = form.get("username").unwrap_or_default().trim().to_owned();
    let page = |message: &'static str, ticket: Option<String>| Page {
        svc: &svc,
        req: &req,
        params: &get,
        csrf_cookie: cookie.clone(),
        message: Some(message),
        totp_ticket: ticket,
        enrol: None,
        username: &username,
    };
    if let Some(wait) = svc.throttle.retry_after(&username, peer.ip(), unix_now()) {
        let mut resp = render(
            page("Too many attempts. Wait a moment, then try again.", None),
            StatusCode::TOO_MANY_REQUESTS,
            false,
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let user = match svc.store.user_by_name(&username).await {
        Ok(u) => u.filter(|u| u.disabled_ms.is_none()),
        Err(e) => {
            tracing::error!(error = %e, "login: store unavailable");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is unavailable right now. Try again later.",
            );
        }
    };
    let outcome = match (form.get("ticket"), form.get("enrol")) {
        (None, _) => password_step(&svc, user.as_ref(), &form, &req).await,
        (Some(ticket), Some(sealed)) => {
            enrol_step(&svc, user.as_ref(), ticket, sealed, &form, &req).await
        }
        (Some(ticket), None) => totp_step(&svc, user.as_ref(), ticket, &form, &req).await,
    };
    match outcome {
        Step::Failed(reason) => {
            svc.throttle.record(&username, peer.ip(), false, unix_now());
            svc.signal(keygate_monitor::Signal::LoginFailed {
                ip: peer.ip(),
                client: keygate_auth::ids::ClientId::parse(&req.client.id).ok(),
                user: user
                    .as_ref()
                    .and_then(|u| keygate_auth::ids::UserId::parse(&u.id).ok()),
            });
            audit_login(&svc, &username, &req, Outcome::Failure, reason).await;
            render(
                page("The username, password or code is not right.", None),
                StatusCode::UNAUTHORIZED,
                false,
            )
        }
        Step::NeedTotp(ticket) => render(page(TOTP_PROMPT, Some(ticket)), StatusCode::OK, false),
        Step::NeedEnrol(e) => render(
            Page {
                enrol: Some(&e),
                ..page(ENROL_PROMPT, None)
            },
            StatusCode::OK,
            false,
        ),
        Step::EnrolAgain(e, reason) => {
            svc.throttle.record(&username, peer.ip(), false, unix_now());
            audit_login(&svc, &username, &req, Outcome::Failure, reason).await;
            render(
                Page {
                    enrol: Some(&e),
                    ..page(
                        "That code is not right. Check the key in the app and try again.",
                        None,
                    )
                },
                StatusCode::UNAUTHORIZED,
                false,
            )
        }
        Step::SignedIn(user) => {
            svc.throttle.record(&username, peer.ip(), true, unix_now());
            issue_code(&svc, &user, &req).await
        }
    }
}

enum Step {
    Failed(&'static str),
    NeedTotp(String),
    /// `tokens.mfa = "required"` and the user has no TOTP yet: offer a seed.
    NeedEnrol(Enrolment),
    /// A wrong code for the seed offered: offer the same seed again.
    EnrolAgain(Enrolment, &'static str),
    SignedIn(UserRecord),
}

async fn password_step(
    svc: &Arc<TokenService>,
    user: Option<&UserRecord>,
    form: &Form,
    req: &AuthzRequest,
) -> Step {
    let password = SecretString::from(form.get("password").unwrap_or_default().to_owned());
    let stored = user.and_then(|u| u.password_hash.clone());
    let hasher_owner = svc.clone();
    // Argon2id takes tens of milliseconds of CPU: off the async workers.
    let valid = tokio::task::spawn_blocking(move || match stored {
        // Same work as a real check, so timing does not tell whether the user exists.
        None => {
            let _ = hasher_owner.hasher.verify_dummy(&password);
            false
        }
        Some(h) => matches!(
            hasher_owner
                .hasher
                .verify(&password, &StoredPasswordHash::from_phc(h)),
            PasswordCheck::Valid { .. }
        ),
    })
    .await
    .unwrap_or(false);
    match (user, valid) {
        (None, _) => Step::Failed("unknown user or no password"),
        (Some(_), false) => Step::Failed("wrong password"),
        (Some(user), true) if user.totp_sealed.is_some() => {
            Step::NeedTotp(ticket_for(svc, &user.id, req, unix_now().0 + TICKET_SECS))
        }
        (Some(user), true) if svc.settings.mfa_required => match offer_enrolment(svc, user, req) {
            Some(e) => Step::NeedEnrol(e),
            None => Step::Failed("totp enrolment unavailable"),
        },
        (Some(user), true) => Step::SignedIn(user.clone()),
    }
}

/// `expiry.mac` binding the passed password step to this user and request.
fn ticket_for(svc: &TokenService, user_id: &str, req: &AuthzRequest, expiry: i64) -> String {
    let expiry = expiry.to_string();
    let tag = mac(
        &svc.csrf_key,
        &[
            "totp-ticket",
            user_id,
            &req.client.id,
            &req.redirect_uri,
            req.challenge.as_str(),
            &expiry,
        ],
    );
    format!("{expiry}.{tag}")
}

/// `expiry.mac` binding an offered seed (its sealed form) to this user and request.
fn enrol_ticket_for(
    svc: &TokenService,
    user_id: &str,
    req: &AuthzRequest,
    sealed: &str,
    expiry: i64,
) -> String {
    let expiry = expiry.to_string();
    let tag = mac(
        &svc.csrf_key,
        &[
            "totp-enrol-ticket",
            user_id,
            &req.client.id,
            &req.redirect_uri,
            req.challenge.as_str(),
            sealed,
            &expiry,
        ],
    );
    format!("{expiry}.{tag}")
}

fn offer_enrolment(svc: &TokenService, user: &UserRecord, req: &AuthzRequest) -> Option<Enrolment> {
    let seed = TotpSeed::generate();
    let sealed = svc
        .vault
        .seal_internal(ENROL_CONTEXT, &user.id, seed.expose_bytes())
        .ok()?;
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
    Some(Enrolment {
        ticket: enrol_ticket_for(svc, &user.id, req, &sealed, unix_now().0 + TICKET_SECS),
        sealed,
        seed,
        account: user.name.clone(),
    })
}

/// The enrolment's second half: the offered seed, unsealed, must produce the code
/// entered; then it becomes the user's TOTP seed (audited) and the code is used up.
async fn enrol_step(
    svc: &TokenService,
    user: Option<&UserRecord>,
    ticket: &str,
    sealed: &str,
    form: &Form,
    req: &AuthzRequest,
) -> Step {
    let Some(user) = user else {
        return Step::Failed("unknown user");
    };
    if !svc.settings.mfa_required {
        return Step::Failed("enrolment not offered");
    }
    if user.totp_sealed.is_some() {
        // Enrolled meanwhile (elsewhere, or by an admin): never replace a seed here.
        return Step::Failed("already enrolled");
    }
    let Some(exp) = ticket
        .split_once('.')
        .and_then(|(e, _)| e.parse::<i64>().ok())
    else {
        return Step::Failed("bad ticket");
    };
    let expected = enrol_ticket_for(svc, &user.id, req, sealed, exp);
    if !bool::from(expected.as_bytes().ct_eq(ticket.as_bytes())) || unix_now().0 > exp {
        return Step::Failed("bad or expired ticket");
    }
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sealed) else {
        return Step::Failed("bad ticket");
    };
    let Ok(seed) = svc.vault.open_internal(ENROL_CONTEXT, &user.id, &bytes) else {
        return Step::Failed("totp seed unreadable");
    };
    let seed = TotpSeed::from_bytes(seed.to_vec());
    let again = |reason| {
        Step::EnrolAgain(
            Enrolment {
                ticket: ticket.to_owned(),
                sealed: sealed.to_owned(),
                seed: TotpSeed::from_bytes(seed.expose_bytes().to_vec()),
                account: user.name.clone(),
            },
            reason,
        )
    };
    let Some(step) = Totp::default().verify(
        &seed,
        form.get("totp").unwrap_or_default(),
        unix_now(),
        None,
    ) else {
        return again("wrong totp code at enrolment");
    };
    let Ok(stored) = svc
        .vault
        .seal_internal("totp-seed", &user.id, seed.expose_bytes())
    else {
        return Step::Failed("totp enrolment unavailable");
    };
    let audit = AuditEvent::new(
        format!("user:{}", user.name),
        "user.mfa_enrol",
        Outcome::Success,
    )
    .target(user.name.clone())
    .detail("via", "login page")
    .detail("client", req.client.id.clone());
    if svc
        .store
        .set_user_totp(&user.id, stored, audit, now_ms())
        .await
        .is_err()
    {
        return Step::Failed("totp enrolment not stored");
    }
    match svc.store.consume_totp_step(&user.id, step as i64).await {
        Ok(true) => Step::SignedIn(user.clone()),
        _ => Step::Failed("totp code already used"),
    }
}

async fn totp_step(
    svc: &TokenService,
    user: Option<&UserRecord>,
    ticket: &str,
    form: &Form,
    req: &AuthzRequest,
) -> Step {
    let Some(user) = user else {
        return Step::Failed("unknown user");
    };
    let Some((expiry, _)) = ticket.split_once('.') else {
        return Step::Failed("bad ticket");
    };
    let Ok(exp) = expiry.parse::<i64>() else {
        return Step::Failed("bad ticket");
    };
    let expected = ticket_for(svc, &user.id, req, exp);
    if !bool::from(expected.as_bytes().ct_eq(ticket.as_bytes())) || unix_now().0 > exp {
        return Step::Failed("bad or expired ticket");
    }
    let Some(sealed) = &user.totp_sealed else {
        return Step::Failed("no totp enrolled");
    };
    let Ok(seed) = svc.vault.open_internal("totp-seed", &user.id, sealed) else {
        return Step::Failed("totp seed unreadable");
    };
    let seed = TotpSeed::from_bytes(seed.to_vec());
    let last = user.totp_last_step.and_then(|s| u64::try_from(s).ok());
    let Some(step) = Totp::default().verify(
        &seed,
        form.get("totp").unwrap_or_default(),
        unix_now(),
        last,
    ) else {
        return Step::Failed("wrong totp code");
    };
    // Each code once, even under concurrent submissions: the store's conditional update.
    match svc.store.consume_totp_step(&user.id, step as i64).await {
        Ok(true) => Step::SignedIn(user.clone()),
        _ => Step::Failed("totp code already used"),
    }
}

async fn audit_login(
    svc: &TokenService,
    username: &str,
    req: &AuthzRequest,
    outcome: Outcome,
    reason: &str,
) {
    let event = AuditEvent::new("anonymous", "login", outcome)
        .target(username.to_owned())
        .detail("client", req.client.id.clone())
        .detail("reason", reason);
    if let Err(e) = svc.store.append_audit(event, now_ms()).await {
        tracing::error!(error = %e, "login audit failed");
    }
}

async fn issue_code(svc: &TokenService, user: &UserRecord, req: &AuthzRequest) -> Response {
    let code = OpaqueToken::generate(TokenKind::AuthorizationCode);
    let scopes: Vec<&str> = req.scopes.iter().map(|s| s.as_str()).collect();
    // Never grant more than the user may have.
    let user_scopes = ScopeSet::parse(&user.scopes).unwrap_or_else(|_| ScopeSet::from_scopes([]));
    let granted = req.scopes.intersection(&user_scopes);
    if granted.is_empty() && !req.scopes.is_empty() {
        let mut params = vec![("error", "access_denied"), ("iss", svc.issuer.as_str())];
        if let Some(s) = &req.state {
            params.push(("state", s));
        }
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, redirect_with(&req.redirect_uri, &params))],
        )
            .into_response();
    }
    let granted_text: Vec<&str> = granted.iter().map(|s| s.as_str()).collect();
    let now = now_ms();
    let record = CodeRecord {
        hash: code.hash().as_bytes().to_vec(),
        client_id: req.client.id.clone(),
        user_id: user.id.clone(),
        redirect_uri: req.redirect_uri.clone(),
        scopes: granted_text.join(" "),
        challenge: req.challenge.as_str().to_owned(),
        dpop_jkt: req.dpop_jkt.clone(),
        expires_ms: now + CODE_TTL_SECS * 1000,
        used_ms: None,
        family_id: None,
    };
    let audit = AuditEvent::new(format!("user:{}", user.id), "login", Outcome::Success)
        .target(user.name.clone())
        .detail("client", req.client.id.clone())
        .detail("requested_scopes", scopes.join(" "));
    if let Err(e) = svc.store.insert_code(record, audit, now).await {
        tracing::error!(error = %e, "cannot store an authorization code");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is unavailable right now. Try again later.",
        );
    }
    let mut params = vec![
        ("code", code.value().expose_secret()),
        ("iss", svc.issuer.as_str()),
    ];
    if let Some(s) = &req.state {
        params.push(("state", s));
    }
    let to = redirect_with(&req.redirect_uri, &params);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, to),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::form_action_source;

    #[test]
    fn form_action_names_exactly_the_redirect_target() {
        for (uri, source) in [
            ("http://127.0.0.1:53211/callback", "http://127.0.0.1:53211"),
            (
                "https://app.example.com/cb?x=1",
                "https://app.example.com:443",
            ),
            ("http://localhost:8000/cb", "http://localhost:8000"),
            ("com.example.app:/oauth/callback", "com.example.app:"),
            ("com.example.app://oauth/callback", "com.example.app:"),
            ("http://[::1]:8000/cb", "http:"),
            ("not a uri", "'none'"),
        ] {
            assert_eq!(form_action_source(uri), source, "{uri}");
        }
    }
}
