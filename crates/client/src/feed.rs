//! [`ResumeFeed`]: the resume stream as an engine needs it. It subscribes on one of several
//! endpoints and moves to the next when the stream breaks or ends (an instance restarting or
//! gone), with backoff; runs the handler for up to `max_in_flight` resumes at once; acks a
//! resume only after its handler succeeded; and skips resumes it already handled (a resume is
//! delivered again when its ack was lost with a stream), so the handler sees each once.

use std::collections::{HashSet, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::Endpoint;
use tonic::{Code, Status};

use crate::client::{Client, Credentials, backoff};
use crate::subscription::{Subscription, ack_request};
use crate::v1;

/// How long a graceful stop waits for the server to end the stream after the last ack.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a feed stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The service refused the subscription for good: the credential, its role or tenant, or
    /// the subscription itself (retrying cannot help).
    #[error("the resume stream was refused: {0}")]
    Refused(Status),
    /// No endpoint was given.
    #[error("a resume feed needs at least one endpoint")]
    NoEndpoint,
}

/// What a feed did so far; shared with the running feed (see [`ResumeFeed::stats`]).
#[derive(Debug, Default)]
pub struct FeedStats {
    handled: AtomicU64,
    duplicates: AtomicU64,
    handler_errors: AtomicU64,
    reconnects: AtomicU64,
    in_flight: AtomicU64,
}

impl FeedStats {
    /// Resumes whose handler succeeded (each resume id once).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Deliveries of a resume already handled or being handled, not passed to the handler.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Handler calls that failed or panicked (those resumes were not acked and come again).
    pub fn handler_errors(&self) -> u64 {
        self.handler_errors.load(Ordering::Relaxed)
    }

