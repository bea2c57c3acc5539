//! Black-box tests of the service over gRPC, each run on SQLite and on PostgreSQL: the seed
//! scenarios, every strategy, timeouts, cancellation, duplicates, mismatches, early events,
//! idempotent registration and resume redelivery.

use std::time::Duration;

use anyhow::Result;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, TestApp, TestDatabase, seed};
use serde_json::{Value, json};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

async fn app(backend: Backend) -> Result<(TestDatabase, TestApp)> {
    let db = TestDatabase::create(backend).await?;
    let app = TestApp::start(&db.url, &[]).await?;
    Ok((db, app))
}

fn kafka_body(execution_id: &str) -> Value {
    json!({"execution_id": execution_id, "event_type": "action.completed", "order": 7})
}

fn status(w: &v1::Wait) -> v1::WaitStatus {
    w.status()
}

async fn seed_1_api_response_first(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let mut engine = app.subscribe(0).await?;
    let r = app
        .register("exec-1", &seed("01-wait-for-both.json"))
        .await?;
    assert!(r.created);
    assert_eq!(r.status(), v1::WaitStatus::WaitingForEvents);
    let d = app
        .api_response(&r.correlation_id, "exec-1", "api-1")
        .await?;
    assert_eq!(d.result(), v1::DeliveryResult::Accepted);
    assert_eq!(d.status(), v1::WaitStatus::WaitingForKafka);
    let d = app
        .event(
            &r.correlation_id,
            "exec-1",
            "kafka",
            "k-1",
            kafka_body("exec-1"),
        )
        .await?;
    assert_eq!(d.result(), v1::DeliveryResult::Completed);
    let resume = engine.next(WAIT).await?;
    assert_eq!(resume.wait_id, r.wait_id);
    assert_eq!(resume.outcome(), v1::Outcome::Completed);
    assert_eq!(resume.execution_id, "exec-1");
    assert_eq!(resume.delivery_attempt, 1);
    let sources: Vec<&str> = resume.events.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["api", "kafka"]);
    let api: Value = serde_json::from_str(&resume.events[0].payload_json)?;
    assert_eq!(
        api,
        json!({"status": 200, "headers": {}, "body": {"result": "ok"}})
    );
    engine.ack(&resume).await?;
    assert_eq!(
        status(&app.get(&r.wait_id).await?),
        v1::WaitStatus::Completed
    );
    app.stop().await
}

async fn seed_2_kafka_event_first(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let mut engine = app.subscribe(0).await?;
    let r = app
        .register("exec-2", &seed("01-wait-for-both.json"))
        .await?;
    let d = app
        .event(
            &r.correlation_id,
            "exec-2",
            "kafka",
            "k-1",
            kafka_body("exec-2"),
        )
        .await?;
    assert_eq!(d.status(), v1::WaitStatus::WaitingForApi);
    let d = app
        .api_response(&r.correlation_id, "exec-2", "api-1")
        .await?;
    assert_eq!(d.result(), v1::DeliveryResult::Completed);
    let resume = engine.next(WAIT).await?;
    let sources: Vec<&str> = resume.events.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["kafka", "api"]);
    engine.ack(&resume).await?;
    app.stop().await
}

async fn seed_configs_any_and_api_only(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let mut engine = app.subscribe(0).await?;
    let any = app
        .register("exec-any", &seed("02-wait-for-any.json"))
        .await?;
    let d = app
        .event(
            &any.correlation_id,
            "exec-any",
            "kafka",
            "k",
            json!({"x": 1}),
        )
        .await?;
    assert_eq!(d.result(), v1::DeliveryResult::Completed);
    let late = app
        .api_response(&any.correlation_id, "exec-any", "a")
        .await?;
    assert_eq!(late.result(), v1::DeliveryResult::Late);
    let resume = engine.next(WAIT).await?;
    assert_eq!(resume.missing_sources, ["api"]);
    engine.ack(&resume).await?;

    let api_only = app.register("exec-api", &seed("03-api-only.json")).await?;
    let ignored = app
        .event(
            &api_only.correlation_id,
            "exec-api",
            "kafka",
            "k",
            json!({}),
        )
        .await?;
    assert_eq!(ignored.result(), v1::DeliveryResult::NoMatchingSource);
    let w = app.get(&api_only.wait_id).await?;
    let deadline = w.deadline.unwrap().seconds - w.created_at.unwrap().seconds;
    assert_eq!(deadline, 300, "the default timeout applies to seed 3");
    assert_eq!(
        app.api_response(&api_only.correlation_id, "exec-api", "a")
            .await?
            .result(),
        v1::DeliveryResult::Completed
    );
    let resume = engine.next(WAIT).await?;
    assert_eq!(resume.wait_id, api_only.wait_id);
    engine.ack(&resume).await?;
    app.stop().await
}

fn named(strategy: Value) -> Value {
    json!({"type": "wait_events", "data": {
        "sources": {
            "a": {"type": "callback"},
            "b": {"type": "callback"},
            "c": {"type": "callback", "required": false}
        },
        "aggregationStrategy": strategy
    }})
}

