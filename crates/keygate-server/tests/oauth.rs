//! The token service over real HTTP: the code flow with PKCE and DPoP through the login
//! page, refresh rotation and reuse detection, 50 parallel refreshes, revocation,
//! introspection, TOTP, client credentials, and the login page's refusals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use base64::Engine;
use common::TestApp;
use keygate_auth::UnixTime;
use keygate_auth::dpop::{ProofClaims, create_proof};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::SigningKey;
use keygate_auth::opaque::TokenHash;
use keygate_auth::pkce;
use keygate_store::{SqlStore, TokenStore};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const REDIRECT: &str = "com.example.app:/oauth/callback";
const PASSWORD: &str = "correct horse battery staple";
/// The login form's first step for `alice`.
const ALICE: [(&str, &str); 2] = [("username", "alice"), ("password", PASSWORD)];

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The phone: a device key and the app's client id.
struct Device {
    key: SigningKey,
    client_id: String,
}

impl Device {
    fn new(client_id: &str) -> Self {
        Self {
            key: SigningKey::generate(Algorithm::Es256),
            client_id: client_id.to_owned(),
        }
    }

    fn jkt(&self) -> String {
        self.key.verification_key().thumbprint().as_str().to_owned()
    }

    fn proof(&self, app: &TestApp, method: &str, path: &str, token: Option<&str>) -> String {
        let jti = hex::encode(keygate_auth::opaque::random_bytes::<16>());
        create_proof(
            &self.key,
            &ProofClaims {
                htm: method,
                htu: &format!("{}{path}", app.base),
                iat: now(),
                jti: &jti,
                nonce: None,
                access_token: token,
            },
        )
    }
}

