//! The operator console at `/console/`: server-rendered pages for the people who run
//! keygate, signed in with a console admin account (password and TOTP, made by `keygate
//! admin add`; admin tokens stay for the CLI).
//!
//! - Pages are rendered with `maud` (escaped by construction); the one stylesheet and the
//!   one script are embedded in the binary. The content security policy allows nothing
//!   inline and nothing from elsewhere.
//! - A session is a cookie `__Host-keygate-console` (`Secure; HttpOnly; SameSite=Strict`,
//!   256 random bits) kept in the store as its SHA-256, so every replica knows it. It ends
//!   after [`IDLE_MS`] without a page, or [`ABSOLUTE_MS`] in all.
//! - Every form carries a CSRF token derived from the session cookie (HMAC under the
//!   token service's form key); the sign-in form one derived from a pre-sign-in cookie. A
//!   post without the right token changes nothing, says so, and is audited.
//! - A `read-only` admin sees every page and changes nothing; a refused action is audited.
//! - Actions go through the same store and service calls as the admin API, audited with
//!   the actor `console:NAME`.

mod pages;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keygate_audit::{AuditEvent, Outcome};
use keygate_auth::opaque::{OpaqueToken, TokenHash, TokenKind};
use keygate_auth::password::{PasswordCheck, StoredPasswordHash};
use keygate_auth::totp::{Totp, TotpSeed};
use keygate_store::console::ROLE_READ_ONLY;
use keygate_store::{ConsoleAdminRecord, ConsoleSessionRecord};
use keygate_vault::now_ms;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::admin_guard::{Failure, Gate, source_of};
use crate::oauth::TokenService;
use crate::oauth::endpoints::Form;
use crate::oauth::login::{cookie_value, mac};

/// The session cookie. `__Host-`: only ever set by this host, over TLS, for path `/`.
pub const SESSION_COOKIE: &str = "__Host-keygate-console";
/// The pre-sign-in cookie the sign-in form's CSRF token is bound to.
const LOGIN_COOKIE: &str = "__Host-keygate-console-login";
/// A session ends after this long without a page.
pub const IDLE_MS: i64 = 15 * 60 * 1000;
/// A session ends this long after sign-in, whatever the activity.
pub const ABSOLUTE_MS: i64 = 8 * 60 * 60 * 1000;
/// The idle clock is written at most this often.
const TOUCH_EVERY_MS: i64 = 30 * 1000;
/// Seal context of a console admin's TOTP seed.
pub const TOTP_CONTEXT: &str = "console-totp-seed";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { see_other("/console/") }))
        .route(
            "/console/",
            get(|| async { see_other("/console/overview") }),
        )
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/overview", get(overview))
        .route("/console/secrets", get(secrets))
        .route("/console/secrets/{name}/rotate", post(rotate_secret))
        .route("/console/secrets/{name}/reveal", post(reveal_secret))
        .route("/console/routes", get(routes))
        .route("/console/clients", get(clients))
        .route("/console/sessions", get(sessions))
        .route("/console/sessions/{id}/revoke", post(revoke_session))
        .route("/console/users/{name}/disable", post(disable_user))
        .route("/console/audit", get(audit_search))
        .route("/console/alerts", get(alerts))
        .route("/console/posture", get(posture))
        .route("/console/alerts/{id}/ack", post(ack_alert))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
}

/// 303 See Other to `to` (after a post, and for signed-out pages).
fn see_other(to: &str) -> Response {
    axum::response::Redirect::to(to).into_response()
}

/// A page: HTML, the console's policy, never cached.
fn html(status: StatusCode, markup: maud::Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn cookie(name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}"
    ))
    .unwrap_or(HeaderValue::from_static(""))
}

/// A fresh cookie value: an opaque token (256 random bits), stored only as its
/// [`TokenHash`].
fn fresh_cookie() -> OpaqueToken {
    OpaqueToken::generate(TokenKind::Other)
}

fn cookie_hash(value: &str) -> Vec<u8> {
    TokenHash::of(value).as_bytes().to_vec()
}

fn peer(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
}

/// The token service holds the password hasher, the vault and the form key the console
/// needs; it is absent while the vault is sealed.
fn tokens(s: &AppState) -> Option<Arc<TokenService>> {
    s.tokens.clone()
}

