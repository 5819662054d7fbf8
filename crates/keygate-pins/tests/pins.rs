#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use keygate_pins::{
    Format, Pin, PinEntry, PinError, PinSet, Role, SourceKind, Warning, keygen, parse_pins,
    read_pins, render, validate,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use sha2::Digest as _;
use time::{Date, Month, OffsetDateTime};

struct Leaf {
    key: KeyPair,
    cert: rcgen::Certificate,
}

fn self_signed(host: &str, not_after: OffsetDateTime) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![host.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    params.not_after = not_after;
    let cert = params.self_signed(&key).unwrap();
    Leaf { key, cert }
}

fn far_future() -> OffsetDateTime {
    rcgen::date_time_ymd(2099, 1, 1)
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The pin of a certificate file per openssl, computed the way deployment guides show it.
fn openssl_pin(cert: &Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "openssl failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn only_pin(path: &Path) -> PinEntry {
    let entries = read_pins(path).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.into_iter().next().unwrap()
}

#[test]
fn certificate_public_key_and_private_key_give_the_same_pin() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = self_signed("api.example.com", far_future());
    let cert_pem = write(dir.path(), "cert.pem", leaf.cert.pem());
    let cert_der = write(dir.path(), "cert.der", leaf.cert.der().as_ref());
    let pub_pem = write(dir.path(), "pub.pem", leaf.key.public_key_pem());
    let pub_der = write(dir.path(), "pub.der", leaf.key.public_key_der());
    let key_pem = write(dir.path(), "key.pem", leaf.key.serialize_pem());
    let key_der = write(dir.path(), "key.der", leaf.key.serialize_der());

    let from_cert = only_pin(&cert_pem);
    assert_eq!(from_cert.kind, SourceKind::Certificate);
    assert_eq!(from_cert.chain_index, Some(0));
    assert_eq!(from_cert.subject.as_deref(), Some("api.example.com"));
    assert_eq!(from_cert.dns_names, vec!["api.example.com".to_string()]);
    assert_eq!(from_cert.not_after.unwrap().year(), 2099);
    assert!(!from_cert.is_ca);

    for (path, kind) in [
        (&cert_der, SourceKind::Certificate),
        (&pub_pem, SourceKind::PublicKey),
        (&pub_der, SourceKind::PublicKey),
        (&key_pem, SourceKind::PrivateKey),
        (&key_der, SourceKind::PrivateKey),
    ] {
        let entry = only_pin(path);
        assert_eq!(entry.pin, from_cert.pin, "{}", path.display());
        assert_eq!(entry.kind, kind, "{}", path.display());
    }

    let expected = if openssl_available() {
        openssl_pin(&cert_pem)
    } else {
        println!("openssl not found: comparing with a hash of rcgen's SPKI DER instead");
        base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(leaf.key.public_key_der()))
    };
    assert_eq!(from_cert.pin.to_string(), expected);
    assert_eq!(expected.len(), 44);
    assert_eq!(expected.parse::<Pin>().unwrap(), from_cert.pin);
    assert_eq!(
        format!("sha256/{expected}").parse::<Pin>().unwrap(),
        from_cert.pin
    );
}

#[test]
fn sec1_ec_private_key_gives_the_pin_of_its_public_key() {
    if !openssl_available() {
        println!("openssl not found: skipping the EC PRIVATE KEY conversion");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let leaf = self_signed("api.example.com", far_future());
    let pkcs8 = write(dir.path(), "key.pem", leaf.key.serialize_pem());
    let sec1 = dir.path().join("sec1.pem");
    let status = Command::new("openssl")
        .args(["ec", "-in"])
        .arg(&pkcs8)
        .arg("-out")
        .arg(&sec1)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        std::fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    let entry = only_pin(&sec1);
    assert_eq!(entry.kind, SourceKind::PrivateKey);
    assert_eq!(
        entry.pin,
        Pin::of_spki_der(&leaf.key.public_key_der()),
        "SEC1 key"
    );
}

#[test]
fn a_pem_chain_yields_every_certificate_leaf_first() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keygate test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params = CertificateParams::new(vec!["api.example.com".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();

    let chain = write(
        dir.path(),
        "chain.pem",
        format!("{}\n{}", leaf.pem(), ca.pem()),
    );
    let entries = read_pins(&chain).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].pin, Pin::of_spki_der(&leaf_key.public_key_der()));
    assert_eq!(entries[0].chain_index, Some(0));
    assert!(!entries[0].is_ca);
    assert_eq!(entries[1].pin, Pin::of_spki_der(&ca_key.public_key_der()));
    assert_eq!(entries[1].chain_index, Some(1));
    assert!(entries[1].is_ca);
    assert_eq!(entries[1].subject.as_deref(), Some("keygate test CA"));
    assert!(entries[1].describe().contains("certificate 2"));
}

