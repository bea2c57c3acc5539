//! Black-box tests of the service over gRPC, each run on SQLite and on PostgreSQL: the seed
//! scenarios, every strategy, timeouts, cancellation, duplicates, mismatches, early events,
//! idempotent registration and resume redelivery.

mod events;
mod lifecycle;
mod requests;

use std::time::Duration;

use anyhow::Result;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, TestApp, TestDatabase};
use serde_json::{Value, json};

use events::*;
use lifecycle::*;
use requests::*;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn app(backend: Backend) -> Result<(TestDatabase, TestApp)> {
    let db = TestDatabase::create(backend).await?;
    let app = TestApp::start(&db.url, &[]).await?;
    Ok((db, app))
}

pub(crate) fn kafka_body(execution_id: &str) -> Value {
    json!({"execution_id": execution_id, "event_type": "action.completed", "order": 7})
}

pub(crate) fn status(w: &v1::Wait) -> v1::WaitStatus {
    w.status()
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(rendezvous_tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(rendezvous_tests::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    seed_1_api_response_first,
    seed_2_kafka_event_first,
    seed_configs_any_and_api_only,
    every_strategy,
    timeouts_with_both_policies,
    cancel,
    duplicates_change_nothing,
    wrong_execution_id_is_refused_and_recorded,
    events_before_registration_are_buffered,
    register_is_idempotent,
    invalid_requests_name_the_field,
    unacknowledged_resumes_are_redelivered,
    health_and_list,
);
