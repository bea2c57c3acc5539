//! Topics that do not exist, topics that appear late, and records written before anything
//! subscribed to their topic: none of them disturbs the topics already flowing, and nothing
//! the broker still holds is missed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rendezvous_domain::{CorrelationId, ExecutionId, NodeId};
use rendezvous_kafka_ingress::IngressConfig;
use rendezvous_service::RegisterWait;
use serde_json::json;

use crate::support::{
    Harness, config, eventually, harness, kafka_only, produce, register, start, status,
};

async fn event_for(h: &Harness, topic: &str, corr: &str, execution: &str) {
    produce(
        h,
        topic,
        corr,
        &json!({"correlation_id": corr, "execution_id": execution}).to_string(),
        &[],
    )
    .await;
}

/// Issue 12, items 4 and 12 (start-up): `kafka.topics` names a topic the cluster does not
/// have, and later a wait names another; the existing topic's events are applied all along.
/// The group protocol runs with librdkafka's defaults here (session timeout 45 s): with them,
/// every subscribe made the embedded broker wait 44 s for the group to rejoin, and
/// re-subscribing whenever a missing topic was reported kept the group rejoining for good.
/// (`basics::a_new_topic_is_followed_and_nothing_published_before_is_missed` shows a topic
/// that appears after its wait is consumed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_that_do_not_exist_never_disturb_one_that_does() {
    let h = harness().await;
    h.kafka.create_topic("flowing", 2).unwrap();
    let mut flowing = Vec::new();
    for i in 0..20 {
        flowing.push(register(&h, &format!("exec-{i}"), &kafka_only("flowing")).await);
    }
    let mut c = IngressConfig::new(h.kafka.bootstrap_servers(), "g-missing");
    c.refresh_interval = Duration::from_millis(200);
    c.topics = vec!["flowing".into(), "configured-but-missing".into()];
    let ingress = start(&h, c);
    for (i, corr) in flowing.iter().enumerate().take(10) {
        event_for(&h, "flowing", corr, &format!("exec-{i}")).await;
    }
    eventually("the first ten events applied at start-up", async || {
        ingress.stats.applied.load(Ordering::Relaxed) == 10
    })
    .await;
    // A wait names a topic the cluster does not have (the consumer never creates topics).
    let missing = register(&h, "exec-missing", &kafka_only("no-such-topic")).await;
    // Let a few subscription refreshes pass (200 ms each) before the next events.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, corr) in flowing.iter().enumerate().skip(10) {
        event_for(&h, "flowing", corr, &format!("exec-{i}")).await;
    }
    eventually("the other ten events applied", async || {
        ingress.stats.applied.load(Ordering::Relaxed) == 20
    })
    .await;
    for corr in &flowing {
        assert_eq!(status(&h, corr).await, "completed");
    }
    assert!(status(&h, &missing).await.starts_with("waiting"));
    assert_eq!(ingress.stats.quarantined.load(Ordering::Relaxed), 0);
    ingress.stop().await;
}

/// Waits naming a missing topic cost the consumer nothing: the cluster is looked at again
/// at most every few seconds, not at every registration (each registration wakes a refresh,
/// and each refresh fetched the whole cluster's metadata inside the consumer loop), and never
/// while the consumer waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_naming_a_missing_topic_do_not_hammer_the_cluster() {
    let h = harness().await;
    h.kafka.create_topic("flowing-2", 1).unwrap();
    let mut c = IngressConfig::new(h.kafka.bootstrap_servers(), "g-hammer");
    c.refresh_interval = Duration::from_millis(100);
    c.topics = vec!["flowing-2".into()];
    let ingress = start(&h, c);
    let started = std::time::Instant::now();
    let mut waits = Vec::new();
    for i in 0..100 {
        waits.push(register(&h, &format!("exec-{i}"), &kafka_only("still-missing")).await);
    }
    let flowing = register(&h, "exec-flowing", &kafka_only("flowing-2")).await;
    event_for(&h, "flowing-2", &flowing, "exec-flowing").await;
    eventually("the flowing topic's event applied", async || {
        ingress.stats.applied.load(Ordering::Relaxed) == 1
    })
    .await;
    let lookups = ingress.stats.metadata_lookups.load(Ordering::Relaxed);
    // One lookup when the topic first appears, then one per interval at most.
    let allowed = 2 + started.elapsed().as_secs() / 5;
    assert!(
        lookups <= allowed,
        "{lookups} metadata lookups for 100 registrations (allowed {allowed})"
    );
    assert!(status(&h, &waits[0]).await.starts_with("waiting"));
    ingress.stop().await;
}

