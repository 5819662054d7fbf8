//! Dalvik executable (`classes*.dex`): the string table.
//!
//! Layout (Android "Dalvik Executable format"): `string_ids_size` at 0x38 and
//! `string_ids_off` at 0x3C; each string id is a u32 offset to a `string_data_item`,
//! a ULEB128 UTF-16 length followed by NUL-terminated MUTF-8 bytes.

use super::{FormatError, output_limit, push_line, u32_le};

const MAX_STRING: usize = 1 << 20;

/// Every string of the string table, one per line.
pub fn strings(data: &[u8]) -> Result<Vec<u8>, FormatError> {
    let err = |r: &str| FormatError::new("dex", r);
    if data.get(..4) != Some(b"dex\n") {
        return Err(err("bad magic"));
    }
    let count = u32_le(data, 0x38).ok_or_else(|| err("truncated header"))? as usize;
    let ids_off = u32_le(data, 0x3C).ok_or_else(|| err("truncated header"))? as usize;
    // Each id takes 4 bytes: a count larger than the file allows is a lie.
    let max_ids = data.len().saturating_sub(ids_off) / 4;
    if count > max_ids {
        return Err(err("string table runs past the end of the file"));
    }
    let mut out = Vec::new();
    let cap = output_limit(data.len());
    for i in 0..count {
        if out.len() > cap {
            break;
        }
        let Some(off) = u32_le(data, ids_off + i * 4) else {
            return Err(err("truncated string ids"));
        };
        let mut p = off as usize;
        // Skip the ULEB128 length (at most 5 bytes).
        let mut n = 0;
        loop {
            let Some(&b) = data.get(p) else {
                return Err(err("string data runs past the end of the file"));
            };
            p += 1;
            n += 1;
            if b & 0x80 == 0 || n == 5 {
                break;
            }
        }
        let rest = data.get(p..).unwrap_or(&[]);
        let end = memchr::memchr(0, rest)
            .unwrap_or(rest.len())
            .min(MAX_STRING);
        if let Some(s) = rest.get(..end) {
            push_line(&mut out, s);
        }
    }
    Ok(out)
}

/// Builds a minimal dex file holding `strings` (for tests and fuzz seeds).
#[allow(clippy::indexing_slicing)]
pub fn build_for_tests(strings: &[&str]) -> Vec<u8> {
    let header_len = 0x70;
    let ids_off = header_len;
    let mut data = vec![0u8; header_len + strings.len() * 4];
    data[..8].copy_from_slice(b"dex\n035\0");
    data[0x38..0x3C].copy_from_slice(&(strings.len() as u32).to_le_bytes());
    data[0x3C..0x40].copy_from_slice(&(ids_off as u32).to_le_bytes());
    for (i, s) in strings.iter().enumerate() {
        let off = data.len() as u32;
        let at = ids_off + i * 4;
        data[at..at + 4].copy_from_slice(&off.to_le_bytes());
        let mut len = s.encode_utf16().count() as u32;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                data.push(byte);
                break;
            }
            data.push(byte | 0x80);
        }
        data.extend_from_slice(s.as_bytes());
        data.push(0);
    }
    let size = data.len() as u32;
    data[0x20..0x24].copy_from_slice(&size.to_le_bytes());
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_string_table() {
        let long = "x".repeat(200); // needs a two-byte ULEB128 length
        let dex = build_for_tests(&["Lcom/acme/Main;", "AIzaSyExample", &long]);
        let text = String::from_utf8(strings(&dex).unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec!["Lcom/acme/Main;", "AIzaSyExample", long.as_str()]
        );
    }

    #[test]
    fn rejects_lying_counts_and_truncation() {
        let mut dex = build_for_tests(&["a", "b"]);
        dex[0x38..0x3C].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(strings(&dex).is_err());
        let dex = build_for_tests(&["abc"]);
        assert!(strings(&dex[..0x40]).is_err());
        assert!(strings(b"dex\n").is_err());
        assert!(strings(b"nope").is_err());
    }
}
