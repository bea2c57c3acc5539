//! Generated hostile inputs (proptest): recursive JSON with every kind of string (NUL, control
//! characters, astral planes), deep nesting across the limit, random bytes and huge strings,
//! sent as node configs and event payloads to one running instance per backend. Whatever is
//! accepted reads back exactly as sent; whatever is refused is INVALID_ARGUMENT or
//! RESOURCE_EXHAUSTED; the instance keeps answering throughout.

use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rendezvous_domain::limits::{
    JsonError, MAX_JSON_DEPTH, json_depth, parse_json, parse_json_slice,
};
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, TestApp};
use serde_json::Value;
use tonic::Code;

use crate::{app, deliver_raw};

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

/// Runs `cases` generated values through `case` against one instance on `backend`, stops
/// the instance, and fails with proptest's minimal failing input.
fn run_cases<S: Strategy>(
    backend: Backend,
    cases: u32,
    strategy: S,
    case: impl AsyncFn(&mut TestApp, S::Value) -> Result<(), TestCaseError>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, app) = runtime.block_on(app(backend)).unwrap();
    let app = Mutex::new(app);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |value| {
        let mut app = app.lock().unwrap();
        runtime.block_on(case(&mut app, value))
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

/// Runs [`CASES`] payloads through DeliverEvent and DeliverApiResponse against one instance.
fn deliver_generated(backend: Backend) {
    run_cases(backend, CASES, door(), one_delivery);
}

/// Where a generated payload goes in.
#[derive(Debug, Clone)]
enum Door {
    /// `DeliverEvent.payload_json` for callback source `cb`.
    Event(String),
    /// `DeliverApiResponse.body`: any bytes.
    Api(Vec<u8>),
}

fn door() -> impl Strategy<Value = Door> {
    prop_oneof![
        payload_text().prop_map(Door::Event),
        payload_text().prop_map(|t| Door::Api(t.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Door::Api),
    ]
}

/// A wait either door completes: an `api` source (calls are off in tests) or callback `cb`.
fn api_or_callback() -> Value {
    serde_json::json!({"type": "wait_events", "data": {
        "apiCall": {"url": "https://x.example/a"},
        "sources": {"cb": {"type": "callback"}},
        "aggregationStrategy": "any",
        "timeout": 60
    }})
}

async fn one_delivery(app: &mut TestApp, door: Door) -> Result<(), TestCaseError> {
    let execution_id = uuid::Uuid::new_v4().to_string();
    let wait = app
        .register(&execution_id, &api_or_callback())
        .await
        .map_err(|e| TestCaseError::fail(format!("registration failed: {e}")))?;
    // What must happen, by the reader every door uses: `Err` means refused.
    let (answer, expected) = match door {
        Door::Event(text) => {
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
                .await
                .map(drop);
            (answer, parse_json(&text, MAX_JSON_DEPTH).map_err(drop))
        }
        Door::Api(body) => {
            let answer = app
                .callbacks
                .deliver_api_response(v1::DeliverApiResponseRequest {
                    correlation_id: wait.correlation_id.clone(),
                    execution_id,
                    http_status: 200,
                    body: body.clone(),
                    idempotency_key: "k".into(),
                    ..Default::default()
                })
                .await
                .map(drop);
            // JSON stays JSON; anything else (a repeated key too) becomes text; too deep is
            // refused.
            let body = match parse_json_slice(&body, MAX_JSON_DEPTH) {
                Ok(v) => Ok(v),
                Err(JsonError::TooDeep { .. }) => Err(()),
                Err(JsonError::Syntax(_)) => {
                    Ok(Value::String(String::from_utf8_lossy(&body).into_owned()))
                }
            };
            let expected =
                body.map(|b| serde_json::json!({"status": 200, "headers": {}, "body": b}));
            (answer, expected)
        }
    };
    match (answer, expected) {
        (Ok(()), Ok(expected)) => {
            prop_assert!(json_depth(&expected) <= MAX_JSON_DEPTH + 1);
            let got = app
                .get(&wait.wait_id)
                .await
                .map_err(|e| TestCaseError::fail(format!("GetWait failed: {e}")))?;
            let stored: Value = serde_json::from_str(&got.received[0].payload_json).unwrap();
            prop_assert_eq!(stored, expected, "the stored payload differs");
        }
        (Err(status), Err(())) => prop_assert!(refused(&status), "unexpected {:?}", status),
        (Ok(()), Err(())) => prop_assert!(false, "accepted what the reader refuses"),
        (Err(status), Ok(_)) => prop_assert!(false, "refused an acceptable payload: {:?}", status),
    }
    Ok(())
}

/// Generated node configs: every one is either accepted or refused by name, never a crash
/// or an INTERNAL.
fn register_generated(backend: Backend) {
    let config = (json_value(), "\\PC{0,40}", 0usize..40).prop_map(|(body, expr, depth)| {
        serde_json::json!({"type": "wait_events", "data": {
            "apiCall": {"url": "https://x.example/{{a}}", "body": body},
            "sources": {"cb": {"type": "callback", "filter": {"payload.x": body}}},
            "aggregationStrategy": {"type": "expression",
                "expression": format!("{}{expr}{}", "(".repeat(depth), ")".repeat(depth))}
        }})
        .to_string()
    });
    run_cases(backend, CASES / 3, config, async |app, text| {
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
        let ok = deliver_raw(app, "probe", "k", "{}".into()).await;
        prop_assert!(ok.is_ok(), "the instance stopped answering: {:?}", ok);
        Ok(())
    });
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
