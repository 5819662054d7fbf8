//! Certificate pin sets for the mobile apps that talk to keygate.
//!
//! A pin is the SHA-256 digest of a DER-encoded SubjectPublicKeyInfo (SPKI), written in
//! padded standard base64: the `pin-sha256` value of RFC 7469, the content of Android's
//! `<pin digest="SHA-256">` and Apple's `SPKI-SHA256-BASE64`.
//!
//! A [`PinSet`] holds the pins of the keys keygate serves today (`current`) and of at least
//! one key kept offline (`backup`), so that a key rotation does not lock installed apps
//! out. [`validate`] enforces that rule; the renderers turn a set into JSON, an Android
//! network security configuration, an iOS `Info.plist` fragment or a TrustKit
//! configuration.
//!
//! Nothing here prints or returns key material: errors name the file and the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use der::asn1::{Any, BitString};
use der::oid::ObjectIdentifier;
use der::{Decode as _, Encode as _, Tag, Tagged as _};
use sha2::{Digest as _, Sha256};
use time::{Date, OffsetDateTime};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::spki::{
    AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef,
};

mod fetch;
pub use fetch::{FETCH_TIMEOUT, fetch_chain, read_ca_certificates};

/// Common name (2.5.4.3).
const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// rsaEncryption (1.2.840.113549.1.1.1), to wrap PKCS#1 `RSA PUBLIC KEY` blocks.
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Everything that can go wrong reading keys, validating a set or generating a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    #[error("{path}: cannot read: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is empty")]
    Empty { path: String },
    #[error("{path}: not valid PEM: {reason}")]
    NotPem { path: String, reason: String },
    #[error("no certificate or key found in {path}")]
    NothingFound { path: String },
    #[error("{path}: not PEM, and not a DER certificate, public key or PKCS#8 private key either")]
    NotRecognized { path: String },
    #[error("{path}: certificate {index} is not a valid X.509 certificate: {reason}")]
    BadCertificate {
        path: String,
        index: usize,
        reason: String,
    },
    #[error("{path}: not a valid public key: {reason}")]
    BadPublicKey { path: String, reason: String },
    #[error("{path}: {reason}")]
    BadPrivateKey { path: String, reason: String },
    #[error("not a pin (expected 44 characters of base64 encoding 32 bytes)")]
    BadPin,
    #[error("the pin set has no host")]
    NoHost,
    #[error("host {host:?}: {reason}")]
    BadHost { host: String, reason: String },
    #[error("the pin set has no current pin: give the server's certificate (--cert)")]
    NoCurrentPins,
    #[error(
        "no backup pin: add --backup-key FILE (a key kept offline, e.g. from `keygate pins keygen`) \
         so that a key rotation does not lock the app out, or --force to pin without one"
    )]
    NoBackupPin,
    #[error(
        "every backup pin is also a current pin ({pin} from {source_name}): a backup must be a \
         different key kept offline; use another --backup-key FILE, or --force to pin without one"
    )]
    BackupEqualsCurrent { pin: String, source_name: String },
    #[error("{path} already exists: not overwriting it")]
    KeyExists { path: String },
    #[error("{path}: cannot write the key: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("{url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("cannot generate a key pair: {0}")]
    KeyGen(String),
}

/// SHA-256 of a DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pin([u8; 32]);

impl Pin {
    /// The pin of a DER-encoded SubjectPublicKeyInfo (the bytes are hashed as given).
    pub fn of_spki_der(spki_der: &[u8]) -> Pin {
        Pin(Sha256::digest(spki_der).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Padded standard base64, as in RFC 7469 `pin-sha256`.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

impl FromStr for Pin {
    type Err = PinError;

    /// Parses the base64 form (with or without the `sha256/` prefix of HPKP).
    fn from_str(s: &str) -> Result<Pin, PinError> {
        let s = s.trim();
        let s = s.strip_prefix("sha256/").unwrap_or(s);
        let bytes = BASE64.decode(s).map_err(|_| PinError::BadPin)?;
        let digest: [u8; 32] = bytes.try_into().map_err(|_| PinError::BadPin)?;
        Ok(Pin(digest))
    }
}

/// What a pin was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Certificate,
    PublicKey,
    PrivateKey,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Certificate => "certificate",
            SourceKind::PublicKey => "public key",
            SourceKind::PrivateKey => "private key",
        })
    }
}

