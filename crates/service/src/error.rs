//! The errors of the use cases: variants a caller can act on, plus one opaque catch-all.

use rendezvous_domain::ConfigErrors;
use rendezvous_ports::StoreError;

/// What went wrong in a use case. Adapters map these to their protocol in one place.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A request field is missing or malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as the caller named it.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The node config is invalid; every problem, each with its JSON path.
    #[error("node_config: {0}")]
    InvalidConfig(ConfigErrors),
    /// A payload or config is over a size limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No such wait.
    #[error("{0}")]
    NotFound(String),
    /// A uniqueness rule refused the request (idempotency key reused with another config, a
    /// correlation id already taken).
    #[error("{0}")]
    AlreadyExists(String),
    /// The event's execution id does not match the wait's. Recorded on the wait, not applied.
    #[error("{0}")]
    ExecutionMismatch(String),
    /// Optimistic-lock conflicts kept winning; retrying is safe.
    #[error("wait {0} is contended by concurrent writers; retry")]
    Contended(String),
    /// The database is unreachable; retrying later is safe.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else. Nothing half-done was committed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(detail) => Self::AlreadyExists(detail),
            StoreError::Unavailable(detail) => Self::Unavailable(detail),
            StoreError::Other(detail) => Self::Internal(detail),
        }
    }
}
