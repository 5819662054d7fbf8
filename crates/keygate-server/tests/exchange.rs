//! Token exchange (RFC 8693) over real HTTP: ID tokens signed by a JOSE library keygate
//! did not write (`jsonwebtoken`) with an RSA key generated here, trusted through
//! `[[tokens.issuers]]` with a JWKS file or a JWKS URL served by a local HTTP server.
//! The happy path (user created once, DPoP-bound tokens that introspect and refresh) on
//! SQLite and PostgreSQL, and every refusal with its error code and nothing stored.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::TestApp;
use common::idp::{b64, idp};
use jsonwebtoken::{EncodingKey, Header};
use keygate_auth::UnixTime;
use keygate_auth::dpop::{ProofClaims, create_proof};
use keygate_auth::jws::Algorithm;
use keygate_auth::keys::SigningKey;
use keygate_store::{SqlStore, Store, TokenStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ISS: &str = "https://idp.example.com";
const AUD: &str = "com.example.app";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(sub: &str) -> Value {
    let t = now();
    json!({"iss": ISS, "aud": AUD, "sub": sub, "iat": t - 5, "exp": t + 600,
           "email": "someone@example.com"})
}

/// `[[tokens.issuers]]` trusting the IdP through a JWKS file.
fn file_issuer(dir: &Path) {
    std::fs::write(dir.join("idp-jwks.json"), idp().jwks(&["k1"])).unwrap();
    append_config(
        dir,
        &format!(
            r#"
[[tokens.issuers]]
name      = "acme"
issuer    = "{ISS}"
audience  = "{AUD}"
jwks_file = "idp-jwks.json"
scopes    = ["ai", "maps"]
"#
        ),
    );
}

fn append_config(dir: &Path, text: &str) {
    let path = dir.join("keygate.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(text);
    std::fs::write(path, config).unwrap();
}

/// The phone: a device key for DPoP.
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

    fn proof(&self, app: &TestApp) -> String {
        let jti = hex::encode(keygate_auth::opaque::random_bytes::<16>());
        create_proof(
            &self.key,
            &ProofClaims {
                htm: "POST",
                htu: &format!("{}/oauth2/token", app.base),
                iat: UnixTime(now()),
                jti: &jti,
                nonce: None,
                access_token: None,
            },
        )
    }
}

async fn add_client(app: &TestApp, body: Value) -> Value {
    let (s, b) = app
        .call(reqwest::Method::POST, "/admin/v1/clients", Some(body))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// A public client (the app) with scopes beyond the issuer's.
async fn setup(app: &TestApp) -> Device {
    let b = add_client(
        app,
        json!({"name": "ios-app", "type": "public", "redirect_uris": ["com.example.app:/cb"],
               "scopes": ["ai", "maps", "reports"]}),
    )
    .await;
    Device::new(b["client_id"].as_str().unwrap())
}

async fn token_request(
    app: &TestApp,
    form: &[(&str, &str)],
    proof: Option<String>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .form(form);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Exchanges `subject_token` with a fresh DPoP proof, plus `extra` parameters.
async fn exchange(
    app: &TestApp,
    device: &Device,
    subject_token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", GRANT),
        ("client_id", device.client_id.as_str()),
        ("subject_token", subject_token),
        ("subject_token_type", ID_TOKEN),
    ];
    for (k, v) in extra {
        form.retain(|(n, _)| n != k);
        form.push((*k, *v));
    }
    token_request(app, &form, Some(device.proof(app))).await
}

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Users and families (revoked ones too), straight from the store.
async fn stored(store: &SqlStore) -> (usize, usize) {
    (
        store.list_users().await.unwrap().len(),
        store.list_families(None, true).await.unwrap().len(),
    )
}

async fn audit_text(app: &TestApp) -> String {
    let (s, audit) = app.get("/admin/v1/audit?tail=200").await;
    assert_eq!(s, StatusCode::OK);
    audit.to_string()
}

async fn happy_path(app: &TestApp) {
    let device = setup(app).await;
    let backend = add_client(
        app,
        json!({"name": "backend", "type": "confidential", "scopes": ["reports"]}),
    )
    .await;
    let store = SqlStore::connect(&app.store_url()).await.unwrap();
    let (users_before, _) = stored(&store).await;

    // Metadata advertises the grant.
    let (_, meta) = app.get("/.well-known/oauth-authorization-server").await;
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(GRANT)),
        "{meta}"
    );

    let id_token = idp().token("k1", &claims("user-123"));
    let (s, t) = exchange(app, &device, &id_token, &[]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    assert_eq!(
        t["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    // Default scope: the issuer's scopes ∩ the client's.
    assert_eq!(t["scope"], "ai maps");
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    let at = jwt_claims(&access);
    assert_eq!(at["cnf"]["jkt"], device.jkt(), "DPoP-bound");
    assert_eq!(at["client_id"], device.client_id);
    let user_id = at["sub"].as_str().unwrap().to_owned();

    // The user exists once, tied to the issuer and subject, without a password.
    let user = store
        .user_by_subject(ISS, "user-123")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.id, user_id);
    assert_eq!(user.name, "acme:user-123");
    assert!(user.password_hash.is_none());
    assert_eq!(stored(&store).await.0, users_before + 1);

    // A second exchange (a new ID token for the same subject) reuses the user.
    let again = idp().token("k1", &claims("user-123"));
    let (s, t2) = exchange(app, &device, &again, &[("scope", "ai")]).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    assert_eq!(t2["scope"], "ai");
    assert_eq!(
        jwt_claims(t2["access_token"].as_str().unwrap())["sub"],
        user_id
    );
    assert_eq!(stored(&store).await.0, users_before + 1);

    // The access token is accepted: introspection by a confidential client.
    let resp = app
        .http
        .post(format!("{}/oauth2/introspect", app.base))
        .basic_auth(
            backend["client_id"].as_str().unwrap(),
            backend["client_secret"].as_str(),
        )
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    let i: Value = resp.json().await.unwrap();
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["sub"], user_id);
    assert_eq!(i["cnf"]["jkt"], device.jkt());

    // The refresh token rotates, with a proof by the bound key.
    let (s, r) = token_request(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", device.client_id.as_str()),
        ],
        Some(device.proof(app)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_ne!(r["refresh_token"], refresh);
    assert_eq!(
        jwt_claims(r["access_token"].as_str().unwrap())["sub"],
        user_id
    );
    // ... and only with that key.
    let thief = Device::new(&device.client_id);
    let (s, r) = token_request(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", r["refresh_token"].as_str().unwrap()),
            ("client_id", device.client_id.as_str()),
        ],
        Some(thief.proof(app)),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");

    // Audited: the user's creation once, two issues; tokens only as keyed hashes.
    let audit = audit_text(app).await;
    assert_eq!(audit.matches("\"user.add\"").count(), 1, "{audit}");
    assert_eq!(audit.matches("token_exchange").count(), 3, "{audit}");
    for secret in [&id_token, &again, &access, &refresh] {
        assert!(!audit.contains(secret.as_str()));
    }
    assert!(!audit.contains(&id_token[id_token.len() - 40..]));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_with_a_jwks_file_creates_the_user_once_sqlite() {
    let mut app = TestApp::spawn_prepared(None, file_issuer, &[])
        .await
        .unwrap();
    happy_path(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_with_a_jwks_file_creates_the_user_once_postgres() {
    let Some(mut app) = TestApp::spawn_prepared(Some("token_exchange"), file_issuer, &[]).await
    else {
        return;
    };
    happy_path(&app).await;
    app.stop().await;
}

/// A tiny identity provider serving its JWKS over HTTP and counting the fetches.
struct JwksServer {
    url: String,
    jwks: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(initial: String) -> JwksServer {
    let jwks = Arc::new(Mutex::new(initial));
    let hits = Arc::new(AtomicUsize::new(0));
    let (j, h) = (jwks.clone(), hits.clone());
    let router = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (j, h) = (j.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let body = j.lock().unwrap().clone();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    JwksServer {
        url: format!("http://{addr}/jwks"),
        jwks,
        hits,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_with_a_jwks_url_refetches_on_rotation_but_not_on_every_unknown_kid() {
    let server = jwks_server(idp().jwks(&["k1"])).await;
    let url = server.url.clone();
    let mut app = TestApp::spawn_prepared(
        None,
        move |dir| {
            append_config(
                dir,
                &format!(
                    r#"
[[tokens.issuers]]
name     = "web"
issuer   = "{ISS}"
audience = "{AUD}"
jwks_url = "{url}"
algorithms = ["RS256"]
scopes   = ["ai"]
jwks_refresh_cooldown = "1s"
"#
                ),
            )
        },
        &[],
    )
    .await
    .unwrap();
    let device = setup(&app).await;
    // Fetched on first use, not at start.
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
    let (s, t) = exchange(&app, &device, &idp().token("k1", &claims("web-1")), &[]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["scope"], "ai");
    assert_eq!(t["token_type"], "DPoP");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // Made-up kids: refused, and the provider is asked at most once per cooldown.
    let start = std::time::Instant::now();
    for i in 0..6 {
        let token = idp().token(&format!("made-up-{i}"), &claims("web-1"));
        let (s, t) = exchange(&app, &device, &token, &[]).await;
        assert_eq!(
            (s, t["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request"))
        );
    }
    let allowed = 2 + start.elapsed().as_secs() as usize;
    let hits = server.hits.load(Ordering::SeqCst);
    assert!(hits <= allowed, "{hits} fetches");
    println!("6 unknown-kid exchanges: {} JWKS fetches", hits - 1);

    // The provider rotates to a new key: after the cooldown, the new kid is fetched.
    *server.jwks.lock().unwrap() = idp().jwks(&["k1", "k2"]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = server.hits.load(Ordering::SeqCst);
    let (s, t) = exchange(&app, &device, &idp().token("k2", &claims("web-1")), &[]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(server.hits.load(Ordering::SeqCst), before + 1);
    // And is cached from then on.
    let (s, _) = exchange(&app, &device, &idp().token("k2", &claims("web-1")), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(server.hits.load(Ordering::SeqCst), before + 1);
    app.stop().await;
}

/// One refusal: the error code, and no user or family stored.
async fn refused(
    app: &TestApp,
    store: &SqlStore,
    device: &Device,
    what: &str,
    token: &str,
    extra: &[(&str, &str)],
    code: &str,
) {
    let before = stored(store).await;
    let (s, body) = exchange(app, device, token, extra).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    // Generic descriptions only: nothing of the token or the reason.
    let text = body.to_string();
    assert!(!text.contains(&token[..token.len().min(30)]), "{what}");
    assert_eq!(stored(store).await, before, "{what}: nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_subject_token_is_refused_and_nothing_is_stored() {
    let mut app = TestApp::spawn_prepared(None, file_issuer, &[])
        .await
        .unwrap();
    let device = setup(&app).await;
    let store = SqlStore::connect(&app.store_url()).await.unwrap();
    let idp = idp();
    let with = |k: &str, v: Value| {
        let mut c = claims("user-x");
        c[k] = v;
        idp.token("k1", &c)
    };
    let t = now();
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "k1", "typ": "JWT"})
            .to_string()
            .as_bytes()),
        b64(claims("user-x").to_string().as_bytes())
    );
    // Algorithm confusion: HS256 keyed with the RSA public key's bytes.
    let confused = {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        let key = EncodingKey::from_secret(idp.public_pem.as_bytes());
        jsonwebtoken::encode(&header, &claims("user-x"), &key).unwrap()
    };
    let confused_n = {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        let key = EncodingKey::from_secret(idp.n.as_bytes());
        jsonwebtoken::encode(&header, &claims("user-x"), &key).unwrap()
    };
    let tampered = {
        let good = idp.token("k1", &claims("user-x"));
        let (input, sig) = good.rsplit_once('.').unwrap();
        let mut sig: Vec<char> = sig.chars().collect();
        sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
        format!("{input}.{}", sig.into_iter().collect::<String>())
    };
    let swapped = {
        // A valid signature over other claims.
        let good = idp.token("k1", &claims("user-x"));
        let parts: Vec<&str> = good.split('.').collect();
        let evil = b64(claims("admin").to_string().as_bytes());
        format!("{}.{evil}.{}", parts[0], parts[2])
    };
    let no_sub = {
        let mut c = claims("user-x");
        c.as_object_mut().unwrap().remove("sub");
        idp.token("k1", &c)
    };
    let cases: Vec<(&str, String)> = vec![
        ("wrong iss", with("iss", json!("https://other.example.com"))),
        (
            "iss with a trailing slash",
            with("iss", json!(format!("{ISS}/"))),
        ),
        ("wrong aud", with("aud", json!("com.example.other"))),
        ("aud array without ours", with("aud", json!(["a", "b"]))),
        ("expired", with("exp", json!(t - 120))),
        ("nbf in the future", with("nbf", json!(t + 300))),
        ("iat in the future", with("iat", json!(t + 300))),
        (
            "alg not allowed (RS384)",
            idp.sign_with(jsonwebtoken::Algorithm::RS384, "k1", &claims("user-x")),
        ),
        (
            "alg not allowed (PS256)",
            idp.sign_with(jsonwebtoken::Algorithm::PS256, "k1", &claims("user-x")),
        ),
        ("alg none", unsigned),
        ("HS256 keyed with the RSA public key PEM", confused),
        ("HS256 keyed with the modulus", confused_n),
        ("unknown kid", idp.token("k9", &claims("user-x"))),
        ("tampered signature", tampered),
        ("claims swapped under a signature", swapped),
        ("subject claim missing", no_sub),
        ("subject not a string", with("sub", json!(42))),
        ("not a JWT", "not.a.jwt".into()),
        ("garbage", "x".into()),
    ];
    for (what, token) in &cases {
        refused(&app, &store, &device, what, token, &[], "invalid_request").await;
    }
    let good = idp.token("k1", &claims("user-x"));
    // Wrong token types and unsupported requests.
    for (what, extra, code) in [
        (
            "access token as subject",
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            "invalid_request",
        ),
        (
            "SAML assertion type",
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:saml2",
            ),
            "invalid_request",
        ),
        (
            "requested SAML",
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:saml2",
            ),
            "invalid_request",
        ),
        (
            "actor token",
            ("actor_token", "whatever"),
            "invalid_request",
        ),
        (
            "another audience",
            ("audience", "https://api.example.com"),
            "invalid_target",
        ),
        // Beyond the issuer's scopes (the client has `reports`).
        (
            "scope beyond the issuer's",
            ("scope", "ai reports"),
            "invalid_scope",
        ),
        ("scope nobody has", ("scope", "admin"), "invalid_scope"),
    ] {
        refused(&app, &store, &device, what, &good, &[extra], code).await;
    }
    // Missing subject_token.
    let (s, b) = token_request(
        &app,
        &[
            ("grant_type", GRANT),
            ("client_id", device.client_id.as_str()),
            ("subject_token_type", ID_TOKEN),
        ],
        Some(device.proof(&app)),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );

    // A public client without a DPoP proof (tokens.dpop = "required").
    let before = stored(&store).await;
    let (s, b) = token_request(
        &app,
        &[
            ("grant_type", GRANT),
            ("client_id", device.client_id.as_str()),
            ("subject_token", good.as_str()),
            ("subject_token_type", ID_TOKEN),
        ],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"], "invalid_dpop_proof");
    assert_eq!(
        stored(&store).await,
        before,
        "nothing stored without a proof"
    );
    // An unknown client.
    let (s, b) = token_request(
        &app,
        &[
            ("grant_type", GRANT),
            ("client_id", "nobody"),
            ("subject_token", good.as_str()),
            ("subject_token_type", ID_TOKEN),
        ],
        Some(device.proof(&app)),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    assert!(
        store
            .user_by_subject(ISS, "user-x")
            .await
            .unwrap()
            .is_none(),
        "no user created by any refusal"
    );

    // Refusals are audited with reasons, never with the token.
    let audit = audit_text(&app).await;
    assert!(audit.contains("\"token.exchange\""), "{audit}");
    for reason in [
        "wrong audience",
        "expired",
        "alg none",
        "symmetric alg",
        "unknown kid",
    ] {
        assert!(audit.contains(reason), "{reason} audited");
    }
    for (_, token) in &cases {
        if token.len() > 20 {
            assert!(!audit.contains(token.as_str()));
        }
    }

    // The good token still works afterwards.
    let (s, t) = exchange(&app, &device, &good, &[]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    store.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_cannot_exchange_again() {
    let mut app = TestApp::spawn_prepared(None, file_issuer, &[])
        .await
        .unwrap();
    let device = setup(&app).await;
    let store = SqlStore::connect(&app.store_url()).await.unwrap();
    let (s, t) = exchange(&app, &device, &idp().token("k1", &claims("bob|42")), &[]).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let user = store.user_by_subject(ISS, "bob|42").await.unwrap().unwrap();
    // A subject with characters outside plain names gets a cleaned, tagged name.
    assert!(user.name.starts_with("acme:bob_42~"), "{}", user.name);
    let (s, b) = app
        .call(
            reqwest::Method::POST,
            &format!("/admin/v1/users/{}/disable", user.name),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let token = idp().token("k1", &claims("bob|42"));
    refused(
        &app,
        &store,
        &device,
        "disabled user",
        &token,
        &[],
        "invalid_request",
    )
    .await;
    let audit = audit_text(&app).await;
    assert!(audit.contains("user disabled"), "{audit}");
    store.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_client_may_exchange_without_dpop_and_gets_bearer_tokens() {
    let mut app = TestApp::spawn_prepared(None, file_issuer, &[])
        .await
        .unwrap();
    let backend = add_client(
        &app,
        json!({"name": "web-backend", "type": "confidential", "scopes": ["maps"]}),
    )
    .await;
    let token = idp().token("k1", &claims("carol"));
    let resp = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .basic_auth(
            backend["client_id"].as_str().unwrap(),
            backend["client_secret"].as_str(),
        )
        .form(&[
            ("grant_type", GRANT),
            ("subject_token", token.as_str()),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "maps");
    assert!(jwt_claims(t["access_token"].as_str().unwrap())["cnf"].is_null());
    // A wrong secret is refused before the token is looked at.
    let resp = app
        .http
        .post(format!("{}/oauth2/token", app.base))
        .basic_auth(backend["client_id"].as_str().unwrap(), Some("wrong"))
        .form(&[
            ("grant_type", GRANT),
            ("subject_token", token.as_str()),
            ("subject_token_type", ID_TOKEN),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_jwks_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let init = keygate_server::init_dir(dir.path(), common::free_addr())
        .await
        .unwrap();
    file_issuer(dir.path());
    // Private key material in a JWKS is a misconfiguration, not something to trust.
    std::fs::write(
        dir.path().join("idp-jwks.json"),
        json!({"keys": [{"kty": "RSA", "n": idp().n, "e": idp().e, "d": "AQAB"}]}).to_string(),
    )
    .unwrap();
    let config = common::load_config(dir.path(), &[]);
    let err = match keygate_server::start(config).await {
        Ok(_) => panic!("started with a private JWKS"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("acme") && err.contains("private"), "{err}");
    drop(init);
}