async fn every_strategy(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let mut engine = app.subscribe(0).await?;
    let cases = [
        (json!("all"), vec!["c", "a", "b"]),
        (json!("any"), vec!["b"]),
        (json!("required_only"), vec!["c", "b", "a"]),
        (json!({"type": "custom", "sources": ["c"]}), vec!["a", "c"]),
        (json!({"type": "k_of_n", "k": 2}), vec!["c", "a"]),
        (
            json!({"type": "expression", "expression": "a && (b || c)"}),
            vec!["b", "a"],
        ),
    ];
    for (i, (strategy, order)) in cases.into_iter().enumerate() {
        let exec = format!("exec-s{i}");
        let r = app.register(&exec, &named(strategy.clone())).await?;
        for (n, source) in order.iter().enumerate() {
            let d = app
                .event(
                    &r.correlation_id,
                    &exec,
                    source,
                    &format!("e{n}"),
                    json!({"n": n}),
                )
                .await?;
            let want = if n + 1 == order.len() {
                v1::DeliveryResult::Completed
            } else {
                v1::DeliveryResult::Accepted
            };
            assert_eq!(d.result(), want, "{strategy} after {source}");
        }
        let resume = engine.next(WAIT).await?;
        assert_eq!(resume.wait_id, r.wait_id, "{strategy}");
        let got: Vec<&str> = resume.events.iter().map(|e| e.source.as_str()).collect();
        assert_eq!(got, order, "{strategy}");
        engine.ack(&resume).await?;
    }
    app.stop().await
}

async fn timeouts_with_both_policies(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let mut engine = app.subscribe(0).await?;
    let mut config = seed("01-wait-for-both.json");
    config["data"]["timeout"] = json!(1);
    let fail = app.register("exec-t1", &config).await?;
    config["data"]["onTimeout"] = json!("resume_with_partial");
    let partial = app.register("exec-t2", &config).await?;
    app.api_response(&partial.correlation_id, "exec-t2", "a")
        .await?;
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let resume = engine.next(WAIT).await?;
        engine.ack(&resume).await?;
        outcomes.push((
            resume.wait_id.clone(),
            resume.outcome(),
            resume.missing_sources.clone(),
            resume.events.len(),
        ));
    }
    outcomes.sort_by_key(|o| o.0 != fail.wait_id);
    assert_eq!(
        outcomes[0],
        (
            fail.wait_id.clone(),
            v1::Outcome::TimedOut,
            vec!["api".to_owned(), "kafka".to_owned()],
            0
        )
    );
    assert_eq!(
        outcomes[1],
        (
            partial.wait_id.clone(),
            v1::Outcome::Partial,
            vec!["kafka".to_owned()],
            1
        )
    );
    let late = app
        .event(
            &fail.correlation_id,
            "exec-t1",
            "kafka",
            "k",
            kafka_body("exec-t1"),
        )
        .await?;
    assert_eq!(late.result(), v1::DeliveryResult::Late);
    let w = app.get(&fail.wait_id).await?;
    assert_eq!(w.status(), v1::WaitStatus::TimedOut);
    assert_eq!(w.ignored[0].kind, "late");
    app.stop().await
}

async fn cancel(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let mut engine = app.subscribe(0).await?;
    let r = app
        .register("exec-c", &seed("01-wait-for-both.json"))
        .await?;
    let cancel = |reason: &str| v1::CancelWaitRequest {
        key: Some(v1::cancel_wait_request::Key::CorrelationId(
            r.correlation_id.clone(),
        )),
        tenant_id: String::new(),
        reason: reason.into(),
    };
    let first = app
        .waits
        .cancel_wait(cancel("operator"))
        .await?
        .into_inner();
    assert!(!first.already_decided);
    assert_eq!(first.wait.unwrap().status(), v1::WaitStatus::Cancelled);
    let again = app.waits.cancel_wait(cancel("again")).await?.into_inner();
    assert!(again.already_decided);
    assert_eq!(again.wait.unwrap().reason, "operator");
    let resume = engine.next(WAIT).await?;
    assert_eq!(
        (resume.outcome(), resume.reason.as_str()),
        (v1::Outcome::Cancelled, "operator")
    );
    engine.ack(&resume).await?;
    let missing = app
        .waits
        .cancel_wait(v1::CancelWaitRequest {
            key: Some(v1::cancel_wait_request::Key::WaitId(
                uuid::Uuid::new_v4().to_string(),
            )),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    app.stop().await
}

async fn duplicates_change_nothing(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
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

async fn wrong_execution_id_is_refused_and_recorded(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
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

async fn events_before_registration_are_buffered(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
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

async fn register_is_idempotent(backend: Backend) -> Result<()> {
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

async fn invalid_requests_name_the_field(backend: Backend) -> Result<()> {
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

async fn unacknowledged_resumes_are_redelivered(backend: Backend) -> Result<()> {
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

async fn health_and_list(backend: Backend) -> Result<()> {
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
    app.stop().await
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