fn sealed_page() -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::message_page(
            "Console unavailable",
            "The vault is sealed: keygate started without its master key (or with the wrong one). The console opens once it restarts with the right key.",
        ),
    )
}

/// Writes an audit entry; a console action whose entry cannot be written fails (S23), so
/// callers of state-changing actions use the store's audited writes instead.
async fn audit(s: &AppState, event: AuditEvent) {
    if let Err(e) = s.store.append_audit(event, now_ms()).await {
        tracing::error!(error = %e, "console audit entry could not be written");
    }
}

// ------------------------------------------------------------------------------------
// The signed-in operator
// ------------------------------------------------------------------------------------

/// A console admin with a live session; pages and actions take it as an argument, so
/// none can run signed out.
pub struct Operator {
    pub admin: ConsoleAdminRecord,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    session_hash: Vec<u8>,
}

impl Operator {
    pub fn actor(&self) -> String {
        format!("console:{}", self.admin.name)
    }

    pub fn read_only(&self) -> bool {
        self.admin.role == ROLE_READ_ONLY
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        let svc = tokens(s).ok_or_else(sealed_page)?;
        let Some(value) = cookie_value(&parts.headers, SESSION_COOKIE) else {
            return Err(see_other("/console/login"));
        };
        let session_hash = cookie_hash(&value);
        let now = now_ms();
        let ended = || {
            let mut r = see_other("/console/login?ended=1");
            r.headers_mut()
                .insert(header::SET_COOKIE, cookie(SESSION_COOKIE, "", Some(0)));
            r
        };
        let session = match s.store.console_session(&session_hash).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(ended()),
            Err(e) => {
                tracing::error!(error = %e, "console session lookup failed");
                return Err(html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::message_page(
                        "Console unavailable",
                        "keygate's store does not answer; try again shortly.",
                    ),
                ));
            }
        };
        let admin = match s.store.console_admin_by_id(&session.admin_id).await {
            Ok(Some(a)) if a.disabled_ms.is_none() => Some(a),
            _ => None,
        };
        let why = session_over(&session, admin.is_some(), now);
        if let Some(why) = why {
            let event = AuditEvent::new("system", "console.session_end", Outcome::Success)
                .detail("admin", session.admin_id.clone())
                .detail("reason", why);
            if let Err(e) = s
                .store
                .end_console_session(&session_hash, Some(event), now)
                .await
            {
                tracing::error!(error = %e, "ending an expired console session failed");
            }
            return Err(ended());
        }
        let Some(admin) = admin else {
            return Err(ended());
        };
        if now - session.last_seen_ms >= TOUCH_EVERY_MS {
            if let Err(e) = s.store.touch_console_session(&session_hash, now).await {
                tracing::warn!(error = %e, "console session idle clock not moved");
            }
        }
        Ok(Operator {
            csrf: mac(&svc.csrf_key, &["console-csrf", &value]),
            admin,
            session_hash,
        })
    }
}

/// Why a session may no longer be used at `now`, if it may not: past its absolute end,
/// idle too long, or its admin gone or disabled.
fn session_over(session: &ConsoleSessionRecord, admin_ok: bool, now: i64) -> Option<&'static str> {
    if now >= session.expires_ms {
        Some("absolute")
    } else if now >= session.last_seen_ms.saturating_add(IDLE_MS) {
        Some("idle")
    } else if !admin_ok {
        Some("admin gone")
    } else {
        None
    }
}

/// A posted form, read by the login page's parser ([`Form`]). A form that repeats a field
/// is refused whole: it then has no fields, so its CSRF check fails and nothing is done.
struct FormBody(Option<Form>);

impl FormBody {
    fn parse(body: &[u8]) -> Self {
        Self(Form::parse(body).ok())
    }

    fn get(&self, name: &str) -> &str {
        self.0
            .as_ref()
            .and_then(|f| f.get(name))
            .unwrap_or_default()
    }
}

