//! A JSON object being read field by field: each field taken is known, every problem is
//! reported with its path, and what is left over is reported as unknown.

use serde_json::{Map, Value};

use crate::filter::Filter;
use crate::path::FieldPath;
use crate::problems::{Problems, child, json_kind};

/// An object being read: fields are taken one by one; what is left over is unknown.
pub(super) struct Obj<'a> {
    map: Map<String, Value>,
    at: String,
    known: Vec<&'a str>,
}

impl<'a> Obj<'a> {
    /// `value` as an object at JSON path `at`; `None` (reported) when it is not one.
    pub(super) fn new(value: &Value, at: &str, problems: &mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self {
                map: map.clone(),
                at: at.to_owned(),
                known: Vec::new(),
            }),
            other => {
                problems.push(
                    at,
                    format!("expected an object, found {}", json_kind(other)),
                );
                None
            }
        }
    }

    /// The JSON path of field `key`.
    pub(super) fn path(&self, key: &str) -> String {
        child(&self.at, key)
    }

    /// Whether field `key` is present and not taken yet.
    pub(super) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Takes field `key`, which is known from now on.
    pub(super) fn take(&mut self, key: &'a str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key)
    }

    /// Takes field `key` as a boolean; `default` when absent or (reported) not a boolean.
    pub(super) fn bool(&mut self, key: &'a str, default: bool, problems: &mut Problems) -> bool {
        match self.take(key) {
            None => default,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                problems.push(
                    self.path(key),
                    format!("expected a boolean, found {}", json_kind(&other)),
                );
                default
            }
        }
    }

    /// Takes field `key` as a string; `None` when absent or (reported) not a string.
    pub(super) fn string(&mut self, key: &'a str, problems: &mut Problems) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s),
            other => {
                problems.push(
                    self.path(key),
                    format!("expected a string, found {}", json_kind(&other)),
                );
                None
            }
        }
    }

    /// Takes field `key` as a field path; `default` when absent or (reported) invalid.
    pub(super) fn field_path(
        &mut self,
        key: &'a str,
        default: &str,
        problems: &mut Problems,
    ) -> FieldPath {
        let raw = self
            .string(key, problems)
            .unwrap_or_else(|| default.to_owned());
        FieldPath::parse(raw).unwrap_or_else(|reason| {
            problems.push(self.path(key), reason);
            FieldPath::parse(default).expect("default field paths are valid")
        })
    }

    /// Takes field `filter`; the empty filter when absent or null.
    pub(super) fn filter(&mut self, problems: &mut Problems) -> Filter {
        match self.take("filter") {
            None | Some(Value::Null) => Filter::default(),
            Some(value) => Filter::parse(&value, &self.path("filter"), problems),
        }
    }

    /// Reports every field that was not taken, listing the known ones.
    pub(super) fn reject_unknown(self, problems: &mut Problems) {
        for key in self.map.keys() {
            let mut known = self.known.clone();
            known.sort_unstable();
            known.dedup();
            problems.push(
                child(&self.at, key),
                format!("unknown field (known: {})", known.join(", ")),
            );
        }
    }
}
