//! The operator console over real HTTP against the real server: sign-in with password
//! and TOTP, the session cookie's attributes, CSRF and read-only refusals (each audited,
//! nothing changed), a session revoked from the console, and pages that never hold a
//! secret. (The browser suite drives the same pages in Chromium.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::TestApp;
use keygate_store::{FamilyRecord, SqlStore, TokenStore};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

const SECRET_VALUE: &str = "sk-console-test-VALUE-5f2a9c";
const PASSWORD: &str = "console password 1";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A console admin made through the admin API; returns its TOTP seed.
async fn add_admin(app: &TestApp, name: &str, role: &str) -> Vec<u8> {
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/console/admins",
            Some(json!({"name": name, "password": PASSWORD, "role": role})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["admin"]["role"], role);
    let uri = b["otpauth_uri"].as_str().unwrap();
    let secret = url::Url::parse(uri)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "secret")
        .unwrap()
        .1
        .into_owned();
    common::base32_decode(&secret)
}

/// The value of `name=` in a form's hidden `csrf` field.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// `name=value` of a Set-Cookie header, and the header whole.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_owned(), v.to_owned()))
}

struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Browser {
    async fn get(&self, path: &str) -> (StatusCode, String, reqwest::header::HeaderMap) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        (s, r.text().await.unwrap(), h)
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String, Option<String>) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        let loc = r
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status(), r.text().await.unwrap(), loc)
    }
}

