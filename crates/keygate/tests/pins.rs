//! `keygate pins` with the built binary: a backup key from `pins keygen`, a certificate made
//! by `openssl`, the pin set in every format with the pins `openssl` computes, the refusal
//! without a backup, exit codes and one-line errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{keygate, stderr, stdout};

/// `openssl`'s SPKI SHA-256 of a certificate or key file, base64.
fn openssl_pin(file: &Path, is_cert: bool) -> String {
    let script = if is_cert {
        "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
    } else {
        "openssl pkey -in \"$1\" -pubout -outform der | openssl dgst -sha256 -binary | base64"
    };
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn pin_sets_carry_the_pins_openssl_computes_in_every_format() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("skipped: openssl is not installed (tests/tls/scan.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "400", "-subj", "/CN=api.example.com"])
        .args(["-addext", "subjectAltName=DNS:api.example.com"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let backup = dir.path().join("backup.key");
    let out = keygate()
        .args(["pins", "keygen", "--out"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let backup_pin = stdout(&out).trim().to_owned();
    assert_eq!(backup_pin, openssl_pin(&backup, false));
    let current_pin = openssl_pin(&cert, true);
    // keygen never overwrites.
    let again = keygate()
        .args(["pins", "keygen", "--out"])
        .arg(&backup)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));

    // Without a backup: refused, one line.
    let out = keygate()
        .args(["pins", "--cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("--backup-key"), "{}", stderr(&out));

    for format in ["json", "android", "ios", "trustkit"] {
        let out = keygate()
            .args(["pins", "--format", format, "--expires", "90d", "--cert"])
            .arg(&cert)
            .arg("--backup-key")
            .arg(&backup)
            .output()
            .unwrap();
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        let text = stdout(&out);
        for pin in [&current_pin, &backup_pin] {
            assert!(text.contains(pin.as_str()), "{format} lacks {pin}:\n{text}");
        }
        assert!(text.contains("api.example.com"), "{format}");
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["host"], "api.example.com");
            assert_eq!(v["pins"].as_array().unwrap().len(), 2);
        }
        if format == "android" {
            assert_eq!(
                text.matches("<pin digest=\"SHA-256\">").count(),
                2,
                "{text}"
            );
        }
    }
    // A certificate that ends before the pins: a warning, still a set.
    let out = keygate()
        .args(["pins", "--expires", "2099-01-01", "--cert"])
        .arg(&cert)
        .arg("--backup-key")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stderr(&out).starts_with("warning: "), "{}", stderr(&out));
    // A file that is not a certificate: named in the one error line.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let out = keygate()
        .args(["pins", "--cert"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("junk.pem"), "{}", stderr(&out));
}
