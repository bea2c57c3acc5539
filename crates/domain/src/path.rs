//! Dotted field paths into JSON values (`payload.order.id`, `items.0.sku`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::MAX_PATH_BYTES;

/// A path into a JSON value: segments separated by `.`; a numeric segment also indexes arrays.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldPath {
    raw: String,
}

impl FieldPath {
    /// Parses `a.b.c`. Segments must be non-empty; the whole at most [`MAX_PATH_BYTES`].
    pub fn parse(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err("must not be empty".into());
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(format!(
                "is {} bytes, over the limit of {MAX_PATH_BYTES} bytes",
                raw.len()
            ));
        }
        if raw.split('.').any(str::is_empty) {
            return Err(format!("{raw:?} has an empty segment"));
        }
        Ok(Self { raw })
    }

    /// The segments of the path.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.raw.split('.')
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The value at this path, if every segment resolves.
    pub fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.segments()
            .try_fold(root, |value, segment| match value {
                Value::Object(map) => map.get(segment),
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
    }

    /// The value at this path rendered as an identifier: strings as they are, numbers in
    /// decimal. Other JSON types are not identifiers.
    pub fn lookup_id(&self, root: &Value) -> Option<String> {
        match self.lookup(root)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

impl TryFrom<String> for FieldPath {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(raw)
    }
}

impl From<FieldPath> for String {
    fn from(path: FieldPath) -> String {
        path.raw
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn looks_up_nested_objects_and_arrays() {
        let doc = json!({"a": {"b": [{"c": 7}]}, "id": "x"});
        let path = FieldPath::parse("a.b.0.c").unwrap();
        assert_eq!(path.lookup(&doc), Some(&json!(7)));
        assert_eq!(path.lookup_id(&doc).as_deref(), Some("7"));
        assert_eq!(
            FieldPath::parse("id").unwrap().lookup_id(&doc).as_deref(),
            Some("x")
        );
        assert_eq!(FieldPath::parse("a.zz").unwrap().lookup(&doc), None);
        assert_eq!(FieldPath::parse("a").unwrap().lookup_id(&doc), None);
    }

    #[test]
    fn rejects_empty_segments() {
        assert!(FieldPath::parse("").is_err());
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse(".a").is_err());
    }
}
