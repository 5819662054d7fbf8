//! Apple App Attest: attestation objects (once per key) and assertions (per request).
//!
//! Follows Apple's "Validating apps that connect to your server"
//! (DeviceCheck documentation). The steps are numbered as there.

use ciborium::Value;
use der::asn1::{ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode, Tag, TagNumber, Tagged};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256, Sha384};
use subtle::ConstantTimeEq;
use x509_cert::Certificate;

use crate::util::{pem_certificate_der, sha256};
use crate::{ConfigError, Refusal};

/// Apple's "Apple App Attestation Root CA" (P-384, valid 2020-03-18 to 2045-03-15), as
/// published at `https://www.apple.com/certificateauthority/Apple_App_Attestation_Root_CA.pem`.
///
/// Its DER has SHA-256 `1cb9823ba28ba6ad2d33a006941de2ae4f513ef1d4e831b9f7e0fa7b6242c932`
/// (checked by this crate's tests, together with its self-signature). Embedding it means a
/// deployment never fetches a trust anchor over the network.
pub const APPLE_APP_ATTEST_ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIICITCCAaegAwIBAgIQC/O+DvHN0uD7jG5yH2IXmDAKBggqhkjOPQQDAzBSMSYw
JAYDVQQDDB1BcHBsZSBBcHAgQXR0ZXN0YXRpb24gUm9vdCBDQTETMBEGA1UECgwK
QXBwbGUgSW5jLjETMBEGA1UECAwKQ2FsaWZvcm5pYTAeFw0yMDAzMTgxODMyNTNa
Fw00NTAzMTUwMDAwMDBaMFIxJjAkBgNVBAMMHUFwcGxlIEFwcCBBdHRlc3RhdGlv
biBSb290IENBMRMwEQYDVQQKDApBcHBsZSBJbmMuMRMwEQYDVQQIDApDYWxpZm9y
bmlhMHYwEAYHKoZIzj0CAQYFK4EEACIDYgAERTHhmLW07ATaFQIEVwTtT4dyctdh
NbJhFs/Ii2FdCgAHGbpphY3+d8qjuDngIN3WVhQUBHAoMeQ/cLiP1sOUtgjqK9au
Yen1mMEvRq9Sk3Jm5X8U62H+xTD3FE9TgS41o0IwQDAPBgNVHRMBAf8EBTADAQH/
MB0GA1UdDgQWBBSskRBTM72+aEH/pwyp5frq5eWKoTAOBgNVHQ8BAf8EBAMCAQYw
CgYIKoZIzj0EAwMDaAAwZQIwQgFGnByvsiVbpTKwSga0kP0e8EeDS4+sQmTvb7vn
53O5+FRXgeLhpJ06ysC5PrOyAjEAp5U4xDgEgllF7En3VcE3iexZZtKeYnpqtijV
oyFraWVIyd/dganmrduC1bmTBGwD
-----END CERTIFICATE-----
";

/// AAGUID of keys made in Apple's production environment: `appattest` and seven zero bytes.
pub const AAGUID_PRODUCTION: [u8; 16] = *b"appattest\0\0\0\0\0\0\0";
/// AAGUID of keys made in the development environment (apps built with the
/// `development` App Attest entitlement).
pub const AAGUID_DEVELOPMENT: [u8; 16] = *b"appattestdevelop";

/// Largest attestation object accepted. Apple's are about 5-6 KiB (two certificates and a
/// receipt); the bound keeps hostile input from costing memory before any check.
pub const MAX_ATTESTATION_BYTES: usize = 64 * 1024;
/// Largest assertion object accepted (Apple's are about 150 bytes).
pub const MAX_ASSERTION_BYTES: usize = 4 * 1024;
/// Most certificates accepted in `x5c` while decoding; verification then requires exactly
/// two (credential certificate and intermediate), which is what Apple sends.
const MAX_X5C: usize = 4;

/// Apple's nonce extension in the credential certificate.
const OID_APPLE_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113635.100.8.2");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

