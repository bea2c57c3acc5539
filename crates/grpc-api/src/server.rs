//! The tonic services: `WaitService` for engines and `CallbackService` for callback gateways,
//! calling the service's use cases with the commands `request.rs` parses, and answering with
//! the messages `convert.rs` builds.

use std::sync::Arc;

use rendezvous_domain::{TenantId, TraceContext};
use rendezvous_ports::{Clock, ResumeSignal, Store};
use rendezvous_service::{
    Delivered, Delivery, Effect, Ignored, Principal, RecordReader, RegisterWait, Role, WaitService,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, PeerIdentity};
use crate::request::IntoCommand;
use crate::resume_stream::{ResumeStreamConfig, serve_resume_stream};
use crate::status::to_status;
use crate::v1;
use crate::webhook::Webhooks;
use crate::{convert, request};

/// The gRPC adapter over the use cases.
pub struct GrpcApi<S, G, C> {
    service: Arc<WaitService<S, G, C>>,
    resume: ResumeStreamConfig,
    shutdown: watch::Receiver<bool>,
    pub(crate) auth: Authenticator,
    pub(crate) webhooks: Webhooks,
    records: Option<Arc<dyn RecordReader>>,
}

impl<S, G, C> Clone for GrpcApi<S, G, C> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            resume: self.resume.clone(),
            shutdown: self.shutdown.clone(),
            auth: self.auth.clone(),
            webhooks: self.webhooks.clone(),
            records: self.records.clone(),
        }
    }
}

impl<S: Store, G: ResumeSignal, C: Clock> GrpcApi<S, G, C> {
    /// The adapter over a shared service, open to every caller (see [`Self::with_auth`]).
    /// When `shutdown` turns true, resume streams end (freeing their leases) so the server can
    /// stop gracefully.
    pub fn new(
        service: Arc<WaitService<S, G, C>>,
        resume: ResumeStreamConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            service,
            resume,
            shutdown,
            auth: Authenticator::open(),
            webhooks: Webhooks::default(),
            records: None,
        }
    }

    /// Replays of quarantined Kafka records read them with `records` (the Kafka ingress's
    /// reader); without one, ReplayQuarantined reports them as not replayable here.
    pub fn with_record_reader(mut self, records: Arc<dyn RecordReader>) -> Self {
        self.records = Some(records);
        self
    }

    /// The same adapter, authenticating every call with `auth`.
    pub fn with_auth(mut self, auth: Authenticator) -> Self {
        self.auth = auth;
        self
    }

    /// HTTP callbacks may be signed with these secrets (Standard Webhooks).
    pub fn with_webhooks(mut self, webhooks: Webhooks) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// The use cases.
    pub(crate) fn service(&self) -> &WaitService<S, G, C> {
        &self.service
    }

    /// What reads quarantined Kafka records again, when this instance has a Kafka ingress.
    pub(crate) fn records(&self) -> Option<&dyn RecordReader> {
        self.records.as_deref()
    }

    /// The caller of `request`, if it holds `role` (UNAUTHENTICATED without a valid
    /// credential, PERMISSION_DENIED without the role).
    pub(crate) fn caller<T>(
        &self,
        request: &Request<T>,
        role: Role,
        rpc: &str,
    ) -> Result<Principal, Status> {
        let principal = self.auth.authenticate(
            request.metadata(),
            request.extensions().get::<PeerIdentity>(),
        )?;
        principal.require(role, rpc).map_err(to_status)?;
        Ok(principal)
    }

    /// The message of a request that writes for one tenant, and that tenant: the one the
    /// caller's credential allows (the message's `tenant_id` may only narrow it).
    fn writer<R: TenantField>(
        &self,
        request: Request<R>,
        role: Role,
        rpc: &str,
    ) -> Result<(TenantId, R), Status> {
        let caller = self.caller(&request, role, rpc)?;
        let message = request.into_inner();
        Ok((tenant_of(&caller, &message)?, message))
    }

    /// Delivers an event for `caller`, in the tenant its credential allows (the message's
    /// `tenant_id` may only narrow it): what both delivery RPCs and the HTTP callbacks do.
    pub(crate) async fn deliver<R>(
        &self,
        caller: &Principal,
        message: R,
    ) -> Result<DeliveryReply, Status>
    where
        R: TenantField,
        R: IntoCommand<Delivery>,
    {
        let tenant = tenant_of(caller, &message)?;
        let mut delivery = message.command().map_err(to_status)?;
        delivery.tenant = tenant;
        let result = self.service.deliver(delivery).await.map_err(to_status)?;
        Ok(delivered(result))
    }

    /// The engine-facing tonic service.
    pub fn wait_service(&self) -> v1::wait_service_server::WaitServiceServer<Self> {
        v1::wait_service_server::WaitServiceServer::new(self.clone())
    }

    /// The callback-gateway-facing tonic service.
    pub fn callback_service(&self) -> v1::callback_service_server::CallbackServiceServer<Self> {
        v1::callback_service_server::CallbackServiceServer::new(self.clone())
    }

    /// The operators' service (admin role).
    pub fn admin_service(&self) -> v1::admin_service_server::AdminServiceServer<Self> {
        v1::admin_service_server::AdminServiceServer::new(self.clone())
    }
}

