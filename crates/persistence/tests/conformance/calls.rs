//! The outbox of outbound API calls: leased once at a time, put back for another attempt, and
//! settled (done or failed) for good.

use std::time::Duration;

use rendezvous_persistence::testing::Backend;
use rendezvous_ports::{ApiCallRecord, Store, StoreTx, StoredWait};

use crate::support::*;

/// The call a wait's spec renders.
pub(crate) fn call_of(w: &StoredWait) -> ApiCallRecord {
    let k = &w.state.key;
    ApiCallRecord {
        wait_id: k.id,
        tenant: k.tenant.clone(),
        correlation_id: k.correlation_id.clone(),
        execution_id: k.execution_id.clone(),
        request: w
            .state
            .spec
            .api_call()
            .unwrap()
            .render(
                &Default::default(),
                k.id,
                &k.correlation_id,
                &k.execution_id,
            )
            .unwrap(),
        attempts: 0,
    }
}

pub(crate) async fn api_calls_are_leased_retried_and_settled(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let (w1, w2) = (wait(1, "c1", T0), wait(2, "c2", T0));
    for (w, due) in [(&w1, T0), (&w2, at(5))] {
        let mut tx = store.begin().await.unwrap();
        tx.insert_wait(w).await.unwrap();
        tx.insert_api_call(&call_of(w), due).await.unwrap();
        tx.commit().await.unwrap();
    }
    let lease = Duration::from_secs(30);
    let ids = |calls: &[ApiCallRecord]| calls.iter().map(|c| c.wait_id).collect::<Vec<_>>();

    let a = store
        .claim_api_calls(&owner("a"), at(10), lease, 1)
        .await
        .unwrap();
    assert_eq!(ids(&a), [w1.state.key.id], "the earliest due first");
    assert_eq!(
        a[0],
        ApiCallRecord {
            attempts: 1,
            ..call_of(&w1)
        }
    );
    let b = store
        .claim_api_calls(&owner("b"), at(10), lease, 10)
        .await
        .unwrap();
    assert_eq!(
        ids(&b),
        [w2.state.key.id],
        "a leased call is not handed out twice"
    );
    assert!(
        store
            .claim_api_calls(&owner("c"), at(10), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Put back for later: its lease is freed, but it is not due before its next attempt.
    store
        .retry_api_call(w1.state.key.id, at(1000), "503", at(11))
        .await
        .unwrap();
    assert!(
        store
            .claim_api_calls(&owner("c"), at(999), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "not yet due, and w2's lease still holds"
    );
    let again = store
        .claim_api_calls(&owner("c"), at(1000), lease, 10)
        .await
        .unwrap();
    assert_eq!(ids(&again), [w1.state.key.id]);
    assert_eq!(again[0].attempts, 2, "each lease counts an attempt");

    // Settled calls never come back, whatever their leases.
    store
        .finish_api_call(w1.state.key.id, at(1001))
        .await
        .unwrap();
    store
        .fail_api_call(w2.state.key.id, "400", at(1001))
        .await
        .unwrap();
    assert!(
        store
            .claim_api_calls(&owner("d"), at(1_000_000), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    database.close().await;
}