/// Which app, and which roots, attestations must belong to.
#[derive(Clone, Debug)]
pub struct AppAttestConfig {
    /// The Apple Developer team ID (10 characters), the first half of the App ID.
    pub team_id: String,
    /// The bundle ID, the second half of the App ID.
    pub bundle_id: String,
    /// Trust anchors. The intermediate in an attestation must be signed by the key of one
    /// of these (matched by subject name); the root itself is never taken from the
    /// attestation. Production: [`AppAttestConfig::apple`].
    pub roots: Vec<Certificate>,
    /// Also accept keys from the development environment. Keep it off in production: a
    /// development build can be made by anyone on the team, and Apple's development
    /// environment does not have production's fraud protections.
    pub allow_development: bool,
}

impl AppAttestConfig {
    /// A configuration trusting only Apple's App Attest root, production keys only.
    pub fn apple(
        team_id: impl Into<String>,
        bundle_id: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            team_id: team_id.into(),
            bundle_id: bundle_id.into(),
            roots: vec![parse_pem_certificate(APPLE_APP_ATTEST_ROOT_PEM)?],
            allow_development: false,
        })
    }

    /// `SHA-256(team_id "." bundle_id)`: the RP ID hash App Attest puts in authenticator data.
    pub fn rp_id_hash(&self) -> [u8; 32] {
        sha256(&[self.team_id.as_bytes(), b".", self.bundle_id.as_bytes()])
    }
}

/// Parses the first PEM `CERTIFICATE` block, e.g. [`APPLE_APP_ATTEST_ROOT_PEM`].
pub fn parse_pem_certificate(pem: &str) -> Result<Certificate, ConfigError> {
    let der = pem_certificate_der(pem).ok_or(ConfigError::RootNotPem)?;
    Certificate::from_der(&der).map_err(|_| ConfigError::RootNotX509)
}

/// The App Attest environment a key was made in, read from its AAGUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    /// `appattest` followed by seven zero bytes.
    Production,
    /// `appattestdevelop`; only accepted with [`AppAttestConfig::allow_development`].
    Development,
}

/// A key that passed attestation: what the caller stores to verify later assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedKey {
    /// SHA-256 of [`public_key_sec1`](Self::public_key_sec1); the app's key identifier.
    pub key_id: [u8; 32],
    /// The device key as an uncompressed SEC1 P-256 point (65 bytes, `04 || x || y`).
    pub public_key_sec1: Vec<u8>,
    /// The signature counter at attestation: always 0. Store it; each assertion must
    /// exceed the last stored value.
    pub counter: u32,
    /// Production or development.
    pub environment: Environment,
    /// Apple's receipt, for the optional fraud-metric exchange with Apple's server. It is
    /// not covered by the attestation's nonce and is not verified here.
    pub receipt: Vec<u8>,
}

/// Verifies a one-time attestation object and returns the attested key.
///
/// The chain is checked as Apple sends it: `x5c` must hold exactly the credential
/// certificate and the intermediate. The intermediate must be a CA (basicConstraints cA,
/// keyUsage keyCertSign if present) signed by the key of a configured root with the
/// matching subject; a root is never taken from the object. Every certificate, the root
/// included, must be valid at `now_unix_secs`. Critical extensions other than
/// basicConstraints and keyUsage are refused. There is no revocation check: Apple
/// publishes none for App Attest.
///
/// `key_id` is the key identifier the app sent (32 bytes, the SHA-256 of the public key;
/// the app usually sends it base64-encoded, decoding it is the caller's job).
/// `client_data` are the bytes the app hashed into `clientDataHash` (see the crate docs).
pub fn verify_attestation(
    cfg: &AppAttestConfig,
    attestation_object: &[u8],
    key_id: &[u8],
    client_data: &[u8],
    now_unix_secs: i64,
) -> Result<AttestedKey, Refusal> {
    let client_data_hash = sha256(&[client_data]);
    verify_attestation_with_client_data_hash(
        cfg,
        attestation_object,
        key_id,
        &client_data_hash,
        now_unix_secs,
    )
}