/// A pin and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinEntry {
    pub pin: Pin,
    /// The file it was read from, as given.
    pub file: String,
    pub kind: SourceKind,
    /// For certificates: the position in the file, 0 for the first (the leaf of a chain).
    pub chain_index: Option<usize>,
    /// For certificates: the subject's common name, if any.
    pub subject: Option<String>,
    /// For certificates: the DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// For certificates: the end of the validity period.
    pub not_after: Option<OffsetDateTime>,
    /// For certificates: whether basic constraints mark it as a CA.
    pub is_ca: bool,
}

impl PinEntry {
    fn key(pin: Pin, file: &str, kind: SourceKind) -> PinEntry {
        PinEntry {
            pin,
            file: file.to_string(),
            kind,
            chain_index: None,
            subject: None,
            dns_names: Vec::new(),
            not_after: None,
            is_ca: false,
        }
    }

    /// One line saying where the pin comes from, e.g.
    /// `server.pem: certificate 1, CN=api.example.com, not after 2027-03-01`.
    pub fn describe(&self) -> String {
        let mut out = format!("{}: {}", self.file, self.kind);
        if let Some(i) = self.chain_index {
            out.push_str(&format!(" {}", i + 1));
        }
        if let Some(cn) = &self.subject {
            out.push_str(&format!(", CN={cn}"));
        } else if let Some(dns) = self.dns_names.first() {
            out.push_str(&format!(", DNS={dns}"));
        }
        if let Some(t) = self.not_after {
            out.push_str(&format!(", not after {}", t.date()));
        }
        out
    }
}

/// Reads every pin in a file: each certificate of a PEM chain (in file order, so the leaf
/// first), PEM public keys (`PUBLIC KEY`, `RSA PUBLIC KEY`), PEM private keys
/// (`PRIVATE KEY` as PKCS#8, `EC PRIVATE KEY` for P-256), or a single DER certificate,
/// SubjectPublicKeyInfo or PKCS#8 private key.
pub fn read_pins(path: &Path) -> Result<Vec<PinEntry>, PinError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| PinError::Read {
        path: name.clone(),
        error,
    })?;
    parse_pins(&name, &bytes)
}

/// Like [`read_pins`], from bytes already read; `name` is used in errors and sources.
pub fn parse_pins(name: &str, bytes: &[u8]) -> Result<Vec<PinEntry>, PinError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(PinError::Empty {
            path: name.to_string(),
        });
    }
    if bytes.windows(10).any(|w| w == b"-----BEGIN") {
        parse_pem(name, bytes)
    } else {
        parse_der(name, bytes)
    }
}

