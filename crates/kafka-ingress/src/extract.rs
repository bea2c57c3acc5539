//! Reading a Kafka record: the correlation id, execution id, event identity and tenant, from
//! headers or from the JSON value at the fields the waits on its topic name. Pure.

use std::collections::{BTreeMap, BTreeSet};

use rendezvous_domain::FieldPath;
use rendezvous_domain::limits::{JsonError, MAX_JSON_DEPTH, parse_json_slice};
use rendezvous_domain::spec::{DEFAULT_CORRELATION_ID_FIELD, DEFAULT_EXECUTION_ID_FIELD};
use rendezvous_ports::TopicFields;
use serde_json::Value;

/// Per topic, the fields waits use for correlation and execution ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicIndex {
    fields: BTreeMap<String, (BTreeSet<FieldPath>, BTreeSet<FieldPath>)>,
}

impl TopicIndex {
    /// Indexes the registered topics.
    pub fn new(topics: &[TopicFields]) -> Self {
        let mut fields: BTreeMap<String, (BTreeSet<FieldPath>, BTreeSet<FieldPath>)> =
            BTreeMap::new();
        for t in topics {
            let entry = fields.entry(t.topic.clone()).or_default();
            entry.0.insert(t.correlation_field.clone());
            entry.1.insert(t.execution_field.clone());
        }
        Self { fields }
    }

    /// The topics waits listen on.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    fn fields(&self, topic: &str) -> (Vec<FieldPath>, Vec<FieldPath>) {
        let default = |raw: &str| FieldPath::parse(raw).expect("default field paths are valid");
        let (mut correlation, mut execution) = self
            .fields
            .get(topic)
            .map(|(c, e)| {
                (
                    c.iter().cloned().collect::<Vec<_>>(),
                    e.iter().cloned().collect::<Vec<_>>(),
                )
            })
            .unwrap_or_default();
        for (list, fallback) in [
            (&mut correlation, DEFAULT_CORRELATION_ID_FIELD),
            (&mut execution, DEFAULT_EXECUTION_ID_FIELD),
        ] {
            let fallback = default(fallback);
            if !list.contains(&fallback) {
                list.push(fallback);
            }
        }
        (correlation, execution)
    }
}

/// What the ingress read from one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The correlation id.
    pub correlation_id: String,
    /// The execution id, when a header carried it (otherwise the wait's source reads it from
    /// the value at its `executionIdField`).
    pub execution_id: Option<String>,
    /// The event's identity.
    pub event_key: String,
    /// The tenant (empty: the default tenant).
    pub tenant_id: String,
    /// The value as JSON.
    pub payload: Value,
}

/// One Kafka record as the ingress sees it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its value.
    pub value: Option<&'a [u8]>,
    /// Its headers with UTF-8 values.
    pub headers: &'a BTreeMap<String, String>,
}

/// Where identity and tenant come from.
#[derive(Debug, Clone, Copy)]
pub struct Naming<'a> {
    /// Header or JSON field giving the event's identity.
    pub event_id_field: &'a str,
    /// Header giving the tenant.
    pub tenant_header: &'a str,
}

