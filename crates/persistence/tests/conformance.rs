//! The store conformance suite: the same assertions about the store port, run on SQLite and on
//! PostgreSQL (one macro, two backends).

use std::time::Duration;

use rendezvous_domain::{
    Channel, CorrelationId, EventKey, ExecutionId, IncomingEvent, NodeId, SourceName, TenantId,
    Timestamp, WaitId, WaitKey, WaitSpec, WaitState, WaitStatus,
};
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig, SqlStore};
use rendezvous_ports::{
    ApiCallRecord, ChangeOutcome, FreshWait, ResumeRecord, Store, StoreError, StoreTx, StoredWait,
    WaitChange, WaitQuery,
};
use serde_json::json;

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0.as_millis() + ms)
}

async fn open(backend: Backend) -> (TestDatabase, Database, SqlStore) {
    let db = TestDatabase::create(backend).await.unwrap();
    let database = Database::connect(&DatabaseConfig::new(&db.url))
        .await
        .unwrap();
    let store = database.store();
    (db, database, store)
}

fn wait(n: u128, correlation: &str, created: Timestamp) -> StoredWait {
    let spec = WaitSpec::from_node_config(&json!({"type": "wait_events", "data": {
        "apiCall": {"url": "https://x.example/a"}, "kafkaEvent": {"topic": "t"}, "timeout": 60
    }}))
    .unwrap();
    let key = WaitKey {
        id: WaitId::from_uuid(uuid::Uuid::from_u128(n)),
        tenant: TenantId::default_tenant(),
        correlation_id: CorrelationId::parse(correlation).unwrap(),
        execution_id: ExecutionId::parse(format!("exec-{n}")).unwrap(),
        node_id: NodeId::parse("node").unwrap(),
    };
    StoredWait {
        state: WaitState::register(key, spec, created),
        version: 1,
        idempotency_key: String::new(),
        workflow_id: Some("wf".into()),
        updated_at: created,
    }
}

fn event(key: &str) -> IncomingEvent {
    IncomingEvent {
        key: EventKey::parse(key).unwrap(),
        channel: Channel::Source(SourceName::api()),
        execution_id: Some(ExecutionId::parse("exec-1").unwrap()),
        payload: json!({"status": 200}),
        received_at: T0,
    }
}

async fn insert(store: &SqlStore, w: &StoredWait) {
    let mut tx = store.begin().await.unwrap();
    tx.insert_wait(w).await.unwrap();
    tx.commit().await.unwrap();
}

fn resume_of(w: &StoredWait, n: u128) -> ResumeRecord {
    let mut state = w.state.clone();
    state.cancel(None, at(n as i64)).unwrap();
    ResumeRecord::of(&state, uuid::Uuid::from_u128(1000 + n)).unwrap()
}

async fn waits_round_trip_and_update_by_compare_and_set(backend: Backend) {
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

/// `apply_change` (one statement on PostgreSQL, a transaction on SQLite): compare-and-set,
/// the inbox row, the resume, and nothing at all when it refuses.
async fn changes_are_compare_and_set_with_inbox_and_resume(backend: Backend) {
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
    let resume = ResumeRecord::of(&decided.state, uuid::Uuid::from_u128(77)).unwrap();
    assert_eq!(
        store
            .apply_change(change(&decided, 2, None, Some(&resume)))
            .await
            .unwrap(),
        ChangeOutcome::Applied
    );
    let claimed = store
        .claim_resumes("a", None, at(3), Duration::from_secs(30), 10)
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

async fn uniqueness_rules_are_conflicts(backend: Backend) {
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

async fn early_events_are_buffered_applied_and_expired(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let tenant = TenantId::default_tenant();
    let c = CorrelationId::parse("early").unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.lock_correlation(&tenant, &c).await.unwrap();
    assert!(
        tx.buffer_event(&tenant, &c, &event("e1"), at(1000))
            .await
            .unwrap()
    );
    assert!(
        !tx.buffer_event(&tenant, &c, &event("e1"), at(1000))
            .await
            .unwrap(),
        "a redelivery is not buffered twice"
    );
    assert!(
        tx.buffer_event(&tenant, &c, &event("e2"), at(10))
            .await
            .unwrap()
    );
    assert!(
        tx.buffer_event(
            &tenant,
            &CorrelationId::parse("other").unwrap(),
            &event("e3"),
            at(1000)
        )
        .await
        .unwrap()
    );
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let pending = tx.pending_buffered(&tenant, &c, at(5)).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|b| b.event.key.as_str())
            .collect::<Vec<_>>(),
        ["e1", "e2"]
    );
    assert_eq!(pending[0].event, event("e1"));
    let pending = tx.pending_buffered(&tenant, &c, at(10)).await.unwrap();
    assert_eq!(pending.len(), 1, "past their TTL, events are not applied");
    tx.mark_buffered_applied(
        &[pending[0].id],
        WaitId::from_uuid(uuid::Uuid::from_u128(1)),
        at(10),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.expire_buffered(at(20)).await.unwrap(),
        1,
        "e2 expired; e1 applied; e3 still pending"
    );
    assert_eq!(store.expire_buffered(at(20)).await.unwrap(), 0);
    let quarantined = store.quarantined(10).await.unwrap();
    assert_eq!(
        quarantined.len(),
        1,
        "an expired event is quarantined with its reason"
    );
    assert_eq!(quarantined[0].event_key.as_deref(), Some("e2"));
    assert!(
        quarantined[0].reason.contains("within the buffer TTL"),
        "{}",
        quarantined[0].reason
    );
    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.pending_buffered(&tenant, &c, at(20))
            .await
            .unwrap()
            .is_empty()
    );
    // A redelivery of the expired event buffers it again rather than answering "duplicate".
    let mut again = event("e2");
    again.received_at = at(30);
    assert!(
        tx.buffer_event(&tenant, &c, &again, at(5000))
            .await
            .unwrap()
    );
    let pending = tx.pending_buffered(&tenant, &c, at(31)).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|b| b.event.key.as_str())
            .collect::<Vec<_>>(),
        ["e2"]
    );
    assert!(
        !tx.buffer_event(&tenant, &c, &again, at(5000))
            .await
            .unwrap(),
        "pending: a duplicate"
    );
    drop(tx);
    database.close().await;
}

