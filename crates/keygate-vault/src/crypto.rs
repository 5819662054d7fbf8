//! Envelope encryption (S19): a fresh AES-256-GCM data key per secret version, wrapped by
//! a key derived from the master key; associated data binds every ciphertext to
//! (purpose, secret, version), so rows cannot be swapped.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;

/// Decryption failed: wrong key, or the bytes (or their binding) were changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authenticated decryption failed (data tampered, swapped, or wrong key)")]
pub struct CryptoError;

/// What a ciphertext is for; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    SecretValue,
    DataKey,
    SystemKey,
    /// keygate's own secrets (signing keys, TOTP seeds), sealed under the system key.
    Internal,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::SecretValue => b"keygate/v1/secret-value",
            Purpose::DataKey => b"keygate/v1/data-key",
            Purpose::SystemKey => b"keygate/v1/system-key",
            Purpose::Internal => b"keygate/v1/internal",
        }
    }
}

/// Associated data: purpose ‖ 0 ‖ len(name) ‖ name ‖ version. Length-prefixed so that no
/// (name, version) pair encodes like another.
pub fn aad(purpose: Purpose, name: &str, version: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + name.len());
    out.extend_from_slice(purpose.label());
    out.push(0);
    out.extend_from_slice(&(name.len() as u64).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out
}

/// Encrypts with a fresh random 96-bit nonce; returns `nonce ‖ ciphertext ‖ tag`.
pub fn encrypt(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens `nonce ‖ ciphertext ‖ tag`. The plaintext is zeroised when dropped.
pub fn decrypt(
    key: &[u8; 32],
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(CryptoError);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError)
}

/// A fresh random 256-bit key.
pub fn random_key() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(k.as_mut());
    k
}

/// Unwraps a wrapped 256-bit key.
pub fn unwrap_key(
    kek: &[u8; 32],
    wrapped: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let plain = decrypt(kek, wrapped, aad)?;
    let mut key = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(CryptoError);
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SECURITY.md known answer: AES-256-GCM, K = 0^256, IV = 0^96, P = 0^128.
    #[test]
    fn aes_256_gcm_known_answer() {
        let cipher = Aes256Gcm::new(&[0u8; 32].into());
        let out = cipher
            .encrypt(Nonce::from_slice(&[0u8; 12]), [0u8; 16].as_slice())
            .unwrap();
        assert_eq!(hex::encode(&out[..16]), "cea7403d4d606b6e074ec5d3baf39d18");
        assert_eq!(hex::encode(&out[16..]), "d0d1c8a799996bf0265b98b5d48ab919");
    }

    #[test]
    fn round_trip_uses_fresh_nonces() {
        let k = random_key();
        let ad = aad(Purpose::SecretValue, "openai", 1);
        let a = encrypt(&k, b"sk-test", &ad).unwrap();
        let b = encrypt(&k, b"sk-test", &ad).unwrap();
        assert_ne!(a, b, "two encryptions of one value must differ");
        assert_eq!(decrypt(&k, &a, &ad).unwrap().as_slice(), b"sk-test");
    }

    #[test]
    fn any_flipped_bit_fails() {
        let k = random_key();
        let ad = aad(Purpose::SecretValue, "openai", 1);
        let sealed = encrypt(&k, b"sk-test", &ad).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(decrypt(&k, &bad, &ad), Err(CryptoError), "byte {i}");
        }
        assert_eq!(decrypt(&k, &sealed[..10], &ad), Err(CryptoError));
    }

    #[test]
    fn associated_data_binds_name_version_and_purpose() {
        let k = random_key();
        let sealed = encrypt(&k, b"v", &aad(Purpose::SecretValue, "a", 1)).unwrap();
        assert!(decrypt(&k, &sealed, &aad(Purpose::SecretValue, "b", 1)).is_err());
        assert!(decrypt(&k, &sealed, &aad(Purpose::SecretValue, "a", 2)).is_err());
        assert!(decrypt(&k, &sealed, &aad(Purpose::DataKey, "a", 1)).is_err());
        assert_ne!(
            aad(Purpose::SecretValue, "a1", 1),
            aad(Purpose::SecretValue, "a", 1)
        );
    }
}
