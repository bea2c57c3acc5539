//! Idle connections are closed: a connection with no request in flight for
//! `server.idle_timeout` is ended by the server (as gRPC's `MAX_CONNECTION_IDLE` does), so
//! connections a client opened and forgot cannot pile up until descriptors run out. A client
//! reconnects on its next call. Keepalive pings do not count as activity; requests do,
//! including a long-lived `ResumeStream`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Map;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tonic::codegen::http;

/// What one connection is doing: requests in flight, and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    started: Instant,
    active: AtomicUsize,
    /// Milliseconds after `started` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// The connection's reader, woken when it becomes idle so it can arm its timer.
    reader: AtomicWaker,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        })
    }

    /// When the connection, idle now, may be closed; `None` while a request is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        (self.active.load(Ordering::Acquire) == 0).then(|| {
            self.started
                + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
                + timeout
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// One request in flight; the connection is idle again when the last is dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = activity.started.elapsed().as_millis() as u64;
        activity.idle_since_ms.store(now, Ordering::Release);
        if activity.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.reader.wake();
        }
    }
}

/// The idle timer of one connection's reader.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    activity: Arc<Activity>,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    pub(crate) fn new(activity: Arc<Activity>, timeout: Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        Self {
            activity,
            timeout,
            sleep,
        }
    }

    /// Whether the connection has been idle for the whole timeout; otherwise arranges for
    /// `cx` to be woken when that may have become true.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.activity.reader.register(cx.waker());
        let Some(deadline) = self.activity.idle_deadline(self.timeout) else {
            return false;
        };
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx).is_ready()
            && self.activity.idle_deadline(self.timeout) == Some(deadline)
    }
}

/// Marks each request in flight on the connection it came in on (found through the
/// connection's `ConnectInfo`) until its response body is done, and hands the request the
/// names of the connection's client certificate (`PeerIdentity`), if any.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ActivityLayer;

impl<S> tower_layer::Layer<S> for ActivityLayer {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked(inner)
    }
}

/// See [`ActivityLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Tracked<S>(S);

type Answer<B, E> = Result<http::Response<B>, E>;

impl<S, R, B> tower_service::Service<http::Request<R>> for Tracked<S>
where
    S: tower_service::Service<http::Request<R>, Response = http::Response<B>>,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Map<
        S::Future,
        Box<dyn FnOnce(Answer<B, S::Error>) -> Answer<TrackedBody<B>, S::Error> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<R>) -> Self::Future {
        let info = request
            .extensions()
            .get::<crate::listener::ConnectionInfo>()
            .map(|info| (info.activity.begin(), info.peer.clone()));
        let in_flight = info.map(|(in_flight, peer)| {
            // The client certificate's names, where the authenticator looks for them.
            if let Some(peer) = peer {
                request.extensions_mut().insert(peer);
            }
            in_flight
        });
        self.0.call(request).map(Box::new(move |answer| {
            answer.map(|response| {
                response.map(|body| TrackedBody {
                    body,
                    _in_flight: in_flight,
                })
            })
        }))
    }
}

/// A response body that keeps its request in flight until it is dropped.
#[derive(Debug)]
pub(crate) struct TrackedBody<B> {
    body: B,
    _in_flight: Option<InFlight>,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_and_the_whole_timeout() {
        let activity = Activity::new();
        let mut timer = IdleTimer::new(Arc::clone(&activity), Duration::from_secs(60));
        let in_flight = activity.begin();
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(
            !poll_fn(|cx| Poll::Ready(timer.expired(cx))).await,
            "a request is in flight"
        );
        drop(in_flight);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(
            !poll_fn(|cx| Poll::Ready(timer.expired(cx))).await,
            "idle for 59 s only"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(poll_fn(|cx| Poll::Ready(timer.expired(cx))).await);
    }
}