/// The checks every state-changing form passes: the session's CSRF token, then the
/// operator's right to change things. A refusal changes nothing, is audited and says why.
async fn may_act(s: &AppState, op: &Operator, form: &FormBody, action: &str) -> Option<Response> {
    let refusal = if !bool::from(form.get("csrf").as_bytes().ct_eq(op.csrf.as_bytes())) {
        (
            "csrf",
            "Not done",
            "This form did not come from this console session (its security token is missing or wrong), so nothing was changed. Reload the page and try again.",
        )
    } else if op.read_only() {
        (
            "read-only",
            "Not allowed",
            "Your console account is read-only: it can see every page but change nothing. Nothing was changed.",
        )
    } else {
        return None;
    };
    let (reason, title, text) = refusal;
    audit(
        s,
        AuditEvent::new(op.actor(), action, Outcome::Denied).detail("reason", reason),
    )
    .await;
    Some(html(
        StatusCode::FORBIDDEN,
        pages::refusal_page(op, title, text),
    ))
}

// ------------------------------------------------------------------------------------
// Sign-in and sign-out
// ------------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct LoginQuery {
    ended: Option<String>,
}

async fn login_page(State(s): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let Some(svc) = tokens(&s) else {
        return sealed_page();
    };
    let note = q.ended.as_ref().map(|_| {
        "Your console session ended (15 minutes without activity, or 8 hours in all). Sign in again."
    });
    fresh_login_form(&svc, StatusCode::OK, note, "")
}

fn fresh_login_form(
    svc: &TokenService,
    status: StatusCode,
    message: Option<&str>,
    name: &str,
) -> Response {
    let pre = fresh_cookie();
    let pre = pre.value().expose_secret();
    let csrf = mac(&svc.csrf_key, &["console-login", pre]);
    let mut r = html(status, pages::login_page(&csrf, message, name));
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie(LOGIN_COOKIE, pre, Some(600)));
    r
}

