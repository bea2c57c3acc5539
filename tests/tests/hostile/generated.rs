//! Generated hostile inputs (proptest): recursive JSON with every kind of string (NUL, control
//! characters, astral planes), deep nesting across the limit, random bytes and huge strings,
//! sent as node configs and event payloads to one running instance per backend. Whatever is
//! accepted reads back exactly as sent; whatever is refused is INVALID_ARGUMENT or
//! RESOURCE_EXHAUSTED; the instance keeps answering throughout.

use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rendezvous_domain::limits::{MAX_JSON_DEPTH, json_depth};
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, TestApp};
use serde_json::Value;
use tonic::Code;

use crate::{app, callback_only, deliver_raw};

/// Cases per backend; CI runs both backends.
const CASES: u32 = 1500;

/// Any JSON value: strings from the whole of Unicode (NUL included), nesting up to ~80.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        Just(Value::String("\u{0}".into())),
        Just(Value::String("abc\u{0}def\r\n\u{7f}\u{10FFFF}".into())),
    ];
    let tree = leaf.prop_recursive(8, 64, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    // Wrap some values in a deep tower so both sides of the limit are tried.
    (tree, prop_oneof![3 => Just(0usize), 1 => 40usize..80])
        .prop_map(|(value, depth)| (0..depth).fold(value, |v, _| Value::Array(vec![v])))
}

/// Text a hostile caller might send as JSON: valid, truncated, or bytes that are not JSON.
fn payload_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => json_value().prop_map(|v| v.to_string()),
        1 => json_value().prop_map(|v| {
            let text = v.to_string();
            let mut cut = text.len() / 2;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_owned()
        }),
        1 => "\\PC{0,64}",
        1 => Just("{\"a\": 1, \"a\": 2}".to_owned()),
    ]
}

fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::ResourceExhausted
    )
}

/// Runs `cases` payloads through DeliverEvent against one instance.
fn deliver_generated(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, app) = runtime.block_on(app(backend)).unwrap();
    let app = Mutex::new(app);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&payload_text(), |text| {
        let mut app = app.lock().unwrap();
        runtime.block_on(one_delivery(&mut app, text))
    });
    let app = app.into_inner().unwrap();
    runtime.block_on(async move {
        app.stop().await.unwrap();
        drop(db);
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn one_delivery(app: &mut TestApp, text: String) -> Result<(), TestCaseError> {
    let wait = app
        .register(&uuid::Uuid::new_v4().to_string(), &callback_only())
        .await
        .map_err(|e| TestCaseError::fail(format!("registration failed: {e}")))?;
    let sent = serde_json::from_str::<Value>(&text).ok();
    let execution_id = app.get(&wait.wait_id).await.unwrap().execution_id;
    let answer = app
        .callbacks
        .deliver_event(v1::DeliverEventRequest {
            correlation_id: wait.correlation_id.clone(),
            execution_id,
            source: "cb".into(),
            payload_json: text.clone(),
            event_key: "k".into(),
            ..Default::default()
        })
        .await;
    match answer {
        Ok(_) => {
            let sent = sent.ok_or_else(|| TestCaseError::fail("accepted text that is not JSON"))?;
            prop_assert!(
                json_depth(&sent) <= MAX_JSON_DEPTH,
                "accepted past the depth limit"
            );
            let got = app
                .get(&wait.wait_id)
                .await
                .map_err(|e| TestCaseError::fail(format!("GetWait failed: {e}")))?;
            let stored: Value = serde_json::from_str(&got.received[0].payload_json).unwrap();
            prop_assert_eq!(stored, sent, "the stored payload differs");
        }
        Err(status) => {
            prop_assert!(refused(&status), "unexpected {:?}", status);
            if let Some(sent) = sent {
                prop_assert!(
                    json_depth(&sent) > MAX_JSON_DEPTH || status.message().contains("duplicate"),
                    "refused valid JSON: {:?}",
                    status
                );
            }
        }
    }
    Ok(())
}

/// Generated node configs: every one is either accepted or refused by name, never a crash
/// or an INTERNAL.
fn register_generated(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, app) = runtime.block_on(app(backend)).unwrap();
    let app = Mutex::new(app);
    let mut runner = TestRunner::new(Config {
        cases: CASES / 3,
        failure_persistence: None,
        ..Config::default()
    });
    let config = (json_value(), "\\PC{0,40}", 0usize..40).prop_map(|(body, expr, depth)| {
        serde_json::json!({"type": "wait_events", "data": {
            "apiCall": {"url": "https://x.example/{{a}}", "body": body},
            "sources": {"cb": {"type": "callback", "filter": {"payload.x": body}}},
            "aggregationStrategy": {"type": "expression",
                "expression": format!("{}{expr}{}", "(".repeat(depth), ")".repeat(depth))}
        }})
        .to_string()
    });
    let result = runner.run(&config, |text| {
        let mut app = app.lock().unwrap();
        runtime.block_on(async {
            let answer = app
                .waits
                .register_wait(v1::RegisterWaitRequest {
                    execution_id: uuid::Uuid::new_v4().to_string(),
                    node_id: "n".into(),
                    node_config_json: text,
                    ..Default::default()
                })
                .await;
            if let Err(status) = answer {
                prop_assert!(refused(&status), "unexpected {:?}", status);
            }
            // The instance still answers an ordinary request.
            let ok = deliver_raw(&mut app, "probe", "k", "{}".into()).await;
            prop_assert!(ok.is_ok(), "the instance stopped answering: {:?}", ok);
            Ok(())
        })
    });
    let app = app.into_inner().unwrap();
    runtime.block_on(async move {
        app.stop().await.unwrap();
        drop(db);
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn generated_payloads_on_sqlite() {
    deliver_generated(Backend::Sqlite);
}

#[test]
fn generated_payloads_on_postgres() {
    deliver_generated(Backend::Postgres);
}

#[test]
fn generated_configs_on_sqlite() {
    register_generated(Backend::Sqlite);
}

#[test]
fn generated_configs_on_postgres() {
    register_generated(Backend::Postgres);
}
