//! GeoIP lookups from a MaxMind DB file (GeoLite2-City or GeoIP2-City shaped records; an
//! `autonomous_system_number` is read when present).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a GeoIP database knows about an address.
#[derive(Clone, Debug, PartialEq)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 country code, e.g. `DE`.
    pub country: String,
    /// Autonomous system number, when the database has one.
    pub asn: Option<u32>,
    /// Latitude and longitude in degrees, when the database has them.
    pub location: Option<(f64, f64)>,
}

/// Opening a GeoIP database failed.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// No file at the path.
    #[error("GeoIP database {path}: no such file")]
    Missing {
        /// The path tried.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("GeoIP database {path}: cannot read: {source}")]
    Unreadable {
        /// The path tried.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a MaxMind DB (no metadata marker, bad tree, bad metadata).
    #[error("GeoIP database {path}: not a valid MaxMind DB file: {reason}")]
    Corrupt {
        /// The path tried.
        path: PathBuf,
        /// What the reader refused.
        reason: String,
    },
}

/// An open GeoIP database, held in memory.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
    path: PathBuf,
    has_locations: bool,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("has_locations", &self.has_locations)
            .finish()
    }
}

#[derive(Deserialize)]
struct Record {
    country: Option<Country>,
    registered_country: Option<Country>,
    location: Option<Location>,
    autonomous_system_number: Option<u32>,
}

