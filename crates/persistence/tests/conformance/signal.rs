//! Resume wake-ups across instances (PostgreSQL only: SQLite has one instance).

use std::time::Duration;

use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig};
use rendezvous_ports::{ChangeOutcome, ResumeRecord, Store, StoreTx, WaitChange};

use crate::support::*;

/// PostgreSQL: a resume committed by one instance wakes the resume streams of another (its
/// `LISTEN`), and the writer's own streams (locally; its listener skips its own `NOTIFY`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_one_instance_wakes_the_streams_of_every_instance() {
    use rendezvous_ports::{ResumeSignal, ResumeWaiter};
    let db = TestDatabase::create(Backend::Postgres).await.unwrap();
    let config = DatabaseConfig::new(&db.url);
    let (a, b) = (
        Database::connect(&config).await.unwrap(),
        Database::connect(&config).await.unwrap(),
    );
    let store = a.store();
    let w = wait(1, "c1", T0);
    insert(&store, &w).await;
    // Let both listeners subscribe before anything is sent.
    let mut on_b = b.signal().waiter();
    let mut on_a = a.signal().waiter();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let never = Duration::from_secs(3600);
    tokio::time::timeout(Duration::from_millis(50), on_b.wait(never))
        .await
        .expect_err("nothing happened yet, so nothing may wake a stream");
    let mut decided = w.clone();
    decided.state.cancel(None, at(1)).unwrap();
    decided.version = 2;
    let resume = ResumeRecord::of(&decided.state, resume_id(9)).unwrap();
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
