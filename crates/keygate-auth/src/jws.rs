//! Strict compact JWS (RFC 7515) parsing, signing and signature verification.
//!
//! keygate accepts exactly two signature schemes: Ed25519 (RFC 8037), named `EdDSA` or by
//! its fully-specified name `Ed25519` (RFC 9864), and `ES256` (RFC 7518 §3.4). Everything else — `none` in any spelling, HMAC, RSA — is rejected
//! before any key is touched (S01). The parser bounds the input (S05), accepts only
//! canonical unpadded base64url, rejects duplicate member names and any `crit`.
//!
//! The first steps — bound, split, decode, the strict header JSON and the header rules
//! every JWS shares (`Segments`, `common_header`) — also serve [`crate::idtoken`],
//! which then applies its own algorithm list (it verifies RS256 too) and reports
//! [`JoseError`] inside [`crate::idtoken::IdTokenError::Jose`].

use serde_json::{Map, Value};

use crate::keys::VerificationKey;
use crate::{b64, json};

/// The largest compact JWS keygate parses (S05).
pub const MAX_COMPACT_LEN: usize = 8 * 1024;

/// A JWS algorithm keygate supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ed25519 signatures (RFC 8037), under the polymorphic name `EdDSA`.
    EdDsa,
    /// Ed25519 signatures under their fully-specified name `Ed25519` (RFC 9864 §2.2), which
    /// current JOSE libraries emit instead of `EdDSA`. The same signature scheme; kept a
    /// separate value so each verifier lists the names it accepts (S01): DPoP proofs take
    /// both, keygate's own access tokens only the name keygate signs with.
    Ed25519,
    /// ECDSA P-256 with SHA-256, signatures as 64-byte R‖S (RFC 7518 §3.4).
    Es256,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Ed25519 => "Ed25519",
            Self::Es256 => "ES256",
        }
    }

    /// Whether signatures under this name are made with `key`'s kind of key.
    pub fn fits(self, key: &VerificationKey) -> bool {
        matches!(
            (self, key),
            (Self::EdDsa | Self::Ed25519, VerificationKey::Ed25519(_))
                | (Self::Es256, VerificationKey::P256(_))
        )
    }

    /// Parses an `alg` value exactly (names are case-sensitive, RFC 7515 §4.1.1), and
    /// classifies the refusals.
    pub fn parse(alg: &str) -> Result<Self, JoseError> {
        match alg {
            "EdDSA" => Ok(Self::EdDsa),
            "Ed25519" => Ok(Self::Ed25519),
            "ES256" => Ok(Self::Es256),
            _ => {
                refuse_unsigned_or_symmetric(alg)?;
                Err(JoseError::AlgUnsupported)
            }
        }
    }
}

/// `none` in any spelling and every HMAC name (`HS*`), refused by every verifier before
/// a key is looked at, so a public key is never used as an HMAC secret (S01).
fn refuse_unsigned_or_symmetric(alg: &str) -> Result<(), JoseError> {
    if alg.trim().eq_ignore_ascii_case("none") {
        return Err(JoseError::AlgNone);
    }
    if alg.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("hs")) {
        return Err(JoseError::AlgSymmetric);
    }
    Ok(())
}

/// What is wrong with a JWS. Fixed values, safe to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoseError {
    /// Longer than [`MAX_COMPACT_LEN`].
    #[error("token too large")]
    TooLarge,
    /// Not three non-empty dot-separated parts of canonical base64url.
    #[error("malformed compact serialization")]
    Malformed,
    /// Header or payload is not one strict JSON object.
    #[error("malformed JSON")]
    BadJson,
    /// A header member is missing or has the wrong type.
    #[error("malformed header")]
    BadHeader,
    /// `crit` (or `b64`) is present; keygate understands no extensions.
    #[error("unsupported critical header")]
    Crit,
    /// `alg` is `none` in some spelling.
    #[error("alg none")]
    AlgNone,
    /// `alg` is an HMAC algorithm.
    #[error("symmetric alg")]
    AlgSymmetric,
    /// `alg` is something else keygate does not accept.
    #[error("unsupported alg")]
    AlgUnsupported,
    /// `alg` does not fit the key.
    #[error("alg does not fit key")]
    AlgKeyMismatch,
    /// The signature has the wrong length or out-of-range scalars.
    #[error("malformed signature")]
    BadSignatureEncoding,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

