//! Node-config parsing: the seed documents verbatim, the defaults, extensions, and errors that
//! name every problem with its JSON path.

use std::collections::BTreeSet;

use rendezvous_domain::spec::{
    DEFAULT_CORRELATION_ID_FIELD, DEFAULT_EXECUTION_ID_FIELD, DEFAULT_TIMEOUT,
};
use rendezvous_domain::*;
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn names(spec: &WaitSpec) -> Vec<&str> {
    spec.sources.iter().map(|s| s.name.as_str()).collect()
}

/// The Kafka topics a spec listens to, without repeats.
fn topics(spec: &WaitSpec) -> BTreeSet<&str> {
    spec.sources
        .iter()
        .filter_map(|s| match &s.kind {
            SourceKind::Kafka(k) => Some(k.topic.as_str()),
            _ => None,
        })
        .collect()
}

fn errors(doc: Value) -> ConfigErrors {
    WaitSpec::from_node_config(&doc).expect_err("config should be rejected")
}

#[test]
fn seed_1_wait_for_both() {
    let spec = WaitSpec::from_json_str(&fixture("01-wait-for-both.json")).unwrap();
    assert_eq!(names(&spec), ["api", "kafka"]);
    assert_eq!(spec.strategy, Strategy::All);
    assert_eq!(spec.condition.to_string(), "api && kafka");
    assert_eq!(spec.timeout.as_secs(), 300);
    let call = spec.api_call().unwrap();
    assert_eq!(call.url, "https://external-service.com/api/action");
    assert_eq!(call.method, HttpMethod::Post);
    assert_eq!(
        call.body,
        Some(json!({"action": "process", "data": "{{input_data}}"}))
    );
    assert_eq!(call.response_mode, ResponseMode::Callback);
    let kafka = spec.source(&SourceName::kafka()).unwrap();
    let SourceKind::Kafka(k) = &kafka.kind else {
        panic!("kafka source expected")
    };
    assert_eq!(k.topic, "external-service.events");
    assert_eq!(k.correlation_id_field.as_str(), "correlation_id");
    assert_eq!(k.execution_id_field.as_str(), "execution_id");
    assert!(
        kafka
            .filter
            .check(&json!({"event_type": "action.completed"}))
            .is_ok()
    );
    assert!(kafka.filter.check(&json!({"event_type": "other"})).is_err());
    assert_eq!(
        topics(&spec).into_iter().collect::<Vec<_>>(),
        ["external-service.events"]
    );
}

#[test]
fn seed_2_wait_for_any() {
    let spec = WaitSpec::from_json_str(&fixture("02-wait-for-any.json")).unwrap();
    assert_eq!(names(&spec), ["api", "kafka"]);
    assert_eq!(spec.condition.to_string(), "api || kafka");
    assert!(spec.sources.iter().all(|s| !s.required));
    // Defaults where the document is silent.
    let SourceKind::Kafka(k) = &spec.source(&SourceName::kafka()).unwrap().kind else {
        panic!()
    };
    assert_eq!(
        k.correlation_id_field.as_str(),
        DEFAULT_CORRELATION_ID_FIELD
    );
    assert_eq!(k.execution_id_field.as_str(), DEFAULT_EXECUTION_ID_FIELD);
    assert_eq!(spec.api_call().unwrap().method, spec::DEFAULT_METHOD);
}

#[test]
fn seed_3_api_only_takes_the_default_timeout() {
    let spec = WaitSpec::from_json_str(&fixture("03-api-only.json")).unwrap();
    assert_eq!(names(&spec), ["api"]);
    assert_eq!(spec.disabled, [SourceName::kafka()]);
    assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
    assert_eq!(spec.condition.to_string(), "api");
    assert_eq!(spec.on_timeout, TimeoutPolicy::Fail);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let err = errors(json!({
        "type": "wait_for",
        "data": {
            "apiCall": {"enabled": true, "method": "FETCH", "required": "yes"},
            "kafkaEvent": {"enabled": true, "correlationIdField": "a..b", "filter": {"x": {"$bogus": 1}}},
            "aggregationStrategy": "most",
            "timeout": -5,
            "colour": "blue"
        }
    }));
    for path in [
        "type",
        "data.apiCall.url",
        "data.apiCall.method",
        "data.apiCall.required",
        "data.kafkaEvent.topic",
        "data.kafkaEvent.correlationIdField",
        "data.kafkaEvent.filter.x.$bogus",
        "data.aggregationStrategy",
        "data.timeout",
        "data.colour",
    ] {
        assert!(err.has(path), "no problem at {path}: {err}");
    }
    let text = err.to_string();
    assert!(
        text.contains("data.kafkaEvent.topic: required when enabled"),
        "{text}"
    );
    assert!(
        text.contains("data.apiCall.url: required when enabled"),
        "{text}"
    );
}

