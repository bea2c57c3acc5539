//! Retention through the use case: `purge_expired` deletes what was decided (and acknowledged)
//! more than the retention period ago, in bounded rounds, and never an open wait or an
//! unacknowledged resume. The service over the real SQLite store with a `ManualClock`.

use std::sync::Arc;
use std::time::Duration;

use rendezvous_domain::{ExecutionId, LeaseOwner, NodeId, Timestamp};
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig};
use rendezvous_ports::TenantScope;
use rendezvous_ports::fakes::ManualClock;
use rendezvous_service::{RegisterWait, ServiceConfig, ServiceError, WaitLookup, WaitService};
use serde_json::json;

fn registration(execution: &str) -> RegisterWait {
    let config =
        json!({"type": "wait_events", "data": {"kafkaEvent": {"topic": "t"}, "timeout": 60}});
    RegisterWait::new(
        ExecutionId::parse(execution).unwrap(),
        NodeId::parse("node").unwrap(),
        config.to_string(),
    )
}

#[tokio::test]
async fn decided_and_acknowledged_waits_are_purged_after_the_retention_period() {
    let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let database = Database::connect(&DatabaseConfig::new(&db.url))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let service = WaitService::new(
        database.store(),
        database.signal(),
        clock.clone(),
        ServiceConfig::default(),
    );
    let mut ids = Vec::new();
    for n in 1..=3 {
        let registered = service
            .register(registration(&format!("exec-{n}")))
            .await
            .unwrap();
        ids.push(registered.wait.state.key.id);
    }
    clock.advance(60_000);
    assert_eq!(service.expire_due(10).await.unwrap(), 3);
    let open = service.register(registration("exec-4")).await.unwrap().wait;
    let engine = LeaseOwner::parse("engine").unwrap();
    let resumes = service
        .claim_resumes(&engine, &TenantScope::All, Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(resumes.len(), 3);
    // The engine acknowledges the first two; the third stays unacknowledged.
    let acked: Vec<_> = resumes
        .iter()
        .filter(|r| r.wait_id != ids[2])
        .map(|r| r.resume_id)
        .collect();
    assert_eq!(service.ack_resumes(&acked).await.unwrap(), 2);

    let retention = Duration::from_secs(3600);
    clock.advance(3_600_000);
    let nothing = service.purge_expired(retention, 1, 100).await.unwrap();
    assert!(!nothing.backlog);
    assert_eq!(
        nothing.counts.total(),
        0,
        "decided no more than the retention period ago"
    );
    clock.advance(1);
    // At most one round per call: the first call leaves a backlog, the second clears it.
    let first = service.purge_expired(retention, 1, 1).await.unwrap();
    assert_eq!((first.counts.waits, first.backlog), (1, true));
    let rest = service.purge_expired(retention, 1, 100).await.unwrap();
    assert_eq!(
        (rest.counts.waits, rest.backlog),
        (1, false),
        "in rounds of one, until a round is not full"
    );
    assert_eq!(first.counts.resumes + rest.counts.resumes, 2);
    for id in &ids[..2] {
        let lookup = WaitLookup::Id {
            wait_id: *id,
            tenants: TenantScope::All,
        };
        assert!(matches!(
            service.get(lookup).await,
            Err(ServiceError::NotFound(_))
        ));
    }
    for id in [ids[2], open.state.key.id] {
        let lookup = WaitLookup::Id {
            wait_id: id,
            tenants: TenantScope::All,
        };
        assert!(service.get(lookup).await.is_ok(), "kept");
    }
    database.close().await;
}
