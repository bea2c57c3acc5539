//! The resume feed behind engine streams: lease resumes to a stream, record its acks, free
//! its leases when it ends.

use std::time::Duration;

use rendezvous_domain::{LeaseOwner, ResumeId};
use rendezvous_ports::{Clock, ResumeRecord, ResumeSignal, Store, TenantScope};

use crate::{ServiceError, WaitService};

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// Leases resumes to a stream (`owner`) until acked or the lease runs out.
    pub async fn claim_resumes(
        &self,
        owner: &LeaseOwner,
        tenants: &TenantScope,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ResumeRecord>, ServiceError> {
        let now = self.clock.now();
        let resumes = self
            .store
            .claim_resumes(owner, tenants, now, lease, limit)
            .await?;
        crate::metrics::resumes_sent(&resumes, now);
        Ok(resumes)
    }

    /// Acknowledges resumes in one write. Returns how many were still unacknowledged.
    pub async fn ack_resumes(&self, resume_ids: &[ResumeId]) -> Result<u64, ServiceError> {
        Ok(self.store.ack_resumes(resume_ids, self.clock.now()).await?)
    }

    /// Frees the leases a finished stream held, so its unacknowledged resumes go out again.
    pub async fn release_resumes(&self, owner: &LeaseOwner) -> Result<u64, ServiceError> {
        Ok(self.store.release_resumes(owner).await?)
    }
}
