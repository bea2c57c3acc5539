//! Issue 12's reproductions, each as a test: they crashed, poisoned or misled before the fix.

use std::time::Duration;

use anyhow::{Result, ensure};
use rendezvous_grpc_api::v1;
use rendezvous_tests::Backend;
use serde_json::json;
use tonic::Code;

use crate::{app, callback_only, deliver_raw, nested};

const WAIT: Duration = Duration::from_secs(10);

/// Item 1: a 3,000-level expression aborted the process (stack overflow). It is refused, and
/// the same instance then registers and completes an ordinary wait.
pub(crate) async fn a_deep_expression_is_refused_and_the_process_lives(
    backend: Backend,
) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    for depth in [100, 3000] {
        let expression = format!("{}cb{}", "(".repeat(depth), ")".repeat(depth));
        let config = json!({"type": "wait_events", "data": {
            "sources": {"cb": {"type": "callback"}},
            "aggregationStrategy": {"type": "expression", "expression": expression}
        }});
        let err = app.register("exec-1", &config).await.unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
        ensure!(status.code() == Code::InvalidArgument, "{status:?}");
        ensure!(
            status.message().contains("limit of 16 parentheses")
                || status.message().contains("over the limit of 4096 bytes"),
            "{}",
            status.message()
        );
    }
    let wait = app.register("exec-1", &callback_only()).await?;
    let delivered = deliver_raw(&mut app, &wait.correlation_id, "k-1", "{}".into()).await?;
    ensure!(delivered.status() == v1::WaitStatus::Completed);
    Ok(())
}

