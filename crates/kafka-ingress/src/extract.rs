//! Reading a Kafka record: the correlation id, execution id and event identity, from headers
//! or from the JSON value at the fields the waits on its topic name; and its tenant, from its
//! topic's configuration (a header only where that topic honours it). Pure.

use std::collections::{BTreeMap, BTreeSet};

use rendezvous_domain::FieldPath;
use rendezvous_domain::limits::{JsonError, MAX_JSON_DEPTH, parse_json_slice};
use rendezvous_domain::spec::{DEFAULT_CORRELATION_ID_FIELD, DEFAULT_EXECUTION_ID_FIELD};
use rendezvous_ports::TopicFields;
use rendezvous_service::TopicPolicy;
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
    /// The tenant: its topic's, or the one its tenant header names where the topic's
    /// configuration honours the header.
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
    /// Header that may name the tenant, on topics whose configuration honours it.
    pub tenant_header: &'a str,
    /// Whose records each topic carries.
    pub topics: &'a TopicPolicy,
}

/// Reads one record. `Err` is the reason to quarantine it (among them: a tenant header naming
/// a tenant the record's topic may not carry).
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
        topics,
    } = naming;
    let tenant_id = topics
        .record_tenant(
            topic,
            tenant_header,
            headers.get(tenant_header).map(String::as_str),
        )?
        .to_string();
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
    use rendezvous_domain::TenantId;
    use rendezvous_service::TopicTenancy;

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

    fn naming(topics: &TopicPolicy) -> Naming<'_> {
        Naming {
            event_id_field: "event_id",
            tenant_header: "tenant_id",
            topics,
        }
    }

    fn run(topic: &str, value: &str, h: &[(&str, &str)]) -> Result<Extracted, String> {
        run_under(&TopicPolicy::allow_any(), topic, value, h)
    }

    fn run_under(
        topics: &TopicPolicy,
        topic: &str,
        value: &str,
        h: &[(&str, &str)],
    ) -> Result<Extracted, String> {
        let headers = headers(h);
        let record = Record {
            topic,
            partition: 2,
            offset: 41,
            value: Some(value.as_bytes()),
            headers: &headers,
        };
        extract(&index(), record, naming(topics))
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
    fn the_tenant_comes_from_the_topic_not_from_a_forged_header() {
        let acme = TenantId::parse("acme").unwrap();
        let policy = TopicPolicy::only([
            ("orders".to_owned(), TopicTenancy::of(acme.clone())),
            (
                "shared".to_owned(),
                TopicTenancy {
                    tenant_from_header: true,
                    ..TopicTenancy::of(TenantId::default_tenant())
                },
            ),
        ]);
        let body = r#"{"correlation_id": "c-1"}"#;
        let e = run_under(&policy, "orders", body, &[]).unwrap();
        assert_eq!(e.tenant_id, "acme", "the topic's tenant, with no header");
        let forged = run_under(&policy, "orders", body, &[("tenant_id", "globex")]);
        assert_eq!(
            forged.unwrap_err(),
            "header \"tenant_id\" names tenant \"globex\", but the records of topic \"orders\" belong to tenant \"acme\" (kafka.topic.\"orders\".tenant_from_header is off)"
        );
        let e = run_under(&policy, "shared", body, &[("tenant_id", "globex")]).unwrap();
        assert_eq!(e.tenant_id, "globex", "honoured where the topic says so");
        let e = run_under(&policy, "shared", body, &[]).unwrap();
        assert_eq!(e.tenant_id, "default");
        assert!(
            run_under(&policy, "payroll", body, &[])
                .unwrap_err()
                .contains("topic \"payroll\" is not configured")
        );
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
        let empty = extract(&index(), record, naming(&TopicPolicy::allow_any()));
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
