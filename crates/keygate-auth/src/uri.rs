//! RFC 3986 pieces shared by DPoP `htu` normalisation ([`crate::dpop`]) and the proxy's
//! path normaliser, so percent-escapes are read by one rule.

/// The byte that the escape `%XX` starting at `at` (the `%`) encodes, or `None` when
/// either digit is missing or not hexadecimal (either case, RFC 3986 §2.1).
pub fn percent_escape(bytes: &[u8], at: usize) -> Option<u8> {
    let digit = |i: usize| bytes.get(i).and_then(|&b| char::from(b).to_digit(16));
    let value = (digit(at + 1)? << 4) | digit(at + 2)?;
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::percent_escape;

    #[test]
    fn reads_both_cases_and_refuses_the_rest() {
        assert_eq!(percent_escape(b"%2f", 0), Some(0x2f));
        assert_eq!(percent_escape(b"a%2F", 1), Some(0x2f));
        assert_eq!(percent_escape(b"%ff", 0), Some(0xff));
        for bad in [
            &b"%"[..],
            b"%2",
            b"%g0",
            b"%0g",
            b"%+1",
            b"% 1",
            b"%\xc3\xa9",
        ] {
            assert_eq!(percent_escape(bad, 0), None, "{bad:?}");
        }
    }
}
