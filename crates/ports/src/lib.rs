//! The traits the Rendezvous core needs from the outside world, in domain types.
//!
//! Adapters implement them (`rendezvous-persistence` the store and the resume signal,
//! `rendezvous-http-caller` the HTTP caller; the wall clock, `SystemClock`, is here); the
//! service crate is generic over them. No adapter type (`sea_orm::Model`, `tonic::Status`,
//! `rdkafka::Message`) appears in a signature here. Behind the `test-util` feature,
//! `fakes::ManualClock` lets tests move time by hand.

mod api_call;
mod clock;
mod resume;
mod scope;
mod store;

pub use api_call::{ApiCallRecord, CallFailure, HttpCaller, HttpReply, retry_after};
pub use clock::{Clock, SystemClock};
pub use resume::{ResumeEvent, ResumeRecord};
pub use scope::TenantScope;
pub use store::{
    BufferedEvent, BufferedSummary, ChangeOutcome, FreshWait, Page, PurgeCounts, Quarantined,
    QuarantinedRow, Redelivered, ResumeSignal, ResumeWaiter, Store, StoreError, StoreTx,
    StoredWait, TopicFields, WaitChange, WaitQuery, apply_change_in_tx, apply_change_steps,
    insert_fresh_wait_in_tx, insert_fresh_wait_steps,
};

#[cfg(feature = "test-util")]
pub mod fakes;
