//! Replaying quarantined records: a record that came before any wait said where its
//! correlation id is was quarantined; once a wait names the field, a replay reads the record
//! again (value and headers as kept) and completes the wait. A record whose value was not
//! UTF-8 is kept without headers and cannot be replayed.

use std::time::Duration;

use rdkafka::producer::FutureRecord;
use rendezvous_domain::{CorrelationId, ExecutionId, NodeId};
use rendezvous_kafka_ingress::RecordReplay;
use rendezvous_ports::Store;
use rendezvous_service::{RegisterWait, Replayed};
use serde_json::json;

use crate::support::{config, eventually, harness, produce, start, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_quarantined_before_its_wait_named_the_field_is_replayed() {
    let h = harness().await;
    let topic = "replayed";
    h.kafka.create_topic(topic, 1).unwrap();
    let mut ingress_config = config(&h, "g-replay");
    ingress_config.topics = vec![topic.to_owned()];
    let ingress = start(&h, ingress_config.clone());
    let value = json!({"order": {"id": "c-replay"}, "execution_id": "exec-r"}).to_string();
    produce(
        &h,
        topic,
        "k",
        &value,
        &[("event_id", "ev-1"), ("x-origin", "shop")],
    )
    .await;
    h.producer
        .send(
            FutureRecord::to(topic)
                .key("k")
                .payload(&b"\xff\xfe not utf-8"[..]),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let store = h.database.store();
    eventually("both records quarantined", async || {
        store.quarantined(10).await.unwrap().len() == 2
    })
    .await;
    let rows = store.quarantined(10).await.unwrap();
    let (binary, record) = (&rows[0], &rows[1]);
    assert!(
        record.event.reason.contains("no correlation id"),
        "{}",
        record.event.reason
    );
    assert_eq!(
        record
            .event
            .headers
            .as_ref()
            .and_then(|h| h.get("x-origin"))
            .map(String::as_str),
        Some("shop"),
        "the headers are kept for a replay"
    );
    assert_eq!(
        binary.event.headers, None,
        "a value that was not UTF-8 cannot be kept as it was"
    );

    let reader = RecordReplay::new(h.service.clone(), ingress_config);
    // Before any wait names the field, the replay is refused again, for the same reason.
    match h.service.replay(record.id, Some(&reader)).await.unwrap() {
        Replayed::Refused(reason) => assert!(reason.contains("no correlation id"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let config = json!({"type": "wait_events", "data": {"kafkaEvent": {"topic": topic, "correlationIdField": "order.id"}}});
    h.service
        .register(RegisterWait {
            correlation_id: Some(CorrelationId::parse("c-replay").unwrap()),
            ..RegisterWait::new(
                ExecutionId::parse("exec-r").unwrap(),
                NodeId::parse("node").unwrap(),
                config.to_string(),
            )
        })
        .await
        .unwrap();
    assert_eq!(status(&h, "c-replay").await, "waiting_for_events");
    assert_eq!(
        h.service.replay(record.id, Some(&reader)).await.unwrap(),
        Replayed::Applied
    );
    assert_eq!(status(&h, "c-replay").await, "completed");
    assert!(
        matches!(
            h.service.replay(binary.id, Some(&reader)).await.unwrap(),
            Replayed::NotReplayable(_)
        ),
        "the binary record stays, for inspection"
    );
    let left = store.quarantined(10).await.unwrap();
    assert_eq!(left.iter().map(|q| q.id).collect::<Vec<_>>(), [binary.id]);
    ingress.stop().await;
}
