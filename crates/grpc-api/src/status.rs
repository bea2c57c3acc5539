//! The one place where service errors become gRPC statuses (see the error model in the proto).

use rendezvous_service::ServiceError;
use tonic::{Code, Status};

/// Maps a service error to its gRPC status. The message always names what was wrong.
pub fn to_status(error: ServiceError) -> Status {
    let code = match &error {
        ServiceError::Invalid { .. } | ServiceError::InvalidConfig(_) => Code::InvalidArgument,
        ServiceError::TooLarge { .. } => Code::ResourceExhausted,
        ServiceError::NotFound(_) => Code::NotFound,
        ServiceError::AlreadyExists(_) => Code::AlreadyExists,
        ServiceError::ExecutionMismatch(_) | ServiceError::NotReady(_) => Code::FailedPrecondition,
        ServiceError::PermissionDenied(_) => Code::PermissionDenied,
        ServiceError::Contended { .. } => Code::Aborted,
        ServiceError::Unavailable(_) => Code::Unavailable,
        ServiceError::Internal(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %error, "internal error");
    }
    Status::new(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_documented_error_model() {
        let cases = [
            (
                ServiceError::Invalid {
                    field: "node_id".into(),
                    reason: "required".into(),
                },
                Code::InvalidArgument,
                "node_id: required",
            ),
            (
                ServiceError::TooLarge {
                    what: "event payload".into(),
                    size: 9,
                    limit: 8,
                },
                Code::ResourceExhausted,
                "limit of 8 bytes",
            ),
            (
                ServiceError::NotFound("no wait".into()),
                Code::NotFound,
                "no wait",
            ),
            (
                ServiceError::AlreadyExists("taken".into()),
                Code::AlreadyExists,
                "taken",
            ),
            (
                ServiceError::ExecutionMismatch("mismatch".into()),
                Code::FailedPrecondition,
                "mismatch",
            ),
            (
                ServiceError::NotReady("still open".into()),
                Code::FailedPrecondition,
                "still open",
            ),
            (
                ServiceError::PermissionDenied("tenant b".into()),
                Code::PermissionDenied,
                "tenant b",
            ),
            (
                ServiceError::Contended {
                    what: "wait w".into(),
                },
                Code::Aborted,
                "wait w is contended",
            ),
            (
                ServiceError::Unavailable("db down".into()),
                Code::Unavailable,
                "db down",
            ),
            (ServiceError::Internal("bug".into()), Code::Internal, "bug"),
        ];
        for (error, code, words) in cases {
            // What the service calls retryable is what the proto tells callers they may retry.
            assert_eq!(
                error.is_retryable(),
                matches!(code, Code::Unavailable | Code::Aborted | Code::Internal),
                "{error:?}"
            );
            let status = to_status(error);
            assert_eq!(status.code(), code);
            assert!(status.message().contains(words), "{}", status.message());
        }
    }
}
