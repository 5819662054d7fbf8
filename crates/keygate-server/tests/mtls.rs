//! RFC 8705 over real sockets, with certificates generated here (`rcgen`): the
//! `[tls.mtls]` listener, `tls_client_auth` (a CA in `client_ca`, the registered SAN or
//! subject DN) and `self_signed_tls_client_auth` (the registered certificate), the
//! refusals (`invalid_client` for a certificate from another CA, expired, naming another
//! subject, missing, or a secret instead), certificate-bound access tokens
//! (`cnf.x5t#S256`, checked here against a SHA-256 computed by the test) that the proxy
//! takes only over a connection presenting that certificate, introspection showing the
//! binding, and the metadata advertising all of it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::recording_upstream as upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::TestApp;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest as _;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A client certificate and its key.
struct ClientCert {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl ClientCert {
    fn identity(&self) -> reqwest::Identity {
        let pem = format!("{}{}", self.cert.pem(), self.key.serialize_pem());
        reqwest::Identity::from_pem(pem.as_bytes()).unwrap()
    }

    /// `x5t#S256` computed here: base64url (unpadded) SHA-256 of the DER.
    fn x5t(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(self.cert.der().as_ref()))
    }
}

fn client_params(cn: &str, sans: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn issued(ca: &Ca, params: CertificateParams) -> ClientCert {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    ClientCert { cert, key }
}

fn self_signed(cn: &str) -> ClientCert {
    let key = KeyPair::generate().unwrap();
    let cert = client_params(cn, &[]).self_signed(&key).unwrap();
    ClientCert { cert, key }
}

struct World {
    app: TestApp,
    server_ca: Ca,
    client_ca: Ca,
    mtls: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn world() -> World {
    let server_ca = ca("keygate test server CA");
    let client_ca = ca("keygate test client CA");
    let (server_pem, server_key, client_ca_pem) = {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params
            .signed_by(&key, &server_ca.cert, &server_ca.key)
            .unwrap();
        (cert.pem(), key.serialize_pem(), client_ca.cert.pem())
    };
    // A fixed port: the metadata's mtls_endpoint_aliases name it.
    let mtls_listen = common::free_addr();
    let app = TestApp::spawn_prepared(
        None,
        |dir: &Path| {
            std::fs::write(dir.join("server.crt"), &server_pem).unwrap();
            std::fs::write(dir.join("server.key"), &server_key).unwrap();
            std::fs::write(dir.join("clients-ca.pem"), &client_ca_pem).unwrap();
            let path = dir.join("keygate.toml");
            let mut config = std::fs::read_to_string(&path).unwrap();
            // The main listener stays plain HTTP on loopback; HTTPS beside it, and the
            // listener for clients with certificates.
            config.push_str(&format!(
                "\n[tls]\ncert = \"server.crt\"\nkey = \"server.key\"\nlisten = \"127.0.0.1:0\"\n\
                 [tls.mtls]\nlisten = \"{mtls_listen}\"\nclient_ca = \"clients-ca.pem\"\n",
            ));
            std::fs::write(path, config).unwrap();
        },
        &[],
    )
    .await
    .unwrap();
    let mtls = app.server.as_ref().unwrap().mtls_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = upstream(seen.clone()).await;
    let (s, _) = app
        .put("partner", json!({"value": "sk-partner-canary-7c1e"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let routes = format!(
        "[routes.partner]\nupstream = \"{up}\"\nsecret = \"partner\"\n\
         inject = {{ header = \"Authorization\", value = \"Bearer {{secret}}\" }}\n\
         allow = [\"GET /v1/*\"]\nscopes = [\"reports\"]\n"
    );
    let (s, b) = app
        .call(
            reqwest::Method::PUT,
            "/admin/v1/routes",
            Some(json!({"toml": routes})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    World {
        app,
        server_ca,
        client_ca,
        mtls,
        seen,
    }
}

impl World {
    /// An HTTPS client for the mTLS listener, presenting `cert` if given.
    fn client(&self, cert: Option<&ClientCert>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.server_ca.cert.pem().as_bytes()).unwrap();
        let mut b = reqwest::Client::builder()
            .add_root_certificate(ca)
            .resolve("localhost", self.mtls);
        if let Some(c) = cert {
            b = b.identity(c.identity());
        }
        b.build().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.mtls.port())
    }

    async fn register(&self, body: Value) -> (StatusCode, Value) {
        self.app
            .call(reqwest::Method::POST, "/admin/v1/clients", Some(body))
            .await
    }

    /// client_credentials on the mTLS listener as `client_id`, presenting `cert`.
    async fn token(&self, client_id: &str, cert: Option<&ClientCert>) -> (StatusCode, Value) {
        let r = self
            .client(cert)
            .post(self.url("/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("scope", "reports"),
            ])
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn proxy(&self, http: &reqwest::Client, base: &str, token: &str) -> StatusCode {
        http.get(format!("{base}/proxy/partner/v1/report"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth_issues_certificate_bound_tokens_the_proxy_holds_to_the_certificate() {
    let mut w = world().await;
    // The metadata says what the mTLS listener offers (RFC 8705 §3.3, §5).
    let (_, meta) = w.app.get("/.well-known/oauth-authorization-server").await;
    let methods = meta["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("\"tls_client_auth\""), "{methods}");
    assert!(
        methods.contains("\"self_signed_tls_client_auth\""),
        "{methods}"
    );
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(
        meta["mtls_endpoint_aliases"]["token_endpoint"],
        format!("https://{}/oauth2/token", w.mtls)
    );

    let (s, c) = w
        .register(json!({
            "name": "billing", "type": "confidential", "scopes": ["reports"],
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_san_dns": "billing.svc.test",
        }))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert!(c.get("client_secret").is_none(), "{c}");
    assert_eq!(c["token_endpoint_auth_method"], "tls_client_auth");
    assert_eq!(c["tls_identity"], json!({"san_dns": "billing.svc.test"}));
    let billing = c["client_id"].as_str().unwrap().to_owned();

    let good = issued(
        &w.client_ca,
        client_params("billing", &["billing.svc.test"]),
    );
    let (s, t) = w.token(&billing, Some(&good)).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    let token = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["cnf"], json!({"x5t#S256": good.x5t()}));

    // The proxy: with the certificate, forwarded with the key injected.
    let with_cert = w.client(Some(&good));
    let base = w.url("");
    assert_eq!(w.proxy(&with_cert, &base, &token).await, StatusCode::OK);
    assert_eq!(
        w.seen.lock().unwrap().as_slice(),
        ["Bearer sk-partner-canary-7c1e"]
    );
    // Without it (same listener, no certificate; the plain loopback listener) or with
    // another certificate: 401, and the upstream sees nothing.
    let stolen_use = [
        (w.client(None), base.clone()),
        (reqwest::Client::new(), w.app.base.clone()),
        (
            w.client(Some(&issued(
                &w.client_ca,
                client_params("billing", &["billing.svc.test"]),
            ))),
            base.clone(),
        ),
    ];
    for (http, at) in &stolen_use {
        let r = http
            .get(format!("{at}/proxy/partner/v1/report"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "at {at}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("sk-partner"), "{body}");
    }
    assert_eq!(w.seen.lock().unwrap().len(), 1);

    // Refused with invalid_client: no certificate, a certificate from another CA with the
    // same name, an expired one from the right CA, one naming another host, and the main
    // listener (which asks for no certificate).
    let other_ca = ca("someone else's CA");
    let mut expired = client_params("billing", &["billing.svc.test"]);
    expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let refused = [
        ("no certificate", None),
        (
            "another CA",
            Some(issued(
                &other_ca,
                client_params("billing", &["billing.svc.test"]),
            )),
        ),
        ("expired", Some(issued(&w.client_ca, expired))),
        (
            "another host",
            Some(issued(
                &w.client_ca,
                client_params("billing", &["reports.svc.test"]),
            )),
        ),
    ];
    for (what, cert) in &refused {
        let (s, b) = w.token(&billing, cert.as_ref()).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{what}: {b}"
        );
    }
    let r = w
        .app
        .http
        .post(format!("{}/oauth2/token", w.app.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &billing),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A secret is no way in for a certificate client.
    let r = w
        .client(Some(&good))
        .post(w.url("/oauth2/token"))
        .basic_auth(&billing, Some("kgs_guess"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A subject DN in RFC 4514 order matches the certificate's subject.
    let (s, c) = w
        .register(json!({
            "name": "ledger", "type": "confidential", "scopes": ["reports"],
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "O=Acme, CN=ledger",
        }))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let ledger = c["client_id"].as_str().unwrap().to_owned();
    let ledger_cert = issued(&w.client_ca, client_params("ledger", &[]));
    let (s, b) = w.token(&ledger, Some(&ledger_cert)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = w.token(&ledger, Some(&good)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_clients_authenticate_with_the_registered_certificate_only() {
    let mut w = world().await;
    let mine = self_signed("batch");
    let (s, c) = w
        .register(json!({
            "name": "batch", "type": "confidential", "scopes": ["reports"],
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "certificates": mine.cert.pem(),
        }))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["tls_identity"], json!({"x5t#S256": [mine.x5t()]}));
    let batch = c["client_id"].as_str().unwrap().to_owned();
    let (s, t) = w.token(&batch, Some(&mine)).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let token = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["cnf"]["x5t#S256"], mine.x5t());
    // Another self-signed certificate with the same subject is someone else.
    let (s, b) = w.token(&batch, Some(&self_signed("batch"))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    // Introspection (by the client itself, authenticated by its certificate) shows the
    // binding (RFC 8705 §3.2).
    let r = w
        .client(Some(&mine))
        .post(w.url("/oauth2/introspect"))
        .form(&[("client_id", batch.as_str()), ("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let i: Value = r.json().await.unwrap();
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["cnf"], json!({"x5t#S256": mine.x5t()}));

    let http = w.client(Some(&mine));
    assert_eq!(w.proxy(&http, &w.url(""), &token).await, StatusCode::OK);
    let stranger = w.client(Some(&self_signed("batch")));
    assert_eq!(
        w.proxy(&stranger, &w.url(""), &token).await,
        StatusCode::UNAUTHORIZED
    );
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_name_exactly_one_certificate_identity() {
    let mut w = world().await;
    let cases = [
        (
            json!({"name": "a", "type": "confidential", "token_endpoint_auth_method": "tls_client_auth"}),
            "exactly one of",
        ),
        (
            json!({"name": "b", "type": "confidential", "token_endpoint_auth_method": "tls_client_auth",
                   "tls_client_auth_san_dns": "a.test", "tls_client_auth_subject_dn": "CN=a"}),
            "exactly one of",
        ),
        (
            json!({"name": "c", "type": "confidential", "token_endpoint_auth_method": "tls_client_auth",
                   "tls_client_auth_subject_dn": "CN=a+OU=b"}),
            "attribute=value",
        ),
        (
            json!({"name": "d", "type": "confidential",
                   "token_endpoint_auth_method": "self_signed_tls_client_auth",
                   "certificates": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"}),
            "certificates",
        ),
        (
            json!({"name": "e", "type": "confidential",
                   "token_endpoint_auth_method": "self_signed_tls_client_auth"}),
            "needs certificates",
        ),
        (
            json!({"name": "f", "type": "public", "redirect_uris": ["com.example.app:/cb"],
                   "token_endpoint_auth_method": "tls_client_auth", "tls_client_auth_san_dns": "a.test"}),
            "confidential",
        ),
        (
            json!({"name": "g", "type": "confidential", "tls_client_auth_san_dns": "a.test"}),
            "token_endpoint_auth_method",
        ),
        (
            json!({"name": "h", "type": "confidential", "token_endpoint_auth_method": "private_key_jwt"}),
            "must be",
        ),
    ];
    for (body, expected) in cases {
        let (s, b) = w.register(body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        let message = b["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{body}: {b}");
    }
    let (_, list) = w.app.get("/admin/v1/clients").await;
    assert_eq!(list["clients"].as_array().unwrap().len(), 0, "{list}");
    w.app.stop().await;
}
