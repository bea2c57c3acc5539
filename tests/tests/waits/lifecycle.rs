//! A wait's life: the seed scenarios, every strategy, timeouts with both policies, cancel.

use anyhow::Result;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, seed};
use serde_json::{Value, json};
use tonic::Code;

use crate::*;

pub(crate) async fn seed_1_api_response_first(backend: Backend) -> Result<()> {
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

pub(crate) async fn seed_2_kafka_event_first(backend: Backend) -> Result<()> {
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

pub(crate) async fn seed_configs_any_and_api_only(backend: Backend) -> Result<()> {
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

pub(crate) fn named(strategy: Value) -> Value {
    json!({"type": "wait_events", "data": {
        "sources": {
            "a": {"type": "callback"},
            "b": {"type": "callback"},
            "c": {"type": "callback", "required": false}
        },
        "aggregationStrategy": strategy
    }})
}

pub(crate) async fn every_strategy(backend: Backend) -> Result<()> {
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

pub(crate) async fn timeouts_with_both_policies(backend: Backend) -> Result<()> {
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

pub(crate) async fn cancel(backend: Backend) -> Result<()> {
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
