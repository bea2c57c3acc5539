//! The tonic services: `WaitService` for engines and `CallbackService` for callback gateways,
//! translating `rendezvous.v1` messages to the service's use cases and back.

use std::collections::BTreeMap;
use std::sync::Arc;

use rendezvous_domain::{Channel, IgnoreReason, SourceName, TenantId, Timestamp, Verdict, WaitId};
use rendezvous_ports::{Clock, ResumeSignal, Store, WaitQuery};
use rendezvous_service::{
    Delivered, Delivery, RegisterWait, ServiceError, WaitLookup, WaitService, source_name,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::resume_stream::{ResumeStreamConfig, serve_resume_stream};
use crate::status::to_status;
use crate::v1;

/// The largest `ListWaits` page.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The `ListWaits` page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// The gRPC adapter over the use cases.
pub struct GrpcApi<S, G, C> {
    service: Arc<WaitService<S, G, C>>,
    resume: ResumeStreamConfig,
    shutdown: watch::Receiver<bool>,
}

impl<S, G, C> Clone for GrpcApi<S, G, C> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            resume: self.resume.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<S: Store, G: ResumeSignal, C: Clock> GrpcApi<S, G, C> {
    /// The adapter over a shared service. When `shutdown` turns true, resume streams end
    /// (freeing their leases) so the server can stop gracefully.
    pub fn new(
        service: Arc<WaitService<S, G, C>>,
        resume: ResumeStreamConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            service,
            resume,
            shutdown,
        }
    }

    /// The engine-facing tonic service.
    pub fn wait_service(&self) -> v1::wait_service_server::WaitServiceServer<Self> {
        v1::wait_service_server::WaitServiceServer::new(self.clone())
    }

    /// The callback-gateway-facing tonic service.
    pub fn callback_service(&self) -> v1::callback_service_server::CallbackServiceServer<Self> {
        v1::callback_service_server::CallbackServiceServer::new(self.clone())
    }
}

fn lookup(
    wait_id: Option<String>,
    correlation_id: Option<String>,
    tenant_id: String,
) -> Result<WaitLookup, Status> {
    match (wait_id, correlation_id) {
        (Some(wait_id), _) => Ok(WaitLookup::Id { wait_id, tenant_id }),
        (None, Some(correlation_id)) => Ok(WaitLookup::Correlation {
            tenant_id,
            correlation_id,
        }),
        (None, None) => Err(to_status(ServiceError::Invalid {
            field: "key".into(),
            reason: "required: wait_id or correlation_id".into(),
        })),
    }
}

fn page_token(next: (Timestamp, WaitId)) -> String {
    format!("{}:{}", next.0.as_millis(), next.1)
}

fn parse_page_token(raw: &str) -> Result<(Timestamp, WaitId), ServiceError> {
    let bad = || ServiceError::Invalid {
        field: "page_token".into(),
        reason: "not a token from a previous ListWaits response".into(),
    };
    let (millis, id) = raw.split_once(':').ok_or_else(bad)?;
    Ok((
        Timestamp::from_millis(millis.parse().map_err(|_| bad())?),
        WaitId::parse(id).map_err(|_| bad())?,
    ))
}

/// What a delivery did, in the fields both delivery responses share.
#[derive(Debug, Default)]
struct DeliveryReply {
    result: v1::DeliveryResult,
    wait_id: String,
    status: v1::WaitStatus,
    detail: String,
}

impl From<DeliveryReply> for v1::DeliverApiResponseResponse {
    fn from(r: DeliveryReply) -> Self {
        Self {
            result: r.result.into(),
            wait_id: r.wait_id,
            status: r.status.into(),
            detail: r.detail,
        }
    }
}

