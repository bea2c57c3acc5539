//! Replaying quarantined events: an operator sends an event set aside back through the door it
//! came in by, as it was received. A Kafka record is read again by the Kafka ingress (with the
//! topics waits name now: the usual cure for a record that came before any wait said where its
//! ids are); an early event that expired unclaimed is delivered again. An event taken leaves
//! the quarantine; one refused again stays with the new reason. A replay is a delivery like any
//! other, so the event's key makes a second replay of the same event a duplicate.

use futures_util::future::BoxFuture;
use rendezvous_domain::limits::{
    MAX_JSON_DEPTH, MAX_RECORDED_REASON_BYTES, parse_json, truncate_reason,
};
use rendezvous_domain::{CorrelationId, IncomingEvent};
use rendezvous_ports::{Clock, Quarantined, ResumeSignal, Store};

use crate::parse::{required, tenant};
use crate::{Delivered, Delivery, Effect, ServiceError, WaitService};

/// Most events one replay request names.
pub const MAX_REPLAY_IDS: usize = 100;

/// Reads a quarantined Kafka record again into the delivery it makes today. Implemented by the
/// Kafka ingress, which knows where records carry their ids; an instance without one cannot
/// replay records.
pub trait RecordReader: Send + Sync {
    /// The delivery of the record `event` kept (its origin, headers and value), or why it is
    /// refused again. A retryable error (the database is away) leaves the row as it is.
    fn read<'a>(&'a self, event: &'a Quarantined) -> BoxFuture<'a, Result<Delivery, ServiceError>>;
}

/// What replaying one quarantined event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Applied to its wait; it left the quarantine.
    Applied,
    /// Buffered for a wait that does not exist yet; it left the quarantine.
    Buffered,
    /// Processed or buffered before (an earlier replay took it); it left the quarantine.
    Duplicate,
    /// Refused again: it stays, with this reason.
    Refused(String),
    /// It cannot be sent again, for this reason; it stays.
    NotReplayable(String),
    /// No quarantined event has this id.
    NotFound,
}

impl Replayed {
    /// The outcome as one word, for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Buffered => "buffered",
            Self::Duplicate => "duplicate",
            Self::Refused(_) => "refused",
            Self::NotReplayable(_) => "not replayable",
            Self::NotFound => "not found",
        }
    }
}

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// Replays the quarantined event `id` (see the module documentation); `records` reads Kafka
    /// records, when this instance has a Kafka ingress. Fails only when the outcome is not
    /// known (the database is away; the row is then as it was).
    pub async fn replay(
        &self,
        id: i64,
        records: Option<&dyn RecordReader>,
    ) -> Result<Replayed, ServiceError> {
        let Some(row) = self.store.quarantined_event(id).await? else {
            return Ok(Replayed::NotFound);
        };
        let event = &row.event;
        if !event.replayable() {
            return Ok(Replayed::NotReplayable(why_not(event)));
        }
        let delivery = if event.origin == Quarantined::BUFFER_ORIGIN {
            buffered_delivery(event)
        } else if let Some(records) = records {
            records.read(event).await
        } else {
            return Ok(Replayed::NotReplayable(
                "this instance has no Kafka ingress to read the record with; replay it on one that has".into(),
            ));
        };
        let outcome = match delivery {
            Ok(delivery) => match self.deliver(delivery).await {
                Ok(Delivered::Buffered) => Replayed::Buffered,
                Ok(Delivered::BufferedDuplicate) => Replayed::Duplicate,
                Ok(Delivered::Applied {
                    effect: Effect::Duplicate,
                    ..
                }) => Replayed::Duplicate,
                Ok(Delivered::Applied { .. }) => Replayed::Applied,
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => Replayed::Refused(e.to_string()),
            },
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => Replayed::Refused(e.to_string()),
        };
        let outcome = match outcome {
            Replayed::Refused(reason) => {
                Replayed::Refused(truncate_reason(&reason, MAX_RECORDED_REASON_BYTES))
            }
            other => other,
        };
        let refused = match &outcome {
            Replayed::Refused(reason) => Some(reason.as_str()),
            _ => None,
        };
        self.store.settle_replay(id, refused).await?;
        tracing::info!(quarantined_id = id, origin = %event.origin, outcome = outcome.as_str(), reason = refused, "quarantined event replayed by an operator");
        Ok(outcome)
    }
}

/// Why an event cannot be replayed (see [`Quarantined::replayable`]).
fn why_not(event: &Quarantined) -> String {
    if event.origin.starts_with(Quarantined::KAFKA_ORIGIN) {
        "the record was kept without its headers (its value was not UTF-8, or it was quarantined before headers were kept)".into()
    } else if event.origin == Quarantined::BUFFER_ORIGIN {
        "the early event was kept without its tenant (it was quarantined before tenants were kept, or it could not be read)".into()
    } else {
        format!(
            "{} is stored state set aside because it could not be read, not an event",
            event.origin
        )
    }
}

/// The delivery of an early event that expired: the event as it was buffered, for its tenant
/// and correlation id.
fn buffered_delivery(event: &Quarantined) -> Result<Delivery, ServiceError> {
    let unreadable = |e: String| {
        ServiceError::invalid("event", format!("the kept early event cannot be read: {e}"))
    };
    let value =
        parse_json(&event.payload, MAX_JSON_DEPTH).map_err(|e| unreadable(e.to_string()))?;
    let buffered: IncomingEvent =
        serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?;
    Ok(Delivery {
        tenant: tenant(event.tenant.as_deref().unwrap_or_default())?,
        correlation_id: required(
            "correlation_id",
            event.correlation_id.as_deref().unwrap_or_default(),
            CorrelationId::parse,
        )?,
        execution_id: buffered.execution_id,
        channel: buffered.channel,
        size: serde_json::to_vec(&buffered.payload).map_or(0, |v| v.len()),
        payload: buffered.payload,
        event_key: buffered.key,
    })
}
