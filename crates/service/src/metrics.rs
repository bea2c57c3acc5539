//! The use cases' metrics, recorded through the process's global OpenTelemetry meter (the app
//! installs the provider before building the service; until then, and in tests that install
//! none, the instruments are no-ops). Labels are closed sets of words, never ids.

use std::sync::LazyLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use rendezvous_domain::{Channel, Timestamp};
use rendezvous_ports::ResumeRecord;

use crate::{Delivered, Effect, Ignored, ServiceError};

/// Histogram bounds, in seconds, from a millisecond to an hour.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
];

struct Instruments {
    registrations: Counter<u64>,
    deliveries: Counter<u64>,
    decisions: Counter<u64>,
    decision_duration: Histogram<f64>,
    resumes_sent: Counter<u64>,
    resume_send_delay: Histogram<f64>,
    resume_ack_delay: Histogram<f64>,
    api_calls: Counter<u64>,
    api_call_duration: Histogram<f64>,
}

static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let meter = opentelemetry::global::meter("rendezvous");
    let seconds = |name: &'static str, description: &'static str| {
        meter
            .f64_histogram(name)
            .with_unit("s")
            .with_description(description)
            .with_boundaries(SECONDS_BUCKETS.to_vec())
            .build()
    };
    Instruments {
        registrations: meter
            .u64_counter("rendezvous.registrations")
            .with_description("RegisterWait calls by outcome: created, idempotent (an earlier registration returned again), refused.")
            .build(),
        deliveries: meter
            .u64_counter("rendezvous.deliveries")
            .with_description("Events delivered, by source (api, event, kafka) and outcome (applied, duplicate, late, buffered, ignored, quarantined, refused).")
            .build(),
        decisions: meter
            .u64_counter("rendezvous.decisions")
            .with_description("Waits decided, by outcome (completed, partial, timed_out, cancelled, failed).")
            .build(),
        decision_duration: seconds(
            "rendezvous.decision.duration",
            "From registration to decision, by outcome.",
        ),
        resumes_sent: meter
            .u64_counter("rendezvous.resumes.sent")
            .with_description("Resumes handed to engine streams: first deliveries and redeliveries.")
            .build(),
        resume_send_delay: seconds(
            "rendezvous.resume.send_delay",
            "From a wait's decision to its resume's first handing to an engine stream.",
        ),
        resume_ack_delay: seconds(
            "rendezvous.resume.ack_delay",
            "From a resume's handing to an engine stream to the engine's ack on that stream.",
        ),
        api_calls: meter
            .u64_counter("rendezvous.api_calls")
            .with_description("Outbound API call attempts by outcome: success, retry (will be tried again), failed (for good).")
            .build(),
        api_call_duration: seconds(
            "rendezvous.api_call.duration",
            "Outbound API call attempts, by outcome.",
        ),
    }
});

/// A `RegisterWait` call's outcome.
pub(crate) fn registered(result: Result<bool, &ServiceError>) {
    let outcome = match result {
        Ok(true) => "created",
        Ok(false) => "idempotent",
        Err(_) => "refused",
    };
    INSTRUMENTS
        .registrations
        .add(1, &[KeyValue::new("outcome", outcome)]);
}

/// A delivery's outcome, by where the event came from.
pub(crate) fn delivered(channel: &Channel, result: Result<&Delivered, &ServiceError>) {
    let outcome = match result {
        Ok(Delivered::Buffered) => "buffered",
        Ok(Delivered::BufferedDuplicate) => "duplicate",
        Ok(Delivered::Applied { effect, .. }) => match effect {
            Effect::Accepted | Effect::Completed => "applied",
            Effect::Duplicate => "duplicate",
            Effect::Ignored {
                why: Ignored::Late, ..
            } => "late",
            Effect::Ignored { .. } => "ignored",
        },
        // A Kafka record the service refuses is quarantined (or retried) by the ingress, which
        // counts it then.
        Err(_) if matches!(channel, Channel::Topic(_)) => return,
        Err(_) => "refused",
    };
    delivery(source(channel), outcome);
}

/// Counts one delivery (`source` api, event or kafka).
pub fn delivery(source: &'static str, outcome: &'static str) {
    INSTRUMENTS.deliveries.add(
        1,
        &[
            KeyValue::new("source", source),
            KeyValue::new("outcome", outcome),
        ],
    );
}

/// The `source` label of a channel: the API response, another named source, or a topic.
fn source(channel: &Channel) -> &'static str {
    match channel {
        Channel::Source(name) if name.as_str() == "api" => "api",
        Channel::Source(_) => "event",
        Channel::Topic(_) => "kafka",
    }
}

/// A wait was decided (its resume committed).
pub(crate) fn decided(resume: Option<&ResumeRecord>) {
    let Some(resume) = resume else { return };
    let outcome = [KeyValue::new("outcome", resume.outcome.as_str())];
    INSTRUMENTS.decisions.add(1, &outcome);
    INSTRUMENTS.decision_duration.record(
        resume.decided_at.seconds_since(resume.registered_at),
        &outcome,
    );
}

/// Resumes were leased to an engine stream at `now`.
pub(crate) fn resumes_sent(resumes: &[ResumeRecord], now: Timestamp) {
    for resume in resumes {
        let first = resume.attempts <= 1;
        INSTRUMENTS.resumes_sent.add(
            1,
            &[KeyValue::new(
                "delivery",
                if first { "first" } else { "redelivery" },
            )],
        );
        if first {
            INSTRUMENTS
                .resume_send_delay
                .record(now.seconds_since(resume.decided_at), &[]);
        }
    }
}

/// An engine acked a resume `seconds` after its stream was handed it.
pub fn resume_acked(seconds: f64) {
    INSTRUMENTS.resume_ack_delay.record(seconds, &[]);
}

/// One outbound call attempt ended (`outcome` success, retry or failed).
pub(crate) fn api_call(outcome: &'static str, seconds: f64) {
    let outcome = [KeyValue::new("outcome", outcome)];
    INSTRUMENTS.api_calls.add(1, &outcome);
    INSTRUMENTS.api_call_duration.record(seconds, &outcome);
}
