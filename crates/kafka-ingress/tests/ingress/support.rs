//! The harness: an embedded Kafka (librdkafka's mock cluster over TCP), a real SQLite store
//! behind [`FaultyStore`], the service, a producer, and helpers to run an ingress and wait for
//! what it does.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rendezvous_domain::{CorrelationId, ExecutionId, NodeId, TenantId};
use rendezvous_kafka_ingress::{EmbeddedKafka, IngressConfig, IngressStats, KafkaIngress};
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig, SqlResumeSignal};
use rendezvous_ports::SystemClock;
use rendezvous_service::{RegisterWait, ServiceConfig, WaitLookup, WaitService};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::faulty::{Faults, FaultyStore};

pub(crate) type Service = WaitService<FaultyStore, SqlResumeSignal, SystemClock>;

pub(crate) struct Harness {
    pub(crate) kafka: EmbeddedKafka,
    pub(crate) service: Arc<Service>,
    pub(crate) producer: FutureProducer,
    pub(crate) faults: Arc<Faults>,
    pub(crate) _db: TestDatabase,
    pub(crate) database: Database,
}

pub(crate) async fn harness() -> Harness {
    harness_with(ServiceConfig::default()).await
}

/// The harness with a service config of its own (a topic policy, say).
pub(crate) async fn harness_with(service_config: ServiceConfig) -> Harness {
    let kafka = EmbeddedKafka::start(1).unwrap();
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let database = Database::connect(&DatabaseConfig::new(&db.url))
        .await
        .unwrap();
    let faults = Arc::new(Faults::default());
    let store = FaultyStore {
        inner: database.store(),
        faults: faults.clone(),
    };
    let service = Arc::new(WaitService::new(
        store,
        database.signal(),
        SystemClock,
        service_config,
    ));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap_servers())
        .create()
        .unwrap();
    Harness {
        kafka,
        service,
        producer,
        faults,
        _db: db,
        database,
    }
}

pub(crate) struct Running {
    pub(crate) stats: Arc<IngressStats>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: JoinHandle<()>,
}

impl Running {
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub(crate) fn start(h: &Harness, config: IngressConfig) -> Running {
    let ingress = KafkaIngress::new(h.service.clone(), config);
    let stats = ingress.stats();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        ingress.run(stopped).await.unwrap();
    });
    Running { stats, stop, task }
}

pub(crate) fn config(h: &Harness, group: &str) -> IngressConfig {
    let mut c = IngressConfig::new(h.kafka.bootstrap_servers(), group);
    c.refresh_interval = Duration::from_millis(200);
    // Fast group protocol: a member learns of a rebalance at its next heartbeat (3 s by
    // default) and a member lost mid-rebalance is dropped after the session timeout (45 s by
    // default); with the defaults the two-consumer join overran 60 s twice on a loaded CI run.
    c.properties
        .insert("heartbeat.interval.ms".into(), "300".into());
    c.properties
        .insert("session.timeout.ms".into(), "6000".into());
    c
}

pub(crate) async fn produce(
    h: &Harness,
    topic: &str,
    key: &str,
    value: &str,
    headers: &[(&str, &str)],
) {
    let mut owned = OwnedHeaders::new();
    for (k, v) in headers {
        owned = owned.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    h.producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(owned),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

pub(crate) async fn register(h: &Harness, execution: &str, config: &Value) -> String {
    let r = h
        .service
        .register(RegisterWait {
            input_variables: [("input_data".to_owned(), "x".to_owned())].into(),
            ..RegisterWait::new(
                ExecutionId::parse(execution).unwrap(),
                NodeId::parse("node").unwrap(),
                config.to_string(),
            )
        })
        .await
        .unwrap();
    r.wait.state.key.correlation_id.to_string()
}

/// Polls `check` for up to 60 s (consumer-group joins are slow on a loaded 2-core machine).
pub(crate) async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

pub(crate) fn seed_1() -> Value {
    serde_json::from_str(include_str!(
        "../../../domain/tests/fixtures/01-wait-for-both.json"
    ))
    .unwrap()
}

pub(crate) fn kafka_only(topic: &str) -> Value {
    json!({"type": "wait_events", "data": {"kafkaEvent": {"topic": topic}}})
}

pub(crate) async fn status(h: &Harness, correlation: &str) -> String {
    let w = h
        .service
        .get(WaitLookup::Correlation {
            tenant: TenantId::default_tenant(),
            correlation_id: CorrelationId::parse(correlation).unwrap(),
        })
        .await
        .unwrap();
    w.state.status().to_string()
}
