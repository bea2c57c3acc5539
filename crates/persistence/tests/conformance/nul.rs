//! Anything stored as text can be stored and read back as it was: NUL characters (which
//! PostgreSQL refuses in `text`) in quarantined events, idempotency keys, workflow ids, error
//! messages and field paths, and `\u0000` inside JSON documents, through the single-request
//! paths and the batched ones.

use std::time::Duration;

use rendezvous_domain::{FieldPath, SourceName, TenantId};
use rendezvous_persistence::testing::Backend;
use rendezvous_ports::TenantScope;
use rendezvous_ports::{
    ChangeOutcome, FreshWait, Quarantined, ResumeRecord, Store, StoreTx, TopicFields, WaitChange,
};
use serde_json::json;

use crate::calls::call_of;
use crate::support::*;

/// Strings a hostile or careless caller may send, each stored and read back exactly.
const NASTY: [&str; 5] = [
    "abc\0def",
    "\0",
    "\u{FFFF}looks encoded",
    "back\\slash\\0\0",
    "plain",
];

pub(crate) async fn text_with_nul_is_stored_and_read_back(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    for (n, nasty) in NASTY.iter().enumerate() {
        let q = Quarantined {
            origin: format!("kafka:t/0/{n}{nasty}"),
            event_key: Some(format!("k{nasty}")),
            correlation_id: Some(format!("c{nasty}")),
            payload: format!("{{\"v\": 1}}{nasty}"),
            reason: format!("refused: {nasty}"),
            at: at(n as i64),
            tenant: Some(format!("t{nasty}")),
            headers: Some([(format!("h{nasty}"), format!("v{nasty}"))].into()),
        };
        store.quarantine(&q).await.unwrap();
        let listed = store.quarantined(1).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].event, q);
        let by_id = store.quarantined_event(listed[0].id).await.unwrap();
        assert_eq!(by_id.as_ref(), Some(&listed[0]));
    }

    // Idempotency keys and workflow ids, through the fresh path (batched on PostgreSQL) and
    // the transactional one; lookups by idempotency key find them.
    for (n, nasty) in NASTY.iter().enumerate() {
        let n = n as u128 + 1;
        let mut w = wait(n, &format!("c{n}"), T0);
        w.idempotency_key = format!("key{nasty}");
        w.workflow_id = Some(format!("wf{nasty}"));
        if n.is_multiple_of(2) {
            insert(&store, &w).await;
        } else {
            let fresh = FreshWait {
                wait: &w,
                call: None,
                resume: None,
            };
            assert!(store.insert_fresh_wait(fresh).await.unwrap());
        }
        assert_eq!(
            store.get_wait(w.state.key.id).await.unwrap(),
            Some(w.clone())
        );
        let k = &w.state.key;
        let mut tx = store.begin().await.unwrap();
        let found = tx
            .find_by_idempotency(&k.tenant, &k.execution_id, &k.node_id, &w.idempotency_key)
            .await
            .unwrap();
        assert_eq!(found, Some(w.clone()));
    }

    // Error messages of calls.
    let w = wait(100, "call", T0);
    let mut tx = store.begin().await.unwrap();
    tx.insert_wait(&w).await.unwrap();
    tx.insert_api_call(&call_of(&w), T0).await.unwrap();
    tx.commit().await.unwrap();
    store
        .retry_api_call(w.state.key.id, at(5), "status 500: \0\0", at(1))
        .await
        .unwrap();
    store
        .fail_api_call(w.state.key.id, "gave up: \0", at(2))
        .await
        .unwrap();

    // Field paths of topics.
    let topic = TopicFields {
        topic: "t".into(),
        correlation_field: FieldPath::parse("a\0b").unwrap(),
        execution_field: FieldPath::parse("\u{FFFF}e").unwrap(),
    };
    let mut tx = store.begin().await.unwrap();
    tx.remember_topic(&topic, T0).await.unwrap();
    tx.remember_topic(&topic, T0).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.kafka_topics().await.unwrap(), [topic]);
    database.close().await;
}

/// `\u0000` in JSON documents (a spec's call body, an event's payload, a resume) round-trips
/// exactly through every path: the fresh registration and the change (both batched on
/// PostgreSQL), the early-event buffer and the resume outbox.
pub(crate) async fn json_with_nul_is_stored_and_read_back(backend: Backend) {
    let (_db, database, store) = open(backend).await;
    let nul = json!({"s": "a\u{0}b", "\u{0}key": ["\u{0}", "\\u0000"]});
    let mut w = wait(1, "c1", T0);
    if let Some(rendezvous_domain::SourceKind::Api(call)) =
        w.state.spec.sources.iter_mut().map(|s| &mut s.kind).next()
    {
        call.body = Some(nul.clone());
    } else {
        panic!("the test wait has an api source first");
    }
    let fresh = FreshWait {
        wait: &w,
        call: Some(&call_of(&w)),
        resume: None,
    };
    assert!(store.insert_fresh_wait(fresh).await.unwrap());
    assert_eq!(
        store.get_wait(w.state.key.id).await.unwrap(),
        Some(w.clone())
    );

    let mut e = event("e1");
    e.payload = nul.clone();
    let mut changed = w.clone();
    changed.state.apply(e.clone(), at(1));
    changed.state.cancel(Some("why: \0".into()), at(1)).unwrap();
    changed.version = 2;
    changed.updated_at = at(1);
    let resume = ResumeRecord::of(&changed.state, resume_id(1)).unwrap();
    let outcome = store
        .apply_change(WaitChange {
            wait: &changed,
            expected_version: 1,
            processed: Some((&e.key, &SourceName::api())),
            resume: Some(&resume),
        })
        .await
        .unwrap();
    assert_eq!(outcome, ChangeOutcome::Applied);
    assert_eq!(store.get_wait(w.state.key.id).await.unwrap(), Some(changed));
    let claimed = store
        .claim_resumes(
            &owner("a"),
            &TenantScope::All,
            at(2),
            Duration::from_secs(30),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        claimed,
        [ResumeRecord {
            attempts: 1,
            ..resume
        }]
    );
    assert_eq!(claimed[0].events[0].payload, nul);

    let tenant = TenantId::default_tenant();
    let c = rendezvous_domain::CorrelationId::parse("early").unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.buffer_event(&tenant, &c, &e, at(1000)).await.unwrap());
    let pending = tx.pending_buffered(&tenant, &c, at(5)).await.unwrap();
    assert_eq!(pending[0].event, e);
    tx.commit().await.unwrap();
    database.close().await;
}
