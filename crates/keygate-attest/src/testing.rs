//! Test fixtures (feature `test-support`): valid App Attest objects and Play Integrity
//! tokens under the tests' own keys, with knobs that break one rule at a time.
//!
//! The private keys here are generated per fixture and only ever sign test data. Fixture
//! setup failing is a bug in the test setup, not a condition to handle, so this module
//! panics on it (hence the lint allowance below); never enable this feature in production.
#![allow(clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use crate::apple::{AAGUID_PRODUCTION, AppAttestConfig};
use crate::google::{PlayIntegrityConfig, expected_nonce, wrap_key};
use crate::util::sha256;

/// The fixed "now" fixtures are valid at: 2026-05-28T20:26:40Z.
pub const FIXTURE_NOW: i64 = 1_780_000_000;
const DAY: i64 = 86_400;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("fixture time in range")
}

fn cbor_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into a Vec");
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// Which curve the fixture's intermediate CA uses (the root is always P-384, like Apple's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntermediateCurve {
    /// P-384 key; signs the credential certificate with ecdsa-with-SHA384.
    P384,
    /// P-256 key; signs the credential certificate with ecdsa-with-SHA256.
    P256,
}

/// Knobs for [`AppAttestFixture::attestation_with`]; the default makes a valid object.
#[derive(Debug, Clone, Default)]
pub struct AttestationTweaks {
    /// Replace `fmt` (e.g. `"packed"`).
    pub fmt: Option<String>,
    /// Compute the certificate's nonce from these client data instead.
    pub nonce_client_data: Option<Vec<u8>>,
    /// Compute the RP ID hash from this App ID (`TEAM.bundle`) instead.
    pub rp_id: Option<String>,
    /// The signature counter in authData (valid: 0).
    pub counter: u32,
    /// Replace the AAGUID (valid: [`AAGUID_PRODUCTION`]).
    pub aaguid: Option<[u8; 16]>,
    /// Replace the credential ID (valid: the key ID).
    pub credential_id: Option<Vec<u8>>,
    /// Issue the intermediate from another root with the same name.
    pub other_root: bool,
    /// Sign the credential certificate with a key other than the intermediate's.
    pub leaf_signed_by_other_key: bool,
    /// Make the credential certificate expire a week before [`FIXTURE_NOW`].
    pub leaf_expired: bool,
    /// Issue the intermediate without basicConstraints cA.
    pub intermediate_not_ca: bool,
    /// Leave the nonce extension out of the credential certificate.
    pub omit_nonce_extension: bool,
    /// Add a critical extension of an unknown OID to the credential certificate.
    pub unknown_critical_extension: bool,
    /// Issue the intermediate with keyUsage digitalSignature only (no keyCertSign).
    pub intermediate_without_cert_sign: bool,
}

/// Knobs for [`AppAttestFixture::assertion_with`]; the default makes a valid object.
#[derive(Debug, Clone, Default)]
pub struct AssertionTweaks {
    /// Compute the RP ID hash from this App ID instead.
    pub rp_id: Option<String>,
    /// Sign with a fresh key instead of the attested one.
    pub other_key: bool,
}

/// A test App Attest world: a P-384 root, an intermediate CA and one P-256 device key.
pub struct AppAttestFixture {
    /// Team ID the objects are made for.
    pub team_id: String,
    /// Bundle ID the objects are made for.
    pub bundle_id: String,
    /// The receipt put in attestations (opaque test bytes).
    pub receipt: Vec<u8>,
    curve: IntermediateCurve,
    root_key: KeyPair,
    root: rcgen::Certificate,
    intermediate_key: KeyPair,
    intermediate: rcgen::Certificate,
    device_key: SigningKey,
    device_key_pair: KeyPair,
}

fn root_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Keygate Test App Attestation Root CA");
    dn.push(DnType::OrganizationName, "Keygate Tests");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = at(FIXTURE_NOW - 5 * 365 * DAY);
    params.not_after = at(FIXTURE_NOW + 20 * 365 * DAY);
    params
}

fn intermediate_params(ca: bool, cert_sign: bool) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Keygate Test App Attestation CA 1");
    dn.push(DnType::OrganizationName, "Keygate Tests");
    params.distinguished_name = dn;
    params.is_ca = if ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.key_usages = if cert_sign {
        vec![KeyUsagePurpose::KeyCertSign]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    params.not_before = at(FIXTURE_NOW - 365 * DAY);
    params.not_after = at(FIXTURE_NOW + 10 * 365 * DAY);
    params
}