fn parse_pem(name: &str, bytes: &[u8]) -> Result<Vec<PinEntry>, PinError> {
    let blocks = pem::parse_many(bytes).map_err(|e| PinError::NotPem {
        path: name.to_string(),
        reason: pem_reason(&e),
    })?;
    // parse_many skips what it cannot frame; a block cut short must not go unnoticed.
    let begins = bytes.windows(10).filter(|w| *w == b"-----BEGIN").count();
    if begins != blocks.len() {
        return Err(PinError::NotPem {
            path: name.to_string(),
            reason: "a BEGIN line has no matching END line".to_string(),
        });
    }
    let mut out = Vec::new();
    let mut certs = 0usize;
    let private = |reason: &str| PinError::BadPrivateKey {
        path: name.to_string(),
        reason: reason.to_string(),
    };
    for block in &blocks {
        match block.tag() {
            "CERTIFICATE" | "X509 CERTIFICATE" => {
                out.push(certificate_entry(name, certs, block.contents())?);
                certs += 1;
            }
            "PUBLIC KEY" => out.push(public_key_entry(name, block.contents())?),
            "RSA PUBLIC KEY" => out.push(rsa_public_key_entry(name, block.contents())?),
            "PRIVATE KEY" => out.push(pkcs8_entry(name, block.contents())?),
            "EC PRIVATE KEY" => out.push(sec1_entry(name, block.contents())?),
            "RSA PRIVATE KEY" => {
                return Err(private(
                    "PKCS#1 RSA PRIVATE KEY is not read; convert it to PKCS#8 \
                     (openssl pkcs8 -topk8 -nocrypt) or give its public key",
                ));
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(private(
                    "the private key is encrypted; give its public key instead \
                     (openssl pkey -pubout)",
                ));
            }
            // Parameters, requests and anything else carry no key of their own.
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(PinError::NothingFound {
            path: name.to_string(),
        });
    }
    Ok(out)
}

/// The PEM error without any of the encoded content.
pub(crate) fn pem_reason(e: &pem::PemError) -> String {
    match e {
        pem::PemError::MismatchedTags(a, b) => format!("BEGIN {a} ends with END {b}"),
        pem::PemError::MalformedFraming => "malformed BEGIN/END lines".to_string(),
        pem::PemError::MissingBeginTag => "missing BEGIN line".to_string(),
        pem::PemError::MissingEndTag => "missing END line".to_string(),
        pem::PemError::MissingData => "a block has no content".to_string(),
        pem::PemError::InvalidData(_) => "a block's content is not base64".to_string(),
        pem::PemError::NotUtf8(_) => "not UTF-8 text".to_string(),
        _ => "unreadable".to_string(),
    }
}

fn parse_der(name: &str, bytes: &[u8]) -> Result<Vec<PinEntry>, PinError> {
    if Certificate::from_der(bytes).is_ok() {
        return Ok(vec![certificate_entry(name, 0, bytes)?]);
    }
    if SubjectPublicKeyInfoRef::from_der(bytes).is_ok() {
        return Ok(vec![public_key_entry(name, bytes)?]);
    }
    if let Ok(entry) = pkcs8_entry(name, bytes) {
        return Ok(vec![entry]);
    }
    Err(PinError::NotRecognized {
        path: name.to_string(),
    })
}

pub(crate) fn certificate_entry(
    name: &str,
    index: usize,
    der: &[u8],
) -> Result<PinEntry, PinError> {
    let bad = |reason: String| PinError::BadCertificate {
        path: name.to_string(),
        index: index + 1,
        reason,
    };
    let cert = Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let tbs = &cert.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| bad(e.to_string()))?;
    let subject = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == OID_CN)
        .and_then(|atv| directory_string(&atv.value));
    let dns_names = match tbs.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san
            .0
            .iter()
            .filter_map(|n| match n {
                GeneralName::DnsName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let is_ca = matches!(tbs.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca);
    let not_after = i64::try_from(tbs.validity.not_after.to_unix_duration().as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
    Ok(PinEntry {
        pin: Pin::of_spki_der(&spki),
        file: name.to_string(),
        kind: SourceKind::Certificate,
        chain_index: Some(index),
        subject,
        dns_names,
        not_after,
        is_ca,
    })
}

/// The text of a DirectoryString-like value (UTF8String, PrintableString, IA5String…).
fn directory_string(value: &Any) -> Option<String> {
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::TeletexString
        | Tag::VisibleString => std::str::from_utf8(value.value()).ok().map(str::to_string),
        _ => None,
    }
}

fn public_key_entry(name: &str, der: &[u8]) -> Result<PinEntry, PinError> {
    SubjectPublicKeyInfoRef::from_der(der).map_err(|e| PinError::BadPublicKey {
        path: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok(PinEntry::key(
        Pin::of_spki_der(der),
        name,
        SourceKind::PublicKey,
    ))
}

/// PKCS#1 RSAPublicKey, wrapped into the SubjectPublicKeyInfo a certificate would hold.
fn rsa_public_key_entry(name: &str, der: &[u8]) -> Result<PinEntry, PinError> {
    let bad = |reason: String| PinError::BadPublicKey {
        path: name.to_string(),
        reason,
    };
    // An RSAPublicKey is a SEQUENCE of two INTEGERs; check it is at least a SEQUENCE.
    Any::from_der(der)
        .ok()
        .filter(|a| a.tag() == Tag::Sequence)
        .ok_or_else(|| bad("not a PKCS#1 RSAPublicKey".to_string()))?;
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: OID_RSA,
            parameters: Some(Any::null()),
        },
        subject_public_key: BitString::from_bytes(der).map_err(|e| bad(e.to_string()))?,
    };
    let spki_der = spki.to_der().map_err(|e| bad(e.to_string()))?;
    Ok(PinEntry::key(
        Pin::of_spki_der(&spki_der),
        name,
        SourceKind::PublicKey,
    ))
}

fn pkcs8_entry(name: &str, der: &[u8]) -> Result<PinEntry, PinError> {
    let key = rcgen::KeyPair::try_from(der).map_err(|_| PinError::BadPrivateKey {
        path: name.to_string(),
        reason: "not a PKCS#8 private key this tool reads (ECDSA P-256/P-384, Ed25519, RSA)"
            .to_string(),
    })?;
    Ok(PinEntry::key(
        Pin::of_spki_der(&key.public_key_der()),
        name,
        SourceKind::PrivateKey,
    ))
}

fn sec1_entry(name: &str, der: &[u8]) -> Result<PinEntry, PinError> {
    use p256::pkcs8::EncodePublicKey as _;
    let bad = || PinError::BadPrivateKey {
        path: name.to_string(),
        reason: "EC PRIVATE KEY is read for P-256 only; convert other curves to PKCS#8 \
                 (openssl pkcs8 -topk8 -nocrypt)"
            .to_string(),
    };
    let secret = p256::SecretKey::from_sec1_der(der).map_err(|_| bad())?;
    let spki = secret.public_key().to_public_key_der().map_err(|_| bad())?;
    Ok(PinEntry::key(
        Pin::of_spki_der(spki.as_bytes()),
        name,
        SourceKind::PrivateKey,
    ))
}

/// The pins an app should accept for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinSet {
    pub host: String,
    /// Keys the server uses now.
    pub current: Vec<PinEntry>,
    /// Keys kept offline for the next rotation.
    pub backup: Vec<PinEntry>,
    /// After this date apps stop enforcing the pins (Android, TrustKit).
    pub expires: Date,
    pub include_subdomains: bool,
}

