//! The ingress against a real Kafka-protocol broker (librdkafka's mock cluster over TCP) and a
//! real SQLite store: matching, filters, wrong execution ids, duplicates, poison records, two
//! consumers sharing partitions, a crash between storing and committing, and a new topic.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rendezvous_domain::{CorrelationId, ExecutionId, LeaseOwner, NodeId, TenantId};
use rendezvous_kafka_ingress::IngressConfig;
use rendezvous_ports::Store;
use rendezvous_ports::TenantScope;
use rendezvous_service::{RegisterWait, WaitLookup};
use serde_json::json;

use crate::support::{
    config, eventually, harness, kafka_only, produce, register, seed_1, start, status,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_filters_mismatches_duplicates_and_poison() {
    let h = harness().await;
    let topic = "external-service.events";
    let corr = register(&h, "exec-1", &seed_1()).await;
    let ingress = start(&h, config(&h, "g-match"));
    let body = |exec: &str, event_type: &str| {
        json!({"correlation_id": corr, "execution_id": exec, "event_type": event_type}).to_string()
    };
    produce(&h, topic, "k", "not json {", &[]).await;
    produce(&h, topic, "k", r#"{"event_type": "action.completed"}"#, &[]).await;
    produce(
        &h,
        topic,
        "k",
        &body("exec-other", "action.completed"),
        &[("event_id", "wrong")],
    )
    .await;
    produce(
        &h,
        topic,
        "k",
        &body("exec-1", "action.started"),
        &[("event_id", "started")],
    )
    .await;
    produce(
        &h,
        topic,
        "k",
        &body("exec-1", "action.completed"),
        &[("event_id", "done")],
    )
    .await;
    produce(
        &h,
        topic,
        "k",
        &body("exec-1", "action.completed"),
        &[("event_id", "done")],
    )
    .await;
    // `received` counts a record when its batch arrives, the others once it is processed:
    // wait for the processing, then check every counter.
    eventually("six records processed", async || {
        let (received, applied, _, duplicates, quarantined) = ingress.stats.snapshot();
        received == 6 && applied + duplicates + quarantined == 6
    })
    .await;
    let (received, applied, buffered, duplicates, quarantined) = ingress.stats.snapshot();
    assert_eq!(
        (received, applied, buffered, duplicates, quarantined),
        (6, 2, 0, 1, 3)
    );
    assert_eq!(
        status(&h, &corr).await,
        "waiting_for_api",
        "only the valid event counted"
    );
    let reasons: Vec<String> = h
        .database
        .store()
        .quarantined(10)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.event.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no correlation id")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("execution id mismatch")),
        "{reasons:?}"
    );
    let wait = h
        .service
        .get(WaitLookup::Correlation {
            tenant: TenantId::default_tenant(),
            correlation_id: CorrelationId::parse(corr.clone()).unwrap(),
        })
        .await
        .unwrap();
    let kinds: Vec<String> = wait
        .state
        .ignored
        .iter()
        .map(|i| i.reason.to_string())
        .collect();
    assert!(
        kinds.iter().any(|k| k.starts_with("execution id mismatch")),
        "recorded on the wait: {kinds:?}"
    );
    assert!(
        kinds.iter().any(|k| k.starts_with("filtered out")),
        "{kinds:?}"
    );
    // The partition kept flowing past the poison records: a later event still lands.
    let corr2 = register(&h, "exec-2", &kafka_only(topic)).await;
    produce(
        &h,
        topic,
        "k",
        &json!({"correlation_id": corr2, "execution_id": "exec-2"}).to_string(),
        &[],
    )
    .await;
    eventually("the later event", async || {
        status(&h, &corr2).await == "completed"
    })
    .await;
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_share_partitions() {
    let h = harness().await;
    let topic = "shared";
    h.kafka.create_topic(topic, 4).unwrap();
    let mut correlations = Vec::new();
    for i in 0..40 {
        correlations.push(register(&h, &format!("exec-{i}"), &kafka_only(topic)).await);
    }
    let a = start(&h, config(&h, "g-share"));
    let b = start(&h, config(&h, "g-share"));
    eventually("both consumers own partitions", async || {
        let (x, y) = (
            a.stats.assigned_partitions.load(Ordering::Relaxed),
            b.stats.assigned_partitions.load(Ordering::Relaxed),
        );
        x > 0 && y > 0 && x + y == 4
    })
    .await;
    for (i, corr) in correlations.iter().enumerate() {
        produce(
            &h,
            topic,
            corr,
            &json!({"correlation_id": corr, "execution_id": format!("exec-{i}")}).to_string(),
            &[],
        )
        .await;
    }
    eventually("forty records", async || {
        a.stats.received.load(Ordering::Relaxed) + b.stats.received.load(Ordering::Relaxed) == 40
    })
    .await;
    assert!(
        a.stats.received.load(Ordering::Relaxed) > 0
            && b.stats.received.load(Ordering::Relaxed) > 0,
        "both consumed"
    );
    for corr in &correlations {
        assert_eq!(status(&h, corr).await, "completed");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_storing_and_committing_redelivers_without_a_second_resume() {
    let h = harness().await;
    let topic = "crashy";
    let mut correlations = Vec::new();
    for i in 0..10 {
        correlations.push(register(&h, &format!("exec-{i}"), &kafka_only(topic)).await);
    }
    // A dead member is noticed after the session timeout; keep it short here.
    let quick = |mut c: IngressConfig| {
        c.properties
            .insert("session.timeout.ms".into(), "3000".into());
        c.properties
            .insert("heartbeat.interval.ms".into(), "500".into());
        c
    };
    // This consumer applies every event but never commits an offset, then dies.
    let mut never_commits = quick(config(&h, "g-crash"));
    never_commits
        .properties
        .insert("enable.auto.commit".into(), "false".into());
    let first = start(&h, never_commits);
    for (i, corr) in correlations.iter().enumerate() {
        produce(
            &h,
            topic,
            corr,
            &json!({"correlation_id": corr, "execution_id": format!("exec-{i}")}).to_string(),
            &[],
        )
        .await;
    }
    eventually("ten applied", async || {
        first.stats.applied.load(Ordering::Relaxed) == 10
    })
    .await;
    first.task.abort();
    let _ = first.task.await;
    // Its successor in the group reads the same records again: all duplicates.
    let second = start(&h, quick(config(&h, "g-crash")));
    eventually("ten redelivered", async || {
        second.stats.received.load(Ordering::Relaxed) == 10
    })
    .await;
    let (_, applied, _, duplicates, quarantined) = second.stats.snapshot();
    assert_eq!((applied, duplicates, quarantined), (0, 10, 0));
    // Exactly one resume per wait.
    let resumes = h
        .service
        .claim_resumes(
            &LeaseOwner::parse("engine").unwrap(),
            &TenantScope::All,
            Duration::from_secs(60),
            100,
        )
        .await
        .unwrap();
    assert_eq!(resumes.len(), 10);
    let mut waits: Vec<_> = resumes.iter().map(|r| r.wait_id).collect();
    waits.sort();
    waits.dedup();
    assert_eq!(waits.len(), 10);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_topic_is_followed_and_nothing_published_before_is_missed() {
    let h = harness().await;
    let ingress = start(&h, config(&h, "g-new"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let corr = register(&h, "exec-n", &kafka_only("brand-new-topic")).await;
    // Published right away, possibly before the subscription is in place.
    produce(
        &h,
        "brand-new-topic",
        &corr,
        &json!({"correlation_id": corr, "execution_id": "exec-n"}).to_string(),
        &[],
    )
    .await;
    eventually("the wait on the new topic completes", async || {
        status(&h, &corr).await == "completed"
    })
    .await;
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_before_their_wait_are_buffered_then_applied() {
    let h = harness().await;
    let mut c = config(&h, "g-early");
    c.topics = vec!["early".into()];
    let ingress = start(&h, c);
    let corr = format!("order-{}", uuid::Uuid::new_v4());
    produce(
        &h,
        "early",
        &corr,
        &json!({"correlation_id": corr, "execution_id": "exec-e"}).to_string(),
        &[],
    )
    .await;
    eventually("buffered", async || {
        ingress.stats.buffered.load(Ordering::Relaxed) == 1
    })
    .await;
    let r = h
        .service
        .register(RegisterWait {
            correlation_id: Some(CorrelationId::parse(corr.clone()).unwrap()),
            ..RegisterWait::new(
                ExecutionId::parse("exec-e").unwrap(),
                NodeId::parse("node").unwrap(),
                kafka_only("early").to_string(),
            )
        })
        .await
        .unwrap();
    assert_eq!(
        r.wait.state.status().to_string(),
        "completed",
        "the buffered event completed it at registration"
    );
    ingress.stop().await;
}