/// [`verify_attestation`] for a caller that already holds the `clientDataHash` the app
/// passed to `attestKey` (normally `SHA-256(client_data)`; Apple's API takes any bytes, and
/// Apple's own sample attestation passes the challenge unhashed). Prefer
/// [`verify_attestation`]: hashing here keeps the app and server from disagreeing on it.
pub fn verify_attestation_with_client_data_hash(
    cfg: &AppAttestConfig,
    attestation_object: &[u8],
    key_id: &[u8],
    client_data_hash: &[u8],
    now_unix_secs: i64,
) -> Result<AttestedKey, Refusal> {
    let object = decode_attestation(attestation_object)?;

    // Step 1: the chain credCert <- intermediate <- configured root, at `now`.
    let (cred_der, intermediate_der) = match object.x5c.as_slice() {
        [cred, intermediate] => (cred, intermediate),
        _ => return Err(Refusal::ChainInvalid),
    };
    let cred = parse_certificate(cred_der)?;
    let intermediate = parse_certificate(intermediate_der)?;
    if cred.tbs_certificate.issuer != intermediate.tbs_certificate.subject
        || !signed_by(&cred, &intermediate)
    {
        return Err(Refusal::ChainInvalid);
    }
    if !is_ca(&intermediate)? || !may_sign_certificates(&intermediate)? {
        return Err(Refusal::ChainInvalid);
    }
    for cert in [&cred, &intermediate] {
        if has_unknown_critical_extension(cert) {
            return Err(Refusal::ChainInvalid);
        }
    }
    let root = cfg
        .roots
        .iter()
        .find(|root| {
            intermediate.tbs_certificate.issuer == root.tbs_certificate.subject
                && signed_by(&intermediate, root)
        })
        .ok_or(Refusal::WrongRoot)?;
    for cert in [&cred, &intermediate, root] {
        if !valid_at(cert, now_unix_secs) {
            return Err(Refusal::CertExpired);
        }
    }

    // Steps 2-4: nonce = SHA-256(authData || clientDataHash) must be the value of the
    // credential certificate's extension 1.2.840.113635.100.8.2.
    let nonce = sha256(&[&object.auth_data, client_data_hash]);
    let attested_nonce = nonce_extension(&cred)?;
    if !bool::from(attested_nonce.ct_eq(&nonce)) {
        return Err(Refusal::NonceMismatch);
    }

    // Step 5: the key ID is the SHA-256 of the credential public key.
    let public_key = credential_public_key(&cred)?;
    let computed_key_id = sha256(&[&public_key]);
    if !bool::from(computed_key_id.as_slice().ct_eq(key_id)) {
        return Err(Refusal::KeyIdMismatch);
    }

    let auth = parse_auth_data(&object.auth_data)?;
    // Step 6: the RP ID hash names this app.
    if !bool::from(auth.rp_id_hash.ct_eq(&cfg.rp_id_hash())) {
        return Err(Refusal::RpIdMismatch);
    }
    // Step 7: a freshly generated key has never signed.
    if auth.counter != 0 {
        return Err(Refusal::CounterNotZero);
    }
    // Step 8: the environment.
    let attested = auth.attested.ok_or(Refusal::MalformedAuthData)?;
    let environment = if attested.aaguid == AAGUID_PRODUCTION {
        Environment::Production
    } else if attested.aaguid == AAGUID_DEVELOPMENT && cfg.allow_development {
        Environment::Development
    } else {
        return Err(Refusal::WrongAaguid);
    };
    // Step 9: the credential ID is the key ID.
    if !bool::from(attested.credential_id.ct_eq(key_id)) {
        return Err(Refusal::KeyIdMismatch);
    }

    Ok(AttestedKey {
        key_id: computed_key_id,
        public_key_sec1: public_key,
        counter: 0,
        environment,
        receipt: object.receipt,
    })
}

