//! Looking at waits and what the ingress needs to know: one wait, a page of waits, the Kafka
//! topics registered waits name, and the quarantine of events that could not be processed.

use rendezvous_ports::{
    BufferedSummary, Clock, Page, Quarantined, QuarantinedRow, Redelivered, ResumeSignal, Store,
    StoredWait, TenantScope, TopicFields, WaitQuery,
};

use crate::{ServiceError, WaitLookup, WaitService};

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// One wait.
    pub async fn get(&self, lookup: WaitLookup) -> Result<StoredWait, ServiceError> {
        match lookup {
            WaitLookup::Id { wait_id, tenants } => self
                .store
                .get_wait(wait_id)
                .await?
                .filter(|w| tenants.contains(&w.state.key.tenant))
                .ok_or_else(|| ServiceError::NotFound(format!("no wait with id {wait_id}"))),
            WaitLookup::Correlation {
                tenant,
                correlation_id,
            } => self
                .store
                .find_wait(&tenant, &correlation_id)
                .await?
                .ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "no wait with correlation id {correlation_id} in tenant {tenant}"
                    ))
                }),
        }
    }

    /// The most recently quarantined events, newest first (at most `limit`).
    pub async fn quarantined(&self, limit: u32) -> Result<Vec<QuarantinedRow>, ServiceError> {
        Ok(self.store.quarantined(limit).await?)
    }

    /// Pending early events of the tenants in scope, newest first (at most `limit`).
    pub async fn buffered(
        &self,
        tenants: &TenantScope,
        limit: u32,
    ) -> Result<Vec<BufferedSummary>, ServiceError> {
        Ok(self.store.list_buffered(tenants, limit).await?)
    }

    /// Sends a decided wait's resume again (same resume id), whether or not an engine
    /// acknowledged it: for an engine that lost one. A wait still open has none yet.
    pub async fn redeliver(
        &self,
        lookup: WaitLookup,
    ) -> Result<(StoredWait, Redelivered), ServiceError> {
        let wait = self.get(lookup).await?;
        let id = wait.state.key.id;
        if wait.state.is_open() {
            return Err(ServiceError::NotReady(format!(
                "wait {id} is still open: it has no resume yet"
            )));
        }
        let redelivered = self.store.redeliver_resume(id).await?.ok_or_else(|| {
            ServiceError::NotFound(format!(
                "wait {id} has no resume any more (purged by retention)"
            ))
        })?;
        tracing::info!(wait_id = %id, resume_id = %redelivered.resume_id, was_acked = redelivered.was_acked, "resume redelivered by an operator");
        Ok((wait, redelivered))
    }

    /// Waits matching a query, newest first.
    pub async fn list(&self, query: WaitQuery) -> Result<Page<StoredWait>, ServiceError> {
        Ok(self.store.list_waits(&query).await?)
    }

    /// Every topic registered waits listen on, with its id fields.
    pub async fn kafka_topics(&self) -> Result<Vec<TopicFields>, ServiceError> {
        Ok(self.store.kafka_topics().await?)
    }

    /// Sets an event aside with a reason (poison, missing ids, mismatch).
    pub async fn quarantine(&self, event: Quarantined) -> Result<(), ServiceError> {
        tracing::warn!(origin = %event.origin, event_key = event.event_key.as_deref(), correlation_id = event.correlation_id.as_deref(), reason = %event.reason, "event quarantined");
        Ok(self.store.quarantine(&event).await?)
    }
}
