//! Rows that cannot be read back (written straight into the database: JSON nested deeper than
//! the decoder reads, or not JSON at all) never stop anything else: the sweep, the listing,
//! lookups, the resume feed, registrations (the early-event buffer), the call outbox and the
//! topic list skip and mark them, and go on with the others.

use std::time::Duration;

use rendezvous_domain::{CorrelationId, Outcome, TenantId, WaitStatus};
use rendezvous_persistence::testing::Backend;
use rendezvous_ports::TenantScope;
use rendezvous_ports::{ResumeRecord, Store, StoreError, StoreTx, TopicFields, WaitQuery};

use crate::calls::call_of;
use crate::support::*;

fn all() -> WaitQuery {
    WaitQuery {
        limit: 100,
        ..WaitQuery::default()
    }
}

/// A wait whose progress cannot be read is decided `failed` by the sweep that meets it (with
/// a `failed` resume for its engine), while the other due wait times out as usual; lookups
/// and the listing see it as marked.
pub(crate) async fn an_unreadable_wait_stops_no_sweep(backend: Backend) {
    let (db, database, store) = open(backend).await;
    let (bad, good) = (wait(1, "bad", T0), wait(2, "good", T0));
    insert(&store, &bad).await;
    insert(&store, &good).await;
    sql(
        &db,
        &format!(
            "UPDATE waits SET progress = '{}' WHERE correlation_id = 'bad'",
            deep_json(200)
        ),
    )
    .await;

    let mut tx = store.begin().await.unwrap();
    let due = tx.claim_due_waits(at(61_000), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|w| w.state.key.id).collect::<Vec<_>>(),
        [good.state.key.id],
        "the readable due wait is claimed, the unreadable one is marked and left out"
    );
    tx.commit().await.unwrap();

    let marked = store.get_wait(bad.state.key.id).await.unwrap().unwrap();
    assert_eq!(marked.state.status(), WaitStatus::Failed);
    assert_eq!(marked.version, 2);
    let reason = marked
        .state
        .resolution
        .as_ref()
        .unwrap()
        .reason
        .clone()
        .unwrap();
    assert!(
        reason.starts_with("stored wait could not be read"),
        "{reason}"
    );
    assert_eq!(marked.state.spec, bad.state.spec, "a readable spec is kept");

    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.claim_due_waits(at(61_000), 10).await.unwrap().len() == 1,
        "the marked wait is never claimed again (only the good one, still open here)"
    );
    drop(tx);

    let resumes = store
        .claim_resumes(
            &owner("a"),
            &TenantScope::All,
            at(62_000),
            Duration::from_secs(30),
            10,
        )
        .await
        .unwrap();
    assert_eq!(resumes.len(), 1, "the engine hears of the failed wait");
    assert_eq!(resumes[0].wait_id, bad.state.key.id);
    assert_eq!(resumes[0].outcome, Outcome::Failed);

    let listed = store.list_waits(&all()).await.unwrap();
    assert_eq!(listed.items.len(), 2);
    let found = store
        .find_wait(
            &TenantId::default_tenant(),
            &CorrelationId::parse("bad").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.state.status(), WaitStatus::Failed);
    let quarantined = store.quarantined(10).await.unwrap();
    assert_eq!(quarantined.len(), 1, "the raw row is kept, once");
    assert_eq!(
        quarantined[0].event.origin,
        format!("wait:{}", bad.state.key.id)
    );
    assert!(quarantined[0].event.payload.contains(&deep_json(200)));
    database.close().await;
}

/// A wait whose spec is not JSON is listed and found as failed (with a spec without sources),
/// and the listing of the others is unaffected.
pub(crate) async fn an_unreadable_wait_stops_no_listing_or_lookup(backend: Backend) {
    let (db, database, store) = open(backend).await;
    for (n, c) in [(1, "a"), (2, "bad"), (3, "c")] {
        insert(&store, &wait(n, c, at(n as i64))).await;
    }
    sql(
        &db,
        "UPDATE waits SET spec = 'not json' WHERE correlation_id = 'bad'",
    )
    .await;
    let listed = store.list_waits(&all()).await.unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|w| (w.state.key.correlation_id.to_string(), w.state.status()))
            .collect::<Vec<_>>(),
        [
            ("c".to_owned(), WaitStatus::WaitingForEvents),
            ("bad".to_owned(), WaitStatus::Failed),
            ("a".to_owned(), WaitStatus::WaitingForEvents),
        ]
    );
    let bad = store
        .find_wait(
            &TenantId::default_tenant(),
            &CorrelationId::parse("bad").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(bad.state.spec.sources.is_empty());
    assert_eq!(bad.state.deadline, wait(2, "bad", at(2)).state.deadline);

    // Not even its identity: closed, reported as an error, left out of listings.
    sql(
        &db,
        "UPDATE waits SET tenant_id = '', progress = '[' WHERE correlation_id = 'a'",
    )
    .await;
    let id = wait(1, "a", T0).state.key.id;
    match store.get_wait(id).await {
        Err(StoreError::Other(message)) => {
            assert!(message.contains("could not be read"), "{message}")
        }
        other => panic!("expected an error naming the unreadable row, got {other:?}"),
    }
    let listed = store.list_waits(&all()).await.unwrap();
    assert_eq!(listed.items.len(), 2, "the others are still listed");
    let mut tx = store.begin().await.unwrap();
    let due = tx.claim_due_waits(at(100_000), 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|w| w.state.key.correlation_id.to_string())
            .collect::<Vec<_>>(),
        ["c"],
        "the closed row is not due any more"
    );
    drop(tx);
    database.close().await;
}

