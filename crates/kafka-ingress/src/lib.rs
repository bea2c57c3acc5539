//! The Kafka ingress of Rendezvous: an rdkafka consumer group that reads the topics of
//! registered waits, finds each event's correlation id, execution id and identity, and hands it
//! to the service's ingest use case. Offsets are stored only after the event's effect is
//! durable; what cannot be processed is quarantined with a reason so a partition never stalls,
//! and only database unavailability holds a partition. Topics that do not exist are left out
//! of the subscription until they do, so they never disturb the others. Only topics the
//! service's topic policy allows are consumed, and a record's tenant is its topic's (a tenant
//! header is honoured only where the topic's configuration says so).
//!
//! The only crate allowed to depend on rdkafka.

mod embedded;
mod extract;
mod ingress;
mod metrics;
mod record;
mod replay;
mod subscription;

pub use embedded::EmbeddedKafka;
pub use extract::{Extracted, Naming, Record, TopicIndex, extract};
pub use ingress::{IngressConfig, IngressError, IngressStats, KafkaIngress};
pub use record::MAX_RECORD_ATTEMPTS;
pub use replay::RecordReplay;
