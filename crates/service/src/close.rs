//! Deciding a wait from outside its events: cancel (by compare-and-set; a call that failed for
//! good fails its wait in `calls.rs`), time out due waits (claimed with their rows locked), and
//! expire early events nobody claimed.

use rendezvous_domain::limits::MAX_REASON_BYTES;
use rendezvous_domain::{Resolution, Timestamp, WaitState};
use rendezvous_ports::{Clock, ResumeSignal, Store, StoreTx, StoredWait};

use crate::service::{Attempt, new_resume, stamp};
use crate::{ServiceError, WaitLookup, WaitService};

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// Cancels an open wait; a decided wait is returned unchanged with `false`. The reason is
    /// at most [`MAX_REASON_BYTES`] long.
    pub async fn cancel(
        &self,
        lookup: WaitLookup,
        reason: Option<String>,
    ) -> Result<(StoredWait, bool), ServiceError> {
        if let Some(size) = reason.as_ref().map(String::len)
            && size > MAX_REASON_BYTES
        {
            return Err(ServiceError::TooLarge {
                what: "reason".into(),
                size,
                limit: MAX_REASON_BYTES,
            });
        }
        self.close(&lookup, |state, now| state.cancel(reason.clone(), now))
            .await
    }

    /// Closes an open wait with `decide` (cancel or fail) by compare-and-set, writing its resume
    /// in the same transaction. Returns the wait and whether this call closed it (a wait
    /// already decided is returned unchanged).
    async fn close(
        &self,
        lookup: &WaitLookup,
        decide: impl Fn(&mut WaitState, Timestamp) -> Result<(), Resolution>,
    ) -> Result<(StoredWait, bool), ServiceError> {
        self.retry_on_conflict(|| lookup.to_string(), |_| self.close_once(lookup, &decide))
            .await
    }

    async fn close_once(
        &self,
        lookup: &WaitLookup,
        decide: &impl Fn(&mut WaitState, Timestamp) -> Result<(), Resolution>,
    ) -> Result<Attempt<(StoredWait, bool)>, ServiceError> {
        let stored = self.get(lookup.clone()).await?;
        let now = self.clock.now();
        let mut wait = stored.clone();
        if decide(&mut wait.state, now).is_err() {
            return Ok(Attempt::Done((stored, false)));
        }
        stamp(&mut wait, now);
        let mut tx = self.store.begin().await?;
        if !tx.update_wait(&wait, stored.version).await? {
            return Ok(Attempt::Conflict);
        }
        let resume = new_resume(&wait.state);
        if let Some(resume) = &resume {
            tx.insert_resume(resume).await?;
        }
        tx.commit().await?;
        crate::metrics::decided(resume.as_ref());
        let k = &wait.state.key;
        tracing::info!(wait_id = %k.id, correlation_id = %k.correlation_id, execution_id = %k.execution_id, status = %wait.state.status(), "wait closed");
        Ok(Attempt::Done((wait, true)))
    }

    /// Times out due waits (at most `limit`), each once across every instance. Returns how
    /// many were decided.
    pub async fn expire_due(&self, limit: u32) -> Result<usize, ServiceError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let due = tx.claim_due_waits(now, limit).await?;
        let mut decided = 0;
        let mut resumes = Vec::new();
        for stored in due {
            let mut wait = stored.clone();
            let Some(outcome) = wait.state.expire(now) else {
                continue;
            };
            stamp(&mut wait, now);
            // The rows are locked by this transaction, so the compare-and-set holds.
            if tx.update_wait(&wait, stored.version).await? {
                if let Some(resume) = new_resume(&wait.state) {
                    tx.insert_resume(&resume).await?;
                    resumes.push(resume);
                }
                decided += 1;
                let k = &wait.state.key;
                tracing::info!(wait_id = %k.id, correlation_id = %k.correlation_id, execution_id = %k.execution_id, outcome = outcome.as_str(), "wait timed out");
            }
        }
        tx.commit().await?;
        for resume in &resumes {
            crate::metrics::decided(Some(resume));
        }
        Ok(decided)
    }

    /// Marks buffered events past their TTL as expired. Returns how many.
    pub async fn expire_buffered(&self) -> Result<u64, ServiceError> {
        let expired = self.store.expire_buffered(self.clock.now()).await?;
        if expired > 0 {
            tracing::info!(expired, "buffered events expired unclaimed");
        }
        Ok(expired)
    }
}