async fn login(State(s): State<AppState>, parts: Parts, body: Bytes) -> Response {
    let Some(svc) = tokens(&s) else {
        return sealed_page();
    };
    let form = FormBody::parse(&body);
    let name = form.get("name").trim().to_owned();
    let source = peer(&parts);
    let now = now_ms();
    if let Gate::Refuse(wait) = s.admin_guard.gate(source, now) {
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::message_page(
                "Too many attempts",
                "Too many failed sign-ins from this address. Wait a minute and try again.",
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    let pre = cookie_value(&parts.headers, LOGIN_COOKIE).unwrap_or_default();
    let expected = mac(&svc.csrf_key, &["console-login", &pre]);
    if pre.is_empty() || !bool::from(form.get("csrf").as_bytes().ct_eq(expected.as_bytes())) {
        audit(
            &s,
            AuditEvent::new("anonymous", "console.login", Outcome::Denied)
                .target(name.clone())
                .detail("reason", "csrf")
                .detail("source", source_of(source).to_string()),
        )
        .await;
        return fresh_login_form(
            &svc,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired or did not come from this page. Try again."),
            &name,
        );
    }
    match check_credentials(&s, &svc, &name, &form).await {
        Ok(admin) => start_session(&s, admin, source).await,
        Err(reason) => {
            if let Failure::Audit(earlier) = s.admin_guard.failed(source, now) {
                for b in &earlier {
                    audit(&s, b.event()).await;
                }
                audit(
                    &s,
                    AuditEvent::new("anonymous", "console.login", Outcome::Denied)
                        .target(name.clone())
                        .detail("reason", reason)
                        .detail("source", source_of(source).to_string()),
                )
                .await;
            }
            tracing::warn!(reason, "console sign-in refused");
            fresh_login_form(
                &svc,
                StatusCode::UNAUTHORIZED,
                Some("The name, password or code is not right."),
                &name,
            )
        }
    }
}

async fn check_credentials(
    s: &AppState,
    svc: &Arc<TokenService>,
    name: &str,
    form: &FormBody,
) -> Result<ConsoleAdminRecord, &'static str> {
    let admin = s
        .store
        .console_admin_by_name(name)
        .await
        .map_err(|_| "store unavailable")?;
    let password = SecretString::from(form.get("password").to_owned());
    let stored = admin.as_ref().map(|a| a.password_hash.clone());
    let owner = Arc::clone(svc);
    // Argon2id off the async workers; the same work whether or not the name exists.
    let valid = tokio::task::spawn_blocking(move || match stored {
        None => {
            let _ = owner.hasher.verify_dummy(&password);
            false
        }
        Some(h) => matches!(
            owner
                .hasher
                .verify(&password, &StoredPasswordHash::from_phc(h)),
            PasswordCheck::Valid { .. }
        ),
    })
    .await
    .unwrap_or(false);
    let admin = match (admin, valid) {
        (None, _) => return Err("unknown admin"),
        (Some(_), false) => return Err("wrong password"),
        (Some(a), true) if a.disabled_ms.is_some() => return Err("admin disabled"),
        (Some(a), true) => a,
    };
    let seed = svc
        .vault
        .open_internal(TOTP_CONTEXT, &admin.id, &admin.totp_sealed)
        .map_err(|_| "totp seed unreadable")?;
    let seed = TotpSeed::from_bytes(seed.to_vec());
    let last = admin.totp_last_step.and_then(|s| u64::try_from(s).ok());
    let step = Totp::default()
        .verify(
            &seed,
            form.get("code").trim(),
            crate::oauth::unix_now(),
            last,
        )
        .ok_or("wrong totp code")?;
    let step = i64::try_from(step).map_err(|_| "wrong totp code")?;
    match s.store.consume_console_totp_step(&admin.id, step).await {
        Ok(true) => Ok(admin),
        Ok(false) => Err("totp code already used"),
        Err(_) => Err("store unavailable"),
    }
}

async fn start_session(s: &AppState, admin: ConsoleAdminRecord, source: IpAddr) -> Response {
    let token = fresh_cookie();
    let value = token.value().expose_secret();
    let now = now_ms();
    let record = ConsoleSessionRecord {
        id_hash: token.hash().as_bytes().to_vec(),
        admin_id: admin.id.clone(),
        created_ms: now,
        last_seen_ms: now,
        expires_ms: now + ABSOLUTE_MS,
    };
    let event = AuditEvent::new(
        format!("console:{}", admin.name),
        "console.login",
        Outcome::Success,
    )
    .detail("role", admin.role.clone())
    .detail("source", source_of(source).to_string());
    if let Err(e) = s.store.create_console_session(record, event, now).await {
        tracing::error!(error = %e, "console session could not be stored");
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message_page(
                "Console unavailable",
                "The sign-in could not be recorded (keygate's store does not answer), so it was refused. Try again shortly.",
            ),
        );
    }
    tracing::info!(admin = %admin.name, "console sign-in");
    let mut r = see_other("/console/overview");
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, cookie(SESSION_COOKIE, value, None));
    h.append(header::SET_COOKIE, cookie(LOGIN_COOKIE, "", Some(0)));
    r
}

async fn logout(State(s): State<AppState>, op: Operator, body: Bytes) -> Response {
    let form = FormBody::parse(&body);
    // Signing out needs the token too (a forged sign-out is a nuisance), not write rights.
    if !bool::from(form.get("csrf").as_bytes().ct_eq(op.csrf.as_bytes())) {
        audit(
            &s,
            AuditEvent::new(op.actor(), "console.logout", Outcome::Denied).detail("reason", "csrf"),
        )
        .await;
        return html(
            StatusCode::FORBIDDEN,
            pages::refusal_page(
                &op,
                "Not signed out",
                "This form did not come from this console session. Reload the page and try again.",
            ),
        );
    }
    let event = AuditEvent::new(op.actor(), "console.logout", Outcome::Success);
    if let Err(e) = s
        .store
        .end_console_session(&op.session_hash, Some(event), now_ms())
        .await
    {
        tracing::error!(error = %e, "console sign-out could not be recorded");
    }
    let mut r = see_other("/console/login");
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie(SESSION_COOKIE, "", Some(0)));
    r
}

// ------------------------------------------------------------------------------------
// Pages
// ------------------------------------------------------------------------------------

fn unavailable(op: &Operator, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console page could not be built");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::refusal_page(
            op,
            "Unavailable",
            "keygate's store does not answer; this page could not be built. Try again shortly.",
        ),
    )
}

