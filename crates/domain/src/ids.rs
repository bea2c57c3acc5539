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

/// Longest accepted free-form identifier (correlation, execution, node, tenant ids, event keys,
/// lease owners) and idempotency key.
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

/// `TryFrom<String>` (through `parse`, so serde validates too), `From<$name> for String` and
/// `Display` for an identifier held as text.
macro_rules! text_conversions {
    ($name:ident) => {
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

        text_conversions!($name);
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

free_form_id!(
    /// Who holds a lease (a resume stream, an API-call dispatcher): leased rows name it, and only
    /// it may release them.
    LeaseOwner,
    "lease owner"
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

text_conversions!(SourceName);

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

/// The caller's key that makes a registration idempotent: registering again for the same
/// execution and node with the same key returns the first wait. May be empty; at most
/// [`MAX_ID_LEN`] bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates `raw`: at most [`MAX_ID_LEN`] bytes; empty is allowed.
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        if raw.len() > MAX_ID_LEN {
            return Err(IdError {
                kind: "idempotency key",
                reason: format!("is {} bytes, the limit is {MAX_ID_LEN}", raw.len()),
            });
        }
        Ok(Self(raw))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether no key was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

text_conversions!(IdempotencyKey);

/// The identity of one resume in the outbox; the engine deduplicates resumes by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResumeId(uuid::Uuid);

impl ResumeId {
    /// Wraps a UUID chosen by the caller (the service generates them; the domain does no I/O).
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }

    /// Parses the textual UUID form; the error names the refused text.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(raw).map(Self).map_err(|e| IdError {
            kind: "resume id",
            reason: format!("{raw:?} is not a UUID ({e})"),
        })
    }

    /// The UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for ResumeId {
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

    /// `self - duration`, saturating.
    pub fn minus(self, duration: std::time::Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(millis))
    }

    /// Seconds from `earlier` to `self`; 0 when `earlier` is not earlier.
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        self.0.saturating_sub(earlier.0).max(0) as f64 / 1000.0
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
    fn time_differences_are_seconds_and_never_negative() {
        let t = Timestamp::from_millis(10_500);
        assert_eq!(t.seconds_since(Timestamp::from_millis(9_000)), 1.5);
        assert_eq!(Timestamp::from_millis(9_000).seconds_since(t), 0.0);
        let second = std::time::Duration::from_secs(1);
        assert_eq!(t.minus(second), Timestamp::from_millis(9_500));
        assert_eq!(t.minus(second).plus(second), t);
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

    #[test]
    fn idempotency_keys_may_be_empty_but_not_long() {
        assert!(IdempotencyKey::parse("").unwrap().is_empty());
        assert_eq!(
            IdempotencyKey::default(),
            IdempotencyKey::parse("").unwrap()
        );
        let longest = "k".repeat(MAX_ID_LEN);
        assert_eq!(
            IdempotencyKey::parse(longest.as_str()).unwrap().as_str(),
            longest
        );
        let err = IdempotencyKey::parse("k".repeat(MAX_ID_LEN + 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "idempotency key: is {} bytes, the limit is {MAX_ID_LEN}",
                MAX_ID_LEN + 1
            )
        );
        let key: IdempotencyKey = serde_json::from_str("\"retry-1\"").unwrap();
        assert_eq!(key.to_string(), "retry-1");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"retry-1\"");
        let too_long = serde_json::to_string(&"k".repeat(MAX_ID_LEN + 1)).unwrap();
        assert!(serde_json::from_str::<IdempotencyKey>(&too_long).is_err());
    }

    #[test]
    fn resume_id_round_trips_and_names_bad_text() {
        let id = ResumeId::from_uuid(uuid::Uuid::from_u128(42));
        assert_eq!(id.as_uuid(), uuid::Uuid::from_u128(42));
        assert_eq!(ResumeId::parse(&id.to_string()).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<ResumeId>(&json).unwrap(), id);
        let err = ResumeId::parse("not-a-uuid").unwrap_err();
        assert_eq!(err.kind, "resume id");
        assert!(
            err.to_string().contains("\"not-a-uuid\" is not a UUID"),
            "{err}"
        );
    }

    #[test]
    fn lease_owners_follow_the_free_form_rules() {
        assert_eq!(
            LeaseOwner::parse("stream-7").unwrap().to_string(),
            "stream-7"
        );
        let longest = "o".repeat(MAX_ID_LEN);
        assert!(LeaseOwner::parse(longest).is_ok());
        for bad in [
            String::new(),
            "o".repeat(MAX_ID_LEN + 1),
            "a\tb".into(),
            " a".into(),
        ] {
            assert!(LeaseOwner::parse(bad.as_str()).is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<LeaseOwner>("\"\"").is_err());
    }
}
