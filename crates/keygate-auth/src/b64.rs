//! Strict base64url (RFC 4648 §5) without padding, as JOSE requires (RFC 7515 §2).
//!
//! Decoding refuses padding, whitespace, the standard alphabet and non-zero trailing bits,
//! so every accepted string has exactly one byte representation and re-encodes to itself.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes canonical unpadded base64url; `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()
}

/// Decodes canonical unpadded base64url into exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_padding_whitespace_and_standard_alphabet() {
        assert_eq!(decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(decode("YQ=="), None);
        assert_eq!(decode("Y Q"), None);
        assert_eq!(decode("+/8"), None);
        assert_eq!(decode("-_8"), Some(vec![0xfb, 0xff]));
    }

    #[test]
    fn rejects_non_canonical_trailing_bits() {
        // "YR" decodes to 'a' with non-zero trailing bits in lenient decoders.
        assert_eq!(decode("YR"), None);
    }
}
