//! Waits: round trip and compare-and-set, uniqueness rules, the sweeper's claim, the listing.

use rendezvous_domain::{
    CorrelationId, EventKey, ExecutionId, NodeId, SourceName, TenantId, WaitId, WaitStatus,
};
use rendezvous_persistence::testing::Backend;
use rendezvous_ports::{Store, StoreError, StoreTx, WaitQuery};

use crate::support::*;

pub(crate) async fn waits_round_trip_and_update_by_compare_and_set(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let w = wait(1, "c1", T0);
    insert(&store, &w).await;
    assert_eq!(
        store.get_wait(w.state.key.id).await.unwrap(),
        Some(w.clone())
    );
    let found = store
        .find_wait(
            &TenantId::default_tenant(),
            &CorrelationId::parse("c1").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(found, Some(w.clone()));

    let mut changed = w.clone();
    changed.state.apply(event("e1"), at(1));
    changed.version = 2;
    let mut tx = store.begin().await.unwrap();
    assert!(tx.update_wait(&changed, 1).await.unwrap());
    tx.commit().await.unwrap();
    // A writer that loaded version 1 loses.
    let mut stale = w.clone();
    stale.version = 2;
    let mut tx = store.begin().await.unwrap();
    assert!(!tx.update_wait(&stale, 1).await.unwrap());
    drop(tx);
    let stored = store.get_wait(w.state.key.id).await.unwrap().unwrap();
    assert_eq!(stored, changed);
    assert_eq!(stored.state.status(), WaitStatus::WaitingForKafka);
    database.close().await;
}

pub(crate) async fn uniqueness_rules_are_conflicts(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    insert(&store, &wait(1, "same", T0)).await;
    let mut tx = store.begin().await.unwrap();
    let err = tx.insert_wait(&wait(2, "same", T0)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    drop(tx);
    let mut twin = wait(3, "other", T0);
    twin.state.key.execution_id = ExecutionId::parse("exec-1").unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(
        matches!(
            tx.insert_wait(&twin).await.unwrap_err(),
            StoreError::Conflict(_)
        ),
        "same execution, node and key"
    );
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    let found = tx
        .find_by_idempotency(
            &TenantId::default_tenant(),
            &ExecutionId::parse("exec-1").unwrap(),
            &NodeId::parse("node").unwrap(),
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        found.unwrap().state.key.id,
        WaitId::from_uuid(uuid::Uuid::from_u128(1))
    );
    let id = WaitId::from_uuid(uuid::Uuid::from_u128(1));
    assert!(
        tx.record_processed(id, &EventKey::parse("k").unwrap(), &SourceName::api(), T0)
            .await
            .unwrap()
    );
    assert!(
        !tx.record_processed(id, &EventKey::parse("k").unwrap(), &SourceName::api(), T0)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    database.close().await;
}

pub(crate) async fn due_waits_are_claimed(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    for n in 1..=3 {
        insert(&store, &wait(n, &format!("d{n}"), at(n as i64 * 1000))).await;
    }
    let mut decided = wait(4, "d4", T0);
    decided.state.cancel(None, T0).unwrap();
    insert(&store, &decided).await;
    // Deadlines are created + 60 s.
    let mut tx = store.begin().await.unwrap();
    let due = tx.claim_due_waits(at(62_000), 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|w| w.state.key.correlation_id.as_str())
            .collect::<Vec<_>>(),
        ["d1", "d2"]
    );
    if backend == Backend::Postgres {
        // Another instance's sweeper skips what this one holds.
        let mut other = store.begin().await.unwrap();
        let theirs = other.claim_due_waits(at(62_000), 10).await.unwrap();
        assert!(theirs.is_empty(), "locked rows are skipped: {theirs:?}");
        drop(other);
    }
    tx.commit().await.unwrap();
    database.close().await;
}

pub(crate) async fn waits_are_listed_newest_first_in_pages(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    for n in 1..=5 {
        insert(&store, &wait(n, &format!("l{n}"), at(n as i64))).await;
    }
    let mut query = WaitQuery {
        limit: 2,
        ..WaitQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.list_waits(&query).await.unwrap();
        seen.extend(
            page.items
                .iter()
                .map(|w| w.state.key.correlation_id.to_string()),
        );
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["l5", "l4", "l3", "l2", "l1"]);
    let filtered = store
        .list_waits(&WaitQuery {
            execution_id: Some(ExecutionId::parse("exec-3").unwrap()),
            statuses: vec![WaitStatus::WaitingForEvents],
            created_before: Some(at(4)),
            limit: 10,
            ..WaitQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(filtered.items.len(), 1);
    assert!(filtered.next.is_none());
    database.close().await;
}
