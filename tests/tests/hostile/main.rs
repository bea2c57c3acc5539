//! The hostile-input suite: each reproduction of issue 12 over gRPC against a running
//! instance, on SQLite and on PostgreSQL, plus generated inputs (`generated.rs`). Every hostile
//! request gets a clear code naming the limit, and ordinary waits next to it keep working.

mod generated;
mod reproductions;

use anyhow::Result;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, TestApp, TestDatabase};
use serde_json::{Value, json};

pub(crate) async fn app(backend: Backend) -> Result<(TestDatabase, TestApp)> {
    let db = TestDatabase::create(backend).await?;
    let app = TestApp::start(&db.url, &[]).await?;
    Ok((db, app))
}

/// A wait for one callback event on source `cb`.
pub(crate) fn callback_only() -> Value {
    json!({"type": "wait_events", "data": {"sources": {"cb": {"type": "callback"}}, "timeout": 60}})
}

/// `[[[…1…]]]`, `depth` levels deep.
pub(crate) fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Delivers raw JSON text for source `cb`.
pub(crate) async fn deliver_raw(
    app: &mut TestApp,
    correlation_id: &str,
    key: &str,
    payload_json: String,
) -> Result<v1::DeliverEventResponse, tonic::Status> {
    app.callbacks
        .deliver_event(v1::DeliverEventRequest {
            correlation_id: correlation_id.into(),
            execution_id: "exec-1".into(),
            source: "cb".into(),
            payload_json,
            event_key: key.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::reproductions::$name(rendezvous_tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::reproductions::$name(rendezvous_tests::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    a_deep_expression_is_refused_and_the_process_lives,
    deep_json_is_refused_at_every_door,
    json_at_the_depth_limit_round_trips,
    an_oversized_message_is_resource_exhausted,
    a_wait_stays_deliverable_to_a_default_engine,
    small_refusals_name_their_field,
);
