//! Caller text into validated ids, with the field named in the error: the one vocabulary the
//! adapters (gRPC, Kafka) use to build typed commands at their edge.

use rendezvous_domain::ids::MAX_ID_LEN;
use rendezvous_domain::limits::MAX_JSON_DEPTH;
use rendezvous_domain::{IdError, SourceName, TenantId, parse_json_slice};
use serde_json::Value;

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

/// A JSON document a caller sent: at most [`MAX_JSON_DEPTH`] levels deep (so anything stored
/// can be read back), no key given twice in one object.
pub fn json(field: &str, raw: &[u8]) -> Result<Value, ServiceError> {
    if raw.is_empty() {
        return Err(ServiceError::invalid(field, "required"));
    }
    parse_json_slice(raw, MAX_JSON_DEPTH).map_err(|e| ServiceError::invalid(field, e))
}

/// A free-text label (a workflow id): at most [`MAX_ID_LEN`] bytes; empty means none.
pub fn label(field: &str, raw: String) -> Result<Option<String>, ServiceError> {
    if raw.len() > MAX_ID_LEN {
        return Err(ServiceError::invalid(
            field,
            format!("is {} bytes, the limit is {MAX_ID_LEN}", raw.len()),
        ));
    }
    Ok((!raw.is_empty()).then_some(raw))
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

    #[test]
    fn json_is_bounded_and_names_the_field() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        let e = json("payload_json", deep.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "payload_json: nests deeper than the limit of 64 levels"
        );
        let e = json("payload_json", br#"{"a":1,"a":2}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key"), "{e}");
        assert_eq!(
            json("payload_json", b"").unwrap_err().to_string(),
            "payload_json: required"
        );
        assert!(label("workflow_id", "w".repeat(257)).is_err());
        assert_eq!(label("workflow_id", String::new()).unwrap(), None);
    }
}
