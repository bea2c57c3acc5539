//! The use cases' limits and timings, and the policy of outbound API calls.

use std::collections::BTreeSet;
use std::time::Duration;

use rendezvous_domain::{ApiRequest, Destinations};

use crate::ServiceError;

use crate::TopicPolicy;

/// Limits and timings of the use cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// How long an event for an unknown correlation id is kept for a wait to register.
    pub buffer_ttl: Duration,
    /// How many optimistic-lock conflicts one request may meet before giving up.
    pub max_conflict_retries: u32,
    /// The largest event payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// The largest node config accepted, in bytes.
    pub max_config_bytes: usize,
    /// Outbound API calls.
    pub api: ApiPolicy,
    /// Which Kafka topics each tenant's waits may name, and whose records each topic carries.
    pub topics: TopicPolicy,
    /// Where external services send API responses over HTTP (`…/v1/callbacks/api-response`):
    /// an API call's templates may use `{{ callback_url }}`, this URL with the wait's
    /// correlation id, execution id and tenant in its query. None: the variable is undefined.
    pub callback_url: Option<String>,
}

/// Where outbound API calls may go, and how they are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPolicy {
    /// Where calls may go: the allowlist, and whether private networks may be called.
    pub destinations: Destinations,
    /// Attempts before the wait fails (transient errors: connect, timeout, 5xx, 429).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff` (`Retry-After` wins if longer).
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How long one attempt is leased to an instance (longer than the HTTP timeout).
    pub lease: Duration,
    /// Calls one instance makes at once.
    pub max_in_flight: u32,
    /// Calls one instance makes at once to one destination (host and port).
    pub max_per_destination: u32,
    /// The names of the secrets headers may reference (`[secrets]`); a call naming another is
    /// refused at registration. Only names: the values are read by the HTTP adapter.
    pub secrets: BTreeSet<String>,
}

impl ApiPolicy {
    /// Checks that every secret `request` references is configured: `INVALID_ARGUMENT` naming
    /// the header and the secret otherwise (names only; values are never known here).
    pub fn check_secrets(&self, request: &ApiRequest) -> Result<(), ServiceError> {
        for (header, secret) in &request.secret_headers {
            if !self.secrets.contains(secret) {
                let known = if self.secrets.is_empty() {
                    "none is configured".to_owned()
                } else {
                    let names: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
                    format!("configured: {}", names.join(", "))
                };
                let plain = header
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
                let at = if plain {
                    format!("node_config.data.apiCall.headers.{header}")
                } else {
                    format!("node_config.data.apiCall.headers.{header:?}")
                };
                return Err(ServiceError::invalid(
                    &at,
                    format!("the secret {secret:?} is not configured in [secrets] ({known})"),
                ));
            }
        }
        Ok(())
    }
}

impl Default for ApiPolicy {
    fn default() -> Self {
        Self {
            destinations: Destinations::default(),
            max_attempts: 8,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            lease: Duration::from_secs(60),
            max_in_flight: 128,
            max_per_destination: 32,
            secrets: BTreeSet::new(),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            buffer_ttl: Duration::from_secs(3600),
            max_conflict_retries: 32,
            max_payload_bytes: 1024 * 1024,
            max_config_bytes: 256 * 1024,
            api: ApiPolicy::default(),
            topics: TopicPolicy::default(),
            callback_url: None,
        }
    }
}