/// Issue 12, item 12: adding a topic to the subscription moves no partition already flowing.
/// The embedded broker waits `session.timeout.ms` - 1 s for members to rejoin after a
/// subscription change; meanwhile the old topic's events keep being applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_topic_does_not_pause_the_topics_already_flowing() {
    let h = harness().await;
    h.kafka.create_topic("steady", 1).unwrap();
    h.kafka.create_topic("late", 1).unwrap();
    let first = register(&h, "exec-s1", &kafka_only("steady")).await;
    let second = register(&h, "exec-s2", &kafka_only("steady")).await;
    let mut c = config(&h, "g-late");
    // A long rejoin on the embedded broker (29 s), so what flows during it is unmistakable.
    c.properties
        .insert("session.timeout.ms".into(), "30000".into());
    let ingress = start(&h, c);
    event_for(&h, "steady", &first, "exec-s1").await;
    eventually("the steady topic flows", async || {
        status(&h, &first).await == "completed"
    })
    .await;
    assert_eq!(ingress.stats.assigned_partitions.load(Ordering::Relaxed), 1);
    let late = register(&h, "exec-late", &kafka_only("late")).await;
    // The registration changes the subscription at once; let it start rejoining.
    tokio::time::sleep(Duration::from_secs(1)).await;
    event_for(&h, "late", &late, "exec-late").await;
    event_for(&h, "steady", &second, "exec-s2").await;
    eventually("the steady topic's next event", async || {
        status(&h, &second).await == "completed"
    })
    .await;
    // Applied while the late topic was still joining: its partition not assigned yet, the
    // steady one never revoked.
    assert_eq!(
        ingress.stats.assigned_partitions.load(Ordering::Relaxed),
        1,
        "the steady topic's event was applied before the new topic's partition was assigned"
    );
    assert!(
        status(&h, &late).await.starts_with("waiting"),
        "the late topic is not consumed before it is assigned"
    );
    eventually("the late topic's event", async || {
        status(&h, &late).await == "completed"
    })
    .await;
    assert_eq!(ingress.stats.assigned_partitions.load(Ordering::Relaxed), 2);
    assert_eq!(
        ingress.stats.revoked_partitions.load(Ordering::Relaxed),
        0,
        "no partition was revoked to add the new topic"
    );
    ingress.stop().await;
}

/// Issue 12, item 13: records written to a topic before any wait names it (while the group
/// consumes other topics) are all consumed from the first offset once a wait names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_before_a_topic_is_first_subscribed_are_all_consumed() {
    let h = harness().await;
    h.kafka.create_topic("steady", 1).unwrap();
    let steady = register(&h, "exec-s", &kafka_only("steady")).await;
    let mut c = config(&h, "g-before");
    c.topics = vec!["steady".into()];
    let ingress = start(&h, c);
    event_for(&h, "steady", &steady, "exec-s").await;
    eventually("the group consumes", async || {
        status(&h, &steady).await == "completed"
    })
    .await;
    // 400 records on a topic nothing reads yet; the first is for the wait registered below.
    let sends = (0..400).map(|i| {
        let value =
            json!({"correlation_id": format!("before-{i}"), "execution_id": "exec-b"}).to_string();
        let producer = h.producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to("written-before").key("k").payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap()
        }
    });
    let offsets: Vec<i64> = join_all(sends)
        .await
        .into_iter()
        .map(|d| d.offset)
        .collect();
    assert_eq!(offsets.iter().min(), Some(&0));
    let registered = h
        .service
        .register(RegisterWait {
            correlation_id: Some(CorrelationId::parse("before-0").unwrap()),
            ..RegisterWait::new(
                ExecutionId::parse("exec-b").unwrap(),
                NodeId::parse("node").unwrap(),
                kafka_only("written-before").to_string(),
            )
        })
        .await
        .unwrap();
    assert!(
        registered
            .wait
            .state
            .status()
            .to_string()
            .starts_with("waiting")
    );
    eventually("all 400 records consumed", async || {
        let (received, applied, buffered, duplicates, quarantined) = ingress.stats.snapshot();
        received == 401 && applied + buffered + duplicates + quarantined == 401
    })
    .await;
    let (_, applied, buffered, duplicates, quarantined) = ingress.stats.snapshot();
    assert_eq!((applied, buffered, duplicates, quarantined), (2, 399, 0, 0));
    assert_eq!(
        status(&h, "before-0").await,
        "completed",
        "the wait's record, written before its wait, was read"
    );
    ingress.stop().await;
}

/// Documents the one way the embedded broker loses records (docs/limits.md): it keeps at most
/// 5 MiB per partition and deletes the oldest records beyond, read or not. A group that
/// falls behind by more than that (a topic subscribed late, a long pause) starts after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_keeps_at_most_five_mib_per_partition() {
    let h = harness().await;
    h.kafka.create_topic("big", 1).unwrap();
    let value = "x".repeat(100 * 1024);
    for _ in 0..40 {
        produce(&h, "big", "k", &value, &[]).await;
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", h.kafka.bootstrap_servers())
        .set("group.id", "g-watermarks")
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks("big", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!((low, high), (0, 40), "4 MiB: everything kept");
    for _ in 0..40 {
        produce(&h, "big", "k", &value, &[]).await;
    }
    let (low, high) = consumer
        .fetch_watermarks("big", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(high, 80);
    assert!(
        low > 0 && high - low <= 52,
        "8 MiB written: the oldest records are gone (low watermark {low})"
    );
}