fn generate(alg: &'static rcgen::SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).expect("key generation")
}

fn intermediate_alg(curve: IntermediateCurve) -> &'static rcgen::SignatureAlgorithm {
    match curve {
        IntermediateCurve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        IntermediateCurve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
    }
}

impl AppAttestFixture {
    /// A fixture whose intermediate is P-384, like Apple's.
    pub fn new(team_id: &str, bundle_id: &str) -> Self {
        Self::with_curve(team_id, bundle_id, IntermediateCurve::P384)
    }

    /// A fixture with the given intermediate curve.
    pub fn with_curve(team_id: &str, bundle_id: &str, curve: IntermediateCurve) -> Self {
        let root_key = generate(&rcgen::PKCS_ECDSA_P384_SHA384);
        let root = root_params()
            .self_signed(&root_key)
            .expect("root certificate");
        let intermediate_key = generate(intermediate_alg(curve));
        let intermediate = intermediate_params(true, true)
            .signed_by(&intermediate_key, &root, &root_key)
            .expect("intermediate certificate");
        let device_key = SigningKey::random(&mut rand::rngs::OsRng);
        let pkcs8 = device_key.to_pkcs8_der().expect("PKCS#8 encoding");
        let device_key_pair = KeyPair::try_from(pkcs8.as_bytes()).expect("rcgen key from PKCS#8");
        Self {
            team_id: team_id.to_owned(),
            bundle_id: bundle_id.to_owned(),
            receipt: b"keygate-test-receipt-0123456789abcdef".to_vec(),
            curve,
            root_key,
            root,
            intermediate_key,
            intermediate,
            device_key,
            device_key_pair,
        }
    }

    /// A configuration trusting this fixture's root, production only.
    pub fn config(&self) -> AppAttestConfig {
        AppAttestConfig {
            team_id: self.team_id.clone(),
            bundle_id: self.bundle_id.clone(),
            roots: vec![self.root_certificate()],
            allow_development: false,
        }
    }

    /// The fixture's root as a parsed certificate.
    pub fn root_certificate(&self) -> x509_cert::Certificate {
        use der::Decode;
        x509_cert::Certificate::from_der(self.root.der()).expect("rcgen root parses")
    }

    /// The fixture's root in PEM, for a configuration file.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A time inside every fixture certificate's validity.
    pub fn now(&self) -> i64 {
        FIXTURE_NOW
    }

