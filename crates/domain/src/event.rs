//! Events as they reach a wait: where they came from, who they claim to belong to, what they say.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{EventKey, ExecutionId, SourceName, Timestamp};

/// How an event reached the service, which decides the source it may count for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Addressed to a source by name: `DeliverApiResponse` (source `api`) and `DeliverEvent`.
    Source(SourceName),
    /// Read from a Kafka topic: counts for the wait's Kafka sources on that topic whose filter
    /// accepts it.
    Topic(String),
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Source(name) => write!(f, "source {name}"),
            Self::Topic(topic) => write!(f, "topic {topic}"),
        }
    }
}

/// One event offered to a wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncomingEvent {
    /// Its identity: a redelivery carries the same key.
    pub key: EventKey,
    /// Where it came from.
    pub channel: Channel,
    /// The execution id it carries (from the RPC, or a Kafka header). When absent, a Kafka
    /// source looks in the body at its `executionIdField`.
    pub execution_id: Option<ExecutionId>,
    /// The event body. For the API source: `{"status": .., "headers": {..}, "body": ..}`.
    pub payload: Value,
    /// When the service received it.
    pub received_at: Timestamp,
}

/// An event a wait accepted for one of its sources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedEvent {
    /// The source it satisfied.
    pub source: SourceName,
    /// Its identity.
    pub key: EventKey,
    /// Its body.
    pub payload: Value,
    /// When it was received.
    pub received_at: Timestamp,
}
