//! What an operator scrapes: the admin listener's `/metrics` after a scripted join through
//! gRPC, the HTTP call and Kafka — each metric the alerts and the dashboard use, present with a
//! plausible value, and no ids in labels.
//!
//! Metrics are per process: this file holds one test, so the gauges are its database's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rendezvous_grpc_api::v1;
use rendezvous_tests::{
    Backend, FakeApi, Reply, TestApp, TestDatabase, http_get, prometheus_samples, seed,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// A metric's name, labels its series must have, and what its value must satisfy.
type Expected = (&'static str, &'static [&'static str], fn(f64) -> bool);

async fn metrics(app: &TestApp) -> Result<BTreeMap<String, f64>> {
    let (status, body) = http_get(app.admin.context("admin listener")?, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}: {body}");
    Ok(prometheus_samples(&body))
}

/// The value of the one series of `name` whose labels include every `label`.
fn value(samples: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> Option<f64> {
    samples
        .iter()
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| *v)
}

/// A join through every hop on PostgreSQL: the engine registers (the service calls the fake
/// external service), the gateway delivers the API response, the Kafka event comes through
/// the embedded broker, the engine receives and acks the resume. Then every metric the
/// dashboards and alerts use is on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_join_through_every_hop() -> Result<()> {
    let db = TestDatabase::create(Backend::Postgres).await?;
    let config = rendezvous_tests::test_config(
        &db.url,
        &[
            ("RENDEZVOUS__KAFKA__ENABLED", "true"),
            ("RENDEZVOUS__KAFKA__REFRESH_INTERVAL", "200ms"),
            ("RENDEZVOUS__API__ENABLED", "true"),
            ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
            ("RENDEZVOUS__API__POLL_INTERVAL", "100ms"),
            ("RENDEZVOUS__ADMIN__STATS_INTERVAL", "200ms"),
            ("RENDEZVOUS__ADMIN__HEALTH_INTERVAL", "200ms"),
        ],
    )?;
    let built = rendezvous_app::Application::build(config).await?;
    let bootstrap = built.embedded_kafka().context("embedded kafka")?.to_owned();
    let mut app = TestApp::from_running(built.spawn()?).await?;
    let admin = app.admin.context("admin listener")?;
    assert_eq!(http_get(admin, "/livez").await?.0, 200);
    assert_eq!(http_get(admin, "/readyz").await?, (200, "ready\n".into()));

    let fake = FakeApi::start(vec![Reply::Json(202, json!({"accepted": true}))], None).await?;
    let mut engine = app.subscribe(0).await?;
    let mut config = seed("01-wait-for-both.json");
    config["data"]["apiCall"]["url"] = json!(format!("{}/api/action", fake.url));
    let registered = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            execution_id: "exec-metrics".into(),
            node_id: "node-1".into(),
            node_config_json: config.to_string(),
            input_variables: rendezvous_tests::seed_variables(),
            ..Default::default()
        })
        .await?
        .into_inner();
    // A refused registration counts too.
    let refused = app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            execution_id: "exec-metrics".into(),
            node_id: "node-2".into(),
            node_config_json: "{".into(),
            ..Default::default()
        })
        .await;
    assert!(refused.is_err());
    let call = fake.wait_for(1, WAIT).await?.remove(0);
    app.api_response(&registered.correlation_id, "exec-metrics", "api-1")
        .await?;
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let event = json!({"correlation_id": call.headers["x-correlation-id"], "execution_id": "exec-metrics", "event_type": "action.completed"}).to_string();
    producer
        .send(
            rdkafka::producer::FutureRecord::<str, str>::to("external-service.events")
                .payload(&event),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)?;
    let resume = engine.next(WAIT).await?;
    assert_eq!(resume.outcome(), v1::Outcome::Completed);
    engine.ack(&resume).await?;

    // Counters move at once; the database gauges at the next count; the consumer lag with
    // librdkafka's next statistics (every 5 s).
    let expected: &[Expected] = &[
        (
            "rendezvous_build_info",
            &["revision=\"", "version=\""],
            |v| v == 1.0,
        ),
        ("rendezvous_up", &[], |v| v == 1.0),
        ("rendezvous_ready", &[], |v| v == 1.0),
        (
            "rendezvous_registrations_total",
            &["outcome=\"created\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_registrations_total",
            &["outcome=\"refused\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_deliveries_total",
            &["source=\"api\"", "outcome=\"applied\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_deliveries_total",
            &["source=\"kafka\"", "outcome=\"applied\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_decisions_total",
            &["outcome=\"completed\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_decision_duration_seconds_count",
            &["outcome=\"completed\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_decision_duration_seconds_sum",
            &["outcome=\"completed\""],
            |v| (0.0..60.0).contains(&v),
        ),
        (
            "rendezvous_decision_duration_seconds_bucket",
            &["le=\"+Inf\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_resumes_sent_total",
            &["delivery=\"first\""],
            |v| v >= 1.0,
        ),
        ("rendezvous_resume_send_delay_seconds_count", &[], |v| {
            v >= 1.0
        }),
        ("rendezvous_resume_ack_delay_seconds_count", &[], |v| {
            v >= 1.0
        }),
        (
            "rendezvous_api_calls_total",
            &["outcome=\"success\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_api_call_duration_seconds_count",
            &["outcome=\"success\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_group_commit_batch_size_count",
            &["statement=\"changes\""],
            |v| v >= 1.0,
        ),
        (
            "rendezvous_db_pool_connections",
            &["pool=\"main\"", "state=\"idle\""],
            |v| v >= 0.0,
        ),
        (
            "rendezvous_db_pool_connections",
            &["pool=\"resumes\"", "state=\"busy\""],
            |v| v >= 0.0,
        ),
        ("rendezvous_waits", &["status=\"completed\""], |v| v == 1.0),
        (
            "rendezvous_waits",
            &["status=\"waiting_for_events\""],
            |v| v == 0.0,
        ),
        ("rendezvous_resume_outbox_depth", &[], |v| v == 0.0),
        ("rendezvous_resume_oldest_unacked_age_seconds", &[], |v| {
            v == 0.0
        }),
        ("rendezvous_sweeper_lag_seconds", &[], |v| v == 0.0),
        ("rendezvous_early_events_pending", &[], |v| v == 0.0),
        ("rendezvous_quarantined_events", &[], |v| v == 0.0),
        (
            "rendezvous_kafka_consumer_lag",
            &["topic=\"external-service.events\"", "partition=\""],
            |v| v == 0.0,
        ),
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = metrics(&app).await?;
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(name, labels, ok)| !value(&samples, name, labels).is_some_and(ok))
            .map(|(name, labels, _)| {
                format!("{name}{labels:?} = {:?}", value(&samples, name, labels))
            })
            .collect();
        if wrong.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("metrics missing or implausible: {wrong:#?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // No ids in labels: every label value is one of a few words or a topic/partition.
    let text = http_get(admin, "/metrics").await?.1;
    for id in [&registered.wait_id, &registered.correlation_id] {
        assert!(!text.contains(id.as_str()), "an id in the metrics: {id}");
    }
    engine.close().await?;
    app.stop().await
}
