//! Kafka by tenant on the embedded broker: a record's tenant is its topic's, so a forged
//! tenant header never reaches another tenant's wait (it is quarantined naming the header and
//! the topic); a topic configured to honour the header honours it, for the tenants listed; and
//! topics no configuration allows are never subscribed, even when waits registered under an
//! older, open configuration name them.

use std::collections::BTreeSet;

use rendezvous_domain::{CorrelationId, ExecutionId, NodeId, TenantId};
use rendezvous_persistence::{SqlResumeSignal, SqlStore};
use rendezvous_ports::{Store, SystemClock};
use rendezvous_service::{
    RegisterWait, ServiceConfig, TopicPolicy, TopicTenancy, WaitLookup, WaitService,
};
use serde_json::json;

use crate::support::{Harness, config, eventually, harness_with, kafka_only, produce, start};

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// `orders` carries the default tenant's records (no header honoured); `shared` honours the
/// header for `acme` only.
fn policy() -> TopicPolicy {
    TopicPolicy::only([
        (
            "orders".to_owned(),
            TopicTenancy::of(TenantId::default_tenant()),
        ),
        (
            "shared".to_owned(),
            TopicTenancy {
                tenant_from_header: true,
                header_tenants: BTreeSet::from([tenant("acme")]),
                ..TopicTenancy::of(TenantId::default_tenant())
            },
        ),
    ])
}

async fn harness(policy: TopicPolicy) -> Harness {
    harness_with(ServiceConfig {
        topics: policy,
        ..ServiceConfig::default()
    })
    .await
}

/// A service over the same database with the open policy of before: what an older instance
/// (or one configured with `allow_any_topic`) registers.
fn open_service(h: &Harness) -> WaitService<SqlStore, SqlResumeSignal, SystemClock> {
    WaitService::new(
        h.database.store(),
        h.database.signal(),
        SystemClock,
        ServiceConfig::default(),
    )
}

/// Registers a wait of `tenant_name` for one event on `topic`, with the correlation id
/// `correlation`, through `service`.
async fn register_as<S: Store>(
    service: &WaitService<S, SqlResumeSignal, SystemClock>,
    tenant_name: &str,
    correlation: &str,
    execution: &str,
    topic: &str,
) {
    service
        .register(RegisterWait {
            tenant: tenant(tenant_name),
            correlation_id: Some(CorrelationId::parse(correlation).unwrap()),
            ..RegisterWait::new(
                ExecutionId::parse(execution).unwrap(),
                NodeId::parse("node").unwrap(),
                kafka_only(topic).to_string(),
            )
        })
        .await
        .unwrap();
}

async fn status_in(h: &Harness, tenant_name: &str, correlation: &str) -> String {
    h.service
        .get(WaitLookup::Correlation {
            tenant: tenant(tenant_name),
            correlation_id: CorrelationId::parse(correlation).unwrap(),
        })
        .await
        .unwrap()
        .state
        .status()
        .to_string()
}

async fn reasons(h: &Harness) -> Vec<String> {
    h.database
        .store()
        .quarantined(50)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.event.reason)
        .collect()
}

fn event(correlation: &str, execution: &str) -> String {
    json!({"correlation_id": correlation, "execution_id": execution}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_tenant_header_never_completes_another_tenants_wait() {
    let h = harness(policy()).await;
    // acme's wait on `orders` could only exist from before the policy (registration now
    // refuses it): the header is all that could route a record to it.
    register_as(&open_service(&h), "acme", "c-1", "exec-acme", "orders").await;
    register_as(&*h.service, "default", "c-1", "exec-default", "orders").await;
    register_as(&*h.service, "acme", "c-2", "exec-shared", "shared").await;
    let ingress = start(&h, config(&h, "g-tenants"));

    // On `orders` the header is not honoured: naming acme is a forgery.
    produce(
        &h,
        "orders",
        "k",
        &event("c-1", "exec-acme"),
        &[("tenant_id", "acme"), ("event_id", "forged")],
    )
    .await;
    // On `shared` the header is honoured, but only for acme.
    produce(
        &h,
        "shared",
        "k",
        &event("c-2", "exec-shared"),
        &[("tenant_id", "initech"), ("event_id", "unlisted")],
    )
    .await;
    produce(
        &h,
        "shared",
        "k",
        &event("c-2", "exec-shared"),
        &[("tenant_id", "acme"), ("event_id", "honoured")],
    )
    .await;
    // No header: the topic's tenant.
    produce(
        &h,
        "orders",
        "k",
        &event("c-1", "exec-default"),
        &[("event_id", "plain")],
    )
    .await;
    eventually("four records processed", async || {
        let (_, applied, buffered, duplicates, quarantined) = ingress.stats.snapshot();
        applied + buffered + duplicates + quarantined == 4
    })
    .await;
    let (_, applied, buffered, _, quarantined) = ingress.stats.snapshot();
    assert_eq!((applied, buffered, quarantined), (2, 0, 2));
    assert_eq!(
        status_in(&h, "acme", "c-1").await,
        "waiting_for_events",
        "the forged header reached acme's wait"
    );
    assert_eq!(status_in(&h, "default", "c-1").await, "completed");
    assert_eq!(
        status_in(&h, "acme", "c-2").await,
        "completed",
        "the header is honoured where the topic says so"
    );
    let reasons = reasons(&h).await;
    assert!(
        reasons.contains(
            &"header \"tenant_id\" names tenant \"acme\", but the records of topic \"orders\" belong to tenant \"default\" (kafka.topic.\"orders\".tenant_from_header is off)".to_owned()
        ),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("names tenant \"initech\"")
                && r.contains("kafka.topic.\"shared\".header_tenants")),
        "{reasons:?}"
    );
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_never_widen_the_subscription_beyond_what_is_allowed() {
    let h = harness(TopicPolicy::only([(
        "orders".to_owned(),
        TopicTenancy::of(TenantId::default_tenant()),
    )]))
    .await;
    // Another application's topic, with a record in it; a wait registered under an open
    // configuration names it.
    produce(&h, "payroll", "k", &event("c-9", "exec-9"), &[]).await;
    register_as(&open_service(&h), "default", "c-9", "exec-9", "payroll").await;
    // The closed service refuses to register such a wait at all.
    let refused = h
        .service
        .register(RegisterWait::new(
            ExecutionId::parse("exec-10").unwrap(),
            NodeId::parse("node").unwrap(),
            kafka_only("payroll").to_string(),
        ))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .starts_with("node_config.data.kafkaEvent.topic: topic \"payroll\" is not allowed"),
        "{refused}"
    );
    register_as(&*h.service, "default", "c-1", "exec-1", "orders").await;
    let ingress = start(&h, config(&h, "g-widen"));
    produce(&h, "orders", "k", &event("c-1", "exec-1"), &[]).await;
    eventually("the allowed topic consumed", async || {
        ingress.stats.snapshot().1 == 1
    })
    .await;
    assert_eq!(
        ingress.stats.subscribed_topics(),
        BTreeSet::from(["orders".to_owned()]),
        "payroll exists and a wait names it, yet it is not subscribed"
    );
    assert_eq!(ingress.stats.snapshot().0, 1, "nothing read from payroll");
    assert_eq!(status_in(&h, "default", "c-9").await, "waiting_for_events");
    ingress.stop().await;
}
