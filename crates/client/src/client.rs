//! [`Client`]: the unary RPCs of `WaitService`, `CallbackService` and `AdminService` over one
//! channel, with the caller's credential on every call, retried with backoff while the service
//! answers UNAVAILABLE or ABORTED (registrations are idempotent by their execution, node and
//! idempotency key, deliveries by their event key, reads by nature; a cancellation is not
//! retried).

use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::subscription::Subscription;
use crate::v1;
use crate::v1::admin_service_client::AdminServiceClient;
use crate::v1::callback_service_client::CallbackServiceClient;
use crate::v1::wait_service_client::WaitServiceClient;

/// A channel that sends the caller's credential with every call.
pub type Transport = InterceptedService<Channel, Credentials>;

/// The credential sent as `authorization: Bearer …` with every call (a JWT or an API key).
/// None over mutual TLS, where the client certificate is the credential, and on a loopback
/// server without authentication.
#[derive(Debug, Clone, Default)]
pub struct Credentials(Option<AsciiMetadataValue>);

/// A token that cannot travel in gRPC metadata (not visible ASCII).
#[derive(Debug, thiserror::Error)]
#[error("the token is not a valid gRPC metadata value (visible ASCII only)")]
pub struct InvalidToken;

impl Credentials {
    /// No credential.
    pub fn none() -> Self {
        Self(None)
    }

    /// `authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Result<Self, InvalidToken> {
        MetadataValue::try_from(format!("Bearer {token}"))
            .map(|v| Self(Some(v)))
            .map_err(|_| InvalidToken)
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How often and how patiently a call is tried again while the service answers UNAVAILABLE
/// (an instance restarting, the database briefly away) or ABORTED (too many writers on one
/// wait). Other codes are final: retrying a refused request cannot succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    /// The pause after the first failure; doubled after each further one, with jitter.
    pub initial_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn never() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    /// The pause before try `attempt + 1` (after `attempt` failures): exponential, capped,
    /// with full jitter in its upper half so that clients do not retry in lockstep.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        backoff(self.initial_backoff, self.max_backoff, attempt)
    }
}

/// `initial · 2^(failures-1)`, capped at `max`, then a random point in its upper half.
pub(crate) fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exp = initial.saturating_mul(1 << failures.saturating_sub(1).min(20));
    let capped = exp.min(max);
    capped / 2 + capped.mul_f64(fastrand::f64() / 2.0)
}

/// Whether a call that failed with `status` may succeed when made again.
pub(crate) fn retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Aborted)
}

/// A client of one Rendezvous endpoint (one instance, or a load balancer in front of several).
/// Cheap to clone: clones share the channel.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    credentials: Credentials,
    retry: RetryPolicy,
}

