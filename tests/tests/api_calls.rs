//! The outbound API call against a real HTTP server on 127.0.0.1: templating and id injection
//! visible in the received request, retries (5xx, 429 with Retry-After), timeouts, permanent
//! failures failing the wait, the callback arriving before the HTTP response, sync mode, the
//! allowlist and SSRF protection; and the seed's two scenarios end to end through gRPC, Kafka
//! and the HTTP call, in both orders.

use std::time::{Duration, Instant};

use anyhow::Result;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, FakeApi, Reply, TestApp, TestDatabase, seed};
use serde_json::{Value, json};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);

async fn app(backend: Backend, env: &[(&str, &str)]) -> Result<(TestDatabase, TestApp)> {
    let db = TestDatabase::create(backend).await?;
    let mut all = vec![
        ("RENDEZVOUS__API__ENABLED", "true"),
        ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
        ("RENDEZVOUS__API__BACKOFF", "50ms"),
        ("RENDEZVOUS__API__MAX_ATTEMPTS", "3"),
        ("RENDEZVOUS__API__TIMEOUT", "1s"),
        ("RENDEZVOUS__API__POLL_INTERVAL", "100ms"),
    ];
    all.extend_from_slice(env);
    let app = TestApp::start(&db.url, &all).await?;
    Ok((db, app))
}

/// Seed config 1 pointed at the fake service.
fn seed_1_at(url: &str) -> Value {
    let mut config = seed("01-wait-for-both.json");
    config["data"]["apiCall"]["url"] = json!(format!("{url}/api/action"));
    config
}

