//! Table tests of the wait state machine: each strategy, the seed scenarios in both orders,
//! timeouts with both policies, cancellation, duplicates, mismatches, filters and late events.

use rendezvous_domain::*;
use serde_json::{Value, json};

const T0: Timestamp = Timestamp::from_millis(1_000_000);

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0.as_millis() + ms)
}

fn key() -> WaitKey {
    WaitKey {
        id: WaitId::from_uuid(uuid::Uuid::from_u128(1)),
        tenant: TenantId::default_tenant(),
        correlation_id: CorrelationId::parse("corr-1").unwrap(),
        execution_id: ExecutionId::parse("exec-1").unwrap(),
        node_id: NodeId::parse("node-1").unwrap(),
    }
}

fn wait(config: Value) -> WaitState {
    WaitState::register(key(), WaitSpec::from_node_config(&config).unwrap(), T0)
}

fn seed(n: &str) -> WaitState {
    let text =
        std::fs::read_to_string(format!("{}/tests/fixtures/{n}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    WaitState::register(key(), WaitSpec::from_json_str(&text).unwrap(), T0)
}

fn api(k: &str) -> IncomingEvent {
    IncomingEvent {
        key: EventKey::parse(k).unwrap(),
        channel: Channel::Source(SourceName::api()),
        execution_id: Some(ExecutionId::parse("exec-1").unwrap()),
        payload: json!({"status": 200, "headers": {}, "body": {"ok": true}}),
        received_at: at(1),
    }
}

/// A Kafka event on the seed topic carrying its execution id in the body, as the seed says.
fn kafka(k: &str, body: Value) -> IncomingEvent {
    IncomingEvent {
        key: EventKey::parse(k).unwrap(),
        channel: Channel::Topic("external-service.events".into()),
        execution_id: None,
        payload: body,
        received_at: at(2),
    }
}

fn completed_kafka(k: &str) -> IncomingEvent {
    kafka(
        k,
        json!({"correlation_id": "corr-1", "execution_id": "exec-1", "event_type": "action.completed"}),
    )
}

fn to(source: &str, k: &str) -> IncomingEvent {
    IncomingEvent {
        key: EventKey::parse(k).unwrap(),
        channel: Channel::Source(SourceName::parse(source).unwrap()),
        execution_id: Some(ExecutionId::parse("exec-1").unwrap()),
        payload: json!({"from": source}),
        received_at: at(3),
    }
}

fn src(name: &str) -> SourceName {
    SourceName::parse(name).unwrap()
}

#[test]
fn seed_scenario_1_api_response_first() {
    let mut w = seed("01-wait-for-both.json");
    assert_eq!(w.status(), WaitStatus::WaitingForEvents);
    let step = w.apply(api("a1"), at(10));
    assert_eq!(step.verdict, Verdict::Accepted { source: src("api") });
    assert_eq!(step.decided, None);
    assert_eq!(w.status(), WaitStatus::WaitingForKafka);
    assert_eq!(w.waiting_for(), [src("kafka")]);
    let step = w.apply(completed_kafka("k1"), at(20));
    assert_eq!(
        step.verdict,
        Verdict::Completed {
            source: src("kafka")
        }
    );
    assert_eq!(step.decided, Some(Outcome::Completed));
    assert_eq!(w.status(), WaitStatus::Completed);
    let resolution = w.resolution.clone().unwrap();
    assert_eq!(resolution.decided_at, at(20));
    assert!(resolution.missing.is_empty());
    let sources: Vec<_> = w.received.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["api", "kafka"]);
}

#[test]
fn seed_scenario_2_kafka_event_first() {
    let mut w = seed("01-wait-for-both.json");
    assert_eq!(
        w.apply(completed_kafka("k1"), at(10)).verdict,
        Verdict::Accepted {
            source: src("kafka")
        }
    );
    assert_eq!(w.status(), WaitStatus::WaitingForApi);
    assert_eq!(w.apply(api("a1"), at(20)).decided, Some(Outcome::Completed));
    assert_eq!(w.status(), WaitStatus::Completed);
}

#[test]
fn seed_2_any_completes_on_the_first_and_the_second_is_late() {
    let mut w = seed("02-wait-for-any.json");
    assert_eq!(
        w.apply(completed_kafka("k1"), at(10)).decided,
        Some(Outcome::Completed)
    );
    let step = w.apply(api("a1"), at(11));
    assert_eq!(
        step.verdict,
        Verdict::Ignored(IgnoreReason::Late {
            status: WaitStatus::Completed
        })
    );
    assert_eq!(step.decided, None);
    assert_eq!(w.received.len(), 1);
    assert_eq!(w.resolution.as_ref().unwrap().missing, [src("api")]);
}

#[test]
fn seed_3_api_only() {
    let mut w = seed("03-api-only.json");
    assert_eq!(
        w.apply(completed_kafka("k1"), at(1)).verdict,
        Verdict::Ignored(IgnoreReason::NoMatchingSource {
            channel: Channel::Topic("external-service.events".into())
        })
    );
    assert_eq!(w.apply(api("a1"), at(2)).decided, Some(Outcome::Completed));
}

#[test]
fn no_enabled_source_completes_at_registration() {
    let w = wait(
        json!({"type": "wait_events", "data": {"apiCall": {"enabled": false}, "kafkaEvent": {"enabled": false}}}),
    );
    assert_eq!(w.status(), WaitStatus::Completed);
    assert_eq!(w.resolution.unwrap().decided_at, T0);
}

fn four_sources(strategy: Value) -> WaitState {
    wait(json!({
        "type": "wait_events",
        "data": {
            "sources": {
                "a": {"type": "callback"},
                "b": {"type": "callback"},
                "c": {"type": "callback", "required": false},
                "d": {"type": "callback", "required": false}
            },
            "aggregationStrategy": strategy
        }
    }))
}

/// Feeds events to the named sources in order; returns after which one the wait completed.
fn completes_after(mut w: WaitState, order: &[&str]) -> Option<usize> {
    for (i, source) in order.iter().enumerate() {
        let step = w.apply(to(source, &format!("e-{source}")), at(i as i64));
        if step.decided.is_some() {
            assert_eq!(
                step.verdict,
                Verdict::Completed {
                    source: src(source)
                }
            );
            return Some(i + 1);
        }
    }
    None
}

#[test]
fn strategy_table() {
    let cases: &[(Value, &[&str], Option<usize>)] = &[
        (json!("all"), &["a", "b", "c", "d"], Some(4)),
        (json!("all"), &["d", "c", "b"], None),
        (json!("any"), &["c", "a"], Some(1)),
        (json!("required_only"), &["c", "d", "a", "b"], Some(4)),
        (json!("required_only"), &["b", "a"], Some(2)),
        (
            json!({"type": "custom", "sources": ["c", "d"]}),
            &["a", "b", "c", "d"],
            Some(4),
        ),
        (
            json!({"type": "custom", "sources": ["c", "d"]}),
            &["d", "c"],
            Some(2),
        ),
        (json!({"type": "k_of_n", "k": 2}), &["d", "a"], Some(2)),
        (
            json!({"type": "k_of_n", "k": 3, "sources": ["a", "b", "c"]}),
            &["d", "a", "b"],
            None,
        ),
        (
            json!({"type": "k_of_n", "k": 3, "sources": ["a", "b", "c"]}),
            &["d", "a", "b", "c"],
            Some(4),
        ),
        (
            json!({"type": "expression", "expression": "a && (c || d)"}),
            &["c", "b", "a"],
            Some(3),
        ),
        (
            json!({"type": "expression", "expression": "a && (c || d)"}),
            &["a", "b"],
            None,
        ),
        (
            json!({"type": "expression", "expression": "2 of (a, b, c && d)"}),
            &["a", "c", "d"],
            Some(3),
        ),
    ];
    for (strategy, order, want) in cases {
        assert_eq!(
            completes_after(four_sources(strategy.clone()), order),
            *want,
            "{strategy} {order:?}"
        );
    }
}

#[test]
fn timeout_fail_policy() {
    let mut w = seed("01-wait-for-both.json");
    w.apply(api("a1"), at(1));
    assert_eq!(w.expire(at(299_999)), None);
    assert_eq!(w.expire(at(300_000)), Some(Outcome::TimedOut));
    assert_eq!(w.status(), WaitStatus::TimedOut);
    assert_eq!(w.resolution.as_ref().unwrap().missing, [src("kafka")]);
    assert_eq!(w.expire(at(400_000)), None, "decided once");
    let step = w.apply(completed_kafka("k1"), at(400_001));
    assert_eq!(
        step.verdict,
        Verdict::Ignored(IgnoreReason::Late {
            status: WaitStatus::TimedOut
        })
    );
    assert!(step.changed, "late events are recorded");
    assert_eq!(w.ignored.len(), 1);
}

#[test]
fn timeout_resume_with_partial_policy() {
    let mut w = wait(json!({"type": "wait_events", "data": {
        "apiCall": {"url": "https://a.example/x"}, "kafkaEvent": {"topic": "external-service.events"},
        "timeout": 10, "onTimeout": "resume_with_partial"}}));
    w.apply(completed_kafka("k1"), at(1));
    assert_eq!(w.expire(at(10_000)), Some(Outcome::Partial));
    assert_eq!(w.status(), WaitStatus::TimedOut);
    let resolution = w.resolution.unwrap();
    assert_eq!(resolution.outcome, Outcome::Partial);
    assert_eq!(resolution.missing, [src("api")]);
    assert_eq!(w.received.len(), 1);
}

#[test]
fn the_last_event_after_the_deadline_times_out_instead_of_completing() {
    let mut w = seed("01-wait-for-both.json");
    w.apply(api("a1"), at(1));
    let step = w.apply(completed_kafka("k1"), at(300_000));
    assert_eq!(step.decided, Some(Outcome::TimedOut));
    assert_eq!(
        step.verdict,
        Verdict::Ignored(IgnoreReason::Late {
            status: WaitStatus::TimedOut
        })
    );
    assert_eq!(w.received.len(), 1);
}

#[test]
fn cancel_and_fail_are_idempotent() {
    let mut w = seed("01-wait-for-both.json");
    assert_eq!(w.cancel(Some("operator".into()), at(5)), Ok(()));
    assert_eq!(w.status(), WaitStatus::Cancelled);
    let existing = w.cancel(None, at(6)).unwrap_err();
    assert_eq!(existing.outcome, Outcome::Cancelled);
    assert_eq!(existing.reason.as_deref(), Some("operator"));
    assert!(w.fail("boom".into(), at(7)).is_err());
    assert_eq!(w.expire(at(10_000_000)), None);
    let mut w = seed("01-wait-for-both.json");
    assert_eq!(w.fail("api call failed: 3 attempts".into(), at(5)), Ok(()));
    assert_eq!(w.status(), WaitStatus::Failed);
    assert_eq!(
        w.apply(api("a1"), at(6)).verdict,
        Verdict::Ignored(IgnoreReason::Late {
            status: WaitStatus::Failed
        })
    );
}

#[test]
fn duplicates_mismatches_and_filters() {
    let mut w = seed("01-wait-for-both.json");
    assert!(matches!(
        w.apply(api("a1"), at(1)).verdict,
        Verdict::Accepted { .. }
    ));
    let dup = w.apply(api("a1"), at(2));
    assert_eq!((dup.verdict, dup.changed), (Verdict::Duplicate, false));
    // The key is the identity: a reused key with another body is still the same event.
    let mut reused = api("a1");
    reused.payload = json!({"status": 500});
    assert_eq!(w.apply(reused, at(2)).verdict, Verdict::Duplicate);
    assert_eq!(w.received[0].payload["status"], 200);

    let wrong = kafka(
        "k-wrong",
        json!({"correlation_id": "corr-1", "execution_id": "exec-2", "event_type": "action.completed"}),
    );
    let step = w.apply(wrong, at(3));
    assert_eq!(
        step.verdict,
        Verdict::Ignored(IgnoreReason::ExecutionMismatch {
            expected: ExecutionId::parse("exec-1").unwrap(),
            found: Some(ExecutionId::parse("exec-2").unwrap()),
        })
    );
    let missing = kafka("k-none", json!({"event_type": "action.completed"}));
    assert!(matches!(
        w.apply(missing, at(4)).verdict,
        Verdict::Ignored(IgnoreReason::ExecutionMismatch { found: None, .. })
    ));

    let started = kafka(
        "k-started",
        json!({"execution_id": "exec-1", "event_type": "action.started"}),
    );
    let step = w.apply(started.clone(), at(5));
    let Verdict::Ignored(IgnoreReason::FilteredOut {
        source,
        path,
        reason,
    }) = step.verdict
    else {
        panic!("{step:?}")
    };
    assert_eq!((source.as_str(), path.as_str()), ("kafka", "event_type"));
    assert!(reason.contains("action.completed"), "{reason}");
    assert!(step.changed);
    // A redelivered ignored event is not recorded twice.
    assert!(!w.apply(started, at(6)).changed);
    assert_eq!(w.ignored.len(), 3);
    assert_eq!(w.ignored_total, 3);
    assert_eq!(w.status(), WaitStatus::WaitingForKafka);
    // The execution id from the RPC (or a header) wins over the body.
    let mut headed = completed_kafka("k-head");
    headed.execution_id = Some(ExecutionId::parse("exec-9").unwrap());
    assert!(matches!(
        w.apply(headed, at(7)).verdict,
        Verdict::Ignored(IgnoreReason::ExecutionMismatch { .. })
    ));
    assert_eq!(
        w.apply(completed_kafka("k1"), at(8)).decided,
        Some(Outcome::Completed)
    );
}

#[test]
fn a_second_event_for_a_satisfied_source_does_not_replace_the_first() {
    let mut w = four_sources(json!("all"));
    w.apply(to("a", "first"), at(1));
    let step = w.apply(to("a", "second"), at(2));
    assert_eq!(
        step.verdict,
        Verdict::Ignored(IgnoreReason::AlreadySatisfied { source: src("a") })
    );
    assert_eq!(w.received[0].key.as_str(), "first");
}

#[test]
fn kafka_sources_on_one_topic_are_told_apart_by_filter() {
    let mut w = wait(json!({"type": "wait_events", "data": {
    "sources": {
        "paid": {"type": "kafka", "topic": "pay", "filter": {"kind": "paid"}},
        "shipped": {"type": "kafka", "topic": "pay", "filter": {"kind": "shipped"}}
    }}}));
    let ev = |k: &str, kind: &str| IncomingEvent {
        key: EventKey::parse(k).unwrap(),
        channel: Channel::Topic("pay".into()),
        execution_id: None,
        payload: json!({"execution_id": "exec-1", "kind": kind}),
        received_at: at(1),
    };
    assert_eq!(
        w.apply(ev("1", "shipped"), at(1)).verdict,
        Verdict::Accepted {
            source: src("shipped")
        }
    );
    assert!(matches!(
        w.apply(ev("2", "refunded"), at(2)).verdict,
        Verdict::Ignored(IgnoreReason::FilteredOut { .. })
    ));
    assert_eq!(
        w.apply(ev("3", "paid"), at(3)).verdict,
        Verdict::Completed {
            source: src("paid")
        }
    );
}

#[test]
fn ignored_events_are_bounded_but_counted() {
    let mut w = seed("01-wait-for-both.json");
    for i in 0..(state::MAX_IGNORED_RECORDED + 5) {
        w.apply(
            kafka(
                &format!("x{i}"),
                json!({"execution_id": "exec-1", "event_type": "nope"}),
            ),
            at(1),
        );
    }
    assert_eq!(w.ignored.len(), state::MAX_IGNORED_RECORDED);
    assert_eq!(w.ignored_total, state::MAX_IGNORED_RECORDED as u64 + 5);
    assert_eq!(w.ignored[0].key.as_str(), "x5");
}

#[test]
fn state_round_trips_through_json() {
    let mut w = seed("01-wait-for-both.json");
    w.apply(api("a1"), at(1));
    let text = serde_json::to_string(&w).unwrap();
    let back: WaitState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, w);
}

