//! HTTPS to the target (`--ca`): rustls on ring (the provider keygate itself uses),
//! TLS 1.2 and 1.3, ALPN `http/1.1`, trusting only the given CA.
//!
//! Session resumption is off (no session cache, no tickets kept, no early data): every
//! connection the generator opens costs the server a full handshake, which is what
//! `--new-connection-per-request` measures; with keep-alive connections it only matters
//! when a connection has to be reopened.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, anyhow};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What a TLS connection to the target is set up with.
pub struct TlsClient {
    connector: TlsConnector,
    /// From the URL's host: a DNS name (sent as SNI) or an IP address (checked against
    /// the certificate's IP SANs, no SNI).
    name: ServerName<'static>,
    /// Protocol version, cipher suite and key exchange group of the first handshake.
    negotiated: OnceLock<Negotiated>,
}

/// What the first handshake agreed on.
#[derive(Clone, Debug)]
pub struct Negotiated {
    /// E.g. `TLSv1_3`.
    pub version: String,
    /// E.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// E.g. `X25519`.
    pub kx_group: String,
}

/// The certificates of a PEM file.
fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

impl TlsClient {
    /// A client for `host` trusting the CA certificates in the PEM file `ca`.
    pub fn new(ca: &Path, host: &str) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(ca)? {
            roots
                .add(cert)
                .with_context(|| format!("a certificate in {} is not usable", ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        config.enable_early_data = false;
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| anyhow!("{host:?} is not a TLS server name: {e}"))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
            negotiated: OnceLock::new(),
        })
    }

    /// The TLS handshake on a connected socket (a full one: nothing is resumed).
    pub async fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let stream = self.connector.connect(self.name.clone(), tcp).await?;
        if self.negotiated.get().is_none() {
            let (_, conn) = stream.get_ref();
            let unknown = || "?".to_owned();
            let _ = self.negotiated.set(Negotiated {
                version: conn
                    .protocol_version()
                    .map_or_else(unknown, |v| format!("{v:?}")),
                cipher_suite: conn
                    .negotiated_cipher_suite()
                    .map_or_else(unknown, |s| format!("{:?}", s.suite())),
                kx_group: conn
                    .negotiated_key_exchange_group()
                    .map_or_else(unknown, |g| format!("{:?}", g.name())),
            });
        }
        Ok(stream)
    }

    /// What the first handshake agreed on, once there was one.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        assert!(TlsClient::new(Path::new("/nonexistent/ca.pem"), "127.0.0.1").is_err());
        let dir = std::env::temp_dir().join(format!("loadgen-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(TlsClient::new(&empty, "127.0.0.1").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