async fn register(
    app: &mut TestApp,
    execution_id: &str,
    config: &Value,
    vars: &[(&str, &str)],
) -> Result<v1::RegisterWaitResponse> {
    let mut request = tonic::Request::new(v1::RegisterWaitRequest {
        execution_id: execution_id.into(),
        node_id: "node-1".into(),
        node_config_json: config.to_string(),
        input_variables: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?,
    );
    Ok(app.waits.register_wait(request).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_is_templated_and_carries_the_ids() -> Result<()> {
    let fake = FakeApi::start(vec![Reply::Json(200, json!({"ok": true}))], None).await?;
    let (_db, mut app) = app(Backend::Sqlite, &[]).await?;
    let r = register(
        &mut app,
        "exec-1",
        &seed_1_at(&fake.url),
        &[("input_data", "xyz")],
    )
    .await?;
    let request = fake.wait_for(1, WAIT).await?.remove(0);
    assert_eq!(
        (request.method.as_str(), request.uri.as_str()),
        ("POST", "/api/action")
    );
    assert_eq!(
        request.body,
        Some(
            json!({"action": "process", "data": "xyz", "correlation_id": r.correlation_id, "execution_id": "exec-1"})
        )
    );
    assert_eq!(request.headers["x-correlation-id"], r.correlation_id);
    assert_eq!(request.headers["x-execution-id"], "exec-1");
    assert_eq!(request.headers["idempotency-key"], r.wait_id);
    assert_eq!(
        request.headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(request.headers["content-type"], "application/json");
    // Callback mode: the 2xx only acknowledges; the wait still waits for both events.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.get(&r.wait_id).await?.status(),
        v1::WaitStatus::WaitingForEvents
    );
    assert_eq!(fake.requests().len(), 1, "a successful call is made once");
    // A missing template variable is refused at registration, naming where.
    let err = register(&mut app, "exec-2", &seed_1_at(&fake.url), &[])
        .await
        .unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("data.apiCall.body.data"),
        "{}",
        status.message()
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_backoff_and_retry_after() -> Result<()> {
    let fake = FakeApi::start(
        vec![
            Reply::Json(503, json!({})),
            Reply::RetryAfter(429, 1),
            Reply::Json(200, json!({})),
        ],
        None,
    )
    .await?;
    let (_db, mut app) = app(Backend::Sqlite, &[]).await?;
    let r = register(
        &mut app,
        "exec-r",
        &seed_1_at(&fake.url),
        &[("input_data", "x")],
    )
    .await?;
    let requests = fake.wait_for(3, WAIT).await?;
    assert!(
        requests[2].at - requests[1].at >= Duration::from_millis(950),
        "Retry-After: 1 is respected"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests().len(), 3, "no call after the success");
    assert!(
        requests
            .iter()
            .all(|q| q.headers["idempotency-key"] == r.wait_id),
        "the same key on every attempt"
    );
    assert_eq!(
        app.get(&r.wait_id).await?.status(),
        v1::WaitStatus::WaitingForEvents
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_permanent_failures_fail_the_wait_with_the_reason() -> Result<()> {
    let slow = FakeApi::start(vec![Reply::Slow(Duration::from_secs(3))], None).await?;
    let bad = FakeApi::start(
        vec![Reply::Json(400, json!({"error": "no such action"}))],
        None,
    )
    .await?;
    let (_db, mut app) = app(
        Backend::Sqlite,
        &[
            ("RENDEZVOUS__API__MAX_ATTEMPTS", "2"),
            ("RENDEZVOUS__API__TIMEOUT", "300ms"),
        ],
    )
    .await?;
    let mut engine = app.subscribe(0).await?;
    let timed_out = register(
        &mut app,
        "exec-slow",
        &seed_1_at(&slow.url),
        &[("input_data", "x")],
    )
    .await?;
    let refused = register(
        &mut app,
        "exec-bad",
        &seed_1_at(&bad.url),
        &[("input_data", "x")],
    )
    .await?;
    let mut reasons = std::collections::HashMap::new();
    for _ in 0..2 {
        let resume = engine.next(WAIT).await?;
        assert_eq!(resume.outcome(), v1::Outcome::Failed);
        engine.ack(&resume).await?;
        reasons.insert(resume.wait_id.clone(), resume.reason.clone());
    }
    let slow_reason = &reasons[&timed_out.wait_id];
    assert!(slow_reason.contains("after 2 attempts"), "{slow_reason}");
    assert_eq!(slow.requests().len(), 2);
    let bad_reason = &reasons[&refused.wait_id];
    assert!(
        bad_reason.contains("400") && bad_reason.contains("no such action"),
        "{bad_reason}"
    );
    assert_eq!(bad.requests().len(), 1, "a 4xx is not retried");
    assert_eq!(
        app.get(&refused.wait_id).await?.status(),
        v1::WaitStatus::Failed
    );
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_may_arrive_before_the_http_response() -> Result<()> {
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let mut app = TestApp::start(
        &db.url,
        &[
            ("RENDEZVOUS__API__ENABLED", "true"),
            ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
            ("RENDEZVOUS__API__POLL_INTERVAL", "100ms"),
        ],
    )
    .await?;
    let fake = FakeApi::start(vec![Reply::CallbackFirst], Some(app.callbacks.clone())).await?;
    let mut engine = app.subscribe(0).await?;
    let mut config = seed("03-api-only.json");
    config["data"]["apiCall"]["url"] = json!(format!("{}/api/action", fake.url));
    let r = register(&mut app, "exec-cb", &config, &[]).await?;
    let resume = engine.next(WAIT).await?;
    assert_eq!(
        (resume.wait_id.as_str(), resume.outcome()),
        (r.wait_id.as_str(), v1::Outcome::Completed)
    );
    let api: Value = serde_json::from_str(&resume.events[0].payload_json)?;
    assert_eq!(api["body"], json!({"via": "callback"}));
    engine.ack(&resume).await?;
    assert_eq!(fake.requests().len(), 1);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_makes_the_response_the_api_event() -> Result<()> {
    let fake = FakeApi::start(vec![Reply::Json(201, json!({"order": 42}))], None).await?;
    let (_db, mut app) = app(Backend::Sqlite, &[]).await?;
    let mut engine = app.subscribe(0).await?;
    let config = json!({"type": "wait_events", "data": {"apiCall": {
        "url": format!("{}/orders/{{{{id}}}}", fake.url), "method": "PUT", "responseMode": "sync"}}});
    let r = register(&mut app, "exec-sync", &config, &[("id", "o-7")]).await?;
    let resume = engine.next(WAIT).await?;
    assert_eq!(
        (resume.wait_id.as_str(), resume.outcome()),
        (r.wait_id.as_str(), v1::Outcome::Completed)
    );
    let api: Value = serde_json::from_str(&resume.events[0].payload_json)?;
    assert_eq!(
        (api["status"].clone(), api["body"].clone()),
        (json!(201), json!({"order": 42}))
    );
    let request = fake.requests().remove(0);
    assert_eq!(
        (request.method.as_str(), request.uri.as_str()),
        ("PUT", "/orders/o-7")
    );
    engine.ack(&resume).await?;
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_outside_the_allowlist_or_private_are_refused() -> Result<()> {
    let fake = FakeApi::start(vec![Reply::Json(200, json!({}))], None).await?;
    let db = TestDatabase::create(Backend::Sqlite).await?;
    // SSRF protection (the default): loopback is refused.
    let mut guarded = TestApp::start(&db.url, &[]).await?;
    let err = register(
        &mut guarded,
        "exec-ssrf",
        &seed_1_at(&fake.url),
        &[("input_data", "x")],
    )
    .await
    .unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("data.apiCall.url") && status.message().contains("private"),
        "{}",
        status.message()
    );
    guarded.stop().await?;
    // An allowlist refuses everything else.
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let mut listed = TestApp::start(
        &db.url,
        &[("RENDEZVOUS__API__ALLOWED", "https://partner.example/v1/")],
    )
    .await?;
    let err = register(
        &mut listed,
        "exec-list",
        &seed("01-wait-for-both.json"),
        &[("input_data", "x")],
    )
    .await
    .unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().expect("a gRPC status");
    assert!(
        status.message().contains("not in the allowed destinations"),
        "{}",
        status.message()
    );
    let mut allowed = seed("01-wait-for-both.json");
    allowed["data"]["apiCall"]["url"] = json!("https://partner.example/v1/act");
    register(&mut listed, "exec-ok", &allowed, &[("input_data", "x")]).await?;
    listed.stop().await?;
    assert!(
        fake.requests().is_empty(),
        "nothing reached the refused destination"
    );
    Ok(())
}

/// Seed scenarios 1 and 2 end to end: the engine registers over gRPC, the service calls the
/// fake external service, which answers through the callback gateway while the Kafka event is
/// published to the (embedded) broker, in both orders, on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenarios_end_to_end_through_grpc_kafka_and_the_http_call() -> Result<()> {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for kafka_first in [false, true] {
            let db = TestDatabase::create(backend).await?;
            let app_config = rendezvous_tests::test_config(
                &db.url,
                &[
                    ("RENDEZVOUS__KAFKA__ENABLED", "true"),
                    ("RENDEZVOUS__KAFKA__REFRESH_INTERVAL", "200ms"),
                    ("RENDEZVOUS__API__ENABLED", "true"),
                    ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
                    ("RENDEZVOUS__API__POLL_INTERVAL", "100ms"),
                ],
            )?;
            let built = rendezvous_app::Application::build(app_config).await?;
            let bootstrap = built.embedded_kafka().expect("embedded kafka").to_owned();
            let mut app = TestApp::from_running(built.spawn()?).await?;
            let fake =
                FakeApi::start(vec![Reply::Json(202, json!({"accepted": true}))], None).await?;
            let mut engine = app.subscribe(0).await?;
            let r = register(
                &mut app,
                "exec-e2e",
                &seed_1_at(&fake.url),
                &[("input_data", "x")],
            )
            .await?;
            let call = fake.wait_for(1, WAIT).await?.remove(0);
            let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()?;
            let event = json!({"correlation_id": call.headers["x-correlation-id"], "execution_id": "exec-e2e", "event_type": "action.completed"}).to_string();
            let publish = async {
                producer
                    .send(
                        rdkafka::producer::FutureRecord::<str, str>::to("external-service.events")
                            .payload(&event),
                        Duration::from_secs(5),
                    )
                    .await
                    .map_err(|(e, _)| e)
            };
            if kafka_first {
                publish.await?;
                let deadline = Instant::now() + WAIT;
                while app.get(&r.wait_id).await?.status() != v1::WaitStatus::WaitingForApi {
                    assert!(Instant::now() < deadline, "the Kafka event was not applied");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                app.api_response(&r.correlation_id, "exec-e2e", "api-1")
                    .await?;
            } else {
                app.api_response(&r.correlation_id, "exec-e2e", "api-1")
                    .await?;
                publish.await?;
            }
            let resume = match engine.next(Duration::from_secs(30)).await {
                Ok(resume) => resume,
                Err(e) => {
                    let w = app.get(&r.wait_id).await?;
                    anyhow::bail!(
                        "{e}: {backend:?}, kafka first {kafka_first}: wait {:?} received {:?} ignored {:?}",
                        w.status(),
                        w.received,
                        w.ignored
                    );
                }
            };
            assert_eq!(
                (resume.wait_id.as_str(), resume.outcome()),
                (r.wait_id.as_str(), v1::Outcome::Completed)
            );
            let sources: Vec<&str> = resume.events.iter().map(|e| e.source.as_str()).collect();
            let want = if kafka_first {
                ["kafka", "api"]
            } else {
                ["api", "kafka"]
            };
            assert_eq!(sources, want, "{backend:?}, kafka first: {kafka_first}");
            engine.ack(&resume).await?;
            app.stop().await?;
        }
    }
    Ok(())
}

/// A committed wait whose call was never made (its instance could not make it, or died) is
/// picked up and made by another instance on the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_makes_a_call_that_was_never_made() -> Result<()> {
    let fake = FakeApi::start(vec![Reply::Json(200, json!({}))], None).await?;
    let db = TestDatabase::create(Backend::Postgres).await?;
    // Instance A records the call with the wait but does not make it.
    let mut a = TestApp::start(
        &db.url,
        &[("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true")],
    )
    .await?;
    let r = register(
        &mut a,
        "exec-handover",
        &seed_1_at(&fake.url),
        &[("input_data", "x")],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.requests().is_empty());
    a.stop().await?;
    // Instance B, calls enabled, finds it in the call outbox and makes it, once.
    let b = TestApp::start(
        &db.url,
        &[
            ("RENDEZVOUS__API__ENABLED", "true"),
            ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
            ("RENDEZVOUS__API__POLL_INTERVAL", "100ms"),
        ],
    )
    .await?;
    let request = fake.wait_for(1, WAIT).await?.remove(0);
    assert_eq!(request.headers["idempotency-key"], r.wait_id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests().len(), 1);
    b.stop().await
}
