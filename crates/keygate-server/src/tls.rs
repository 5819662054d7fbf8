//! HTTPS termination with rustls (`[tls]`).
//!
//! TLS 1.2 and 1.3 only, with rustls's default cipher suites on the `ring` provider (AEAD
//! suites with forward secrecy; nothing older is compiled in). ALPN offers `h2` and
//! `http/1.1`. Certificates come from PEM files: a default one and any number chosen by
//! SNI (`[[tls.sni]]`, exact names or one-label `*.` wildcards), each with an optional DER
//! OCSP response to staple.
//!
//! The certificates in use sit behind [`CertResolver`], which every handshake asks, so a
//! reload swaps them for new handshakes while established connections keep theirs. The
//! files are checked every `reload_interval` (modification time and size) and on
//! SIGHUP. A reload that fails (a file missing, unreadable, not PEM, a key that does not
//! belong to its certificate, an expired certificate) keeps the certificates in use and
//! logs one line naming the file and the problem; at start the same problems stop the
//! server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::config::{CertFiles, TlsSettings};

/// `Strict-Transport-Security` sent on every HTTPS response: a year, no subdomains (keygate
/// does not know what else lives under its domain).
pub const HSTS: &str = "max-age=31536000";

/// The certificates in force.
struct Loaded {
    default: Arc<CertifiedKey>,
    /// Exact names, lower case.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` entries as `.example.com`.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    /// `[tls.pins]`: the pins of the certificates in use and of the backup keys.
    pins: Option<PinSet>,
}

/// SPKI SHA-256 pins (base64) to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinSet {
    pub current: Vec<String>,
    pub backup: Vec<String>,
}

/// The pin of a certificate's subject public key (keygate-pins' own reading, the one
/// `keygate pins` prints).
fn spki_pin(cert: &CertificateDer<'_>) -> Result<String, String> {
    keygate_pins::parse_pins("certificate", cert.as_ref())
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .map(|e| e.pin.to_base64())
        .ok_or_else(|| "a certificate holds no public key".to_owned())
}

/// Chooses the certificate for each handshake from those loaded last.
pub struct CertResolver {
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.current.read().ok()?.clone();
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return Some(loaded.default.clone());
        };
        if let Some(k) = loaded.exact.get(&name) {
            return Some(k.clone());
        }
        let found = loaded.wildcard.iter().find(|(suffix, _)| {
            name.strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        });
        Some(found.map_or_else(|| loaded.default.clone(), |(_, k)| k.clone()))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// How a verified client certificate appears in logs and audit entries: its subject's
/// common name and the first 16 hex digits of its SHA-256 (never the certificate itself).
pub fn describe_client_cert(cert: &CertificateDer<'_>) -> String {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(cert.as_ref()));
    let cn = x509_parser::parse_x509_certificate(cert.as_ref())
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(|cn| {
                    cn.chars()
                        .filter(|ch| !ch.is_control())
                        .take(64)
                        .collect::<String>()
                })
        })
        .unwrap_or_else(|| "-".to_owned());
    format!("CN={cn}, sha256:{}", digest.get(..16).unwrap_or_default())
}

