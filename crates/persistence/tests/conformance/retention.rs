//! Retention: what finished before a time is purged in bounded rounds — decided waits with
//! their inbox rows, acknowledged resume and settled call; applied and expired early events;
//! quarantined events — and nothing else: no open wait, no unacknowledged resume, no wait whose
//! call is pending, no pending early event, nothing finished after that time.

use rendezvous_domain::{CorrelationId, EventKey, SourceName, TenantId};
use rendezvous_persistence::SqlStore;
use rendezvous_persistence::testing::Backend;
use rendezvous_ports::TenantScope;
use rendezvous_ports::{PurgeCounts, Quarantined, ResumeRecord, Store, StoreTx, StoredWait};

use crate::calls::call_of;
use crate::support::*;

/// Cancels `w` at `at(ms)` (version 2), with its resume (resume id = its number) if asked.
async fn decide(store: &SqlStore, w: &StoredWait, ms: i64, resume: bool) -> ResumeRecord {
    let mut d = w.clone();
    d.state.cancel(None, at(ms)).unwrap();
    d.version = 2;
    d.updated_at = at(ms);
    let r = ResumeRecord::of(&d.state, resume_id(d.state.key.id.as_uuid().as_u128())).unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.update_wait(&d, 1).await.unwrap());
    if resume {
        assert!(tx.insert_resume(&r).await.unwrap());
    }
    tx.commit().await.unwrap();
    r
}

/// Inserts `w` with an inbox row and its API call.
async fn insert_with_call(store: &SqlStore, w: &StoredWait) {
    let mut tx = store.begin().await.unwrap();
    tx.insert_wait(w).await.unwrap();
    tx.record_processed(
        w.state.key.id,
        &EventKey::parse("k1").unwrap(),
        &SourceName::api(),
        T0,
    )
    .await
    .unwrap();
    tx.insert_api_call(&call_of(w), T0).await.unwrap();
    tx.commit().await.unwrap();
}

pub(crate) async fn finished_rows_are_purged_and_nothing_else(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let ws: Vec<StoredWait> = (1..=5).map(|n| wait(n, &format!("c{n}"), T0)).collect();
    for w in &ws {
        insert_with_call(&store, w).await;
    }
    let id = |n: usize| ws[n - 1].state.key.id;
    // 1: decided long ago, resume acknowledged, call done: purged.
    let r1 = decide(&store, &ws[0], 1, true).await;
    store.finish_api_call(id(1), at(1)).await.unwrap();
    store.ack_resumes(&[r1.resume_id], at(2)).await.unwrap();
    // 2: decided long ago, resume not acknowledged: kept.
    let r2 = decide(&store, &ws[1], 1, true).await;
    store.finish_api_call(id(2), at(1)).await.unwrap();
    // 3: open: kept.
    store.finish_api_call(id(3), at(1)).await.unwrap();
    // 4: decided long ago without a resume, its call still pending: kept.
    decide(&store, &ws[3], 1, false).await;
    // 5: decided after the cut-off: kept.
    let r5 = decide(&store, &ws[4], 500, true).await;
    store
        .fail_api_call(id(5), "gave up", at(500))
        .await
        .unwrap();
    store.ack_resumes(&[r5.resume_id], at(501)).await.unwrap();

    let tenant = TenantId::default_tenant();
    let c = CorrelationId::parse("early").unwrap();
    let mut tx = store.begin().await.unwrap();
    for (key, expires) in [("applied", 1000), ("expired", 1), ("pending", 1_000_000)] {
        let mut e = event(key);
        e.received_at = at(0);
        tx.buffer_event(&tenant, &c, &e, at(expires)).await.unwrap();
    }
    let applied = tx.pending_buffered(&tenant, &c, at(0)).await.unwrap();
    tx.mark_buffered_applied(&[applied[0].id], id(1), at(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.expire_buffered(at(2)).await.unwrap(), 1);
    let recent = Quarantined::new("kafka:t/0/1", "x", "recent", at(600));
    store.quarantine(&recent).await.unwrap();

    let counts = store.purge(at(100), 1000).await.unwrap();
    assert_eq!(
        counts,
        PurgeCounts {
            waits: 1,
            processed_events: 1,
            resumes: 1,
            api_calls: 1,
            early_events: 2,
            quarantined: 1,
        }
    );
    assert!(!counts.full(1000));
    assert_eq!(store.get_wait(id(1)).await.unwrap(), None);
    for n in 2..=5 {
        assert!(
            store.get_wait(id(n)).await.unwrap().is_some(),
            "wait {n} is kept"
        );
    }
    assert_eq!(store.quarantined(10).await.unwrap()[0].event, recent);
    assert_eq!(store.quarantined(10).await.unwrap().len(), 1);
    let mut tx = store.begin().await.unwrap();
    let pending = tx.pending_buffered(&tenant, &c, at(3)).await.unwrap();
    assert_eq!(pending.len(), 1, "the pending early event is kept");
    drop(tx);
    let claimed = store
        .claim_resumes(
            &owner("a"),
            &TenantScope::All,
            at(200),
            std::time::Duration::from_secs(1),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        claimed.len(),
        1,
        "the unacknowledged resume is still delivered"
    );
    assert_eq!(claimed[0].resume_id, r2.resume_id);
    assert_eq!(
        store.purge(at(100), 1000).await.unwrap(),
        PurgeCounts::default()
    );

    // Once acknowledged, and once the call settles, they go too.
    store.ack_resumes(&[r2.resume_id], at(300)).await.unwrap();
    store
        .fail_api_call(id(4), "gave up", at(300))
        .await
        .unwrap();
    let counts = store.purge(at(100), 1000).await.unwrap();
    assert_eq!((counts.waits, counts.resumes, counts.api_calls), (2, 1, 2));
    database.close().await;
}

pub(crate) async fn purging_goes_in_bounded_rounds(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    for n in 1..=3 {
        let w = wait(n, &format!("c{n}"), T0);
        insert(&store, &w).await;
        decide(&store, &w, n as i64, false).await;
        store
            .quarantine(&Quarantined::new(format!("q{n}"), "", "r", at(n as i64)))
            .await
            .unwrap();
    }
    let first = store.purge(at(100), 2).await.unwrap();
    assert_eq!((first.waits, first.quarantined), (2, 2));
    assert!(first.full(2), "a full round may have left more");
    assert_eq!(
        store
            .get_wait(wait(1, "c1", T0).state.key.id)
            .await
            .unwrap(),
        None,
        "oldest decisions first"
    );
    let second = store.purge(at(100), 2).await.unwrap();
    assert_eq!((second.waits, second.quarantined), (1, 1));
    assert!(!second.full(2));
    assert_eq!(second.total(), 2);
    database.close().await;
}