/// Verifies a per-request assertion made with a stored attested key and returns its new
/// counter, which the caller must store (atomically with accepting the request, so two
/// requests cannot both pass with one counter value).
///
/// `public_key_sec1` and `stored_counter` come from the caller's store
/// ([`AttestedKey::public_key_sec1`], [`AttestedKey::counter`] or the last returned value).
pub fn verify_assertion(
    cfg: &AppAttestConfig,
    public_key_sec1: &[u8],
    stored_counter: u32,
    assertion: &[u8],
    client_data: &[u8],
) -> Result<u32, Refusal> {
    let object = decode_assertion(assertion)?;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key_sec1)
        .map_err(|_| Refusal::InvalidStoredKey)?;
    let auth = parse_auth_data(&object.authenticator_data)?;

    // Steps 1-3: nonce = SHA-256(authenticatorData || SHA-256(client_data)); the signature
    // is ECDSA P-256 with SHA-256 over the nonce (so the nonce is hashed once more).
    let client_data_hash = sha256(&[client_data]);
    let nonce = sha256(&[&object.authenticator_data, &client_data_hash]);
    let signature = p256::ecdsa::Signature::from_der(&object.signature)
        .map_err(|_| Refusal::SignatureInvalid)?;
    key.verify(&nonce, &signature)
        .map_err(|_| Refusal::SignatureInvalid)?;

    // Step 4: the RP ID hash names this app.
    if !bool::from(auth.rp_id_hash.ct_eq(&cfg.rp_id_hash())) {
        return Err(Refusal::RpIdMismatch);
    }
    // Step 5: strictly increasing counter; an equal or lower one is a replay.
    if auth.counter <= stored_counter {
        return Err(Refusal::CounterNotIncreasing);
    }
    Ok(auth.counter)
}

struct AttestationObject {
    x5c: Vec<Vec<u8>>,
    receipt: Vec<u8>,
    auth_data: Vec<u8>,
}

struct AssertionObject {
    signature: Vec<u8>,
    authenticator_data: Vec<u8>,
}

/// Decodes exactly one CBOR item filling the whole input.
fn decode_cbor(bytes: &[u8], max: usize) -> Result<Value, Refusal> {
    if bytes.len() > max {
        return Err(Refusal::TooLarge);
    }
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader(&mut rest).map_err(|_| Refusal::MalformedCbor)?;
    if !rest.is_empty() {
        return Err(Refusal::MalformedCbor);
    }
    Ok(value)
}

/// The value under text key `name`; a duplicated key is refused, since two parsers could
/// disagree on which copy counts. Other keys are ignored.
fn field<'a>(map: &'a [(Value, Value)], name: &str) -> Result<&'a Value, Refusal> {
    let mut found = None;
    for (key, value) in map {
        if key.as_text() == Some(name) {
            if found.is_some() {
                return Err(Refusal::MalformedCbor);
            }
            found = Some(value);
        }
    }
    found.ok_or(Refusal::MalformedCbor)
}

fn bytes_field(map: &[(Value, Value)], name: &str) -> Result<Vec<u8>, Refusal> {
    field(map, name)?
        .as_bytes()
        .cloned()
        .ok_or(Refusal::MalformedCbor)
}

fn decode_attestation(bytes: &[u8]) -> Result<AttestationObject, Refusal> {
    let value = decode_cbor(bytes, MAX_ATTESTATION_BYTES)?;
    let map = value.as_map().ok_or(Refusal::MalformedCbor)?;
    let fmt = field(map, "fmt")?.as_text().ok_or(Refusal::MalformedCbor)?;
    if fmt != "apple-appattest" {
        return Err(Refusal::WrongFormat);
    }
    let statement = field(map, "attStmt")?
        .as_map()
        .ok_or(Refusal::MalformedCbor)?;
    let x5c_values = field(statement, "x5c")?
        .as_array()
        .ok_or(Refusal::MalformedCbor)?;
    if x5c_values.is_empty() || x5c_values.len() > MAX_X5C {
        return Err(Refusal::MalformedCbor);
    }
    let x5c = x5c_values
        .iter()
        .map(|cert| cert.as_bytes().cloned().ok_or(Refusal::MalformedCbor))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AttestationObject {
        x5c,
        receipt: bytes_field(statement, "receipt")?,
        auth_data: bytes_field(map, "authData")?,
    })
}

