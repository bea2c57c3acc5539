//! Kafka by tenant at registration, on the real SQLite store: a wait may name only the topics
//! its tenant may use; anything else is refused with INVALID_ARGUMENT naming the source's
//! topic field, and nothing of the refused wait is stored (not its topic either). The open
//! policy (`allow_any_topic`) accepts any topic, as before.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};

use rendezvous_domain::{ExecutionId, NodeId, TenantId};
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig, SqlResumeSignal, SqlStore};
use rendezvous_ports::SystemClock;
use rendezvous_service::{
    RegisterWait, ServiceConfig, ServiceError, TopicPattern, TopicPolicy, TopicTenancy, WaitService,
};
use serde_json::{Value, json};

type Service = WaitService<SqlStore, SqlResumeSignal, SystemClock>;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// `orders` carries acme's records, `shared` any listed tenant's by header, and acme's waits
/// may also name `acme.*`.
fn policy() -> TopicPolicy {
    let mut policy = TopicPolicy::only([
        ("orders".to_owned(), TopicTenancy::of(tenant("acme"))),
        (
            "shared".to_owned(),
            TopicTenancy {
                tenant_from_header: true,
                header_tenants: BTreeSet::from([tenant("globex")]),
                ..TopicTenancy::of(TenantId::default_tenant())
            },
        ),
    ]);
    policy
        .tenant_topics
        .insert(tenant("acme"), vec![TopicPattern::parse("acme.*").unwrap()]);
    policy
}

async fn service_with(policy: TopicPolicy) -> (Service, TestDatabase) {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let database = Database::connect(&DatabaseConfig::new(&db.url))
        .await
        .unwrap();
    let config = ServiceConfig {
        topics: policy,
        ..ServiceConfig::default()
    };
    (
        WaitService::new(database.store(), database.signal(), SystemClock, config),
        db,
    )
}

async fn register(
    service: &Service,
    tenant_name: &str,
    config: &Value,
) -> Result<(), ServiceError> {
    static EXECUTIONS: AtomicU32 = AtomicU32::new(0);
    let execution = format!("exec-{}", EXECUTIONS.fetch_add(1, Ordering::Relaxed));
    let request = RegisterWait {
        tenant: tenant(tenant_name),
        ..RegisterWait::new(
            ExecutionId::parse(execution).unwrap(),
            NodeId::parse("node").unwrap(),
            config.to_string(),
        )
    };
    service.register(request).await.map(|_| ())
}

fn on(topic: &str) -> Value {
    json!({"type": "wait_events", "data": {"kafkaEvent": {"topic": topic}}})
}

fn invalid(result: Result<(), ServiceError>) -> (String, String) {
    match result {
        Err(ServiceError::Invalid { field, reason }) => (field, reason),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wait_names_only_topics_its_tenant_may_use() {
    let (service, _db) = service_with(policy()).await;
    register(&service, "acme", &on("orders")).await.unwrap();
    register(&service, "acme", &on("acme.invoices"))
        .await
        .unwrap();
    register(&service, "globex", &on("shared")).await.unwrap();
    register(&service, "default", &on("shared")).await.unwrap();

    let (field, reason) = invalid(register(&service, "default", &on("payroll")).await);
    assert_eq!(field, "node_config.data.kafkaEvent.topic");
    assert!(
        reason.starts_with("topic \"payroll\" is not allowed for tenant \"default\""),
        "{reason}"
    );
    let (_, reason) = invalid(register(&service, "globex", &on("orders")).await);
    assert!(
        reason.contains("its records belong to another tenant") && !reason.contains("acme"),
        "refused without naming the other tenant: {reason}"
    );
    invalid(register(&service, "globex", &on("acme.invoices")).await);
    invalid(register(&service, "initech", &on("shared")).await);

    // A named source is reported at its own path.
    let named = json!({"type": "wait_events", "data": {"sources": {
        "paid": {"type": "kafka", "topic": "orders"},
        "leak": {"type": "kafka", "topic": "hr.salaries"},
    }}});
    let (field, reason) = invalid(register(&service, "acme", &named).await);
    assert_eq!(field, "node_config.data.sources.leak.topic");
    assert!(reason.contains("\"hr.salaries\""), "{reason}");

    let topics: BTreeSet<String> = service
        .kafka_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.topic)
        .collect();
    assert_eq!(
        topics,
        BTreeSet::from(["acme.invoices".into(), "orders".into(), "shared".into()]),
        "a refused wait records no topic for the consumer to follow"
    );

    // The escape hatch: any topic, as before topics were configured.
    let (open, _open_db) = service_with(TopicPolicy::allow_any()).await;
    register(&open, "acme", &on("payroll")).await.unwrap();
    register(&open, "default", &on("payroll")).await.unwrap();
}
