//! Validated identifiers and the timestamp type: newtypes parsed once at the boundary.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused by its `parse` constructor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct IdError {
    /// Which kind of identifier was being parsed (`correlation id`, `source name`, ...).
    pub kind: &'static str,
    /// What was wrong with it.
    pub reason: String,
}

/// Longest accepted free-form identifier (correlation, execution, node, tenant ids, event keys).
pub const MAX_ID_LEN: usize = 256;

fn check_free_form(kind: &'static str, raw: &str) -> Result<(), IdError> {
    let fail = |reason: String| Err(IdError { kind, reason });
    if raw.is_empty() {
        return fail("must not be empty".into());
    }
    if raw.len() > MAX_ID_LEN {
        return fail(format!("is {} bytes, the limit is {MAX_ID_LEN}", raw.len()));
    }
    if raw.trim() != raw {
        return fail("must not start or end with white space".into());
    }
    if raw.chars().any(char::is_control) {
        return fail("must not contain control characters".into());
    }
    Ok(())
}

macro_rules! free_form_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `raw`: non-empty, at most [`MAX_ID_LEN`] bytes, no control characters,
            /// no surrounding white space.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                check_free_form($kind, &raw)?;
                Ok(Self(raw))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

free_form_id!(
    /// The key that ties events to one wait. Generated per wait unless the engine supplies one;
    /// unique per tenant.
    CorrelationId,
    "correlation id"
);
free_form_id!(
    /// The workflow execution a wait belongs to. Every event must carry it and it must match.
    ExecutionId,
    "execution id"
);
free_form_id!(
    /// The workflow node (of type `wait_events`) that registered the wait.
    NodeId,
    "node id"
);
free_form_id!(
    /// The tenant a wait belongs to; correlation ids are namespaced by tenant.
    TenantId,
    "tenant id"
);
free_form_id!(
    /// The identity of one event for idempotency: a redelivered event has the same key.
    EventKey,
    "event key"
);

/// The tenant used when a request names none.
pub const DEFAULT_TENANT: &str = "default";

impl TenantId {
    /// The tenant used when a request names none ([`DEFAULT_TENANT`]).
    pub fn default_tenant() -> Self {
        Self(DEFAULT_TENANT.to_owned())
    }
}

/// The longest source name.
pub const MAX_SOURCE_NAME_LEN: usize = 64;

/// The name of one event source of a wait: `api`, `kafka`, or a name from `data.sources`.
///
/// Names are `[a-z][a-z0-9_]*`, at most [`MAX_SOURCE_NAME_LEN`] bytes, so they can be used in
/// condition expressions without quoting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceName(String);

impl SourceName {
    /// The seed's API-call source.
    pub const API: &'static str = "api";
    /// The seed's Kafka-event source.
    pub const KAFKA: &'static str = "kafka";

    /// Validates a source name.
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        let fail = |reason: &str| {
            Err(IdError {
                kind: "source name",
                reason: reason.to_owned(),
            })
        };
        let mut chars = raw.chars();
        match chars.next() {
            None => return fail("must not be empty"),
            Some(c) if !c.is_ascii_lowercase() => {
                return fail("must start with a lowercase ascii letter");
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return fail("may contain only lowercase ascii letters, digits and '_'");
        }
        if raw.len() > MAX_SOURCE_NAME_LEN {
            return fail("is longer than 64 bytes");
        }
        if is_reserved_word(&raw) {
            return fail("is a reserved word of the condition language");
        }
        Ok(Self(raw))
    }

    /// The `api` source.
    pub fn api() -> Self {
        Self(Self::API.to_owned())
    }

    /// The `kafka` source.
    pub fn kafka() -> Self {
        Self(Self::KAFKA.to_owned())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Words of the condition language that cannot name a source.
pub(crate) fn is_reserved_word(word: &str) -> bool {
    matches!(word, "of" | "and" | "or" | "not" | "true" | "false")
}

impl TryFrom<String> for SourceName {
    type Error = IdError;
    fn try_from(raw: String) -> Result<Self, IdError> {
        Self::parse(raw)
    }
}

impl From<SourceName> for String {
    fn from(name: SourceName) -> String {
        name.0
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The primary key of a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WaitId(uuid::Uuid);

impl WaitId {
    /// Wraps a UUID chosen by the caller (the service generates them; the domain does no I/O).
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }

    /// Parses the textual UUID form.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(raw).map(Self).map_err(|e| IdError {
            kind: "wait id",
            reason: format!("is not a UUID ({e})"),
        })
    }

    /// The UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for WaitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A point in time: milliseconds since the Unix epoch, UTC. Time is always a parameter of the
/// domain; it never reads a clock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + duration`, saturating.
    pub fn plus(self, duration: std::time::Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_form_ids_reject_empty_long_and_control() {
        assert!(CorrelationId::parse("").is_err());
        assert!(CorrelationId::parse(" a").is_err());
        assert!(CorrelationId::parse("a\nb").is_err());
        assert!(CorrelationId::parse("x".repeat(MAX_ID_LEN + 1)).is_err());
        assert_eq!(ExecutionId::parse("exec-1").unwrap().as_str(), "exec-1");
    }

    #[test]
    fn source_names_are_identifiers() {
        assert!(SourceName::parse("kafka_b2").is_ok());
        for bad in ["", "Kafka", "1a", "a-b", "of", "a b"] {
            assert!(SourceName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn wait_id_round_trips() {
        let id = WaitId::from_uuid(uuid::Uuid::from_u128(7));
        assert_eq!(WaitId::parse(&id.to_string()).unwrap(), id);
        assert!(WaitId::parse("nope").is_err());
    }
}