async fn resumes_are_leased_acked_and_released(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let mut resumes = Vec::new();
    for n in 1..=3 {
        let w = wait(n, &format!("r{n}"), T0);
        insert(&store, &w).await;
        let r = resume_of(&w, n);
        let mut tx = store.begin().await.unwrap();
        assert!(tx.insert_resume(&r).await.unwrap());
        let mut again = r.clone();
        again.resume_id = uuid::Uuid::from_u128(9999);
        assert!(
            !tx.insert_resume(&again).await.unwrap(),
            "one resume per wait"
        );
        tx.commit().await.unwrap();
        resumes.push(r);
    }
    let lease = Duration::from_secs(30);
    let a = store
        .claim_resumes("a", None, at(100), lease, 2)
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
        .claim_resumes("b", None, at(100), lease, 10)
        .await
        .unwrap();
    assert_eq!(b.len(), 1, "leased resumes are not handed out twice");
    assert!(
        store
            .claim_resumes("b", None, at(100), lease, 10)
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
            .ack_resumes(&[a[0].resume_id, uuid::Uuid::from_u128(5)], at(101))
            .await
            .unwrap(),
        0,
        "acks are idempotent"
    );
    // The lease runs out: the unacked one comes back, with its attempt counted.
    let later = store
        .claim_resumes("b", None, at(100 + 30_000), lease, 10)
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
    assert_eq!(store.release_resumes("b").await.unwrap(), 2);
    let tenant = TenantId::parse("someone-else").unwrap();
    assert!(
        store
            .claim_resumes("c", Some(&tenant), at(100 + 30_001), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "filtered by tenant"
    );
    assert_eq!(
        store
            .claim_resumes("c", None, at(100 + 30_001), lease, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    database.close().await;
}

async fn due_waits_are_claimed(backend: Backend) {
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

async fn waits_are_listed_newest_first_in_pages(backend: Backend) {
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

async fn migrations_are_idempotent(backend: Backend) {
    let db = TestDatabase::create(backend).await.unwrap();
    let config = DatabaseConfig::new(&db.url);
    let (a, b) = tokio::join!(Database::connect(&config), Database::connect(&config));
    a.unwrap().close().await;
    b.unwrap().close().await;
    Database::connect(&config).await.unwrap().close().await;
}

/// `insert_fresh_wait` (a shared transaction on PostgreSQL, a transaction of its own on
/// SQLite) writes the wait with its call and resume only when nothing came before it.
async fn fresh_waits_are_inserted_only_when_nothing_came_before(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let tenant = TenantId::default_tenant();
    let call_of = |w: &StoredWait| {
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
    };
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
        .claim_api_calls("d", at(1), Duration::from_secs(30), 10)
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
    let resume = ResumeRecord::of(&decided.state, uuid::Uuid::from_u128(66)).unwrap();
    assert!(
        store
            .insert_fresh_wait(fresh(&decided, None, Some(&resume)))
            .await
            .unwrap()
    );
    let claimed = store
        .claim_resumes("a", None, at(1), Duration::from_secs(30), 10)
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
async fn concurrent_requests_each_get_their_own_outcome(backend: Backend) {
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
    database.close().await;
}

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
    let resume = ResumeRecord::of(&decided.state, uuid::Uuid::from_u128(9)).unwrap();
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
    a.close().await;
    b.close().await;
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

conformance!(
    waits_round_trip_and_update_by_compare_and_set,
    changes_are_compare_and_set_with_inbox_and_resume,
    uniqueness_rules_are_conflicts,
    early_events_are_buffered_applied_and_expired,
    resumes_are_leased_acked_and_released,
    due_waits_are_claimed,
    waits_are_listed_newest_first_in_pages,
    migrations_are_idempotent,
    fresh_waits_are_inserted_only_when_nothing_came_before,
    concurrent_requests_each_get_their_own_outcome,
);
