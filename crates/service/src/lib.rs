//! The Rendezvous use cases — register a wait, deliver an event, time out, cancel, make the
//! outbound API call, feed resumes to engines, inspect — generic over the ports in
//! `rendezvous-ports`.
//!
//! This crate is the imperative shell around the pure domain: it loads a wait through the
//! store port, asks `rendezvous-domain` what an event, a deadline or a cancellation does to it,
//! and stores the new state together with its effects (the inbox row, the resume outbox row,
//! the outbound call) in one transaction. Every state change is a compare-and-set on the
//! wait's version; a conflict reloads, re-applies the pure rule and retries (bounded, with
//! jitter). It knows no transport and no database; adapters build its typed commands
//! (`requests.rs`, with `parse`) and call it, the persistence adapter serves it. `metrics.rs`
//! counts what the use cases do through the process's OpenTelemetry meter; `replay.rs` sends
//! quarantined events back through the door they came in by.

mod access;
mod calls;
mod close;
mod config;
mod deliver;
mod dispatch;
mod error;
mod inspect;
pub mod metrics;
mod outage;
pub mod parse;
mod register;
pub use register::CALLBACK_URL_VARIABLE;
mod replay;
mod requests;
mod resumes;
mod retention;
mod service;
mod topics;
pub mod trace;

pub use access::{Principal, Role, Tenants};
pub use config::{ApiPolicy, ServiceConfig};
pub use dispatch::DEFER as API_CALL_DEFER;
pub use error::ServiceError;
pub use outage::Outage;
pub use replay::{MAX_REPLAY_IDS, RecordReader, Replayed};
pub use requests::{Delivered, Delivery, Effect, Ignored, RegisterWait, Registered, WaitLookup};
pub use retention::{MAX_PURGE_ROUNDS, Purged};
pub use service::WaitService;
pub use topics::{TopicPattern, TopicPolicy, TopicTenancy, check_topic_name};