    /// The device key as an uncompressed SEC1 point.
    pub fn public_key_sec1(&self) -> Vec<u8> {
        self.device_key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// SHA-256 of the device public key: the key ID the app sends.
    pub fn key_id(&self) -> [u8; 32] {
        sha256(&[&self.public_key_sec1()])
    }

    fn rp_id_hash(&self, rp_id: Option<&str>) -> [u8; 32] {
        match rp_id {
            Some(rp_id) => sha256(&[rp_id.as_bytes()]),
            None => sha256(&[self.team_id.as_bytes(), b".", self.bundle_id.as_bytes()]),
        }
    }

    /// A valid attestation object for `client_data`.
    pub fn attestation(&self, client_data: &[u8]) -> Vec<u8> {
        self.attestation_with(client_data, &AttestationTweaks::default())
    }

    /// An attestation object for `client_data` with the given rules broken.
    pub fn attestation_with(&self, client_data: &[u8], tweaks: &AttestationTweaks) -> Vec<u8> {
        let key_id = self.key_id();
        let credential_id = tweaks.credential_id.clone().unwrap_or(key_id.to_vec());
        let mut auth_data = Vec::new();
        auth_data.extend_from_slice(&self.rp_id_hash(tweaks.rp_id.as_deref()));
        auth_data.push(0x40); // AT: attested credential data included
        auth_data.extend_from_slice(&tweaks.counter.to_be_bytes());
        auth_data.extend_from_slice(&tweaks.aaguid.unwrap_or(AAGUID_PRODUCTION));
        let id_len = u16::try_from(credential_id.len()).expect("credential ID length");
        auth_data.extend_from_slice(&id_len.to_be_bytes());
        auth_data.extend_from_slice(&credential_id);
        auth_data.extend_from_slice(&self.cose_key());

        let nonce_data = tweaks.nonce_client_data.as_deref().unwrap_or(client_data);
        let nonce = sha256(&[&auth_data, &sha256(&[nonce_data])]);
        let leaf = self.credential_certificate(&nonce, tweaks);
        let intermediate = self.intermediate_for(tweaks);

        let object = Value::Map(vec![
            (
                text("fmt"),
                text(tweaks.fmt.as_deref().unwrap_or("apple-appattest")),
            ),
            (
                text("attStmt"),
                Value::Map(vec![
                    (
                        text("x5c"),
                        Value::Array(vec![Value::Bytes(leaf), Value::Bytes(intermediate)]),
                    ),
                    (text("receipt"), Value::Bytes(self.receipt.clone())),
                ]),
            ),
            (text("authData"), Value::Bytes(auth_data)),
        ]);
        cbor_bytes(&object)
    }

    /// The device key as a COSE_Key (EC2, ES256, P-256), as it follows the credential ID.
    fn cose_key(&self) -> Vec<u8> {
        let point = self.device_key.verifying_key().to_encoded_point(false);
        let x = point.x().map(|x| x.to_vec()).unwrap_or_default();
        let y = point.y().map(|y| y.to_vec()).unwrap_or_default();
        cbor_bytes(&Value::Map(vec![
            (Value::Integer(1.into()), Value::Integer(2.into())),
            (Value::Integer(3.into()), Value::Integer((-7).into())),
            (Value::Integer((-1).into()), Value::Integer(1.into())),
            (Value::Integer((-2).into()), Value::Bytes(x)),
            (Value::Integer((-3).into()), Value::Bytes(y)),
        ]))
    }

    fn intermediate_for(&self, tweaks: &AttestationTweaks) -> Vec<u8> {
        if tweaks.other_root {
            let other_root_key = generate(&rcgen::PKCS_ECDSA_P384_SHA384);
            let other_root = root_params()
                .self_signed(&other_root_key)
                .expect("other root");
            return intermediate_params(true, true)
                .signed_by(&self.intermediate_key, &other_root, &other_root_key)
                .expect("intermediate under other root")
                .der()
                .to_vec();
        }
        if tweaks.intermediate_not_ca || tweaks.intermediate_without_cert_sign {
            return intermediate_params(
                !tweaks.intermediate_not_ca,
                !tweaks.intermediate_without_cert_sign,
            )
            .signed_by(&self.intermediate_key, &self.root, &self.root_key)
            .expect("tweaked intermediate")
            .der()
            .to_vec();
        }
        self.intermediate.der().to_vec()
    }

    fn credential_certificate(&self, nonce: &[u8; 32], tweaks: &AttestationTweaks) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, hex_lower(&self.key_id()));
        dn.push(DnType::OrganizationName, "Keygate Tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if tweaks.leaf_expired {
            params.not_before = at(FIXTURE_NOW - 10 * DAY);
            params.not_after = at(FIXTURE_NOW - 7 * DAY);
        } else {
            params.not_before = at(FIXTURE_NOW - DAY);
            // Valid at FIXTURE_NOW and also today, so a server reading the real clock
            // (integration tests) accepts it too.
            let today = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(FIXTURE_NOW);
            params.not_after = at(FIXTURE_NOW.max(today) + 2 * DAY);
        }
        if !tweaks.omit_nonce_extension {
            // SEQUENCE { [1] EXPLICIT OCTET STRING (32) }
            let mut value = vec![0x30, 0x24, 0xa1, 0x22, 0x04, 0x20];
            value.extend_from_slice(nonce);
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[1, 2, 840, 113_635, 100, 8, 2],
                    value,
                ));
        }
        if tweaks.unknown_critical_extension {
            let mut ext =
                CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55_555, 1], vec![0x05, 0x00]);
            ext.set_criticality(true);
            params.custom_extensions.push(ext);
        }
        let signer = if tweaks.leaf_signed_by_other_key {
            generate(intermediate_alg(self.curve))
        } else {
            KeyPair::try_from(self.intermediate_key.serialize_der().as_slice())
                .expect("intermediate key copy")
        };
        params
            .signed_by(&self.device_key_pair, &self.intermediate, &signer)
            .expect("credential certificate")
            .der()
            .to_vec()
    }

    /// A valid assertion for `client_data` with signature counter `counter`.
    pub fn assertion(&self, client_data: &[u8], counter: u32) -> Vec<u8> {
        self.assertion_with(client_data, counter, &AssertionTweaks::default())
    }

    /// An assertion with the given rules broken.
    pub fn assertion_with(
        &self,
        client_data: &[u8],
        counter: u32,
        tweaks: &AssertionTweaks,
    ) -> Vec<u8> {
        let mut authenticator_data = Vec::new();
        authenticator_data.extend_from_slice(&self.rp_id_hash(tweaks.rp_id.as_deref()));
        authenticator_data.push(0x00);
        authenticator_data.extend_from_slice(&counter.to_be_bytes());
        let nonce = sha256(&[&authenticator_data, &sha256(&[client_data])]);
        let key = if tweaks.other_key {
            SigningKey::random(&mut rand::rngs::OsRng)
        } else {
            self.device_key.clone()
        };
        let signature: p256::ecdsa::Signature = key.sign(&nonce);
        cbor_bytes(&Value::Map(vec![
            (
                text("signature"),
                Value::Bytes(signature.to_der().as_bytes().to_vec()),
            ),
            (text("authenticatorData"), Value::Bytes(authenticator_data)),
        ]))
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Knobs for [`PlayIntegrityFixture::token_with`]; the default makes a valid token.
#[derive(Debug, Clone)]
pub struct VerdictTweaks {
    /// `requestDetails.requestPackageName` and `appIntegrity.packageName`.
    pub package_name: Option<String>,
    /// `requestDetails.nonce` (valid: [`expected_nonce`] of the client data).
    pub nonce: Option<String>,
    /// `requestDetails.timestampMillis` (valid: the `now` given, in milliseconds).
    pub timestamp_millis: Option<i64>,
    /// Send `timestampMillis` as a JSON string, as Google does.
    pub timestamp_as_string: bool,
    /// `appIntegrity.appRecognitionVerdict`.
    pub app_recognition_verdict: String,
    /// `appIntegrity.certificateSha256Digest` (valid: the fixture's digest).
    pub certificate_sha256: Option<[u8; 32]>,
    /// `deviceIntegrity.deviceRecognitionVerdict`.
    pub device_verdicts: Vec<String>,
    /// `accountDetails.appLicensingVerdict`.
    pub licensing_verdict: String,
    /// Sign with a fresh key instead of the configured one.
    pub sign_with_other_key: bool,
    /// Encrypt (wrap the content key) under a fresh key instead of the configured one.
    pub encrypt_with_other_key: bool,
    /// JWE `alg` (valid: `A256KW`).
    pub jwe_alg: String,
    /// JWE `enc` (valid: `A256GCM`).
    pub jwe_enc: String,
    /// JWS `alg` (valid: `ES256`).
    pub jws_alg: String,
}

impl Default for VerdictTweaks {
    fn default() -> Self {
        Self {
            package_name: None,
            nonce: None,
            timestamp_millis: None,
            timestamp_as_string: true,
            app_recognition_verdict: "PLAY_RECOGNIZED".to_owned(),
            certificate_sha256: None,
            device_verdicts: vec!["MEETS_DEVICE_INTEGRITY".to_owned()],
            licensing_verdict: "LICENSED".to_owned(),
            sign_with_other_key: false,
            encrypt_with_other_key: false,
            jwe_alg: "A256KW".to_owned(),
            jwe_enc: "A256GCM".to_owned(),
            jws_alg: "ES256".to_owned(),
        }
    }
}

/// A test Play Integrity world: the decryption and verification keys the Play Console
/// would hand out, and the signing key standing in for Google's.
pub struct PlayIntegrityFixture {
    /// The package verdicts are made for.
    pub package_name: String,
    /// SHA-256 of the (imaginary) app signing certificate.
    pub certificate_sha256: [u8; 32],
    decryption_key: [u8; 32],
    signing_key: SigningKey,
}

fn random_key() -> [u8; 32] {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

impl PlayIntegrityFixture {
    /// Fresh keys for `package_name`.
    pub fn new(package_name: &str) -> Self {
        Self {
            package_name: package_name.to_owned(),
            certificate_sha256: sha256(&[b"keygate test signing certificate"]),
            decryption_key: random_key(),
            signing_key: SigningKey::random(&mut rand::rngs::OsRng),
        }
    }

    /// A configuration with this fixture's keys (defaults of [`PlayIntegrityConfig::new`]).
    pub fn config(&self) -> PlayIntegrityConfig {
        PlayIntegrityConfig::new(
            self.package_name.clone(),
            vec![self.certificate_sha256],
            self.decryption_key,
            *self.signing_key.verifying_key(),
        )
    }

    /// The keys as the Play Console shows them: (decryption key, verification key), both
    /// standard base64; the second is a DER SubjectPublicKeyInfo.
    pub fn console_keys(&self) -> (String, String) {
        use base64::engine::general_purpose::STANDARD;
        use p256::pkcs8::EncodePublicKey;
        let spki = self
            .signing_key
            .verifying_key()
            .to_public_key_der()
            .expect("SPKI encoding");
        (
            STANDARD.encode(self.decryption_key),
            STANDARD.encode(spki.as_bytes()),
        )
    }

    /// A valid token for `client_data`, made at `now_unix_secs`.
    pub fn token(&self, client_data: &[u8], now_unix_secs: i64) -> String {
        self.token_with(client_data, now_unix_secs, &VerdictTweaks::default())
    }

    /// A token with the given rules broken.
    pub fn token_with(
        &self,
        client_data: &[u8],
        now_unix_secs: i64,
        tweaks: &VerdictTweaks,
    ) -> String {
        let package = tweaks.package_name.as_deref().unwrap_or(&self.package_name);
        let timestamp = tweaks.timestamp_millis.unwrap_or(now_unix_secs * 1000);
        let timestamp = if tweaks.timestamp_as_string {
            serde_json::Value::from(timestamp.to_string())
        } else {
            serde_json::Value::from(timestamp)
        };
        let digest = tweaks.certificate_sha256.unwrap_or(self.certificate_sha256);
        let payload = serde_json::json!({
            "requestDetails": {
                "requestPackageName": package,
                "timestampMillis": timestamp,
                "nonce": tweaks.nonce.clone().unwrap_or_else(|| expected_nonce(client_data)),
            },
            "appIntegrity": {
                "appRecognitionVerdict": tweaks.app_recognition_verdict,
                "packageName": package,
                "certificateSha256Digest": [URL_SAFE_NO_PAD.encode(digest)],
                "versionCode": "42",
            },
            "deviceIntegrity": { "deviceRecognitionVerdict": tweaks.device_verdicts },
            "accountDetails": { "appLicensingVerdict": tweaks.licensing_verdict },
        });
        let jws = self.sign(
            &payload.to_string(),
            &tweaks.jws_alg,
            tweaks.sign_with_other_key,
        );
        let kek = if tweaks.encrypt_with_other_key {
            random_key()
        } else {
            self.decryption_key
        };
        encrypt(&kek, &jws, &tweaks.jwe_alg, &tweaks.jwe_enc)
    }

    fn sign(&self, payload: &str, alg: &str, other_key: bool) -> String {
        let header = serde_json::json!({ "alg": alg }).to_string();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let key = if other_key {
            SigningKey::random(&mut rand::rngs::OsRng)
        } else {
            self.signing_key.clone()
        };
        let signature: p256::ecdsa::Signature = key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// Compact JWE with a key-wrapped random CEK and AES-256-GCM, AAD = encoded header.
fn encrypt(kek: &[u8; 32], plaintext: &str, alg: &str, enc: &str) -> String {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use rand::RngCore;
    let header = URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": alg, "enc": enc }).to_string());
    let cek = random_key();
    let wrapped = wrap_key(kek, &cek).expect("key wrap");
    let mut iv = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&cek).expect("AES-256 key");
    let sealed = cipher
        .encrypt(
            &aes_gcm::Nonce::from(iv),
            Payload {
                msg: plaintext.as_bytes(),
                aad: header.as_bytes(),
            },
        )
        .expect("AES-GCM encryption");
    let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
    format!(
        "{header}.{}.{}.{}.{}",
        URL_SAFE_NO_PAD.encode(wrapped),
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(ciphertext),
        URL_SAFE_NO_PAD.encode(tag)
    )
}