/// Signs in through the form; returns the signed-in browser.
async fn sign_in(app: &TestApp, name: &str, code: &str) -> Result<Browser, (StatusCode, String)> {
    let http = no_redirects();
    let r = http
        .get(format!("{}/console/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (pre, _) = set_cookie(&r, "__Host-keygate-console-login").expect("a login cookie");
    let html = r.text().await.unwrap();
    let r = http
        .post(format!("{}/console/login", app.base))
        .header("cookie", &pre)
        .form(&[
            ("csrf", csrf_of(&html).as_str()),
            ("name", name),
            ("password", PASSWORD),
            ("code", code),
        ])
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::SEE_OTHER {
        let s = r.status();
        return Err((s, r.text().await.unwrap()));
    }
    assert_eq!(r.headers()[LOCATION], "/console/overview");
    let (cookie, whole) = set_cookie(&r, "__Host-keygate-console").expect("a session cookie");
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(whole.contains(attribute), "{whole} lacks {attribute}");
    }
    Ok(Browser {
        http,
        base: app.base.clone(),
        cookie,
    })
}

/// Whether the session `fam_console_1` is live, by the admin API.
async fn live(app: &TestApp) -> bool {
    let (_, b) = app.get("/admin/v1/sessions?all=true").await;
    b["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "fam_console_1")
        .map(|s| s["revoked"] == false)
        .unwrap()
}

async fn audit_actions(app: &TestApp) -> Vec<Value> {
    let (_, b) = app.get("/admin/v1/audit?tail=200").await;
    b["entries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_takes_a_password_and_a_fresh_code_and_no_page_holds_a_secret() {
    let mut app = TestApp::spawn().await;
    let (s, _) = app.put("openai", json!({"value": SECRET_VALUE})).await;
    assert_eq!(s, StatusCode::OK);
    let seed = add_admin(&app, "ops", "admin").await;

    // Signed out: every page sends to the sign-in form.
    let r = no_redirects()
        .get(format!("{}/console/overview", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/login");

    // A wrong code, then a right one, then the same one again (refused: each code once).
    let (s, page) = sign_in(&app, "ops", "000000").await.err().unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(page.contains("The name, password or code is not right."));
    let good = common::totp_code(&seed, 0);
    let browser = sign_in(&app, "ops", &good).await.unwrap();
    let (s, _) = sign_in(&app, "ops", &good).await.err().unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let entries = audit_actions(&app).await;
    let login = |outcome: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == "console.login" && e["outcome"] == outcome)
            .count()
    };
    assert_eq!(login("success"), 1);
    // The admin API's guard: the first failure from an address in a window is audited at
    // once, later ones become one entry with their count when the window closes.
    assert_eq!(login("denied"), 1);

    // Every page renders under the strict policy, and none holds the secret's value.
    for (path, expect) in [
        ("/console/overview", "Proxied calls per minute"),
        ("/console/secrets", "openai"),
        ("/console/sessions", "Live sessions"),
        ("/console/audit?action=console.", "console.login"),
        ("/console/alerts", "No alerts."),
        ("/console/posture", "tokens.access_ttl"),
        ("/console/routes", "No routes"),
        ("/console/clients", "No clients"),
    ] {
        let (s, html, headers) = browser.get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(
            html.starts_with("<!DOCTYPE html><html"),
            "{path}: not in standards mode"
        );
        assert!(html.contains(expect), "{path} lacks {expect}");
        assert!(!html.contains(SECRET_VALUE), "{path} holds the secret");
        assert!(!html.contains(PASSWORD), "{path} holds the password");
        let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(headers["cache-control"], "no-store");
        assert!(
            !html.contains("<script>") && !html.contains(" style="),
            "{path}: inline code"
        );
    }
    // The posture report grades this server: a test server on loopback without TLS or
    // webhooks has warnings, and its access tokens pass.
    let (_, html, _) = browser.get("/console/posture").await;
    assert!(
        html.contains("PASS") && html.contains("WARN"),
        "grades shown"
    );
    assert!(html.contains("tokens.access_ttl = "), "evidence shown");

    // Reveal once: a confirm step without the value, then the value, never cached, and
    // the read audited under the console admin's name.
    let (_, html, _) = browser.get("/console/secrets").await;
    let csrf = csrf_of(&html);
    let (s, html, _) = browser
        .post("/console/secrets/openai/reveal", &[("csrf", &csrf)])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Reveal the value") && !html.contains(SECRET_VALUE));
    let r = browser
        .http
        .post(format!("{}/console/secrets/openai/reveal", browser.base))
        .header("cookie", &browser.cookie)
        .form(&[("csrf", csrf.as_str()), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    assert!(r.text().await.unwrap().contains(SECRET_VALUE));
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .any(|e| e["actor"] == "console:ops"
                && e["action"] == "secret.read"
                && e["target"] == "openai"),
        "the reveal is audited"
    );

    // The overview's chart is inline SVG.
    let (_, html, _) = browser.get("/console/overview").await;
    assert!(html.contains("<svg") && html.contains("<rect"));

    // A search by time: UTC bounds, inclusive.
    let (s, html, _) = browser
        .get("/console/audit?action=console.login&from=2000-01-01T00:00&to=2999-01-01T00:00")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("console:ops"));
    let (_, html, _) = browser
        .get("/console/audit?action=console.login&to=2000-01-01T00:00")
        .await;
    assert!(html.contains("No entries match."));
    // A malformed search: each problem named, no results, and the refusal audited.
    let (s, html, _) = browser
        .get("/console/audit?outcome=maybe&from=yesterday")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("outcome must be success, failure or denied"));
    assert!(html.contains("`from` must be a date and time"));
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .any(|e| e["action"] == "console.audit_search"
                && e["outcome"] == "denied"
                && e["actor"] == "console:ops")
    );

    // Signing out ends the session for good.
    let (_, html, _) = browser.get("/console/overview").await;
    let (s, _, loc) = browser
        .post("/console/logout", &[("csrf", &csrf_of(&html))])
        .await;
    assert_eq!(
        (s, loc.as_deref()),
        (StatusCode::SEE_OTHER, Some("/console/login"))
    );
    let (s, _, headers) = browser.get("/console/overview").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(headers[LOCATION], "/console/login?ended=1");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_read_only_posts_change_nothing_and_a_revocation_takes() {
    let mut app = TestApp::spawn().await;
    let store = SqlStore::connect(&app.store_url()).await.unwrap();
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/users",
            Some(json!({"name": "alice", "password": "alice password"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let user_id = b["id"].as_str().unwrap().to_owned();
    let family = FamilyRecord::started(
        "fam_console_1".into(),
        user_id,
        "app".into(),
        Some("jkt".into()),
        "ai".into(),
        keygate_vault::now_ms(),
    );
    store
        .insert_family(
            family,
            vec![7; 32],
            keygate_audit::AuditEvent::new(
                "test",
                "session.start",
                keygate_audit::Outcome::Success,
            ),
            keygate_vault::now_ms(),
        )
        .await
        .unwrap();
    let admin_seed = add_admin(&app, "ops", "admin").await;
    let reader_seed = add_admin(&app, "auditor", "read-only").await;
    let ops = sign_in(&app, "ops", &common::totp_code(&admin_seed, 0))
        .await
        .unwrap();
    let reader = sign_in(&app, "auditor", &common::totp_code(&reader_seed, 0))
        .await
        .unwrap();
    let (_, html, _) = ops.get("/console/sessions").await;
    assert!(html.contains("fam_console_1"));
    let ops_csrf = csrf_of(&html);
    let path = "/console/sessions/fam_console_1/revoke";

    // No token, a wrong one, and another session's: refused, nothing changed.
    let (_, reader_html, _) = reader.get("/console/sessions").await;
    let reader_csrf = csrf_of(&reader_html);
    assert_ne!(reader_csrf, ops_csrf, "the token is per session");
    // A form that repeats a field is refused whole, the right token included.
    for form in [
        vec![],
        vec![("csrf", "forged")],
        vec![("csrf", reader_csrf.as_str())],
        vec![("csrf", ops_csrf.as_str()), ("csrf", ops_csrf.as_str())],
    ] {
        let (s, html, _) = ops.post(path, &form).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert!(html.contains("nothing was changed"), "{html}");
        assert!(live(&app).await);
    }
    // A read-only admin, with its own valid token: refused too.
    // Every action button is disabled for the read-only account, none for the admin.
    let enabled = |page: &str| page.matches("type=\"submit\">").count();
    let disabled = |page: &str| page.matches("type=\"submit\" disabled").count();
    assert!(
        disabled(&reader_html) >= 2,
        "revoke and disable are disabled"
    );
    assert_eq!(
        enabled(&reader_html),
        1,
        "only sign-out is enabled read-only"
    );
    assert_eq!(disabled(&html), 0, "nothing is disabled for an admin");
    let (s, html, _) = reader.post(path, &[("csrf", &reader_csrf)]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(html.contains("read-only"));
    assert!(live(&app).await);
    let refusals: Vec<String> = audit_actions(&app)
        .await
        .iter()
        .filter(|e| e["action"] == "session.revoke" && e["outcome"] == "denied")
        .map(|e| format!("{} {}", e["actor"], e["details"]["reason"]))
        .collect();
    assert_eq!(
        refusals,
        [
            "\"console:ops\" \"csrf\"",
            "\"console:ops\" \"csrf\"",
            "\"console:ops\" \"csrf\"",
            "\"console:ops\" \"csrf\"",
            "\"console:auditor\" \"read-only\""
        ]
    );

    // The admin, with the token: revoked, and audited as the console admin.
    let (s, _, loc) = ops.post(path, &[("csrf", &ops_csrf)]).await;
    assert_eq!(
        (s, loc.as_deref()),
        (
            StatusCode::SEE_OTHER,
            Some("/console/sessions?done=revoked")
        )
    );
    assert!(!live(&app).await);
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .any(|e| e["action"] == "session.revoke"
                && e["outcome"] == "success"
                && e["actor"] == "console:ops")
    );

    // A disabled console account: its session ends at once, and it cannot sign in.
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/console/admins/auditor/disable",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, headers) = reader.get("/console/overview").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(headers[LOCATION], "/console/login?ended=1");
    let (s, _) = sign_in(&app, "auditor", &common::totp_code(&reader_seed, 1))
        .await
        .err()
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/console/admins/nobody/disable",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}
