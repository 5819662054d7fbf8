//! Admin tokens: 256 random bits, shown once, stored as their SHA-256 (S09).
//!
//! A fast hash is right here: the token is uniformly random, so there is nothing to
//! guess, and a slow hash would only slow down every admin call.

use base64::Engine;
use keygate_store::AdminCredential;
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Prefix that makes a leaked admin token recognisable to scanners and log redaction.
pub const PREFIX: &str = "kga_";

/// A new token and the credential that stores its hash.
pub fn generate(label: &str) -> (SecretString, AdminCredential) {
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(raw.as_mut());
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref())
    );
    let mut id = [0u8; 6];
    OsRng.fill_bytes(&mut id);
    let credential = AdminCredential {
        id: hex::encode(id),
        token_hash: Sha256::digest(token.as_bytes()).to_vec(),
        created_ms: keygate_vault::now_ms(),
        label: label.to_owned(),
    };
    (SecretString::from(token), credential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn tokens_are_random_prefixed_and_stored_hashed() {
        let (t1, c1) = generate("a");
        let (t2, c2) = generate("b");
        assert_ne!(t1.expose_secret(), t2.expose_secret());
        assert!(t1.expose_secret().starts_with(PREFIX));
        assert_eq!(t1.expose_secret().len(), PREFIX.len() + 43);
        assert_eq!(
            c1.token_hash,
            Sha256::digest(t1.expose_secret().as_bytes()).to_vec()
        );
        assert_ne!(c1.id, c2.id);
        assert!(!format!("{c1:?}").contains(t1.expose_secret()));
    }
}
