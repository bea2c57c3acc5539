//! The limits every door enforces, in one place (documented in `docs/limits.md`), and the one
//! JSON reader every entry point uses: bounded depth, no duplicate keys.
//!
//! Why a depth limit well below serde_json's own 128: the store nests what it receives a few
//! levels deeper (a payload inside a received event inside a wait), and a document that serde
//! writes but cannot read back would poison its row. [`MAX_JSON_DEPTH`] leaves a wide margin.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The deepest nesting of arrays and objects accepted in any JSON a caller sends (payloads,
/// node configs, Kafka record values, API responses). A scalar is depth 0, `[]` depth 1.
pub const MAX_JSON_DEPTH: usize = 64;
/// The deepest nesting of an aggregation expression (`(`, `of (`) accepted.
pub const MAX_EXPRESSION_DEPTH: usize = 16;
/// The longest aggregation expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// The most sources (enabled or not) one node config may declare.
pub const MAX_SOURCES: usize = 64;
/// The most clauses one source's filter may have.
pub const MAX_FILTER_CLAUSES: usize = 64;
/// The longest field path (`payload.order.id`) accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 256;
/// The most bytes of event payloads (encoded JSON) one wait may hold: its resume carries them
/// all, and must stay below the 4 MiB a default gRPC client accepts.
pub const MAX_WAIT_PAYLOAD_BYTES: usize = 3 * 1024 * 1024;
/// The longest reason a caller may give (`CancelWait.reason`), in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// The longest reason the service records itself (a failed call's error), in bytes: longer
/// ones are cut at a character boundary with `…` appended.
pub const MAX_RECORDED_REASON_BYTES: usize = 4096;

/// The depth of a JSON value, counted without recursion (so any value can be measured).
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            deepest = deepest.max(depth + 1);
        }
    }
    deepest
}

/// The length of a value encoded as compact JSON, counted without building the text.
pub fn encoded_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail, and every `Value` encodes.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Why a JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON, or JSON with a duplicated object key.
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// Nested deeper than the limit.
    #[error("nests deeper than the limit of {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

/// Reads JSON text, refusing nesting deeper than `max_depth` and duplicated object keys (which
/// JSON readers disagree on: the last one would silently win).
pub fn parse_json(text: &str, max_depth: usize) -> Result<Value, JsonError> {
    parse_json_slice(text.as_bytes(), max_depth)
}

/// [`parse_json`] over bytes.
pub fn parse_json_slice(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Bounded {
        depth: 0,
        max: max_depth,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| {
        let text = e.to_string();
        if text.starts_with(TOO_DEEP) || e.to_string().contains("recursion limit exceeded") {
            JsonError::TooDeep { limit: max_depth }
        } else {
            JsonError::Syntax(text)
        }
    })?;
    Ok(value)
}

/// The marker of the depth error inside serde's error text.
const TOO_DEEP: &str = "json nests too deep";

/// Builds a [`Value`] one level at a time, counting depth and refusing duplicate keys.
#[derive(Clone, Copy)]
struct Bounded {
    depth: usize,
    max: usize,
}

impl Bounded {
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.max {
            return Err(E::custom(TOO_DEEP));
        }
        Ok(Self {
            depth: self.depth + 1,
            max: self.max,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Bounded {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
        let inner = self.enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = map.next_value_seed(inner)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Cuts `text` to at most `limit` bytes at a character boundary, marking the cut with `…`.
pub fn truncate_reason(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_counted_to_the_limit_and_refused_past_it() {
        let at_limit = parse_json(&nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH).unwrap();
        assert_eq!(json_depth(&at_limit), MAX_JSON_DEPTH);
        assert_eq!(
            parse_json(&nested(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH),
            Err(JsonError::TooDeep {
                limit: MAX_JSON_DEPTH
            })
        );
        // Far past serde_json's own recursion limit: refused, never a crash.
        assert_eq!(
            parse_json(&nested(100_000), MAX_JSON_DEPTH),
            Err(JsonError::TooDeep {
                limit: MAX_JSON_DEPTH
            })
        );
        assert_eq!(json_depth(&Value::Null), 0);
        assert_eq!(json_depth(&serde_json::json!({"a": []})), 2);
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let err = parse_json(r#"{"a": {"b": 1, "b": 2}}"#, 8).unwrap_err();
        assert!(
            matches!(&err, JsonError::Syntax(m) if m.contains("duplicate key \"b\"")),
            "{err}"
        );
        assert!(parse_json(r#"{"a": 1, "b": {"a": 2}}"#, 8).is_ok());
    }

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let text = r#"{"n": -1, "u": 18446744073709551615, "f": 1.5, "s": "x\u0000y", "z": null, "t": [true, false]}"#;
        assert_eq!(
            parse_json(text, 8).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert!(matches!(parse_json("[1] x", 8), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn encoded_len_is_the_length_of_the_text() {
        let v = serde_json::json!({"a": [1, "é\n", null], "b": {"c": 1.5}});
        assert_eq!(encoded_len(&v), serde_json::to_string(&v).unwrap().len());
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_reason("short", 10), "short");
        let cut = truncate_reason(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
    }
}