async fn overview(State(s): State<AppState>, op: Operator) -> Response {
    let now = now_ms();
    let minute_now = now / 60_000;
    let usage = match s
        .store
        .usage(minute_now - 24 * 60, None, None, 100_000)
        .await
    {
        Ok(u) => u,
        Err(e) => return unavailable(&op, &e),
    };
    let alerts = match s.store.list_alerts(true, 20).await {
        Ok(a) => a,
        Err(e) => return unavailable(&op, &e),
    };
    let users = match s.store.list_users().await {
        Ok(u) => u,
        Err(e) => return unavailable(&op, &e),
    };
    let stats = pages::UsageStats::from_rows(&usage, minute_now);
    html(
        StatusCode::OK,
        pages::overview_page(&op, &stats, &alerts, &users),
    )
}

/// `?done=…`: what the action that redirected here did.
#[derive(serde::Deserialize)]
struct Done {
    done: Option<String>,
}

async fn secrets(State(s): State<AppState>, op: Operator, Query(q): Query<Done>) -> Response {
    let secrets = match s.vault.list().await {
        Ok(list) => list,
        Err(e) => return unavailable(&op, &e),
    };
    let schedules = match s.store.schedules().await {
        Ok(list) => list,
        Err(e) => return unavailable(&op, &e),
    };
    html(
        StatusCode::OK,
        pages::secrets_page(&op, &secrets, &schedules, now_ms(), q.done.as_deref()),
    )
}

/// A post about one secret: the form, having passed [`may_act`], and the secret's name.
async fn secret_action(
    s: &AppState,
    op: &Operator,
    raw: &str,
    body: &Bytes,
    action: &str,
) -> Result<(keygate_vault::SecretName, FormBody), Response> {
    let form = FormBody::parse(body);
    if let Some(refused) = may_act(s, op, &form, action).await {
        return Err(refused);
    }
    match keygate_vault::SecretName::parse(raw) {
        Ok(name) => Ok((name, form)),
        Err(_) => Err(html(
            StatusCode::BAD_REQUEST,
            pages::refusal_page(
                op,
                "Not done",
                "That is not a secret's name; nothing was changed.",
            ),
        )),
    }
}

async fn rotate_secret(
    State(s): State<AppState>,
    op: Operator,
    crate::admin::Segment(raw): crate::admin::Segment,
    body: Bytes,
) -> Response {
    let (name, _) = match secret_action(&s, &op, &raw, &body, "secret.rotate_now").await {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    match s.rotation.rotate_now(&name).await {
        Ok(version) => {
            // The rotation's own entry names the hook; this one, who asked for it.
            audit(
                &s,
                AuditEvent::new(op.actor(), "secret.rotate_now", Outcome::Success)
                    .target(name.as_str())
                    .detail("version", version),
            )
            .await;
            see_other("/console/secrets?done=rotated")
        }
        Err(e) => {
            let answer = crate::error::ApiError::from(e);
            audit(
                &s,
                AuditEvent::new(op.actor(), "secret.rotate_now", Outcome::Failure)
                    .target(name.as_str())
                    .detail("reason", answer.code),
            )
            .await;
            html(
                answer.status,
                pages::refusal_page(&op, "Not rotated", &answer.message),
            )
        }
    }
}

/// Reveal once: the first post asks to confirm; the second, with `confirm=yes`, shows
/// the current value on a page that is never cached and is not reachable again by a
/// link or a reload (a post). The read is audited by the vault, with the console actor.
async fn reveal_secret(
    State(s): State<AppState>,
    op: Operator,
    crate::admin::Segment(raw): crate::admin::Segment,
    body: Bytes,
) -> Response {
    let (name, form) = match secret_action(&s, &op, &raw, &body, "secret.reveal").await {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    if form.get("confirm") != "yes" {
        return html(
            StatusCode::OK,
            pages::reveal_confirm_page(&op, name.as_str()),
        );
    }
    match s.vault.get(&name, None, &op.actor()).await {
        Ok((version, value)) => {
            let mut r = html(
                StatusCode::OK,
                pages::revealed_page(&op, name.as_str(), version, &value),
            );
            // Not in the history either: a back button shows nothing.
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, max-age=0"),
            );
            r
        }
        Err(e) => {
            let answer = crate::error::ApiError::from(e);
            html(
                answer.status,
                pages::refusal_page(&op, "Not revealed", &answer.message),
            )
        }
    }
}

async fn routes(State(s): State<AppState>, op: Operator) -> Response {
    let Some(px) = s.proxy.as_deref() else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::refusal_page(
                &op,
                "Unavailable",
                "The proxy is unavailable while the vault is sealed.",
            ),
        );
    };
    let rows: Vec<pages::RouteRow> = px
        .routes()
        .iter()
        .map(|r| pages::RouteRow {
            info: crate::admin::routes::route_info(px, r),
            limits: px.raw(r.name().as_str()).and_then(|(raw, _)| raw.limits),
        })
        .collect();
    html(StatusCode::OK, pages::routes_page(&op, &rows))
}