/// A resume that cannot be read is replaced by a `failed` one; the others are delivered.
pub(crate) async fn an_unreadable_resume_stops_no_feed(backend: Backend) {
    let (db, database, store) = open(backend).await;
    let mut expected = Vec::new();
    for (n, c) in [(1, "r1"), (2, "bad"), (3, "r3")] {
        let w = wait(n, c, T0);
        insert(&store, &w).await;
        let mut tx = store.begin().await.unwrap();
        tx.insert_resume(&resume_of(&w, n)).await.unwrap();
        tx.commit().await.unwrap();
        expected.push(resume_of(&w, n));
    }
    sql(
        &db,
        &format!(
            "UPDATE resume_outbox SET resume = '{}' WHERE wait_id IN \
             (SELECT id FROM waits WHERE correlation_id = 'bad')",
            deep_json(300)
        ),
    )
    .await;
    let claimed = store
        .claim_resumes(
            &owner("a"),
            &TenantScope::All,
            at(100),
            Duration::from_secs(30),
            10,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert_eq!(claimed[0].events, expected[0].events);
    assert_eq!(claimed[0].outcome, Outcome::Cancelled);
    assert_eq!(
        claimed[1].resume_id, expected[1].resume_id,
        "same resume id"
    );
    assert_eq!(claimed[1].outcome, Outcome::Failed);
    assert!(
        claimed[1]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("stored resume could not be read")
    );
    assert_eq!(claimed[2].outcome, Outcome::Cancelled);
    // Replaced for good: delivered again after the lease as the replacement.
    let again = store
        .claim_resumes(
            &owner("b"),
            &TenantScope::All,
            at(40_000),
            Duration::from_secs(30),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        again[1],
        ResumeRecord {
            attempts: 2,
            ..claimed[1].clone()
        }
    );
    assert_eq!(store.quarantined(10).await.unwrap().len(), 1);
    database.close().await;
}

/// An early event that cannot be read does not stop the registration for its correlation id:
/// it is quarantined and expired; the readable one is applied.
pub(crate) async fn an_unreadable_early_event_stops_no_registration(backend: Backend) {
    let (db, database, store) = open(backend).await;
    let tenant = TenantId::default_tenant();
    let c = CorrelationId::parse("early").unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.buffer_event(&tenant, &c, &event("e1"), at(1000))
        .await
        .unwrap();
    tx.buffer_event(&tenant, &c, &event("e2"), at(1000))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sql(
        &db,
        &format!(
            "UPDATE early_events SET event = '{}' WHERE event_key = 'e1'",
            deep_json(150)
        ),
    )
    .await;
    let mut tx = store.begin().await.unwrap();
    let pending = tx.pending_buffered(&tenant, &c, at(5)).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event, event("e2"));
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.pending_buffered(&tenant, &c, at(5)).await.unwrap().len(),
        1
    );
    drop(tx);
    let quarantined = store.quarantined(10).await.unwrap();
    assert_eq!(quarantined.len(), 1, "set aside once");
    assert_eq!(quarantined[0].event.event_key.as_deref(), Some("e1"));
    database.close().await;
}

/// An API call that cannot be read is failed and set aside; the others are leased; a topic
/// row that cannot be read is removed, the others listed.
pub(crate) async fn unreadable_calls_and_topics_stop_nothing_else(backend: Backend) {
    let (db, database, store) = open(backend).await;
    let (bad, good) = (wait(1, "bad", T0), wait(2, "good", T0));
    for w in [&bad, &good] {
        let mut tx = store.begin().await.unwrap();
        tx.insert_wait(w).await.unwrap();
        tx.insert_api_call(&call_of(w), T0).await.unwrap();
        tx.commit().await.unwrap();
    }
    sql(
        &db,
        "UPDATE api_calls SET request = '{' WHERE wait_id IN \
         (SELECT id FROM waits WHERE correlation_id = 'bad')",
    )
    .await;
    let lease = Duration::from_secs(30);
    let claimed = store
        .claim_api_calls(&owner("a"), at(10), lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].wait_id, good.state.key.id);
    let later = store
        .claim_api_calls(&owner("a"), at(60_000), lease, 10)
        .await
        .unwrap();
    assert_eq!(
        later.len(),
        1,
        "the unreadable call was failed, never leased again"
    );

    let topic = |name: &str| TopicFields {
        topic: name.into(),
        correlation_field: rendezvous_domain::FieldPath::parse("c").unwrap(),
        execution_field: rendezvous_domain::FieldPath::parse("e").unwrap(),
    };
    let mut tx = store.begin().await.unwrap();
    tx.remember_topic(&topic("t1"), T0).await.unwrap();
    tx.remember_topic(&topic("t2"), T0).await.unwrap();
    tx.commit().await.unwrap();
    sql(
        &db,
        "UPDATE kafka_topics SET correlation_field = '' WHERE topic = 't1'",
    )
    .await;
    assert_eq!(store.kafka_topics().await.unwrap(), [topic("t2")]);
    assert_eq!(store.kafka_topics().await.unwrap(), [topic("t2")]);
    assert_eq!(
        store.quarantined(10).await.unwrap().len(),
        2,
        "each set aside once"
    );
    database.close().await;
}
