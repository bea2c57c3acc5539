//! `AdminService`: the operator RPCs behind `rendezvous quarantine|buffered|resumes ...` —
//! quarantined events (listed and replayed), buffered early events, and sending a resume again.
//! Admin role only; reads see the credential's tenants, and quarantined events (which may name
//! none) need a credential of every tenant.

use rendezvous_ports::{Clock, ResumeSignal, Store, TenantScope};
use rendezvous_service::{MAX_REPLAY_IDS, Replayed, Role, ServiceError, WaitLookup};
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
        self.every_tenant(&request, "ListQuarantined")?;
        let limit = page_size(request.into_inner().page_size).map_err(to_status)?;
        let events = self.service().quarantined(limit).await.map_err(to_status)?;
        Ok(Response::new(v1::ListQuarantinedResponse {
            events: events
                .into_iter()
                .map(|row| {
                    let q = row.event;
                    v1::QuarantinedEvent {
                        replayable: q.replayable(),
                        origin: q.origin,
                        event_key: q.event_key.unwrap_or_default(),
                        correlation_id: q.correlation_id.unwrap_or_default(),
                        payload: q.payload,
                        reason: q.reason,
                        quarantined_at: Some(convert::timestamp(q.at)),
                        id: row.id,
                        replays: row.replays,
                    }
                })
                .collect(),
        }))
    }

    async fn replay_quarantined(
        &self,
        request: Request<v1::ReplayQuarantinedRequest>,
    ) -> Result<Response<v1::ReplayQuarantinedResponse>, Status> {
        self.every_tenant(&request, "ReplayQuarantined")?;
        let ids = request.into_inner().ids;
        if ids.is_empty() || ids.len() > MAX_REPLAY_IDS {
            return Err(to_status(ServiceError::invalid(
                "ids",
                format!(
                    "{} ids; name 1 to {MAX_REPLAY_IDS} (MAX_REPLAY_IDS)",
                    ids.len()
                ),
            )));
        }
        if let Some(id) = ids
            .iter()
            .enumerate()
            .find_map(|(i, id)| ids[..i].contains(id).then_some(id))
        {
            return Err(to_status(ServiceError::invalid(
                "ids",
                format!("{id} is named twice"),
            )));
        }
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let replayed = self
                .service()
                .replay(id, self.records())
                .await
                .map_err(to_status)?;
            let (outcome, reason) = match replayed {
                Replayed::Applied => (v1::ReplayOutcome::Applied, String::new()),
                Replayed::Buffered => (v1::ReplayOutcome::Buffered, String::new()),
                Replayed::Duplicate => (v1::ReplayOutcome::Duplicate, String::new()),
                Replayed::Refused(reason) => (v1::ReplayOutcome::Refused, reason),
                Replayed::NotReplayable(reason) => (v1::ReplayOutcome::NotReplayable, reason),
                Replayed::NotFound => (v1::ReplayOutcome::NotFound, String::new()),
            };
            results.push(v1::ReplayResult {
                id,
                outcome: outcome.into(),
                reason,
            });
        }
        Ok(Response::new(v1::ReplayQuarantinedResponse { results }))
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

impl<S: Store, G: ResumeSignal, C: Clock> GrpcApi<S, G, C> {
    /// Refuses a caller without the admin role or without every tenant: a quarantined event
    /// may name no tenant (its tenant could not be read).
    fn every_tenant<T>(&self, request: &Request<T>, rpc: &str) -> Result<(), Status> {
        let caller = self.caller(request, Role::Admin, rpc)?;
        if caller.scope("tenant_id", "").map_err(to_status)? != TenantScope::All {
            return Err(to_status(ServiceError::PermissionDenied(format!(
                "{rpc} needs a credential of every tenant; {} holds some",
                caller.name
            ))));
        }
        Ok(())
    }
}
