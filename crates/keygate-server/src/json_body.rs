//! Request documents (admin JSON bodies, applied route tables) decoded so that an error
//! names the field and the kind of problem, and never repeats what was submitted.
//!
//! serde's error texts quote the input (`invalid type: integer 9428…, expected a
//! string`, ``unknown field `sk-…` ``), and cutting quotes out of them afterwards can be
//! defeated by escaped quotes. So the text is never used: the input is first read into a
//! [`serde_json::Value`] (a syntax error gives only its line and column), then the target
//! type is decoded from that tree by a deserializer whose error type records a fixed
//! [`Problem`] and the path where it happened, built from the structure alone.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Expected, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, Visitor,
};
use serde_json::{Map, Value};

/// What is wrong with a document. No variant holds any part of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not JSON (or trailing bytes after it), at 1-based line and column.
    Malformed { line: usize, column: usize },
    /// The document ends early.
    Truncated { line: usize, column: usize },
    /// An object names the same key twice.
    DuplicateKey { line: usize, column: usize },
    /// A value of the wrong JSON type; `expected` describes the target type.
    WrongType {
        expected: String,
        found: &'static str,
    },
    /// A required field is absent (the name is the program's, not the input's).
    MissingField(&'static str),
    /// An object has a field the target does not know; its name is not repeated.
    UnknownField,
    /// The right type, but a value the target does not accept.
    InvalidValue,
    /// An array of the wrong length.
    InvalidLength,
}

/// A decoding error: the path of the field (`scopes[2]`, `routes`; empty for the document
/// itself) and the problem there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    path: Option<String>,
    pub problem: Problem,
}

impl DocumentError {
    fn new(problem: Problem) -> Self {
        Self {
            path: None,
            problem,
        }
    }

    /// A value that cannot be represented at all (e.g. a TOML date converted to JSON).
    pub fn invalid_value() -> Self {
        Self::new(Problem::InvalidValue)
    }

    /// Sets the path unless a deeper level already did.
    fn at(mut self, path: &str) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_owned());
        }
        self
    }

    /// The field path; a missing field's path includes its name.
    pub fn path(&self) -> String {
        let base = self.path.clone().unwrap_or_default();
        match &self.problem {
            Problem::MissingField(name) => join(&base, name),
            _ => base,
        }
    }

    /// Prefixes the path (`routes.openai` + `allow[0]`).
    pub fn within(mut self, prefix: &str) -> Self {
        let inner = self.path.take().unwrap_or_default();
        self.path = Some(if inner.is_empty() {
            prefix.to_owned()
        } else if inner.starts_with('[') {
            format!("{prefix}{inner}")
        } else {
            format!("{prefix}.{inner}")
        });
        self
    }

    /// The problem alone, without the path.
    pub fn problem_text(&self) -> String {
        match &self.problem {
            Problem::Malformed { line, column } => {
                format!("malformed JSON at line {line} column {column}")
            }
            Problem::Truncated { line, column } => {
                format!("JSON ends early at line {line} column {column}")
            }
            Problem::DuplicateKey { line, column } => {
                format!("duplicate key at line {line} column {column}")
            }
            Problem::WrongType { expected, found } => {
                format!("wrong type (expected {expected}, found {found})")
            }
            Problem::MissingField(_) => "missing field".to_owned(),
            Problem::UnknownField => "unknown field".to_owned(),
            Problem::InvalidValue => "invalid value".to_owned(),
            Problem::InvalidLength => "wrong number of elements".to_owned(),
        }
    }
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path();
        if path.is_empty() {
            write!(f, "request body: {}", self.problem_text())
        } else {
            write!(f, "`{path}`: {}", self.problem_text())
        }
    }
}

impl std::error::Error for DocumentError {}

/// The kind of a value, never the value.
fn kind(unexpected: &Unexpected<'_>) -> &'static str {
    match unexpected {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) | Unexpected::Float(_) => "a number",
        Unexpected::Char(_) | Unexpected::Str(_) => "a string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Unit | Unexpected::Option => "null",
        Unexpected::Seq => "an array",
        Unexpected::Map => "an object",
        _ => "another kind of value",
    }
}