/// The role of a pin in a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Current,
    Backup,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Current => "current",
            Role::Backup => "backup",
        }
    }
}

impl PinSet {
    /// Each distinct pin once, current ones first, in the order given. A pin listed both
    /// as current and as backup counts as current.
    pub fn unique_pins(&self) -> Vec<(&PinEntry, Role)> {
        let mut seen = std::collections::HashSet::new();
        let current = self.current.iter().map(|e| (e, Role::Current));
        let backup = self.backup.iter().map(|e| (e, Role::Backup));
        current
            .chain(backup)
            .filter(|(e, _)| seen.insert(e.pin))
            .collect()
    }
}

/// Something worth telling the user that does not make the set unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// `force` let through a set without a distinct backup pin.
    NoBackupForced,
    /// A current certificate ends before the pins expire: its replacement must use a
    /// pinned key (the same key or a backup) or the app breaks.
    CertificateExpiresFirst {
        source_name: String,
        not_after: Date,
        expires: Date,
    },
    /// The same pin appears more than once.
    DuplicatePin { pin: Pin, sources: Vec<String> },
    /// The expiry date is not in the future: apps will not enforce the pins.
    AlreadyExpired { expires: Date },
    /// Fewer than two distinct pins: TrustKit refuses such a configuration.
    TooFewForTrustKit,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::NoBackupForced => write!(
                f,
                "no backup pin (--force): rotating the server's key will lock the app out \
                 until an update ships"
            ),
            Warning::CertificateExpiresFirst {
                source_name,
                not_after: _,
                expires,
            } => write!(
                f,
                "{source_name}: the certificate ends before the pins expire ({expires}); \
                 renew it with the same key or a backup key"
            ),
            Warning::DuplicatePin { pin, sources } => {
                write!(
                    f,
                    "pin {pin} appears more than once: {}",
                    sources.join("; ")
                )
            }
            Warning::AlreadyExpired { expires } => write!(
                f,
                "the pins expire on {expires}, which is not in the future: apps will not \
                 enforce them"
            ),
            Warning::TooFewForTrustKit => write!(
                f,
                "fewer than two distinct pins: TrustKit refuses such a configuration"
            ),
        }
    }
}

