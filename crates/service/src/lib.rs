//! The Rendezvous use cases — register a wait, ingest an event, expire, resume, cancel —
//! generic over the ports in `rendezvous-ports`.
//!
//! This crate is the imperative shell around the pure domain: it loads a wait through a port,
//! asks `rendezvous-domain` what an event or a deadline does to it, and stores the result and
//! its effects (the resume outbox row, the outbound call) in one transaction. It knows no
//! transport and no database; the gRPC and Kafka adapters call it, the persistence adapter
//! serves it.
