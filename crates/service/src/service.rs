//! `WaitService`: the use cases' shared state over the ports, and the helpers every use case
//! that changes a wait goes through (the compare-and-set retry loop, the version stamp). The
//! use cases themselves are in one file each (`register.rs`, `deliver.rs`, `close.rs`, ...).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rendezvous_domain::{EventKey, ResumeId, SourceName, Timestamp, Verdict, WaitState};
use rendezvous_ports::{Clock, ResumeRecord, ResumeSignal, Store, StoredWait, TopicFields};
use tokio::sync::Notify;

use crate::{ServiceConfig, ServiceError};

/// The use cases, generic over the store, the resume signal and the clock.
#[derive(Debug, Clone)]
pub struct WaitService<S, G, C> {
    pub(crate) store: S,
    pub(crate) signal: G,
    pub(crate) clock: C,
    pub(crate) config: ServiceConfig,
    /// Topic/field combinations already recorded in the store (so registration writes them
    /// once per instance, not once per wait).
    pub(crate) known_topics: Arc<Mutex<HashSet<TopicFields>>>,
    /// Wakes the Kafka ingress when a wait introduced a topic.
    pub(crate) topics_changed: Arc<Notify>,
    /// Wakes the API-call dispatcher when a registration wrote a call.
    pub(crate) calls_pending: Arc<Notify>,
}

/// What one attempt of a compare-and-set use case came to.
pub(crate) enum Attempt<T> {
    /// Finished, with this answer.
    Done(T),
    /// Lost a race (the wait's version moved): back off, then try again on fresh state.
    Conflict,
    /// Something appeared that the next attempt handles (a wait registered while an event was
    /// about to be buffered): try again at once.
    Again,
}

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// The service over its ports.
    pub fn new(store: S, signal: G, clock: C, config: ServiceConfig) -> Self {
        Self {
            store,
            signal,
            clock,
            config,
            known_topics: Arc::default(),
            topics_changed: Arc::default(),
            calls_pending: Arc::default(),
        }
    }

    /// Notified when a registration wrote an API call (the dispatcher then runs at once).
    pub fn calls_pending(&self) -> &Notify {
        &self.calls_pending
    }

    /// Notified when a registration introduced a Kafka topic (or id fields) this instance had
    /// not seen; the ingress then refreshes its subscription at once.
    pub fn topics_changed(&self) -> &Notify {
        &self.topics_changed
    }

    /// The resume signal (for resume streams).
    pub fn signal(&self) -> &G {
        &self.signal
    }

    /// The current time of the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The one compare-and-set retry loop of the use cases ([`retry_on_conflict`] with this
    /// service's `max_conflict_retries`).
    pub(crate) async fn retry_on_conflict<T, F, Fut>(
        &self,
        what: impl FnOnce() -> String,
        attempt: F,
    ) -> Result<T, ServiceError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Attempt<T>, ServiceError>>,
    {
        retry_on_conflict(self.config.max_conflict_retries, what, attempt).await
    }
}

/// Runs `attempt` (numbered from 0) until it is done, backing off with jitter after each lost
/// race, at most `max_retries` times more; then the request is [`ServiceError::Contended`] on
/// `what`. An error ends it at once.
pub(crate) async fn retry_on_conflict<T, F, Fut>(
    max_retries: u32,
    what: impl FnOnce() -> String,
    mut attempt: F,
) -> Result<T, ServiceError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Attempt<T>, ServiceError>>,
{
    for n in 0..=max_retries {
        match attempt(n).await? {
            Attempt::Done(answer) => return Ok(answer),
            Attempt::Conflict => backoff(n).await,
            Attempt::Again => {}
        }
    }
    Err(ServiceError::Contended { what: what() })
}

/// Random back-off before retrying a conflict: up to 1, 2, 4 ... 64 ms.
async fn backoff(attempt: u32) {
    let cap = 1u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=cap * 1000))).await;
}

/// Marks a wait as changed at `now`: its next version.
pub(crate) fn stamp(wait: &mut StoredWait, now: Timestamp) {
    wait.version += 1;
    wait.updated_at = now;
}

/// The resume a decided wait puts in the outbox, with a new resume id; `None` while open.
pub(crate) fn new_resume(state: &WaitState) -> Option<ResumeRecord> {
    ResumeRecord::of(state, ResumeId::from_uuid(uuid::Uuid::new_v4()))
}

/// The inbox row an event leaves when it counted for a source (accepted, or completed the
/// wait): its key and the source.
pub(crate) fn counted<'a>(
    key: &'a EventKey,
    verdict: &'a Verdict,
) -> Option<(&'a EventKey, &'a SourceName)> {
    match verdict {
        Verdict::Accepted { source } | Verdict::Completed { source } => Some((key, source)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test]
    async fn conflicts_are_retried_up_to_the_limit_then_contended() {
        let tries = Cell::new(0);
        let result: Result<(), _> = retry_on_conflict(
            3,
            || "wait w-1".to_owned(),
            |_| {
                tries.set(tries.get() + 1);
                async { Ok(Attempt::Conflict) }
            },
        )
        .await;
        assert_eq!(tries.get(), 4, "the first attempt and three retries");
        assert_eq!(
            result.unwrap_err().to_string(),
            "wait w-1 is contended by concurrent writers; retry"
        );
    }

    #[tokio::test]
    async fn a_later_attempt_can_win_and_errors_end_at_once() {
        let won = retry_on_conflict(3, String::new, |n| async move {
            Ok(match n {
                0 => Attempt::Again,
                1 => Attempt::Conflict,
                n => Attempt::Done(n),
            })
        })
        .await;
        assert_eq!(won.unwrap(), 2);
        let tries = Cell::new(0);
        let failed: Result<(), _> = retry_on_conflict(3, String::new, |_| {
            tries.set(tries.get() + 1);
            async { Err(ServiceError::NotFound("gone".into())) }
        })
        .await;
        assert!(matches!(failed, Err(ServiceError::NotFound(_))));
        assert_eq!(tries.get(), 1);
    }
}
