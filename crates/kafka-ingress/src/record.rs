//! One record's way through the ingress: delivered to the service; held (retried with backoff,
//! indefinitely) only while the database is unavailable or the wait is contended; retried a
//! bounded number of times after any other failure and then quarantined with its reason; and,
//! should even the quarantine insert keep failing for another reason than unavailability,
//! logged and passed over. One record never stalls its partition.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::message::{Headers, Message, OwnedMessage};
use rendezvous_domain::limits::{MAX_RECORDED_REASON_BYTES, truncate_reason};
use rendezvous_domain::{Channel, CorrelationId, EventKey, ExecutionId};
use rendezvous_ports::{Clock, Quarantined, ResumeSignal, Store};
use rendezvous_service::parse::{optional, required, tenant};
use rendezvous_service::{Delivered, Delivery, Effect, ServiceError};
use tokio::sync::watch;

use crate::extract::{Extracted, Record, TopicIndex};
use crate::ingress::KafkaIngress;

/// How many times a record is tried when it fails for another reason than database
/// unavailability (an internal error) before it is quarantined; also how many times its
/// quarantine insert is tried before the record is logged and passed over.
pub const MAX_RECORD_ATTEMPTS: u32 = 3;

/// The longest pause between two attempts at a record held by an unavailable database.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a failure is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The database is away or the wait contended: not the record's fault; hold the
    /// partition and retry until it works.
    Hold,
    /// Something unexpected: retry a bounded number of times, then quarantine.
    Bounded,
    /// The record itself is refused: quarantine at once.
    Refused,
}

fn class(e: &ServiceError) -> Class {
    match e {
        ServiceError::Unavailable(_) | ServiceError::Contended { .. } => Class::Hold,
        ServiceError::Internal(_) => Class::Bounded,
        ServiceError::Invalid { .. }
        | ServiceError::InvalidConfig(_)
        | ServiceError::TooLarge { .. }
        | ServiceError::NotFound(_)
        | ServiceError::AlreadyExists(_)
        | ServiceError::ExecutionMismatch(_)
        | ServiceError::NotReady(_)
        | ServiceError::PermissionDenied(_) => Class::Refused,
    }
}

/// Why one attempt at a record failed.
struct Failure {
    /// The event key and correlation id, when they were found.
    ids: Option<(String, String)>,
    /// The reason, as recorded with the quarantined record.
    reason: String,
    class: Class,
}

/// Doubling pauses between attempts, up to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(50))
    }

    /// Sleeps the next pause; false when `shutdown` turned true meanwhile.
    async fn sleep(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let pause = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = tokio::time::sleep(pause) => true,
            _ = shutdown.wait_for(|s| *s) => false,
        }
    }
}

impl<S: Store, G: ResumeSignal, C: Clock> KafkaIngress<S, G, C> {
    /// Handles one record until it is done: applied, buffered, a duplicate, quarantined, or
    /// (when even quarantining it fails) logged and passed over. Only database unavailability
    /// holds it. False on shutdown: the record is not done and its offset must not be stored.
    pub(crate) async fn handle_until_done(
        &self,
        read: &Result<Extracted, String>,
        message: &OwnedMessage,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let span = consume_span(message);
        tracing::Instrument::instrument(self.handle_in_span(read, message, shutdown), span).await
    }

    /// What a record carries (see [`extract`]), or the reason to quarantine it. Read once per
    /// record: the ids it yields decide which records may be handled concurrently.
    pub(crate) fn read(
        &self,
        index: &TopicIndex,
        message: &OwnedMessage,
    ) -> Result<Extracted, String> {
        let headers = utf8_headers(message);
        let record = Record {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            value: message.payload(),
            headers: &headers,
        };
        self.config
            .extract(index, record, self.service.topic_policy())
    }

