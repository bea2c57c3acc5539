//! Retention: what finished more than a retention period ago (decided waits with their inbox
//! rows, acknowledged resumes and settled calls; applied and expired early events; quarantined
//! events) is purged, in bounded rounds of the store, so storage does not grow without bound.

use std::time::Duration;

use rendezvous_domain::Timestamp;
use rendezvous_ports::{Clock, PurgeCounts, ResumeSignal, Store};

use crate::{ServiceError, WaitService};

/// Most store rounds one [`WaitService::purge_expired`] call of the application runs; a longer
/// backlog is left to the next call, which comes soon ([`Purged::backlog`]), so one call never
/// holds the store for long.
pub const MAX_PURGE_ROUNDS: u32 = 100;

/// What one [`WaitService::purge_expired`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// What was deleted.
    pub counts: PurgeCounts,
    /// Whether it stopped at its round limit with rows left to purge: call again soon rather
    /// than after the retention interval, or a deployment finishing waits faster than one call
    /// per interval purges would grow without bound.
    pub backlog: bool,
}

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// Purges what finished more than `retention` ago, in rounds of at most `batch` rows of
    /// each kind (each round one transaction), until a round finds less than a full batch or
    /// `max_rounds` ran. Never an open wait or an unacknowledged resume.
    pub async fn purge_expired(
        &self,
        retention: Duration,
        batch: u32,
        max_rounds: u32,
    ) -> Result<Purged, ServiceError> {
        let now = self.clock.now();
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let before = Timestamp::from_millis(now.as_millis().saturating_sub(retention_ms));
        let batch = batch.max(1);
        let mut total = PurgeCounts::default();
        let mut backlog = false;
        for _ in 0..max_rounds.max(1) {
            let round = self.store.purge(before, batch).await?;
            total.add(round);
            backlog = round.full(batch);
            if !backlog {
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
                backlog,
                "purged what finished before the retention period"
            );
        }
        Ok(Purged {
            counts: total,
            backlog,
        })
    }
}
