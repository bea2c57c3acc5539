//! What events may not do: duplicates change nothing, a wrong execution id is refused and
//! recorded, events before their wait are buffered, not lost, and deliveries are held to the
//! limits. Each runs through both doors (gRPC and the signed HTTP callbacks).

use std::time::Duration;

use anyhow::Result;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, seed};
use serde_json::json;
use tonic::Code;

use crate::*;

pub(crate) async fn duplicates_change_nothing(backend: Backend, through: Through) -> Result<()> {
    let (_db, mut app) = app_through(backend, through).await?;
    let mut engine = app.subscribe(0).await?;
    let r = app
        .register("exec-d", &seed("01-wait-for-both.json"))
        .await?;
    assert_eq!(
        app.api_response(&r.correlation_id, "exec-d", "same")
            .await?
            .result(),
        v1::DeliveryResult::Accepted
    );
    assert_eq!(
        app.api_response(&r.correlation_id, "exec-d", "same")
            .await?
            .result(),
        v1::DeliveryResult::Duplicate
    );
    let second = app.get(&r.wait_id).await?;
    assert_eq!(second.version, 2, "the duplicate wrote nothing");
    assert_eq!(
        app.event(
            &r.correlation_id,
            "exec-d",
            "kafka",
            "k",
            kafka_body("exec-d")
        )
        .await?
        .result(),
        v1::DeliveryResult::Completed
    );
    assert_eq!(
        app.event(
            &r.correlation_id,
            "exec-d",
            "kafka",
            "k",
            kafka_body("exec-d")
        )
        .await?
        .result(),
        v1::DeliveryResult::Duplicate
    );
    let resume = engine.next(WAIT).await?;
    engine.ack(&resume).await?;
    engine.expect_nothing(Duration::from_millis(500)).await?;
    app.stop().await
}

pub(crate) async fn wrong_execution_id_is_refused_and_recorded(
    backend: Backend,
    through: Through,
) -> Result<()> {
    let (_db, mut app) = app_through(backend, through).await?;
    let r = app
        .register("exec-w", &seed("01-wait-for-both.json"))
        .await?;
    let refused = app
        .api_response(&r.correlation_id, "exec-other", "a")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("execution id mismatch"),
        "{}",
        refused.message()
    );
    let w = app.get(&r.wait_id).await?;
    assert_eq!(w.status(), v1::WaitStatus::WaitingForEvents);
    assert!(w.received.is_empty());
    assert_eq!(w.ignored.len(), 1);
    assert_eq!(w.ignored[0].kind, "execution_mismatch");
    assert_eq!(w.waiting_for, ["api", "kafka"]);
    // A filtered-out Kafka event is recorded with the failing clause.
    let d = app
        .event(
            &r.correlation_id,
            "exec-w",
            "kafka",
            "k",
            json!({"event_type": "action.started"}),
        )
        .await?;
    assert_eq!(d.result(), v1::DeliveryResult::FilteredOut);
    assert!(d.detail.contains("event_type"), "{}", d.detail);
    app.stop().await
}

pub(crate) async fn events_before_registration_are_buffered(
    backend: Backend,
    through: Through,
) -> Result<()> {
    let (_db, mut app) = app_through(backend, through).await?;
    let mut engine = app.subscribe(0).await?;
    let correlation_id = format!("order-{}", uuid::Uuid::new_v4());
    let d = app
        .event(
            &correlation_id,
            "exec-e",
            "kafka",
            "k-early",
            kafka_body("exec-e"),
        )
        .await?;
    assert_eq!(d.result(), v1::DeliveryResult::Buffered);
    let d = app
        .event(
            &correlation_id,
            "exec-e",
            "kafka",
            "k-early",
            kafka_body("exec-e"),
        )
        .await?;
    assert_eq!(d.result(), v1::DeliveryResult::Duplicate);
    let r = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            execution_id: "exec-e".into(),
            node_id: "node-1".into(),
            node_config_json: seed("01-wait-for-both.json").to_string(),
            input_variables: rendezvous_tests::seed_variables(),
            correlation_id: correlation_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(r.correlation_id, correlation_id);
    assert_eq!(
        r.status(),
        v1::WaitStatus::WaitingForApi,
        "the buffered event was applied at registration"
    );
    assert_eq!(
        app.api_response(&correlation_id, "exec-e", "a")
            .await?
            .result(),
        v1::DeliveryResult::Completed
    );
    let resume = engine.next(WAIT).await?;
    assert_eq!(resume.events.len(), 2);
    engine.ack(&resume).await?;
    app.stop().await
}

pub(crate) async fn deliveries_are_held_to_their_limits(
    backend: Backend,
    through: Through,
) -> Result<()> {
    let (_db, mut app) = app_through(backend, through).await?;
    let r = app
        .register("exec-l", &seed("01-wait-for-both.json"))
        .await?;
    // Over the payload limit (1 MiB by default): refused, naming the limit, nothing applied.
    let huge = json!({"blob": "x".repeat(1024 * 1024 + 1)});
    let too_big = app
        .event(&r.correlation_id, "exec-l", "kafka", "big", huge)
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::ResourceExhausted, "{too_big:?}");
    assert!(too_big.message().contains("limit"), "{}", too_big.message());
    // A missing correlation id is named.
    let missing = app.api_response("", "exec-l", "a").await.unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().contains("correlation_id"),
        "{}",
        missing.message()
    );
    // A source the wait does not have is recorded, not applied.
    let stray = app
        .event(&r.correlation_id, "exec-l", "shipping", "s", json!({}))
        .await?;
    assert_eq!(stray.result(), v1::DeliveryResult::NoMatchingSource);
    let w = app.get(&r.wait_id).await?;
    assert!(w.received.is_empty(), "nothing was applied: {w:?}");
    assert_eq!(w.waiting_for, ["api", "kafka"]);
    app.stop().await
}
