//! Keyed references: how a secret or token is named in the audit log without being in it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HMAC-SHA256 key for references to secrets and tokens in audit entries (S22).
///
/// Two entries that mention the same token carry the same reference, so an operator can
/// correlate them; without the key, a reference says nothing about the value.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuditKey([u8; 32]);

impl AuditKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// `hmac-sha256:` followed by the first 128 bits of HMAC(key, kind ‖ 0 ‖ value), in hex.
    /// `kind` separates namespaces, so a password and a token with equal bytes differ.
    pub fn reference(&self, kind: &str, value: &[u8]) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            // HMAC accepts keys of any length; this arm cannot be reached.
            Err(_) => return "hmac-sha256:unavailable".to_owned(),
        };
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        let full = hex::encode(mac.finalize().into_bytes());
        // 128 bits (32 hex digits) is plenty to correlate and short enough to read.
        format!("hmac-sha256:{}", full.get(..32).unwrap_or(&full))
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_is_stable_keyed_and_hides_the_value() {
        let k1 = AuditKey::from_bytes([1; 32]);
        let k2 = AuditKey::from_bytes([2; 32]);
        let r = k1.reference("token", b"sk-live-secret");
        assert_eq!(r, k1.reference("token", b"sk-live-secret"));
        assert_ne!(r, k2.reference("token", b"sk-live-secret"));
        assert_ne!(r, k1.reference("password", b"sk-live-secret"));
        assert!(!r.contains("secret"));
        assert!(r.starts_with("hmac-sha256:") && r.len() == 12 + 32);
        assert_eq!(format!("{k1:?}"), "AuditKey([redacted])");
    }
}