/// A request message with a `tenant_id` field.
pub(crate) trait TenantField {
    fn tenant_id(&self) -> &str;
}

/// The one tenant a message that writes acts for: the one `caller`'s credential allows (the
/// message's `tenant_id` may only narrow it).
fn tenant_of(caller: &Principal, message: &impl TenantField) -> Result<TenantId, Status> {
    caller
        .act_for("tenant_id", message.tenant_id())
        .map_err(to_status)
}

macro_rules! tenant_field {
    ($($message:ty),*) => {$(
        impl TenantField for $message {
            fn tenant_id(&self) -> &str {
                &self.tenant_id
            }
        }
    )*};
}

tenant_field!(
    v1::RegisterWaitRequest,
    v1::DeliverApiResponseRequest,
    v1::DeliverEventRequest
);

/// What a delivery did, in the fields both delivery responses share.
#[derive(Debug, Default)]
pub(crate) struct DeliveryReply {
    pub(crate) result: v1::DeliveryResult,
    pub(crate) wait_id: String,
    pub(crate) status: v1::WaitStatus,
    pub(crate) detail: String,
}

/// Both delivery responses carry the same fields.
macro_rules! delivery_response {
    ($($response:ty),*) => {$(
        impl From<DeliveryReply> for $response {
            fn from(r: DeliveryReply) -> Self {
                Self {
                    result: r.result.into(),
                    wait_id: r.wait_id,
                    status: r.status.into(),
                    detail: r.detail,
                }
            }
        }
    )*};
}

delivery_response!(v1::DeliverApiResponseResponse, v1::DeliverEventResponse);

fn delivered(result: Delivered) -> DeliveryReply {
    use v1::DeliveryResult as R;
    match result {
        Delivered::Buffered => DeliveryReply {
            result: R::Buffered,
            ..Default::default()
        },
        Delivered::BufferedDuplicate => DeliveryReply {
            result: R::Duplicate,
            detail: "already buffered".into(),
            ..Default::default()
        },
        Delivered::Applied { wait, effect } => {
            let (result, detail) = match effect {
                Effect::Accepted => (R::Accepted, String::new()),
                Effect::Completed => (R::Completed, String::new()),
                Effect::Duplicate => (R::Duplicate, String::new()),
                Effect::Ignored { why, detail } => (
                    match why {
                        Ignored::FilteredOut => R::FilteredOut,
                        Ignored::NoMatchingSource => R::NoMatchingSource,
                        Ignored::AlreadySatisfied => R::AlreadySatisfied,
                        Ignored::Late => R::Late,
                    },
                    detail,
                ),
            };
            DeliveryReply {
                result,
                wait_id: wait.state.key.id.to_string(),
                status: convert::status(wait.state.status()),
                detail,
            }
        }
    }
}