#[test]
fn structural_errors() {
    assert!(WaitSpec::from_json_str("{not json").unwrap_err().has("$"));
    assert!(errors(json!([])).has("$"));
    assert!(errors(json!({"type": "wait_events"})).has("data"));
    assert!(errors(json!({"data": {}})).has("type"));
    assert!(errors(json!({"type": "wait_events", "data": 3})).has("data"));
    let err = errors(json!({"type": "wait_events", "data": {"apiCall": {"url": "ftp://x.com/a"}}}));
    assert!(
        err.to_string().contains("scheme must be http or https"),
        "{err}"
    );
    let err = errors(json!({"type": "wait_events", "data": {"apiCall": {"url": "/relative"}}}));
    assert!(err.has("data.apiCall.url"));
    let err =
        errors(json!({"type": "wait_events", "data": {"kafkaEvent": {"topic": "bad topic!"}}}));
    assert!(err.has("data.kafkaEvent.topic"));
    let err = errors(
        json!({"type": "wait_events", "data": {"apiCall": {"url": "https://x.com", "urll": 1}}}),
    );
    assert!(
        err.to_string().contains("data.apiCall.urll: unknown field"),
        "{err}"
    );
    let err = errors(json!({"type": "wait_events", "data": {"timeout": 0}}));
    assert!(
        err.to_string()
            .contains("data.timeout: must be at least 1 second"),
        "{err}"
    );
    let err = errors(json!({"type": "wait_events", "data": {"timeout": 40_000_000}}));
    assert!(err.has("data.timeout"));
}

#[test]
fn top_level_node_metadata_is_ignored() {
    let spec = WaitSpec::from_node_config(&json!({
        "id": "node-7", "name": "Wait", "position": {"x": 1, "y": 2},
        "type": "wait_events",
        "data": {"apiCall": {"url": "https://a.example/{{id}}/x?q={{q}}"}}
    }))
    .unwrap();
    assert_eq!(names(&spec), ["api"]);
}

#[test]
fn templated_urls_and_headers() {
    let spec = WaitSpec::from_node_config(&json!({
        "type": "wait_events",
        "data": {"apiCall": {"url": "https://a.example/orders/{{order_id}}", "method": "put",
                 "headers": {"x-tenant": "{{tenant}}"}, "responseMode": "sync"}}
    }))
    .unwrap();
    let call = spec.api_call().unwrap();
    assert_eq!(call.method, HttpMethod::Put);
    assert_eq!(call.headers["x-tenant"], "{{tenant}}");
    assert_eq!(call.response_mode, ResponseMode::Sync);
    let err = errors(
        json!({"type": "wait_events", "data": {"apiCall": {"url": "https://a.example/{{oops"}}}),
    );
    assert!(err.to_string().contains("unclosed placeholder"), "{err}");
}

#[test]
fn named_sources_extension() {
    let spec = WaitSpec::from_node_config(&json!({
        "type": "wait_events",
        "data": {
            "apiCall": {"url": "https://a.example/x"},
            "sources": {
                "kafka_a": {"type": "kafka", "topic": "payments", "filter": {"kind": "paid"}},
                "kafka_b": {"type": "kafka", "topic": "payments", "filter": {"kind": "refunded"}},
                "approval": {"type": "callback", "required": false},
                "off": {"type": "callback", "enabled": false}
            },
            "aggregationStrategy": {"type": "expression", "expression": "api && (kafka_a || kafka_b)"},
            "onTimeout": "resume_with_partial"
        }
    }))
    .unwrap();
    assert_eq!(names(&spec), ["api", "approval", "kafka_a", "kafka_b"]);
    assert_eq!(spec.disabled, [SourceName::parse("off").unwrap()]);
    assert_eq!(topics(&spec).into_iter().collect::<Vec<_>>(), ["payments"]);
    assert_eq!(spec.on_timeout, TimeoutPolicy::ResumeWithPartial);
    let err = errors(json!({"type": "wait_events", "data": {"sources": {
        "kafka": {"type": "callback"},
        "Bad-Name": {"type": "callback"},
        "x": {"type": "smoke"},
        "y": {},
        "z": {"type": "kafka"}
    }}}));
    for path in [
        "data.sources.kafka",
        "data.sources.\"Bad-Name\"",
        "data.sources.x.type",
        "data.sources.y.type",
        "data.sources.z.topic",
    ] {
        assert!(err.has(path), "no problem at {path}: {err}");
    }
}

