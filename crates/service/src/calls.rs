//! One attempt of an outbound API call (leased from the outbox by the dispatcher,
//! `dispatch.rs`), made through the `HttpCaller` port only while its wait still needs it,
//! and settled — done (the reply delivered as the `api` event in `sync` mode), retried with
//! backoff, or failed together with its wait; a wait that was decided meanwhile, or whose
//! `api` source already has its event, is never failed by its call. The retry schedule is a
//! pure function.
//!
//! What reaches a log line or a reason is made safe here: URLs without credentials or query
//! (`redact_url`), and every failure reason — an upstream's error body above all — stripped of
//! control characters and escape sequences and bounded (`sanitize_text`), so an upstream
//! cannot forge log lines. The destination is checked again against this instance's policy
//! before each attempt.

use std::time::Duration;

use rendezvous_domain::limits::{MAX_RECORDED_REASON_BYTES, truncate_reason};
use rendezvous_domain::request::{MAX_BODY_SNIPPET_BYTES, redact_url, sanitize_text};
use rendezvous_domain::{
    Channel, EventKey, ResponseMode, SourceName, Timestamp, TraceContext, WaitId,
};
use rendezvous_ports::{
    ApiCallRecord, CallFailure, Clock, HttpCaller, HttpReply, ResumeSignal, Store, StoreTx,
    StoredWait, retry_after,
};

use crate::service::{Attempt, new_resume, stamp};
use crate::{ApiPolicy, Delivery, ServiceError, WaitService};

/// What to do with a call after an attempt that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NextAttempt {
    /// Try again after `delay`.
    Retry {
        /// How long to wait.
        delay: Duration,
        /// Why the attempt failed.
        reason: String,
    },
    /// Give up: the wait fails with this reason.
    Fail(String),
}

/// Whether a failed attempt is retried: transient failures (connect errors, timeouts, 5xx,
/// 429) are, until `policy.max_attempts`, after `backoff × 2^(attempts-1)` capped at
/// `max_backoff`, or the server's `Retry-After` when longer; permanent failures are not.
/// `attempts` counts the attempt that just failed (1 for the first).
pub(crate) fn next_attempt(
    policy: &ApiPolicy,
    attempts: u32,
    failure: Result<String, (String, Option<Duration>)>,
) -> NextAttempt {
    match failure {
        Err((reason, retry_after)) if attempts < policy.max_attempts => {
            let exp = policy
                .backoff
                .saturating_mul(1 << attempts.saturating_sub(1).min(16));
            let delay = exp
                .min(policy.max_backoff)
                .max(retry_after.unwrap_or_default());
            NextAttempt::Retry { delay, reason }
        }
        Err((reason, _)) => NextAttempt::Fail(format!(
            "api call failed after {attempts} attempts: {reason}"
        )),
        Ok(reason) => NextAttempt::Fail(format!("api call failed: {reason}")),
    }
}