fn key_entry(file: &str) -> PinEntry {
    let key = KeyPair::generate().unwrap();
    parse_pins(file, key.public_key_pem().as_bytes())
        .unwrap()
        .remove(0)
}

fn sample_set(host: &str) -> PinSet {
    let leaf = self_signed("api.example.com", far_future());
    PinSet {
        host: host.to_string(),
        current: parse_pins("server.pem", leaf.cert.pem().as_bytes()).unwrap(),
        backup: vec![key_entry("backup.pem")],
        expires: Date::from_calendar_date(2031, Month::March, 7).unwrap(),
        include_subdomains: true,
    }
}

#[test]
fn json_holds_both_pins_with_roles() {
    let set = sample_set("api.example.com");
    let doc: serde_json::Value = serde_json::from_str(&render(&set, Format::Json)).unwrap();
    assert_eq!(doc["host"], "api.example.com");
    assert_eq!(doc["expires"], "2031-03-07");
    assert_eq!(doc["include_subdomains"], true);
    let pins = doc["pins"].as_array().unwrap();
    assert_eq!(pins.len(), 2);
    assert_eq!(pins[0]["sha256"], set.current[0].pin.to_string());
    assert_eq!(pins[0]["role"], "current");
    assert!(
        pins[0]["source"]
            .as_str()
            .unwrap()
            .starts_with("server.pem")
    );
    assert_eq!(pins[1]["sha256"], set.backup[0].pin.to_string());
    assert_eq!(pins[1]["role"], "backup");
    assert!(
        pins[1]["source"]
            .as_str()
            .unwrap()
            .starts_with("backup.pem")
    );
}

#[test]
fn android_config_parses_back() {
    let set = sample_set("api.example.com");
    let xml = render(&set, Format::Android);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "network-security-config");
    let domain = root
        .descendants()
        .find(|n| n.has_tag_name("domain"))
        .unwrap();
    assert_eq!(domain.text(), Some("api.example.com"));
    assert_eq!(domain.attribute("includeSubdomains"), Some("true"));
    let pin_set = root
        .descendants()
        .find(|n| n.has_tag_name("pin-set"))
        .unwrap();
    assert_eq!(pin_set.attribute("expiration"), Some("2031-03-07"));
    let pins: Vec<(Option<&str>, Option<&str>)> = pin_set
        .children()
        .filter(|n| n.has_tag_name("pin"))
        .map(|n| (n.attribute("digest"), n.text()))
        .collect();
    let expected: Vec<String> = [&set.current[0], &set.backup[0]]
        .iter()
        .map(|e| e.pin.to_string())
        .collect();
    assert_eq!(
        pins,
        vec![
            (Some("SHA-256"), Some(expected[0].as_str())),
            (Some("SHA-256"), Some(expected[1].as_str())),
        ]
    );
}