fn both(strategy: Value, extra: Value) -> Value {
    let mut doc = json!({
        "type": "wait_events",
        "data": {
            "apiCall": {"url": "https://a.example/x", "required": true},
            "kafkaEvent": {"topic": "t", "required": false},
            "aggregationStrategy": strategy
        }
    });
    if let Value::Object(extra) = extra {
        doc["data"].as_object_mut().unwrap().extend(extra);
    }
    doc
}

#[test]
fn strategies_compile_to_conditions() {
    let cases = [
        (json!("all"), json!({}), "api && kafka"),
        (json!("any"), json!({}), "api || kafka"),
        (json!("required_only"), json!({}), "api"),
        (
            json!("custom"),
            json!({"customSources": ["kafka"]}),
            "kafka",
        ),
        (
            json!({"type": "custom", "sources": ["kafka", "api"]}),
            json!({}),
            "kafka && api",
        ),
        (
            json!({"type": "k_of_n", "k": 1}),
            json!({}),
            "1 of (api, kafka)",
        ),
        (
            json!({"type": "k_of_n", "k": 1, "sources": ["kafka"]}),
            json!({}),
            "1 of (kafka)",
        ),
        (
            json!({"type": "expression", "expression": "kafka or api"}),
            json!({}),
            "kafka || api",
        ),
        (json!({"type": "any"}), json!({}), "api || kafka"),
    ];
    for (strategy, extra, want) in cases {
        let spec = WaitSpec::from_node_config(&both(strategy.clone(), extra))
            .unwrap_or_else(|e| panic!("{strategy}: {e}"));
        assert_eq!(spec.condition.to_string(), want, "{strategy}");
    }
}

#[test]
fn conditions_that_can_never_be_met_are_rejected() {
    let disabled_kafka = |strategy: Value, extra: Value| {
        let mut doc = both(strategy, extra);
        doc["data"]["kafkaEvent"]["enabled"] = json!(false);
        doc
    };
    let cases = [
        (
            both(json!("custom"), json!({})),
            "data.customSources",
            "required when",
        ),
        (
            both(json!("custom"), json!({"customSources": []})),
            "data.customSources",
            "at least one",
        ),
        (
            both(json!("custom"), json!({"customSources": ["nope"]})),
            "data.customSources",
            "unknown source \"nope\"",
        ),
        (
            disabled_kafka(json!("custom"), json!({"customSources": ["kafka"]})),
            "data.customSources",
            "disabled",
        ),
        (
            both(json!({"type": "k_of_n", "k": 3}), json!({})),
            "data.aggregationStrategy.k",
            "between 1 and 2",
        ),
        (
            both(json!({"type": "k_of_n", "k": 0}), json!({})),
            "data.aggregationStrategy.k",
            "between 1 and 2",
        ),
        (
            both(
                json!({"type": "expression", "expression": "api &&"}),
                json!({}),
            ),
            "data.aggregationStrategy.expression",
            "at 6",
        ),
        (
            disabled_kafka(
                json!({"type": "expression", "expression": "api && kafka"}),
                json!({}),
            ),
            "data.aggregationStrategy.expression",
            "disabled",
        ),
        (
            both(json!({"type": "nope"}), json!({})),
            "data.aggregationStrategy.type",
            "unknown strategy",
        ),
        (
            both(json!("all"), json!({"customSources": ["api"]})),
            "data.customSources",
            "only allowed",
        ),
    ];
    for (doc, path, words) in cases {
        let err = errors(doc.clone());
        assert!(err.has(path), "{doc}: no problem at {path}: {err}");
        assert!(
            err.to_string().contains(words),
            "{doc}: {err} lacks {words:?}"
        );
    }
    // Nothing required although sources are enabled: required_only would wait for nothing.
    let mut doc = both(json!("required_only"), json!({}));
    doc["data"]["apiCall"]["required"] = json!(false);
    assert!(errors(doc).to_string().contains("would wait for nothing"));
}

