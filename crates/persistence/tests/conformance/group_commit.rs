//! What PostgreSQL batches across concurrent requests (group commit) and SQLite writes in a
//! transaction of the `StoreTx` steps: changes, fresh registrations, lookups. These tests are
//! the contract between the two.

use std::time::Duration;

use rendezvous_domain::{CorrelationId, EventKey, SourceName, TenantId};
use rendezvous_persistence::testing::Backend;
use rendezvous_ports::TenantScope;
use rendezvous_ports::{
    ChangeOutcome, FreshWait, ResumeRecord, Store, StoreTx, StoredWait, WaitChange,
};

use crate::calls::call_of;
use crate::support::*;

/// `apply_change` (one statement on PostgreSQL, a transaction on SQLite): compare-and-set,
/// the inbox row, the resume, and nothing at all when it refuses.
pub(crate) async fn changes_are_compare_and_set_with_inbox_and_resume(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let w = wait(1, "c1", T0);
    insert(&store, &w).await;
    let e1 = EventKey::parse("e1").unwrap();
    let api = SourceName::api();
    let mut accepted = w.clone();
    accepted.state.apply(event("e1"), at(1));
    accepted.version = 2;
    accepted.updated_at = at(1);
    let change = |wait, expected_version, processed, resume| WaitChange {
        wait,
        expected_version,
        processed,
        resume,
    };
    assert_eq!(
        store
            .apply_change(change(&accepted, 1, Some((&e1, &api)), None))
            .await
            .unwrap(),
        ChangeOutcome::Applied
    );
    assert_eq!(
        store.get_wait(w.state.key.id).await.unwrap().as_ref(),
        Some(&accepted)
    );
    // A writer that loaded version 1 loses and writes nothing.
    let mut stale = w.clone();
    stale.version = 2;
    assert_eq!(
        store
            .apply_change(change(&stale, 1, None, None))
            .await
            .unwrap(),
        ChangeOutcome::VersionMoved
    );
    // The inbox already has e1: refused, nothing written (the version stays 2).
    let mut replay = accepted.clone();
    replay.version = 3;
    replay.state.ignored_total += 1;
    assert_eq!(
        store
            .apply_change(change(&replay, 2, Some((&e1, &api)), None))
            .await
            .unwrap(),
        ChangeOutcome::AlreadyProcessed
    );
    assert_eq!(
        store.get_wait(w.state.key.id).await.unwrap().as_ref(),
        Some(&accepted)
    );
    // The deciding change writes its resume (once), which can then be claimed.
    let mut decided = accepted.clone();
    decided.state.cancel(None, at(2)).unwrap();
    decided.version = 3;
    let resume = ResumeRecord::of(&decided.state, resume_id(77)).unwrap();
    assert_eq!(
        store
            .apply_change(change(&decided, 2, None, Some(&resume)))
            .await
            .unwrap(),
        ChangeOutcome::Applied
    );
    let claimed = store
        .claim_resumes(
            &owner("a"),
            &TenantScope::All,
            at(3),
            Duration::from_secs(30),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.resume_id).collect::<Vec<_>>(),
        [resume.resume_id]
    );
    assert_eq!(
        store.get_wait(w.state.key.id).await.unwrap().as_ref(),
        Some(&decided)
    );
    database.close().await;
}