/// Reads one record. `Err` is the reason to quarantine it.
pub fn extract(
    index: &TopicIndex,
    record: Record<'_>,
    naming: Naming<'_>,
) -> Result<Extracted, String> {
    let Record {
        topic,
        partition,
        offset,
        value,
        headers,
    } = record;
    let Naming {
        event_id_field,
        tenant_header,
    } = naming;
    let value = value
        .filter(|v| !v.is_empty())
        .ok_or("the record has no value")?;
    let payload = parse_json_slice(value, MAX_JSON_DEPTH).map_err(|e| match e {
        JsonError::Syntax(detail) => format!("the value is not JSON: {detail}"),
        JsonError::TooDeep { limit } => {
            format!("the value nests deeper than the limit of {limit} levels (MAX_JSON_DEPTH)")
        }
    })?;
    let (correlation_fields, execution_fields) = index.fields(topic);
    let find = |fields: &[FieldPath]| {
        fields.iter().find_map(|f| {
            headers
                .get(f.as_str())
                .filter(|v| !v.is_empty())
                .cloned()
                .or_else(|| f.lookup_id(&payload))
        })
    };
    let correlation_id = find(&correlation_fields).ok_or_else(|| {
        let names: Vec<&str> = correlation_fields.iter().map(FieldPath::as_str).collect();
        format!(
            "no correlation id: no header or field named {}",
            names.join(" or ")
        )
    })?;
    let execution_id = execution_fields
        .iter()
        .find_map(|f| headers.get(f.as_str()).filter(|v| !v.is_empty()).cloned());
    let event_key = headers
        .get(event_id_field)
        .filter(|v| !v.is_empty())
        .cloned()
        .or_else(|| {
            FieldPath::parse(event_id_field)
                .ok()
                .and_then(|f| f.lookup_id(&payload))
        })
        .unwrap_or_else(|| format!("{topic}/{partition}/{offset}"));
    let tenant_id = headers.get(tenant_header).cloned().unwrap_or_default();
    Ok(Extracted {
        correlation_id,
        execution_id,
        event_key,
        tenant_id,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> TopicIndex {
        TopicIndex::new(&[TopicFields {
            topic: "orders".into(),
            correlation_field: FieldPath::parse("meta.corr").unwrap(),
            execution_field: FieldPath::parse("meta.exec").unwrap(),
        }])
    }

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const NAMING: Naming<'static> = Naming {
        event_id_field: "event_id",
        tenant_header: "tenant_id",
    };

    fn run(topic: &str, value: &str, h: &[(&str, &str)]) -> Result<Extracted, String> {
        let headers = headers(h);
        let record = Record {
            topic,
            partition: 2,
            offset: 41,
            value: Some(value.as_bytes()),
            headers: &headers,
        };
        extract(&index(), record, NAMING)
    }

    #[test]
    fn ids_from_the_registered_fields_and_defaults() {
        let e = run(
            "orders",
            r#"{"meta": {"corr": "c-1", "exec": "e-1"}, "event_id": 9}"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            (
                e.correlation_id.as_str(),
                e.execution_id,
                e.event_key.as_str()
            ),
            ("c-1", None, "9")
        );
        let e = run("other", r#"{"correlation_id": "c-2"}"#, &[]).unwrap();
        assert_eq!(e.correlation_id, "c-2");
        assert_eq!(
            e.event_key, "other/2/41",
            "topic/partition/offset when no id"
        );
    }

    #[test]
    fn headers_win_and_carry_the_execution_id_and_tenant() {
        let e = run(
            "orders",
            r#"{"meta": {"corr": "c-body"}}"#,
            &[
                ("meta.corr", "c-head"),
                ("execution_id", "e-head"),
                ("event_id", "id-7"),
                ("tenant_id", "t1"),
            ],
        )
        .unwrap();
        assert_eq!(e.correlation_id, "c-head");
        assert_eq!(e.execution_id.as_deref(), Some("e-head"));
        assert_eq!((e.event_key.as_str(), e.tenant_id.as_str()), ("id-7", "t1"));
    }

    #[test]
    fn reasons_to_quarantine() {
        assert!(
            run("orders", "not json", &[])
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            run("orders", r#"{"x": 1}"#, &[]).unwrap_err().contains(
                "no correlation id: no header or field named meta.corr or correlation_id"
            )
        );
        let none = BTreeMap::new();
        let record = Record {
            topic: "orders",
            partition: 0,
            offset: 0,
            value: None,
            headers: &none,
        };
        let empty = extract(&index(), record, NAMING);
        assert_eq!(empty.unwrap_err(), "the record has no value");
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        let at_limit = format!(
            r#"{{"correlation_id": "c-1", "x": {}1{}}}"#,
            "[".repeat(MAX_JSON_DEPTH - 1),
            "]".repeat(MAX_JSON_DEPTH - 1)
        );
        assert!(run("orders", &at_limit, &[]).is_ok(), "at the limit");
        assert_eq!(
            run("orders", &deep, &[]).unwrap_err(),
            "the value nests deeper than the limit of 64 levels (MAX_JSON_DEPTH)"
        );
        assert!(
            run(
                "orders",
                r#"{"correlation_id": "a", "correlation_id": "b"}"#,
                &[]
            )
            .unwrap_err()
            .contains("duplicate key"),
            "a duplicated key is refused, not resolved silently"
        );
        // Far past serde_json's own recursion limit: refused, never a crash.
        let very_deep = "[".repeat(100_000);
        assert!(
            run("orders", &very_deep, &[])
                .unwrap_err()
                .contains("deeper")
        );
    }
}