    async fn handle_in_span(
        &self,
        read: &Result<Extracted, String>,
        message: &OwnedMessage,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = Backoff::new();
        let mut failures = 0;
        let (ids, reason) = loop {
            let failure = match self.try_record(read, message).await {
                Ok(()) => return true,
                Err(failure) => failure,
            };
            match failure.class {
                Class::Hold => {}
                Class::Refused => break (failure.ids, failure.reason),
                Class::Bounded => {
                    failures += 1;
                    if failures >= self.config.max_record_attempts {
                        let reason =
                            format!("{} (gave up after {failures} attempts)", failure.reason);
                        break (failure.ids, reason);
                    }
                }
            }
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                error = %failure.reason,
                attempt = failures,
                "cannot process record; retrying"
            );
            if !backoff.sleep(shutdown).await {
                return false;
            }
        };
        self.quarantine_until_done(message, ids, reason, shutdown)
            .await
    }

    /// Quarantines a record, holding while the database is unavailable; after
    /// [`IngressConfig::max_record_attempts`](crate::IngressConfig) other failures it logs
    /// the record (topic, partition, offset, reason) and passes over it.
    async fn quarantine_until_done(
        &self,
        message: &OwnedMessage,
        ids: Option<(String, String)>,
        reason: String,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let quarantined = Quarantined {
            origin: format!(
                "{}{}/{}/{}",
                Quarantined::KAFKA_ORIGIN,
                message.topic(),
                message.partition(),
                message.offset()
            ),
            event_key: ids.as_ref().map(|ids| ids.0.clone()),
            correlation_id: ids.map(|ids| ids.1),
            payload: message
                .payload()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
            reason: truncate_reason(&reason, MAX_RECORDED_REASON_BYTES),
            at: self.service.now(),
            tenant: None,
            // What a replay reads again; a value that is not UTF-8 could not be kept as it was.
            headers: message
                .payload()
                .is_none_or(|p| std::str::from_utf8(p).is_ok())
                .then(|| utf8_headers(message)),
        };
        let mut backoff = Backoff::new();
        let mut failures = 0;
        loop {
            let e = match self.service.quarantine(quarantined.clone()).await {
                Ok(()) => {
                    self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                    rendezvous_service::metrics::delivery("kafka", "quarantined");
                    return true;
                }
                Err(e) => e,
            };
            if class(&e) != Class::Hold {
                failures += 1;
                if failures >= self.config.max_record_attempts {
                    tracing::error!(
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        reason = %quarantined.reason,
                        error = %e,
                        "cannot quarantine the record; passing over it so its partition goes on"
                    );
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
            }
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                error = %e,
                "cannot quarantine record; retrying"
            );
            if !backoff.sleep(shutdown).await {
                return false;
            }
        }
    }

    /// One attempt at a record.
    async fn try_record(
        &self,
        read: &Result<Extracted, String>,
        message: &OwnedMessage,
    ) -> Result<(), Failure> {
        let extracted = read.clone().map_err(|reason| Failure {
            ids: None,
            reason,
            class: Class::Refused,
        })?;
        let ids = (
            extracted.event_key.clone(),
            extracted.correlation_id.clone(),
        );
        let size = message.payload().map_or(0, <[u8]>::len);
        let result = match delivery(extracted, message.topic(), size) {
            Ok(delivery) => self.service.deliver(delivery).await,
            Err(e) => Err(e),
        };
        let counter = match result {
            Ok(Delivered::Buffered) => &self.stats.buffered,
            Ok(Delivered::BufferedDuplicate) => &self.stats.duplicates,
            Ok(Delivered::Applied {
                effect: Effect::Duplicate,
                ..
            }) => &self.stats.duplicates,
            Ok(Delivered::Applied { .. }) => &self.stats.applied,
            Err(e) => {
                return Err(Failure {
                    ids: Some(ids),
                    reason: e.to_string(),
                    class: class(&e),
                });
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A record's headers with UTF-8 values (the others are not read).
fn utf8_headers(message: &OwnedMessage) -> BTreeMap<String, String> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .filter_map(|h| {
                    Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A record's ids, parsed into the service's delivery command (a bad id is refused naming
/// the field, and the record quarantined with that reason).
pub(crate) fn delivery(x: Extracted, topic: &str, size: usize) -> Result<Delivery, ServiceError> {
    Ok(Delivery {
        tenant: tenant(&x.tenant_id)?,
        correlation_id: required("correlation_id", &x.correlation_id, CorrelationId::parse)?,
        execution_id: optional(
            "execution_id",
            x.execution_id.as_deref().unwrap_or_default(),
            ExecutionId::parse,
        )?,
        channel: Channel::Topic(topic.to_owned()),
        payload: x.payload,
        size,
        event_key: required("event_key", &x.event_key, EventKey::parse)?,
    })
}

/// The CONSUMER span of one record (messaging semantic conventions), continuing the trace of
/// the record's `traceparent` header when it has a valid one: the service's work on the event
/// (and a decision it makes) joins the producer's trace.
fn consume_span(message: &OwnedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "kafka.process",
        otel.name = %format_args!("process {}", message.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = message.topic(),
        messaging.destination.partition.id = message.partition(),
        messaging.kafka.offset = message.offset(),
    );
    let header = |name: &str| {
        message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| std::str::from_utf8(h.value?).ok())
        })
    };
    let parent = header("traceparent")
        .and_then(|tp| rendezvous_domain::TraceContext::parse(tp, header("tracestate")));
    rendezvous_service::trace::continue_trace(&span, parent.as_ref());
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailability_and_contention_hold_a_partition() {
        assert_eq!(class(&ServiceError::Unavailable("db".into())), Class::Hold);
        assert_eq!(
            class(&ServiceError::Contended { what: "w".into() }),
            Class::Hold
        );
        assert_eq!(class(&ServiceError::Internal("bug".into())), Class::Bounded);
        assert_eq!(class(&ServiceError::invalid("f", "bad")), Class::Refused);
        assert_eq!(
            class(&ServiceError::ExecutionMismatch("x".into())),
            Class::Refused
        );
    }
}