impl de::Error for DocumentError {
    // A custom message may quote the input (e.g. a parser's complaint), so it is dropped.
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Self::new(Problem::InvalidValue)
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::new(Problem::WrongType {
            expected: exp.to_string(),
            found: kind(&unexp),
        })
    }

    fn invalid_value(_unexp: Unexpected<'_>, _exp: &dyn Expected) -> Self {
        Self::new(Problem::InvalidValue)
    }

    fn invalid_length(_len: usize, _exp: &dyn Expected) -> Self {
        Self::new(Problem::InvalidLength)
    }

    fn unknown_variant(_variant: &str, _expected: &'static [&'static str]) -> Self {
        Self::new(Problem::InvalidValue)
    }

    fn unknown_field(_field: &str, _expected: &'static [&'static str]) -> Self {
        Self::new(Problem::UnknownField)
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(Problem::MissingField(field))
    }

    fn duplicate_field(_field: &'static str) -> Self {
        // Unreachable from JSON (duplicate keys are refused while parsing), but never
        // echo a name either way.
        Self::new(Problem::InvalidValue)
    }
}

/// Parses JSON bytes and decodes `T` from them.
pub fn from_json_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DocumentError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de::Deserialize::deserialize(&mut de)
        .and_then(|Strict(v)| de.end().map(|()| v))
        .map_err(|e| {
            let (line, column) = (e.line(), e.column());
            DocumentError::new(match e.classify() {
                serde_json::error::Category::Eof => Problem::Truncated { line, column },
                // The only data error the strict reader raises.
                serde_json::error::Category::Data => Problem::DuplicateKey { line, column },
                _ => Problem::Malformed { line, column },
            })
        })?;
    from_value(parsed)
}

/// Decodes `T` from a JSON tree.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, DocumentError> {
    T::deserialize(De {
        value,
        path: String::new(),
    })
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_owned()
    } else {
        format!("{base}.{key}")
    }
}

/// A JSON tree read with duplicate keys refused (`serde_json::Value` keeps the last one,
/// which would let two readers of one body see different values).
struct Strict(Value);

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom("duplicate key"));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Decodes from a [`Value`], knowing where in the document it is.
struct De {
    value: Value,
    path: String,
}

impl De {
    fn visit_object<'de, V: Visitor<'de>>(
        map: Map<String, Value>,
        path: &str,
        fields: Option<&'static [&'static str]>,
        visitor: V,
    ) -> Result<V::Value, DocumentError> {
        let mut access = Object {
            iter: map.into_iter(),
            pending: None,
            path: path.to_owned(),
            fields,
        };
        let out = visitor.visit_map(&mut access)?;
        if access.iter.next().is_some() {
            return Err(DocumentError::new(Problem::InvalidLength));
        }
        Ok(out)
    }
}

