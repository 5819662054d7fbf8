//! Mutual-TLS client authentication and certificate-bound tokens (RFC 8705).
//!
//! The `[tls.mtls]` listener asks every client for a certificate and requires none. The
//! handshake proves only that the client holds the key of the certificate it sent
//! ([`AnyClientCertificate`]); whom that certificate identifies is decided per client at
//! the token endpoint ([`check`]), by the method the client was registered with:
//!
//! - `tls_client_auth` (§2.1): the chain must lead to a CA in `[tls.mtls] client_ca`
//!   (webpki, client-auth usage, validity) and the certificate must carry the registered
//!   subject DN, DNS name or URI;
//! - `self_signed_tls_client_auth` (§2.2): the certificate must be one of those
//!   registered (by SHA-256 thumbprint); no chain is built.
//!
//! Either way an expired or not-yet-valid certificate is refused. The access tokens then
//! issued carry `cnf.x5t#S256` (§3) and the proxy accepts them only over a connection
//! that presents the same certificate (keygate-auth's `verify_request`).

use std::sync::Arc;

use keygate_auth::jwk::CertThumbprint;
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};

/// `token_endpoint_auth_method` of a client that authenticates with a CA-issued
/// certificate.
pub const TLS_CLIENT_AUTH: &str = "tls_client_auth";
/// `token_endpoint_auth_method` of a client that authenticates with a self-signed
/// certificate registered with keygate.
pub const SELF_SIGNED_TLS_CLIENT_AUTH: &str = "self_signed_tls_client_auth";

/// The certificate a connection presented: its chain as sent (leaf first) and the leaf's
/// thumbprint. Requests carry it in their [`crate::Served`] extension.
#[derive(Debug)]
pub struct PeerCertificate {
    chain: Vec<CertificateDer<'static>>,
    thumbprint: CertThumbprint,
}

impl PeerCertificate {
    /// From the chain the handshake received; `None` when there is none.
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let leaf = chain.first()?;
        Some(Self {
            thumbprint: CertThumbprint::of_der(leaf.as_ref()),
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
        })
    }

    /// `x5t#S256` of the leaf.
    pub fn thumbprint(&self) -> &CertThumbprint {
        &self.thumbprint
    }

    /// `CN=…, sha256:…` for logs and the audit actor, made only when one is written
    /// (not on every connection).
    pub fn describe(&self) -> String {
        self.leaf()
            .map(crate::tls::describe_client_cert)
            .unwrap_or_default()
    }

    fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }
}

/// Which certificate a `tls_client_auth` or `self_signed_tls_client_auth` client must
/// present, as registered (stored as JSON in the client's `tls_identity`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TlsClientIdentity {
    /// `tls_client_auth_subject_dn`: the subject, as an RFC 4514 string.
    SubjectDn(String),
    /// `tls_client_auth_san_dns`: a DNS name among the subject alternative names.
    SanDns(String),
    /// `tls_client_auth_san_uri`: a URI among the subject alternative names.
    SanUri(String),
    /// The thumbprints of the self-signed certificates registered.
    #[serde(rename = "x5t#S256")]
    SelfSigned(Vec<String>),
}

/// A client certificate verifier for the `[tls.mtls]` listener: asks for a certificate,
/// accepts the handshake without one, and with one checks only the handshake signature
/// (the client holds the certificate's key). Trust is decided per client by [`check`].
#[derive(Debug)]
pub struct AnyClientCertificate {
    provider: Arc<CryptoProvider>,
}

impl AnyClientCertificate {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a self-signed certificate has no CA to name.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The CAs of `[tls.mtls] client_ca`, as a webpki client verifier.
pub type ClientTrust = Arc<dyn ClientCertVerifier>;

/// Why a certificate did not authenticate a client: fixed texts for the log, never sent
/// to the client (it gets `invalid_client`).
pub type Refusal = &'static str;

/// Whether `peer` authenticates a client registered with `method` and `identity` at
/// `now` (seconds since the epoch).
pub fn check(
    method: &str,
    identity: &TlsClientIdentity,
    peer: Option<&PeerCertificate>,
    trust: Option<&ClientTrust>,
    now: i64,
) -> Result<(), Refusal> {
    let peer = peer.ok_or("no client certificate on this connection")?;
    let leaf = peer
        .leaf()
        .ok_or("no client certificate on this connection")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| "the client certificate does not parse")?;
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err("the client certificate is not valid yet");
    }
    if now > validity.not_after.timestamp() {
        return Err("the client certificate has expired");
    }
    match (method, identity) {
        (SELF_SIGNED_TLS_CLIENT_AUTH, TlsClientIdentity::SelfSigned(registered)) => {
            if registered
                .iter()
                .any(|t| t.as_str() == peer.thumbprint().as_str())
            {
                Ok(())
            } else {
                Err("the client certificate is not one registered for this client")
            }
        }
        (TLS_CLIENT_AUTH, TlsClientIdentity::SelfSigned(_)) | (SELF_SIGNED_TLS_CLIENT_AUTH, _) => {
            Err("the client's registration is inconsistent")
        }
        (TLS_CLIENT_AUTH, wanted) => {
            let trust = trust.ok_or("no [tls.mtls] client_ca to check the chain against")?;
            let (_, intermediates) = peer.chain.split_first().ok_or("no certificate")?;
            let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                u64::try_from(now).unwrap_or(0),
            ));
            trust
                .verify_client_cert(leaf, intermediates, at)
                .map_err(|_| "the client certificate does not chain to a trusted CA")?;
            if carries(&cert, wanted) {
                Ok(())
            } else {
                Err("the client certificate does not name the registered subject")
            }
        }
        _ => Err("unknown client authentication method"),
    }
}

