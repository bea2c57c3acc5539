//! Replaying a quarantined Kafka record: the record as it was kept (its origin names topic,
//! partition and offset; its value and UTF-8 headers) goes through the same extraction as a
//! record read from the broker, with the topics waits name now, into the service's delivery.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rendezvous_ports::{Clock, Quarantined, ResumeSignal, Store};
use rendezvous_service::{Delivery, RecordReader, ServiceError, WaitService};

use crate::extract::{Record, TopicIndex};
use crate::ingress::IngressConfig;
use crate::record::delivery;

/// Reads quarantined records again (see the module documentation).
pub struct RecordReplay<S, G, C> {
    service: Arc<WaitService<S, G, C>>,
    config: IngressConfig,
}

impl<S: Store, G: ResumeSignal, C: Clock> RecordReplay<S, G, C> {
    /// A reader with the ingress's naming (event id field, tenant header).
    pub fn new(service: Arc<WaitService<S, G, C>>, config: IngressConfig) -> Self {
        Self { service, config }
    }

    async fn read_record(&self, event: &Quarantined) -> Result<Delivery, ServiceError> {
        let refused = |reason: String| ServiceError::invalid("record", reason);
        let (topic, partition, offset) = origin(&event.origin).ok_or_else(|| {
            refused(format!(
                "origin {} names no topic, partition and offset",
                event.origin
            ))
        })?;
        let headers = event.headers.clone().unwrap_or_default();
        let value = event.payload.as_bytes();
        let index = TopicIndex::new(&self.service.kafka_topics().await?);
        let record = Record {
            topic,
            partition,
            offset,
            value: (!value.is_empty()).then_some(value),
            headers: &headers,
        };
        let extracted = self
            .config
            .extract(&index, record, self.service.topic_policy())
            .map_err(refused)?;
        delivery(extracted, topic, value.len())
    }
}

impl<S: Store, G: ResumeSignal, C: Clock> RecordReader for RecordReplay<S, G, C> {
    fn read<'a>(&'a self, event: &'a Quarantined) -> BoxFuture<'a, Result<Delivery, ServiceError>> {
        self.read_record(event).boxed()
    }
}

/// Topic, partition and offset of `kafka:<topic>/<partition>/<offset>` (a topic name has no
/// `/`).
fn origin(origin: &str) -> Option<(&str, i32, i64)> {
    let rest = origin.strip_prefix(Quarantined::KAFKA_ORIGIN)?;
    let mut parts = rest.rsplitn(3, '/');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next().filter(|t| !t.is_empty())?;
    Some((topic, partition, offset))
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn an_origin_names_topic_partition_and_offset() {
        assert_eq!(origin("kafka:orders.v1/3/42"), Some(("orders.v1", 3, 42)));
        for bad in [
            "kafka:/0/1",
            "kafka:t/x/1",
            "kafka:t/0",
            "buffer",
            "kafka:t/0/1/2x",
        ] {
            assert_eq!(origin(bad), None, "{bad}");
        }
    }
}