/// The protected header of a parsed JWS.
#[derive(Clone, Debug)]
pub struct JwsHeader {
    alg: Algorithm,
    typ: Option<String>,
    kid: Option<String>,
    jwk: Option<Map<String, Value>>,
    key_reference: bool,
}

impl JwsHeader {
    /// The algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }
    /// The `typ` value, if any.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }
    /// The `kid` value, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
    /// The embedded `jwk` object, if any (untrusted).
    pub fn jwk(&self) -> Option<&Map<String, Value>> {
        self.jwk.as_ref()
    }
    /// Whether any of `jku`, `x5u`, `x5c`, `x5t`, `x5t#S256` is present.
    pub fn has_key_reference(&self) -> bool {
        self.key_reference
    }

    fn from_json(map: &Map<String, Value>) -> Result<Self, JoseError> {
        let alg = Algorithm::parse(common_header(map)?)?;
        let typ = opt_string(map, "typ")?;
        let kid = opt_string(map, "kid")?;
        let jwk = match map.get("jwk") {
            None => None,
            Some(Value::Object(o)) => Some(o.clone()),
            Some(_) => return Err(JoseError::BadHeader),
        };
        let key_reference = ["jku", "x5u", "x5c", "x5t", "x5t#S256"]
            .iter()
            .any(|name| map.contains_key(*name));
        Ok(Self {
            alg,
            typ,
            kid,
            jwk,
            key_reference,
        })
    }
}

/// The header rules every JWS keygate reads shares: no `crit` or `b64` (keygate
/// understands no extension), not a JWE (`enc`, `zip`), and `alg` a string that is
/// neither `none` nor HMAC. Returns the `alg` value for the caller's own list.
pub(crate) fn common_header(map: &Map<String, Value>) -> Result<&str, JoseError> {
    if map.contains_key("crit") || map.contains_key("b64") {
        return Err(JoseError::Crit);
    }
    if map.contains_key("enc") || map.contains_key("zip") {
        return Err(JoseError::BadHeader);
    }
    let Some(Value::String(alg)) = map.get("alg") else {
        return Err(JoseError::BadHeader);
    };
    refuse_unsigned_or_symmetric(alg)?;
    Ok(alg)
}

/// An optional string header member; any other type is a bad header.
pub(crate) fn opt_string(
    map: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, JoseError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JoseError::BadHeader),
    }
}

/// A compact JWS bounded (S05) and split into its three parts; nothing decoded yet.
pub(crate) struct Segments<'a> {
    token: &'a str,
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> Segments<'a> {
    /// At most [`MAX_COMPACT_LEN`] bytes, exactly three parts, the first two not empty.
    /// The signature part is checked by [`Segments::signature`], so that an unsigned
    /// token can be named by its `alg` first.
    pub(crate) fn split(token: &'a str) -> Result<Self, JoseError> {
        if token.len() > MAX_COMPACT_LEN {
            return Err(JoseError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoseError::Malformed);
        };
        if header.is_empty() || payload.is_empty() {
            return Err(JoseError::Malformed);
        }
        Ok(Self {
            token,
            header,
            payload,
            signature,
        })
    }

    /// The protected header as one strict JSON object (no duplicate member names).
    pub(crate) fn header(&self) -> Result<Map<String, Value>, JoseError> {
        let bytes = b64::decode(self.header).ok_or(JoseError::Malformed)?;
        json::parse_object(&bytes).ok_or(JoseError::BadJson)
    }

    /// The payload bytes.
    pub(crate) fn payload(&self) -> Result<Vec<u8>, JoseError> {
        b64::decode(self.payload).ok_or(JoseError::Malformed)
    }

    /// The signature bytes; an empty signature part is malformed.
    pub(crate) fn signature(&self) -> Result<Vec<u8>, JoseError> {
        if self.signature.is_empty() {
            return Err(JoseError::Malformed);
        }
        b64::decode(self.signature).ok_or(JoseError::Malformed)
    }

    /// The length of the signing input `header.payload`.
    pub(crate) fn signing_input_len(&self) -> usize {
        self.header.len() + 1 + self.payload.len()
    }

    /// The signing input `header.payload` (RFC 7515 §5.2).
    pub(crate) fn signing_input(&self) -> &'a [u8] {
        let token: &'a str = self.token;
        token
            .as_bytes()
            .get(..self.signing_input_len())
            .unwrap_or_default()
    }
}

