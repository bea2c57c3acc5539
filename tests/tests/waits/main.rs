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
    app_through(backend, Through::Grpc).await
}

/// The door events are delivered through: the gRPC RPCs, or the signed HTTP callbacks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Through {
    Grpc,
    Http,
}

/// An instance whose `api_response` and `event` helpers deliver through `through`.
pub(crate) async fn app_through(
    backend: Backend,
    through: Through,
) -> Result<(TestDatabase, TestApp)> {
    let db = TestDatabase::create(backend).await?;
    let app = match through {
        Through::Grpc => TestApp::start(&db.url, &[]).await?,
        Through::Http => TestApp::start_http(&db.url, &[]).await?,
    };
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

/// The delivery conformance tests, through each door on each backend: the HTTP callbacks
/// answer with the same results, codes and limits as the RPCs.
macro_rules! through_both_doors {
    ($($name:ident),* $(,)?) => {
        mod doors {
            use super::Through;
            use rendezvous_tests::Backend;
            $(
                mod $name {
                    use super::*;
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn grpc_sqlite() -> anyhow::Result<()> {
                        crate::$name(Backend::Sqlite, Through::Grpc).await
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn grpc_postgres() -> anyhow::Result<()> {
                        crate::$name(Backend::Postgres, Through::Grpc).await
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn http_sqlite() -> anyhow::Result<()> {
                        crate::$name(Backend::Sqlite, Through::Http).await
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn http_postgres() -> anyhow::Result<()> {
                        crate::$name(Backend::Postgres, Through::Http).await
                    }
                }
            )*
        }
    };
}

through_both_doors!(
    duplicates_change_nothing,
    wrong_execution_id_is_refused_and_recorded,
    events_before_registration_are_buffered,
    deliveries_are_held_to_their_limits,
);

on_both_backends!(
    seed_1_api_response_first,
    seed_2_kafka_event_first,
    seed_configs_any_and_api_only,
    every_strategy,
    timeouts_with_both_policies,
    cancel,
    register_is_idempotent,
    invalid_requests_name_the_field,
    unacknowledged_resumes_are_redelivered,
    health_and_list,
);