async fn clients(State(s): State<AppState>, op: Operator) -> Response {
    match s.store.list_clients().await {
        Ok(list) => {
            // Each client's effective policy: its own, else `tokens.dpop`.
            let rows: Vec<(keygate_store::ClientRecord, bool)> = list
                .into_iter()
                .map(|c| {
                    let required = s.tokens.as_ref().is_none_or(|t| t.dpop_required_for(&c));
                    (c, required)
                })
                .collect();
            html(StatusCode::OK, pages::clients_page(&op, &rows))
        }
        Err(e) => unavailable(&op, &e),
    }
}

async fn sessions(State(s): State<AppState>, op: Operator, Query(q): Query<Done>) -> Response {
    let users = match s.store.list_users().await {
        Ok(u) => u,
        Err(e) => return unavailable(&op, &e),
    };
    let families = match s.store.list_families(None, false).await {
        Ok(f) => f,
        Err(e) => return unavailable(&op, &e),
    };
    html(
        StatusCode::OK,
        pages::sessions_page(&op, &users, &families, q.done.as_deref()),
    )
}

async fn revoke_session(
    State(s): State<AppState>,
    op: Operator,
    crate::admin::Segment(id): crate::admin::Segment,
    body: Bytes,
) -> Response {
    let form = FormBody::parse(&body);
    if let Some(refused) = may_act(&s, &op, &form, "session.revoke").await {
        return refused;
    }
    let event = AuditEvent::new(op.actor(), "session.revoke", Outcome::Success).target(id.clone());
    match s
        .store
        .revoke_family(&id, "revoked in the console", event, now_ms())
        .await
    {
        Ok(true) => see_other("/console/sessions?done=revoked"),
        Ok(false) => html(
            StatusCode::NOT_FOUND,
            pages::refusal_page(
                &op,
                "Not found",
                "There is no live session with that id; nothing was changed.",
            ),
        ),
        Err(e) => unavailable(&op, &e),
    }
}

async fn disable_user(
    State(s): State<AppState>,
    op: Operator,
    crate::admin::Segment(name): crate::admin::Segment,
    body: Bytes,
) -> Response {
    let form = FormBody::parse(&body);
    if let Some(refused) = may_act(&s, &op, &form, "user.disable").await {
        return refused;
    }
    let user = match s.store.user_by_name(&name).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return html(
                StatusCode::NOT_FOUND,
                pages::refusal_page(
                    &op,
                    "Not found",
                    "There is no user with that name; nothing was changed.",
                ),
            );
        }
        Err(e) => return unavailable(&op, &e),
    };
    let event = AuditEvent::new(op.actor(), "user.disable", Outcome::Success).target(name);
    match s.store.disable_user(&user.id, event, now_ms()).await {
        Ok(_) => see_other("/console/sessions?done=disabled"),
        Err(e) => unavailable(&op, &e),
    }
}

/// `/console/audit?actor=&action=&outcome=&from=&to=&verify=1`, as typed (shown back in
/// the form).
#[derive(Default)]
pub(crate) struct AuditSearch {
    pub actor: String,
    pub action: String,
    pub outcome: String,
    /// `YYYY-MM-DDTHH:MM[:SS]`, UTC (what a `datetime-local` field sends).
    pub from: String,
    pub to: String,
    verify: bool,
}

