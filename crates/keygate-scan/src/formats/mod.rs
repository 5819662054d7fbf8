//! Readers for the binary formats found in mobile packages. Each turns attacker-supplied
//! bytes into scannable text, never panics, and bounds its work by the input size.
//!
//! They are fuzzed (see `fuzz/`) and property-tested with random and truncated input.

pub mod axml;
pub mod dex;
pub mod plist;
pub mod strings;

/// What a reader could not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format}: {reason}")]
pub struct FormatError {
    pub format: &'static str,
    pub reason: String,
}

impl FormatError {
    pub(crate) fn new(format: &'static str, reason: impl Into<String>) -> FormatError {
        FormatError {
            format,
            reason: reason.into(),
        }
    }
}

/// The kind of a blob, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Zip,
    Dex,
    BinaryXml,
    ResourceTable,
    BinaryPlist,
    /// ELF, Mach-O (thin or fat) or a Java class file: printable strings.
    Executable,
    /// Other binary data (images, fonts…): skipped.
    OtherBinary,
    Text,
}

pub fn sniff(data: &[u8]) -> Kind {
    let head = |n: usize| data.get(..n).unwrap_or(&[]);
    if head(4) == b"PK\x03\x04" || head(4) == b"PK\x05\x06" {
        return Kind::Zip;
    }
    if head(4) == b"dex\n" {
        return Kind::Dex;
    }
    if head(4) == [0x03, 0x00, 0x08, 0x00] {
        return Kind::BinaryXml;
    }
    if head(4) == [0x02, 0x00, 0x0c, 0x00] {
        return Kind::ResourceTable;
    }
    if head(8) == b"bplist00" {
        return Kind::BinaryPlist;
    }
    match head(4) {
        [0x7f, b'E', b'L', b'F']
        | [0xfe, 0xed, 0xfa, 0xce]
        | [0xfe, 0xed, 0xfa, 0xcf]
        | [0xce, 0xfa, 0xed, 0xfe]
        | [0xcf, 0xfa, 0xed, 0xfe]
        | [0xca, 0xfe, 0xba, 0xbe] => return Kind::Executable,
        _ => {}
    }
    if looks_binary(data) {
        Kind::OtherBinary
    } else {
        Kind::Text
    }
}

/// A NUL byte in the first 8 KiB marks binary data, as git and ripgrep decide.
pub fn looks_binary(data: &[u8]) -> bool {
    let n = data.len().min(8192);
    memchr::memchr(0, data.get(..n).unwrap_or(&[])).is_some()
}

pub(crate) fn u16_le(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
}

pub(crate) fn u32_le(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    let a: [u8; 4] = b.try_into().ok()?;
    Some(u32::from_le_bytes(a))
}

/// The most text a reader produces from `input_len` bytes. Tables may point many
/// entries at one long string; without a cap a small file could expand without bound.
pub fn output_limit(input_len: usize) -> usize {
    input_len.saturating_mul(4).saturating_add(64 << 10)
}

/// Appends `s` as one line, replacing line breaks so one string stays one line.
pub(crate) fn push_line(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(
        s.iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_numbers() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Kind::Zip);
        assert_eq!(sniff(b"dex\n035\0"), Kind::Dex);
        assert_eq!(sniff(&[3, 0, 8, 0, 1, 2]), Kind::BinaryXml);
        assert_eq!(sniff(&[2, 0, 12, 0]), Kind::ResourceTable);
        assert_eq!(sniff(b"bplist00...."), Kind::BinaryPlist);
        assert_eq!(sniff(b"\x7fELF\x02\x01"), Kind::Executable);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0"), Kind::OtherBinary);
        assert_eq!(sniff(b"fn main() {}"), Kind::Text);
        assert_eq!(sniff(b""), Kind::Text);
    }

    #[test]
    fn readers_never_panic_on_random_or_truncated_input() {
        // A small xorshift generator keeps this deterministic and dependency-free.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: [&[u8]; 4] = [
            b"dex\n035\0",
            &[3, 0, 8, 0, 0xff, 0xff, 0, 0],
            &[2, 0, 12, 0, 0xff, 0xff, 0, 0],
            b"bplist00",
        ];
        for round in 0..4000 {
            let len = (next() % 512) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let seed = seeds[round % seeds.len()];
            for (i, b) in seed.iter().enumerate() {
                if i < data.len() {
                    data[i] = *b;
                }
            }
            let _ = dex::strings(&data);
            let _ = axml::binary_xml_text(&data);
            let _ = axml::resource_table_text(&data);
            let _ = plist::binary_plist_text(&data);
            let s = strings::printable(&data, 6);
            assert!(s.len() <= data.len() * 2 + 1);
        }
    }
}