impl From<DeliveryReply> for v1::DeliverEventResponse {
    fn from(r: DeliveryReply) -> Self {
        Self {
            result: r.result.into(),
            wait_id: r.wait_id,
            status: r.status.into(),
            detail: r.detail,
        }
    }
}

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
        Delivered::Applied { wait, verdict } => {
            let (result, detail) = match &verdict {
                Verdict::Accepted { .. } => (R::Accepted, String::new()),
                Verdict::Completed { .. } => (R::Completed, String::new()),
                Verdict::Duplicate => (R::Duplicate, String::new()),
                Verdict::Ignored(reason) => (
                    match reason {
                        IgnoreReason::FilteredOut { .. } => R::FilteredOut,
                        IgnoreReason::NoMatchingSource { .. } => R::NoMatchingSource,
                        IgnoreReason::AlreadySatisfied { .. } => R::AlreadySatisfied,
                        IgnoreReason::Late { .. } => R::Late,
                        // Never here: the service answers a mismatch with
                        // `ServiceError::ExecutionMismatch` (FAILED_PRECONDITION).
                        IgnoreReason::ExecutionMismatch { .. } => R::Unspecified,
                    },
                    reason.to_string(),
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
        // The caller's W3C trace context travels on to the API call.
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let r = request.into_inner();
        let registered = self
            .service
            .register(RegisterWait {
                tenant_id: r.tenant_id,
                execution_id: r.execution_id,
                node_id: r.node_id,
                node_config_json: r.node_config_json,
                idempotency_key: r.idempotency_key,
                workflow_id: r.workflow_id,
                correlation_id: r.correlation_id,
                input_variables: r.input_variables.into_iter().collect(),
                traceparent,
            })
            .await
            .map_err(to_status)?;
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
        let stream = serve_resume_stream(
            self.service.clone(),
            self.resume.clone(),
            self.shutdown.clone(),
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn get_wait(
        &self,
        request: Request<v1::GetWaitRequest>,
    ) -> Result<Response<v1::GetWaitResponse>, Status> {
        let r = request.into_inner();
        let key = match r.key {
            Some(v1::get_wait_request::Key::WaitId(id)) => lookup(Some(id), None, r.tenant_id)?,
            Some(v1::get_wait_request::Key::CorrelationId(c)) => {
                lookup(None, Some(c), r.tenant_id)?
            }
            None => lookup(None, None, r.tenant_id)?,
        };
        let wait = self.service.get(key).await.map_err(to_status)?;
        Ok(Response::new(v1::GetWaitResponse {
            wait: Some(convert::wait(&wait)),
        }))
    }

    async fn list_waits(
        &self,
        request: Request<v1::ListWaitsRequest>,
    ) -> Result<Response<v1::ListWaitsResponse>, Status> {
        let r = request.into_inner();
        let invalid = |field: &str, reason: String| {
            to_status(ServiceError::Invalid {
                field: field.into(),
                reason,
            })
        };
        let tenant = match r.tenant_id.as_str() {
            "" => None,
            raw => Some(TenantId::parse(raw).map_err(|e| invalid("tenant_id", e.reason))?),
        };
        let execution_id = match r.execution_id.as_str() {
            "" => None,
            raw => Some(
                rendezvous_domain::ExecutionId::parse(raw)
                    .map_err(|e| invalid("execution_id", e.reason))?,
            ),
        };
        let mut statuses = Vec::new();
        for (i, raw) in r.statuses.iter().enumerate() {
            let status = v1::WaitStatus::try_from(*raw)
                .ok()
                .and_then(convert::from_status)
                .ok_or_else(|| {
                    invalid(&format!("statuses[{i}]"), format!("unknown status {raw}"))
                })?;
            statuses.push(status);
        }
        if r.page_size > MAX_PAGE_SIZE {
            return Err(to_status(ServiceError::TooLarge {
                what: "page_size".into(),
                size: r.page_size as usize,
                limit: MAX_PAGE_SIZE as usize,
            }));
        }
        let after = match r.page_token.as_str() {
            "" => None,
            raw => Some(parse_page_token(raw).map_err(to_status)?),
        };
        let query = WaitQuery {
            tenant,
            statuses,
            execution_id,
            created_before: r.created_before.as_ref().map(convert::from_timestamp),
            limit: if r.page_size == 0 {
                DEFAULT_PAGE_SIZE
            } else {
                r.page_size
            },
            after,
        };
        let page = self.service.list(query).await.map_err(to_status)?;
        Ok(Response::new(v1::ListWaitsResponse {
            waits: page.items.iter().map(convert::wait).collect(),
            next_page_token: page.next.map(page_token).unwrap_or_default(),
        }))
    }

    async fn cancel_wait(
        &self,
        request: Request<v1::CancelWaitRequest>,
    ) -> Result<Response<v1::CancelWaitResponse>, Status> {
        let r = request.into_inner();
        let key = match r.key {
            Some(v1::cancel_wait_request::Key::WaitId(id)) => lookup(Some(id), None, r.tenant_id)?,
            Some(v1::cancel_wait_request::Key::CorrelationId(c)) => {
                lookup(None, Some(c), r.tenant_id)?
            }
            None => lookup(None, None, r.tenant_id)?,
        };
        let (wait, cancelled) = self
            .service
            .cancel(key, r.reason)
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
        let r = request.into_inner();
        if r.execution_id.is_empty() {
            return Err(to_status(ServiceError::Invalid {
                field: "execution_id".into(),
                reason: "required".into(),
            }));
        }
        let headers: BTreeMap<String, String> = r.headers.into_iter().collect();
        let result = self
            .service
            .deliver(Delivery {
                tenant_id: r.tenant_id,
                correlation_id: r.correlation_id,
                execution_id: Some(r.execution_id),
                channel: Channel::Source(SourceName::api()),
                size: Delivery::api_size(&headers, &r.body),
                payload: Delivery::api_payload(r.http_status, headers, &r.body),
                event_key: r.idempotency_key,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(delivered(result).into()))
    }

    async fn deliver_event(
        &self,
        request: Request<v1::DeliverEventRequest>,
    ) -> Result<Response<v1::DeliverEventResponse>, Status> {
        let r = request.into_inner();
        let source = source_name("source", &r.source).map_err(to_status)?;
        if r.payload_json.is_empty() {
            return Err(to_status(ServiceError::Invalid {
                field: "payload_json".into(),
                reason: "required".into(),
            }));
        }
        let payload = serde_json::from_str(&r.payload_json).map_err(|e| {
            to_status(ServiceError::Invalid {
                field: "payload_json".into(),
                reason: format!("not valid JSON: {e}"),
            })
        })?;
        let result = self
            .service
            .deliver(Delivery {
                tenant_id: r.tenant_id,
                correlation_id: r.correlation_id,
                execution_id: Some(r.execution_id),
                channel: Channel::Source(source),
                size: r.payload_json.len(),
                payload,
                event_key: r.event_key,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(delivered(result).into()))
    }
}