/// A search that can run: each part checked.
struct AuditFilter<'a> {
    actor: &'a str,
    action: &'a str,
    outcome: Option<&'a str>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

impl AuditSearch {
    fn from_query(raw: &HashMap<String, String>) -> Self {
        let field = |k: &str| raw.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
        Self {
            actor: field("actor"),
            action: field("action"),
            outcome: field("outcome"),
            from: field("from"),
            to: field("to"),
            verify: raw.contains_key("verify"),
        }
    }

    /// The filter, or what is wrong with the search (each problem named).
    fn filter(&self) -> Result<AuditFilter<'_>, Vec<String>> {
        let mut problems = Vec::new();
        if self.actor.len() > 200 || self.action.len() > 200 {
            problems.push("a search field is longer than 200 characters".to_owned());
        }
        let outcome = match self.outcome.as_str() {
            "" => None,
            o @ ("success" | "failure" | "denied") => Some(o),
            _ => {
                problems.push("outcome must be success, failure or denied".to_owned());
                None
            }
        };
        let mut moment = |name: &str, text: &str| {
            if text.is_empty() {
                return None;
            }
            let parsed = parse_utc_minute(text);
            if parsed.is_none() {
                problems.push(format!(
                    "`{name}` must be a date and time like 2026-12-07T09:30 (UTC)"
                ));
            }
            parsed
        };
        let from_ms = moment("from", &self.from);
        let to_ms = moment("to", &self.to);
        if let (Some(a), Some(b)) = (from_ms, to_ms) {
            if a > b {
                problems.push("`from` is after `to`".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(AuditFilter {
                actor: &self.actor,
                action: &self.action,
                outcome,
                from_ms,
                to_ms,
            })
        } else {
            Err(problems)
        }
    }
}

/// `YYYY-MM-DDTHH:MM` or `…:SS`, as UTC, in Unix ms.
fn parse_utc_minute(text: &str) -> Option<i64> {
    let minutes = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let seconds =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(text, minutes)
        .or_else(|_| time::PrimitiveDateTime::parse(text, seconds))
        .ok()?;
    let ms = t.assume_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).ok()
}

impl AuditFilter<'_> {
    fn matches(&self, e: &keygate_audit::AuditEntry) -> bool {
        (self.actor.is_empty() || e.actor.contains(self.actor))
            && (self.action.is_empty() || e.action.starts_with(self.action))
            && self.outcome.is_none_or(|o| e.outcome.as_str() == o)
            && self.from_ms.is_none_or(|t| e.ts_ms >= t)
            && self.to_ms.is_none_or(|t| e.ts_ms <= t)
    }
}

/// How far back a search looks, in entries.
const AUDIT_SCAN: i64 = 5000;
/// The most entries a search shows.
const AUDIT_SHOWN: usize = 200;

async fn audit_search(
    State(s): State<AppState>,
    op: Operator,
    Query(raw): Query<HashMap<String, String>>,
) -> Response {
    let q = AuditSearch::from_query(&raw);
    let verification = if q.verify {
        let key = s.vault.keyring().map(|k| &k.checkpoint);
        let v = crate::audit_ops::verify(s.store.as_ref(), &s.config.checkpoint_file, key).await;
        Some(crate::audit_ops::verification(&v))
    } else {
        None
    };
    let (status, entries, problems) = match q.filter() {
        Ok(filter) => {
            let (head, _) = match s.store.audit_head().await {
                Ok(h) => h,
                Err(e) => return unavailable(&op, &e),
            };
            let all = match s
                .store
                .audit_entries((head - AUDIT_SCAN).max(0), AUDIT_SCAN)
                .await
            {
                Ok(e) => e,
                Err(e) => return unavailable(&op, &e),
            };
            let found: Vec<_> = all
                .into_iter()
                .rev()
                .filter(|e| filter.matches(e))
                .take(AUDIT_SHOWN)
                .collect();
            (StatusCode::OK, found, Vec::new())
        }
        Err(problems) => {
            audit(
                &s,
                AuditEvent::new(op.actor(), "console.audit_search", Outcome::Denied)
                    .detail("reason", problems.join("; ")),
            )
            .await;
            (StatusCode::BAD_REQUEST, Vec::new(), problems)
        }
    };
    html(
        status,
        pages::audit_page(
            &op,
            &pages::AuditView {
                search: &q,
                problems: &problems,
                entries: &entries,
                verification: verification.as_ref(),
            },
        ),
    )
}

