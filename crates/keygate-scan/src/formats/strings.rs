//! Printable strings of executables (ELF and Mach-O libraries, Java classes), like
//! `strings(1)`: runs of printable ASCII of at least `min` bytes, one per line.

pub fn printable(data: &[u8], min: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &b) in data.iter().enumerate() {
        let printable = (0x20..0x7f).contains(&b) || b == b'\t';
        match (printable, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s >= min {
                    out.extend_from_slice(data.get(s..i).unwrap_or(&[]));
                    out.push(b'\n');
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        if data.len() - s >= min {
            out.extend_from_slice(data.get(s..).unwrap_or(&[]));
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_runs_of_printable_bytes() {
        let data = b"\x7fELF\x00\x01hello world\x00ab\x00sk_live_key\xff\xfetail!!";
        let s = printable(data, 6);
        assert_eq!(s, b"hello world\nsk_live_key\ntail!!\n".to_vec());
        assert!(printable(b"", 4).is_empty());
    }
}