/// A wait's events never add up past the per-wait limit, so its resume stays deliverable: the
/// event that would cross it is recorded as ignored and not applied.
#[test]
fn an_event_over_the_wait_limit_is_recorded_not_applied() {
    let mut sources = serde_json::Map::new();
    for i in 0..4 {
        sources.insert(format!("s{i}"), json!({"type": "callback"}));
    }
    let mut state = wait(json!({"type": "wait_events", "data": {"sources": sources}}));
    let big = "x".repeat(1024 * 1024);
    let event = |i: usize| IncomingEvent {
        key: EventKey::parse(format!("k{i}")).unwrap(),
        channel: Channel::Source(SourceName::parse(format!("s{i}")).unwrap()),
        execution_id: Some(ExecutionId::parse("exec-1").unwrap()),
        payload: json!({"blob": big}),
        received_at: at(1),
    };
    for i in 0..2 {
        let step = state.apply(event(i), at(1));
        assert!(matches!(step.verdict, Verdict::Accepted { .. }), "{step:?}");
    }
    let step = state.apply(event(2), at(1));
    let Verdict::Ignored(IgnoreReason::OverWaitLimit { size, limit, .. }) = &step.verdict else {
        panic!("expected the size limit, got {:?}", step.verdict);
    };
    assert_eq!(*limit, limits::MAX_WAIT_PAYLOAD_BYTES);
    assert!(*size > *limit);
    assert!(step.changed && step.decided.is_none());
    assert_eq!(state.received.len(), 2);
    assert_eq!(state.ignored.len(), 1);
    assert!(
        state.ignored[0]
            .reason
            .to_string()
            .contains("over the limit of 3145728 bytes per wait")
    );
}
