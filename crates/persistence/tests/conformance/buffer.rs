//! The early-event buffer: buffered, applied, expired into quarantine, revived.

use rendezvous_domain::{CorrelationId, TenantId, WaitId};
use rendezvous_persistence::testing::Backend;
use rendezvous_ports::{Store, StoreTx};

use crate::support::*;

pub(crate) async fn early_events_are_buffered_applied_and_expired(backend: Backend) {
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
    assert_eq!(quarantined[0].event.event_key.as_deref(), Some("e2"));
    assert!(
        quarantined[0]
            .event
            .reason
            .contains("within the buffer TTL"),
        "{}",
        quarantined[0].event.reason
    );
    assert_eq!(
        quarantined[0].event.tenant.as_deref(),
        Some(tenant.as_str()),
        "kept so that a replay can deliver it again"
    );
    let kept: rendezvous_domain::IncomingEvent =
        serde_json::from_str(&quarantined[0].event.payload).unwrap();
    assert_eq!(kept.key.as_str(), "e2", "the event as buffered");
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