#[test]
fn no_enabled_source_means_no_waiting() {
    for strategy in ["all", "any", "required_only"] {
        let spec = WaitSpec::from_node_config(&json!({
            "type": "wait_events",
            "data": {"apiCall": {"enabled": false}, "kafkaEvent": {"enabled": false}, "aggregationStrategy": strategy}
        }))
        .unwrap();
        assert!(spec.sources.is_empty());
        assert_eq!(spec.condition, Condition::All(vec![]));
    }
}

/// Hostile documents are refused with the limit they broke, never a crash.
#[test]
fn hostile_configs_are_refused_naming_the_limit() {
    let text = r#"{"type": "wait_events", "type": "other", "data": {}}"#;
    let err = WaitSpec::from_json_str(text).unwrap_err().to_string();
    assert!(err.contains("duplicate key \"type\""), "{err}");

    let deep = format!(
        r#"{{"type": "wait_events", "data": {{"apiCall": {{"url": "https://x.example/a", "body": {}1{}}}}}}}"#,
        "[".repeat(70),
        "]".repeat(70)
    );
    let err = WaitSpec::from_json_str(&deep).unwrap_err().to_string();
    assert!(
        err.contains("nests deeper than the limit of 64 levels"),
        "{err}"
    );

    let sources: serde_json::Map<String, Value> = (0..65)
        .map(|i| (format!("s{i}"), json!({"type": "callback"})))
        .collect();
    let err = errors(json!({"type": "wait_events", "data": {"sources": sources}})).to_string();
    assert!(
        err.contains("declares 65 sources, over the limit of 64 sources per wait"),
        "{err}"
    );

    // The expression that aborted the process: 3,000 parentheses deep.
    let expression = format!("{}api{}", "(".repeat(3000), ")".repeat(3000));
    let err = errors(json!({"type": "wait_events", "data": {
        "apiCall": {"url": "https://x.example/a"},
        "aggregationStrategy": {"type": "expression", "expression": expression}
    }}))
    .to_string();
    assert!(err.contains("over the limit of 4096 bytes"), "{err}");
    let expression = format!("{}api{}", "(".repeat(100), ")".repeat(100));
    let err = errors(json!({"type": "wait_events", "data": {
        "apiCall": {"url": "https://x.example/a"},
        "aggregationStrategy": {"type": "expression", "expression": expression}
    }}))
    .to_string();
    assert!(
        err.contains("nests deeper than the limit of 16 parentheses"),
        "{err}"
    );

    let clauses: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("f{i}"), json!(1))).collect();
    let err = errors(json!({"type": "wait_events", "data": {
        "sources": {"cb": {"type": "callback", "filter": clauses}}
    }}))
    .to_string();
    assert!(
        err.contains("has 65 clauses, over the limit of 64"),
        "{err}"
    );
}

/// Whatever is accepted at the limits can be stored and read back (the stored form nests the
/// config a few levels deeper than it came).
#[test]
fn a_spec_at_the_limits_round_trips_through_json() {
    let body = format!("{}1{}", "[".repeat(60), "]".repeat(60));
    let expression = format!("{}api{}", "1 of (".repeat(16), ")".repeat(16));
    let text = format!(
        r#"{{"type": "wait_events", "data": {{"apiCall": {{"url": "https://x.example/a", "body": {{"x": {body}}}}},
            "aggregationStrategy": {{"type": "expression", "expression": "{expression}"}}}}}}"#
    );
    let spec = WaitSpec::from_json_str(&text).unwrap();
    let state = WaitState::register(
        WaitKey {
            id: WaitId::from_uuid(uuid::Uuid::from_u128(7)),
            tenant: TenantId::default_tenant(),
            correlation_id: CorrelationId::parse("c").unwrap(),
            execution_id: ExecutionId::parse("e").unwrap(),
            node_id: NodeId::parse("n").unwrap(),
        },
        spec,
        Timestamp::from_millis(0),
    );
    let stored = serde_json::to_string(&serde_json::json!({"row": [state]})).unwrap();
    let back: Value = serde_json::from_str(&stored).expect("the stored form reads back");
    let back: WaitState = serde_json::from_value(back["row"][0].clone()).unwrap();
    assert_eq!(back, state);
}
