//! Resume wake-ups across instances (PostgreSQL only: SQLite has one instance).

use std::time::Duration;

use rendezvous_domain::TenantId;
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig, SqlStore};
use rendezvous_ports::{
    ChangeOutcome, ResumeRecord, ResumeSignal, ResumeWaiter, Store, StoreTx, StoredWait,
    TenantScope, WaitChange,
};

use crate::support::*;

/// PostgreSQL: a resume committed by one instance wakes the resume streams of another (its
/// `LISTEN`), and the writer's own streams (locally; its listener skips its own `NOTIFY`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_one_instance_wakes_the_streams_of_every_instance() {
    let (_db, a, b) = two_instances().await;
    let store = a.store();
    // Let both listeners subscribe before anything is sent.
    // Neither stream is ready, so every resume is announced to every instance.
    let mut on_b = b.signal().waiter(&TenantScope::All);
    let mut on_a = a.signal().waiter(&TenantScope::All);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let never = Duration::from_secs(3600);
    tokio::time::timeout(Duration::from_millis(50), on_b.wait(never))
        .await
        .expect_err("nothing happened yet, so nothing may wake a stream");
    let decided = decide(&store, 1).await;
    tokio::time::timeout(Duration::from_secs(30), on_a.wait(never))
        .await
        .expect("the writing instance's streams are woken");
    tokio::time::timeout(Duration::from_secs(30), on_b.wait(never))
        .await
        .expect("another instance's streams are woken through LISTEN/NOTIFY");

    // A resume written by a transaction of steps (the full registration path) is announced
    // too, once it commits, and not before.
    let w2 = wait(2, "c2", T0);
    insert(&store, &w2).await;
    let mut tx = store.begin().await.unwrap();
    let resume = ResumeRecord::of(&decided.state, resume_id(10)).unwrap();
    let resume = ResumeRecord {
        wait_id: w2.state.key.id,
        ..resume
    };
    assert!(tx.insert_resume(&resume).await.unwrap());
    tokio::time::timeout(Duration::from_millis(300), on_b.wait(never))
        .await
        .expect_err("a resume not committed yet may wake no stream");
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), on_b.wait(never))
        .await
        .expect("a resume committed by a transaction wakes the other instance's streams");
    a.close().await;
    b.close().await;
}

/// Local first: while a ready stream of the resume's tenant waits on the writing instance, the
/// other instances are not told (each resume costs one claim, not one per instance); a stream
/// of another tenant, or one that is not ready, does not count; freed leases are announced to
/// everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_local_stream_of_the_tenant_takes_the_resume_alone() {
    let (_db, a, b) = two_instances().await;
    let store = a.store();
    let mut on_b = b.signal().waiter(&TenantScope::All);
    let mut on_a = a.signal().waiter(&TenantScope::All);
    let mut other_tenant_on_a = a
        .signal()
        .waiter(&TenantScope::one(TenantId::parse("someone-else").unwrap()));
    other_tenant_on_a.ready(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let never = Duration::from_secs(3600);

    on_a.ready(true);
    decide(&store, 1).await;
    tokio::time::timeout(Duration::from_secs(30), on_a.wait(never))
        .await
        .expect("the ready local stream is woken");
    tokio::time::timeout(Duration::from_millis(500), on_b.wait(never))
        .await
        .expect_err("another instance is not told while a ready local stream takes it");

    // Not ready (full, or held by a client that does not read): everyone is told.
    on_a.ready(false);
    decide(&store, 2).await;
    tokio::time::timeout(Duration::from_secs(30), on_b.wait(never))
        .await
        .expect("with no ready stream of the tenant here, the other instances are told");

    // Gone (dropped while ready): everyone is told.
    on_a.ready(true);
    drop(on_a);
    decide(&store, 3).await;
    tokio::time::timeout(Duration::from_secs(30), on_b.wait(never))
        .await
        .expect("a dropped stream is not ready");

    // Freed leases go to every instance, ready local streams or not.
    let mut on_a = a.signal().waiter(&TenantScope::All);
    on_a.ready(true);
    let owner = owner("stream-1");
    let leased = store
        .claim_resumes(
            &owner,
            &TenantScope::All,
            at(2),
            Duration::from_secs(60),
            10,
        )
        .await
        .unwrap();
    assert_eq!(leased.len(), 3);
    assert_eq!(store.release_resumes(&owner).await.unwrap(), 3);
    tokio::time::timeout(Duration::from_secs(30), on_b.wait(never))
        .await
        .expect("freed leases are announced to every instance");
    a.close().await;
    b.close().await;
}

/// Two instances on one fresh PostgreSQL database.
async fn two_instances() -> (TestDatabase, Database, Database) {
    let db = TestDatabase::create(Backend::Postgres).await.unwrap();
    let config = DatabaseConfig::new(&db.url);
    let (a, b) = (
        Database::connect(&config).await.unwrap(),
        Database::connect(&config).await.unwrap(),
    );
    (db, a, b)
}

/// Registers wait `n` (correlation id `c{n}`) and decides it, with its resume, through the
/// group commit; returns the decided wait.
async fn decide(store: &SqlStore, n: u128) -> StoredWait {
    let w = wait(n, &format!("c{n}"), T0);
    insert(store, &w).await;
    let mut decided = w.clone();
    decided.state.cancel(None, at(1)).unwrap();
    decided.version = 2;
    let resume = ResumeRecord::of(&decided.state, resume_id(n)).unwrap();
    let change = WaitChange {
        wait: &decided,
        expected_version: 1,
        processed: None,
        resume: Some(&resume),
    };
    assert_eq!(
        store.apply_change(change).await.unwrap(),
        ChangeOutcome::Applied
    );
    decided
}
