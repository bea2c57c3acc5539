//! Kafka by tenant, black-box: the real application over gRPC with its embedded Kafka and
//! SQLite. A wait may name only a topic its tenant may use (else INVALID_ARGUMENT naming the
//! source and the topic); a record's tenant is its topic's, so a forged `tenant_id` header
//! never completes another tenant's wait, while a topic configured to honour the header does;
//! and waits registered under an older, open configuration cannot make the consumer read a
//! topic that is not allowed. The seed scenario works with its topic configured.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rendezvous_app::config::{TopicName, TopicSection};
use rendezvous_app::{Application, Config};
use rendezvous_domain::TenantId;
use rendezvous_grpc_api::v1;
use rendezvous_tests::{Backend, TestApp, TestDatabase, seed, test_config};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A closed configuration on the embedded broker: `external-service.events` and `orders`
/// carry the default tenant's records; `shared` honours the header for acme only.
fn closed(db: &TestDatabase) -> Result<Config> {
    let mut config = test_config(
        &db.url,
        &[
            ("RENDEZVOUS__KAFKA__ENABLED", "true"),
            ("RENDEZVOUS__KAFKA__REFRESH_INTERVAL", "200ms"),
            ("RENDEZVOUS__KAFKA__ALLOW_ANY_TOPIC", "false"),
            (
                "RENDEZVOUS__KAFKA__TOPICS",
                "external-service.events,orders",
            ),
        ],
    )?;
    config.kafka.topic.insert(
        TopicName::try_from("shared".to_owned()).map_err(anyhow::Error::msg)?,
        TopicSection {
            tenant_from_header: true,
            header_tenants: vec![TenantId::parse("acme")?],
            ..TopicSection::default()
        },
    );
    Ok(config)
}

fn on(topic: &str) -> Value {
    json!({"type": "wait_events", "data": {"kafkaEvent": {"topic": topic}, "timeout": 600}})
}

