//! The aggregation laws, as property tests: arrival order does not matter, events that should
//! be ignored change nothing, and a wait is decided exactly once.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rendezvous_domain::{
    Channel, CorrelationId, EventKey, ExecutionId, IgnoreReason, IncomingEvent, NodeId, Outcome,
    ReceivedEvent, Resolution, SourceName, TenantId, TimeoutPolicy, Timestamp, Verdict, WaitId,
    WaitKey, WaitSpec, WaitState, WaitStatus,
};
use serde_json::{Value, json};

const NOW: Timestamp = Timestamp::from_millis(5_000);
const SOURCES: [&str; 5] = ["a", "b", "c", "d", "k"];

fn strategies() -> Vec<Value> {
    vec![
        json!("all"),
        json!("any"),
        json!("required_only"),
        json!({"type": "custom", "sources": ["b", "k"]}),
        json!({"type": "k_of_n", "k": 2}),
        json!({"type": "k_of_n", "k": 3, "sources": ["a", "c", "k", "d"]}),
        json!({"type": "expression", "expression": "a && (b || k)"}),
        json!({"type": "expression", "expression": "2 of (a, b && c, k) || d"}),
    ]
}

fn spec(strategy: &Value) -> WaitSpec {
    WaitSpec::from_node_config(&json!({
        "type": "wait_events",
        "data": {
            "sources": {
                "a": {"type": "callback"},
                "b": {"type": "callback"},
                "c": {"type": "callback", "required": false},
                "d": {"type": "callback", "required": false},
                "k": {"type": "kafka", "topic": "t", "filter": {"kind": "ok"}}
            },
            "aggregationStrategy": strategy,
            "timeout": 60
        }
    }))
    .unwrap()
}

fn new_wait(strategy: &Value) -> WaitState {
    let key = WaitKey {
        id: WaitId::from_uuid(uuid::Uuid::from_u128(9)),
        tenant: TenantId::default_tenant(),
        correlation_id: CorrelationId::parse("c").unwrap(),
        execution_id: ExecutionId::parse("exec").unwrap(),
        node_id: NodeId::parse("n").unwrap(),
    };
    WaitState::register(key, spec(strategy), Timestamp::from_millis(0))
}

fn event(source: &str, key: String, exec: Option<&str>, kind: &str, seq: i64) -> IncomingEvent {
    let channel = if source == "k" {
        Channel::Topic("t".into())
    } else {
        Channel::Source(SourceName::parse(source).unwrap())
    };
    IncomingEvent {
        key: EventKey::parse(key).unwrap(),
        channel,
        execution_id: exec.map(|e| ExecutionId::parse(e).unwrap()),
        payload: json!({"kind": kind, "from": source, "seq": seq}),
        received_at: Timestamp::from_millis(seq),
    }
}

/// The valid event of a source: right execution id, passes the filter.
fn valid(source: &str) -> IncomingEvent {
    event(source, format!("v-{source}"), Some("exec"), "ok", 100)
}

/// Kinds of events that must never change what a wait decides.
#[derive(Debug, Clone)]
enum Noise {
    /// The valid event of this source again: a redelivery (same key, same body).
    Duplicate(usize),
    /// Another execution's event.
    WrongExecution(usize),
    /// No execution id at all.
    NoExecution(usize),
    /// A Kafka event the filter refuses.
    FilteredOut,
    /// A topic no source listens to.
    UnknownTopic,
}

fn noise_event(noise: &Noise, n: usize, valid_sources: &[&str]) -> Option<IncomingEvent> {
    Some(match noise {
        Noise::Duplicate(i) => valid(valid_sources.get(i % valid_sources.len().max(1))?),
        Noise::WrongExecution(i) => event(SOURCES[i % 5], format!("w-{n}"), Some("other"), "ok", 7),
        Noise::NoExecution(i) => event(SOURCES[i % 5], format!("x-{n}"), None, "ok", 7),
        Noise::FilteredOut => event("k", format!("f-{n}"), Some("exec"), "bad", 7),
        Noise::UnknownTopic => IncomingEvent {
            channel: Channel::Topic("nobody".into()),
            ..event("a", format!("u-{n}"), Some("exec"), "ok", 7)
        },
    })
}

fn noise() -> impl Strategy<Value = Noise> {
    prop_oneof![
        (0usize..5).prop_map(Noise::Duplicate),
        (0usize..5).prop_map(Noise::WrongExecution),
        (0usize..5).prop_map(Noise::NoExecution),
        Just(Noise::FilteredOut),
        Just(Noise::UnknownTopic),
    ]
}

/// A scenario: a strategy, the sources that send a valid event, noise, and a shuffled order.
fn scenario() -> impl Strategy<Value = (Value, Vec<&'static str>, Vec<IncomingEvent>)> {
    (
        proptest::sample::select(strategies()),
        proptest::sample::subsequence(SOURCES.to_vec(), 0..=5),
        proptest::collection::vec(noise(), 0..12),
    )
        .prop_flat_map(|(strategy, sources, noise)| {
            let mut events: Vec<IncomingEvent> = sources.iter().map(|s| valid(s)).collect();
            events.extend(
                noise
                    .iter()
                    .enumerate()
                    .filter_map(|(n, x)| noise_event(x, n, &sources)),
            );
            (Just(strategy), Just(sources), Just(events).prop_shuffle())
        })
}

/// What a wait decided, without the audit trail of ignored events.
fn decision(w: &WaitState) -> (WaitStatus, Vec<ReceivedEvent>, Option<Resolution>) {
    (w.status(), w.received.clone(), w.resolution.clone())
}