/// Seconds since the epoch of the leaf's validity period.
fn validity(leaf: &CertificateDer<'_>) -> Result<(i64, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| "the first certificate does not parse as X.509".to_owned())?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Reads one certificate and key pair; every error names the file and the problem.
fn load_pair(files: &CertFiles, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let cert_path = files.cert.display();
    let key_path = files.key.display();
    let readable = |p: &Path| {
        std::fs::metadata(p)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    readable(&files.cert)?;
    readable(&files.key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("{cert_path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_path}: not a PEM certificate chain ({e})"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{cert_path}: holds no PEM certificate"));
    };
    let (not_before, not_after) = validity(leaf).map_err(|e| format!("{cert_path}: {e}"))?;
    let now = unix_now();
    if now >= not_after {
        return Err(format!("{cert_path}: the certificate has expired"));
    }
    if now < not_before {
        return Err(format!("{cert_path}: the certificate is not valid yet"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|_| {
        format!("{key_path}: holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)")
    })?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{key_path}: unusable private key ({e})"))?;
    let mut certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| {
        format!("{key_path} is not the private key of the certificate in {cert_path}")
    })?;
    if let Some(ocsp) = &files.ocsp {
        let bytes = std::fs::read(ocsp).map_err(|e| format!("{}: {e}", ocsp.display()))?;
        certified.ocsp = Some(bytes);
    }
    Ok(certified)
}

fn load_all(settings: &TlsSettings, provider: &CryptoProvider) -> Result<Loaded, String> {
    let default = Arc::new(load_pair(&settings.default, provider)?);
    let mut exact = HashMap::new();
    let mut wildcard = Vec::new();
    for (names, files) in &settings.sni {
        let key = Arc::new(load_pair(files, provider)?);
        for n in names {
            match n.strip_prefix('*') {
                Some(suffix) => wildcard.push((suffix.to_owned(), key.clone())),
                None => {
                    exact.insert(n.clone(), key.clone());
                }
            }
        }
    }
    let pins = match &settings.pins {
        None => None,
        Some(p) => {
            let mut current = Vec::new();
            let leaves = std::iter::once(&default)
                .chain(exact.values())
                .chain(wildcard.iter().map(|(_, k)| k));
            for key in leaves {
                if let Some(leaf) = key.cert.first() {
                    let pin = spki_pin(leaf)?;
                    if !current.contains(&pin) {
                        current.push(pin);
                    }
                }
            }
            let mut backup = Vec::new();
            for path in &p.backup {
                let entry = keygate_pins::read_pins(path)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("{}: holds no key", path.display()))?;
                let pin = entry.pin.to_base64();
                if current.contains(&pin) {
                    return Err(format!(
                        "{}: is the key in use, not a backup (tls.pins.backup)",
                        path.display()
                    ));
                }
                if !backup.contains(&pin) {
                    backup.push(pin);
                }
            }
            Some(PinSet { current, backup })
        }
    };
    Ok(Loaded {
        default,
        exact,
        wildcard,
        pins,
    })
}

/// Each file and its modification time and length (`None`: unreadable).
type Stamps = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// What the reload task compares.
fn stamps(settings: &TlsSettings) -> Stamps {
    let mut paths = vec![settings.default.cert.clone(), settings.default.key.clone()];
    paths.extend(settings.default.ocsp.clone());
    for (_, f) in &settings.sni {
        paths.push(f.cert.clone());
        paths.push(f.key.clone());
        paths.extend(f.ocsp.clone());
    }
    paths
        .into_iter()
        .map(|p| {
            let stamp = std::fs::metadata(&p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, stamp)
        })
        .collect()
}

/// The TLS side of the server: the acceptor for handshakes and the reload machinery.
pub struct Tls {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: Mutex<Stamps>,
}

impl Tls {
    /// Loads every certificate; an error names the file and the problem.
    pub fn start(settings: &TlsSettings) -> Result<Arc<Self>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = stamps(settings);
        let loaded = load_all(settings, &provider)?;
        let resolver = Arc::new(CertResolver {
            current: RwLock::new(Arc::new(loaded)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            settings: settings.clone(),
            provider,
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            seen: Mutex::new(seen),
        }))
    }

    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// The pins to publish (`[tls.pins]`), as of the certificates loaded last.
    pub fn pins(&self) -> Option<PinSet> {
        self.resolver.current.read().ok()?.pins.clone()
    }

    /// `[tls.pins]` settings.
    pub fn pin_settings(&self) -> Option<&crate::config::PinsSettings> {
        self.settings.pins.as_ref()
    }

    /// An acceptor with the same certificates that requires a client certificate issued by
    /// a CA in `ca_file` (PEM): the admin listener's, with `[admin] client_ca`.
    pub fn acceptor_requiring_client_certs(
        &self,
        ca_file: &Path,
    ) -> Result<tokio_rustls::TlsAcceptor, String> {
        let verifier = self.client_verifier(ca_file)?;
        self.acceptor_with(verifier)
    }

    /// An acceptor with the same certificates that asks for a client certificate without
    /// requiring one and accepts any the client holds the key of: the `[tls.mtls]`
    /// listener's (RFC 8705; the token endpoint decides which certificate is whose).
    pub fn acceptor_requesting_client_certs(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        self.acceptor_with(Arc::new(crate::mtls::AnyClientCertificate::new(
            self.provider.clone(),
        )))
    }

    /// A webpki verifier of client certificates issued by a CA in `ca_file` (PEM).
    pub fn client_verifier(
        &self,
        ca_file: &Path,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
        let name = ca_file.display();
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("{name}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{name}: not PEM certificates ({e})"))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("{name}: not a usable CA certificate ({e})"))?;
        }
        if roots.is_empty() {
            return Err(format!("{name}: holds no PEM certificate"));
        }
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| format!("{name}: {e}"))
    }

    fn acceptor_with(
        &self,
        verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Result<tokio_rustls::TlsAcceptor, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// Loads the files again and, if every one is usable, swaps them in. On error the
    /// certificates in use stay.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = load_all(&self.settings, &self.provider)?;
        if let Ok(mut current) = self.resolver.current.write() {
            *current = Arc::new(loaded);
        }
        Ok(())
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(why, "TLS certificates reloaded"),
            Err(e) => tracing::error!(
                why,
                problem = %e,
                "TLS reload failed; the certificates in use stay"
            ),
        }
    }

    /// Reloads when a file changed (checked every `reload_interval`) or on SIGHUP, until
    /// `stop`.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(self.settings.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                _ = tick.tick() => "files changed",
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
                _ = stop.wait_for(|s| *s) => return,
            };
            let now = stamps(&self.settings);
            let changed = match self.seen.lock() {
                Ok(mut seen) => {
                    let changed = *seen != now;
                    *seen = now;
                    changed
                }
                Err(_) => true,
            };
            if why == "SIGHUP" || changed {
                self.reload_logged(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, tag: &str, names: &[&str]) -> CertFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{tag}.crt")),
            key: dir.join(format!("{tag}.key")),
            ocsp: None,
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn settings(default: CertFiles, sni: Vec<(Vec<String>, CertFiles)>) -> TlsSettings {
        TlsSettings {
            default,
            sni,
            listen: None,
            reload_interval: std::time::Duration::from_secs(1),
            pins: None,
            mtls: None,
        }
    }

    fn first_cert(k: &CertifiedKey) -> Vec<u8> {
        k.cert[0].as_ref().to_vec()
    }

    #[test]
    fn sni_picks_exact_then_one_label_wildcards_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let d = pair(dir.path(), "d", &["default.test"]);
        let a = pair(dir.path(), "a", &["api.example.com"]);
        let w = pair(dir.path(), "w", &["*.example.com"]);
        let tls = Tls::start(&settings(
            d,
            vec![
                (vec!["api.example.com".into()], a),
                (vec!["*.example.com".into()], w),
            ],
        ))
        .unwrap();
        let r = &tls.resolver;
        let cert = |n: Option<&str>| first_cert(&r.pick(n).unwrap());
        let (default, api, wild) = (
            cert(None),
            cert(Some("API.example.com")),
            cert(Some("x.example.com")),
        );
        assert_ne!(default, api);
        assert_ne!(api, wild);
        assert_eq!(cert(Some("other.test")), default);
        assert_eq!(cert(Some("a.b.example.com")), default, "one label only");
        assert_eq!(cert(Some("example.com")), default);
    }

    #[test]
    fn every_bad_file_is_named_with_its_problem() {
        let dir = tempfile::tempdir().unwrap();
        let good = pair(dir.path(), "g", &["localhost"]);
        let other = pair(dir.path(), "o", &["localhost"]);
        let start = |f: CertFiles| Tls::start(&settings(f, vec![])).err().unwrap();

        let missing = CertFiles {
            cert: dir.path().join("nope.crt"),
            ..good.clone()
        };
        assert!(start(missing).contains("nope.crt"), "missing");
        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let e = start(CertFiles {
            cert: garbage,
            ..good.clone()
        });
        assert!(
            e.contains("garbage.crt") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = start(CertFiles {
            key: other.key.clone(),
            ..good.clone()
        });
        assert!(
            e.contains("o.key is not the private key of the certificate in"),
            "{e}"
        );
        let e = start(CertFiles {
            key: good.cert.clone(),
            ..good.clone()
        });
        assert!(e.contains("no usable PEM private key"), "{e}");

        // Expired: valid from 2000 to 2001.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let expired = CertFiles {
            cert: dir.path().join("old.crt"),
            key: dir.path().join("old.key"),
            ocsp: None,
        };
        std::fs::write(&expired.cert, cert.pem()).unwrap();
        std::fs::write(&expired.key, key.serialize_pem()).unwrap();
        let e = start(expired);
        assert!(e.contains("old.crt: the certificate has expired"), "{e}");
    }

    #[test]
    fn a_bad_reload_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let first = pair(dir.path(), "c", &["localhost"]);
        let tls = Tls::start(&settings(first.clone(), vec![])).unwrap();
        let before = first_cert(&tls.resolver.pick(None).unwrap());
        std::fs::write(&first.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(first_cert(&tls.resolver.pick(None).unwrap()), before);
        // A good pair at the same paths is taken.
        pair(dir.path(), "c", &["localhost"]);
        tls.reload().unwrap();
        assert_ne!(first_cert(&tls.resolver.pick(None).unwrap()), before);
    }
}
