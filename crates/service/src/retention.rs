//! Retention: what finished more than a retention period ago (decided waits with their inbox
//! rows, acknowledged resumes and settled calls; applied and expired early events; quarantined
//! events) is purged, in bounded rounds of the store, so storage does not grow without bound.

use std::time::Duration;

use rendezvous_domain::Timestamp;
use rendezvous_ports::{Clock, PurgeCounts, ResumeSignal, Store};

use crate::{ServiceError, WaitService};

/// Most store rounds one [`WaitService::purge_expired`] call runs; a longer backlog is left to
/// the next call, so one call never holds the store for long.
pub const MAX_PURGE_ROUNDS: u32 = 100;

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// Purges what finished more than `retention` ago, in rounds of at most `batch` rows of
    /// each kind (each round one transaction), until a round finds less than a full batch or
    /// [`MAX_PURGE_ROUNDS`] ran. Never an open wait or an unacknowledged resume. Returns what
    /// was deleted.
    pub async fn purge_expired(
        &self,
        retention: Duration,
        batch: u32,
    ) -> Result<PurgeCounts, ServiceError> {
        let now = self.clock.now();
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let before = Timestamp::from_millis(now.as_millis().saturating_sub(retention_ms));
        let batch = batch.max(1);
        let mut total = PurgeCounts::default();
        for _ in 0..MAX_PURGE_ROUNDS {
            let round = self.store.purge(before, batch).await?;
            total.add(round);
            if !round.full(batch) {
                break;
            }
        }
        if total.total() > 0 {
            tracing::info!(
                waits = total.waits,
                processed_events = total.processed_events,
                resumes = total.resumes,
                api_calls = total.api_calls,
                early_events = total.early_events,
                quarantined = total.quarantined,
                before = before.as_millis(),
                "purged what finished before the retention period"
            );
        }
        Ok(total)
    }
}
