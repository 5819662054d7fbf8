//! Android binary XML (`AndroidManifest.xml`, compiled `res/*.xml`) and the resource
//! table (`resources.arsc`).
//!
//! Both are trees of `ResChunk_header { u16 type; u16 headerSize; u32 size }` chunks
//! (AOSP `ResourceTypes.h`). The string pool (type 0x0001) holds every string; binary XML
//! start-element chunks (0x0102) name attributes by pool index; resource-table type chunks
//! (0x0201) map key names to values. The readers print elements as
//! `<tag name="value" …>` lines and string resources as `<string name="key">value</string>`
//! so that context rules see a name next to its value, then every pool string.

use super::{FormatError, output_limit, push_line, u16_le, u32_le};

const RES_STRING_POOL: u16 = 0x0001;
const RES_XML: u16 = 0x0003;
const RES_TABLE: u16 = 0x0002;
const RES_XML_START_ELEMENT: u16 = 0x0102;
const RES_TABLE_PACKAGE: u16 = 0x0200;
const RES_TABLE_TYPE: u16 = 0x0201;
const UTF8_FLAG: u32 = 1 << 8;
const NO_INDEX: u32 = 0xffff_ffff;
const TYPE_STRING: u8 = 0x03;
const MAX_DEPTH: usize = 4;

pub(crate) struct Chunk {
    kind: u16,
    header: usize,
    start: usize,
    end: usize,
}

/// Reads the chunk at `pos`, bounded by `limit`.
fn chunk_at(d: &[u8], pos: usize, limit: usize, fmt: &'static str) -> Result<Chunk, FormatError> {
    let err = |r: &str| FormatError::new(fmt, r);
    let kind = u16_le(d, pos).ok_or_else(|| err("truncated chunk header"))?;
    let header = usize::from(u16_le(d, pos + 2).ok_or_else(|| err("truncated chunk header"))?);
    let size = u32_le(d, pos + 4).ok_or_else(|| err("truncated chunk header"))? as usize;
    let end = pos
        .checked_add(size)
        .ok_or_else(|| err("chunk size overflows"))?;
    if header < 8 || size < header || end > limit {
        return Err(err("chunk size out of bounds"));
    }
    Ok(Chunk {
        kind,
        header,
        start: pos,
        end,
    })
}

/// A string pool's strings, decoded lossily.
pub(crate) fn string_pool(
    d: &[u8],
    c: &Chunk,
    fmt: &'static str,
) -> Result<Vec<String>, FormatError> {
    let err = |r: &str| FormatError::new(fmt, r);
    let count = u32_le(d, c.start + 8).ok_or_else(|| err("truncated string pool"))? as usize;
    let flags = u32_le(d, c.start + 16).ok_or_else(|| err("truncated string pool"))?;
    let strings_start =
        u32_le(d, c.start + 20).ok_or_else(|| err("truncated string pool"))? as usize;
    let offsets_at = c.start + c.header;
    if count > c.end.saturating_sub(offsets_at) / 4 {
        return Err(err("string count larger than the pool"));
    }
    let data_start = c.start.saturating_add(strings_start);
    let pool = d.get(data_start..c.end).unwrap_or(&[]);
    let utf8 = flags & UTF8_FLAG != 0;
    let mut out = Vec::with_capacity(count);
    let cap = output_limit(c.end - c.start);
    let mut decoded = 0usize;
    for i in 0..count {
        if decoded > cap {
            out.push(String::new());
            continue;
        }
        let off = u32_le(d, offsets_at + i * 4).ok_or_else(|| err("truncated offsets"))? as usize;
        let s = if utf8 {
            read_utf8(pool, off)
        } else {
            read_utf16(pool, off)
        };
        let s = s.unwrap_or_default();
        decoded += s.len();
        out.push(s);
    }
    Ok(out)
}

