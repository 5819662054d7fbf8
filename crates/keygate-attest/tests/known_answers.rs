#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Known-answer tests: published vectors and Apple's published root certificate.

use der::{Decode, Encode};
use keygate_attest::apple::{APPLE_APP_ATTEST_ROOT_PEM, parse_pem_certificate};
use keygate_attest::google::{unwrap_key_256, wrap_key};
use p384::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256, Sha384};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 3394 §4.6: wrap 256 bits of key data with a 256-bit KEK.
#[test]
fn aes_key_wrap_matches_rfc3394_section_4_6() {
    let kek: [u8; 32] = unhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
        .try_into()
        .unwrap();
    let key: [u8; 32] = unhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
        .try_into()
        .unwrap();
    let expected =
        unhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
    assert_eq!(wrap_key(&kek, &key).unwrap().to_vec(), expected);
    assert_eq!(unwrap_key_256(&kek, &expected), Some(key));
    let mut tampered = expected.clone();
    tampered[39] ^= 1;
    assert_eq!(unwrap_key_256(&kek, &tampered), None);
    let mut other_kek = kek;
    other_kek[0] ^= 1;
    assert_eq!(unwrap_key_256(&other_kek, &expected), None);
}

#[test]
fn embedded_apple_root_is_the_published_self_signed_certificate() {
    let root = parse_pem_certificate(APPLE_APP_ATTEST_ROOT_PEM).unwrap();
    let der = root.to_der().unwrap();
    let fingerprint: String = Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        fingerprint,
        "1cb9823ba28ba6ad2d33a006941de2ae4f513ef1d4e831b9f7e0fa7b6242c932"
    );

    let tbs = &root.tbs_certificate;
    assert_eq!(tbs.subject, tbs.issuer);
    assert!(
        tbs.subject
            .to_string()
            .contains("CN=Apple App Attestation Root CA"),
        "{}",
        tbs.subject
    );
    assert_eq!(
        tbs.validity.not_before.to_unix_duration().as_secs(),
        1_584_556_373
    ); // 2020-03-18T18:32:53Z
    assert_eq!(
        tbs.validity.not_after.to_unix_duration().as_secs(),
        2_373_148_800
    ); // 2045-03-15T00:00:00Z

    // Self-signed: ecdsa-with-SHA384 by its own P-384 key.
    assert_eq!(
        root.signature_algorithm.oid.to_string(),
        "1.2.840.10045.4.3.3"
    );
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(
        tbs.subject_public_key_info
            .subject_public_key
            .as_bytes()
            .unwrap(),
    )
    .unwrap();
    let signature = p384::ecdsa::Signature::from_der(root.signature.as_bytes().unwrap()).unwrap();
    let digest = Sha384::digest(tbs.to_der().unwrap());
    key.verify_prehash(&digest, &signature).unwrap();
    // Sanity: the check above can fail.
    let mut other = digest;
    other[0] ^= 1;
    assert!(key.verify_prehash(&other, &signature).is_err());
    let _ = x509_cert::Certificate::from_der(&der).unwrap();
}
