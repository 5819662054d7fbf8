#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

//! `fetch_chain` against a local TLS server (no network beyond the loopback).

use std::sync::Arc;

use keygate_pins::{Pin, fetch_chain, read_ca_certificates};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt as _;

struct Server {
    port: u16,
    ca_pem: String,
    leaf_pin: Pin,
    ca_pin: Pin,
}

async fn serve() -> Server {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keygate fetch test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(leaf.der().to_vec()),
                CertificateDer::from(ca.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    Server {
        port,
        ca_pem: ca.pem(),
        leaf_pin: Pin::of_spki_der(&leaf_key.public_key_der()),
        ca_pin: Pin::of_spki_der(&ca_key.public_key_der()),
    }
}

#[tokio::test]
async fn fetches_and_pins_a_chain_that_verifies_against_the_given_ca() {
    let server = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &server.ca_pem).unwrap();
    let roots = read_ca_certificates(&ca_file).unwrap();
    assert_eq!(roots.len(), 1);

    let url = format!("https://localhost:{}/some/path", server.port);
    let chain = fetch_chain(&url, &roots).await.unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].pin, server.leaf_pin);
    assert_eq!(chain[0].dns_names, vec!["localhost".to_string()]);
    assert_eq!(chain[0].file, format!("https://localhost:{}", server.port));
    assert_eq!(chain[1].pin, server.ca_pin);
}

#[tokio::test]
async fn refuses_a_chain_that_does_not_verify() {
    let server = serve().await;
    // The Mozilla roots do not know the test CA.
    let url = format!("https://localhost:{}", server.port);
    let msg = fetch_chain(&url, &[]).await.unwrap_err().to_string();
    assert!(msg.starts_with(&url), "{msg}");
    assert!(msg.contains("TLS handshake failed"), "{msg}");

    // The right CA, the wrong name.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &server.ca_pem).unwrap();
    let roots = read_ca_certificates(&ca_file).unwrap();
    let url = format!("https://127.0.0.1:{}", server.port);
    let msg = fetch_chain(&url, &roots).await.unwrap_err().to_string();
    assert!(msg.contains("TLS handshake failed"), "{msg}");
}

#[tokio::test]
async fn refuses_urls_that_are_not_https() {
    for url in ["http://localhost:1", "localhost:443", "https://"] {
        assert!(fetch_chain(url, &[]).await.is_err(), "{url}");
    }
}
