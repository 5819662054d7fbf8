//! Signed checkpoints: the chain's head, written outside the database so that truncating
//! the log (or rewriting its tail) is detected.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Key that signs checkpoints; derived from keygate's system key, never stored in clear.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CheckpointKey([u8; 32]);

impl CheckpointKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn mac(&self, seq: i64, head: &[u8; 32], ts_ms: i64) -> [u8; 32] {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        mac.update(b"keygate-checkpoint-v1");
        mac.update(&seq.to_be_bytes());
        mac.update(head);
        mac.update(&ts_ms.to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointKey([redacted])")
    }
}

/// One line of the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    #[serde(with = "hex32")]
    pub head_hash: [u8; 32],
    pub ts_ms: i64,
    #[serde(with = "hex32")]
    pub mac: [u8; 32],
}

impl Checkpoint {
    pub fn sign(key: &CheckpointKey, seq: i64, head_hash: [u8; 32], ts_ms: i64) -> Self {
        Self {
            seq,
            head_hash,
            ts_ms,
            mac: key.mac(seq, &head_hash, ts_ms),
        }
    }

    /// True when the signature matches (compared in constant time).
    pub fn verify(&self, key: &CheckpointKey) -> bool {
        let expected = key.mac(self.seq, &self.head_hash, self.ts_ms);
        bool::from(expected.ct_eq(&self.mac))
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bytes = hex::decode(s).map_err(D::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| D::Error::custom("expected 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_detects_tampering() {
        let key = CheckpointKey::from_bytes([9; 32]);
        let cp = Checkpoint::sign(&key, 42, [3; 32], 1234);
        assert!(cp.verify(&key));
        let line = serde_json::to_string(&cp).unwrap();
        let back: Checkpoint = serde_json::from_str(&line).unwrap();
        assert!(back.verify(&key));

        let mut moved = cp.clone();
        moved.seq = 41;
        assert!(!moved.verify(&key));
        assert!(!cp.verify(&CheckpointKey::from_bytes([8; 32])));
    }
}
