//! Collected validation problems: every error of a document, each naming its JSON path.

use std::fmt;

/// One thing wrong with a document, at a JSON path such as `data.kafkaEvent.topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a dotted JSON path from the document root (`data.apiCall.url`).
    pub path: String,
    /// Why, in lowercase words without trailing punctuation (`required when enabled`).
    pub reason: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found in a node config, in document order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(Vec<ConfigProblem>);

impl ConfigErrors {
    /// The problems, at least one.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.0
    }

    /// Whether some problem is reported at exactly `path`.
    pub fn has(&self, path: &str) -> bool {
        self.0.iter().any(|p| p.path == path)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            problem.fmt(f)?;
        }
        Ok(())
    }
}

/// Accumulates problems while a document is walked.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// `Ok(value)` when nothing was reported, otherwise every problem.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.0))
        }
    }

    /// `Ok(value)` when the reader produced a value and nothing was reported, otherwise every
    /// problem. A reader gives up (`None`) only after reporting why, so the error is never
    /// empty.
    pub(crate) fn finish_read<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => {
                debug_assert!(!self.0.is_empty(), "a reader gave up without saying why");
                Err(ConfigErrors(self.0))
            }
        }
    }
}

/// Joins a parent JSON path and a child key (`data` + `apiCall` = `data.apiCall`). Keys that are
/// not plain identifiers are quoted, so filter paths stay readable: `data.kafkaEvent.filter."a.b"`.
pub(crate) fn child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{key:?}"),
        (false, true) => format!("{parent}.{key}"),
        (false, false) => format!("{parent}.{key:?}"),
    }
}

/// The JSON type of a value, for messages such as `expected a string, found a number`.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
