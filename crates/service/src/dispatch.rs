//! The API-call dispatcher: due calls are claimed from the outbox while others are in flight,
//! each runs on its own (a call that ends frees its slot at once), at most
//! `api.max_in_flight` per instance and `api.max_per_destination` per destination (host and
//! port), so one slow partner cannot hold the calls of every other. A claimed call whose
//! destination is busy waits in the dispatcher for a slot (as many as the destination has
//! slots, each for at most half its lease); further ones are put back (not counted as an
//! attempt) for [`DEFER`], and claiming pauses that long, so a backlog for one destination
//! costs one claim per [`DEFER`], not one per call (the e2e load's 10,000 calls to one partner
//! timed out under that churn).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rendezvous_domain::LeaseOwner;
use rendezvous_ports::{ApiCallRecord, Clock, HttpCaller, ResumeSignal, Store};

use tokio::task::JoinSet;

use crate::{ServiceError, WaitService};

/// How long a claimed call whose destination is at its limit is put back for.
pub const DEFER: Duration = Duration::from_millis(500);

/// Calls in flight per destination.
#[derive(Debug, Default)]
struct Busy(HashMap<String, u32>);

impl Busy {
    /// Takes a slot of `destination` if fewer than `limit` are taken.
    fn take(&mut self, destination: &str, limit: u32) -> bool {
        let n = self.0.entry(destination.to_owned()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&mut self, destination: &str) {
        if let Some(n) = self.0.get_mut(destination) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.0.remove(destination);
            }
        }
    }
}

/// The destination of a call, as the per-destination limit counts it: `host:port`.
pub(crate) fn destination(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => url.to_owned(),
    }
}

