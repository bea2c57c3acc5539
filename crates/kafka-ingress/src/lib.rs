//! The Kafka ingress of Rendezvous: an rdkafka consumer group that reads the topics named by
//! registered waits, extracts correlation and execution ids, and hands each event to the
//! service's ingest use case, committing offsets only after the event's effect is durable.
//!
//! The only crate allowed to depend on rdkafka.