#[derive(Deserialize)]
struct Country {
    iso_code: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl GeoDb {
    /// Reads and checks the database at `path`.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                GeoError::Missing {
                    path: path.to_owned(),
                }
            } else {
                GeoError::Unreadable {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| GeoError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        // Country and ASN databases carry no coordinates; impossible travel needs them.
        let kind = &reader.metadata().database_type;
        let has_locations = kind.contains("City") || kind.contains("Enterprise");
        Ok(Self {
            reader,
            path: path.to_owned(),
            has_locations,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether records carry coordinates (a City or Enterprise database).
    pub fn has_locations(&self) -> bool {
        self.has_locations
    }

    /// What the database knows about `ip`; `None` when it has no record with a country.
    pub fn lookup(&self, ip: IpAddr) -> Option<GeoInfo> {
        let record: Record = self.reader.lookup(ip).ok()?.decode().ok()??;
        let country = record
            .country
            .and_then(|c| c.iso_code)
            .or_else(|| record.registered_country.and_then(|c| c.iso_code))?;
        let location = record
            .location
            .and_then(|l| Some((l.latitude?, l.longitude?)))
            .filter(|(lat, lon)| lat.is_finite() && lon.is_finite());
        Some(GeoInfo {
            country,
            asn: record.autonomous_system_number,
            location,
        })
    }
}

/// A small MaxMind DB writer for tests (format v2.0: search tree, data section, metadata).
#[cfg(any(test, feature = "test-support"))]
// Test support: indices come from the writer's own vectors, sizes from small test inputs.
#[allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
pub mod testing {
    use std::net::IpAddr;

    use super::GeoInfo;

    #[derive(Clone, Copy)]
    enum Child {
        Empty,
        Node(usize),
        Data(usize),
    }

    /// Encodes the data-section control byte(s) for `type_id` and `size`.
    fn control(out: &mut Vec<u8>, type_id: u8, size: usize) {
        let (low, extra): (u8, Vec<u8>) = if size < 29 {
            (size as u8, Vec::new())
        } else if size < 285 {
            (29, vec![(size - 29) as u8])
        } else if size < 65_821 {
            let rest = size - 285;
            (30, vec![(rest >> 8) as u8, rest as u8])
        } else {
            let rest = size - 65_821;
            (31, vec![(rest >> 16) as u8, (rest >> 8) as u8, rest as u8])
        };
        if type_id <= 7 {
            out.push((type_id << 5) | low);
        } else {
            // Extended type: type bits zero, the next byte is the type minus 7.
            out.push(low);
            out.push(type_id - 7);
        }
        out.extend_from_slice(&extra);
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        control(out, 2, s.len());
        out.extend_from_slice(s.as_bytes());
    }

    fn double(out: &mut Vec<u8>, v: f64) {
        control(out, 3, 8);
        out.extend_from_slice(&v.to_be_bytes());
    }

    /// Unsigned integer of type 5 (uint16), 6 (uint32) or 9 (uint64): minimal big-endian bytes.
    fn uint(out: &mut Vec<u8>, type_id: u8, v: u64) {
        let bytes = v.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let used = bytes.get(skip..).unwrap_or_default();
        control(out, type_id, used.len());
        out.extend_from_slice(used);
    }

    fn map_header(out: &mut Vec<u8>, pairs: usize) {
        control(out, 7, pairs);
    }

    fn record(out: &mut Vec<u8>, info: &GeoInfo) {
        let pairs = 1 + usize::from(info.location.is_some()) + usize::from(info.asn.is_some());
        map_header(out, pairs);
        string(out, "country");
        map_header(out, 1);
        string(out, "iso_code");
        string(out, &info.country);
        if let Some((lat, lon)) = info.location {
            string(out, "location");
            map_header(out, 2);
            string(out, "latitude");
            double(out, lat);
            string(out, "longitude");
            double(out, lon);
        }
        if let Some(asn) = info.asn {
            string(out, "autonomous_system_number");
            uint(out, 6, u64::from(asn));
        }
    }

    fn bits(ip: IpAddr) -> u128 {
        match ip {
            // IPv4 networks live under ::/96 of an IPv6 tree.
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        }
    }

    /// A MaxMind DB (IPv6 tree, 32-bit records, database type `keygate-test-City`) holding
    /// `entries`: network address, prefix length (of the address's own family) and record.
    /// Later, more specific entries split earlier, wider ones.
    pub fn write_mmdb(entries: &[(IpAddr, u8, GeoInfo)]) -> Vec<u8> {
        let mut nodes: Vec<[Child; 2]> = vec![[Child::Empty, Child::Empty]];
        let mut data = Vec::new();
        for (index, (ip, prefix, _)) in entries.iter().enumerate() {
            let (addr, depth) = match ip {
                IpAddr::V4(_) => (bits(*ip), 96 + u32::from((*prefix).min(32))),
                IpAddr::V6(_) => (bits(*ip), u32::from((*prefix).min(128))),
            };
            if depth == 0 {
                continue;
            }
            let mut node = 0;
            for level in 0..depth {
                let bit = ((addr >> (127 - level)) & 1) as usize;
                if level + 1 == depth {
                    nodes[node][bit] = Child::Data(index);
                    break;
                }
                node = match nodes[node][bit] {
                    Child::Node(next) => next,
                    other => {
                        // Empty, or a wider network's record that this entry splits.
                        let inherited = match other {
                            Child::Data(d) => Child::Data(d),
                            _ => Child::Empty,
                        };
                        nodes.push([inherited, inherited]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Child::Node(next);
                        next
                    }
                };
            }
        }
        let mut offsets = Vec::with_capacity(entries.len());
        for (_, _, info) in entries {
            offsets.push(data.len());
            record(&mut data, info);
        }
        let node_count = nodes.len();
        let mut out = Vec::new();
        for node in &nodes {
            for child in node {
                let value = match child {
                    Child::Empty => node_count,
                    Child::Node(n) => *n,
                    Child::Data(d) => node_count + 16 + offsets[*d],
                };
                out.extend_from_slice(&(value as u32).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        map_header(&mut out, 9);
        string(&mut out, "binary_format_major_version");
        uint(&mut out, 5, 2);
        string(&mut out, "binary_format_minor_version");
        uint(&mut out, 5, 0);
        string(&mut out, "build_epoch");
        uint(&mut out, 9, 1_700_000_000);
        string(&mut out, "database_type");
        string(&mut out, "keygate-test-City");
        string(&mut out, "description");
        map_header(&mut out, 1);
        string(&mut out, "en");
        string(&mut out, "keygate monitor test database");
        string(&mut out, "ip_version");
        uint(&mut out, 5, 6);
        string(&mut out, "languages");
        control(&mut out, 11, 1);
        string(&mut out, "en");
        string(&mut out, "node_count");
        uint(&mut out, 6, node_count as u64);
        string(&mut out, "record_size");
        uint(&mut out, 5, 32);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::testing::write_mmdb;
    use super::*;

    fn info(country: &str, loc: Option<(f64, f64)>, asn: Option<u32>) -> GeoInfo {
        GeoInfo {
            country: country.into(),
            asn,
            location: loc,
        }
    }

    #[test]
    fn written_database_answers_lookups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("geo.mmdb");
        let bytes = write_mmdb(&[
            (
                [198, 51, 0, 0].into(),
                16,
                info("DE", Some((52.5, 13.4)), Some(3320)),
            ),
            ([198, 51, 100, 0].into(), 24, info("FR", None, None)),
            (
                "2001:db8::".parse().unwrap(),
                32,
                info("JP", Some((35.7, 139.7)), None),
            ),
        ]);
        std::fs::write(&path, bytes).unwrap();
        let db = GeoDb::open(&path).unwrap();
        assert!(db.has_locations());
        assert_eq!(
            db.lookup([198, 51, 7, 9].into()),
            Some(info("DE", Some((52.5, 13.4)), Some(3320)))
        );
        assert_eq!(
            db.lookup([198, 51, 100, 200].into()),
            Some(info("FR", None, None)),
            "the more specific network wins"
        );
        assert_eq!(
            db.lookup("2001:db8:1::5".parse().unwrap()),
            Some(info("JP", Some((35.7, 139.7)), None))
        );
        assert_eq!(db.lookup([192, 0, 2, 1].into()), None);
    }

    #[test]
    fn open_missing_file_says_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = GeoDb::open(&dir.path().join("nope.mmdb")).unwrap_err();
        assert!(matches!(err, GeoError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("no such file"));
    }

    #[test]
    fn open_garbage_says_not_a_maxmind_db() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.mmdb");
        std::fs::write(&path, b"this is not a geoip database at all").unwrap();
        let err = GeoDb::open(&path).unwrap_err();
        assert!(matches!(err, GeoError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("not a valid MaxMind DB"), "{err}");
    }
}