    /// Times the feed subscribed again after its stream broke or ended.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Handlers running now: at `max_in_flight`, the server sends nothing more until one
    /// finishes (the feed's backpressure).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The resume stream of an engine, owned: see the module docs and the crate's example.
#[derive(Debug)]
pub struct ResumeFeed {
    endpoints: Vec<Endpoint>,
    credentials: Credentials,
    tenant_id: String,
    max_in_flight: u32,
    dedupe_window: usize,
    min_backoff: Duration,
    max_backoff: Duration,
    stats: Arc<FeedStats>,
}

impl ResumeFeed {
    /// A feed over these endpoints (instances of one deployment, tried in turn). Each gets
    /// HTTP/2 keepalive pings, so a peer that vanishes without closing is noticed in seconds.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        Self {
            endpoints: endpoints
                .into_iter()
                .map(|e| {
                    e.connect_timeout(Duration::from_secs(5))
                        .http2_keep_alive_interval(Duration::from_secs(10))
                        .keep_alive_timeout(Duration::from_secs(5))
                        .keep_alive_while_idle(true)
                })
                .collect(),
            credentials: Credentials::none(),
            tenant_id: String::new(),
            max_in_flight: 64,
            dedupe_window: 10_000,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            stats: Arc::default(),
        }
    }

    /// Sends `credentials` when subscribing.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Only this tenant's resumes (one of the credential's). Default: every tenant of the
    /// credential.
    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = tenant_id.into();
        self
    }

    /// How many resumes may be handled at once (and held unacknowledged by the server for
    /// this feed). Default 64; the server takes more than 1024 as 1024.
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// How many handled resume ids are remembered to skip redeliveries. Default 10,000.
    pub fn dedupe_window(mut self, n: usize) -> Self {
        self.dedupe_window = n.max(1);
        self
    }

    /// The pause before subscribing again after a failure: `min`, doubling up to `max`.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// The feed's counters, readable while it runs.
    pub fn stats(&self) -> Arc<FeedStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` completes, then stops gracefully: no new handlers, the running
    /// ones finish and are acked, and the stream is closed. `handler` is called once per
    /// resume; an `Err` (or a panic) leaves the resume unacknowledged, so the service
    /// delivers it again after its ack timeout.
    pub async fn run<H, F, E>(
        self,
        handler: H,
        shutdown: impl Future + Send,
    ) -> Result<(), FeedError>
    where
        H: Fn(v1::Resume) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        if self.endpoints.is_empty() {
            return Err(FeedError::NoEndpoint);
        }
        let mut state = State {
            handler,
            tasks: JoinSet::new(),
            running: HashSet::new(),
            handled: Window::new(self.dedupe_window),
            unsent: Vec::new(),
            stats: self.stats.clone(),
        };
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        let mut endpoint = 0usize;
        loop {
            let target = &self.endpoints[endpoint % self.endpoints.len()];
            let connected = tokio::select! {
                s = self.subscribe(target) => s,
                _ = &mut shutdown => return state.stop(None).await,
            };
            let ended = match connected {
                Ok(subscription) => {
                    failures = 0;
                    match state.serve(subscription, &mut shutdown).await {
                        Served::Stopped(result) => return result,
                        Served::Ended(why) => why,
                    }
                }
                Err(status) => Some(status),
            };
            if let Some(status) = ended {
                if fatal(&status) {
                    state.stop(None).await?;
                    return Err(FeedError::Refused(status));
                }
                tracing::warn!(endpoint = %target.uri(), %status, "resume stream lost; subscribing again");
            }
            failures += 1;
            endpoint += 1;
            bump(&self.stats.reconnects);
            let pause = backoff(self.min_backoff, self.max_backoff, failures);
            if state.pause(pause, &mut shutdown).await {
                return state.stop(None).await;
            }
        }
    }

    async fn subscribe(&self, endpoint: &Endpoint) -> Result<Subscription, Status> {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("connecting to {}: {e}", endpoint.uri())))?;
        Client::new(channel)
            .with_credentials(self.credentials.clone())
            .subscribe(v1::Subscribe {
                tenant_id: self.tenant_id.clone(),
                max_in_flight: self.max_in_flight,
            })
            .await
    }
}

/// Codes that no resubscription can fix.
fn fatal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
    )
}

/// How one stream ended.
enum Served {
    /// The feed was asked to stop, and did.
    Stopped(Result<(), FeedError>),
    /// The stream broke (with its status) or the server ended it (`None`).
    Ended(Option<Status>),
}

/// A handler's result: the resume id, and the error when it failed.
type Finished = (String, Result<(), String>);

/// A running feed's bookkeeping, kept across streams.
struct State<H> {
    handler: H,
    tasks: JoinSet<Finished>,
    /// Resume ids whose handler is running.
    running: HashSet<String>,
    /// Resume ids handled recently.
    handled: Window,
    /// Acks of handlers that finished while no stream was open.
    unsent: Vec<String>,
    stats: Arc<FeedStats>,
}

impl<H, F, E> State<H>
where
    H: Fn(v1::Resume) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    /// Handles one stream's resumes until it ends or the feed is asked to stop.
    async fn serve(
        &mut self,
        mut subscription: Subscription,
        shutdown: &mut (impl Future + Unpin),
    ) -> Served {
        let acks = subscription.acker();
        for id in std::mem::take(&mut self.unsent) {
            send_ack(&acks, &id, &mut self.unsent).await;
        }
        loop {
            tokio::select! {
                _ = &mut *shutdown => {
                    drop(acks);
                    return Served::Stopped(self.stop(Some(subscription)).await);
                }
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Some(id) = self.finished(joined) {
                        send_ack(&acks, &id, &mut self.unsent).await;
                    }
                }
                next = subscription.next() => match next {
                    Ok(Some(resume)) => {
                        if let Some(id) = self.offer(resume) {
                            send_ack(&acks, &id, &mut self.unsent).await;
                        }
                    }
                    Ok(None) => return Served::Ended(None),
                    Err(status) => return Served::Ended(Some(status)),
                },
            }
        }
    }

    /// Starts the handler for a resume not seen before; the id to ack at once for one
    /// already handled.
    fn offer(&mut self, resume: v1::Resume) -> Option<String> {
        if self.handled.contains(&resume.resume_id) {
            bump(&self.stats.duplicates);
            return Some(resume.resume_id);
        }
        if !self.running.insert(resume.resume_id.clone()) {
            // Its handler is still running (the ack timeout passed): its ack will come.
            bump(&self.stats.duplicates);
            return None;
        }
        let id = resume.resume_id.clone();
        let work = (self.handler)(resume);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(async move {
            let result = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the handler panicked".to_owned()),
            };
            (id, result)
        });
        None
    }

    /// Records a finished handler; the id to ack when it succeeded.
    fn finished(&mut self, joined: Result<Finished, tokio::task::JoinError>) -> Option<String> {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        // Handler tasks catch panics and are never aborted, so a join error cannot happen.
        let (id, result) = joined.expect("handler tasks neither panic nor get aborted");
        self.running.remove(&id);
        match result {
            Ok(()) => {
                bump(&self.stats.handled);
                self.handled.insert(id.clone());
                Some(id)
            }
            Err(error) => {
                bump(&self.stats.handler_errors);
                tracing::warn!(resume_id = %id, %error, "resume handler failed; not acked, it will be delivered again");
                None
            }
        }
    }

    /// Waits `pause` between streams, still recording handlers that finish (their acks wait
    /// for the next stream). True when the feed was asked to stop meanwhile.
    async fn pause(&mut self, pause: Duration, shutdown: &mut (impl Future + Unpin)) -> bool {
        let sleep = tokio::time::sleep(pause);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut *shutdown => return true,
                _ = &mut sleep => return false,
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Some(id) = self.finished(joined) {
                        self.unsent.push(id);
                    }
                }
            }
        }
    }

    /// Stops: lets running handlers finish, acks them on `subscription` when there is one,
    /// and closes it.
    async fn stop(&mut self, subscription: Option<Subscription>) -> Result<(), FeedError> {
        while let Some(joined) = self.tasks.join_next().await {
            if let Some(id) = self.finished(joined) {
                match &subscription {
                    Some(s) => {
                        let _ = s.ack(&id).await;
                    }
                    None => self.unsent.push(id),
                }
            }
        }
        if let Some(subscription) = subscription {
            match tokio::time::timeout(CLOSE_TIMEOUT, subscription.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(status)) => tracing::debug!(%status, "resume stream closed with an error"),
                Err(_) => tracing::debug!("the server did not end the resume stream in time"),
            }
        }
        if !self.unsent.is_empty() {
            tracing::info!(
                unacked = self.unsent.len(),
                "stopped without a stream to ack on; those resumes will be delivered again"
            );
        }
        Ok(())
    }
}

/// Sends an ack, keeping it for the next stream when this one has ended.
async fn send_ack(
    acks: &mpsc::Sender<v1::ResumeStreamRequest>,
    id: &str,
    unsent: &mut Vec<String>,
) {
    if acks.send(ack_request(id)).await.is_err() {
        unsent.push(id.to_owned());
    }
}

/// The last `capacity` ids, for membership tests.
struct Window {
    capacity: usize,
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Window {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            ids: HashSet::new(),
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: String) {
        if !self.ids.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_the_oldest_id_beyond_its_capacity() {
        let mut window = Window::new(2);
        window.insert("a".into());
        window.insert("b".into());
        window.insert("a".into());
        assert!(window.contains("a") && window.contains("b"));
        window.insert("c".into());
        assert!(!window.contains("a"));
        assert!(window.contains("b") && window.contains("c"));
    }
}