impl<S: Store, G: ResumeSignal, C: Clock> WaitService<S, G, C> {
    /// Makes due API calls through `caller`, leased to `owner`, until `stop` completes: each
    /// call runs as its own task, independently of the others, at most `api.max_in_flight` at
    /// once and `api.max_per_destination` per destination; new due calls are claimed whenever
    /// a slot is free (woken by registrations, by a call ending, or every `poll_interval`). On
    /// stop, the calls in flight are finished (each is bounded by the HTTP timeout).
    pub async fn run_api_calls<H: HttpCaller>(
        self: Arc<Self>,
        caller: Arc<H>,
        owner: LeaseOwner,
        poll_interval: Duration,
        stop: impl Future<Output = ()>,
    ) {
        let max_in_flight = self.config.api.max_in_flight.max(1) as usize;
        let per_destination = self.config.api.max_per_destination.max(1);
        // A claimed call is leased to this instance; one whose destination is busy waits
        // here for a slot, but only for half its lease (then it is put back for another).
        let hold = self.config.api.lease / 2;
        let mut stop = std::pin::pin!(stop);
        let mut busy = Busy::default();
        let mut running = JoinSet::new();
        let mut destinations: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut waiting: VecDeque<(String, ApiCallRecord, tokio::time::Instant)> = VecDeque::new();
        let mut pause_claims: Option<tokio::time::Instant> = None;
        let mut claiming = crate::Outage::new("claiming api calls");
        loop {
            let mut start = Vec::new();
            let mut expired = Vec::new();
            let mut still = VecDeque::with_capacity(waiting.len());
            for (to, call, since) in waiting.drain(..) {
                if running.len() + start.len() < max_in_flight && busy.take(&to, per_destination) {
                    start.push((to, call));
                } else if since.elapsed() >= hold {
                    expired.push(call.wait_id);
                } else {
                    still.push_back((to, call, since));
                }
            }
            waiting = still;
            if !expired.is_empty() {
                self.put_back(&owner, &expired).await;
            }
            // Claim no more than the free slots (the waiting calls count: they take the next
            // ones). A claimed call whose destination is busy waits here, at most
            // `max_per_destination` per destination so its slots refill without a claim; past
            // that it is put back at once, and claiming pauses for [`DEFER`]: the calls due
            // now are that destination's backlog, and claiming them again sooner would only
            // put them back again.
            let free = max_in_flight.saturating_sub(running.len() + start.len() + waiting.len());
            let mut overflow = Vec::new();
            let mut more = false;
            let idle = running.is_empty() && start.is_empty() && waiting.is_empty();
            if pause_claims.is_some_and(|until| tokio::time::Instant::now() >= until) {
                pause_claims = None;
            }
            let paused = pause_claims.is_some();
            if free > 0 && (!paused || idle) {
                pause_claims = None;
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match self
                    .store
                    .claim_api_calls(&owner, self.clock.now(), self.config.api.lease, limit)
                    .await
                {
                    Ok(calls) => {
                        claiming.succeeded();
                        more = calls.len() == free;
                        for call in calls {
                            let to = destination(&call.request.url);
                            let queued = waiting.iter().filter(|(t, ..)| *t == to).count();
                            if busy.take(&to, per_destination) {
                                start.push((to, call));
                            } else if queued < per_destination as usize {
                                waiting.push_back((to, call, tokio::time::Instant::now()));
                            } else {
                                overflow.push(call.wait_id);
                            }
                        }
                    }
                    Err(e) => claiming.failed(&e),
                }
            }
            if !overflow.is_empty() {
                self.put_back(&owner, &overflow).await;
                pause_claims = Some(tokio::time::Instant::now() + DEFER);
                more = false;
            }
            let started = !start.is_empty();
            for (to, call) in start {
                let (service, caller) = (self.clone(), caller.clone());
                let task =
                    running.spawn(async move { service.attempt_call(caller.as_ref(), call).await });
                destinations.insert(task.id(), to);
            }
            // More may be due, and some were started: claim again at once. Otherwise wait
            // for a slot, a registration, or the poll interval.
            if more && started && running.len() < max_in_flight {
                continue;
            }
            tokio::select! {
                Some(ended) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = ended.as_ref().map_or_else(tokio::task::JoinError::id, |(id, _)| *id);
                    if let Some(to) = destinations.remove(&id) {
                        busy.release(&to);
                    }
                    log_ended(ended.map(|(_, result)| result));
                }
                () = self.calls_pending.notified() => {}
                () = tokio::time::sleep(poll_interval) => {}
                () = tokio::time::sleep_until(pause_claims.unwrap_or_else(tokio::time::Instant::now)), if pause_claims.is_some() => {}
                () = &mut stop => break,
            }
        }
        let held: Vec<_> = waiting.iter().map(|(_, call, _)| call.wait_id).collect();
        if !held.is_empty() {
            self.put_back(&owner, &held).await;
        }
        while let Some(ended) = running.join_next().await {
            log_ended(ended);
        }
    }

    /// Puts claimed calls back in the outbox for [`DEFER`], not counted as attempts.
    async fn put_back(&self, owner: &LeaseOwner, calls: &[rendezvous_domain::WaitId]) {
        let now = self.clock.now();
        if let Err(e) = self
            .store
            .defer_api_calls(owner, calls, now.plus(DEFER), now)
            .await
        {
            tracing::warn!(error = %e, "putting back api calls failed; they are retried after their lease");
        }
    }

    /// One round of the dispatcher (for tests and tools; the application runs
    /// [`WaitService::run_api_calls`]): claims up to `limit` due calls, makes them
    /// concurrently within the per-destination limit (the others are put back for [`DEFER`])
    /// and returns when all are settled. Returns how many were attempted.
    pub async fn dispatch_api_calls<H: HttpCaller>(
        &self,
        caller: &H,
        owner: &LeaseOwner,
        limit: u32,
    ) -> Result<usize, ServiceError> {
        let mut busy = Busy::default();
        let (calls, _) = self.claim_calls(owner, limit as usize, &mut busy).await?;
        let n = calls.len();
        let results = futures_util::future::join_all(
            calls
                .into_iter()
                .map(|(_, call)| self.attempt_call(caller, call)),
        )
        .await;
        results.into_iter().for_each(log_result);
        Ok(n)
    }

    /// Claims up to `limit` due calls and takes a slot of each one's destination; the calls
    /// whose destination is at its limit are put back for [`DEFER`]. Returns the calls to make
    /// with their destinations, and whether the claim was full (more may be due).
    async fn claim_calls(
        &self,
        owner: &LeaseOwner,
        limit: usize,
        busy: &mut Busy,
    ) -> Result<(Vec<(String, ApiCallRecord)>, bool), ServiceError> {
        let now = self.clock.now();
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let calls = self
            .store
            .claim_api_calls(owner, now, self.config.api.lease, limit)
            .await?;
        let full = calls.len() as u64 == u64::from(limit);
        let per_destination = self.config.api.max_per_destination.max(1);
        let mut start = Vec::with_capacity(calls.len());
        let mut deferred = Vec::new();
        for call in calls {
            let to = destination(&call.request.url);
            if busy.take(&to, per_destination) {
                start.push((to, call));
            } else {
                deferred.push(call.wait_id);
            }
        }
        if !deferred.is_empty() {
            tracing::debug!(
                deferred = deferred.len(),
                "destinations at their limit of calls in flight; calls put back"
            );
            if let Err(e) = self
                .store
                .defer_api_calls(owner, &deferred, now.plus(DEFER), now)
                .await
            {
                tracing::warn!(error = %e, "putting back api calls failed; they are retried after their lease");
            }
        }
        Ok((start, full))
    }
}

fn log_ended(ended: Result<Result<(), ServiceError>, tokio::task::JoinError>) {
    match ended {
        Ok(result) => log_result(result),
        Err(e) => {
            tracing::error!(error = %e, "an api call task panicked; the call is retried after its lease")
        }
    }
}

fn log_result(result: Result<(), ServiceError>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "api call bookkeeping failed; the call is retried after its lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_host_and_port() {
        assert_eq!(destination("https://a.example/x?y"), "a.example:443");
        assert_eq!(destination("http://a.example/x"), "a.example:80");
        assert_eq!(destination("http://127.0.0.1:8080/x"), "127.0.0.1:8080");
        assert_eq!(destination("http://[::1]:9/x"), "[::1]:9");
    }

    #[test]
    fn a_destination_takes_at_most_its_limit() {
        let mut busy = Busy::default();
        assert!(busy.take("a:1", 2));
        assert!(busy.take("a:1", 2));
        assert!(!busy.take("a:1", 2));
        assert!(busy.take("b:1", 2), "another destination is not held by a");
        busy.release("a:1");
        assert!(busy.take("a:1", 2), "an ended call frees its slot");
    }
}