/// Whether a wait still needs its API call: not when it is gone, decided (completed, timed
/// out, cancelled, failed) or its `api` source already has its event (the callback came
/// first).
pub(crate) fn still_needed(wait: Option<&StoredWait>) -> bool {
    wait.is_some_and(|w| w.state.is_open() && !w.state.satisfied().contains(&SourceName::api()))
}

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// One attempt of a claimed call. The wait is read first: a call its wait no longer needs
    /// ([`still_needed`]) is finished without an attempt. A 2xx ends the call (in `sync` mode
    /// its reply is delivered as the `api` event); connect errors, timeouts, 5xx and 429 are
    /// retried with backoff (`Retry-After` respected) up to the attempt limit; other failures,
    /// or the limit, fail the wait with the reason — unless the wait no longer needs the call
    /// by then, in which case only the call ends.
    pub(crate) async fn attempt_call<H: HttpCaller>(
        &self,
        caller: &H,
        call: ApiCallRecord,
    ) -> Result<(), ServiceError> {
        let wait_id = call.wait_id;
        if !still_needed(self.store.get_wait(wait_id).await?.as_ref()) {
            tracing::info!(%wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, "the wait no longer needs its api call (decided, or its api event arrived); the call is dropped without an attempt");
            self.store
                .finish_api_call(wait_id, self.clock.now())
                .await?;
            return Ok(());
        }
        let url = redact_url(&call.request.url);
        // A CLIENT span in the registration's trace, with the HTTP semantic conventions'
        // attributes; the caller sends its context (its own span id) in `traceparent`.
        let method = call.request.method.as_str();
        let (host, port) = url::Url::parse(&call.request.url)
            .map(|u| {
                (
                    u.host_str().unwrap_or_default().to_owned(),
                    u.port_or_known_default(),
                )
            })
            .unwrap_or_default();
        let span = tracing::info_span!(
            "api_call",
            otel.name = method,
            otel.kind = "client",
            http.request.method = method,
            url.full = %url,
            server.address = %host,
            server.port = port,
            http.request.resend_count = call.attempts.saturating_sub(1),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            %wait_id,
            correlation_id = %call.correlation_id,
            execution_id = %call.execution_id,
            attempt = call.attempts,
        );
        let stored = call.request.headers.get("traceparent").and_then(|tp| {
            TraceContext::parse(
                tp,
                call.request.headers.get("tracestate").map(String::as_str),
            )
        });
        crate::trace::continue_trace(&span, stored.as_ref());
        // A call written under another policy (an allowlist since narrowed) is not made.
        let started = std::time::Instant::now();
        let outcome = match self.config.api.destinations.check(&call.request.url) {
            Ok(()) => {
                tracing::Instrument::instrument(caller.call(&call.request), span.clone()).await
            }
            Err(refused) => Err(CallFailure::Permanent(refused.to_string())),
        };
        match &outcome {
            Ok(reply) => {
                span.record("http.response.status_code", reply.status);
                if reply.status >= 400 {
                    span.record("error.type", reply.status);
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(failure) => {
                span.record(
                    "error.type",
                    match failure {
                        CallFailure::Transient(_) => "transient",
                        CallFailure::Permanent(_) => "permanent",
                    },
                );
                span.record("otel.status_code", "ERROR");
            }
        }
        let now = self.clock.now();
        // Ok(reason): permanent. Err((reason, retry_after)): transient. Every reason is
        // sanitized: it may hold what an upstream chose to send.
        let failure = match outcome {
            Ok(reply) if (200..300).contains(&reply.status) => {
                crate::metrics::api_call("success", started.elapsed().as_secs_f64());
                tracing::info!(%wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, status = reply.status, %url, "api call succeeded");
                return self.succeed(&call, reply, now).await;
            }
            Ok(reply) if reply.status == 429 || reply.status >= 500 => {
                Err((answered(&url, &reply), retry_after(&reply)))
            }
            Ok(reply) => Ok(answered(&url, &reply)),
            Err(CallFailure::Transient(reason)) => Err((clean(&reason), None)),
            Err(CallFailure::Permanent(reason)) => Ok(clean(&reason)),
        };
        let next = next_attempt(&self.config.api, call.attempts, failure);
        crate::metrics::api_call(
            match next {
                NextAttempt::Retry { .. } => "retry",
                NextAttempt::Fail(_) => "failed",
            },
            started.elapsed().as_secs_f64(),
        );
        match next {
            NextAttempt::Retry { delay, reason } => {
                if !still_needed(self.store.get_wait(wait_id).await?.as_ref()) {
                    tracing::info!(%wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, %reason, "api call failed; the wait no longer needs it, so it is not retried");
                    self.store.finish_api_call(wait_id, now).await?;
                    return Ok(());
                }
                tracing::warn!(%wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, %reason, retry_in_ms = delay.as_millis() as u64, "api call failed; retrying");
                self.store
                    .retry_api_call(wait_id, now.plus(delay), &reason, now)
                    .await?;
                Ok(())
            }
            NextAttempt::Fail(reason) => {
                if self.fail_for_call(wait_id, &reason).await? {
                    tracing::warn!(%wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, %reason, "api call failed for good; the wait failed");
                    self.store.fail_api_call(wait_id, &reason, now).await?;
                } else {
                    tracing::info!(%wait_id, correlation_id = %call.correlation_id, execution_id = %call.execution_id, %reason, "api call failed for good, but the wait no longer needs it (decided, or its api event arrived); the wait is left as it is");
                    self.store.finish_api_call(wait_id, now).await?;
                }
                Ok(())
            }
        }
    }

    /// Fails the wait of a call that failed for good, by compare-and-set, only while the wait
    /// still needs the call: a decided wait, or one whose `api` source already has its event,
    /// is left as it is. Returns whether the wait was failed.
    async fn fail_for_call(&self, wait_id: WaitId, reason: &str) -> Result<bool, ServiceError> {
        let reason = truncate_reason(reason, MAX_RECORDED_REASON_BYTES);
        self.retry_on_conflict(
            || format!("failing wait {wait_id} after its api call"),
            |_| async {
                let Some(stored) = self.store.get_wait(wait_id).await? else {
                    return Ok(Attempt::Done(false));
                };
                if !still_needed(Some(&stored)) {
                    return Ok(Attempt::Done(false));
                }
                let now = self.clock.now();
                let mut wait = stored.clone();
                if wait.state.fail(reason.clone(), now).is_err() {
                    return Ok(Attempt::Done(false));
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
                Ok(Attempt::Done(true))
            },
        )
        .await
    }

    /// A 2xx: in `sync` mode the reply is the wait's `api` event; the call is done.
    async fn succeed(
        &self,
        call: &ApiCallRecord,
        reply: HttpReply,
        now: Timestamp,
    ) -> Result<(), ServiceError> {
        if call.request.response_mode == ResponseMode::Sync {
            let key = EventKey::parse(format!("api-call:{}", call.wait_id))
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            let delivery = Delivery {
                size: Delivery::api_size(&reply.headers, &reply.body),
                tenant: call.tenant.clone(),
                correlation_id: call.correlation_id.clone(),
                execution_id: Some(call.execution_id.clone()),
                channel: Channel::Source(SourceName::api()),
                payload: Delivery::api_payload(u32::from(reply.status), reply.headers, &reply.body),
                event_key: key,
            };
            match self.deliver(delivery).await {
                Ok(_) | Err(ServiceError::ExecutionMismatch(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.store.finish_api_call(call.wait_id, now).await?;
        Ok(())
    }
}

/// "`url` answered `status`: `body...`": the URL already redacted, the body sanitized and cut
/// to [`MAX_BODY_SNIPPET_BYTES`].
fn answered(url: &str, reply: &HttpReply) -> String {
    format!("{url} answered {}{}", reply.status, snippet(&reply.body))
}

/// The start of an upstream's body, safe to log: no control characters or escape sequences,
/// at most [`MAX_BODY_SNIPPET_BYTES`].
fn snippet(body: &[u8]) -> String {
    // Only the start is looked at: a sanitized snippet is never longer than its source.
    let start = &body[..body.len().min(MAX_BODY_SNIPPET_BYTES * 4)];
    let text = sanitize_text(&String::from_utf8_lossy(start), MAX_BODY_SNIPPET_BYTES);
    if text.is_empty() {
        return String::new();
    }
    format!(": {text}")
}

/// A failure reason from the HTTP adapter, safe to log and record.
fn clean(reason: &str) -> String {
    sanitize_text(reason, MAX_RECORDED_REASON_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ApiPolicy {
        ApiPolicy {
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            ..ApiPolicy::default()
        }
    }

    fn transient(retry_after: Option<u64>) -> Result<String, (String, Option<Duration>)> {
        Err(("503".into(), retry_after.map(Duration::from_secs)))
    }

    #[test]
    fn the_retry_schedule_doubles_up_to_the_cap_then_fails() {
        let table = [
            (1, transient(None), Some(1)),
            (2, transient(None), Some(2)),
            (3, transient(None), Some(4)),
            (4, transient(None), Some(5)),
            // Retry-After wins when longer than the backoff ...
            (1, transient(Some(30)), Some(30)),
            // ... never when shorter.
            (3, transient(Some(1)), Some(4)),
            // The attempt limit.
            (5, transient(None), None),
        ];
        for (attempts, failure, expected) in table {
            let next = next_attempt(&policy(), attempts, failure);
            match (next, expected) {
                (NextAttempt::Retry { delay, .. }, Some(secs)) => {
                    assert_eq!(delay, Duration::from_secs(secs), "attempt {attempts}");
                }
                (NextAttempt::Fail(reason), None) => {
                    assert_eq!(reason, "api call failed after 5 attempts: 503");
                }
                (next, expected) => panic!("attempt {attempts}: {next:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn upstream_bodies_are_sanitized_and_cut() {
        let reply = HttpReply {
            status: 400,
            headers: Default::default(),
            body: "bad\n2024-01-01 INFO forged\x1b[31m red\x1b[0m\r\n"
                .repeat(100)
                .into_bytes(),
        };
        let reason = answered("https://x.example/a", &reply);
        assert!(
            reason.starts_with(
                "https://x.example/a answered 400: bad 2024-01-01 INFO forged red bad"
            ),
            "{reason}"
        );
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
        assert!(
            reason.len() <= "https://x.example/a answered 400: ".len() + MAX_BODY_SNIPPET_BYTES,
            "{}",
            reason.len()
        );
        let empty = HttpReply {
            body: b"\n\x1b[0m".to_vec(),
            ..reply
        };
        assert_eq!(answered("u", &empty), "u answered 400");
        assert_eq!(clean("a\nb\x1b[2Jc"), "a bc");
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        assert_eq!(
            next_attempt(&policy(), 1, Ok("https://x answered 404".into())),
            NextAttempt::Fail("api call failed: https://x answered 404".into())
        );
    }
}