/// Item 2: JSON 125–127 levels deep was accepted and left rows nothing could read back. Now
/// every door refuses past 64 levels, and an early event that deep never reaches the buffer
/// (so the later registration works).
pub(crate) async fn deep_json_is_refused_at_every_door(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    for depth in [65, 125, 127, 5000] {
        let err = deliver_raw(&mut app, "early-1", &format!("k-{depth}"), nested(depth))
            .await
            .unwrap_err();
        ensure!(err.code() == Code::InvalidArgument, "{err:?}");
        ensure!(
            err.message() == "payload_json: nests deeper than the limit of 64 levels",
            "{}",
            err.message()
        );
    }
    let err = app
        .callbacks
        .deliver_api_response(v1::DeliverApiResponseRequest {
            correlation_id: "early-1".into(),
            execution_id: "exec-1".into(),
            http_status: 200,
            body: nested(126).into_bytes(),
            idempotency_key: "api-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    ensure!(
        err.code() == Code::InvalidArgument && err.message().contains("body: nests deeper"),
        "{err:?}"
    );
    let config = json!({"type": "wait_events", "data": {
        "apiCall": {"url": "https://x.example/a", "body": {"deep": serde_json::from_str::<serde_json::Value>(&nested(100))?}}
    }});
    let err = app.register("exec-1", &config).await.unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
    ensure!(
        status.code() == Code::InvalidArgument
            && status
                .message()
                .contains("nests deeper than the limit of 64 levels"),
        "{status:?}"
    );
    // The correlation id the deep early events named registers and works.
    let wait = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            execution_id: "exec-1".into(),
            node_id: "node-1".into(),
            node_config_json: callback_only().to_string(),
            correlation_id: "early-1".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(wait.status() == v1::WaitStatus::WaitingForEvents);
    Ok(())
}

/// At the limit, everything accepted is stored and read back: GetWait, ListWaits, and the
/// resume carry the payload exactly as it came.
pub(crate) async fn json_at_the_depth_limit_round_trips(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let mut engine = app.subscribe(16).await?;
    let wait = app.register("exec-1", &callback_only()).await?;
    let payload = format!(r#"{{"a":{}}}"#, nested(63));
    let delivered = deliver_raw(&mut app, &wait.correlation_id, "k-1", payload.clone()).await?;
    ensure!(delivered.status() == v1::WaitStatus::Completed);
    let expected: serde_json::Value = serde_json::from_str(&payload)?;
    let got = app.get(&wait.wait_id).await?;
    let stored: serde_json::Value = serde_json::from_str(&got.received[0].payload_json)?;
    ensure!(stored == expected, "GetWait changed the payload");
    let listed = app
        .waits
        .list_waits(v1::ListWaitsRequest::default())
        .await?
        .into_inner();
    ensure!(listed.waits.iter().any(|w| w.wait_id == wait.wait_id));
    let resume = engine.next(WAIT).await?;
    let sent: serde_json::Value = serde_json::from_str(&resume.events[0].payload_json)?;
    ensure!(sent == expected, "the resume changed the payload");
    engine.ack(&resume).await?;
    Ok(())
}

/// Item 8: a message over the gRPC limit was OUT_OF_RANGE; the error model says
/// RESOURCE_EXHAUSTED, naming the limit.
pub(crate) async fn an_oversized_message_is_resource_exhausted(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let huge = format!(r#"{{"x":"{}"}}"#, "x".repeat(5 * 1024 * 1024));
    let err = deliver_raw(&mut app, "c-1", "k-1", huge).await.unwrap_err();
    ensure!(err.code() == Code::ResourceExhausted, "{err:?}");
    ensure!(err.message().contains("the limit is"), "{}", err.message());
    // The same connection serves the next request.
    app.register("exec-1", &callback_only()).await?;
    Ok(())
}

/// Item 3: nothing capped a wait, so a resume could outgrow what an engine accepts (4 MiB by
/// default) and block every resume behind it. The event that would cross 3 MiB is refused,
/// and the resume reaches a default-configured client.
pub(crate) async fn a_wait_stays_deliverable_to_a_default_engine(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let mut engine = app.subscribe(16).await?;
    let sources: serde_json::Map<String, serde_json::Value> = (0..5)
        .map(|i| (format!("s{i}"), json!({"type": "callback"})))
        .collect();
    let config = json!({"type": "wait_events", "data": {"sources": sources, "timeout": 60}});
    let wait = app.register("exec-1", &config).await?;
    let blob = "x".repeat(1000 * 1000 - 100);
    let mut refused = 0;
    for i in 0..5 {
        let result = app
            .event(
                &wait.correlation_id,
                "exec-1",
                &format!("s{i}"),
                &format!("k-{i}"),
                json!({ "blob": blob }),
            )
            .await;
        match result {
            Ok(_) => {}
            Err(status) => {
                ensure!(status.code() == Code::ResourceExhausted, "{status:?}");
                ensure!(status.message().contains("over the limit of 3145728 bytes"));
                refused += 1;
            }
        }
    }
    ensure!(refused == 2, "{refused} refused");
    app.waits
        .cancel_wait(v1::CancelWaitRequest {
            key: Some(v1::cancel_wait_request::Key::WaitId(wait.wait_id.clone())),
            reason: "done".into(),
            ..Default::default()
        })
        .await?;
    let resume = engine.next(WAIT).await?;
    ensure!(resume.wait_id == wait.wait_id && resume.events.len() == 3);
    engine.ack(&resume).await?;
    Ok(())
}

/// Item 8 and 10: small fields that misled or had no bound.
pub(crate) async fn small_refusals_name_their_field(backend: Backend) -> Result<()> {
    let (_db, mut app) = app(backend).await?;
    let err = app
        .callbacks
        .deliver_api_response(v1::DeliverApiResponseRequest {
            correlation_id: "c-1".into(),
            execution_id: "exec-1".into(),
            http_status: 200,
            ..Default::default()
        })
        .await
        .unwrap_err();
    ensure!(
        err.message() == "idempotency_key: required",
        "{}",
        err.message()
    );
    let duplicated = r#"{"type": "wait_events", "data": {"timeout": 5, "timeout": 60}}"#;
    let err = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            execution_id: "exec-1".into(),
            node_id: "node-1".into(),
            node_config_json: duplicated.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    ensure!(
        err.code() == Code::InvalidArgument && err.message().contains("duplicate key \"timeout\""),
        "{err:?}"
    );
    let wait = app.register("exec-1", &callback_only()).await?;
    let err = app
        .waits
        .cancel_wait(v1::CancelWaitRequest {
            key: Some(v1::cancel_wait_request::Key::WaitId(wait.wait_id.clone())),
            reason: "r".repeat(3 * 1024 * 1024),
            ..Default::default()
        })
        .await
        .unwrap_err();
    ensure!(
        err.code() == Code::ResourceExhausted
            && err.message().contains("over the limit of 1024 bytes"),
        "{err:?}"
    );
    Ok(())
}
