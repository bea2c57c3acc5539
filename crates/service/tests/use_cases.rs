//! The use cases on their own: the service over the real SQLite store, with a `ManualClock`
//! so deadlines and buffer TTLs are crossed by moving the clock, never by sleeping.

use std::sync::Arc;
use std::time::Duration;

use rendezvous_domain::{
    Channel, CorrelationId, EventKey, ExecutionId, IdempotencyKey, IgnoreReason, LeaseOwner,
    NodeId, Outcome, TenantId, Timestamp, WaitStatus,
};
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig, SqlResumeSignal, SqlStore};
use rendezvous_ports::TenantScope;
use rendezvous_ports::fakes::ManualClock;
use rendezvous_ports::{Quarantined, Store};
use rendezvous_service::{
    Delivered, Delivery, RegisterWait, Registered, Replayed, ServiceConfig, ServiceError,
    WaitLookup, WaitService,
};
use serde_json::json;

type Service = WaitService<SqlStore, SqlResumeSignal, Arc<ManualClock>>;

/// The service on a fresh SQLite database, its clock at 1,000,000 ms.
struct Harness {
    service: Service,
    clock: Arc<ManualClock>,
    database: Database,
    _db: TestDatabase,
}

async fn harness(config: ServiceConfig) -> Harness {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let database = Database::connect(&DatabaseConfig::new(&db.url))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let service = WaitService::new(database.store(), database.signal(), clock.clone(), config);
    Harness {
        service,
        clock,
        database,
        _db: db,
    }
}

/// A wait for one Kafka event on topic `t`, timing out after `timeout_secs`.
fn kafka_only(timeout_secs: u64) -> String {
    json!({"type": "wait_events", "data": {"kafkaEvent": {"topic": "t"}, "timeout": timeout_secs}})
        .to_string()
}

fn registration(execution: &str, config: String) -> RegisterWait {
    RegisterWait::new(
        ExecutionId::parse(execution).unwrap(),
        NodeId::parse("node").unwrap(),
        config,
    )
}

fn event(correlation_id: &CorrelationId, execution: &str, key: &str) -> Delivery {
    let payload = json!({"correlation_id": correlation_id.as_str(), "execution_id": execution});
    Delivery {
        tenant: TenantId::default_tenant(),
        correlation_id: correlation_id.clone(),
        execution_id: Some(ExecutionId::parse(execution).unwrap()),
        channel: Channel::Topic("t".into()),
        size: payload.to_string().len(),
        payload,
        event_key: EventKey::parse(key).unwrap(),
    }
}

fn by_id(wait_id: rendezvous_domain::WaitId) -> WaitLookup {
    WaitLookup::Id {
        wait_id,
        tenants: TenantScope::All,
    }
}

/// A new wait of execution `exec-1` for one Kafka event, timing out after a minute.
async fn register(h: &Harness) -> rendezvous_ports::StoredWait {
    h.service
        .register(registration("exec-1", kafka_only(60)))
        .await
        .unwrap()
        .wait
}

