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

/// Item 9: idle connections were kept for ever, until descriptors ran out. A connection that
/// never sends a request is closed after `server.idle_timeout`; an engine's open
/// `ResumeStream` on a quiet connection is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_open_streams_are_not() -> Result<()> {
    use tokio::io::AsyncReadExt;

    let db = TestDatabase::create(Backend::Sqlite).await?;
    let mut app = TestApp::start(&db.url, &[("RENDEZVOUS__SERVER__IDLE_TIMEOUT", "300ms")]).await?;
    let mut engine = app.subscribe(4).await?;
    let mut silent = tokio::net::TcpStream::connect(app.addr).await?;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    anyhow::ensure!(closed.is_ok(), "a silent connection stayed open");
    // The stream opened before, quiet ever since, still delivers.
    let wait = app.register("exec-1", &callback_only()).await?;
    deliver_raw(&mut app, &wait.correlation_id, "k-1", "{}".into()).await?;
    let resume = engine.next(std::time::Duration::from_secs(10)).await?;
    anyhow::ensure!(resume.wait_id == wait.wait_id);
    engine.ack(&resume).await?;
    Ok(())
}
