//! Caller text into validated ids, with the field named in the error: the one vocabulary the
//! adapters (gRPC, Kafka) use to build typed commands at their edge.

use rendezvous_domain::{IdError, SourceName, TenantId};

use crate::ServiceError;

/// A tenant id; empty means the default tenant.
pub fn tenant(raw: &str) -> Result<TenantId, ServiceError> {
    if raw.is_empty() {
        Ok(TenantId::default_tenant())
    } else {
        TenantId::parse(raw).map_err(|e| ServiceError::invalid("tenant_id", e.reason))
    }
}

/// A tenant id to filter by; empty means any tenant.
pub fn tenant_filter(raw: &str) -> Result<Option<TenantId>, ServiceError> {
    optional("tenant_id", raw, TenantId::parse)
}

/// A field that must be present.
pub fn required<T>(
    field: &str,
    raw: &str,
    parse: impl FnOnce(String) -> Result<T, IdError>,
) -> Result<T, ServiceError> {
    if raw.is_empty() {
        return Err(ServiceError::invalid(field, "required"));
    }
    parse(raw.to_owned()).map_err(|e| ServiceError::invalid(field, e.reason))
}

/// A field that may be empty (`None`).
pub fn optional<T>(
    field: &str,
    raw: &str,
    parse: impl FnOnce(String) -> Result<T, IdError>,
) -> Result<Option<T>, ServiceError> {
    if raw.is_empty() {
        return Ok(None);
    }
    parse(raw.to_owned())
        .map(Some)
        .map_err(|e| ServiceError::invalid(field, e.reason))
}

/// A source name given by a caller.
pub fn source_name(field: &str, raw: &str) -> Result<SourceName, ServiceError> {
    required(field, raw, SourceName::parse)
}

#[cfg(test)]
mod tests {
    use rendezvous_domain::CorrelationId;

    use super::*;

    #[test]
    fn errors_name_the_field() {
        let e = required("correlation_id", "", CorrelationId::parse).unwrap_err();
        assert_eq!(e.to_string(), "correlation_id: required");
        let e = required("correlation_id", " padded ", CorrelationId::parse).unwrap_err();
        assert!(e.to_string().starts_with("correlation_id: "), "{e}");
        assert_eq!(tenant("").unwrap(), TenantId::default_tenant());
        assert_eq!(tenant_filter("").unwrap(), None);
        assert!(
            tenant("bad\u{7}")
                .unwrap_err()
                .to_string()
                .starts_with("tenant_id: ")
        );
        assert_eq!(optional("x", "", CorrelationId::parse).unwrap(), None);
    }
}