/// Checks a set before it ships.
///
/// Errors: no host, a wildcard or URL as host, no current pin, or (unless `force`) no
/// backup pin that differs from every current pin. Warnings: the above under `force`,
/// current certificates that end before `expires`, duplicate pins, an expiry date that is
/// not in the future, and fewer than two distinct pins.
pub fn validate(set: &PinSet, force: bool) -> Result<Vec<Warning>, PinError> {
    check_host(&set.host)?;
    if set.current.is_empty() {
        return Err(PinError::NoCurrentPins);
    }
    let mut warnings = Vec::new();
    let distinct_backup = set
        .backup
        .iter()
        .any(|b| set.current.iter().all(|c| c.pin != b.pin));
    if !distinct_backup {
        if !force {
            return Err(match set.backup.first() {
                None => PinError::NoBackupPin,
                Some(b) => PinError::BackupEqualsCurrent {
                    pin: b.pin.to_string(),
                    source_name: b.describe(),
                },
            });
        }
        warnings.push(Warning::NoBackupForced);
    }
    for entry in &set.current {
        if let Some(not_after) = entry.not_after {
            if not_after.date() < set.expires {
                warnings.push(Warning::CertificateExpiresFirst {
                    source_name: entry.describe(),
                    not_after: not_after.date(),
                    expires: set.expires,
                });
            }
        }
    }
    let mut by_pin: BTreeMap<Pin, Vec<String>> = BTreeMap::new();
    for entry in set.current.iter().chain(&set.backup) {
        by_pin.entry(entry.pin).or_default().push(entry.describe());
    }
    for (pin, sources) in by_pin {
        if sources.len() > 1 {
            warnings.push(Warning::DuplicatePin { pin, sources });
        }
    }
    if set.expires <= OffsetDateTime::now_utc().date() {
        warnings.push(Warning::AlreadyExpired {
            expires: set.expires,
        });
    }
    if set.unique_pins().len() < 2 {
        warnings.push(Warning::TooFewForTrustKit);
    }
    Ok(warnings)
}

fn check_host(host: &str) -> Result<(), PinError> {
    let bad = |reason: &str| PinError::BadHost {
        host: host.to_string(),
        reason: reason.to_string(),
    };
    if host.trim().is_empty() {
        return Err(PinError::NoHost);
    }
    if host.contains("://") || host.contains('/') {
        return Err(bad("give a host name, not a URL"));
    }
    if host.contains('*') {
        return Err(bad(
            "wildcards are not pinned; give the parent domain with --include-subdomains",
        ));
    }
    if host.chars().any(char::is_whitespace) {
        return Err(bad("contains whitespace"));
    }
    Ok(())
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Android,
    Ios,
    TrustKit,
}

/// Renders a set in the given format.
pub fn render(set: &PinSet, format: Format) -> String {
    match format {
        Format::Json => json(set),
        Format::Android => android(set),
        Format::Ios => ios(set),
        Format::TrustKit => trustkit(set),
    }
}

