//! Event filters: the seed's field-equality map, extended with operators.
//!
//! ```json
//! "filter": {
//!   "event_type": "action.completed",              // equality (the seed's form)
//!   "payload.status": { "$ne": "draft" },           // dotted paths into nested JSON
//!   "payload.region": { "$in": ["eu", "us"] },
//!   "payload.error": { "$exists": false },
//!   "payload.amount": { "$gte": 10, "$lt": 1000 }   // several operators: all must hold
//! }
//! ```
//! Every clause must hold. Numbers compare by value (`1` equals `1.0`).

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::MAX_FILTER_CLAUSES;
use crate::path::FieldPath;
use crate::problems::{Problems, child, json_kind};

/// One test on the value at a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    /// Equal to the value (deep equality; numbers by value).
    Eq(Value),
    /// Present and not equal to the value, or absent.
    Ne(Value),
    /// Equal to one of the values.
    In(Vec<Value>),
    /// Equal to none of the values (absent counts as none).
    NotIn(Vec<Value>),
    /// Present (`true`) or absent (`false`). `null` counts as present.
    Exists(bool),
    /// Ordered comparison with a number or a string of the same type.
    Compare(Comparison, Value),
    /// A string starting with the given prefix.
    Prefix(String),
}

/// An ordering operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// `$gt`
    Gt,
    /// `$gte`
    Gte,
    /// `$lt`
    Lt,
    /// `$lte`
    Lte,
}

/// A clause: a path and a predicate on the value there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clause {
    /// Where to look in the event.
    pub path: FieldPath,
    /// What must hold there.
    pub predicate: Predicate,
}

/// A conjunction of clauses. The empty filter accepts every event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Filter {
    clauses: Vec<Clause>,
}

/// Why an event did not pass a filter: the first clause that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterMiss {
    /// The path of the failing clause.
    pub path: String,
    /// What the clause wanted and what the event had.
    pub reason: String,
}

impl fmt::Display for FilterMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl Filter {
    /// A filter from clauses.
    pub fn new(clauses: Vec<Clause>) -> Self {
        Self { clauses }
    }

    /// The clauses.
    pub fn clauses(&self) -> &[Clause] {
        &self.clauses
    }

