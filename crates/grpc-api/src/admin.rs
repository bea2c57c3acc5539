//! `AdminService`: the operator RPCs behind `rendezvous quarantine|buffered|resumes ...` —
//! quarantined events, buffered early events, and sending a resume again. Admin role only;
//! reads see the credential's tenants, and quarantined events (which may name none) need a
//! credential of every tenant.

use rendezvous_ports::{Clock, ResumeSignal, Store, TenantScope};
use rendezvous_service::{Role, ServiceError, WaitLookup};
use tonic::{Request, Response, Status};

use crate::request::page_size;
use crate::server::GrpcApi;
use crate::status::to_status;
use crate::{convert, v1};

#[tonic::async_trait]
impl<S: Store, G: ResumeSignal, C: Clock> v1::admin_service_server::AdminService
    for GrpcApi<S, G, C>
{
    async fn list_quarantined(
        &self,
        request: Request<v1::ListQuarantinedRequest>,
    ) -> Result<Response<v1::ListQuarantinedResponse>, Status> {
        let caller = self.caller(&request, Role::Admin, "ListQuarantined")?;
        // A quarantined event may name no tenant (its tenant could not be read): only a
        // credential of every tenant sees them.
        if caller.scope("tenant_id", "").map_err(to_status)? != TenantScope::All {
            return Err(to_status(ServiceError::PermissionDenied(format!(
                "ListQuarantined needs a credential of every tenant; {} holds some",
                caller.name
            ))));
        }
        let limit = page_size(request.into_inner().page_size).map_err(to_status)?;
        let events = self.service().quarantined(limit).await.map_err(to_status)?;
        Ok(Response::new(v1::ListQuarantinedResponse {
            events: events
                .into_iter()
                .map(|q| v1::QuarantinedEvent {
                    origin: q.origin,
                    event_key: q.event_key.unwrap_or_default(),
                    correlation_id: q.correlation_id.unwrap_or_default(),
                    payload: q.payload,
                    reason: q.reason,
                    quarantined_at: Some(convert::timestamp(q.at)),
                })
                .collect(),
        }))
    }

    async fn list_buffered(
        &self,
        request: Request<v1::ListBufferedRequest>,
    ) -> Result<Response<v1::ListBufferedResponse>, Status> {
        let caller = self.caller(&request, Role::Admin, "ListBuffered")?;
        let request = request.into_inner();
        let tenants = caller
            .scope("tenant_id", &request.tenant_id)
            .map_err(to_status)?;
        let limit = page_size(request.page_size).map_err(to_status)?;
        let events = self
            .service()
            .buffered(&tenants, limit)
            .await
            .map_err(to_status)?;
        Ok(Response::new(v1::ListBufferedResponse {
            events: events
                .into_iter()
                .map(|b| v1::BufferedEvent {
                    tenant_id: b.tenant,
                    correlation_id: b.correlation_id,
                    event_key: b.event_key,
                    channel: b.channel,
                    received_at: Some(convert::timestamp(b.received_at)),
                    expires_at: Some(convert::timestamp(b.expires_at)),
                })
                .collect(),
        }))
    }

    async fn redeliver_resume(
        &self,
        request: Request<v1::RedeliverResumeRequest>,
    ) -> Result<Response<v1::RedeliverResumeResponse>, Status> {
        let caller = self.caller(&request, Role::Admin, "RedeliverResume")?;
        let wait_id = request.into_inner().wait_id;
        let wait_id = rendezvous_service::parse::required("wait_id", &wait_id, |raw| {
            rendezvous_domain::WaitId::parse(&raw)
        })
        .map_err(to_status)?;
        let lookup = WaitLookup::Id {
            wait_id,
            tenants: caller.scope("tenant_id", "").map_err(to_status)?,
        };
        let (_, redelivered) = self.service().redeliver(lookup).await.map_err(to_status)?;
        Ok(Response::new(v1::RedeliverResumeResponse {
            resume_id: redelivered.resume_id.to_string(),
            was_acked: redelivered.was_acked,
        }))
    }
}
