//! Strict JSON object parsing for JOSE headers and JWT claim sets.
//!
//! RFC 7515 §5.2 lets a parser either reject duplicate member names or take the last one;
//! two parsers taking different choices is a classic confusion bug, so keygate rejects them,
//! at every nesting level.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as one JSON object with no duplicate member names anywhere in it.
pub(crate) fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    serde_json::from_slice::<NoDuplicates>(bytes).ok()?;
    match serde_json::from_slice::<Value>(bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A JSON value that deserializes only when no object inside it repeats a member name.
struct NoDuplicates;

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicate member names")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(de::Error::custom("duplicate member name"));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_objects() {
        let map = parse_object(br#"{"a":1,"b":{"c":[1,{"d":null}]}}"#).unwrap();
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert!(parse_object(br#"{"a":1,"a":2}"#).is_none());
        assert!(parse_object(br#"{"a":{"b":1,"b":1}}"#).is_none());
        assert!(parse_object(br#"{"a":[{"b":1,"b":1}]}"#).is_none());
        // Escapes name the same member.
        assert!(parse_object(br#"{"alg":1,"\u0061lg":2}"#).is_none());
    }

    #[test]
    fn rejects_non_objects_and_bad_utf8() {
        assert!(parse_object(b"[]").is_none());
        assert!(parse_object(b"\"x\"").is_none());
        assert!(parse_object(b"{\"a\":\"\xff\"}").is_none());
        assert!(parse_object(b"{} {}").is_none());
    }
}