#[test]
fn ios_and_trustkit_hold_every_pin_and_the_host() {
    let set = sample_set("api.example.com");
    for format in [Format::Ios, Format::TrustKit] {
        let out = render(&set, format);
        assert!(out.contains("<key>api.example.com</key>"), "{out}");
        for entry in set.current.iter().chain(&set.backup) {
            assert!(
                out.contains(&format!("<string>{}</string>", entry.pin)),
                "{out}"
            );
        }
        // A well-formed fragment: one <dict> root after the comment.
        let doc = roxmltree::Document::parse(&out).unwrap();
        assert_eq!(doc.root_element().tag_name().name(), "dict");
    }
    let ios = render(&set, Format::Ios);
    assert!(ios.contains("<key>NSPinnedDomains</key>"));
    assert!(ios.contains("<key>NSPinnedLeafIdentities</key>"));
    assert_eq!(ios.matches("<key>SPKI-SHA256-BASE64</key>").count(), 2);
    assert!(ios.contains("<key>NSIncludesSubdomains</key>\n                <true/>"));

    let tk = render(&set, Format::TrustKit);
    assert!(tk.contains("<key>kTSKPinnedDomains</key>"));
    assert!(tk.contains("<key>kTSKSwizzleNetworkDelegates</key>"));
    assert!(tk.contains("<key>kTSKEnforcePinning</key>\n                <true/>"));
    assert!(
        tk.contains("<key>kTSKExpirationDate</key>\n                <string>2031-03-07</string>")
    );
    assert!(tk.contains("<key>kTSKPublicKeyHashes</key>"));
}

#[test]
fn hosts_and_sources_are_escaped() {
    let mut set = sample_set("a&b<c>.example.com");
    set.backup[0].file = "odd--name-->.pem".to_string();
    for format in [Format::Android, Format::Ios, Format::TrustKit] {
        let out = render(&set, format);
        let outside_comments: String = out.lines().filter(|l| !l.contains("<!--")).collect();
        assert!(!outside_comments.contains("a&b<c>"), "{out}");
        assert!(out.contains("a&amp;b&lt;c&gt;.example.com"), "{out}");
        let doc = roxmltree::Document::parse(&out).unwrap();
        assert!(
            doc.descendants()
                .any(|n| n.text() == Some("a&b<c>.example.com")),
            "{format:?}"
        );
    }
    let doc: serde_json::Value = serde_json::from_str(&render(&set, Format::Json)).unwrap();
    assert_eq!(doc["host"], "a&b<c>.example.com");
}

#[test]
fn duplicates_are_rendered_once() {
    let mut set = sample_set("api.example.com");
    set.backup.push(set.current[0].clone());
    let unique = set.unique_pins();
    assert_eq!(unique.len(), 2);
    assert_eq!(unique[0].1, Role::Current);
    assert_eq!(unique[1].1, Role::Backup);
    let warnings = validate(&set, false).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| matches!(w, Warning::DuplicatePin { pin, .. } if *pin == set.current[0].pin)),
        "{warnings:?}"
    );
    assert_eq!(render(&set, Format::Android).matches("<pin ").count(), 2);
}

#[test]
fn validate_accepts_a_good_set() {
    let set = sample_set("api.example.com");
    assert_eq!(validate(&set, false).unwrap(), Vec::new());
}

#[test]
fn validate_refuses_a_set_without_backup() {
    let mut set = sample_set("api.example.com");
    set.backup.clear();
    let err = validate(&set, false).unwrap_err();
    assert!(matches!(err, PinError::NoBackupPin));
    let msg = err.to_string();
    assert!(msg.contains("--backup-key"), "{msg}");
    assert!(msg.contains("--force"), "{msg}");

    let warnings = validate(&set, true).unwrap();
    assert!(warnings.contains(&Warning::NoBackupForced), "{warnings:?}");
    assert!(
        warnings.contains(&Warning::TooFewForTrustKit),
        "{warnings:?}"
    );
}

#[test]
fn validate_refuses_a_backup_equal_to_a_current_pin() {
    let mut set = sample_set("api.example.com");
    set.backup = vec![set.current[0].clone()];
    let err = validate(&set, false).unwrap_err();
    assert!(matches!(err, PinError::BackupEqualsCurrent { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("--backup-key") && msg.contains("--force"),
        "{msg}"
    );
    let warnings = validate(&set, true).unwrap();
    assert!(warnings.contains(&Warning::NoBackupForced), "{warnings:?}");
}

#[test]
fn validate_refuses_no_current_pins_and_bad_hosts_even_forced() {
    let mut set = sample_set("api.example.com");
    set.current.clear();
    assert!(matches!(
        validate(&set, true).unwrap_err(),
        PinError::NoCurrentPins
    ));
    for host in ["", "*.example.com", "https://api.example.com"] {
        let set = sample_set(host);
        assert!(validate(&set, true).is_err(), "{host:?}");
    }
}

#[test]
fn validate_warns_when_a_certificate_ends_before_the_pins() {
    let leaf = self_signed("api.example.com", rcgen::date_time_ymd(2030, 6, 1));
    let mut set = sample_set("api.example.com");
    set.current = parse_pins("server.pem", leaf.cert.pem().as_bytes()).unwrap();
    let warnings = validate(&set, false).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let Warning::CertificateExpiresFirst {
        not_after, expires, ..
    } = &warnings[0]
    else {
        panic!("{warnings:?}");
    };
    assert_eq!(not_after.to_string(), "2030-06-01");
    assert_eq!(expires.to_string(), "2031-03-07");
    assert!(warnings[0].to_string().contains("server.pem"));
}

#[test]
fn validate_warns_on_a_past_expiry() {
    let mut set = sample_set("api.example.com");
    set.expires = Date::from_calendar_date(2020, Month::January, 1).unwrap();
    let warnings = validate(&set, false).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| matches!(w, Warning::AlreadyExpired { .. })),
        "{warnings:?}"
    );
}

