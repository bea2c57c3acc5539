//! The Rendezvous use cases — register a wait, ingest an event, expire, resume, cancel —
//! generic over the ports in `rendezvous-ports`.
//!
//! This crate is the imperative shell around the pure domain: it loads a wait through the
//! store port, asks `rendezvous-domain` what an event, a deadline or a cancellation does to it,
//! and stores the new state together with its effects (the inbox row, the resume outbox row) in
//! one transaction. Every state change is a compare-and-set on the wait's version; a conflict
//! reloads, re-applies the pure rule and retries (bounded, with jitter). It knows no transport
//! and no database; the gRPC and Kafka adapters call it, the persistence adapter serves it.

mod error;
mod service;

pub use error::ServiceError;
pub use service::{
    ApiPolicy, Delivered, Delivery, RegisterWait, Registered, ServiceConfig, WaitLookup,
    WaitService, is_private, source_name,
};