impl<'de> de::Deserializer<'de> for De {
    type Error = DocumentError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocumentError> {
        let path = self.path;
        let r = match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                (None, None, None) => Err(DocumentError::new(Problem::InvalidValue)),
            },
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => {
                let len = items.len();
                let mut access = Array {
                    iter: items.into_iter().enumerate(),
                    path: path.clone(),
                };
                match visitor.visit_seq(&mut access) {
                    Ok(_) if access.iter.len() > 0 => {
                        Err(de::Error::invalid_length(len, &"fewer elements"))
                    }
                    other => other,
                }
            }
            Value::Object(map) => Self::visit_object(map, &path, None, visitor),
        };
        r.map_err(|e| e.at(&path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocumentError> {
        match self.value {
            Value::Null => visitor
                .visit_none()
                .map_err(|e: DocumentError| e.at(&self.path)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DocumentError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DocumentError> {
        match self.value {
            Value::Object(map) => Self::visit_object(map, &self.path, Some(fields), visitor)
                .map_err(|e| e.at(&self.path)),
            // Only an object. serde would also build a struct from an array of its fields
            // in order, so `[]` became a struct of defaults (found by schemathesis: a
            // PATCH with body `[]` cleared a secret's `max_versions`).
            other => {
                let found = match &other {
                    Value::Null => Unexpected::Unit,
                    // Placeholders: only the kind is reported, never a value.
                    Value::Bool(_) => Unexpected::Bool(false),
                    Value::Number(_) => Unexpected::Signed(0),
                    Value::String(_) => Unexpected::Str(""),
                    Value::Array(_) => Unexpected::Seq,
                    Value::Object(_) => Unexpected::Map,
                };
                Err(<DocumentError as de::Error>::invalid_type(found, &visitor).at(&self.path))
            }
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DocumentError> {
        match self.value {
            // Unit variants, the only kind the documents use.
            Value::String(s) => visitor
                .visit_enum(s.into_deserializer())
                .map_err(|e: DocumentError| e.at(&self.path)),
            other => De {
                value: other,
                path: self.path,
            }
            .deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, DocumentError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct Object {
    iter: serde_json::map::IntoIter,
    pending: Option<(String, Value)>,
    path: String,
    /// The target's field names, when it is a struct: keys outside this list (map keys,
    /// unknown fields) are input and never become part of a path.
    fields: Option<&'static [&'static str]>,
}

impl<'de> MapAccess<'de> for &mut Object {
    type Error = DocumentError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DocumentError> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        let known = self
            .fields
            .is_some_and(|f| f.iter().any(|name| *name == key));
        let segment = if known { key.as_str() } else { "*" };
        self.pending = Some((join(&self.path, segment), value));
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DocumentError> {
        let (path, value) = self
            .pending
            .take()
            .ok_or_else(|| DocumentError::new(Problem::InvalidValue))?;
        seed.deserialize(De { value, path })
    }
}

struct Array {
    iter: std::iter::Enumerate<std::vec::IntoIter<Value>>,
    path: String,
}

impl<'de> SeqAccess<'de> for &mut Array {
    type Error = DocumentError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DocumentError> {
        let Some((i, value)) = self.iter.next() else {
            return Ok(None);
        };
        let path = format!("{}[{i}]", self.path);
        seed.deserialize(De { value, path }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
        tags: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        value: String,
        count: Option<i64>,
        inner: Option<Inner>,
        table: Option<std::collections::BTreeMap<String, i64>>,
    }

    fn err(body: &str) -> DocumentError {
        from_json_slice::<Outer>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_struct_is_only_ever_an_object() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct AllDefault {
            #[serde(default)]
            max_versions: Option<i64>,
        }
        for body in ["[]", "[5]", "null", "7", "\"x\"", "true"] {
            let e = from_json_slice::<AllDefault>(body.as_bytes()).unwrap_err();
            assert!(
                matches!(&e.problem, Problem::WrongType { .. }),
                "{body}: {e:?}"
            );
        }
        let e = from_json_slice::<Outer>(br#"{"value": "x", "inner": ["n", []]}"#).unwrap_err();
        assert_eq!(e.path(), "inner");
        assert!(from_json_slice::<AllDefault>(b"{}").is_ok());
    }

    #[test]
    fn errors_name_the_path_and_problem_never_the_input() {
        let canary = "sk-canary-7f3a";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                r#"{"value": 94280000000000000000000000000000000000000}"#.into(),
                "value",
                "wrong type",
            ),
            (
                format!(r#"{{"value": "x", "count": "a\"b\" {canary}"}}"#),
                "count",
                "wrong type",
            ),
            (
                format!(r#"{{"value": "x", "{canary}": 1}}"#),
                "",
                "unknown field",
            ),
            (
                format!(
                    r#"{{"value": "x", "inner": {{"name": "n", "tags": ["a", 7], "zz-{canary}\"": 1}}}}"#
                ),
                "inner.tags[1]",
                "wrong type",
            ),
            (
                format!(
                    r#"{{"value": "x", "inner": {{"name": "n", "tags": [], "{canary}\"": 1}}}}"#
                ),
                "inner",
                "unknown field",
            ),
            (
                format!(r#"{{"value": "x", "table": {{"{canary}": "v"}}}}"#),
                "table.*",
                "wrong type",
            ),
            (r#"{"count": 1}"#.into(), "value", "missing field"),
            (
                format!(r#"{{"value": "{canary}", "value": "y"}}"#),
                "",
                "duplicate key at line 1",
            ),
            (
                format!("{{\"value\": \"x\",\n \"{canary}\" 1}}"),
                "",
                "malformed JSON at line 2 column",
            ),
            (format!(r#"{{"value": "{canary}"#), "", "ends early"),
            (format!(r#"{{"value": "x"}} {canary}"#), "", "malformed"),
        ];
        for (body, path, problem) in cases {
            let e = err(&body);
            let text = e.to_string();
            assert_eq!(e.path(), path, "{body}: {text}");
            assert!(text.contains(problem), "{body}: {text}");
            assert!(!text.contains("canary"), "{body}: {text}");
            assert!(!text.contains('\n'), "{body}: {text}");
        }
    }

    #[test]
    fn good_documents_decode() {
        let o: Outer = from_json_slice(
            br#"{"value": "v", "count": -3, "inner": {"name": "n", "tags": ["t"]}, "table": {"k": 1}}"#,
        )
        .unwrap();
        assert_eq!(o.value, "v");
        assert_eq!(o.count, Some(-3));
        assert_eq!(o.inner.unwrap().tags, ["t"]);
        assert_eq!(o.table.unwrap()["k"], 1);
        let o: Outer = from_json_slice(br#"{"value": "v", "count": null}"#).unwrap();
        assert_eq!(o.count, None);
    }
}