fn satisfied(names: &[&str]) -> BTreeSet<SourceName> {
    names
        .iter()
        .map(|s| SourceName::parse(*s).unwrap())
        .collect()
}

/// Everything but the first copy of each valid event is noise; `seen` tracks first copies.
fn is_noise(e: &IncomingEvent, seen: &mut BTreeSet<EventKey>) -> bool {
    !e.key.as_str().starts_with("v-") || !seen.insert(e.key.clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Completion happens iff the condition holds for the sources that sent a valid event,
    /// whatever the order, and it is decided exactly once.
    #[test]
    fn completion_depends_only_on_which_sources_arrived((strategy, sources, events) in scenario()) {
        let mut w = new_wait(&strategy);
        let mut decisions = 0;
        for e in events {
            let step = w.apply(e, NOW);
            if step.decided.is_some() {
                decisions += 1;
                prop_assert_eq!(step.decided, Some(Outcome::Completed));
            }
        }
        let should_complete = w.spec.condition.holds(&satisfied(&sources));
        prop_assert_eq!(decisions, usize::from(should_complete));
        prop_assert_eq!(w.status() == WaitStatus::Completed, should_complete);
    }

    /// Events that should be ignored change nothing: the decision equals the one reached from
    /// the valid events alone, in the same relative order, and every ignored step leaves the
    /// decision untouched.
    #[test]
    fn ignored_events_change_nothing((strategy, _sources, events) in scenario()) {
        let mut noisy = new_wait(&strategy);
        let mut seen = BTreeSet::new();
        for e in &events {
            let before = decision(&noisy);
            let noise = is_noise(e, &mut seen);
            let step = noisy.apply(e.clone(), NOW);
            if matches!(step.verdict, Verdict::Ignored(_) | Verdict::Duplicate) {
                prop_assert_eq!(&decision(&noisy), &before);
            } else {
                prop_assert!(!noise, "noise accepted: {:?}", e);
            }
        }
        let mut clean = new_wait(&strategy);
        let mut seen = BTreeSet::new();
        for e in events.iter().filter(|e| !is_noise(e, &mut seen)) {
            clean.apply(e.clone(), NOW);
        }
        prop_assert_eq!(decision(&noisy), decision(&clean));
    }

    /// When every valid source is needed (no smaller subset meets the condition), every
    /// arrival order gives the same final state and the same payloads. Otherwise the wait
    /// resumes with the shortest prefix of arrivals that meets the condition.
    #[test]
    fn order_does_not_change_the_result((strategy, sources, events) in scenario()) {
        let mut shuffled = new_wait(&strategy);
        let mut arrivals = Vec::new();
        let mut seen = BTreeSet::new();
        for e in &events {
            if !is_noise(e, &mut seen) {
                arrivals.push(e.key.clone());
            }
            shuffled.apply(e.clone(), NOW);
        }
        let mut canonical = new_wait(&strategy);
        for s in &sources {
            canonical.apply(valid(s), NOW);
        }
        let condition = &shuffled.spec.condition;
        let tight = sources.iter().all(|drop| {
            let rest: Vec<&str> = sources.iter().copied().filter(|s| s != drop).collect();
            !condition.holds(&satisfied(&rest))
        });
        let by_source = |w: &WaitState| {
            let mut r = w.received.clone();
            r.sort_by(|x, y| x.source.cmp(&y.source));
            (w.status(), r, w.resolution.clone())
        };
        if tight {
            prop_assert_eq!(by_source(&shuffled), by_source(&canonical));
        }
        // Always: what was received is exactly the arrivals up to the first that met the
        // condition.
        let received: Vec<EventKey> = shuffled.received.iter().map(|r| r.key.clone()).collect();
        let mut prefix = Vec::new();
        let mut seen = BTreeSet::new();
        for key in &arrivals {
            prefix.push(key.clone());
            seen.insert(SourceName::parse(&key.as_str()[2..]).unwrap());
            if condition.holds(&seen) {
                break;
            }
        }
        prop_assert_eq!(received, prefix);
    }

    /// A timeout racing the events: whatever comes first decides, exactly once; nothing is
    /// accepted after the decision, and what arrives later is recorded as late.
    #[test]
    fn a_wait_is_decided_exactly_once(
        (strategy, _sources, events) in scenario(),
        expire_at in 0usize..16,
        partial in any::<bool>(),
    ) {
        let mut w = new_wait(&strategy);
        if partial {
            w.spec.on_timeout = TimeoutPolicy::ResumeWithPartial;
        }
        let deadline = w.deadline;
        let mut decided = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            if i == expire_at {
                decided.extend(w.expire(deadline));
            }
            let was_open = w.is_open();
            let step = w.apply(e, NOW);
            decided.extend(step.decided);
            if !was_open {
                prop_assert!(matches!(
                    step.verdict,
                    Verdict::Duplicate | Verdict::Ignored(IgnoreReason::Late { .. } | IgnoreReason::ExecutionMismatch { .. } | IgnoreReason::NoMatchingSource { .. })
                ), "accepted after the decision: {:?}", step.verdict);
            }
        }
        decided.extend(w.expire(deadline));
        prop_assert_eq!(decided.len(), 1, "decisions: {:?}", decided);
        let resolution = w.resolution.clone().unwrap();
        prop_assert_eq!(resolution.outcome, decided[0]);
        prop_assert_eq!(resolution.missing, w.missing());
        if resolution.outcome != Outcome::Completed {
            let expected = if partial { Outcome::Partial } else { Outcome::TimedOut };
            prop_assert_eq!(resolution.outcome, expected);
        }
    }
}