#[tonic::async_trait]
impl<S: Store, G: ResumeSignal, C: Clock> v1::wait_service_server::WaitService
    for GrpcApi<S, G, C>
{
    async fn register_wait(
        &self,
        request: Request<v1::RegisterWaitRequest>,
    ) -> Result<Response<v1::RegisterWaitResponse>, Status> {
        // The caller's W3C trace context travels on to the API call and the resume (kept
        // only when well-formed).
        let metadata = request.metadata();
        let text = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
        let trace = text("traceparent")
            .and_then(|traceparent| TraceContext::parse(traceparent, text("tracestate")));
        let (tenant, request) = self.writer(request, Role::Engine, "RegisterWait")?;
        let mut command: RegisterWait = request.command().map_err(to_status)?;
        command.tenant = tenant;
        // The registration's own span is the parent of what follows (the caller's context
        // when no tracer records spans).
        command.trace =
            rendezvous_service::trace::context_of(&tracing::Span::current(), trace.as_ref());
        let registered = self.service.register(command).await.map_err(to_status)?;
        let s = &registered.wait.state;
        Ok(Response::new(v1::RegisterWaitResponse {
            wait_id: s.key.id.to_string(),
            correlation_id: s.key.correlation_id.to_string(),
            status: convert::status(s.status()).into(),
            created: registered.created,
            deadline: Some(convert::timestamp(s.deadline)),
        }))
    }

    type ResumeStreamStream = crate::resume_stream::ResumeStream;

    async fn resume_stream(
        &self,
        request: Request<tonic::Streaming<v1::ResumeStreamRequest>>,
    ) -> Result<Response<Self::ResumeStreamStream>, Status> {
        let caller = self.caller(&request, Role::Engine, "ResumeStream")?;
        let stream = serve_resume_stream(
            self.service.clone(),
            self.resume.clone(),
            self.shutdown.clone(),
            request.into_inner(),
            caller,
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn get_wait(
        &self,
        request: Request<v1::GetWaitRequest>,
    ) -> Result<Response<v1::GetWaitResponse>, Status> {
        let caller = self.caller(&request, Role::Engine, "GetWait")?;
        let lookup = request::get(request.into_inner(), &caller).map_err(to_status)?;
        let wait = self.service.get(lookup).await.map_err(to_status)?;
        Ok(Response::new(v1::GetWaitResponse {
            wait: Some(convert::wait(&wait)),
        }))
    }

    async fn list_waits(
        &self,
        request: Request<v1::ListWaitsRequest>,
    ) -> Result<Response<v1::ListWaitsResponse>, Status> {
        let caller = self.caller(&request, Role::Engine, "ListWaits")?;
        let query = request::list(request.into_inner(), &caller).map_err(to_status)?;
        let page = self.service.list(query).await.map_err(to_status)?;
        Ok(Response::new(v1::ListWaitsResponse {
            waits: page.items.iter().map(convert::wait).collect(),
            next_page_token: page.next.map(request::page_token).unwrap_or_default(),
        }))
    }

    async fn cancel_wait(
        &self,
        request: Request<v1::CancelWaitRequest>,
    ) -> Result<Response<v1::CancelWaitResponse>, Status> {
        let caller = self.caller(&request, Role::Engine, "CancelWait")?;
        let (lookup, reason) = request::cancel(request.into_inner(), &caller).map_err(to_status)?;
        let (wait, cancelled) = self
            .service
            .cancel(lookup, reason)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::CancelWaitResponse {
            wait: Some(convert::wait(&wait)),
            already_decided: !cancelled,
        }))
    }
}

#[tonic::async_trait]
impl<S: Store, G: ResumeSignal, C: Clock> v1::callback_service_server::CallbackService
    for GrpcApi<S, G, C>
{
    async fn deliver_api_response(
        &self,
        request: Request<v1::DeliverApiResponseRequest>,
    ) -> Result<Response<v1::DeliverApiResponseResponse>, Status> {
        let caller = self.caller(&request, Role::Gateway, "DeliverApiResponse")?;
        let reply = self.deliver(&caller, request.into_inner()).await?;
        Ok(Response::new(reply.into()))
    }

    async fn deliver_event(
        &self,
        request: Request<v1::DeliverEventRequest>,
    ) -> Result<Response<v1::DeliverEventResponse>, Status> {
        let caller = self.caller(&request, Role::Gateway, "DeliverEvent")?;
        let reply = self.deliver(&caller, request.into_inner()).await?;
        Ok(Response::new(reply.into()))
    }
}
