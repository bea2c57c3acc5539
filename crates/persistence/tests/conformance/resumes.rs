//! The resume outbox: one resume per wait, leased, acknowledged, released, filtered by tenant.

use std::time::Duration;

use rendezvous_domain::TenantId;
use rendezvous_persistence::testing::Backend;
use rendezvous_ports::TenantScope;
use rendezvous_ports::{Store, StoreTx};

use crate::support::*;

pub(crate) async fn resumes_are_leased_acked_and_released(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let mut resumes = Vec::new();
    for n in 1..=3 {
        let w = wait(n, &format!("r{n}"), T0);
        insert(&store, &w).await;
        let r = resume_of(&w, n);
        let mut tx = store.begin().await.unwrap();
        assert!(tx.insert_resume(&r).await.unwrap());
        let mut again = r.clone();
        again.resume_id = resume_id(9999);
        assert!(
            !tx.insert_resume(&again).await.unwrap(),
            "one resume per wait"
        );
        tx.commit().await.unwrap();
        resumes.push(r);
    }
    let lease = Duration::from_secs(30);
    let a = store
        .claim_resumes(&owner("a"), &TenantScope::All, at(100), lease, 2)
        .await
        .unwrap();
    assert_eq!(
        a.iter().map(|r| r.resume_id).collect::<Vec<_>>(),
        [resumes[0].resume_id, resumes[1].resume_id],
        "oldest first"
    );
    assert_eq!(a[0].attempts, 1);
    assert_eq!(a[0].events, resumes[0].events);
    let b = store
        .claim_resumes(&owner("b"), &TenantScope::All, at(100), lease, 10)
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "leased resumes are not handed out twice");
    assert!(
        store
            .claim_resumes(&owner("b"), &TenantScope::All, at(100), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.ack_resumes(&[a[0].resume_id], at(101)).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .ack_resumes(&[a[0].resume_id, resume_id(5)], at(101))
            .await
            .unwrap(),
        0,
        "acks are idempotent"
    );
    // The lease runs out: the unacked one comes back, with its attempt counted.
    let later = store
        .claim_resumes(&owner("b"), &TenantScope::All, at(100 + 30_000), lease, 10)
        .await
        .unwrap();
    assert_eq!(
        later
            .iter()
            .map(|r| (r.resume_id, r.attempts))
            .collect::<Vec<_>>(),
        [(resumes[1].resume_id, 2), (resumes[2].resume_id, 2)]
    );
    // A stream that ends frees its leases at once.
    assert_eq!(store.release_resumes(&owner("b")).await.unwrap(), 2);
    let tenant = TenantId::parse("someone-else").unwrap();
    assert!(
        store
            .claim_resumes(
                &owner("c"),
                &TenantScope::one(tenant.clone()),
                at(100 + 30_001),
                lease,
                10
            )
            .await
            .unwrap()
            .is_empty(),
        "filtered by tenant"
    );
    assert_eq!(
        store
            .claim_resumes(&owner("c"), &TenantScope::All, at(100 + 30_001), lease, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    database.close().await;
}
