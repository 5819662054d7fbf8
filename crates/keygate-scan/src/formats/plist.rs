//! Property lists: binary (`bplist00`) reader. XML plists are plain text and are scanned
//! as such.
//!
//! Binary layout (Apple's `CFBinaryPList.c` comments, the de-facto spec): objects, an
//! offset table, and a 32-byte trailer holding the offset size, the object-reference
//! size, the object count, the top object and the offset table's position. The reader
//! prints each dictionary entry whose key and value are strings as `"key": "value"` and
//! then every string, one per line.

use std::sync::OnceLock;

use regex::bytes::Regex;

use super::{FormatError, output_limit, push_line};

const F: &str = "binary plist";

struct Trailer {
    offset_size: usize,
    ref_size: usize,
    count: usize,
    table: usize,
}

fn be(d: &[u8], at: usize, n: usize) -> Option<u64> {
    if n == 0 || n > 8 {
        return None;
    }
    let b = d.get(at..at.checked_add(n)?)?;
    Some(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

fn trailer(d: &[u8]) -> Result<Trailer, FormatError> {
    let err = |r: &str| FormatError::new(F, r);
    if d.get(..8) != Some(b"bplist00") {
        return Err(err("bad magic"));
    }
    let t = d
        .len()
        .checked_sub(32)
        .filter(|&t| t >= 8)
        .ok_or_else(|| err("truncated"))?;
    let offset_size = usize::from(*d.get(t + 6).ok_or_else(|| err("truncated"))?);
    let ref_size = usize::from(*d.get(t + 7).ok_or_else(|| err("truncated"))?);
    let count = be(d, t + 8, 8).ok_or_else(|| err("truncated"))?;
    let table = be(d, t + 24, 8).ok_or_else(|| err("truncated"))?;
    if !(1..=8).contains(&offset_size) || !(1..=8).contains(&ref_size) {
        return Err(err("bad integer sizes in trailer"));
    }
    let table = usize::try_from(table).map_err(|_| err("offset table out of range"))?;
    let count = usize::try_from(count).map_err(|_| err("object count out of range"))?;
    let table_len = count
        .checked_mul(offset_size)
        .ok_or_else(|| err("object count out of range"))?;
    if table.checked_add(table_len).is_none_or(|e| e > t) {
        return Err(err("offset table runs past the trailer"));
    }
    Ok(Trailer {
        offset_size,
        ref_size,
        count,
        table,
    })
}

/// Length of an object whose low nibble may say "an int object follows".
fn length(d: &[u8], at: usize, nibble: u8) -> Option<(usize, usize)> {
    if nibble != 0x0f {
        return Some((usize::from(nibble), at + 1));
    }
    let marker = *d.get(at + 1)?;
    if marker & 0xf0 != 0x10 {
        return None;
    }
    let n = 1usize << (marker & 0x0f);
    let v = usize::try_from(be(d, at + 2, n)?).ok()?;
    Some((v, at + 2 + n))
}

fn string_at(d: &[u8], at: usize) -> Option<String> {
    let marker = *d.get(at)?;
    let (len, start) = length(d, at, marker & 0x0f)?;
    match marker >> 4 {
        0x5 => Some(String::from_utf8_lossy(d.get(start..start.checked_add(len)?)?).into_owned()),
        0x6 => {
            let b = d.get(start..start.checked_add(len.checked_mul(2)?)?)?;
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| {
                    u16::from_be_bytes([
                        c.first().copied().unwrap_or(0),
                        c.get(1).copied().unwrap_or(0),
                    ])
                })
                .collect();
            Some(String::from_utf16_lossy(&units))
        }
        _ => None,
    }
}

pub fn binary_plist_text(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    let t = trailer(d)?;
    let offset = |i: usize| -> Option<usize> {
        if i >= t.count {
            return None;
        }
        usize::try_from(be(d, t.table + i * t.offset_size, t.offset_size)?).ok()
    };
    let cap = output_limit(d.len());
    let mut strings: Vec<Option<String>> = Vec::with_capacity(t.count.min(1 << 20));
    let mut decoded = 0usize;
    for i in 0..t.count {
        let s = if decoded > cap {
            None
        } else {
            offset(i).and_then(|o| string_at(d, o))
        };
        decoded += s.as_ref().map_or(0, String::len);
        strings.push(s);
    }
    let mut out = Vec::new();
    for i in 0..t.count {
        let Some(o) = offset(i) else { continue };
        let Some(&marker) = d.get(o) else { continue };
        if marker >> 4 != 0xd {
            continue;
        }
        let Some((n, start)) = length(d, o, marker & 0x0f) else {
            continue;
        };
        for k in 0..n {
            if out.len() > cap {
                break;
            }
            let kr = be(d, start + k * t.ref_size, t.ref_size);
            let vr = be(d, start + (n + k) * t.ref_size, t.ref_size);
            let (Some(kr), Some(vr)) = (kr, vr) else {
                break;
            };
            let get = |r: u64| {
                usize::try_from(r)
                    .ok()
                    .and_then(|r| strings.get(r))
                    .and_then(|s| s.as_deref())
            };
            if let (Some(key), Some(value)) = (get(kr), get(vr)) {
                push_line(&mut out, format!("\"{key}\": \"{value}\"").as_bytes());
            }
        }
    }
    for s in strings.iter().flatten() {
        if out.len() > cap.saturating_mul(2) {
            break;
        }
        push_line(&mut out, s.as_bytes());
    }
    Ok(out)
}

/// Whether text looks like an XML property list.
pub fn is_xml_plist(text: &[u8]) -> bool {
    let head = text.get(..text.len().min(1024)).unwrap_or(&[]);
    memchr::memmem::find(head, b"<plist").is_some()
        || memchr::memmem::find(head, b"<!DOCTYPE plist").is_some()
}

/// XML property lists put a key and its value on separate lines, where context rules
/// cannot see them together. This appends ` KEY = "VALUE"` after each `<string>` that
/// follows a `<key>`, on the value's own line, so line numbers stay right.
pub fn xml_plist_with_pairs(text: &[u8]) -> Option<Vec<u8>> {
    static PAIR: OnceLock<Option<Regex>> = OnceLock::new();
    let re = PAIR
        .get_or_init(|| {
            Regex::new(r"(?-u)<key>([^<\n]{1,200})</key>\s{0,200}<string>([^<\n]{1,4096})</string>")
                .ok()
        })
        .as_ref()?;
    if !is_xml_plist(text) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() + text.len() / 4);
    let mut last = 0;
    for c in re.captures_iter(text) {
        let (Some(all), Some(k), Some(v)) = (c.get(0), c.get(1), c.get(2)) else {
            continue;
        };
        out.extend_from_slice(text.get(last..all.end())?);
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b" = \"");
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
        last = all.end();
    }
    out.extend_from_slice(text.get(last..)?);
    Some(out)
}

