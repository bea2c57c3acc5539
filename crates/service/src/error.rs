//! The errors of the use cases: variants a caller can act on, plus one opaque catch-all.

use rendezvous_domain::ConfigErrors;
use rendezvous_ports::StoreError;

/// What went wrong in a use case. Adapters map these to their protocol in one place, and ask
/// [`ServiceError::is_retryable`] whether the same request may succeed later.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The caller's credential does not allow this (a role it lacks, a tenant not its own).
    #[error("{0}")]
    PermissionDenied(String),
    /// The wait is not in the state the request needs (a resume redelivered for a wait still
    /// open).
    #[error("{0}")]
    NotReady(String),
    /// Optimistic-lock conflicts kept winning; retrying is safe.
    #[error("{what} is contended by concurrent writers; retry")]
    Contended {
        /// What was contended (`wait <id>`, `correlation id <id>`, `registration of ...`).
        what: String,
    },
    /// The database is unreachable; retrying later is safe.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else. Nothing half-done was committed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// A malformed or missing field.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// Whether the same request may succeed when tried again later: the database was away, a
    /// race was lost too often, or something unexpected happened (nothing half-done was
    /// committed). The request itself was not at fault, so it must not be set aside. Every
    /// other error is the request's own and will not change by retrying.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Contended { .. } | Self::Internal(_) => true,
            Self::Invalid { .. }
            | Self::InvalidConfig(_)
            | Self::TooLarge { .. }
            | Self::NotFound(_)
            | Self::AlreadyExists(_)
            | Self::ExecutionMismatch(_)
            | Self::NotReady(_)
            | Self::PermissionDenied(_) => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_of_the_moment_are_retryable() {
        assert!(ServiceError::Unavailable("db".into()).is_retryable());
        assert!(
            ServiceError::Contended {
                what: "wait".into()
            }
            .is_retryable()
        );
        assert!(ServiceError::Internal("bug".into()).is_retryable());
        assert!(!ServiceError::invalid("f", "bad").is_retryable());
        assert!(!ServiceError::NotFound("x".into()).is_retryable());
        assert!(!ServiceError::ExecutionMismatch("x".into()).is_retryable());
        assert!(!ServiceError::AlreadyExists("x".into()).is_retryable());
        assert!(
            !ServiceError::TooLarge {
                what: "x".into(),
                size: 2,
                limit: 1
            }
            .is_retryable()
        );
    }

    #[test]
    fn contended_names_its_subject() {
        let e = ServiceError::Contended {
            what: "correlation id c-1".into(),
        };
        assert_eq!(
            e.to_string(),
            "correlation id c-1 is contended by concurrent writers; retry"
        );
    }
}