/// A parsed, not yet verified, compact JWS.
#[derive(Clone, Debug)]
pub struct CompactJws {
    header: JwsHeader,
    signing_input_len: usize,
    token: String,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Parses a compact JWS strictly. Verifies nothing cryptographic.
pub fn parse_compact(token: &str) -> Result<CompactJws, JoseError> {
    let segments = Segments::split(token)?;
    // Every part is decoded before the header is judged: a malformed token is named
    // malformed whatever its header says.
    let signature = segments.signature()?;
    let payload = segments.payload()?;
    let header = JwsHeader::from_json(&segments.header()?)?;
    Ok(CompactJws {
        header,
        signing_input_len: segments.signing_input_len(),
        token: token.to_owned(),
        payload,
        signature,
    })
}

impl CompactJws {
    /// The protected header.
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// The payload bytes (unverified until [`CompactJws::verify`] succeeds).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload as one strict JSON object (no duplicate member names).
    pub fn claims(&self) -> Result<Map<String, Value>, JoseError> {
        json::parse_object(&self.payload).ok_or(JoseError::BadJson)
    }

    /// Verifies the signature with `key`; the header `alg` must fit the key.
    pub fn verify(&self, key: &VerificationKey) -> Result<(), JoseError> {
        let input = self
            .token
            .as_bytes()
            .get(..self.signing_input_len)
            .ok_or(JoseError::Malformed)?;
        verify_signature(key, self.header.alg, input, &self.signature)
    }
}

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `0 < scalar < n` for a 32-byte big-endian scalar (CVE-2022-21449 guard, S05).
fn scalar_in_range(scalar: &[u8]) -> bool {
    scalar.len() == 32 && scalar.iter().any(|&b| b != 0) && scalar < &P256_ORDER[..]
}

/// Verifies `signature` over `input` with `key` under `alg`.
pub fn verify_signature(
    key: &VerificationKey,
    alg: Algorithm,
    input: &[u8],
    signature: &[u8],
) -> Result<(), JoseError> {
    if !alg.fits(key) {
        return Err(JoseError::AlgKeyMismatch);
    }
    match key {
        VerificationKey::Ed25519(vk) => {
            let bytes: &[u8; 64] = signature
                .try_into()
                .map_err(|_| JoseError::BadSignatureEncoding)?;
            let sig = ed25519_dalek::Signature::from_bytes(bytes);
            vk.verify_strict(input, &sig)
                .map_err(|_| JoseError::BadSignature)
        }
        VerificationKey::P256(vk) => {
            // Exactly R‖S, 32 bytes each; DER or any other length is refused.
            if signature.len() != 64 {
                return Err(JoseError::BadSignatureEncoding);
            }
            let (r, s) = signature.split_at(32);
            // Checked here rather than left to the library, so the S05 guarantee does
            // not depend on which ECDSA implementation runs below.
            if !scalar_in_range(r) || !scalar_in_range(s) {
                return Err(JoseError::BadSignatureEncoding);
            }
            // ring's fixed-length ECDSA: exactly 64-byte R‖S, SHA-256 of the input,
            // high and low s alike (as RustCrypto p256 did). The point was validated
            // when the key was built; ring validates it again.
            let point = vk.to_encoded_point(false);
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point.as_bytes(),
            )
            .verify(input, signature)
            .map_err(|_| JoseError::BadSignature)
        }
    }
}