/// Whether the certificate carries the registered subject DN, DNS name or URI.
fn carries(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    wanted: &TlsClientIdentity,
) -> bool {
    use x509_parser::extensions::GeneralName;
    let names = || {
        cert.subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| san.value.general_names.clone())
            .unwrap_or_default()
    };
    match wanted {
        TlsClientIdentity::SubjectDn(dn) => {
            let Some(wanted) = rdns(dn) else {
                return false;
            };
            let Some(mut have) = rdns(&cert.subject().to_string()) else {
                return false;
            };
            // x509-parser writes the RDNs in certificate order, RFC 4514 in reverse;
            // either order names the same subject.
            if have == wanted {
                return true;
            }
            have.reverse();
            have == wanted
        }
        TlsClientIdentity::SanDns(name) => names()
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(name))),
        TlsClientIdentity::SanUri(uri) => names()
            .iter()
            .any(|n| matches!(n, GeneralName::URI(u) if u == uri)),
        TlsClientIdentity::SelfSigned(_) => false,
    }
}

/// A DN string as its attribute-value pairs: attribute names upper-cased, spaces around
/// separators dropped. `None` for a DN this comparison cannot read (escaped separators,
/// multi-valued RDNs), which then matches nothing.
fn rdns(dn: &str) -> Option<Vec<(String, String)>> {
    if dn.contains('\\') || dn.contains('+') || dn.contains('"') {
        return None;
    }
    dn.split(',')
        .map(|rdn| {
            let (k, v) = rdn.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            (!k.is_empty() && !v.is_empty()).then(|| (k.to_ascii_uppercase(), v.to_owned()))
        })
        .collect()
}

/// Registration: the thumbprints of the PEM certificates in `pem`, each checked to parse
/// as X.509. An error says which one and why.
pub fn thumbprints_of_pem(pem: &str) -> Result<Vec<String>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            x509_parser::parse_x509_certificate(c.as_ref())
                .map_err(|_| format!("certificate {} does not parse as X.509", i + 1))?;
            Ok(CertThumbprint::of_der(c.as_ref()).to_string())
        })
        .collect()
}

/// Registration: a subject DN this module can compare, or why not.
pub fn valid_subject_dn(dn: &str) -> Result<(), String> {
    rdns(dn).map(|_| ()).ok_or_else(|| {
        "write the subject DN as comma-separated attribute=value pairs (like CN=billing,O=Acme), without escapes or multi-valued RDNs".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_compare_by_pairs_in_either_order() {
        assert_eq!(
            rdns("CN=billing, O=Acme"),
            Some(vec![
                ("CN".into(), "billing".into()),
                ("O".into(), "Acme".into())
            ])
        );
        assert_eq!(rdns("cn=billing,O=Acme"), rdns("CN=billing , O=Acme"));
        assert_eq!(rdns("CN=a\\,b"), None);
        assert_eq!(rdns("CN=a+OU=b"), None);
        assert_eq!(rdns("CN="), None);
        assert_eq!(rdns("billing"), None);
    }

    #[test]
    fn identities_are_stored_as_tagged_json() {
        let id = TlsClientIdentity::SanDns("svc.example.com".into());
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            r#"{"san_dns":"svc.example.com"}"#
        );
        let self_signed: TlsClientIdentity =
            serde_json::from_str(r#"{"x5t#S256":["abc"]}"#).unwrap();
        assert_eq!(
            self_signed,
            TlsClientIdentity::SelfSigned(vec!["abc".into()])
        );
        assert!(serde_json::from_str::<TlsClientIdentity>(r#"{"other":"x"}"#).is_err());
    }
}
