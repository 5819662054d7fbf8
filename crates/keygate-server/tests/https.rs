//! HTTPS termination over real sockets with certificates generated here (`rcgen`): TLS 1.2
//! and 1.3 handshakes, HTTP/2 and HTTP/1.1 by ALPN, HSTS; TLS 1.0/1.1 and weak suites
//! refused at the handshake (hand-built ClientHellos, answered with an alert); a
//! certificate reload while a keep-alive connection stays up, a bad reload that keeps the
//! old certificate; a separate HTTPS listener beside loopback HTTP; bad files stop the
//! start naming the file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::TestApp;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "keygate test CA");
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A leaf for localhost and 127.0.0.1 signed by `ca`, written as `server.crt`/`server.key`.
fn leaf(ca: &Ca, dir: &Path) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    // Written to a temporary name and renamed, as a certificate manager would.
    std::fs::write(dir.join("server.key.tmp"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("server.crt.tmp"), cert.pem()).unwrap();
    std::fs::rename(dir.join("server.key.tmp"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("server.crt.tmp"), dir.join("server.crt")).unwrap();
    cert.der().to_vec()
}

fn tls_table(extra: &str) -> String {
    format!(
        "\n[tls]\ncert = \"server.crt\"\nkey = \"server.key\"\nreload_interval = \"100ms\"\n{extra}\n"
    )
}

/// The server with a leaf from `ca` and `[tls]` (plus `extra` lines in that table).
async fn tls_app(ca: &Ca, extra: &str) -> TestApp {
    TestApp::spawn_prepared(
        None,
        |dir| {
            leaf(ca, dir);
            append(dir, &tls_table(extra));
        },
        &[],
    )
    .await
    .unwrap()
}

fn append(dir: &Path, text: &str) {
    let path = dir.join("keygate.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(text);
    std::fs::write(path, config).unwrap();
}

fn client_config(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: SocketAddr, config: rustls::ClientConfig) -> Tls {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

fn presented(conn: &Tls) -> Vec<u8> {
    conn.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// One keep-alive `GET /healthz` on `conn`; the status line and headers.
async fn healthz(conn: &mut Tls) -> String {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"ok\"}") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn tls_1_2_and_1_3_serve_http1_and_h2_with_hsts() {
    let ca = ca();
    let app = tls_app(&ca, "").await;
    let addr = app.addr();
    for (version, name) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let mut conn = connect(addr, client_config(&ca, &[version])).await;
        assert_eq!(conn.get_ref().1.protocol_version(), Some(name));
        let head = healthz(&mut conn).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("strict-transport-security: max-age=31536000"),
            "{head}"
        );
    }
    // A real HTTP client: HTTP/2 by ALPN, and HTTP/1.1 when asked for.
    let ca_pem = reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap();
    let base = format!("https://localhost:{}", addr.port());
    for (h1, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(ca_pem.clone())
            .resolve("localhost", addr);
        if h1 {
            b = b.http1_only();
        }
        let resp = b
            .build()
            .unwrap()
            .get(format!("{base}/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), version);
        assert!(resp.headers().contains_key("strict-transport-security"));
    }
    // Plain HTTP to the HTTPS port gets no answer in HTTP.
    let (text, _) = common::raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
}

/// A ClientHello offering `version` (no supported_versions extension) and `suites`.
fn client_hello(version: [u8; 2], suites: &[[u8; 2]]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    let suite_bytes: Vec<u8> = suites.iter().flatten().copied().collect();
    body.extend_from_slice(&(suite_bytes.len() as u16).to_be_bytes());
    body.extend_from_slice(&suite_bytes);
    body.extend_from_slice(&[1, 0]); // null compression
    // server_name "localhost", then signature_algorithms (rsa_pss, ecdsa) and groups.
    let mut ext = Vec::new();
    let host = b"localhost";
    let mut sni = vec![0, 0];
    sni.extend_from_slice(&((host.len() + 5) as u16).to_be_bytes()); // extension length
    sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes()); // server name list
    sni.push(0); // host_name
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    ext.extend_from_slice(&sni);
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]); // secp256r1
    ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// Sends a ClientHello and returns the first record the server answers with.
async fn first_record(addr: SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn old_protocols_and_weak_suites_are_refused_at_the_handshake() {
    let ca = ca();
    let app = tls_app(&ca, "").await;
    let addr = app.addr();
    const AES128_GCM: [u8; 2] = [0xc0, 0x2b]; // ECDHE-ECDSA-AES128-GCM-SHA256
    const RSA_AES128_CBC: [u8; 2] = [0x00, 0x2f]; // TLS_RSA_WITH_AES_128_CBC_SHA
    const RC4: [u8; 2] = [0x00, 0x05]; // TLS_RSA_WITH_RC4_128_SHA
    const DES3: [u8; 2] = [0x00, 0x0a]; // TLS_RSA_WITH_3DES_EDE_CBC_SHA
    const ECDHE_CBC: [u8; 2] = [0xc0, 0x09]; // ECDHE-ECDSA-AES128-SHA (CBC)

    // The control: a TLS 1.2 hello with a strong suite gets a ServerHello (handshake, 0x16).
    let ok = first_record(addr, &client_hello([3, 3], &[AES128_GCM])).await;
    assert_eq!(ok.first(), Some(&0x16), "{ok:?}");
    // Alerts (RFC 8446 §6): 70 protocol_version, 40 handshake_failure.
    for (what, version, suites, alert) in [
        (
            "TLS 1.0",
            [3u8, 1u8],
            vec![AES128_GCM, RSA_AES128_CBC, ECDHE_CBC],
            70u8,
        ),
        (
            "TLS 1.1",
            [3, 2],
            vec![AES128_GCM, RSA_AES128_CBC, ECDHE_CBC],
            70,
        ),
        (
            "TLS 1.2 with weak suites only",
            [3, 3],
            vec![RC4, DES3, RSA_AES128_CBC, ECDHE_CBC],
            40,
        ),
    ] {
        let answer = first_record(addr, &client_hello(version, &suites)).await;
        // An alert record (0x15), fatal (2); never a ServerHello.
        assert_eq!(answer.first(), Some(&0x15), "{what}: {answer:?}");
        assert_eq!(answer.get(5), Some(&2), "{what}: fatal alert");
        assert_eq!(answer.get(6), Some(&alert), "{what}: {answer:?}");
    }
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_while_a_connection_stays_up() {
    let ca = ca();
    let dir_holder = std::sync::Mutex::new(None);
    let app = TestApp::spawn_prepared(
        None,
        |dir| {
            leaf(&ca, dir);
            append(dir, &tls_table(""));
            *dir_holder.lock().unwrap() = Some(dir.to_path_buf());
        },
        &[],
    )
    .await
    .unwrap();
    let dir = dir_holder.lock().unwrap().clone().unwrap();
    let addr = app.addr();
    let config = || client_config(&ca, &[&rustls::version::TLS13]);
    let mut long_lived = connect(addr, config()).await;
    let first = presented(&long_lived);
    assert!(healthz(&mut long_lived).await.starts_with("HTTP/1.1 200"));

    let second = leaf(&ca, &dir);
    assert_ne!(first, second);
    let mut seen = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = presented(&connect(addr, config()).await);
        if seen == second {
            break;
        }
    }
    assert_eq!(seen, second, "new handshakes get the new certificate");
    assert!(
        healthz(&mut long_lived).await.starts_with("HTTP/1.1 200"),
        "the connection made before the reload still works"
    );

    // A broken file: the certificate in use stays.
    std::fs::write(
        dir.join("server.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(presented(&connect(addr, config()).await), second);
    assert!(healthz(&mut long_lived).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_separate_https_listener_runs_beside_loopback_http() {
    let ca = ca();
    let app = tls_app(&ca, "listen = \"127.0.0.1:0\"").await;
    // Plain HTTP on `listen` (loopback), as before.
    let (s, _) = app.get("/admin/v1/secrets").await;
    assert_eq!(s, reqwest::StatusCode::OK);
    let https = app.server.as_ref().unwrap().https_addr().unwrap();
    assert_ne!(https, app.addr());
    let mut conn = connect(https, client_config(&ca, &[&rustls::version::TLS12])).await;
    assert!(healthz(&mut conn).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn bad_certificate_files_stop_the_start_naming_the_file() {
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    let init = keygate_server::init_dir(dir.path(), common::free_addr())
        .await
        .unwrap();
    drop(init);
    leaf(&ca, dir.path());
    // Another key than the certificate's.
    let other = KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("other.key"), other.serialize_pem()).unwrap();
    append(
        dir.path(),
        "\n[tls]\ncert = \"server.crt\"\nkey = \"other.key\"\n",
    );
    let e = keygate_server::start(common::load_config(dir.path(), &[]))
        .await
        .err()
        .unwrap();
    let text = format!("{e:#}");
    assert!(
        text.contains("other.key is not the private key of the certificate in"),
        "{text}"
    );
}

/// A client certificate for `cn` signed by `ca`, as one PEM (key and certificate).
fn client_identity(ca: &Ca, cn: &str) -> reqwest::Identity {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let pem = format!("{}{}", key.serialize_pem(), cert.pem());
    reqwest::Identity::from_pem(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn the_admin_listener_requires_a_client_certificate_from_its_ca() {
    let server_ca = ca();
    let admin_ca = ca();
    let stranger_ca = ca();
    let app = TestApp::spawn_prepared(
        None,
        |dir| {
            leaf(&server_ca, dir);
            std::fs::write(dir.join("admin-ca.pem"), admin_ca.cert.pem()).unwrap();
            append(dir, &tls_table(""));
        },
        // keygate.toml already has an [admin] table.
        &[
            ("KEYGATE_ADMIN__LISTEN", "127.0.0.1:0"),
            ("KEYGATE_ADMIN__CLIENT_CA", "admin-ca.pem"),
        ],
    )
    .await
    .unwrap();
    let admin = app.server.as_ref().unwrap().admin_addr().unwrap();
    let root = reqwest::Certificate::from_pem(server_ca.cert.pem().as_bytes()).unwrap();
    let client = |identity: Option<reqwest::Identity>, addr: SocketAddr| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(root.clone())
            .resolve("localhost", addr);
        if let Some(i) = identity {
            b = b.identity(i);
        }
        b.build().unwrap()
    };
    let url = |addr: SocketAddr, path: &str| format!("https://localhost:{}{path}", addr.port());
    let token = secrecy::ExposeSecret::expose_secret(&app.token).to_owned();

    // The right certificate and the admin token: the admin API, audited with the certificate.
    let alice = client(Some(client_identity(&admin_ca, "alice-laptop")), admin);
    let r = alice
        .put(url(admin, "/admin/v1/secrets/openai"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "value": "sk-test-value-123456" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let audit: serde_json::Value = alice
        .get(url(admin, "/admin/v1/audit?tail=5"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        audit.to_string().contains("(CN=alice-laptop, sha256:"),
        "the audit names the certificate: {audit}"
    );
    // The certificate alone is not enough: the token is still required.
    let r = alice
        .get(url(admin, "/admin/v1/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Only the admin API (and health) on the admin listener.
    for path in ["/oauth2/jwks", "/proxy/x/y", "/ci/v1/secrets"] {
        let r = alice.get(url(admin, path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }

    // No certificate, or one from another CA: no handshake.
    for (what, identity) in [
        ("no certificate", None),
        ("another CA", Some(client_identity(&stranger_ca, "mallory"))),
    ] {
        let r = client(identity, admin)
            .get(url(admin, "/admin/v1/secrets"))
            .bearer_auth(&token)
            .send()
            .await;
        assert!(r.is_err(), "{what}: {r:?}");
    }

    // The public listener no longer serves the admin API.
    let public = client(None, app.addr());
    let r = public
        .get(url(app.addr(), "/admin/v1/secrets"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = public
        .get(url(app.addr(), "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_published_pin_set_is_signed_and_names_the_current_and_backup_keys() {
    use base64::Engine;
    use sha2::Digest;
    let ca = ca();
    let backup = KeyPair::generate().unwrap();
    let backup_pem = backup.public_key_pem();
    let app = TestApp::spawn_prepared(
        None,
        |dir| {
            leaf(&ca, dir);
            std::fs::write(dir.join("backup.pub"), &backup_pem).unwrap();
            append(
                dir,
                &tls_table("[tls.pins]\nbackup = [\"backup.pub\"]\nmax_age = \"30d\""),
            );
        },
        &[],
    )
    .await
    .unwrap();
    let pin =
        |spki: &[u8]| base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki));
    let server_key =
        KeyPair::from_pem(&std::fs::read_to_string(app.dir.path().join("server.key")).unwrap())
            .unwrap();
    let (current, backup_pin) = (
        pin(&server_key.public_key_der()),
        pin(&backup.public_key_der()),
    );

    let addr = app.addr();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let url = |p: &str| format!("https://localhost:{}{p}", addr.port());
    let resp = client
        .get(url("/.well-known/keygate-pins"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/jwt");
    let jwt = resp.text().await.unwrap();
    let jwks: serde_json::Value = client
        .get(url("/oauth2/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let parsed = keygate_auth::jws::parse_compact(&jwt).unwrap();
    let kid = parsed.header().kid().unwrap().to_owned();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap();
    let key = keygate_auth::jwk::PublicJwk::from_json(jwk.as_object().unwrap())
        .unwrap()
        .verification_key()
        .unwrap();
    parsed.verify(&key).unwrap();
    assert_eq!(parsed.header().typ(), Some("keygate-pins+jwt"));
    let claims = parsed.claims().unwrap();
    assert_eq!(claims["host"], "127.0.0.1");
    let exp = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(exp, 30 * 86_400);
    assert_eq!(
        serde_json::Value::Array(claims["pins"].as_array().unwrap().clone()),
        serde_json::json!([
            {"sha256": current, "role": "current"},
            {"sha256": backup_pin, "role": "backup"},
        ])
    );
    // A set changed on the way does not verify.
    let (head, rest) = jwt.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::json!({"pins": [{"sha256": "AAAA", "role": "current"}]}).to_string());
    let forged = keygate_auth::jws::parse_compact(&format!("{head}.{other}.{sig}")).unwrap();
    assert!(forged.verify(&key).is_err());
}

#[tokio::test]
async fn the_certificate_follows_the_server_name_the_client_asks_for() {
    let ca = ca();
    let api_der = std::sync::Mutex::new(Vec::new());
    let app = TestApp::spawn_prepared(
        None,
        |dir| {
            leaf(&ca, dir);
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec!["api.example.test".to_owned()])
                .unwrap()
                .signed_by(&key, &ca.cert, &ca.key)
                .unwrap();
            std::fs::write(dir.join("api.crt"), cert.pem()).unwrap();
            std::fs::write(dir.join("api.key"), key.serialize_pem()).unwrap();
            *api_der.lock().unwrap() = cert.der().to_vec();
            append(
                dir,
                &tls_table(
                    "[[tls.sni]]\nnames = [\"api.example.test\"]\ncert = \"api.crt\"\nkey = \"api.key\"",
                ),
            );
        },
        &[],
    )
    .await
    .unwrap();
    let addr = app.addr();
    let handshake = |name: &'static str| {
        let config = client_config(&ca, &[&rustls::version::TLS13]);
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from(name).unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map(|c| presented(&c))
        }
    };
    let api = handshake("api.example.test").await.unwrap();
    assert_eq!(api, *api_der.lock().unwrap(), "the SNI entry's certificate");
    let default = handshake("localhost").await.unwrap();
    assert_ne!(default, api, "the default certificate for other names");
    // A name neither certificate covers: the default is offered, and the client refuses it.
    assert!(handshake("other.example.test").await.is_err());
}

/// Records the OCSP response the server stapled, then verifies the chain as usual.
#[derive(Debug)]
struct StapleRecorder {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    stapled: std::sync::Mutex<Option<Vec<u8>>>,
}

impl rustls::client::danger::ServerCertVerifier for StapleRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.stapled.lock().unwrap() = Some(ocsp_response.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `ocsp = FILE` is stapled on TLS 1.2 and 1.3 handshakes, and TLS works on the per-core
/// runtime (each connection's handshake and requests on one core's runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ocsp_response_is_stapled_and_the_per_core_runtime_speaks_tls() {
    let ca = ca();
    // keygate staples the file as it is (the CA's responder made it); any bytes do here.
    let response = b"\x30\x03\x0a\x01\x00 a DER OCSP response from the CA".to_vec();
    let staple = response.clone();
    let mut app = TestApp::spawn_prepared(
        None,
        |dir| {
            leaf(&ca, dir);
            std::fs::write(dir.join("ocsp.der"), &staple).unwrap();
            append(dir, &tls_table("ocsp = \"ocsp.der\""));
        },
        &[("KEYGATE_HTTP__RUNTIME", "per_core")],
    )
    .await
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let recorder = Arc::new(StapleRecorder {
            inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots.clone()),
                provider.clone(),
            )
            .build()
            .unwrap(),
            stapled: std::sync::Mutex::new(None),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut conn = connect(app.addr(), config).await;
        let head = healthz(&mut conn).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{version:?}: {head}");
        assert_eq!(
            recorder.stapled.lock().unwrap().as_deref(),
            Some(response.as_slice()),
            "{version:?}"
        );
    }
    app.stop().await;
}

/// HTTP/2's header block limit (64 KiB): a request under it is served, one over it is not.
#[tokio::test]
async fn http2_refuses_a_header_block_over_its_limit() {
    let ca = ca();
    let app = tls_app(&ca, "").await;
    let addr = app.addr();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", addr.port());
    let r = http
        .get(&url)
        .header("x-padding", "a".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let big = http
        .get(&url)
        .header("x-padding", "a".repeat(80 * 1024))
        .send()
        .await;
    match big {
        Ok(r) => assert_eq!(r.status(), 431, "{r:?}"),
        Err(e) => assert!(e.is_request(), "{e:?}"),
    }
}
