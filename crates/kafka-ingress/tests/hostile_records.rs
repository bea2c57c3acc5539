//! Generated hostile Kafka records against the ingress's reader: any value bytes, generated
//! JSON (deep towers across the limit, every kind of string, NUL included) and any headers.
//! Reading never panics; a record is either read, with its value exactly as sent and within
//! the depth limit, or refused with a reason (which the ingress quarantines).

use std::collections::BTreeMap;

use proptest::prelude::*;
use rendezvous_domain::limits::{MAX_JSON_DEPTH, json_depth};
use rendezvous_domain::{FieldPath, parse_json_slice};
use rendezvous_kafka_ingress::{Naming, Record, TopicIndex, extract};
use rendezvous_ports::TopicFields;
use rendezvous_service::TopicPolicy;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        Just(Value::String("abc\u{0}def".into())),
    ];
    let tree = leaf.prop_recursive(6, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (
        tree,
        any::<String>(),
        prop_oneof![3 => Just(0usize), 1 => 0usize..150],
    )
        .prop_map(|(value, correlation_id, depth)| {
            let wrapped = (0..depth).fold(value, |v, _| Value::Array(vec![v]));
            serde_json::json!({"correlation_id": correlation_id, "body": wrapped})
        })
}

fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => Just(b"abc\x00def".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_record_is_read_or_refused_with_a_reason(
        value in value_bytes(),
        headers in prop::collection::btree_map("[a-z_]{1,16}", any::<String>(), 0..4),
    ) {
        let index = TopicIndex::new(&[TopicFields {
            topic: "t".into(),
            correlation_field: FieldPath::parse("correlation_id").unwrap(),
            execution_field: FieldPath::parse("execution_id").unwrap(),
        }]);
        let headers: BTreeMap<String, String> = headers;
        let record = Record { topic: "t", partition: 0, offset: 7, value: Some(&value), headers: &headers };
        let topics = TopicPolicy::allow_any();
        let naming = Naming { event_id_field: "event_id", tenant_header: "tenant_id", topics: &topics };
        match extract(&index, record, naming) {
            Ok(read) => {
                prop_assert!(json_depth(&read.payload) <= MAX_JSON_DEPTH);
                prop_assert_eq!(read.payload, parse_json_slice(&value, MAX_JSON_DEPTH).unwrap());
            }
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }
}