/// `insert_fresh_wait` (a shared transaction on PostgreSQL, a transaction of its own on
/// SQLite) writes the wait with its call and resume only when nothing came before it.
pub(crate) async fn fresh_waits_are_inserted_only_when_nothing_came_before(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let tenant = TenantId::default_tenant();
    let fresh = |wait, call, resume| FreshWait { wait, call, resume };

    let w1 = wait(1, "c1", T0);
    let call = call_of(&w1);
    assert!(
        store
            .insert_fresh_wait(fresh(&w1, Some(&call), None))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_wait(w1.state.key.id).await.unwrap(),
        Some(w1.clone())
    );
    let calls = store
        .claim_api_calls(&owner("d"), at(1), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(
        calls.iter().map(|c| c.wait_id).collect::<Vec<_>>(),
        [w1.state.key.id]
    );
    assert_eq!(calls[0].request, call.request);

    // The same idempotency identity under another correlation id: not fresh, nothing written.
    let mut again = wait(2, "c2", T0);
    again.state.key.execution_id = w1.state.key.execution_id.clone();
    assert!(
        !store
            .insert_fresh_wait(fresh(&again, None, None))
            .await
            .unwrap()
    );
    assert_eq!(store.get_wait(again.state.key.id).await.unwrap(), None);
    // The correlation id taken by another execution: not fresh.
    let taken = wait(3, "c1", T0);
    assert!(
        !store
            .insert_fresh_wait(fresh(&taken, None, None))
            .await
            .unwrap()
    );
    assert_eq!(store.get_wait(taken.state.key.id).await.unwrap(), None);

    // An early event pending for the correlation id: not fresh until it has expired.
    let c4 = CorrelationId::parse("c4").unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.lock_correlation(&tenant, &c4).await.unwrap();
    assert!(
        tx.buffer_event(&tenant, &c4, &event("e1"), at(100))
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let early = wait(4, "c4", at(50));
    assert!(
        !store
            .insert_fresh_wait(fresh(&early, None, None))
            .await
            .unwrap()
    );
    assert_eq!(store.get_wait(early.state.key.id).await.unwrap(), None);
    let late = wait(5, "c4", at(100));
    assert!(
        store
            .insert_fresh_wait(fresh(&late, None, None))
            .await
            .unwrap()
    );

    // Decided at registration: the resume is written with the wait and can be claimed.
    let mut decided = wait(6, "c6", T0);
    decided.state.cancel(None, T0).unwrap();
    let resume = ResumeRecord::of(&decided.state, resume_id(66)).unwrap();
    assert!(
        store
            .insert_fresh_wait(fresh(&decided, None, Some(&resume)))
            .await
            .unwrap()
    );
    let claimed = store
        .claim_resumes(
            &owner("a"),
            &TenantScope::All,
            at(1),
            Duration::from_secs(30),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.resume_id).collect::<Vec<_>>(),
        [resume.resume_id]
    );
    database.close().await;
}

/// Many concurrent registrations, lookups and changes (batched into shared statements on
/// PostgreSQL): each gets its own answer; two changes of one wait from the same version never
/// both apply, whether or not they land in one batch.
pub(crate) async fn concurrent_requests_each_get_their_own_outcome(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let tenant = TenantId::default_tenant();
    let n = 60u128;
    let waits: Vec<StoredWait> = (1..=n).map(|i| wait(i, &format!("c{i}"), T0)).collect();
    let registered = futures_util::future::join_all(waits.iter().map(|w| {
        let store = store.clone();
        let w = w.clone();
        async move {
            store
                .insert_fresh_wait(FreshWait {
                    wait: &w,
                    call: None,
                    resume: None,
                })
                .await
        }
    }))
    .await;
    assert!(registered.into_iter().all(|r| r.unwrap()));

    let lookups = futures_util::future::join_all((1..=n + 10).map(|i| {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            let found = store
                .find_wait(&tenant, &CorrelationId::parse(format!("c{i}")).unwrap())
                .await
                .unwrap();
            (i, found)
        }
    }))
    .await;
    for (i, found) in lookups {
        match found {
            Some(found) => assert_eq!(found, waits[i as usize - 1]),
            None => assert!(i > n, "wait c{i} not found"),
        }
    }

    // Two different events for every wait, both computed from version 1, all at once.
    let api = SourceName::api();
    let changes: Vec<(StoredWait, EventKey)> = waits
        .iter()
        .flat_map(|w| {
            ["a", "b"].map(|e| {
                let mut changed = w.clone();
                let mut ev = event(e);
                ev.execution_id = Some(w.state.key.execution_id.clone());
                changed.state.apply(ev, at(1));
                changed.version = 2;
                changed.updated_at = at(1);
                (changed, EventKey::parse(e).unwrap())
            })
        })
        .collect();
    let outcomes = futures_util::future::join_all(changes.iter().map(|(changed, key)| {
        let store = store.clone();
        let api = api.clone();
        async move {
            let change = WaitChange {
                wait: changed,
                expected_version: 1,
                processed: Some((key, &api)),
                resume: None,
            };
            store.apply_change(change).await.unwrap()
        }
    }))
    .await;
    for (pair, w) in outcomes.chunks(2).zip(&waits) {
        let applied = pair
            .iter()
            .filter(|o| **o == ChangeOutcome::Applied)
            .count();
        assert_eq!(applied, 1, "wait {}: {pair:?}", w.state.key.id);
        assert!(pair.contains(&ChangeOutcome::VersionMoved), "{pair:?}");
        let stored = store.get_wait(w.state.key.id).await.unwrap().unwrap();
        assert_eq!(stored.version, 2);
        assert_eq!(stored.state.received.len(), 1);
    }

    // All at once again, from version 2: odd waits get the event they already took again
    // (refused by the inbox after the update was written: that update must be undone, and
    // only it), even waits a new one. Duplicates and fresh events share batches.
    let stored: Vec<StoredWait> = futures_util::future::join_all(
        waits
            .iter()
            .map(|w| async { store.get_wait(w.state.key.id).await.unwrap().unwrap() }),
    )
    .await;
    let second: Vec<(StoredWait, EventKey, bool)> = stored
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let duplicate = i % 2 == 1;
            let key = if duplicate {
                w.state.received[0].key.clone()
            } else {
                EventKey::parse("c").unwrap()
            };
            let mut changed = w.clone();
            changed.state.ignored_total += 1;
            changed.version = 3;
            changed.updated_at = at(2);
            (changed, key, duplicate)
        })
        .collect();
    let outcomes = futures_util::future::join_all(second.iter().map(|(changed, key, _)| {
        let store = store.clone();
        let api = api.clone();
        async move {
            let change = WaitChange {
                wait: changed,
                expected_version: 2,
                processed: Some((key, &api)),
                resume: None,
            };
            store.apply_change(change).await.unwrap()
        }
    }))
    .await;
    for ((changed, _, duplicate), outcome) in second.iter().zip(outcomes) {
        let stored = store.get_wait(changed.state.key.id).await.unwrap().unwrap();
        if *duplicate {
            assert_eq!(outcome, ChangeOutcome::AlreadyProcessed);
            assert_eq!(stored.version, 2, "a refused change left its update behind");
        } else {
            assert_eq!(outcome, ChangeOutcome::Applied);
            assert_eq!(&stored, changed);
        }
    }
    database.close().await;
}
