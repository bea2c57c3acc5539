//! Generated hostile JSON against the one reader every door uses: it never panics, refuses
//! exactly what is nested too deep or ambiguous, and whatever it accepts can be stored nested
//! a few levels deeper and read back unchanged (so no accepted input can poison a row).

use proptest::prelude::*;
use rendezvous_domain::limits::{
    JsonError, MAX_JSON_DEPTH, json_depth, parse_json, parse_json_slice,
};
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    let tree = leaf.prop_recursive(8, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (tree, prop_oneof![3 => Just(0usize), 1 => 0usize..200]).prop_map(|(value, depth)| {
        (0..depth).fold(value, |v, i| {
            if i % 2 == 0 {
                Value::Array(vec![v])
            } else {
                Value::Object([("k".to_owned(), v)].into_iter().collect())
            }
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn accepted_json_round_trips_at_the_stored_depth(value in json_value()) {
        let text = value.to_string();
        match parse_json(&text, MAX_JSON_DEPTH) {
            Ok(parsed) => {
                prop_assert!(json_depth(&parsed) <= MAX_JSON_DEPTH);
                prop_assert_eq!(&parsed, &value);
                // The store nests a payload inside a received event inside a wait inside a row.
                let stored = serde_json::json!({"row": {"state": {"received": [{"payload": parsed}]}}});
                let back: Value = serde_json::from_str(&stored.to_string())
                    .expect("a stored document reads back");
                prop_assert_eq!(back, stored);
            }
            Err(JsonError::TooDeep { limit }) => {
                prop_assert_eq!(limit, MAX_JSON_DEPTH);
                prop_assert!(json_depth(&value) > MAX_JSON_DEPTH);
            }
            Err(JsonError::Syntax(e)) => prop_assert!(false, "valid JSON refused: {}", e),
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_json_slice(&bytes, MAX_JSON_DEPTH);
    }
}