    /// Whether the filter has no clause.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// Parses a filter object at JSON path `at`, reporting every problem.
    pub(crate) fn parse(value: &Value, at: &str, problems: &mut Problems) -> Self {
        let Value::Object(map) = value else {
            problems.push(
                at,
                format!("expected an object, found {}", json_kind(value)),
            );
            return Self::default();
        };
        let mut clauses = Vec::new();
        for (key, spec) in map {
            let here = child(at, key);
            let path = match FieldPath::parse(key.as_str()) {
                Ok(path) => path,
                Err(reason) => {
                    problems.push(&here, format!("invalid field path: {reason}"));
                    continue;
                }
            };
            match spec {
                Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
                    for (op, operand) in ops {
                        let op_at = child(&here, op);
                        if let Some(predicate) = parse_operator(op, operand, &op_at, problems) {
                            clauses.push(Clause {
                                path: path.clone(),
                                predicate,
                            });
                        }
                    }
                }
                other => clauses.push(Clause {
                    path,
                    predicate: Predicate::Eq(other.clone()),
                }),
            }
        }
        if clauses.len() > MAX_FILTER_CLAUSES {
            problems.push(
                at,
                format!(
                    "has {} clauses, over the limit of {MAX_FILTER_CLAUSES}",
                    clauses.len()
                ),
            );
        }
        Self { clauses }
    }

    /// Tests an event body. `Err` names the first failing clause.
    pub fn check(&self, event: &Value) -> Result<(), FilterMiss> {
        for clause in &self.clauses {
            let found = clause.path.lookup(event);
            if let Err(reason) = clause.predicate.test(found) {
                return Err(FilterMiss {
                    path: clause.path.to_string(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

fn parse_operator(
    op: &str,
    operand: &Value,
    at: &str,
    problems: &mut Problems,
) -> Option<Predicate> {
    let list = |problems: &mut Problems| match operand {
        Value::Array(items) => Some(items.clone()),
        other => {
            problems.push(at, format!("expected an array, found {}", json_kind(other)));
            None
        }
    };
    let comparable = |problems: &mut Problems| match operand {
        Value::Number(_) | Value::String(_) => Some(operand.clone()),
        other => {
            problems.push(
                at,
                format!("expected a number or a string, found {}", json_kind(other)),
            );
            None
        }
    };
    match op {
        "$eq" => Some(Predicate::Eq(operand.clone())),
        "$ne" => Some(Predicate::Ne(operand.clone())),
        "$in" => list(problems).map(Predicate::In),
        "$nin" => list(problems).map(Predicate::NotIn),
        "$exists" => match operand {
            Value::Bool(b) => Some(Predicate::Exists(*b)),
            other => {
                problems.push(
                    at,
                    format!("expected a boolean, found {}", json_kind(other)),
                );
                None
            }
        },
        "$gt" => comparable(problems).map(|v| Predicate::Compare(Comparison::Gt, v)),
        "$gte" => comparable(problems).map(|v| Predicate::Compare(Comparison::Gte, v)),
        "$lt" => comparable(problems).map(|v| Predicate::Compare(Comparison::Lt, v)),
        "$lte" => comparable(problems).map(|v| Predicate::Compare(Comparison::Lte, v)),
        "$prefix" => match operand {
            Value::String(s) => Some(Predicate::Prefix(s.clone())),
            other => {
                problems.push(at, format!("expected a string, found {}", json_kind(other)));
                None
            }
        },
        unknown => {
            problems.push(
                at,
                format!(
                    "unknown operator {unknown:?} (known: $eq, $ne, $in, $nin, $exists, $gt, $gte, $lt, $lte, $prefix)"
                ),
            );
            None
        }
    }
}

/// Deep JSON equality where numbers compare by value.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn show(found: Option<&Value>) -> String {
    found.map_or_else(|| "nothing".to_owned(), Value::to_string)
}

impl Predicate {
    /// Tests the value found at the clause's path (`None` when absent).
    fn test(&self, found: Option<&Value>) -> Result<(), String> {
        let ok = match self {
            Self::Eq(want) => found.is_some_and(|v| json_eq(v, want)),
            Self::Ne(want) => !found.is_some_and(|v| json_eq(v, want)),
            Self::In(set) => found.is_some_and(|v| set.iter().any(|w| json_eq(v, w))),
            Self::NotIn(set) => !found.is_some_and(|v| set.iter().any(|w| json_eq(v, w))),
            Self::Exists(want) => found.is_some() == *want,
            Self::Compare(op, bound) => {
                found
                    .and_then(|v| compare(v, bound))
                    .is_some_and(|ord| match op {
                        Comparison::Gt => ord == Ordering::Greater,
                        Comparison::Gte => ord != Ordering::Less,
                        Comparison::Lt => ord == Ordering::Less,
                        Comparison::Lte => ord != Ordering::Greater,
                    })
            }
            Self::Prefix(prefix) => {
                matches!(found, Some(Value::String(s)) if s.starts_with(prefix.as_str()))
            }
        };
        if ok {
            return Ok(());
        }
        let found = show(found);
        Err(match self {
            Self::Eq(want) => format!("expected {want}, found {found}"),
            Self::Ne(want) => format!("expected anything but {want}"),
            Self::In(set) => format!(
                "expected one of {}, found {found}",
                Value::from(set.clone())
            ),
            Self::NotIn(set) => format!(
                "expected none of {}, found {found}",
                Value::from(set.clone())
            ),
            Self::Exists(true) => "expected a value, found nothing".to_owned(),
            Self::Exists(false) => format!("expected nothing, found {found}"),
            Self::Compare(op, bound) => {
                format!("expected {op:?} {bound}, found {found}").to_lowercase()
            }
            Self::Prefix(prefix) => {
                format!("expected a string starting with {prefix:?}, found {found}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Filter, crate::problems::ConfigErrors> {
        let mut problems = Problems::default();
        let filter = Filter::parse(&v, "filter", &mut problems);
        problems.finish(filter)
    }

    #[test]
    fn seed_equality_map() {
        let f = parse(json!({"event_type": "action.completed"})).unwrap();
        assert!(
            f.check(&json!({"event_type": "action.completed", "x": 1}))
                .is_ok()
        );
        let miss = f
            .check(&json!({"event_type": "action.started"}))
            .unwrap_err();
        assert_eq!(miss.path, "event_type");
        assert!(miss.reason.contains("\"action.started\""), "{miss}");
        assert!(f.check(&json!({})).is_err());
    }

    #[test]
    fn operators_and_nested_paths() {
        let f = parse(json!({
            "p.status": {"$ne": "draft"},
            "p.region": {"$in": ["eu", "us"]},
            "p.error": {"$exists": false},
            "p.amount": {"$gte": 10, "$lt": 1000},
            "p.kind": {"$prefix": "order."},
            "p.n": 1
        }))
        .unwrap();
        let good = json!({"p": {"status": "ok", "region": "eu", "amount": 10.0, "kind": "order.paid", "n": 1.0}});
        assert_eq!(f.check(&good), Ok(()));
        for (field, bad) in [
            ("status", json!("draft")),
            ("region", json!("asia")),
            ("error", json!(null)),
            ("amount", json!(1000)),
            ("kind", json!("refund")),
            ("n", json!(2)),
        ] {
            let mut event = good.clone();
            event["p"][field] = bad;
            assert_eq!(f.check(&event).unwrap_err().path, format!("p.{field}"));
        }
    }

    #[test]
    fn reports_every_bad_operator() {
        let err = parse(json!({
            "a": {"$in": 3},
            "b": {"$like": "x"},
            "c..d": 1,
            "e": {"$exists": "yes"}
        }))
        .unwrap_err();
        for path in [
            "filter.a.$in",
            "filter.b.$like",
            "filter.\"c..d\"",
            "filter.e.$exists",
        ] {
            assert!(err.has(path), "{path} missing in {err}");
        }
    }
}
