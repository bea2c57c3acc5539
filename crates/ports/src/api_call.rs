//! The outbound API call port: the call outbox row, and the HTTP caller the service uses.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use rendezvous_domain::{ApiRequest, CorrelationId, ExecutionId, TenantId, WaitId};

/// One pending API call, as claimed from the call outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCallRecord {
    /// The wait it belongs to (one call per wait).
    pub wait_id: WaitId,
    /// The wait's tenant.
    pub tenant: TenantId,
    /// The wait's correlation id.
    pub correlation_id: CorrelationId,
    /// The wait's execution id.
    pub execution_id: ExecutionId,
    /// The rendered request.
    pub request: ApiRequest,
    /// Attempts made so far, including the one this claim starts.
    pub attempts: u32,
}

/// What an HTTP server answered (any status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// Response headers (lowercase names; the last value of repeated ones).
    pub headers: BTreeMap<String, String>,
    /// The body, at most the configured limit.
    pub body: Vec<u8>,
}

/// Why a call did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// Worth retrying (connect error, timeout).
    #[error("{0}")]
    Transient(String),
    /// Not worth retrying (refused by policy, body over the limit, malformed request).
    #[error("{0}")]
    Permanent(String),
}

/// Makes HTTP requests. Implemented by `rendezvous-http-caller` (with SSRF protection).
#[async_trait]
pub trait HttpCaller: Send + Sync + 'static {
    /// Sends the request and reads the reply, within the caller's timeout and size limit.
    async fn call(&self, request: &ApiRequest) -> Result<HttpReply, CallFailure>;
}

/// The `Retry-After` of a reply, when it is a number of seconds.
pub fn retry_after(reply: &HttpReply) -> Option<Duration> {
    reply
        .headers
        .get("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
