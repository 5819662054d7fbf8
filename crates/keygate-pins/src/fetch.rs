//! The certificate chain a TLS server presents, accepted only if it verifies.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

use crate::{PinEntry, PinError, certificate_entry};

/// How long connecting and the TLS handshake may take together.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects to `https://HOST[:PORT]`, verifies the presented chain and the host name
/// against `roots` (DER certificates) or, when `roots` is empty, the Mozilla roots of
/// `webpki-roots`, and returns a pin entry per presented certificate, leaf first.
pub async fn fetch_chain(url: &str, roots: &[Vec<u8>]) -> Result<Vec<PinEntry>, PinError> {
    let fail = |reason: String| PinError::Fetch {
        url: url.to_string(),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| fail(format!("not a URL: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(fail("only https:// URLs can be pinned".to_string()));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(fail("no host".to_string())),
    };
    let port = parsed.port_or_known_default().unwrap_or(443);
    let name = format!("https://{}:{port}", parsed.host_str().unwrap_or(&host));

    let mut store = RootCertStore::empty();
    if roots.is_empty() {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        for der in roots {
            store
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| fail(format!("unusable CA certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    let server_name =
        ServerName::try_from(host.clone()).map_err(|e| fail(format!("bad host name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let handshake = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| fail(format!("TLS handshake failed: {e}")))
    };
    let tls = tokio::time::timeout(FETCH_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            fail(format!(
                "no TLS handshake within {}s",
                FETCH_TIMEOUT.as_secs()
            ))
        })??;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or_else(|| fail("the server presented no certificate".to_string()))?;
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| certificate_entry(&name, i, der.as_ref()))
        .collect()
}

/// The DER certificates of a PEM or DER file, for the `roots` of [`fetch_chain`].
pub fn read_ca_certificates(path: &std::path::Path) -> Result<Vec<Vec<u8>>, PinError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| PinError::Read {
        path: name.clone(),
        error,
    })?;
    let entries_check = crate::parse_pins(&name, &bytes)?;
    if !entries_check
        .iter()
        .any(|e| e.kind == crate::SourceKind::Certificate)
    {
        return Err(PinError::NothingFound { path: name });
    }
    if bytes.windows(10).any(|w| w == b"-----BEGIN") {
        let blocks = pem::parse_many(&bytes).map_err(|e| PinError::NotPem {
            path: name.clone(),
            reason: crate::pem_reason(&e),
        })?;
        Ok(blocks
            .into_iter()
            .filter(|b| matches!(b.tag(), "CERTIFICATE" | "X509 CERTIFICATE"))
            .map(pem::Pem::into_contents)
            .collect())
    } else {
        Ok(vec![bytes])
    }
}
