//! What the conformance tests share: a fresh database and store per test, and waits, events
//! and resumes to store.

use rendezvous_domain::{
    Channel, CorrelationId, EventKey, ExecutionId, IncomingEvent, LeaseOwner, NodeId, ResumeId,
    SourceName, TenantId, Timestamp, WaitId, WaitKey, WaitSpec, WaitState,
};
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig, SqlStore};
use rendezvous_ports::{ResumeRecord, Store, StoreTx, StoredWait};
use serde_json::json;

/// The tests' epoch.
pub(crate) const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

/// A resume id by number.
pub(crate) fn resume_id(n: u128) -> ResumeId {
    ResumeId::from_uuid(uuid::Uuid::from_u128(n))
}

/// A lease owner (a stream or a dispatcher) by name.
pub(crate) fn owner(name: &str) -> LeaseOwner {
    LeaseOwner::parse(name).unwrap()
}

/// `ms` milliseconds after [`T0`].
pub(crate) fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0.as_millis() + ms)
}

/// A fresh database, connected, and its store.
pub(crate) async fn open(backend: Backend) -> (TestDatabase, Database, SqlStore) {
    let db = TestDatabase::create(backend).await.unwrap();
    let database = Database::connect(&DatabaseConfig::new(&db.url))
        .await
        .unwrap();
    let store = database.store();
    (db, database, store)
}

/// Wait `n` (its id; execution `exec-n`) on `correlation`, registered at `created` with a
/// 60 s timeout, an API call and a Kafka source.
pub(crate) fn wait(n: u128, correlation: &str, created: Timestamp) -> StoredWait {
    let spec = WaitSpec::from_node_config(&json!({"type": "wait_events", "data": {
        "apiCall": {"url": "https://x.example/a"}, "kafkaEvent": {"topic": "t"}, "timeout": 60
    }}))
    .unwrap();
    let key = WaitKey {
        id: WaitId::from_uuid(uuid::Uuid::from_u128(n)),
        tenant: TenantId::default_tenant(),
        correlation_id: CorrelationId::parse(correlation).unwrap(),
        execution_id: ExecutionId::parse(format!("exec-{n}")).unwrap(),
        node_id: NodeId::parse("node").unwrap(),
    };
    StoredWait {
        state: WaitState::register(key, spec, created),
        version: 1,
        idempotency_key: String::new(),
        workflow_id: Some("wf".into()),
        updated_at: created,
    }
}

/// An API event with key `key`, received at [`T0`].
pub(crate) fn event(key: &str) -> IncomingEvent {
    IncomingEvent {
        key: EventKey::parse(key).unwrap(),
        channel: Channel::Source(SourceName::api()),
        execution_id: Some(ExecutionId::parse("exec-1").unwrap()),
        payload: json!({"status": 200}),
        received_at: T0,
    }
}

/// Runs SQL straight on the database, past the store (to write rows it would never write).
pub(crate) async fn sql(db: &TestDatabase, statement: &str) {
    use sea_orm::ConnectionTrait;
    let conn = sea_orm::Database::connect(db.url.as_str()).await.unwrap();
    conn.execute_unprepared(statement).await.unwrap();
    conn.close().await.unwrap();
}

/// JSON nested `depth` levels deep: valid, but deeper than the store's decoder reads.
pub(crate) fn deep_json(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Inserts a wait in a transaction of its own.
pub(crate) async fn insert(store: &SqlStore, w: &StoredWait) {
    let mut tx = store.begin().await.unwrap();
    tx.insert_wait(w).await.unwrap();
    tx.commit().await.unwrap();
}

/// The resume of a wait cancelled at `n` ms, with resume id `1000 + n`.
pub(crate) fn resume_of(w: &StoredWait, n: u128) -> ResumeRecord {
    let mut state = w.state.clone();
    state.cancel(None, at(n as i64)).unwrap();
    ResumeRecord::of(&state, resume_id(1000 + n)).unwrap()
}