/// A user `alice` with scope `ai`, and a public client; returns the client id.
async fn setup(app: &TestApp) -> String {
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/users",
            Some(json!({"name": "alice", "password": PASSWORD, "scopes": ["ai", "maps"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"name": "ios-app", "type": "public", "redirect_uris": [REDIRECT], "scopes": ["ai", "maps"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["client_id"].as_str().unwrap().to_owned()
}

fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\""),
    )
}

struct LoginPage {
    html: String,
    cookie: String,
    status: StatusCode,
}

async fn authorize_page(
    app: &TestApp,
    query: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = no_redirects()
        .get(format!("{}/oauth2/authorize", app.base))
        .query(query)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn authz_query<'a>(
    device: &'a Device,
    challenge: &'a str,
    jkt: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", &device.client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "ai"),
        ("state", "st-123"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("dpop_jkt", jkt),
    ]
}

async fn open_login(app: &TestApp, query: &[(&str, &str)]) -> LoginPage {
    let (status, headers, html) = authorize_page(app, query).await;
    let cookie = headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .unwrap_or_default();
    LoginPage {
        html,
        cookie,
        status,
    }
}

/// Posts the login form; returns the status, the Location header and the page.
async fn submit(
    app: &TestApp,
    page: &LoginPage,
    fields: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    submit_via(&no_redirects(), app, page, fields).await
}

/// [`submit`] from another client address (any 127/8 address reaches the loopback).
async fn submit_from(
    ip: [u8; 4],
    app: &TestApp,
    page: &LoginPage,
    fields: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap();
    submit_via(&client, app, page, fields).await
}

async fn submit_via(
    client: &reqwest::Client,
    app: &TestApp,
    page: &LoginPage,
    fields: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let mut form: Vec<(String, String)> = Vec::new();
    for name in [
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "dpop_jkt",
        "csrf",
        "ticket",
        "enrol",
        "username",
    ] {
        if let Some(v) = hidden(&page.html, name) {
            form.push((name.into(), v));
        }
    }
    for (k, v) in fields {
        form.retain(|(n, _)| n != k);
        form.push(((*k).into(), (*v).into()));
    }
    let resp = client
        .post(format!("{}/oauth2/authorize", app.base))
        .header("cookie", &page.cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, location, resp.text().await.unwrap())
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Signs in as alice through the login page; returns (code, verifier).
async fn sign_in(app: &TestApp, device: &Device) -> (String, String) {
    let verifier = pkce::generate_verifier();
    let challenge = pkce::challenge_for(&verifier);
    let jkt = device.jkt();
    let page = open_login(app, &authz_query(device, challenge.as_str(), &jkt)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let (status, location, body) = submit(app, &page, &ALICE).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let location = location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st-123"));
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(app.base.as_str())
    );
    (
        query_param(&location, "code").unwrap(),
        verifier.expose_secret().to_owned(),
    )
}

async fn token_request(
    app: &TestApp,
    form: &[(&str, &str)],
    proof: Option<String>,
) -> (StatusCode, Value) {
    let (status, _, body) = token_request_with_nonce(app, form, proof).await;
    (status, body)
}

/// [`token_request`], also returning the `DPoP-Nonce` header.
async fn token_request_with_nonce(
    app: &TestApp,
    form: &[(&str, &str)],
    proof: Option<String>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .form(form);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let nonce = resp
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, nonce, resp.json().await.unwrap_or(Value::Null))
}

async fn exchange(
    app: &TestApp,
    device: &Device,
    code: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    exchange_with(app, device, code, verifier, &[]).await
}

/// [`exchange`] with more form fields (attestation evidence).
async fn exchange_with(
    app: &TestApp,
    device: &Device,
    code: &str,
    verifier: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let proof = device.proof(app, "POST", "/oauth2/token", None);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", &device.client_id),
        ("code_verifier", verifier),
    ];
    form.extend_from_slice(extra);
    token_request(app, &form, Some(proof)).await
}

async fn refresh(app: &TestApp, device: &Device, refresh_token: &str) -> (StatusCode, Value) {
    refresh_with(app, device, refresh_token, &[]).await
}

/// [`refresh`] with more form fields (attestation evidence).
async fn refresh_with(
    app: &TestApp,
    device: &Device,
    refresh_token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let proof = device.proof(app, "POST", "/oauth2/token", None);
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", &device.client_id),
    ];
    form.extend_from_slice(extra);
    token_request(app, &form, Some(proof)).await
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_with_pkce_and_dpop_issues_bound_short_lived_tokens() {
    let mut app = TestApp::spawn().await;
    let device = Device::new(&setup(&app).await);
    let (code, verifier) = sign_in(&app, &device).await;
    let (s, t) = exchange(&app, &device, &code, &verifier).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    assert_eq!(t["scope"], "ai", "only the scopes asked for (S07)");
    assert!(t["expires_in"].as_i64().unwrap() <= 300);
    assert!(t["refresh_token"].as_str().unwrap().starts_with("kgr_"));
    let claims = jwt_claims(t["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["jkt"], device.jkt().as_str());
    assert_eq!(claims["iss"], app.base.as_str());
    assert_eq!(claims["client_id"], device.client_id.as_str());
    assert!(claims["sid"].is_string());

    // The JWKS publishes the signing key, public members only (S06).
    let jwks: Value = app
        .http
        .get(format!("{}/oauth2/jwks", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.get("d").is_none()));
    let meta: Value = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], app.base.as_str());
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert!(
        !meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:ietf:params:oauth:grant-type:token-exchange")),
        "token exchange is not offered without a trusted issuer: {meta}"
    );

    // A code works once; its replay fails and revokes the session it created.
    let (s, b) = exchange(&app, &device, &code, &verifier).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (s, b) = refresh(&app, &device, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{b}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_redemption_checks_pkce_redirect_and_the_bound_key() {
    let mut app = TestApp::spawn().await;
    let device = Device::new(&setup(&app).await);
    let (code, verifier) = sign_in(&app, &device).await;
    let (s, b) = exchange(
        &app,
        &device,
        &code,
        "wrong-verifier-wrong-verifier-wrong-verifier-1",
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // Another device key than the one named by dpop_jkt at authorize (RFC 9449 §10).
    let (code, verifier2) = sign_in(&app, &device).await;
    let thief = Device::new(&device.client_id);
    let (s, b) = exchange(&app, &thief, &code, &verifier2).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")),
        "{b}"
    );
    // No DPoP proof at all from a public client (S08).
    let (code, verifier3) = sign_in(&app, &device).await;
    let (s, b) = token_request(
        &app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &device.client_id),
            ("code_verifier", &verifier3),
        ],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // The resource-owner password grant does not exist (S10).
    let (s, b) = token_request(
        &app,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
            ("client_id", &device.client_id),
        ],
        None,
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
    let _ = verifier;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let mut app = TestApp::spawn().await;
    let device = Device::new(&setup(&app).await);
    let (code, verifier) = sign_in(&app, &device).await;
    let (_, t0) = exchange(&app, &device, &code, &verifier).await;
    let r0 = t0["refresh_token"].as_str().unwrap().to_owned();
    let (s, t1) = refresh(&app, &device, &r0).await;
    assert_eq!(s, StatusCode::OK, "{t1}");
    let r1 = t1["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r0, r1, "rotates on every use (S08)");
    assert_eq!(
        jwt_claims(t1["access_token"].as_str().unwrap())["sid"],
        jwt_claims(t0["access_token"].as_str().unwrap())["sid"]
    );
    // Another key cannot refresh (S16), and that does not burn the token.
    let thief = Device::new(&device.client_id);
    let (s, b) = refresh(&app, &thief, &r1).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof"))
    );
    let (s, t2) = refresh(&app, &device, &r1).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
    // r0 is two rotations old: reuse. The whole family dies, r2 included.
    let (s, b) = refresh(&app, &device, &r0).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (s, _) = refresh(&app, &device, &r2).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "reuse revoked the family");
    let (_, audit) = app.get("/admin/v1/audit?tail=50").await;
    let text = audit.to_string();
    assert!(text.contains("token.reuse_detected"));
    assert!(
        !text.contains(&r0) && !text.contains(&r2),
        "tokens only as keyed hashes"
    );
    app.stop().await;
}

async fn parallel_refreshes(app: &TestApp) {
    let device = Arc::new(Device::new(&setup(app).await));
    let (code, verifier) = sign_in(app, &device).await;
    let (_, t0) = exchange(app, &device, &code, &verifier).await;
    let r0 = t0["refresh_token"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (http, base, device, r0) = (
            app.http.clone(),
            app.base.clone(),
            device.clone(),
            r0.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let jti = hex::encode(keygate_auth::opaque::random_bytes::<16>());
            let proof = create_proof(
                &device.key,
                &ProofClaims {
                    htm: "POST",
                    htu: &format!("{base}/oauth2/token"),
                    iat: now(),
                    jti: &jti,
                    nonce: None,
                    access_token: None,
                },
            );
            let resp = http
                .post(format!("{base}/oauth2/token"))
                .header("DPoP", proof)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", r0.as_str()),
                    ("client_id", device.client_id.as_str()),
                ])
                .send()
                .await
                .unwrap();
            let ok = resp.status().is_success();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            ok.then(|| body["refresh_token"].as_str().unwrap().to_owned())
        }));
    }
    let mut issued = Vec::new();
    for t in tasks {
        if let Some(r) = t.await.unwrap() {
            issued.push(r);
        }
    }
    assert!(!issued.is_empty(), "at least one refresh succeeds");
    // Count the successors that are still live, straight from the store (S34).
    let store = SqlStore::connect(&app.store_url()).await.unwrap();
    let mut live = 0;
    let mut family_id = None;
    for r in &issued {
        let (family, generation) = store
            .refresh_token(TokenHash::of(r).as_bytes())
            .await
            .unwrap()
            .unwrap();
        let f = store.family(&family).await.unwrap().unwrap();
        family_id = Some(family);
        if generation == f.generation && f.revoked_ms.is_none() {
            live += 1;
        }
    }
    println!(
        "50 parallel refreshes: {} answered with a token, {live} live successor",
        issued.len()
    );
    assert!(live <= 1, "{live} live successors");
    assert!(family_id.is_some());
    keygate_store::Store::close(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_refreshes_leave_at_most_one_live_successor_sqlite() {
    let mut app = TestApp::spawn().await;
    parallel_refreshes(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_refreshes_leave_at_most_one_live_successor_postgres() {
    let Some(mut app) = TestApp::spawn_postgres("fifty_parallel_refreshes").await else {
        return;
    };
    parallel_refreshes(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_introspection_and_disabling_a_user() {
    let mut app = TestApp::spawn().await;
    let device = Device::new(&setup(&app).await);
    let (s, backend) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"name": "backend", "type": "confidential", "scopes": ["reports"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (backend_id, secret) = (
        backend["client_id"].as_str().unwrap(),
        backend["client_secret"].as_str().unwrap(),
    );
    let introspect = |token: String| {
        let (http, base) = (app.http.clone(), app.base.clone());
        let (id, secret) = (backend_id.to_owned(), secret.to_owned());
        async move {
            let r = http
                .post(format!("{base}/oauth2/introspect"))
                .basic_auth(id, Some(secret))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, verifier) = sign_in(&app, &device).await;
    let (_, t) = exchange(&app, &device, &code, &verifier).await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    let (s, i) = introspect(access.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["cnf"]["jkt"], device.jkt().as_str());
    let (_, i) = introspect("garbage".into()).await;
    assert_eq!(i, json!({"active": false}));
    // Introspection needs an authenticated confidential client (S11).
    let r = app
        .http
        .post(format!("{}/oauth2/introspect", app.base))
        .form(&[
            ("token", access.as_str()),
            ("client_id", device.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Revoking the refresh token kills the session's access token too (S11).
    let r = app
        .http
        .post(format!("{}/oauth2/revoke", app.base))
        .form(&[
            ("token", t["refresh_token"].as_str().unwrap()),
            ("client_id", device.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, i) = introspect(access).await;
    assert_eq!(i, json!({"active": false}));
    let r = app
        .http
        .post(format!("{}/oauth2/revoke", app.base))
        .form(&[
            ("token", "kgr_unknown"),
            ("client_id", device.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "unknown token: 200");

    // Disabling the user revokes every session at once (S12).
    let (code, verifier) = sign_in(&app, &device).await;
    let (_, t) = exchange(&app, &device, &code, &verifier).await;
    let (s, b) = app
        .call(reqwest::Method::POST, "/admin/v1/users/alice/disable", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["revoked_sessions"], 1);
    let (_, i) = introspect(t["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(i, json!({"active": false}));
    let (s, _) = refresh(&app, &device, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Client credentials: confidential only, scopes within the client's.
    let r = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .basic_auth(backend_id, Some(secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "reports")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["token_type"], "Bearer");
    assert!(b.get("refresh_token").is_none());
    let r = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .basic_auth(backend_id, Some("kgs_wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (s, b) = token_request(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &device.client_id),
        ],
        None,
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_dpop_checks_htu_and_replay() {
    let mut app = TestApp::spawn().await;
    let device = Device::new(&setup(&app).await);
    let (code, verifier) = sign_in(&app, &device).await;
    // htu names another host (S16): refused.
    let jti = "fixed-jti-for-this-test";
    let evil = create_proof(
        &device.key,
        &ProofClaims {
            htm: "POST",
            htu: "https://evil.example/oauth2/token",
            iat: now(),
            jti,
            nonce: None,
            access_token: None,
        },
    );
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", device.client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let (s, b) = token_request(&app, &form, Some(evil)).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof"))
    );
    // A good proof works once; the same proof again is a replay (S14).
    let good = create_proof(
        &device.key,
        &ProofClaims {
            htm: "POST",
            htu: &format!("{}/oauth2/token", app.base),
            iat: now(),
            jti,
            nonce: None,
            access_token: None,
        },
    );
    let (s, t) = token_request(&app, &form, Some(good.clone())).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let (s, b) = token_request(
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ("client_id", &device.client_id),
        ],
        Some(good),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")),
        "{b}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_page_refusals_do_not_enumerate_users() {
    let mut app = TestApp::spawn().await;
    let device = Device::new(&setup(&app).await);
    let verifier = pkce::generate_verifier();
    let challenge = pkce::challenge_for(&verifier);
    let jkt = device.jkt();
    let query = authz_query(&device, challenge.as_str(), &jkt);

    // An unregistered redirect URI is never redirected to.
    let mut bad = query.clone();
    bad.retain(|(k, _)| *k != "redirect_uri");
    bad.push(("redirect_uri", "https://evil.example/cb"));
    let (s, h, _) = authorize_page(&app, &bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(h.get("location").is_none());
    // plain PKCE: an error redirect to the registered URI.
    let mut plain = query.clone();
    plain.retain(|(k, _)| *k != "code_challenge_method");
    plain.push(("code_challenge_method", "plain"));
    let (s, h, _) = authorize_page(&app, &plain).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let to = h.get("location").unwrap().to_str().unwrap();
    assert!(
        to.starts_with(REDIRECT) && to.contains("error=invalid_request"),
        "{to}"
    );

    let page = open_login(&app, &query).await;
    assert!(page.html.contains("viewport"), "usable on a phone");
    let (s1, _, wrong_pw) = submit(
        &app,
        &page,
        &[("username", "alice"), ("password", "not the password")],
    )
    .await;
    let (s2, _, no_user) = submit(
        &app,
        &page,
        &[("username", "mallory"), ("password", "not the password")],
    )
    .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    let msg = |html: &str| {
        html.split("class=\"msg\"")
            .nth(1)
            .map(|m| m.split("</p>").next().unwrap_or("").to_owned())
    };
    assert_eq!(msg(&wrong_pw), msg(&no_user), "same message for both (S18)");

    // Without the CSRF cookie, or with a forged token, the form is refused.
    let forged = LoginPage {
        html: page.html.clone(),
        cookie: "kg_csrf=attacker".into(),
        status: page.status,
    };
    let (s, loc, _) = submit(&app, &forged, &ALICE).await;
    assert_eq!((s, loc), (StatusCode::FORBIDDEN, None));

    let (_, audit) = app.get("/admin/v1/audit?tail=20").await;
    let failures = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "login" && e["outcome"] == "failure")
        .count();
    assert_eq!(failures, 2, "failed logins are audited");
    assert!(!audit.to_string().contains("not the password"));

    // Guessing is throttled: after the free attempts, 429 with Retry-After.
    let mut last = StatusCode::OK;
    for _ in 0..8 {
        last = submit(
            &app,
            &page,
            &[("username", "alice"), ("password", "guess-guess-guess")],
        )
        .await
        .0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttle_on_a_shared_address_does_not_lock_out_other_users() {
    let mut app = TestApp::spawn_with(&[("KEYGATE_TOKENS__LOGIN_IP_MAX_FAILURES", "16")]).await;
    let device = Device::new(&setup(&app).await);
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            "/admin/v1/users",
            Some(json!({"name": "bob", "password": PASSWORD, "scopes": ["ai"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let verifier = pkce::generate_verifier();
    let challenge = pkce::challenge_for(&verifier);
    let jkt = device.jkt();
    let query = authz_query(&device, challenge.as_str(), &jkt);
    let page = open_login(&app, &query).await;
    let guess = |user: &'static str| [("username", user), ("password", "guess-guess-guess")];
    let nat = [127, 0, 0, 10];

    // Someone behind a carrier NAT guesses alice's password until that pair is throttled…
    let mut failures = 0;
    let mut throttled = false;
    for _ in 0..10 {
        match submit_from(nat, &app, &page, &guess("alice")).await.0 {
            StatusCode::UNAUTHORIZED => failures += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                throttled = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(throttled && (5..=8).contains(&failures), "{failures}");
    // …and bob, behind the same address, still signs in.
    let (s, location, body) = submit_from(
        nat,
        &app,
        &page,
        &[("username", "bob"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert!(location.unwrap().starts_with(REDIRECT));

    // Guessing alice from many addresses, one guess each, trips her account-wide key.
    let mut from_fresh_addresses = 0;
    let mut account_throttled = false;
    for n in 20..40 {
        match submit_from([127, 0, 0, n], &app, &page, &guess("alice"))
            .await
            .0
        {
            StatusCode::UNAUTHORIZED => from_fresh_addresses += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                account_throttled = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(account_throttled, "{from_fresh_addresses}");
    assert!(failures + from_fresh_addresses <= 13);

    // Spraying one password over many accounts from one address hits its ceiling.
    let sprayer = [127, 0, 0, 50];
    let mut sprayed = 0;
    let mut ceiling = false;
    for i in 0..20 {
        let user = format!("user{i}");
        let fields = [
            ("username", user.as_str()),
            ("password", "guess-guess-guess"),
        ];
        match submit_from(sprayer, &app, &page, &fields).await.0 {
            StatusCode::UNAUTHORIZED => sprayed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                ceiling = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ceiling);
    assert_eq!(sprayed, 16, "login_ip_max_failures");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_step_when_enrolled_and_each_code_once() {
    let mut app = TestApp::spawn().await;
    let device = Device::new(&setup(&app).await);
    let (s, b) = app
        .call(reqwest::Method::POST, "/admin/v1/users/alice/mfa", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let uri = b["otpauth_uri"].as_str().unwrap();
    let secret = query_param(uri, "secret").unwrap();
    let code = common::totp_code(&common::base32_decode(&secret), 0);

    let verifier = pkce::generate_verifier();
    let challenge = pkce::challenge_for(&verifier);
    let jkt = device.jkt();
    let page = open_login(&app, &authz_query(&device, challenge.as_str(), &jkt)).await;
    let (s, _, step2) = submit(&app, &page, &ALICE).await;
    assert_eq!(s, StatusCode::OK);
    assert!(step2.contains("one-time-code"), "asks for the code");
    let page2 = LoginPage {
        html: step2,
        cookie: page.cookie.clone(),
        status: s,
    };
    let (s, loc, _) = submit(&app, &page2, &[("totp", "000000")]).await;
    assert_eq!((s, loc), (StatusCode::UNAUTHORIZED, None));
    let (s, loc, body) = submit(&app, &page2, &[("totp", &code)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert!(loc.unwrap().contains("code="));
    // The same code a second time is refused (S17).
    let (s, _, _) = submit(&app, &page2, &[("totp", &code)]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// The login page for a new authorization request by `device`.
async fn fresh_login(app: &TestApp, device: &Device) -> LoginPage {
    let verifier = pkce::generate_verifier();
    let challenge = pkce::challenge_for(&verifier);
    let jkt = device.jkt();
    open_login(app, &authz_query(device, challenge.as_str(), &jkt)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mfa_required_a_user_without_totp_enrols_on_the_login_page() {
    let mut app = TestApp::spawn_with(&[("KEYGATE_TOKENS__MFA", "required")]).await;
    let device = Device::new(&setup(&app).await);
    // The password, then a key to add and a code to prove it was added.
    let page = fresh_login(&app, &device).await;
    let (s, _, step2) = submit(&app, &page, &ALICE).await;
    assert_eq!(s, StatusCode::OK);
    assert!(step2.contains("Add to an authenticator app"), "{step2}");
    let uri = step2
        .split("href=\"")
        .find(|p| p.starts_with("otpauth://"))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let seed = common::base32_decode(&query_param(&uri, "secret").unwrap());
    let sealed = hidden(&step2, "enrol").unwrap();
    assert!(
        !sealed.contains(&query_param(&uri, "secret").unwrap()),
        "the seed travels sealed"
    );
    let page2 = LoginPage {
        html: step2,
        cookie: page.cookie.clone(),
        status: s,
    };
    // A wrong code: the same key again, nothing stored.
    let (s, loc, again) = submit(&app, &page2, &[("totp", "000000")]).await;
    assert_eq!((s, loc), (StatusCode::UNAUTHORIZED, None));
    assert_eq!(hidden(&again, "enrol").as_deref(), Some(sealed.as_str()));
    let (_, users) = app.get("/admin/v1/users").await;
    assert_eq!(users["users"][0]["mfa"], false);
    // A forged seed (sealed for nobody) is refused.
    let (s, _, _) = submit(&app, &page2, &[("enrol", "AAAA"), ("totp", "123456")]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The right code: enrolled (audited) and signed in.
    let code = common::totp_code(&seed, 0);
    let (s, loc, body) = submit(&app, &page2, &[("totp", &code)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert!(loc.unwrap().contains("code="));
    let (_, users) = app.get("/admin/v1/users").await;
    assert_eq!(users["users"][0]["mfa"], true);
    let (_, audit) = app.get("/admin/v1/audit?tail=50").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "user.mfa_enrol"
                && e["actor"] == "user:alice"
                && e["details"]["via"] == "login page")
    );
    // The offer cannot be replayed to replace the seed now stored.
    let (s, _, _) = submit(&app, &page2, &[("totp", &code)]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The next sign-in asks for a code from that seed, like any enrolled user's.
    let page = fresh_login(&app, &device).await;
    let (s, _, step2) = submit(&app, &page, &ALICE).await;
    assert_eq!(s, StatusCode::OK);
    assert!(step2.contains("one-time-code") && !step2.contains("Add to an authenticator app"));
    app.stop().await;
}

/// Interop: the `oauth2` crate (not written by keygate) runs the code flow with PKCE and a
/// refresh against keygate. It has no DPoP support, so this server runs with
/// `tokens.dpop = "optional"` and issues Bearer tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_oauth2_crate_code_flow_with_pkce_and_refresh() {
    use oauth2::{
        AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope,
        TokenResponse, TokenUrl, basic::BasicClient,
    };
    let mut app = TestApp::spawn_with(&[("KEYGATE_TOKENS__DPOP", "optional")]).await;
    let client_id = setup(&app).await;
    let client = BasicClient::new(ClientId::new(client_id))
        .set_auth_uri(AuthUrl::new(format!("{}/oauth2/authorize", app.base)).unwrap())
        .set_token_uri(TokenUrl::new(format!("{}/oauth2/token", app.base)).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("ai".into()))
        .set_pkce_challenge(challenge)
        .url();
    // The browser's part: the login page.
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let query_ref: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let page = open_login(&app, &query_ref).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let (s, location, _) = submit(&app, &page, &ALICE).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let location = location.unwrap();
    assert_eq!(
        query_param(&location, "state").as_deref(),
        Some(csrf.secret().as_str())
    );
    let code = query_param(&location, "code").unwrap();

    let http = oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    assert!(token.access_token().secret().starts_with("eyJ"));
    let refresh = token.refresh_token().unwrap();
    let refreshed = client
        .exchange_refresh_token(refresh)
        .request_async(&http)
        .await
        .unwrap();
    assert_ne!(
        refreshed.refresh_token().unwrap().secret(),
        refresh.secret(),
        "rotated"
    );
    app.stop().await;
}

/// keygate's own client library against the real server, with server nonces required:
/// discovery, the code flow with PKCE and `dpop_jkt`, the `use_dpop_nonce` round trip, a
/// refresh, and sign-out by revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygate_client_signs_in_refreshes_and_revokes_with_server_nonces() {
    use keygate_client::{Client, ClientConfig, MemoryKeyStore, MemoryTokenCache};
    let mut app = TestApp::spawn_with(&[("KEYGATE_TOKENS__DPOP_NONCE", "true")]).await;
    let client_id = setup(&app).await;
    let config = ClientConfig::new(&app.base, &client_id, REDIRECT).unwrap();
    let client = Client::builder(
        config,
        Arc::new(MemoryKeyStore::generate()),
        Arc::new(MemoryTokenCache::new()),
    )
    .discover()
    .await
    .unwrap();
    let (url, pending) = client.authorization_url(&["ai"]).unwrap();
    let query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let query_ref: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(query_ref.iter().any(|(k, _)| *k == "dpop_jkt"));
    let page = open_login(&app, &query_ref).await;
    let (s, location, _) = submit(&app, &page, &ALICE).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let signed_in = client
        .exchange_code(pending, &location.unwrap(), None)
        .await
        .unwrap();
    assert_eq!(signed_in.scope.as_deref(), Some("ai"));
    let first = client.access_token().await.unwrap();
    client.refresh().await.unwrap();
    let second = client.access_token().await.unwrap();
    assert_ne!(first.expose_secret(), second.expose_secret());
    let claims = jwt_claims(second.expose_secret());
    assert_eq!(claims["cnf"]["jkt"], client.jkt().as_str());
    client.revoke().await.unwrap();
    let (_, sessions) = app.get("/admin/v1/sessions").await;
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        0,
        "signed out: no live session"
    );
    app.stop().await;
}

/// S06 through the server: `keys rotate` publishes a next key in the JWKS before it signs,
/// keeps the active key signing (tokens issued before still verify), and the rotation is
/// audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_publishes_the_next_key_before_it_signs() {
    let mut app = TestApp::spawn().await;
    let jwks = |app: &TestApp| {
        let (http, base) = (app.http.clone(), app.base.clone());
        async move {
            let v: Value = http
                .get(format!("{base}/oauth2/jwks"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let before = jwks(&app).await;
    assert_eq!(before.len(), 1);
    let (s, b) = app
        .call(reqwest::Method::POST, "/admin/v1/keys/rotate", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("published next key"),
        "{b}"
    );
    let after = jwks(&app).await;
    assert_eq!(after.len(), 2, "the next key is published");
    assert!(after.contains(&before[0]), "the active key stays published");
    // It does not sign yet: a new token still names the old key.
    let device = Device::new(&setup(&app).await);
    let (code, verifier) = sign_in(&app, &device).await;
    let (_, t) = exchange(&app, &device, &code, &verifier).await;
    let header = t["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], before[0].as_str());
    let (_, keys) = app.get("/admin/v1/keys").await;
    let states: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"active") && states.contains(&"next"),
        "{states:?}"
    );
    let (_, audit) = app.get("/admin/v1/audit?tail=50").await;
    assert!(audit.to_string().contains("keys.rotate"));
    app.stop().await;
}

/// S14 across a restart on the embedded store, whose replay cache is in memory: a proof
/// the first process accepted is refused by the second (which asks for a nonce of its
/// own), and an honest client gets in with that nonce. A fresh server asks no nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_accepted_before_a_restart_is_refused_after_it() {
    let mut app = TestApp::spawn().await;
    let device = Device::new(&setup(&app).await);
    let (code, verifier) = sign_in(&app, &device).await;
    let (_, t0) = exchange(&app, &device, &code, &verifier).await;
    let r0 = t0["refresh_token"].as_str().unwrap().to_owned();
    let seen = device.proof(&app, "POST", "/oauth2/token", None);
    let form = |r| {
        [
            ("grant_type", "refresh_token"),
            ("refresh_token", r),
            ("client_id", device.client_id.as_str()),
        ]
    };
    let (s, _, t1) = token_request_with_nonce(&app, &form(&r0), Some(seen.clone())).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "no nonce is asked of a fresh server: {t1}"
    );
    let r1 = t1["refresh_token"].as_str().unwrap().to_owned();

    app.stop().await;
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let token = app.token.clone();
    let app = TestApp::start(dir, token).await;

    // The same proof again: the new process's cache never saw it.
    let (s, nonce, b) = token_request_with_nonce(&app, &form(&r1), Some(seen)).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("use_dpop_nonce")),
        "a proof from before the restart is not accepted: {b}"
    );
    let nonce = nonce.expect("a DPoP-Nonce header");
    // The honest client signs again with the nonce.
    let jti = hex::encode(keygate_auth::opaque::random_bytes::<16>());
    let retry = create_proof(
        &device.key,
        &ProofClaims {
            htm: "POST",
            htu: &format!("{}/oauth2/token", app.base),
            iat: now(),
            jti: &jti,
            nonce: Some(&nonce),
            access_token: None,
        },
    );
    let (s, _, t2) = token_request_with_nonce(&app, &form(&r1), Some(retry)).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    let mut app = app;
    app.stop().await;
}

/// The login page names the app as its users know it, the host they sign in at, how
/// long the sign-in lasts and the app's privacy notice; what the operator typed is
/// escaped, and what cannot be shown safely is refused at registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_page_shows_the_app_host_session_line_and_privacy_notice() {
    let app = TestApp::spawn().await;
    setup(&app).await;
    let add = |body: Value| app.call(reqwest::Method::POST, "/admin/v1/clients", Some(body));
    let (s, b) = add(json!({
        "name": "acme", "type": "public", "redirect_uris": [REDIRECT], "scopes": ["ai"],
        "display_name": "Acme <Chat> & Co",
        "privacy_url": "https://acme.example/privacy?lang=en&v=2",
    }))
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["display_name"], "Acme <Chat> & Co");
    let device = Device::new(b["client_id"].as_str().unwrap());
    let challenge = pkce::challenge_for(&pkce::generate_verifier());
    let jkt = device.jkt();
    let page = open_login(&app, &authz_query(&device, challenge.as_str(), &jkt)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert!(
        page.html
            .contains("<strong>Acme &lt;Chat&gt; &amp; Co</strong> asks for: ai"),
        "{}",
        page.html
    );
    let host = app.base.trim_start_matches("http://");
    assert!(
        page.html.contains(&format!("at <strong>{host}</strong>")),
        "{}",
        page.html
    );
    assert!(
        page.html.contains(
            "<a href=\"https://acme.example/privacy?lang=en&amp;v=2\" rel=\"noopener noreferrer\">Privacy notice</a>"
        ),
        "{}",
        page.html
    );
    // keygate's own line, from the refresh policy (14 days idle, 90 days in all).
    assert!(
        page.html.contains(
            "You stay signed in on this device for up to 90 days; after 14 days without use you sign in again."
        ),
        "{}",
        page.html
    );

    // The client's own line replaces it; no privacy link when none is registered.
    let (s, b) = add(json!({
        "name": "short", "type": "public", "redirect_uris": [REDIRECT], "scopes": ["ai"],
        "session_note": "For your safety you sign in again every day.",
    }))
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let device = Device::new(b["client_id"].as_str().unwrap());
    let page = open_login(&app, &authz_query(&device, challenge.as_str(), &jkt)).await;
    assert!(
        page.html
            .contains("For your safety you sign in again every day.")
            && !page.html.contains("Privacy notice")
            && page.html.contains("<strong>short</strong> asks for"),
        "{}",
        page.html
    );

    // What cannot be shown safely is refused, naming the field; nothing is registered.
    for (field, value) in [
        ("privacy_url", "javascript:alert(1)"),
        ("privacy_url", "http://acme.example/privacy"),
        ("privacy_url", "https://user:pw@acme.example/"),
        ("display_name", "Acme\nChat"),
        ("display_name", ""),
        ("session_note", "x".repeat(201).as_str()),
    ] {
        let mut body =
            json!({"name": "bad", "type": "public", "redirect_uris": [REDIRECT], "scopes": ["ai"]});
        body[field] = json!(value);
        let (s, b) = add(body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}={value:?}: {b}");
        assert!(b["message"].as_str().unwrap().contains(field), "{b}");
    }
    let (_, list) = app.get("/admin/v1/clients").await;
    assert!(
        list["clients"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "bad"),
        "{list}"
    );
}

// ---------------------------------------------------------------- app attestation

mod attestation {
    //! App attestation at the token endpoint, with evidence the tests build and sign under
    //! roots and keys of their own (`keygate_attest::testing`): the tier in the token, in
    //! the audit and in the metrics, every refusal's reason, and a route that serves only
    //! attested apps.

    use super::*;
    use keygate_attest::testing::{
        AppAttestFixture, AttestationTweaks, PlayIntegrityFixture, VerdictTweaks,
    };
    use keygate_server::oauth::attestation::client_data;

    const TEAM: &str = "ABCDE12345";
    const BUNDLE: &str = "com.example.app";
    const PACKAGE: &str = "com.example.android";

    /// Makes a token request's evidence fields from (challenge, DPoP key thumbprint).
    type Evidence<'a> = dyn FnOnce(&str, &str) -> Vec<(&'static str, String)> + 'a;

    fn b64url(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    struct World {
        app: TestApp,
        apple: AppAttestFixture,
        google: PlayIntegrityFixture,
        ios: String,
        android: String,
    }

    async fn world() -> World {
        let apple = AppAttestFixture::new(TEAM, BUNDLE);
        let google = PlayIntegrityFixture::new(PACKAGE);
        let (decryption, verification) = google.console_keys();
        let digest = b64url(&google.certificate_sha256);
        let upstream =
            common::recording_upstream(Arc::new(std::sync::Mutex::new(Vec::new()))).await;
        let root_pem = apple.root_pem();
        let app = TestApp::spawn_with_options(
            |dir| {
                std::fs::write(dir.join("attest-root.pem"), &root_pem).unwrap();
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(dir.join("play-decryption.key"))
                    .unwrap();
                f.write_all(decryption.as_bytes()).unwrap();
                format!(
                    r#"
[attestation]
[[attestation.clients]]
client = "ios-app"
[attestation.clients.apple]
team_id = "{TEAM}"
bundle_id = "{BUNDLE}"
root_file = "attest-root.pem"

[[attestation.clients]]
client = "android-app"
on_failure = "refuse"
[attestation.clients.google]
package_name = "{PACKAGE}"
certificate_sha256 = ["{digest}"]
decryption_key_file = "play-decryption.key"
verification_key = "{verification}"

[routes.genuine]
upstream = "{upstream}"
secret = "k"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /v1/x"]
scopes = ["ai"]
attestation = {{ min_tier = "attested" }}
"#
                )
            },
            &[],
            Default::default(),
        )
        .await;
        let ios = setup(&app).await;
        let (s, b) = app
            .call(
                reqwest::Method::POST,
                "/admin/v1/clients",
                Some(json!({"name": "android-app", "type": "public", "redirect_uris": [REDIRECT], "scopes": ["ai"]})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let android = b["client_id"].as_str().unwrap().to_owned();
        let (s, _) = app.put("k", json!({"value": "sk-upstream"})).await;
        assert_eq!(s, StatusCode::OK);
        World {
            app,
            apple,
            google,
            ios,
            android,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_metadata_names_the_challenge_endpoint() {
        let mut w = world().await;
        let (s, meta) = w.app.get("/.well-known/oauth-authorization-server").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            meta["keygate_attestation_challenge_endpoint"],
            format!("{}/oauth2/attestation/challenge", w.app.base)
        );
        w.app.stop().await;
        // Without [attestation], it is not there.
        let mut plain = TestApp::spawn().await;
        let (_, meta) = plain.get("/.well-known/oauth-authorization-server").await;
        assert!(
            meta.get("keygate_attestation_challenge_endpoint").is_none(),
            "{meta}"
        );
        plain.stop().await;
    }

    async fn challenge(app: &TestApp, client_id: &str) -> String {
        let resp = app
            .http
            .post(format!("{}/oauth2/attestation/challenge", app.base))
            .form(&[("client_id", client_id)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["expires_in"], 300);
        body["challenge"].as_str().unwrap().to_owned()
    }

    /// Signs in with `evidence(challenge, jkt)` as extra token-request fields.
    async fn sign_in_with(
        w: &World,
        device: &Device,
        evidence: impl FnOnce(&str, &str) -> Vec<(&'static str, String)>,
    ) -> (StatusCode, Value) {
        let ch = challenge(&w.app, &device.client_id).await;
        let fields = evidence(&ch, &device.jkt());
        let extra: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, verifier) = sign_in(&w.app, device).await;
        exchange_with(&w.app, device, &code, &verifier, &extra).await
    }

    fn apple_evidence(
        fx: &AppAttestFixture,
        tweaks: AttestationTweaks,
    ) -> impl FnOnce(&str, &str) -> Vec<(&'static str, String)> + '_ {
        move |ch, jkt| {
            vec![
                ("attestation_type", "apple-app-attest".into()),
                ("attestation_challenge", ch.into()),
                ("attestation_key_id", b64url(&fx.key_id())),
                (
                    "attestation",
                    b64url(&fx.attestation_with(&client_data(ch, jkt), &tweaks)),
                ),
            ]
        }
    }

    fn tier(token: &Value) -> Value {
        jwt_claims(token["access_token"].as_str().unwrap())["att"].clone()
    }

    async fn call_genuine(app: &TestApp, device: &Device, token: &Value) -> (StatusCode, Value) {
        let access = token["access_token"].as_str().unwrap();
        let resp = app
            .http
            .get(format!("{}/proxy/genuine/v1/x", app.base))
            .header("authorization", format!("DPoP {access}"))
            .header(
                "dpop",
                device.proof(app, "GET", "/proxy/genuine/v1/x", Some(access)),
            )
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn app_attest_sets_the_tier_at_sign_in_and_refresh_and_the_route_follows_it() {
        let mut w = world().await;
        let ios = Device::new(&w.ios);

        let (s, t) = sign_in_with(
            &w,
            &ios,
            apple_evidence(&w.apple, AttestationTweaks::default()),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(tier(&t), "attested");
        assert_eq!(call_genuine(&w.app, &ios, &t).await.0, StatusCode::OK);

        // Refresh with an assertion by the attested key over a fresh challenge.
        let mut refresh_token = t["refresh_token"].as_str().unwrap().to_owned();
        let assert_with = |ch: &str, counter: u32| {
            vec![
                ("attestation_type", "apple-app-attest".to_owned()),
                ("attestation_challenge", ch.to_owned()),
                (
                    "attestation_assertion",
                    b64url(&w.apple.assertion(&client_data(ch, &ios.jkt()), counter)),
                ),
            ]
        };
        let refresh_as = async |fields: Vec<(&'static str, String)>, token: &mut String| {
            let extra: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (s, t) = refresh_with(&w.app, &ios, token, &extra).await;
            assert_eq!(s, StatusCode::OK, "{t}");
            *token = t["refresh_token"].as_str().unwrap().to_owned();
            t
        };
        let ch = challenge(&w.app, &ios.client_id).await;
        let t = refresh_as(assert_with(&ch, 1), &mut refresh_token).await;
        assert_eq!(tier(&t), "attested");
        // The same challenge again: spent, so the evidence fails (tiered, not refused).
        let t = refresh_as(assert_with(&ch, 2), &mut refresh_token).await;
        assert_eq!(tier(&t), "failed");
        let (s, b) = call_genuine(&w.app, &ios, &t).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("insufficient_attestation"))
        );
        // A counter that does not grow (a replayed or cloned assertion).
        let ch = challenge(&w.app, &ios.client_id).await;
        let t = refresh_as(assert_with(&ch, 1), &mut refresh_token).await;
        assert_eq!(tier(&t), "failed");
        // No evidence at all: unattested, and the strict route still refuses.
        let t = refresh_as(vec![], &mut refresh_token).await;
        assert_eq!(tier(&t), "unattested");
        assert_eq!(
            call_genuine(&w.app, &ios, &t).await.0,
            StatusCode::FORBIDDEN
        );
        // A good assertion again: attested again.
        let ch = challenge(&w.app, &ios.client_id).await;
        let t = refresh_as(assert_with(&ch, 7), &mut refresh_token).await;
        assert_eq!(tier(&t), "attested");
        assert_eq!(call_genuine(&w.app, &ios, &t).await.0, StatusCode::OK);

        let text = w.app.text("/metrics").await;
        for (tier, reason, n) in [
            ("attested", "ok", 3),
            ("failed", "challenge_reused", 1),
            ("failed", "counter_not_increasing", 1),
            ("unattested", "none", 1),
        ] {
            let line = format!(
                "keygate_attestation_total{{client=\"ios-app\",platform=\"apple\",tier=\"{tier}\",reason=\"{reason}\",app_version=\"\"}} {n}"
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        // The audit entries of the grants carry the tier and the reason.
        let (_, audit) = w.app.get("/admin/v1/audit?tail=1000&limit=1000").await;
        let grants: Vec<&Value> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "token.issue" || e["action"] == "token.refresh")
            .collect();
        assert!(
            grants
                .iter()
                .any(|e| e["details"]["attestation"] == "challenge_reused"
                    && e["details"]["tier"] == "failed")
        );
        assert_eq!(grants.first().unwrap()["details"]["tier"], "attested");
        w.app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_broken_app_attest_rule_fails_with_its_reason() {
        let mut w = world().await;
        let other_root = AppAttestFixture::new(TEAM, BUNDLE);
        let cases: Vec<(&str, Box<Evidence<'_>>)> = vec![
            (
                "wrong_root",
                Box::new(apple_evidence(&other_root, AttestationTweaks::default())),
            ),
            (
                "rp_id_mismatch",
                Box::new(apple_evidence(
                    &w.apple,
                    AttestationTweaks {
                        rp_id: Some(format!("{TEAM}.com.example.other")),
                        ..Default::default()
                    },
                )),
            ),
            (
                "counter_not_zero",
                Box::new(apple_evidence(
                    &w.apple,
                    AttestationTweaks {
                        counter: 1,
                        ..Default::default()
                    },
                )),
            ),
            (
                "nonce_mismatch",
                Box::new(|ch: &str, _jkt: &str| {
                    // Evidence made for another DPoP key: the binding fails.
                    apple_evidence(&w.apple, AttestationTweaks::default())(
                        ch,
                        "another-key-thumbprint",
                    )
                }),
            ),
            (
                "key_id_mismatch",
                Box::new(|ch: &str, jkt: &str| {
                    let mut v = apple_evidence(&w.apple, AttestationTweaks::default())(ch, jkt);
                    v[2].1 = b64url(&[9u8; 32]);
                    v
                }),
            ),
            (
                "malformed_cbor",
                Box::new(|ch: &str, _jkt: &str| {
                    vec![
                        ("attestation_type", "apple-app-attest".into()),
                        ("attestation_challenge", ch.into()),
                        ("attestation_key_id", b64url(&[1u8; 32])),
                        ("attestation", b64url(b"\xa1\x63fmt")),
                    ]
                }),
            ),
            (
                "challenge_invalid",
                Box::new(|ch: &str, jkt: &str| {
                    let mut v = apple_evidence(&w.apple, AttestationTweaks::default())(ch, jkt);
                    v[1].1 = format!("{ch}x");
                    v
                }),
            ),
            (
                "wrong_attestation_type",
                Box::new(|ch: &str, _jkt: &str| {
                    vec![
                        ("attestation_type", "play-integrity".into()),
                        ("attestation_challenge", ch.into()),
                    ]
                }),
            ),
        ];
        let ios = Device::new(&w.ios);
        for (reason, evidence) in cases {
            let (s, t) = sign_in_with(&w, &ios, evidence).await;
            assert_eq!(s, StatusCode::OK, "{reason}: tiered, not refused: {t}");
            assert_eq!(tier(&t), "failed", "{reason}");
            // The session stays failed: a refresh without evidence does not launder it.
            let (s, r) = refresh(&w.app, &ios, t["refresh_token"].as_str().unwrap()).await;
            assert_eq!(s, StatusCode::OK, "{r}");
            assert_eq!(tier(&r), "failed", "{reason}: after a refresh");
            let line = format!(
                "keygate_attestation_total{{client=\"ios-app\",platform=\"apple\",tier=\"failed\",reason=\"{reason}\",app_version=\"\"}} 1"
            );
            let text = w.app.text("/metrics").await;
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        // A challenge for another client is not this one's.
        let resp = w
            .app
            .http
            .post(format!("{}/oauth2/attestation/challenge", w.app.base))
            .form(&[("client_id", "no-such-client")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        w.app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn play_integrity_attests_and_a_refusing_client_refuses_each_bad_verdict() {
        let mut w = world().await;
        let android = Device::new(&w.android);
        let now = now().0;
        let google = &w.google;
        let token = |tweaks: VerdictTweaks| {
            move |ch: &str, jkt: &str| {
                vec![
                    ("attestation_type", "play-integrity".to_owned()),
                    ("attestation_challenge", ch.to_owned()),
                    (
                        "attestation",
                        google.token_with(&client_data(ch, jkt), now, &tweaks),
                    ),
                ]
            }
        };
        let (s, t) = sign_in_with(&w, &android, token(VerdictTweaks::default())).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(tier(&t), "attested");
        // A refresh with a fresh verdict stays attested; without one it is unattested.
        let ch = challenge(&w.app, &android.client_id).await;
        let fields = token(VerdictTweaks::default())(&ch, &android.jkt());
        let extra: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, r) = refresh_with(
            &w.app,
            &android,
            t["refresh_token"].as_str().unwrap(),
            &extra,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(tier(&r), "attested");

        let cases = [
            (
                "package_mismatch",
                VerdictTweaks {
                    package_name: Some("com.example.other".into()),
                    ..Default::default()
                },
            ),
            (
                "device_integrity_missing",
                VerdictTweaks {
                    device_verdicts: vec![],
                    ..Default::default()
                },
            ),
            (
                "verdict_expired",
                VerdictTweaks {
                    timestamp_millis: Some((now - 600) * 1000),
                    ..Default::default()
                },
            ),
            (
                "app_not_recognized",
                VerdictTweaks {
                    app_recognition_verdict: "UNRECOGNIZED_VERSION".into(),
                    ..Default::default()
                },
            ),
            (
                "signature_invalid",
                VerdictTweaks {
                    sign_with_other_key: true,
                    ..Default::default()
                },
            ),
        ];
        for (reason, tweaks) in cases {
            let (s, b) = sign_in_with(&w, &android, token(tweaks)).await;
            // The app learns nothing but invalid_grant...
            assert_eq!(
                (s, b["error"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_grant")),
                "{reason}"
            );
            assert!(!b.to_string().contains(reason), "{reason}: {b}");
            // ...the operator finds the reason in the audit log.
            let (_, audit) = w.app.get("/admin/v1/audit?tail=1000&limit=1000").await;
            let refusals: Vec<&Value> = audit["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["action"] == "token.attestation"
                        && e["outcome"] == "denied"
                        && e["details"]["reason"] == reason
                })
                .collect();
            assert_eq!(refusals.len(), 1, "{reason}: {audit}");
        }
        // Counted per client and app version (the verified versionCode; none on a refusal).
        let text = w.app.text("/metrics").await;
        for line in [
            "keygate_attestation_total{client=\"android-app\",platform=\"google\",tier=\"attested\",reason=\"ok\",app_version=\"42\"} 2",
            "keygate_attestation_total{client=\"android-app\",platform=\"google\",tier=\"failed\",reason=\"package_mismatch\",app_version=\"\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        w.app.stop().await;
    }
}
