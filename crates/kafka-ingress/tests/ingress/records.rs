//! Records that fail: refused ones (not JSON, too deep, a NUL where an id belongs) are
//! quarantined at once; an internal error is retried a bounded number of times and then
//! quarantined; only an unavailable database holds a wait's records (and its partition's
//! offset), never another wait's; a record whose quarantine insert keeps failing is logged
//! and passed over. The records behind them are applied.

use std::sync::atomic::Ordering;

use rendezvous_domain::limits::MAX_JSON_DEPTH;
use rendezvous_kafka_ingress::MAX_RECORD_ATTEMPTS;
use rendezvous_ports::{Store, StoreError};
use serde_json::json;

use crate::faulty::Fault;
use crate::support::{config, eventually, harness, kafka_only, produce, register, start, status};

/// Issue 12, items 2, 8 and 11 (ingress side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_quarantined_and_their_partition_goes_on() {
    let h = harness().await;
    let topic = "poison";
    h.kafka.create_topic(topic, 1).unwrap();
    let after = register(&h, "exec-after", &kafka_only(topic)).await;
    // The store refuses to quarantine this one with an error that is not unavailability
    // (PostgreSQL did so for a NUL byte before it learned to store them).
    h.faults.quarantine.lock().unwrap().insert(
        "refused-by-the-store".into(),
        Fault::always(StoreError::Other(
            "invalid byte sequence for encoding \"UTF8\": 0x00".into(),
        )),
    );
    let ingress = start(&h, config(&h, "g-poison"));
    let deep = format!(
        r#"{{"correlation_id": "{after}", "x": {}1{}}}"#,
        "[".repeat(MAX_JSON_DEPTH),
        "]".repeat(MAX_JSON_DEPTH)
    );
    produce(&h, topic, "k", &deep, &[]).await;
    produce(&h, topic, "k", "abc\0def", &[]).await;
    produce(
        &h,
        topic,
        "k",
        r#"{"x": 1}"#,
        &[("correlation_id", "abc\0def")],
    )
    .await;
    produce(&h, topic, "k", "refused-by-the-store {", &[]).await;
    produce(
        &h,
        topic,
        "k",
        &json!({"correlation_id": after, "execution_id": "exec-after"}).to_string(),
        &[],
    )
    .await;
    // The poison shares the batch with it, not its lane: the record of another wait is not
    // held behind them.
    eventually("the record behind the poison applied", async || {
        status(&h, &after).await == "completed"
    })
    .await;
    eventually("every record done", async || {
        let (_, applied, _, _, quarantined) = ingress.stats.snapshot();
        applied + quarantined + ingress.stats.skipped.load(Ordering::Relaxed) == 5
    })
    .await;
    let (received, applied, buffered, duplicates, quarantined) = ingress.stats.snapshot();
    assert_eq!(
        (received, applied, buffered, duplicates, quarantined),
        (5, 1, 0, 0, 3)
    );
    assert_eq!(ingress.stats.skipped.load(Ordering::Relaxed), 1);
    assert_eq!(
        h.faults.quarantine_fired("refused-by-the-store"),
        MAX_RECORD_ATTEMPTS,
        "the failing quarantine insert was tried a bounded number of times"
    );
    let reasons: Vec<(Option<String>, String)> = h
        .database
        .store()
        .quarantined(10)
        .await
        .unwrap()
        .into_iter()
        .map(|q| (q.event.correlation_id, q.event.reason))
        .collect();
    assert!(
        reasons.iter().any(
            |(_, r)| r == "the value nests deeper than the limit of 64 levels (MAX_JSON_DEPTH)"
        ),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(_, r)| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(c, r)| c.as_deref() == Some("abc\0def")
            && r.contains("correlation_id")
            && r.contains("control characters")),
        "{reasons:?}"
    );
    ingress.stop().await;
}

/// Issue 12, item 8: the ingress retried an INTERNAL forever. Now an internal error is tried
/// `MAX_RECORD_ATTEMPTS` times, then the record is quarantined with its reason; an unavailable
/// database holds the partition as long as it lasts, and nothing is quarantined for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_error_is_retried_a_bounded_number_of_times_then_quarantined() {
    let h = harness().await;
    let topic = "internal";
    h.kafka.create_topic(topic, 1).unwrap();
    let broken = register(&h, "exec-broken", &kafka_only(topic)).await;
    let held = register(&h, "exec-held", &kafka_only(topic)).await;
    let after = register(&h, "exec-after", &kafka_only(topic)).await;
    {
        let mut faults = h.faults.find_wait.lock().unwrap();
        faults.insert(
            broken.clone(),
            Fault::always(StoreError::Other("a row that cannot be read".into())),
        );
        faults.insert(
            held.clone(),
            Fault::times(StoreError::Unavailable("connection refused".into()), 5),
        );
    }
    let ingress = start(&h, config(&h, "g-internal"));
    for (corr, execution) in [
        (&broken, "exec-broken"),
        (&held, "exec-held"),
        (&after, "exec-after"),
    ] {
        produce(
            &h,
            topic,
            "k",
            &json!({"correlation_id": corr, "execution_id": execution}).to_string(),
            &[],
        )
        .await;
    }
    // Each wait's records have a lane of their own: the one held by the unavailable database
    // holds no other (its partition's offset waits for it all the same).
    eventually("the records behind the broken one applied", async || {
        // (the held wait's status is read after: reading it would consume the faults)
        let (_, applied, _, _, quarantined) = ingress.stats.snapshot();
        status(&h, &after).await == "completed" && (applied, quarantined) == (2, 1)
    })
    .await;
    assert_eq!(
        h.faults.find_fired(&broken),
        MAX_RECORD_ATTEMPTS,
        "tried a bounded number of times"
    );
    assert_eq!(
        h.faults.find_fired(&held),
        5,
        "held through every unavailable attempt"
    );
    assert_eq!(status(&h, &held).await, "completed", "then applied");
    let (_, applied, _, _, quarantined) = ingress.stats.snapshot();
    assert_eq!((applied, quarantined), (2, 1));
    let q = h.database.store().quarantined(10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].event.correlation_id.as_deref(), Some(broken.as_str()));
    assert_eq!(
        q[0].event.reason,
        format!(
            "internal error: a row that cannot be read (gave up after {MAX_RECORD_ATTEMPTS} attempts)"
        )
    );
    assert_eq!(q[0].event.origin, "kafka:internal/0/0");
    ingress.stop().await;
}