/// `{"host", "expires", "include_subdomains", "pins": [{"sha256", "role", "source"}]}`.
pub fn json(set: &PinSet) -> String {
    #[derive(serde::Serialize)]
    struct JsonPin {
        sha256: String,
        role: &'static str,
        source: String,
    }
    #[derive(serde::Serialize)]
    struct JsonSet<'a> {
        host: &'a str,
        expires: String,
        include_subdomains: bool,
        pins: Vec<JsonPin>,
    }
    let doc = JsonSet {
        host: &set.host,
        expires: set.expires.to_string(),
        include_subdomains: set.include_subdomains,
        pins: set
            .unique_pins()
            .into_iter()
            .map(|(e, role)| JsonPin {
                sha256: e.pin.to_string(),
                role: role.as_str(),
                source: e.describe(),
            })
            .collect(),
    };
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

/// A complete `res/xml/network_security_config.xml`.
pub fn android(set: &PinSet) -> String {
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str(&format!(
        "<!-- {} -->\n",
        comment_text(&format!(
            "Pins for {} generated by keygate. Save as res/xml/network_security_config.xml \
             and set android:networkSecurityConfig=\"@xml/network_security_config\" on the \
             <application> element of AndroidManifest.xml. After {} the pins are no longer \
             enforced.",
            set.host, set.expires
        ))
    ));
    out.push_str("<network-security-config>\n");
    out.push_str("    <domain-config>\n");
    out.push_str(&format!(
        "        <domain includeSubdomains=\"{}\">{}</domain>\n",
        set.include_subdomains,
        xml_escape(&set.host)
    ));
    out.push_str(&format!(
        "        <pin-set expiration=\"{}\">\n",
        set.expires
    ));
    for (entry, role) in set.unique_pins() {
        out.push_str(&format!(
            "            <!-- {}: {} -->\n",
            role.as_str(),
            comment_text(&entry.describe())
        ));
        out.push_str(&format!(
            "            <pin digest=\"SHA-256\">{}</pin>\n",
            entry.pin
        ));
    }
    out.push_str("        </pin-set>\n");
    out.push_str("    </domain-config>\n");
    out.push_str("</network-security-config>\n");
    out
}

/// An `Info.plist` fragment: a `<dict>` holding `NSAppTransportSecurity` →
/// `NSPinnedDomains` → host, with every pin under `NSPinnedLeafIdentities`.
pub fn ios(set: &PinSet) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "<!-- {} -->\n",
        comment_text(&format!(
            "Pins for {} generated by keygate. Merge the NSAppTransportSecurity entry below \
             into the top-level <dict> of the app's Info.plist (inside an existing \
             NSAppTransportSecurity dict, add only the NSPinnedDomains entry). \
             NSPinnedDomains has no expiry date: ship an update with new pins before {}.",
            set.host, set.expires
        ))
    ));
    out.push_str("<dict>\n");
    out.push_str("    <key>NSAppTransportSecurity</key>\n");
    out.push_str("    <dict>\n");
    out.push_str("        <key>NSPinnedDomains</key>\n");
    out.push_str("        <dict>\n");
    out.push_str(&format!(
        "            <key>{}</key>\n",
        xml_escape(&set.host)
    ));
    out.push_str("            <dict>\n");
    out.push_str("                <key>NSIncludesSubdomains</key>\n");
    out.push_str(&format!(
        "                {}\n",
        plist_bool(set.include_subdomains)
    ));
    out.push_str("                <key>NSPinnedLeafIdentities</key>\n");
    out.push_str("                <array>\n");
    for (entry, role) in set.unique_pins() {
        out.push_str(&format!(
            "                    <!-- {}: {} -->\n",
            role.as_str(),
            comment_text(&entry.describe())
        ));
        out.push_str("                    <dict>\n");
        out.push_str("                        <key>SPKI-SHA256-BASE64</key>\n");
        out.push_str(&format!(
            "                        <string>{}</string>\n",
            entry.pin
        ));
        out.push_str("                    </dict>\n");
    }
    out.push_str("                </array>\n");
    out.push_str("            </dict>\n");
    out.push_str("        </dict>\n");
    out.push_str("    </dict>\n");
    out.push_str("</dict>\n");
    out
}