async fn alerts(State(s): State<AppState>, op: Operator, Query(q): Query<Done>) -> Response {
    match s.store.list_alerts(false, 100).await {
        Ok(list) => html(
            StatusCode::OK,
            pages::alerts_page(&op, &list, q.done.as_deref()),
        ),
        Err(e) => unavailable(&op, &e),
    }
}

async fn posture(State(s): State<AppState>, op: Operator) -> Response {
    let live = crate::posture::live_facts(&s).await;
    let facts = crate::posture::Facts::gather(&s.config, live, None);
    let report = crate::posture::Report::new(
        "this server's configuration".to_owned(),
        Some(s.config.public_url.to_string()),
        crate::posture::grade(&facts),
    );
    html(StatusCode::OK, pages::posture_page(&op, &report))
}

async fn ack_alert(
    State(s): State<AppState>,
    op: Operator,
    crate::admin::Segment(id): crate::admin::Segment,
    body: Bytes,
) -> Response {
    let form = FormBody::parse(&body);
    if let Some(refused) = may_act(&s, &op, &form, "alert.ack").await {
        return refused;
    }
    match crate::admin::alerts::ack(&s, &id, &op.actor()).await {
        Ok(_) => see_other("/console/alerts?done=acked"),
        Err(keygate_store::StoreError::NotFound) => html(
            StatusCode::NOT_FOUND,
            pages::refusal_page(
                &op,
                "Not found",
                "There is no alert with that id; nothing was changed.",
            ),
        ),
        Err(e) => unavailable(&op, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(created: i64, last_seen: i64) -> ConsoleSessionRecord {
        ConsoleSessionRecord {
            id_hash: vec![0; 32],
            admin_id: "ca_1".into(),
            created_ms: created,
            last_seen_ms: last_seen,
            expires_ms: created + ABSOLUTE_MS,
        }
    }

    #[test]
    fn a_session_ends_when_idle_at_its_absolute_end_or_with_its_admin() {
        let s = session(0, 0);
        assert_eq!(session_over(&s, true, IDLE_MS - 1), None);
        assert_eq!(session_over(&s, true, IDLE_MS), Some("idle"));
        // Activity keeps it alive, up to the absolute end and no further.
        let busy = session(0, ABSOLUTE_MS - 1000);
        assert_eq!(session_over(&busy, true, ABSOLUTE_MS - 1), None);
        assert_eq!(session_over(&busy, true, ABSOLUTE_MS), Some("absolute"));
        assert_eq!(session_over(&s, false, 1), Some("admin gone"));
    }

    #[test]
    fn an_audit_search_names_each_problem_and_reads_times_as_utc() {
        let q = |pairs: &[(&str, &str)]| {
            AuditSearch::from_query(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let ok = q(&[("from", "2026-12-07T09:30"), ("to", "2026-12-07T09:31:15")]);
        let f = ok.filter().ok().unwrap();
        assert_eq!(f.from_ms, Some(1_796_635_800_000));
        assert_eq!(f.to_ms, Some(1_796_635_875_000));
        let bad = q(&[
            ("outcome", "maybe"),
            ("from", "yesterday"),
            ("to", "2026-13-01T00:00"),
        ]);
        let problems = bad.filter().err().unwrap();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[1].contains("`from`") && problems[2].contains("`to`"));
        let backwards = q(&[("from", "2026-12-08T00:00"), ("to", "2026-12-07T00:00")]);
        assert_eq!(backwards.filter().err().unwrap(), ["`from` is after `to`"]);
    }

    #[test]
    fn the_policy_allows_nothing_inline_and_nothing_from_elsewhere() {
        assert!(!CSP.contains("unsafe-inline") && !CSP.contains("unsafe-eval"));
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(CSP.contains(directive), "{directive}");
        }
        // The embedded script and stylesheet need nothing more.
        assert!(!JS.contains("eval(") && !JS.contains("innerHTML"));
        assert!(!CSS.contains("@import") && !CSS.contains("url("));
    }
}