/// Builds a binary plist holding one dictionary of string keys and values (tests, fuzz
/// seeds). Uses one-byte offsets and references, so keep it small.
#[allow(clippy::indexing_slicing)]
pub fn build_dict_for_tests(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut d = b"bplist00".to_vec();
    let mut offsets = Vec::new();
    let n = entries.len();
    // Object 0 is the dict, then keys, then values.
    offsets.push(d.len());
    d.push(0xd0 | n as u8);
    for i in 0..n {
        d.push((1 + i) as u8);
    }
    for i in 0..n {
        d.push((1 + n + i) as u8);
    }
    for s in entries
        .iter()
        .map(|e| e.0)
        .chain(entries.iter().map(|e| e.1))
    {
        offsets.push(d.len());
        if s.is_ascii() {
            if s.len() < 15 {
                d.push(0x50 | s.len() as u8);
            } else {
                d.push(0x5f);
                d.push(0x11);
                d.extend_from_slice(&(s.len() as u16).to_be_bytes());
            }
            d.extend_from_slice(s.as_bytes());
        } else {
            let units: Vec<u16> = s.encode_utf16().collect();
            d.push(0x6f);
            d.push(0x11);
            d.extend_from_slice(&(units.len() as u16).to_be_bytes());
            for u in units {
                d.extend_from_slice(&u.to_be_bytes());
            }
        }
    }
    let table = d.len();
    for o in &offsets {
        d.extend_from_slice(&(*o as u16).to_be_bytes());
    }
    let mut trailer = [0u8; 32];
    trailer[6] = 2;
    trailer[7] = 1;
    trailer[8..16].copy_from_slice(&(offsets.len() as u64).to_be_bytes());
    trailer[24..32].copy_from_slice(&(table as u64).to_be_bytes());
    d.extend_from_slice(&trailer);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_entries_and_strings_come_out() {
        let p = build_dict_for_tests(&[
            ("CFBundleIdentifier", "com.acme.app"),
            ("StripeSecretKey", "sk_live_0123456789abcdefghijklmn"), // keygate:allow (test value)
            ("Ünïcode", "välue"),
        ]);
        let text = String::from_utf8(binary_plist_text(&p).unwrap()).unwrap();
        assert!(
            text.contains("\"CFBundleIdentifier\": \"com.acme.app\""),
            "{text}"
        );
        assert!(text.contains("\"StripeSecretKey\": \"sk_live_0123456789abcdefghijklmn\"")); // keygate:allow (test value)
        assert!(text.contains("\"Ünïcode\": \"välue\""), "{text}");
    }

    #[test]
    fn xml_plist_pairs_keep_lines() {
        let xml = b"<?xml version=\"1.0\"?>\n<plist version=\"1.0\">\n<dict>\n\t<key>TwilioAuthToken</key>\n\t<string>0123abcd</string>\n</dict>\n</plist>\n";
        let out = xml_plist_with_pairs(xml).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().count(),
            xml.iter().filter(|&&b| b == b'\n').count()
        );
        assert!(
            text.lines()
                .nth(4)
                .unwrap()
                .ends_with("</string> TwilioAuthToken = \"0123abcd\""),
            "{text}"
        );
        assert!(xml_plist_with_pairs(b"<key>a</key><string>b</string>").is_none());
    }

    #[test]
    fn corrupt_plists_are_errors() {
        let p = build_dict_for_tests(&[("a", "b")]);
        for n in 0..p.len() {
            let _ = binary_plist_text(&p[..n]);
        }
        assert!(binary_plist_text(&p[..p.len() - 1]).is_err());
        let mut lying = p.clone();
        let t = lying.len() - 32;
        lying[t + 8..t + 16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(binary_plist_text(&lying).is_err());
    }
}