fn decode_assertion(bytes: &[u8]) -> Result<AssertionObject, Refusal> {
    let value = decode_cbor(bytes, MAX_ASSERTION_BYTES)?;
    let map = value.as_map().ok_or(Refusal::MalformedCbor)?;
    Ok(AssertionObject {
        signature: bytes_field(map, "signature")?,
        authenticator_data: bytes_field(map, "authenticatorData")?,
    })
}

struct AuthData<'a> {
    rp_id_hash: &'a [u8; 32],
    counter: u32,
    attested: Option<AttestedCredential<'a>>,
}

struct AttestedCredential<'a> {
    aaguid: [u8; 16],
    credential_id: &'a [u8],
}

/// `rpIdHash (32) | flags (1) | signCount (4, BE) [| aaguid (16) | credIdLen (2, BE) |
/// credentialId | credentialPublicKey]`. Attested credential data is read when present;
/// the COSE key after the credential ID is not needed (the key comes from the certificate,
/// and the whole of authData is covered by the nonce).
fn parse_auth_data(bytes: &[u8]) -> Result<AuthData<'_>, Refusal> {
    let (rp_id_hash, rest) = bytes
        .split_first_chunk::<32>()
        .ok_or(Refusal::MalformedAuthData)?;
    let (_flags, rest) = rest.split_first().ok_or(Refusal::MalformedAuthData)?;
    let (counter, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(Refusal::MalformedAuthData)?;
    let counter = u32::from_be_bytes(*counter);
    if rest.is_empty() {
        return Ok(AuthData {
            rp_id_hash,
            counter,
            attested: None,
        });
    }
    let (aaguid, rest) = rest
        .split_first_chunk::<16>()
        .ok_or(Refusal::MalformedAuthData)?;
    let (id_len, rest) = rest
        .split_first_chunk::<2>()
        .ok_or(Refusal::MalformedAuthData)?;
    let credential_id = rest
        .get(..usize::from(u16::from_be_bytes(*id_len)))
        .ok_or(Refusal::MalformedAuthData)?;
    Ok(AuthData {
        rp_id_hash,
        counter,
        attested: Some(AttestedCredential {
            aaguid: *aaguid,
            credential_id,
        }),
    })
}

/// Parses a DER certificate and insists it re-encodes to the same bytes, so the TBS bytes
/// the signature is checked over are exactly the ones received.
fn parse_certificate(der: &[u8]) -> Result<Certificate, Refusal> {
    let cert = Certificate::from_der(der).map_err(|_| Refusal::MalformedCertificate)?;
    match cert.to_der() {
        Ok(again) if again == der => Ok(cert),
        _ => Err(Refusal::MalformedCertificate),
    }
}

/// Whether `subject`'s signature verifies with `issuer`'s public key. Supports what
/// App Attest uses: ECDSA with SHA-256 or SHA-384, issuer keys on P-256 or P-384 in any
/// combination (Apple's P-384 intermediate signs with SHA-256).
fn signed_by(subject: &Certificate, issuer: &Certificate) -> bool {
    let outer = &subject.signature_algorithm;
    if *outer != subject.tbs_certificate.signature || outer.parameters.is_some() {
        return false;
    }
    let Ok(tbs) = subject.tbs_certificate.to_der() else {
        return false;
    };
    let digest: Vec<u8> = if outer.oid == OID_ECDSA_SHA256 {
        Sha256::digest(&tbs).to_vec()
    } else if outer.oid == OID_ECDSA_SHA384 {
        Sha384::digest(&tbs).to_vec()
    } else {
        return false;
    };
    let Some(signature) = subject.signature.as_bytes() else {
        return false;
    };
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY {
        return false;
    }
    let Some(curve) = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
    else {
        return false;
    };
    let Some(point) = spki.subject_public_key.as_bytes() else {
        return false;
    };
    if curve == OID_P256 {
        let (Ok(key), Ok(sig)) = (
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point),
            p256::ecdsa::Signature::from_der(signature),
        ) else {
            return false;
        };
        key.verify_prehash(&digest, &sig).is_ok()
    } else if curve == OID_P384 {
        let (Ok(key), Ok(sig)) = (
            p384::ecdsa::VerifyingKey::from_sec1_bytes(point),
            p384::ecdsa::Signature::from_der(signature),
        ) else {
            return false;
        };
        key.verify_prehash(&digest, &sig).is_ok()
    } else {
        false
    }
}