async fn resumes(h: &Harness) -> Vec<rendezvous_ports::ResumeRecord> {
    h.service
        .claim_resumes(
            &LeaseOwner::parse("engine").unwrap(),
            &TenantScope::All,
            Duration::from_secs(60),
            100,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_wait_times_out_when_the_clock_passes_its_deadline() {
    let h = harness(ServiceConfig::default()).await;
    let wait = register(&h).await;
    assert_eq!(h.service.expire_due(10).await.unwrap(), 0);
    h.clock.advance(59_999);
    assert_eq!(h.service.expire_due(10).await.unwrap(), 0, "not yet due");
    h.clock.advance(1);
    assert_eq!(
        h.service.expire_due(10).await.unwrap(),
        1,
        "due at the deadline"
    );
    assert_eq!(h.service.expire_due(10).await.unwrap(), 0, "decided once");
    let timed_out = h.service.get(by_id(wait.state.key.id)).await.unwrap();
    assert_eq!(timed_out.state.status(), WaitStatus::TimedOut);
    let resumes = resumes(&h).await;
    assert_eq!(resumes.len(), 1);
    assert_eq!(resumes[0].wait_id, wait.state.key.id);
    assert_eq!(
        resumes[0].outcome,
        Outcome::TimedOut,
        "the default policy is fail"
    );
    assert_eq!(
        resumes[0].decided_at,
        Timestamp::from_millis(1_000_000 + 60_000)
    );
}

#[tokio::test]
async fn an_early_event_is_applied_when_its_wait_registers() {
    let h = harness(ServiceConfig::default()).await;
    let correlation_id = CorrelationId::parse("c-early").unwrap();
    let delivered = h
        .service
        .deliver(event(&correlation_id, "exec-1", "e-1"))
        .await
        .unwrap();
    assert_eq!(delivered, Delivered::Buffered);
    let again = h
        .service
        .deliver(event(&correlation_id, "exec-1", "e-1"))
        .await
        .unwrap();
    assert_eq!(again, Delivered::BufferedDuplicate);
    h.clock.advance(5_000);
    let registered = h
        .service
        .register(RegisterWait {
            correlation_id: Some(correlation_id.clone()),
            ..registration("exec-1", kafka_only(60))
        })
        .await
        .unwrap();
    assert!(registered.created);
    assert_eq!(registered.wait.state.status(), WaitStatus::Completed);
    assert_eq!(resumes(&h).await.len(), 1, "decided at registration, once");
}

#[tokio::test]
async fn an_early_event_expires_after_the_buffer_ttl_and_is_kept() {
    let h = harness(ServiceConfig {
        buffer_ttl: Duration::from_secs(10),
        ..ServiceConfig::default()
    })
    .await;
    let correlation_id = CorrelationId::parse("c-late").unwrap();
    h.service
        .deliver(event(&correlation_id, "exec-1", "e-1"))
        .await
        .unwrap();
    h.clock.advance(9_999);
    assert_eq!(h.service.expire_buffered().await.unwrap(), 0);
    h.clock.advance(1);
    assert_eq!(h.service.expire_buffered().await.unwrap(), 1);
    let registered = register_for(&h, correlation_id).await;
    assert_eq!(
        registered.wait.state.status(),
        WaitStatus::WaitingForEvents,
        "an expired event is not applied"
    );
    let quarantined = h.database.store().quarantined(10).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    assert!(
        quarantined[0]
            .event
            .reason
            .contains("within the buffer TTL"),
        "{}",
        quarantined[0].event.reason
    );
}

/// A wait of execution `exec-1` for one Kafka event with a correlation id of the caller's.
async fn register_for(h: &Harness, correlation_id: CorrelationId) -> Registered {
    h.service
        .register(RegisterWait {
            correlation_id: Some(correlation_id),
            ..registration("exec-1", kafka_only(60))
        })
        .await
        .unwrap()
}

/// Delivers an event of `execution` for `correlation_id` that no wait claims within the 10 s
/// buffer TTL; the id it is quarantined under.
async fn expired_early_event(h: &Harness, correlation_id: &CorrelationId, execution: &str) -> i64 {
    h.service
        .deliver(event(correlation_id, execution, "e-1"))
        .await
        .unwrap();
    h.clock.advance(10_000);
    assert_eq!(h.service.expire_buffered().await.unwrap(), 1);
    h.service.quarantined(10).await.unwrap()[0].id
}

#[tokio::test]
async fn an_expired_early_event_replayed_completes_its_wait_once() {
    let h = harness(ServiceConfig {
        buffer_ttl: Duration::from_secs(10),
        ..ServiceConfig::default()
    })
    .await;
    let correlation_id = CorrelationId::parse("c-replayed").unwrap();
    let id = expired_early_event(&h, &correlation_id, "exec-1").await;
    let registered = register_for(&h, correlation_id).await;
    assert_eq!(registered.wait.state.status(), WaitStatus::WaitingForEvents);

    assert_eq!(h.service.replay(id, None).await.unwrap(), Replayed::Applied);
    let wait = h
        .service
        .get(by_id(registered.wait.state.key.id))
        .await
        .unwrap();
    assert_eq!(
        wait.state.status(),
        WaitStatus::Completed,
        "the replayed event counted"
    );
    assert_eq!(resumes(&h).await.len(), 1);
    assert!(
        h.service.quarantined(10).await.unwrap().is_empty(),
        "taken, so no longer set aside"
    );
    assert_eq!(
        h.service.replay(id, None).await.unwrap(),
        Replayed::NotFound
    );
}

#[tokio::test]
async fn an_expired_early_event_replayed_before_its_wait_is_buffered_again() {
    let h = harness(ServiceConfig {
        buffer_ttl: Duration::from_secs(10),
        ..ServiceConfig::default()
    })
    .await;
    let correlation_id = CorrelationId::parse("c-rebuffered").unwrap();
    let id = expired_early_event(&h, &correlation_id, "exec-1").await;
    assert_eq!(
        h.service.replay(id, None).await.unwrap(),
        Replayed::Buffered
    );
    let registered = register_for(&h, correlation_id).await;
    assert_eq!(
        registered.wait.state.status(),
        WaitStatus::Completed,
        "buffered anew with a fresh TTL, so the registration applies it"
    );
}

#[tokio::test]
async fn what_cannot_be_replayed_stays_with_the_reason() {
    let h = harness(ServiceConfig::default()).await;
    let at = Timestamp::from_millis(1);
    let mut record = Quarantined::new("kafka:t/0/7", "{}", "no correlation id", at);
    record.headers = Some(Default::default());
    let kinds = [
        (
            Quarantined::new("wait:abc", "{}", "unreadable", at),
            "stored state",
        ),
        (
            Quarantined::new("kafka:t/0/6", "\u{fffd}", "not JSON", at),
            "without its headers",
        ),
        (
            Quarantined::new("buffer", "{}", "expired", at),
            "without its tenant",
        ),
        (record, "no Kafka ingress"),
    ];
    for (q, why) in kinds {
        h.service.quarantine(q).await.unwrap();
        let row = h.service.quarantined(1).await.unwrap().remove(0);
        match h.service.replay(row.id, None).await.unwrap() {
            Replayed::NotReplayable(reason) => assert!(reason.contains(why), "{reason}"),
            other => panic!("{}: {other:?}", row.event.origin),
        }
        let kept = h.service.quarantined(1).await.unwrap().remove(0);
        assert_eq!((kept.id, kept.replays), (row.id, 0), "kept as it was");
    }
}

#[tokio::test]
async fn a_replay_refused_again_keeps_the_event_with_the_new_reason() {
    let h = harness(ServiceConfig {
        buffer_ttl: Duration::from_secs(10),
        ..ServiceConfig::default()
    })
    .await;
    let correlation_id = CorrelationId::parse("c-mismatch").unwrap();
    let id = expired_early_event(&h, &correlation_id, "exec-other").await;
    register_for(&h, correlation_id).await;
    let Replayed::Refused(reason) = h.service.replay(id, None).await.unwrap() else {
        panic!("an execution-id mismatch is refused again");
    };
    assert!(reason.contains("exec-other"), "{reason}");
    let kept = h.service.quarantined(10).await.unwrap().remove(0);
    assert_eq!((kept.id, kept.replays), (id, 1));
    assert_eq!(kept.event.reason, reason);
}

#[tokio::test]
async fn an_execution_mismatch_is_recorded_and_never_applied() {
    let h = harness(ServiceConfig::default()).await;
    let wait = register(&h).await;
    let correlation_id = wait.state.key.correlation_id.clone();
    let refused = h
        .service
        .deliver(event(&correlation_id, "exec-other", "e-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ServiceError::ExecutionMismatch(_)),
        "{refused:?}"
    );
    let after = h.service.get(by_id(wait.state.key.id)).await.unwrap();
    assert_eq!(after.state.status(), WaitStatus::WaitingForEvents);
    assert!(after.state.received.is_empty());
    assert!(matches!(
        after.state.ignored.as_slice(),
        [ignored] if matches!(ignored.reason, IgnoreReason::ExecutionMismatch { .. })
    ));
    let accepted = h
        .service
        .deliver(event(&correlation_id, "exec-1", "e-2"))
        .await
        .unwrap();
    assert!(
        matches!(accepted, Delivered::Applied { wait, .. } if wait.state.status() == WaitStatus::Completed)
    );
}

#[tokio::test]
async fn cancel_decides_once_and_announces_once() {
    let h = harness(ServiceConfig::default()).await;
    let wait = register(&h).await;
    let (cancelled, changed) = h
        .service
        .cancel(by_id(wait.state.key.id), Some("withdrawn".into()))
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(cancelled.state.status(), WaitStatus::Cancelled);
    let (_, again) = h
        .service
        .cancel(by_id(wait.state.key.id), None)
        .await
        .unwrap();
    assert!(!again, "already decided");
    let resumes = resumes(&h).await;
    assert_eq!(resumes.len(), 1);
    assert_eq!(resumes[0].reason.as_deref(), Some("withdrawn"));
    // The engine's ack is recorded once.
    let ids = [resumes[0].resume_id];
    assert_eq!(h.service.ack_resumes(&ids).await.unwrap(), 1);
    assert_eq!(h.service.ack_resumes(&ids).await.unwrap(), 0);
}

#[tokio::test]
async fn registration_is_idempotent_and_refuses_a_changed_config() {
    let h = harness(ServiceConfig::default()).await;
    let keyed = |config: String| RegisterWait {
        idempotency_key: IdempotencyKey::parse("loop-1").unwrap(),
        ..registration("exec-1", config)
    };
    let first = h.service.register(keyed(kafka_only(60))).await.unwrap();
    let second = h.service.register(keyed(kafka_only(60))).await.unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.wait.state.key, second.wait.state.key);
    let changed = h.service.register(keyed(kafka_only(61))).await.unwrap_err();
    assert!(
        matches!(&changed, ServiceError::AlreadyExists(m) if m.contains("different node config")),
        "{changed:?}"
    );
    let other_tenant = WaitLookup::Id {
        wait_id: first.wait.state.key.id,
        tenants: TenantScope::one(TenantId::parse("someone-else").unwrap()),
    };
    assert!(matches!(
        h.service.get(other_tenant).await,
        Err(ServiceError::NotFound(_))
    ));
}

#[tokio::test]
async fn limits_are_refused_naming_the_limit() {
    let h = harness(ServiceConfig {
        max_config_bytes: 64,
        max_payload_bytes: 10,
        ..ServiceConfig::default()
    })
    .await;
    let too_big = h
        .service
        .register(registration("exec-1", kafka_only(60) + &" ".repeat(64)))
        .await
        .unwrap_err();
    assert!(
        too_big.to_string().contains("over the limit of 64 bytes"),
        "{too_big}"
    );
    let correlation_id = CorrelationId::parse("c-1").unwrap();
    let too_big = h
        .service
        .deliver(event(&correlation_id, "exec-1", "e-1"))
        .await
        .unwrap_err();
    assert!(
        too_big.to_string().contains("over the limit of 10 bytes"),
        "{too_big}"
    );
}

/// The events of one wait never add up past the per-wait limit (its resume must stay
/// deliverable); a reason is bounded too. Both refusals are RESOURCE_EXHAUSTED-class errors
/// naming the limit, and the wait stays open and usable.
#[tokio::test]
async fn a_wait_and_a_reason_are_bounded() {
    let h = harness(ServiceConfig::default()).await;
    let sources: serde_json::Map<String, serde_json::Value> = (0..4)
        .map(|i| (format!("s{i}"), json!({"type": "callback"})))
        .collect();
    let config = json!({"type": "wait_events", "data": {"sources": sources}}).to_string();
    let wait = h
        .service
        .register(registration("exec-1", config))
        .await
        .unwrap()
        .wait;
    let correlation_id = wait.state.key.correlation_id.clone();
    let blob = "x".repeat(1000 * 1000);
    let deliver = |i: usize| {
        let payload = json!({"blob": blob});
        Delivery {
            tenant: TenantId::default_tenant(),
            correlation_id: correlation_id.clone(),
            execution_id: Some(ExecutionId::parse("exec-1").unwrap()),
            channel: Channel::Source(
                rendezvous_domain::SourceName::parse(format!("s{i}")).unwrap(),
            ),
            size: payload.to_string().len(),
            payload,
            event_key: EventKey::parse(format!("e-{i}")).unwrap(),
        }
    };
    for i in 0..3 {
        h.service.deliver(deliver(i)).await.unwrap();
    }
    let err = h.service.deliver(deliver(3)).await.unwrap_err();
    assert!(matches!(err, ServiceError::TooLarge { .. }), "{err:?}");
    assert!(
        err.to_string().contains("over the limit of 3145728 bytes"),
        "{err}"
    );
    let stored = h.service.get(by_id(wait.state.key.id)).await.unwrap();
    assert_eq!(stored.state.received.len(), 3);
    assert!(stored.state.is_open());
    assert!(matches!(
        stored.state.ignored[0].reason,
        IgnoreReason::OverWaitLimit { .. }
    ));

    let err = h
        .service
        .cancel(by_id(wait.state.key.id), Some("r".repeat(1025)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("reason is 1025 bytes, over the limit of 1024 bytes"),
        "{err}"
    );
    let (cancelled, closed) = h
        .service
        .cancel(by_id(wait.state.key.id), Some("r".repeat(1024)))
        .await
        .unwrap();
    assert!(closed && cancelled.state.status() == WaitStatus::Cancelled);
}
