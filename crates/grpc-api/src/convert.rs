//! Conversions from domain and port types to `rendezvous.v1` messages.

use rendezvous_domain::{
    IgnoreReason, Outcome, ReceivedEvent, Timestamp, TraceContext, WaitStatus,
};
use rendezvous_ports::{ResumeRecord, StoredWait};

use crate::v1;

pub(crate) fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let millis = t.as_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

pub(crate) fn from_timestamp(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_millis(
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos / 1_000_000)),
    )
}

pub(crate) fn status(s: WaitStatus) -> v1::WaitStatus {
    match s {
        WaitStatus::WaitingForEvents => v1::WaitStatus::WaitingForEvents,
        WaitStatus::WaitingForApi => v1::WaitStatus::WaitingForApi,
        WaitStatus::WaitingForKafka => v1::WaitStatus::WaitingForKafka,
        WaitStatus::Completed => v1::WaitStatus::Completed,
        WaitStatus::TimedOut => v1::WaitStatus::TimedOut,
        WaitStatus::Cancelled => v1::WaitStatus::Cancelled,
        WaitStatus::Failed => v1::WaitStatus::Failed,
    }
}

pub(crate) fn from_status(s: v1::WaitStatus) -> Option<WaitStatus> {
    Some(match s {
        v1::WaitStatus::Unspecified => return None,
        v1::WaitStatus::WaitingForEvents => WaitStatus::WaitingForEvents,
        v1::WaitStatus::WaitingForApi => WaitStatus::WaitingForApi,
        v1::WaitStatus::WaitingForKafka => WaitStatus::WaitingForKafka,
        v1::WaitStatus::Completed => WaitStatus::Completed,
        v1::WaitStatus::TimedOut => WaitStatus::TimedOut,
        v1::WaitStatus::Cancelled => WaitStatus::Cancelled,
        v1::WaitStatus::Failed => WaitStatus::Failed,
    })
}

pub(crate) fn outcome(o: Outcome) -> v1::Outcome {
    match o {
        Outcome::Completed => v1::Outcome::Completed,
        Outcome::Partial => v1::Outcome::Partial,
        Outcome::TimedOut => v1::Outcome::TimedOut,
        Outcome::Cancelled => v1::Outcome::Cancelled,
        Outcome::Failed => v1::Outcome::Failed,
    }
}

fn event(e: &ReceivedEvent) -> v1::SourceEvent {
    v1::SourceEvent {
        source: e.source.to_string(),
        event_key: e.key.to_string(),
        payload_json: e.payload.to_string(),
        received_at: Some(timestamp(e.received_at)),
    }
}

fn ignore_kind(reason: &IgnoreReason) -> &'static str {
    match reason {
        IgnoreReason::ExecutionMismatch { .. } => "execution_mismatch",
        IgnoreReason::NoMatchingSource { .. } => "no_matching_source",
        IgnoreReason::FilteredOut { .. } => "filtered_out",
        IgnoreReason::AlreadySatisfied { .. } => "already_satisfied",
        IgnoreReason::Late { .. } => "late",
        IgnoreReason::OverWaitLimit { .. } => "over_wait_limit",
    }
}

pub(crate) fn wait(w: &StoredWait) -> v1::Wait {
    let s = &w.state;
    let resolution = s.resolution.as_ref();
    v1::Wait {
        wait_id: s.key.id.to_string(),
        tenant_id: s.key.tenant.to_string(),
        correlation_id: s.key.correlation_id.to_string(),
        execution_id: s.key.execution_id.to_string(),
        node_id: s.key.node_id.to_string(),
        workflow_id: w.workflow_id.clone().unwrap_or_default(),
        status: status(s.status()).into(),
        condition: s.spec.condition.to_string(),
        sources: s.spec.sources.iter().map(|x| x.name.to_string()).collect(),
        received: s.received.iter().map(event).collect(),
        waiting_for: s.waiting_for().iter().map(ToString::to_string).collect(),
        missing: s.missing().iter().map(ToString::to_string).collect(),
        ignored: s
            .ignored
            .iter()
            .map(|i| v1::IgnoredEvent {
                event_key: i.key.to_string(),
                at: Some(timestamp(i.at)),
                kind: ignore_kind(&i.reason).into(),
                detail: i.reason.to_string(),
            })
            .collect(),
        ignored_total: s.ignored_total,
        created_at: Some(timestamp(s.created_at)),
        deadline: Some(timestamp(s.deadline)),
        outcome: resolution
            .map_or(v1::Outcome::Unspecified, |r| outcome(r.outcome))
            .into(),
        decided_at: resolution.map(|r| timestamp(r.decided_at)),
        reason: resolution
            .and_then(|r| r.reason.clone())
            .unwrap_or_default(),
        version: w.version,
    }
}

/// The resume message; `trace` is the context the engine continues (a child of the
/// registration's).
pub(crate) fn resume(r: &ResumeRecord, trace: Option<&TraceContext>) -> v1::Resume {
    v1::Resume {
        resume_id: r.resume_id.to_string(),
        wait_id: r.wait_id.to_string(),
        correlation_id: r.correlation_id.to_string(),
        execution_id: r.execution_id.to_string(),
        node_id: r.node_id.to_string(),
        tenant_id: r.tenant.to_string(),
        outcome: outcome(r.outcome).into(),
        events: r.events.iter().map(event).collect(),
        missing_sources: r.missing.iter().map(ToString::to_string).collect(),
        reason: r.reason.clone().unwrap_or_default(),
        registered_at: Some(timestamp(r.registered_at)),
        decided_at: Some(timestamp(r.decided_at)),
        delivery_attempt: r.attempts,
        traceparent: trace.map(|t| t.traceparent.clone()).unwrap_or_default(),
        tracestate: trace.map(|t| t.tracestate.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1, -1001] {
            let t = Timestamp::from_millis(ms);
            let p = timestamp(t);
            assert!((0..1_000_000_000).contains(&p.nanos));
            assert_eq!(from_timestamp(&p), t);
        }
    }
}
