//! The API's promises to callers: idempotent registration, field-naming errors, redelivery of
//! unacknowledged resumes, health, reflection (v1 and v1alpha) and listing.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, seed};
use serde_json::json;
use tonic::Code;

use crate::*;

pub(crate) async fn register_is_idempotent(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let request = v1::RegisterWaitRequest {
        execution_id: "exec-i".into(),
        node_id: "node-1".into(),
        node_config_json: seed("01-wait-for-both.json").to_string(),
        input_variables: rendezvous_tests::seed_variables(),
        idempotency_key: "attempt-1".into(),
        ..Default::default()
    };
    let first = app.waits.register_wait(request.clone()).await?.into_inner();
    let retry = app.waits.register_wait(request.clone()).await?.into_inner();
    assert!(first.created && !retry.created);
    assert_eq!(
        (first.wait_id.as_str(), first.correlation_id.as_str()),
        (retry.wait_id.as_str(), retry.correlation_id.as_str())
    );
    let other_key = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            idempotency_key: "attempt-2".into(),
            ..request.clone()
        })
        .await?
        .into_inner();
    assert_ne!(
        other_key.wait_id, first.wait_id,
        "another key is another wait (loops)"
    );
    let changed = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            node_config_json: seed("02-wait-for-any.json").to_string(),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(changed.code(), Code::AlreadyExists);
    // A retry that asks for another correlation id than the wait has is refused, not answered
    // with a wait whose correlation id the caller does not know.
    let chosen = v1::RegisterWaitRequest {
        correlation_id: "mine-1".into(),
        idempotency_key: "attempt-3".into(),
        ..request.clone()
    };
    app.waits.register_wait(chosen.clone()).await?;
    let other = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            correlation_id: "mine-2".into(),
            ..chosen
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists);
    assert!(other.message().contains("mine-1"), "{}", other.message());
    // Tenants do not see each other's waits by id.
    let foreign = app
        .waits
        .get_wait(v1::GetWaitRequest {
            key: Some(v1::get_wait_request::Key::WaitId(first.wait_id.clone())),
            tenant_id: "someone-else".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    app.stop().await
}

pub(crate) async fn invalid_requests_name_the_field(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let bad = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            execution_id: "e".into(),
            node_id: "n".into(),
            node_config_json:
                json!({"type": "wait_events", "data": {"kafkaEvent": {"enabled": true}}})
                    .to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message()
            .contains("data.kafkaEvent.topic: required when enabled"),
        "{}",
        bad.message()
    );
    let missing = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            node_config_json: "{}".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().contains("execution_id: required"),
        "{}",
        missing.message()
    );
    let r = app
        .register("exec-v", &seed("01-wait-for-both.json"))
        .await?;
    let huge = json!({"blob": "x".repeat(2 * 1024 * 1024)});
    let too_big = app
        .event(&r.correlation_id, "exec-v", "kafka", "k", huge)
        .await
        .unwrap_err();
    assert!(
        matches!(too_big.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{too_big:?}"
    );
    let not_json = app
        .callbacks
        .deliver_event(v1::DeliverEventRequest {
            correlation_id: r.correlation_id.clone(),
            execution_id: "exec-v".into(),
            source: "kafka".into(),
            payload_json: "{nope".into(),
            event_key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        not_json.message().contains("payload_json: not valid JSON"),
        "{}",
        not_json.message()
    );
    let unknown = app
        .get(&uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert!(
        format!("{unknown:#}").contains("no wait with id"),
        "{unknown:#}"
    );
    app.stop().await
}

pub(crate) async fn unacknowledged_resumes_are_redelivered(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let r = app.register("exec-r", &seed("03-api-only.json")).await?;
    app.api_response(&r.correlation_id, "exec-r", "a").await?;
    // The engine gets it and disconnects without acking.
    let mut engine = app.subscribe(0).await?;
    let first = engine.next(WAIT).await?;
    assert_eq!(first.delivery_attempt, 1);
    drop(engine);
    // On reconnect it comes again, same resume id.
    let mut engine = app.subscribe(0).await?;
    let second = engine.next(WAIT).await?;
    assert_eq!(second.resume_id, first.resume_id);
    assert_eq!(second.delivery_attempt, 2);
    // Not acked within the ack timeout: again, on the same stream.
    let third = engine.next(WAIT).await?;
    assert_eq!(third.resume_id, first.resume_id);
    assert_eq!(third.delivery_attempt, 3);
    engine.ack(&third).await?;
    engine.close().await?;
    let mut engine = app.subscribe(0).await?;
    engine.expect_nothing(Duration::from_secs(2)).await?;
    app.stop().await
}

/// The services a server lists through reflection `$version` (`v1` or `v1alpha`: the same
/// messages in two packages).
macro_rules! listed_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new($channel)
            .server_reflection_info(futures_util::stream::iter([request]))
            .await?
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.next().await.context("no answer")??.message_response
        else {
            bail!("{}: not a service list", stringify!($version));
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

pub(crate) async fn health_and_list(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "rendezvous.v1.WaitService".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        answer.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    for i in 0..5 {
        app.register(&format!("exec-l{i}"), &seed("01-wait-for-both.json"))
            .await?;
    }
    let cancelled = app
        .register("exec-l9", &seed("01-wait-for-both.json"))
        .await?;
    app.waits
        .cancel_wait(v1::CancelWaitRequest {
            key: Some(v1::cancel_wait_request::Key::WaitId(
                cancelled.wait_id.clone(),
            )),
            ..Default::default()
        })
        .await?;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .waits
            .list_waits(v1::ListWaitsRequest {
                statuses: vec![v1::WaitStatus::WaitingForEvents.into()],
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(page.waits.len() <= 2);
        seen.extend(page.waits.into_iter().map(|w| w.execution_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    assert_eq!(
        seen,
        ["exec-l0", "exec-l1", "exec-l2", "exec-l3", "exec-l4"]
    );
    let one = app
        .waits
        .list_waits(v1::ListWaitsRequest {
            execution_id: "exec-l9".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(one.waits.len(), 1);
    assert_eq!(one.waits[0].status(), v1::WaitStatus::Cancelled);
    // Server reflection in both versions: v1 (grpcurl) and v1alpha (older tooling).
    let reflection = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))?
        .connect()
        .await?;
    let v1 = listed_services!(v1, reflection.clone());
    assert!(
        v1.contains(&"rendezvous.v1.WaitService".to_owned()),
        "{v1:?}"
    );
    let v1alpha = listed_services!(v1alpha, reflection);
    assert!(
        v1alpha.contains(&"rendezvous.v1.CallbackService".to_owned()),
        "{v1alpha:?}"
    );
    app.stop().await
}
