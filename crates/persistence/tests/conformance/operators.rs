//! What operators ask of the store: the pending early events of their tenants, a resume sent
//! again (acknowledged or not, with the same resume id), and a quarantined event replayed.

use std::collections::BTreeSet;
use std::time::Duration;

use rendezvous_domain::{CorrelationId, TenantId, WaitId};
use rendezvous_persistence::testing::Backend;
use rendezvous_ports::{Quarantined, Redelivered, Store, StoreTx, TenantScope};

use crate::support::*;

pub(crate) async fn buffered_events_are_listed_by_tenant_newest_first(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let tenant = TenantId::default_tenant();
    let other = TenantId::parse("other").unwrap();
    for (t, correlation, key, received) in [
        (&tenant, "c1", "e1", 100),
        (&other, "c2", "e2", 200),
        (&tenant, "c3", "e3", 300),
    ] {
        let c = CorrelationId::parse(correlation).unwrap();
        let mut e = event(key);
        e.received_at = at(received);
        let mut tx = store.begin().await.unwrap();
        tx.lock_correlation(t, &c).await.unwrap();
        assert!(
            tx.buffer_event(t, &c, &e, at(received + 1000))
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
    }
    let all = store.list_buffered(&TenantScope::All, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|b| b.event_key.as_str()).collect::<Vec<_>>(),
        ["e3", "e2", "e1"],
        "newest first"
    );
    assert_eq!(all[0].correlation_id, "c3");
    assert_eq!(all[0].channel, "source api");
    assert_eq!((all[0].received_at, all[0].expires_at), (at(300), at(1300)));
    let mine = store
        .list_buffered(&TenantScope::Only(BTreeSet::from([other.clone()])), 10)
        .await
        .unwrap();
    assert_eq!(
        mine.iter()
            .map(|b| (b.tenant.as_str(), b.event_key.as_str()))
            .collect::<Vec<_>>(),
        [("other", "e2")]
    );
    assert_eq!(
        store
            .list_buffered(&TenantScope::All, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // Applied events are no longer listed.
    let mut tx = store.begin().await.unwrap();
    let pending = tx
        .pending_buffered(&tenant, &CorrelationId::parse("c1").unwrap(), at(150))
        .await
        .unwrap();
    let ids: Vec<i64> = pending.iter().map(|b| b.id).collect();
    tx.mark_buffered_applied(&ids, WaitId::from_uuid(uuid::Uuid::from_u128(7)), at(150))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let left = store.list_buffered(&TenantScope::All, 10).await.unwrap();
    assert_eq!(
        left.iter()
            .map(|b| b.event_key.as_str())
            .collect::<Vec<_>>(),
        ["e3", "e2"]
    );
    database.close().await;
}

pub(crate) async fn a_resume_is_redelivered_with_its_id(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let w = wait(1, "redeliver", T0);
    insert(&store, &w).await;
    assert_eq!(store.redeliver_resume(w.state.key.id).await.unwrap(), None);
    let r = resume_of(&w, 1);
    let mut tx = store.begin().await.unwrap();
    tx.insert_resume(&r).await.unwrap();
    tx.commit().await.unwrap();
    let lease = Duration::from_secs(30);
    let claimed = store
        .claim_resumes(&owner("a"), &TenantScope::All, at(100), lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store.ack_resumes(&[r.resume_id], at(101)).await.unwrap();
    assert!(
        store
            .claim_resumes(&owner("b"), &TenantScope::All, at(102), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "acknowledged: not sent again"
    );
    assert_eq!(
        store.redeliver_resume(w.state.key.id).await.unwrap(),
        Some(Redelivered {
            resume_id: r.resume_id,
            was_acked: true
        })
    );
    let again = store
        .claim_resumes(&owner("b"), &TenantScope::All, at(103), lease, 10)
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|x| x.resume_id).collect::<Vec<_>>(),
        [r.resume_id],
        "the same resume id goes out again"
    );
    // Leased and not acknowledged: the lease is freed at once.
    assert_eq!(
        store.redeliver_resume(w.state.key.id).await.unwrap(),
        Some(Redelivered {
            resume_id: r.resume_id,
            was_acked: false
        })
    );
    assert_eq!(
        store
            .claim_resumes(&owner("c"), &TenantScope::All, at(104), lease, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    database.close().await;
}

/// A replay that was taken removes the row; one set aside again keeps it with the new reason
/// and counts the replay; an unknown id is reported as such.
pub(crate) async fn a_replay_settles_its_quarantined_row(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    for n in 1..=2 {
        let mut q = Quarantined::new(format!("kafka:t/0/{n}"), "{}", "no correlation id", at(n));
        q.headers = Some([("h".to_owned(), "v".to_owned())].into());
        store.quarantine(&q).await.unwrap();
    }
    let listed = store.quarantined(10).await.unwrap();
    let (second, first) = (listed[0].id, listed[1].id);
    assert_eq!(listed[1].event.origin, "kafka:t/0/1");
    assert_eq!(listed[1].replays, 0);

    assert!(
        store
            .settle_replay(first, Some("still no correlation id"))
            .await
            .unwrap()
    );
    assert!(store.settle_replay(first, Some("and again")).await.unwrap());
    let row = store.quarantined_event(first).await.unwrap().unwrap();
    assert_eq!((row.replays, row.event.reason.as_str()), (2, "and again"));
    assert_eq!(row.event.at, at(1), "quarantined when it first was");
    assert_eq!(
        row.event.headers,
        Some([("h".to_owned(), "v".to_owned())].into())
    );

    assert!(store.settle_replay(second, None).await.unwrap());
    assert_eq!(store.quarantined_event(second).await.unwrap(), None);
    assert!(
        !store.settle_replay(second, None).await.unwrap(),
        "settled already"
    );
    assert_eq!(store.quarantined(10).await.unwrap().len(), 1);
    database.close().await;
}
