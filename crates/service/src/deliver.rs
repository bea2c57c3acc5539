//! Delivering an event: applied to its wait by compare-and-set, or buffered under the
//! correlation lock until the wait registers.

use rendezvous_domain::{
    CorrelationId, IgnoreReason, IncomingEvent, Outcome, TenantId, Verdict, WaitState,
};
use rendezvous_ports::{ChangeOutcome, Clock, ResumeSignal, Store, StoreTx, WaitChange};

use crate::requests::Effect;
use crate::service::{Attempt, counted, new_resume, stamp};
use crate::{Delivered, Delivery, ServiceError, WaitService};

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// Delivers one event for a correlation id: applied to the wait if it exists, otherwise
    /// buffered until one registers. An execution-id mismatch is recorded on the wait and
    /// returned as [`ServiceError::ExecutionMismatch`].
    pub async fn deliver(&self, delivery: Delivery) -> Result<Delivered, ServiceError> {
        let channel = delivery.channel.clone();
        let result = self.deliver_checked(delivery).await;
        crate::metrics::delivered(&channel, result.as_ref());
        result
    }

    async fn deliver_checked(&self, delivery: Delivery) -> Result<Delivered, ServiceError> {
        if delivery.size > self.config.max_payload_bytes {
            return Err(ServiceError::TooLarge {
                what: "event payload".into(),
                size: delivery.size,
                limit: self.config.max_payload_bytes,
            });
        }
        let (tenant, correlation_id) = (delivery.tenant, delivery.correlation_id);
        let event = IncomingEvent {
            key: delivery.event_key,
            channel: delivery.channel,
            execution_id: delivery.execution_id,
            payload: delivery.payload,
            received_at: self.clock.now(),
        };
        let what = || format!("correlation id {correlation_id}");
        self.retry_on_conflict(what, |_| {
            self.deliver_once(&tenant, &correlation_id, &event)
        })
        .await
    }

    async fn deliver_once(
        &self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
        event: &IncomingEvent,
    ) -> Result<Attempt<Delivered>, ServiceError> {
        let Some(stored) = self.store.find_wait(tenant, correlation_id).await? else {
            return Ok(match self.buffer(tenant, correlation_id, event).await? {
                Some(buffered) => Attempt::Done(buffered),
                // A wait registered meanwhile: apply to it.
                None => Attempt::Again,
            });
        };
        let now = self.clock.now();
        let mut wait = stored.clone();
        let step = wait.state.apply(event.clone(), now);
        if step.changed {
            stamp(&mut wait, now);
            let resume = step.decided.and_then(|_| new_resume(&wait.state));
            let change = WaitChange {
                wait: &wait,
                expected_version: stored.version,
                processed: counted(&event.key, &step.verdict),
                resume: resume.as_ref(),
            };
            match self.store.apply_change(change).await? {
                ChangeOutcome::Applied => {
                    crate::metrics::decided(resume.as_ref());
                    if resume.is_some() {
                        // The event may be another trace's: the decision points back.
                        crate::trace::link(&tracing::Span::current(), wait.state.trace.as_ref());
                    }
                }
                ChangeOutcome::VersionMoved => return Ok(Attempt::Conflict),
                // The inbox already has it although the state did not: a replay.
                ChangeOutcome::AlreadyProcessed => {
                    return Ok(Attempt::Done(Delivered::Applied {
                        wait: Box::new(stored),
                        effect: Effect::Duplicate,
                    }));
                }
            }
        }
        log_verdict(&wait.state, event, &step.verdict, step.decided);
        match Effect::of(step.verdict) {
            Ok(effect) => Ok(Attempt::Done(Delivered::Applied {
                wait: Box::new(wait),
                effect,
            })),
            Err(IgnoreReason::OverWaitLimit { size, limit, .. }) => Err(ServiceError::TooLarge {
                what: format!(
                    "with this event, the events of wait {} (recorded, not applied)",
                    wait.state.key.id
                ),
                size,
                limit,
            }),
            // The message names what the event carried, never the wait's own execution id: a
            // caller that does not know it must not learn it from the refusal.
            Err(mismatch) => Err(ServiceError::ExecutionMismatch(format!(
                "wait {}: {}; the event was recorded and not applied",
                wait.state.key.id,
                match mismatch {
                    IgnoreReason::ExecutionMismatch {
                        found: Some(found), ..
                    } => format!(
                        "execution id mismatch: the event's execution id \"{found}\" is not the wait's"
                    ),
                    _ => "execution id missing: the event names none".to_owned(),
                }
            ))),
        }
    }

    /// Buffers an early event under the correlation lock. `None` when a wait appeared.
    async fn buffer(
        &self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
        event: &IncomingEvent,
    ) -> Result<Option<Delivered>, ServiceError> {
        let mut tx = self.store.begin().await?;
        tx.lock_correlation(tenant, correlation_id).await?;
        if tx.find_wait(tenant, correlation_id).await?.is_some() {
            return Ok(None);
        }
        let expires_at = event.received_at.plus(self.config.buffer_ttl);
        let inserted = tx
            .buffer_event(tenant, correlation_id, event, expires_at)
            .await?;
        tx.commit().await?;
        tracing::info!(correlation_id = %correlation_id, event_key = %event.key, duplicate = !inserted, "event buffered before its wait");
        Ok(Some(if inserted {
            Delivered::Buffered
        } else {
            Delivered::BufferedDuplicate
        }))
    }
}

fn log_verdict(
    state: &WaitState,
    event: &IncomingEvent,
    verdict: &Verdict,
    decided: Option<Outcome>,
) {
    let k = &state.key;
    match verdict {
        Verdict::Ignored(reason) => tracing::info!(
            wait_id = %k.id, correlation_id = %k.correlation_id, execution_id = %k.execution_id,
            event_key = %event.key, reason = %reason, "event ignored"
        ),
        other => tracing::info!(
            wait_id = %k.id, correlation_id = %k.correlation_id, execution_id = %k.execution_id,
            event_key = %event.key, verdict = ?other, decided = ?decided.map(Outcome::as_str), "event applied"
        ),
    }
}
