//! Pure aggregation rules of Rendezvous: node configs, strategies and the wait state machine.
//!
//! Nothing here performs I/O or reads a clock; the service layer loads state, calls into this
//! crate, stores the result and performs the effects. A test over `cargo metadata` (in xtask)
//! keeps tokio, tonic, sea-orm, sqlx, rdkafka and hyper out of this crate's dependency tree.

pub mod condition;
pub mod destination;
pub mod event;
pub mod filter;
pub mod ids;
pub mod limits;
pub mod path;
pub mod problems;
pub mod request;
pub mod spec;
pub mod state;
pub mod trace;

pub use condition::Condition;
pub use destination::{
    AllowedDestination, DestinationError, Destinations, is_private, non_public_range,
};
pub use event::{Channel, IncomingEvent, ReceivedEvent};
pub use filter::{Filter, FilterMiss};
pub use ids::{
    CorrelationId, EventKey, ExecutionId, IdError, IdempotencyKey, LeaseOwner, NodeId, ResumeId,
    SourceName, TenantId, Timestamp, WaitId,
};
pub use limits::{JsonError, parse_json, parse_json_slice};
pub use path::FieldPath;
pub use problems::{ConfigErrors, ConfigProblem};
pub use request::ApiRequest;
pub use spec::{
    ApiCall, HttpMethod, KafkaSource, ResponseMode, SourceKind, SourceSpec, Strategy,
    TimeoutPolicy, WaitSpec,
};
pub use state::{
    IgnoreReason, IgnoredEvent, Outcome, Resolution, Step, Verdict, WaitKey, WaitState, WaitStatus,
};
pub use trace::TraceContext;