/// Signs `header` and `claims` into a compact JWS with `key`.
///
/// `header` gets `alg` set from the key; callers supply `typ`, `kid` and nothing else
/// that needs trusting.
pub fn sign_compact(
    key: &crate::keys::SigningKey,
    mut header: Map<String, Value>,
    claims: &Value,
) -> String {
    header.insert("alg".into(), Value::String(key.algorithm().as_str().into()));
    let header_b64 = b64::encode(Value::Object(header).to_string());
    let payload_b64 = b64::encode(claims.to_string());
    let input = format!("{header_b64}.{payload_b64}");
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64::encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alg_classification() {
        assert_eq!(Algorithm::parse("EdDSA"), Ok(Algorithm::EdDsa));
        assert_eq!(Algorithm::parse("ES256"), Ok(Algorithm::Es256));
        assert_eq!(Algorithm::parse("Ed25519"), Ok(Algorithm::Ed25519));
        for none in ["none", "None", "NONE", "nOnE"] {
            assert_eq!(Algorithm::parse(none), Err(JoseError::AlgNone));
        }
        for hs in ["HS256", "hs384", "HS512"] {
            assert_eq!(Algorithm::parse(hs), Err(JoseError::AlgSymmetric));
        }
        for other in [
            "RS256", "es256", "eddsa", "ed25519", "Ed448", "ESP256", "PS256", "ES256K", "",
        ] {
            assert_eq!(Algorithm::parse(other), Err(JoseError::AlgUnsupported));
        }
    }

    /// `n - s` for a 32-byte big-endian scalar `0 < s < n`: the other valid `s`.
    fn negate(s: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = i16::from(P256_ORDER[i]) - i16::from(s[i]) - borrow;
            borrow = i16::from(d < 0);
            if d < 0 {
                d += 256;
            }
            out[i] = d as u8;
        }
        out
    }

    /// The verifier before ring: RustCrypto p256, as the reference.
    fn p256_reference(vk: &p256::ecdsa::VerifyingKey, input: &[u8], sig: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        sig.len() == 64
            && scalar_in_range(&sig[..32])
            && scalar_in_range(&sig[32..])
            && p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| vk.verify(input, &s).is_ok())
    }

    /// ring and RustCrypto p256 agree on valid, high-s, tampered and random signatures.
    #[test]
    fn es256_ring_agrees_with_p256_reference() {
        use rand::RngCore as _;
        let mut rng = rand::rngs::OsRng;
        for round in 0..64 {
            let key = crate::keys::SigningKey::generate(Algorithm::Es256);
            let crate::keys::VerificationKey::P256(vk) = key.verification_key().clone() else {
                panic!("not P-256");
            };
            let mut input = vec![0u8; 1 + round * 3];
            rng.fill_bytes(&mut input);
            let sig = key.sign(&input);
            let high_s = [&sig[..32], &negate(&sig[32..])[..]].concat();
            let mut flipped = sig.clone();
            flipped[round % 64] ^= 1 << (round % 8);
            let mut random = vec![0u8; 64];
            rng.fill_bytes(&mut random);
            let mut other_input = input.clone();
            other_input[0] ^= 0x80;
            let cases: [(&[u8], &[u8], Option<bool>); 5] = [
                (&input, &sig, Some(true)),
                (&input, &high_s, Some(true)),
                (&input, &flipped, None),
                (&input, &random, Some(false)),
                (&other_input, &sig, Some(false)),
            ];
            for (msg, s, expected) in cases {
                let ours =
                    verify_signature(key.verification_key(), Algorithm::Es256, msg, s).is_ok();
                assert_eq!(ours, p256_reference(&vk, msg, s), "round {round}");
                if let Some(expected) = expected {
                    assert_eq!(ours, expected, "round {round}");
                }
            }
        }
    }

    #[test]
    fn scalar_range() {
        assert!(!scalar_in_range(&[0u8; 32]));
        assert!(!scalar_in_range(&P256_ORDER));
        let mut below = P256_ORDER;
        below[31] -= 1;
        assert!(scalar_in_range(&below));
        assert!(!scalar_in_range(&[0xff; 32]));
        assert!(!scalar_in_range(&[1u8; 31]));
    }
}