#[cfg(unix)]
#[test]
fn keygen_writes_a_private_key_readable_only_by_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.pem");
    let pin = keygen(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
    let entry = only_pin(&path);
    assert_eq!(entry.pin, pin);
    assert_eq!(entry.kind, SourceKind::PrivateKey);

    let err = keygen(&path).unwrap_err();
    assert!(matches!(err, PinError::KeyExists { .. }), "{err}");
    assert!(err.to_string().contains("backup.pem"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn bad_input_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("empty.pem", b"".to_vec(), "is empty"),
        ("blank.pem", b"\n  \n".to_vec(), "is empty"),
        (
            "garbage.bin",
            b"\x01\x02 not a key at all".to_vec(),
            "not PEM",
        ),
        (
            "truncated.pem",
            b"-----BEGIN CERTIFICATE-----\nMIIB\n".to_vec(),
            "not valid PEM",
        ),
        (
            "params.pem",
            b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
                .to_vec(),
            "no certificate or key found in",
        ),
        (
            "notacert.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
            "certificate 1 is not a valid X.509 certificate",
        ),
        (
            "notakey.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
            "not a PKCS#8 private key",
        ),
        (
            "enc.pem",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .to_vec(),
            "encrypted",
        ),
    ];
    for (name, contents, expected) in cases {
        let path = write(dir.path(), name, contents);
        let msg = read_pins(&path).unwrap_err().to_string();
        assert!(msg.contains(name), "{name}: {msg}");
        assert!(msg.contains(expected), "{name}: {msg}");
    }
    let missing = dir.path().join("missing.pem");
    let msg = read_pins(&missing).unwrap_err().to_string();
    assert!(msg.contains("missing.pem"), "{msg}");
}

#[test]
fn errors_do_not_echo_key_material() {
    let leaf = self_signed("api.example.com", far_future());
    let pem = leaf.key.serialize_pem();
    // Break the base64 in the middle of the key.
    let body: Vec<&str> = pem.lines().collect();
    let broken = format!("{}\n{}!!\n{}\n", body[0], body[1], body[body.len() - 1]);
    let msg = parse_pins("k.pem", broken.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("k.pem: not valid PEM"), "{msg}");
    assert!(!msg.contains(&body[1][..16]), "{msg}");
}

#[test]
fn rsa_keys_in_every_form_give_the_same_pin() {
    if !openssl_available() {
        println!("openssl not found: skipping the RSA key forms");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "rsa.key",
    ]);
    openssl(&["rsa", "-in", "rsa.key", "-pubout", "-out", "spki.pem"]);
    openssl(&[
        "rsa",
        "-in",
        "rsa.key",
        "-RSAPublicKey_out",
        "-out",
        "pkcs1.pem",
    ]);
    openssl(&["rsa", "-in", "rsa.key", "-traditional", "-out", "trad.pem"]);
    let spki = only_pin(&dir.path().join("spki.pem"));
    assert_eq!(only_pin(&dir.path().join("pkcs1.pem")).pin, spki.pin);
    assert_eq!(only_pin(&dir.path().join("rsa.key")).pin, spki.pin);
    let msg = read_pins(&dir.path().join("trad.pem"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("trad.pem") && msg.contains("PKCS#8"), "{msg}");
}