/// Calls `$rpc` on a fresh stub made by `$stub`, again while the answer is retryable.
macro_rules! retrying {
    ($self:ident, $stub:ident, $rpc:ident, $request:expr) => {{
        let request = $request;
        let mut attempt = 1;
        loop {
            match $self.$stub().$rpc(request.clone()).await {
                Ok(response) => break Ok(response.into_inner()),
                Err(status) if retryable(&status) && attempt < $self.retry.attempts => {
                    tracing::debug!(rpc = stringify!($rpc), %status, attempt, "retrying");
                    tokio::time::sleep($self.retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(status) => break Err(status),
            }
        }
    }};
}

impl Client {
    /// Connects to `endpoint` (e.g. `Endpoint::from_static("http://127.0.0.1:50151")`, or one
    /// with a TLS config) without a credential.
    pub async fn connect(endpoint: Endpoint) -> Result<Self, tonic::transport::Error> {
        Ok(Self::new(endpoint.connect().await?))
    }

    /// A client over a channel already made (TLS, a load-balanced channel, a lazy one).
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            credentials: Credentials::none(),
            retry: RetryPolicy::default(),
        }
    }

    /// The same client, sending `credentials` with every call.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The same client, with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The generated `WaitService` stub, for calls this type does not wrap.
    pub fn waits(&self) -> WaitServiceClient<Transport> {
        WaitServiceClient::with_interceptor(self.channel.clone(), self.credentials.clone())
    }

    /// The generated `CallbackService` stub.
    pub fn callbacks(&self) -> CallbackServiceClient<Transport> {
        CallbackServiceClient::with_interceptor(self.channel.clone(), self.credentials.clone())
    }

    /// The generated `AdminService` stub.
    pub fn admin(&self) -> AdminServiceClient<Transport> {
        AdminServiceClient::with_interceptor(self.channel.clone(), self.credentials.clone())
    }

    /// Registers a wait. Idempotent: a retry with the same execution, node and idempotency
    /// key returns the same wait (`created: false`), so a lost reply is retried safely.
    pub async fn register_wait(
        &self,
        request: v1::RegisterWaitRequest,
    ) -> Result<v1::RegisterWaitResponse, Status> {
        retrying!(self, waits, register_wait, request)
    }

    /// Delivers an external API's response for a wait's `api` source. Its idempotency key
    /// makes a retry a duplicate.
    pub async fn deliver_api_response(
        &self,
        request: v1::DeliverApiResponseRequest,
    ) -> Result<v1::DeliverApiResponseResponse, Status> {
        retrying!(self, callbacks, deliver_api_response, request)
    }

    /// Delivers an event for a named source. Its event key makes a retry a duplicate.
    pub async fn deliver_event(
        &self,
        request: v1::DeliverEventRequest,
    ) -> Result<v1::DeliverEventResponse, Status> {
        retrying!(self, callbacks, deliver_event, request)
    }

    /// One wait, with what it has and what it still waits for.
    pub async fn get_wait(&self, request: v1::GetWaitRequest) -> Result<v1::Wait, Status> {
        retrying!(self, waits, get_wait, request)?
            .wait
            .ok_or_else(|| Status::internal("GetWait answered without a wait"))
    }

    /// A wait by id.
    pub async fn get_wait_by_id(&self, wait_id: &str) -> Result<v1::Wait, Status> {
        self.get_wait(v1::GetWaitRequest {
            key: Some(v1::get_wait_request::Key::WaitId(wait_id.into())),
            tenant_id: String::new(),
        })
        .await
    }

    /// One page of waits; pass `next_page_token` back as `page_token` for the next.
    pub async fn list_waits(
        &self,
        request: v1::ListWaitsRequest,
    ) -> Result<v1::ListWaitsResponse, Status> {
        retrying!(self, waits, list_waits, request)
    }

    /// Cancels an open wait (the engine gets a CANCELLED resume); a decided wait comes back
    /// unchanged with `already_decided`. Not retried, as in the Python and TypeScript clients:
    /// a retry after a lost answer would report this very cancellation as `already_decided`.
    /// On UNAVAILABLE, read the wait (or cancel again) to learn what happened.
    pub async fn cancel_wait(
        &self,
        request: v1::CancelWaitRequest,
    ) -> Result<v1::CancelWaitResponse, Status> {
        Ok(self.waits().cancel_wait(request).await?.into_inner())
    }

    /// Opens one resume stream with explicit acks (see [`Subscription`]); most engines want
    /// a [`crate::ResumeFeed`], which also reconnects and deduplicates.
    pub async fn subscribe(&self, subscribe: v1::Subscribe) -> Result<Subscription, Status> {
        Subscription::open(self.waits(), subscribe).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..100 {
            let first = backoff(initial, max, 1);
            assert!((initial / 2..=initial).contains(&first), "{first:?}");
            let third = backoff(initial, max, 3);
            assert!(
                (Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third),
                "{third:?}"
            );
            let late = backoff(initial, max, 40);
            assert!((max / 2..=max).contains(&late), "{late:?}");
        }
    }

    #[test]
    fn only_unavailable_and_aborted_are_retried() {
        assert!(retryable(&Status::unavailable("down")));
        assert!(retryable(&Status::aborted("busy")));
        for code in [
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::FailedPrecondition,
        ] {
            assert!(!retryable(&Status::new(code, "no")), "{code:?}");
        }
    }

    #[test]
    fn a_bearer_credential_is_sent_and_a_bad_token_refused() {
        let mut credentials = Credentials::bearer("rdv_key").unwrap();
        let request = credentials.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer rdv_key"
        );
        assert!(Credentials::bearer("line\nbreak").is_err());
        let request = Credentials::none().call(Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }
}