fn read_utf8(pool: &[u8], mut p: usize) -> Option<String> {
    // Two lengths (UTF-16 units, then bytes), each one byte or two with the high bit set.
    let mut len8 = 0;
    for _ in 0..2 {
        let b0 = usize::from(*pool.get(p)?);
        if b0 & 0x80 != 0 {
            let b1 = usize::from(*pool.get(p + 1)?);
            len8 = ((b0 & 0x7f) << 8) | b1;
            p += 2;
        } else {
            len8 = b0;
            p += 1;
        }
    }
    let bytes = pool.get(p..p.checked_add(len8)?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

fn read_utf16(pool: &[u8], p: usize) -> Option<String> {
    let n0 = usize::from(u16_le(pool, p)?);
    let (len, start) = if n0 & 0x8000 != 0 {
        let n1 = usize::from(u16_le(pool, p + 2)?);
        (((n0 & 0x7fff) << 16) | n1, p + 4)
    } else {
        (n0, p + 2)
    };
    let bytes = pool.get(start..start.checked_add(len.checked_mul(2)?)?)?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|b| {
            u16::from_le_bytes([
                b.first().copied().unwrap_or(0),
                b.get(1).copied().unwrap_or(0),
            ])
        })
        .collect();
    Some(String::from_utf16_lossy(&units))
}

fn pool_get(pool: &[String], i: u32) -> Option<&str> {
    if i == NO_INDEX {
        return None;
    }
    pool.get(i as usize).map(String::as_str)
}

/// Binary XML as text: one line per start element with its attributes, then every pool
/// string.
pub fn binary_xml_text(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    const F: &str = "binary XML";
    let top = chunk_at(d, 0, d.len(), F)?;
    if top.kind != RES_XML {
        return Err(FormatError::new(F, "not a binary XML document"));
    }
    let mut pool: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let cap = output_limit(d.len());
    let mut pos = top.start + top.header;
    while pos + 8 <= top.end && out.len() <= cap {
        let c = chunk_at(d, pos, top.end, F)?;
        match c.kind {
            RES_STRING_POOL if pool.is_empty() => pool = string_pool(d, &c, F)?,
            RES_XML_START_ELEMENT => {
                if let Some(line) = element_line(d, &c, &pool) {
                    push_line(&mut out, line.as_bytes());
                }
            }
            _ => {}
        }
        pos = c.end;
    }
    for s in &pool {
        if out.len() > cap.saturating_mul(2) {
            break;
        }
        push_line(&mut out, s.as_bytes());
    }
    Ok(out)
}

fn element_line(d: &[u8], c: &Chunk, pool: &[String]) -> Option<String> {
    let ext = c.start + c.header;
    let name = pool_get(pool, u32_le(d, ext + 4)?)?;
    let attr_start = usize::from(u16_le(d, ext + 8)?);
    let attr_size = usize::from(u16_le(d, ext + 10)?);
    let attr_count = usize::from(u16_le(d, ext + 12)?);
    if attr_size < 20 {
        return None;
    }
    let mut line = format!("<{name}");
    let cap = output_limit(d.len());
    for i in 0..attr_count {
        if line.len() > cap {
            break;
        }
        let a = ext + attr_start + i * attr_size;
        if a + 20 > c.end {
            break;
        }
        let Some(an) = u32_le(d, a + 4).and_then(|n| pool_get(pool, n)) else {
            continue;
        };
        let raw = u32_le(d, a + 8).unwrap_or(NO_INDEX);
        let data_type = d.get(a + 15).copied().unwrap_or(0);
        let data = u32_le(d, a + 16).unwrap_or(0);
        let value = match pool_get(pool, raw) {
            Some(v) => v.to_string(),
            None if data_type == TYPE_STRING => pool_get(pool, data).unwrap_or("").to_string(),
            None => format!("0x{data:x}"),
        };
        line.push_str(&format!(" {an}=\"{value}\""));
    }
    line.push('>');
    Some(line)
}

/// The resource table as text: `<string name="key">value</string>` for each string
/// resource of the plain (non-sparse) type chunks, then every string of every pool.
pub fn resource_table_text(d: &[u8]) -> Result<Vec<u8>, FormatError> {
    const F: &str = "resources.arsc";
    let top = chunk_at(d, 0, d.len(), F)?;
    if top.kind != RES_TABLE {
        return Err(FormatError::new(F, "not a resource table"));
    }
    let mut values: Vec<String> = Vec::new();
    let mut all_pools: Vec<Vec<String>> = Vec::new();
    let mut out = Vec::new();
    let mut pos = top.start + top.header;
    while pos + 8 <= top.end {
        let c = chunk_at(d, pos, top.end, F)?;
        match c.kind {
            RES_STRING_POOL if values.is_empty() => values = string_pool(d, &c, F)?,
            RES_TABLE_PACKAGE => package(d, &c, &values, &mut out, &mut all_pools, 0)?,
            _ => {}
        }
        pos = c.end;
    }
    let cap = output_limit(d.len());
    for s in values.iter().chain(all_pools.iter().flatten()) {
        if out.len() > cap.saturating_mul(2) {
            break;
        }
        push_line(&mut out, s.as_bytes());
    }
    Ok(out)
}

fn package(
    d: &[u8],
    c: &Chunk,
    values: &[String],
    out: &mut Vec<u8>,
    pools: &mut Vec<Vec<String>>,
    depth: usize,
) -> Result<(), FormatError> {
    const F: &str = "resources.arsc";
    if depth > MAX_DEPTH {
        return Err(FormatError::new(F, "nested too deep"));
    }
    // Package header: typeStrings at +268 and keyStrings at +276, offsets from the chunk.
    let key_strings = u32_le(d, c.start + 276).unwrap_or(0) as usize;
    let mut keys: Vec<String> = Vec::new();
    let mut pos = c.start + c.header;
    while pos + 8 <= c.end {
        let child = chunk_at(d, pos, c.end, F)?;
        match child.kind {
            RES_STRING_POOL => {
                let p = string_pool(d, &child, F)?;
                if child.start == c.start + key_strings {
                    keys = p.clone();
                }
                pools.push(p);
            }
            RES_TABLE_TYPE => type_chunk(d, &child, values, &keys, out),
            _ => {}
        }
        pos = child.end;
    }
    Ok(())
}

fn type_chunk(d: &[u8], c: &Chunk, values: &[String], keys: &[String], out: &mut Vec<u8>) {
    const FLAG_SPARSE: u8 = 0x01;
    const FLAG_OFFSET16: u8 = 0x02;
    const ENTRY_COMPLEX: u16 = 0x0001;
    const ENTRY_COMPACT: u16 = 0x0008;
    let flags = d.get(c.start + 9).copied().unwrap_or(0);
    let sparse = flags & FLAG_SPARSE != 0;
    let offset16 = flags & FLAG_OFFSET16 != 0;
    let Some(count) = u32_le(d, c.start + 12) else {
        return;
    };
    let Some(entries_start) = u32_le(d, c.start + 16) else {
        return;
    };
    let offsets_at = c.start + c.header;
    // Plain tables hold u32 offsets; sparse ones (idx, offset/4) u16 pairs; offset16
    // ones u16 offset/4 values with 0xffff for "no entry".
    let stride = if offset16 && !sparse { 2 } else { 4 };
    let count = (count as usize).min(c.end.saturating_sub(offsets_at) / stride);
    let base = c.start.saturating_add(entries_start as usize);
    let cap = output_limit(d.len());
    for i in 0..count {
        if out.len() > cap {
            return;
        }
        let at = offsets_at + i * stride;
        let off = if sparse {
            u16_le(d, at + 2).map(|o| usize::from(o) * 4)
        } else if offset16 {
            u16_le(d, at)
                .filter(|&o| o != 0xffff)
                .map(|o| usize::from(o) * 4)
        } else {
            u32_le(d, at).filter(|&o| o != NO_INDEX).map(|o| o as usize)
        };
        let Some(off) = off else { continue };
        let e = base.saturating_add(off);
        if e.saturating_add(8) > c.end {
            continue;
        }
        let Some(eflags) = u16_le(d, e + 2) else {
            continue;
        };
        let entry = if eflags & ENTRY_COMPACT != 0 {
            // Compact entry: u16 key index, u16 flags with the value type in the high
            // byte, u32 value data.
            u16_le(d, e)
                .zip(u32_le(d, e + 4))
                .map(|(k, data)| (u32::from(k), (eflags >> 8) as u8, data))
        } else if eflags & ENTRY_COMPLEX != 0 || e.saturating_add(16) > c.end {
            None
        } else {
            let size = usize::from(u16_le(d, e).unwrap_or(8));
            let v = e + size;
            let data_type = d.get(v + 3).copied().unwrap_or(0);
            u32_le(d, e + 4)
                .zip(u32_le(d, v + 4))
                .map(|(k, data)| (k, data_type, data))
        };
        let Some((key, data_type, data)) = entry else {
            continue;
        };
        if data_type != TYPE_STRING {
            continue;
        }
        if let (Some(k), Some(val)) = (pool_get(keys, key), pool_get(values, data)) {
            push_line(
                out,
                format!("<string name=\"{k}\">{val}</string>").as_bytes(),
            );
        }
    }
}

/// Builders of minimal documents, for tests and fuzz seeds.
#[allow(clippy::indexing_slicing)]
pub mod build {
    /// A UTF-8 (`utf8 = true`) or UTF-16 string pool chunk.
    pub fn string_pool(strings: &[&str], utf8: bool) -> Vec<u8> {
        let header = 28usize;
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        for s in strings {
            offsets.push(data.len() as u32);
            if utf8 {
                let n16 = s.encode_utf16().count();
                let n8 = s.len();
                for n in [n16, n8] {
                    if n > 0x7f {
                        data.push(0x80 | (n >> 8) as u8);
                        data.push(n as u8);
                    } else {
                        data.push(n as u8);
                    }
                }
                data.extend_from_slice(s.as_bytes());
                data.push(0);
            } else {
                let units: Vec<u16> = s.encode_utf16().collect();
                data.extend_from_slice(&(units.len() as u16).to_le_bytes());
                for u in units {
                    data.extend_from_slice(&u.to_le_bytes());
                }
                data.extend_from_slice(&[0, 0]);
            }
        }
        while data.len() % 4 != 0 {
            data.push(0);
        }
        let strings_start = header + offsets.len() * 4;
        let size = strings_start + data.len();
        let mut c = Vec::with_capacity(size);
        c.extend_from_slice(&1u16.to_le_bytes());
        c.extend_from_slice(&(header as u16).to_le_bytes());
        c.extend_from_slice(&(size as u32).to_le_bytes());
        c.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(&(if utf8 { 1u32 << 8 } else { 0 }).to_le_bytes());
        c.extend_from_slice(&(strings_start as u32).to_le_bytes());
        c.extend_from_slice(&0u32.to_le_bytes());
        for o in offsets {
            c.extend_from_slice(&o.to_le_bytes());
        }
        c.extend_from_slice(&data);
        c
    }

    fn chunk(kind: u16, header: &[u8], body: &[u8]) -> Vec<u8> {
        let hs = 8 + header.len();
        let mut c = Vec::new();
        c.extend_from_slice(&kind.to_le_bytes());
        c.extend_from_slice(&(hs as u16).to_le_bytes());
        c.extend_from_slice(&((hs + body.len()) as u32).to_le_bytes());
        c.extend_from_slice(header);
        c.extend_from_slice(body);
        c
    }

    /// A binary XML document with one element per entry of `elements`:
    /// `(tag, [(attribute, value)])`; all names and values go in the pool.
    pub fn binary_xml(elements: &[(&str, &[(&str, &str)])]) -> Vec<u8> {
        let mut owned: Vec<String> = Vec::new();
        let mut index_of = |s: &str| -> u32 {
            match owned.iter().position(|x| x == s) {
                Some(i) => i as u32,
                None => {
                    owned.push(s.to_string());
                    (owned.len() - 1) as u32
                }
            }
        };
        let mut body = Vec::new();
        for (tag, attrs) in elements {
            let name = index_of(tag);
            let mut ext = Vec::new();
            ext.extend_from_slice(&u32::MAX.to_le_bytes()); // ns
            ext.extend_from_slice(&name.to_le_bytes());
            ext.extend_from_slice(&20u16.to_le_bytes()); // attributeStart
            ext.extend_from_slice(&20u16.to_le_bytes()); // attributeSize
            ext.extend_from_slice(&(attrs.len() as u16).to_le_bytes());
            ext.extend_from_slice(&[0u8; 6]); // id, class, style indexes
            for (an, av) in attrs.iter() {
                let ai = index_of(an);
                let vi = index_of(av);
                ext.extend_from_slice(&u32::MAX.to_le_bytes());
                ext.extend_from_slice(&ai.to_le_bytes());
                ext.extend_from_slice(&vi.to_le_bytes());
                ext.extend_from_slice(&8u16.to_le_bytes());
                ext.push(0);
                ext.push(0x03);
                ext.extend_from_slice(&vi.to_le_bytes());
            }
            let mut header = Vec::new();
            header.extend_from_slice(&1u32.to_le_bytes()); // line
            header.extend_from_slice(&u32::MAX.to_le_bytes()); // comment
            body.extend(chunk(0x0102, &header, &ext));
        }
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let mut all = string_pool(&refs, false);
        all.extend(body);
        chunk(0x0003, &[], &all)
    }

    /// How a built resource table lays out its entries.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TableLayout {
        /// u32 offsets, full entries (aapt2 default).
        Plain,
        /// (index, offset/4) pairs, full entries (`--enable-sparse-encoding`).
        Sparse,
        /// u16 offsets/4 and compact 8-byte entries (`--enable-compact-entries`).
        Compact,
    }

    /// A resource table with one package holding string resources `(key, value)`.
    pub fn resource_table(resources: &[(&str, &str)]) -> Vec<u8> {
        resource_table_with(resources, TableLayout::Plain)
    }

    /// Like [`resource_table`], with the given entry layout.
    pub fn resource_table_with(resources: &[(&str, &str)], layout: TableLayout) -> Vec<u8> {
        let values: Vec<&str> = resources.iter().map(|(_, v)| *v).collect();
        let keys: Vec<&str> = resources.iter().map(|(k, _)| *k).collect();
        let global = string_pool(&values, true);
        let type_pool = string_pool(&["string"], false);
        let key_pool = string_pool(&keys, true);
        // Type chunk: header = id, res0, res1, entryCount, entriesStart, config(size 64).
        let n = resources.len();
        let mut th = Vec::new();
        th.push(1u8);
        th.push(match layout {
            TableLayout::Plain => 0u8,
            TableLayout::Sparse => 0x01,
            TableLayout::Compact => 0x02,
        });
        th.extend_from_slice(&0u16.to_le_bytes());
        th.extend_from_slice(&(n as u32).to_le_bytes());
        let type_header_len = 8 + 12 + 64;
        let stride = if layout == TableLayout::Compact { 2 } else { 4 };
        let entry_len = if layout == TableLayout::Compact {
            8
        } else {
            16
        };
        let offsets_len = (n * stride).div_ceil(4) * 4;
        th.extend_from_slice(&((type_header_len + offsets_len) as u32).to_le_bytes());
        let mut config = vec![0u8; 64];
        config[..4].copy_from_slice(&64u32.to_le_bytes());
        th.extend_from_slice(&config);
        let mut tb = Vec::new();
        for i in 0..n {
            let off = i * entry_len;
            match layout {
                TableLayout::Plain => tb.extend_from_slice(&(off as u32).to_le_bytes()),
                TableLayout::Sparse => {
                    tb.extend_from_slice(&(i as u16).to_le_bytes());
                    tb.extend_from_slice(&((off / 4) as u16).to_le_bytes());
                }
                TableLayout::Compact => tb.extend_from_slice(&((off / 4) as u16).to_le_bytes()),
            }
        }
        while tb.len() % 4 != 0 {
            tb.push(0);
        }
        for i in 0..n {
            if layout == TableLayout::Compact {
                tb.extend_from_slice(&(i as u16).to_le_bytes());
                tb.extend_from_slice(&(0x0008u16 | (0x03 << 8)).to_le_bytes());
                tb.extend_from_slice(&(i as u32).to_le_bytes());
            } else {
                tb.extend_from_slice(&8u16.to_le_bytes());
                tb.extend_from_slice(&0u16.to_le_bytes());
                tb.extend_from_slice(&(i as u32).to_le_bytes());
                tb.extend_from_slice(&8u16.to_le_bytes());
                tb.push(0);
                tb.push(0x03);
                tb.extend_from_slice(&(i as u32).to_le_bytes());
            }
        }
        let type_chunk = chunk(0x0201, &th, &tb);
        // Package header: id, name[128] u16, typeStrings, lastPublicType, keyStrings,
        // lastPublicKey, typeIdOffset.
        let pkg_header_len = 288usize;
        let mut ph = Vec::new();
        ph.extend_from_slice(&0x7fu32.to_le_bytes());
        ph.extend_from_slice(&[0u8; 256]);
        ph.extend_from_slice(&(pkg_header_len as u32).to_le_bytes());
        ph.extend_from_slice(&1u32.to_le_bytes());
        ph.extend_from_slice(&((pkg_header_len + type_pool.len()) as u32).to_le_bytes());
        ph.extend_from_slice(&(n as u32).to_le_bytes());
        ph.extend_from_slice(&0u32.to_le_bytes());
        let mut pb = Vec::new();
        pb.extend(type_pool);
        pb.extend(key_pool);
        pb.extend(type_chunk);
        let package = chunk(0x0200, &ph, &pb);
        let mut body = global;
        body.extend(package);
        chunk(0x0002, &1u32.to_le_bytes(), &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_elements_come_out_with_attributes() {
        let doc = build::binary_xml(&[
            ("manifest", &[("package", "com.acme.app")]),
            (
                "meta-data",
                &[
                    ("name", "com.google.android.geo.API_KEY"),
                    ("value", "AIzaSyTest"),
                ],
            ),
        ]);
        let text = String::from_utf8(binary_xml_text(&doc).unwrap()).unwrap();
        assert!(
            text.contains("<manifest package=\"com.acme.app\">"),
            "{text}"
        );
        assert!(
            text.contains(
                "<meta-data name=\"com.google.android.geo.API_KEY\" value=\"AIzaSyTest\">"
            ),
            "{text}"
        );
    }

    #[test]
    fn utf8_and_utf16_pools_decode() {
        for utf8 in [true, false] {
            let long = "é".repeat(150);
            let pool = build::string_pool(&["a", "héllo", &long], utf8);
            let c = chunk_at(&pool, 0, pool.len(), "t").unwrap();
            let s = string_pool(&pool, &c, "t").unwrap();
            assert_eq!(s, vec!["a".to_string(), "héllo".to_string(), long.clone()]);
        }
    }

    #[test]
    fn resource_table_maps_keys_to_values() {
        let t = build::resource_table(&[("app_name", "Acme"), ("twilio_auth_token", "0123abcd")]);
        let text = String::from_utf8(resource_table_text(&t).unwrap()).unwrap();
        assert!(
            text.contains("<string name=\"twilio_auth_token\">0123abcd</string>"),
            "{text}"
        );
        assert!(
            text.contains("<string name=\"app_name\">Acme</string>"),
            "{text}"
        );
    }

    #[test]
    fn sparse_and_compact_tables_map_keys_to_values() {
        for layout in [build::TableLayout::Sparse, build::TableLayout::Compact] {
            let t = build::resource_table_with(
                &[
                    ("app_name", "Acme"),
                    ("stripe_key", "sk_x"),
                    ("twilio_auth_token", "0123abcd"),
                ],
                layout,
            );
            let text = String::from_utf8(resource_table_text(&t).unwrap()).unwrap();
            assert!(
                text.contains("<string name=\"twilio_auth_token\">0123abcd</string>"),
                "{layout:?}: {text}"
            );
            assert!(
                text.contains("<string name=\"app_name\">Acme</string>"),
                "{layout:?}"
            );
        }
    }

    #[test]
    fn truncated_documents_are_errors_not_panics() {
        let doc = build::binary_xml(&[("a", &[("b", "c")])]);
        for n in 0..doc.len() {
            let _ = binary_xml_text(&doc[..n]);
        }
        assert!(binary_xml_text(&doc[..doc.len() - 1]).is_err());
        let t = build::resource_table(&[("k", "v")]);
        for n in 0..t.len() {
            let _ = resource_table_text(&t[..n]);
        }
        assert!(resource_table_text(&t[..10]).is_err());
    }
}