/// basicConstraints with cA = TRUE. A malformed extension is a malformed certificate.
fn is_ca(cert: &Certificate) -> Result<bool, Refusal> {
    let mut found = None;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id == OID_BASIC_CONSTRAINTS {
            if found.is_some() {
                return Err(Refusal::MalformedCertificate);
            }
            let bc = x509_cert::ext::pkix::BasicConstraints::from_der(ext.extn_value.as_bytes())
                .map_err(|_| Refusal::MalformedCertificate)?;
            found = Some(bc.ca);
        }
    }
    Ok(found.unwrap_or(false))
}

/// keyUsage, when present, must allow keyCertSign (RFC 5280 §4.2.1.3).
fn may_sign_certificates(cert: &Certificate) -> Result<bool, Refusal> {
    let mut found = None;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id == OID_KEY_USAGE {
            if found.is_some() {
                return Err(Refusal::MalformedCertificate);
            }
            let usage = x509_cert::ext::pkix::KeyUsage::from_der(ext.extn_value.as_bytes())
                .map_err(|_| Refusal::MalformedCertificate)?;
            found = Some(usage.key_cert_sign());
        }
    }
    Ok(found.unwrap_or(true))
}

/// RFC 5280 §4.2: a certificate with a critical extension the verifier does not process
/// must be refused. This verifier processes basicConstraints and keyUsage; Apple marks no
/// other extension critical.
fn has_unknown_critical_extension(cert: &Certificate) -> bool {
    cert.tbs_certificate.extensions.iter().flatten().any(|ext| {
        ext.critical && ext.extn_id != OID_BASIC_CONSTRAINTS && ext.extn_id != OID_KEY_USAGE
    })
}

fn valid_at(cert: &Certificate, now_unix_secs: i64) -> bool {
    let validity = &cert.tbs_certificate.validity;
    let not_before = validity.not_before.to_unix_duration().as_secs();
    let not_after = validity.not_after.to_unix_duration().as_secs();
    match u64::try_from(now_unix_secs) {
        Ok(now) => not_before <= now && now <= not_after,
        Err(_) => false,
    }
}

/// The 32-byte nonce in extension 1.2.840.113635.100.8.2, whose value is
/// `SEQUENCE { [1] EXPLICIT OCTET STRING }`.
fn nonce_extension(cert: &Certificate) -> Result<[u8; 32], Refusal> {
    let mut matching = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|ext| ext.extn_id == OID_APPLE_NONCE);
    let ext = matching.next().ok_or(Refusal::MalformedCertificate)?;
    if matching.next().is_some() {
        return Err(Refusal::MalformedCertificate);
    }
    let sequence =
        der::Any::from_der(ext.extn_value.as_bytes()).map_err(|_| Refusal::MalformedCertificate)?;
    if sequence.tag() != Tag::Sequence {
        return Err(Refusal::MalformedCertificate);
    }
    let tagged = der::Any::from_der(sequence.value()).map_err(|_| Refusal::MalformedCertificate)?;
    let expected_tag = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N1,
    };
    if tagged.tag() != expected_tag {
        return Err(Refusal::MalformedCertificate);
    }
    let octets =
        OctetStringRef::from_der(tagged.value()).map_err(|_| Refusal::MalformedCertificate)?;
    <[u8; 32]>::try_from(octets.as_bytes()).map_err(|_| Refusal::MalformedCertificate)
}

/// The credential certificate's key: an uncompressed P-256 point, checked to be on the curve.
fn credential_public_key(cert: &Certificate) -> Result<Vec<u8>, Refusal> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != OID_EC_PUBLIC_KEY || curve != Some(OID_P256) {
        return Err(Refusal::MalformedCertificate);
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or(Refusal::MalformedCertificate)?;
    if point.len() != 65 || point.first() != Some(&0x04) {
        return Err(Refusal::MalformedCertificate);
    }
    p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| Refusal::MalformedCertificate)?;
    Ok(point.to_vec())
}