/// Registers `config` for `tenant` with a chosen correlation id.
async fn register(
    app: &mut TestApp,
    tenant: &str,
    correlation_id: &str,
    execution_id: &str,
    config: &Value,
) -> Result<v1::RegisterWaitResponse, tonic::Status> {
    Ok(app
        .waits
        .register_wait(v1::RegisterWaitRequest {
            execution_id: execution_id.into(),
            node_id: "node-1".into(),
            node_config_json: config.to_string(),
            input_variables: [("input_data".to_owned(), "x".to_owned())].into(),
            tenant_id: tenant.into(),
            correlation_id: correlation_id.into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// Asserts a registration is refused with INVALID_ARGUMENT and returns the message.
async fn refused(
    app: &mut TestApp,
    tenant: &str,
    execution_id: &str,
    config: &Value,
) -> Result<String> {
    match register(app, tenant, "", execution_id, config).await {
        Ok(r) => bail!("registered {r:?}, expected a refusal"),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            Ok(status.message().to_owned())
        }
        Err(status) => bail!("expected INVALID_ARGUMENT, got {status:?}"),
    }
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Result<()> {
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(*value),
        });
    }
    producer
        .send(
            FutureRecord::<str, str>::to(topic)
                .payload(&body.to_string())
                .headers(owned),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

fn producer(bootstrap: &str) -> Result<FutureProducer> {
    Ok(rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?)
}

async fn status(app: &mut TestApp, wait_id: &str) -> Result<v1::WaitStatus> {
    Ok(app.get(wait_id).await?.status())
}

async fn until_completed(app: &mut TestApp, wait_id: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let w = app.get(wait_id).await?;
        if w.status() == v1::WaitStatus::Completed {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not complete: {:?}, received {:?}, ignored {:?}",
                w.status(),
                w.received,
                w.ignored
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_name_only_their_tenants_topics_and_honoured_headers_count() -> Result<()> {
    let db = TestDatabase::create(Backend::Sqlite).await?;
    let built = Application::build(closed(&db)?).await?;
    let bootstrap = built.embedded_kafka().context("embedded kafka")?.to_owned();
    let mut app = TestApp::from_running(built.spawn()?).await?;

    // An unlisted topic, named by the seed's source or by a named source.
    let message = refused(&mut app, "", "exec-r1", &on("payroll")).await?;
    assert!(
        message.starts_with(
            "node_config.data.kafkaEvent.topic: topic \"payroll\" is not allowed for tenant \"default\""
        ),
        "{message}"
    );
    let named = json!({"type": "wait_events", "data": {"sources": {
        "leak": {"type": "kafka", "topic": "hr.salaries"},
    }}});
    let message = refused(&mut app, "", "exec-r2", &named).await?;
    assert!(
        message.starts_with("node_config.data.sources.leak.topic: topic \"hr.salaries\""),
        "{message}"
    );
    // A listed topic whose records belong to another tenant.
    let message = refused(&mut app, "acme", "exec-r3", &on("orders")).await?;
    assert!(
        message.contains("its records belong to another tenant") && !message.contains("default"),
        "{message}"
    );
    // The header-honouring topic: acme is listed, globex is not.
    refused(&mut app, "globex", "exec-r4", &on("shared")).await?;

    // The seed scenario, its topic configured.
    let seed_1 = register(
        &mut app,
        "",
        "corr-seed",
        "exec-seed",
        &seed("01-wait-for-both.json"),
    )
    .await?;
    let acme = register(&mut app, "acme", "corr-shared", "exec-acme", &on("shared")).await?;
    let producer = producer(&bootstrap)?;
    produce(
        &producer,
        "external-service.events",
        json!({"correlation_id": "corr-seed", "execution_id": "exec-seed", "event_type": "action.completed"}),
        &[],
    )
    .await?;
    app.api_response("corr-seed", "exec-seed", "api-1").await?;
    // On `shared`, a header naming a tenant not listed is quarantined; acme's is honoured.
    produce(
        &producer,
        "shared",
        json!({"correlation_id": "corr-shared", "execution_id": "exec-acme"}),
        &[("tenant_id", "globex"), ("event_id", "unlisted")],
    )
    .await?;
    produce(
        &producer,
        "shared",
        json!({"correlation_id": "corr-shared", "execution_id": "exec-acme"}),
        &[("tenant_id", "acme"), ("event_id", "honoured")],
    )
    .await?;
    until_completed(&mut app, &seed_1.wait_id, "seed wait 1").await?;
    until_completed(&mut app, &acme.wait_id, "acme's wait on the shared topic").await?;
    let w = app.get(&acme.wait_id).await?;
    assert_eq!(w.received.len(), 1, "{:?}", w.received);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_headers_and_old_waits_cannot_cross_tenants_or_widen_the_subscription() -> Result<()>
{
    let db = TestDatabase::create(Backend::Sqlite).await?;
    // An instance of before (any topic, the header trusted) registers what the closed one
    // would refuse: acme's wait on `orders` and a wait on another application's topic.
    let mut open =
        TestApp::start(&db.url, &[("RENDEZVOUS__KAFKA__ALLOW_ANY_TOPIC", "true")]).await?;
    let acme = register(&mut open, "acme", "corr-1", "exec-acme", &on("orders")).await?;
    let payroll = register(&mut open, "", "corr-p", "exec-p", &on("payroll")).await?;
    open.stop().await?;

    let built = Application::build(closed(&db)?).await?;
    let bootstrap = built.embedded_kafka().context("embedded kafka")?.to_owned();
    let producer = producer(&bootstrap)?;
    // Every record is in place before the consumer starts: whatever it subscribes to, it
    // subscribes at once and reads from the first offset.
    produce(
        &producer,
        "payroll",
        json!({"correlation_id": "corr-p", "execution_id": "exec-p"}),
        &[],
    )
    .await?;
    produce(
        &producer,
        "orders",
        json!({"correlation_id": "corr-1", "execution_id": "exec-acme"}),
        &[("tenant_id", "acme"), ("event_id", "forged")],
    )
    .await?;
    produce(
        &producer,
        "orders",
        json!({"correlation_id": "corr-1", "execution_id": "exec-default"}),
        &[("event_id", "plain")],
    )
    .await?;
    let mut app = TestApp::from_running(built.spawn()?).await?;
    // The default tenant's wait on `orders`, with the same correlation id as acme's.
    let default = register(&mut app, "", "corr-1", "exec-default", &on("orders")).await?;
    until_completed(&mut app, &default.wait_id, "the default tenant's wait").await?;
    // The forged record came first on the same partition: it was processed, and
    // quarantined rather than applied to acme's wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status(&mut app, &acme.wait_id).await?,
        v1::WaitStatus::WaitingForEvents,
        "a forged tenant_id header completed acme's wait"
    );
    assert_eq!(
        status(&mut app, &payroll.wait_id).await?,
        v1::WaitStatus::WaitingForEvents,
        "the consumer read a topic no configuration allows"
    );
    app.stop().await
}