/// A TrustKit configuration: a `<dict>` holding `TSKConfiguration` with
/// `kTSKSwizzleNetworkDelegates` and `kTSKPinnedDomains` → host.
pub fn trustkit(set: &PinSet) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "<!-- {} -->\n",
        comment_text(&format!(
            "TrustKit pins for {} generated by keygate. Merge the TSKConfiguration entry \
             into the top-level <dict> of the app's Info.plist, or pass the inner dict to \
             TrustKit's initSharedInstanceWithConfiguration:. TrustKit needs at least two \
             pins (one of them a backup) and stops enforcing them after {}.",
            set.host, set.expires
        ))
    ));
    out.push_str("<dict>\n");
    out.push_str("    <key>TSKConfiguration</key>\n");
    out.push_str("    <dict>\n");
    out.push_str("        <key>kTSKSwizzleNetworkDelegates</key>\n");
    out.push_str("        <true/>\n");
    out.push_str("        <key>kTSKPinnedDomains</key>\n");
    out.push_str("        <dict>\n");
    out.push_str(&format!(
        "            <key>{}</key>\n",
        xml_escape(&set.host)
    ));
    out.push_str("            <dict>\n");
    out.push_str("                <key>kTSKEnforcePinning</key>\n");
    out.push_str("                <true/>\n");
    out.push_str("                <key>kTSKIncludeSubdomains</key>\n");
    out.push_str(&format!(
        "                {}\n",
        plist_bool(set.include_subdomains)
    ));
    out.push_str("                <key>kTSKExpirationDate</key>\n");
    out.push_str(&format!(
        "                <string>{}</string>\n",
        set.expires
    ));
    out.push_str("                <key>kTSKPublicKeyHashes</key>\n");
    out.push_str("                <array>\n");
    for (entry, role) in set.unique_pins() {
        out.push_str(&format!(
            "                    <!-- {}: {} -->\n",
            role.as_str(),
            comment_text(&entry.describe())
        ));
        out.push_str(&format!(
            "                    <string>{}</string>\n",
            entry.pin
        ));
    }
    out.push_str("                </array>\n");
    out.push_str("            </dict>\n");
    out.push_str("        </dict>\n");
    out.push_str("    </dict>\n");
    out.push_str("</dict>\n");
    out
}

fn plist_bool(b: bool) -> &'static str {
    if b { "<true/>" } else { "<false/>" }
}

/// Escapes text for XML element content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Text that is safe inside `<!-- … -->`: no `--`, no trailing `-`, one line.
fn comment_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "- -");
    }
    if out.ends_with('-') {
        out.push(' ');
    }
    out
}

/// Generates an ECDSA P-256 key pair, writes the private key to `path` as PKCS#8 PEM
/// (mode 0600 on Unix; an existing file is never overwritten) and returns the pin of its
/// public key. The key is meant to be kept offline as the backup.
pub fn keygen(path: &Path) -> Result<Pin, PinError> {
    let name = path.display().to_string();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PinError::KeyGen(e.to_string()))?;
    let pin = Pin::of_spki_der(&key.public_key_der());
    let pem = key.serialize_pem();

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            PinError::KeyExists { path: name.clone() }
        } else {
            PinError::Write {
                path: name.clone(),
                error,
            }
        }
    })?;
    let written = file
        .write_all(pem.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(error) = written {
        drop(file);
        // Best effort: do not leave a truncated key behind.
        let _ = std::fs::remove_file(path);
        return Err(PinError::Write { path: name, error });
    }
    Ok(pin)
}
