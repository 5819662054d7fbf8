//! Upstream TLS: certificates are always verified (S31), an extra CA can be trusted per
//! route, HTTP/2 is negotiated by ALPN, and a client certificate is presented for
//! upstream mTLS. Certificates are made in the test with rcgen.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn leaf(ca: &Ca, server: bool) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert, key)
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "keygate-proxy-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Clone, Debug)]
struct Seen {
    version: http::Version,
    client_cert: bool,
    api_key: Option<String>,
}

/// A TLS upstream offering h2 and http/1.1; with `client_ca`, it requires a client
/// certificate issued by it.
async fn tls_upstream(
    server_ca: &Ca,
    client_ca: Option<&Ca>,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let (cert, key) = leaf(server_ca, true);
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(ca.cert.der().to_vec()))
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen2);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let service = service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        seen.lock().unwrap().push(Seen {
                            version: req.version(),
                            client_cert,
                            api_key: req
                                .headers()
                                .get("x-api-key")
                                .map(|v| v.to_str().unwrap().to_owned()),
                        });
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            format!("{:?}", req.version()),
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

const KEY: &str = "sk-tls-CANARY-0000";

fn route(name: &str, port: u16, tls: &str) -> String {
    format!(
        r#"
[routes.{name}]
upstream = "https://localhost:{port}"
secret = "k"
inject = {{ header = "X-Api-Key" }}
allow = ["GET /v1/x"]
{tls}
"#
    )
}

#[tokio::test]
async fn extra_ca_is_trusted_and_http2_is_negotiated() {
    let server_ca = ca("upstream CA");
    let (addr, seen) = tls_upstream(&server_ca, None).await;
    let dir = temp_dir();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, server_ca.cert.pem()).unwrap();
    let routes = route(
        "tls",
        addr.port(),
        &format!("tls = {{ ca_file = {:?} }}", ca_file.to_str().unwrap()),
    );
    let proxy = start_proxy(&routes, &[("k", KEY)]).await;
    let r = send(&proxy, "GET", "/proxy/tls/v1/x", &[], "").await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(&r.body[..], b"HTTP/2.0");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, http::Version::HTTP_2);
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
}

#[tokio::test]
async fn s31_upstream_certificates_are_always_verified() {
    let server_ca = ca("untrusted CA");
    let (addr, seen) = tls_upstream(&server_ca, None).await;
    // No extra CA: the web PKI roots do not include the test CA, so the handshake fails
    // and the key is never sent.
    let proxy = start_proxy(&route("tls", addr.port(), ""), &[("k", KEY)]).await;
    let r = send(&proxy, "GET", "/proxy/tls/v1/x", &[], "").await;
    assert_eq!(r.status, 502);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("\"fault\":\"upstream\""), "{body}");
    assert!(!body.contains("localhost") && !body.contains(KEY), "{body}");
    assert!(seen.lock().unwrap().is_empty());

    // A CA that did not issue the upstream's certificate does not help either.
    let other = ca("other CA");
    let dir = temp_dir();
    let ca_file = dir.join("other.pem");
    std::fs::write(&ca_file, other.cert.pem()).unwrap();
    let routes = route(
        "tls",
        addr.port(),
        &format!("tls = {{ ca_file = {:?} }}", ca_file.to_str().unwrap()),
    );
    let proxy = start_proxy(&routes, &[("k", KEY)]).await;
    assert_eq!(
        send(&proxy, "GET", "/proxy/tls/v1/x", &[], "").await.status,
        502
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn upstream_mtls_presents_the_client_certificate() {
    let server_ca = ca("upstream CA");
    let client_ca = ca("client CA");
    let (addr, seen) = tls_upstream(&server_ca, Some(&client_ca)).await;
    let (client_cert, client_key) = leaf(&client_ca, false);
    let dir = temp_dir();
    let ca_file = dir.join("ca.pem");
    let cert_file = dir.join("client.pem");
    let key_file = dir.join("client.key");
    std::fs::write(&ca_file, server_ca.cert.pem()).unwrap();
    std::fs::write(&cert_file, client_cert.pem()).unwrap();
    std::fs::write(&key_file, client_key.serialize_pem()).unwrap();
    let with_cert = route(
        "mtls",
        addr.port(),
        &format!(
            "tls = {{ ca_file = {:?}, client_cert_file = {:?}, client_key_file = {:?} }}",
            ca_file.to_str().unwrap(),
            cert_file.to_str().unwrap(),
            key_file.to_str().unwrap()
        ),
    );
    let without_cert = route(
        "plain",
        addr.port(),
        &format!("tls = {{ ca_file = {:?} }}", ca_file.to_str().unwrap()),
    );
    let proxy = start_proxy(&format!("{with_cert}\n{without_cert}"), &[("k", KEY)]).await;
    assert_eq!(
        send(&proxy, "GET", "/proxy/plain/v1/x", &[], "")
            .await
            .status,
        502
    );
    let r = send(&proxy, "GET", "/proxy/mtls/v1/x", &[], "").await;
    assert_eq!(r.status, 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].client_cert);
}

#[test]
fn bad_tls_files_are_reported_at_prepare_time() {
    let dir = temp_dir();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    for tls in [
        format!("tls = {{ ca_file = {:?} }}", junk.to_str().unwrap()),
        format!(
            "tls = {{ ca_file = {:?} }}",
            dir.join("missing.pem").to_str().unwrap()
        ),
        format!(
            "tls = {{ client_cert_file = {:?}, client_key_file = {:?} }}",
            junk.to_str().unwrap(),
            junk.to_str().unwrap()
        ),
    ] {
        let table = keygate_proxy::RouteTable::from_toml(&route("r", 443, &tls)).unwrap();
        let forwarder = keygate_proxy::Forwarder::new(
            keygate_proxy::ForwarderConfig::default(),
            Arc::new(keygate_proxy::usage::NoUsage),
            Arc::new(keygate_proxy::usage::ProxyMetrics::new()),
        );
        let route = table.iter().next().unwrap();
        let err = forwarder.prepare(route).unwrap_err().to_string();
        assert!(!err.contains("not a certificate"), "{err}");
    }
}
