//! `ResumeStream`: leases resumes from the outbox to one engine stream, delivers them, takes
//! acks, and frees what is left when the stream ends so another stream gets it at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rendezvous_domain::{LeaseOwner, ResumeId, Timestamp};
use rendezvous_ports::{Clock, ResumeSignal, ResumeWaiter, Store, TenantScope};
use rendezvous_service::{Principal, ServiceError, WaitService};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::convert;
use crate::status::to_status;
use crate::v1;

/// The outbound half of a resume stream.
pub type ResumeStream = ReceiverStream<Result<v1::ResumeStreamResponse, Status>>;

/// Timings and limits of resume streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeStreamConfig {
    /// A resume not acknowledged within this time is delivered again.
    pub ack_timeout: Duration,
    /// Unacknowledged resumes per stream when the subscriber asks for none.
    pub default_max_in_flight: u32,
    /// How often to look for resumes when no wake-up arrives (fallback only).
    pub poll_interval: Duration,
    /// How long a new stream may take to send its `Subscribe`.
    pub subscribe_timeout: Duration,
}

impl Default for ResumeStreamConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(30),
            default_max_in_flight: 64,
            poll_interval: Duration::from_secs(1),
            subscribe_timeout: Duration::from_secs(10),
        }
    }
}

/// The most unacknowledged resumes one stream may hold.
pub const MAX_IN_FLIGHT: u32 = 1024;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    to_status(ServiceError::invalid(field, reason))
}

pub(crate) async fn serve_resume_stream<S: Store, G: ResumeSignal, C: Clock>(
    service: Arc<WaitService<S, G, C>>,
    config: ResumeStreamConfig,
    mut shutdown: watch::Receiver<bool>,
    mut inbound: tonic::Streaming<v1::ResumeStreamRequest>,
    caller: Principal,
) -> Result<ResumeStream, Status> {
    // A client that opens the stream and says nothing must not hold up a shutdown.
    let first = tokio::select! {
        first = tokio::time::timeout(config.subscribe_timeout, inbound.message()) => match first {
            Ok(first) => first?,
            Err(_) => return Err(invalid("subscribe", format!("no Subscribe within {:?}", config.subscribe_timeout))),
        },
        _ = shutdown.wait_for(|stop| *stop) => return Err(Status::unavailable("the instance is shutting down; reconnect")),
    };
    let subscribe = match first {
        Some(v1::ResumeStreamRequest {
            message: Some(v1::resume_stream_request::Message::Subscribe(s)),
        }) => s,
        _ => {
            return Err(invalid(
                "subscribe",
                "the first message on a resume stream must be Subscribe",
            ));
        }
    };
    // Only resumes of the caller's tenants, narrowed to the one it names.
    let tenants = caller
        .scope("subscribe.tenant_id", &subscribe.tenant_id)
        .map_err(to_status)?;
    let max_in_flight = match subscribe.max_in_flight {
        0 => config.default_max_in_flight,
        n => n.min(MAX_IN_FLIGHT),
    };
    let owner = LeaseOwner::parse(format!("stream-{}", uuid::Uuid::new_v4()))
        .map_err(|e| Status::internal(e.to_string()))?;
    let (out, rx) = mpsc::channel(max_in_flight as usize);
    let (acks_tx, acks) = mpsc::channel(max_in_flight as usize);
    // Read acks on their own task: the delivery loop then only selects on channels.
    let reader_owner = owner.clone();
    let reader = tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(message)) => {
                    if acks_tx.send(message).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(owner = %reader_owner, %status, "resume stream request side failed");
                    break;
                }
            }
        }
    });
    tracing::info!(%owner, caller = %caller.name, tenants = %tenants, max_in_flight, "resume stream subscribed");
    tokio::spawn(async move {
        let feed = Feed {
            service,
            config,
            owner,
            tenants,
            max_in_flight,
            out,
            acks,
            shutdown,
        };
        feed.run().await;
        // Dropping the request half resets the stream, so a client that keeps its side open
        // cannot hold up a graceful shutdown.
        reader.abort();
    });
    Ok(ReceiverStream::new(rx))
}

struct Feed<S, G, C> {
    service: Arc<WaitService<S, G, C>>,
    config: ResumeStreamConfig,
    owner: LeaseOwner,
    tenants: TenantScope,
    max_in_flight: u32,
    out: mpsc::Sender<Result<v1::ResumeStreamResponse, Status>>,
    acks: mpsc::Receiver<v1::ResumeStreamRequest>,
    shutdown: watch::Receiver<bool>,
}

/// Why the delivery loop stops.
enum Stop {
    /// The client went away or the instance is shutting down.
    Quietly,
    /// The client sent something it must not; tell it.
    Refuse(Status),
}

impl<S: Store, G: ResumeSignal, C: Clock> Feed<S, G, C> {
    async fn run(mut self) {
        let stop = self.deliver().await;
        if let Stop::Refuse(status) = stop {
            // Never block on a client that does not read.
            let _ = self.out.try_send(Err(status));
        } else if *self.shutdown.borrow() {
            let _ = self.out.try_send(Err(Status::unavailable(
                "the instance is shutting down; reconnect",
            )));
        }
        match self.service.release_resumes(&self.owner).await {
            Ok(released) => tracing::info!(owner = %self.owner, released, "resume stream closed"),
            Err(e) => {
                tracing::warn!(owner = %self.owner, error = %e, "cannot release leases; they run out on their own")
            }
        }
    }

    /// Sends `message` unless the client stops reading and the instance shuts down meanwhile.
    async fn send(&mut self, message: v1::ResumeStreamResponse) -> Result<(), Stop> {
        tokio::select! {
            sent = self.out.send(Ok(message)) => sent.map_err(|_| Stop::Quietly),
            _ = self.shutdown.wait_for(|stop| *stop) => Err(Stop::Quietly),
        }
    }

    async fn deliver(&mut self) -> Stop {
        // Ready (resumes committed here are offered to this instance's streams first) while it
        // waits with room, not while a client that does not read holds it in `send`.
        let mut waiter = self.service.signal().waiter(&self.tenants);
        // Resume id -> when its lease runs out (then it may come back, to any stream).
        let mut in_flight: HashMap<ResumeId, Timestamp> = HashMap::new();
        // Whether resumes may be waiting: at the start, after a wake-up or the poll interval,
        // and after a claim that filled all the room. Acks alone do not make it true, so a
        // stream that has taken everything does not ask the database again per ack.
        let mut look = true;
        let mut claiming = rendezvous_service::Outage::new("claiming resumes for a stream");
        loop {
            if *self.shutdown.borrow() {
                return Stop::Quietly;
            }
            let now = self.service.now();
            in_flight.retain(|_, until| *until > now);
            let room = self
                .max_in_flight
                .saturating_sub(u32::try_from(in_flight.len()).unwrap_or(u32::MAX));
            if room > 0 && look {
                match self
                    .service
                    .claim_resumes(&self.owner, &self.tenants, self.config.ack_timeout, room)
                    .await
                {
                    Ok(resumes) => {
                        claiming.succeeded();
                        look = u32::try_from(resumes.len()).unwrap_or(u32::MAX) >= room;
                        if !resumes.is_empty() {
                            waiter.ready(false);
                        }
                        for resume in resumes {
                            in_flight.insert(resume.resume_id, now.plus(self.config.ack_timeout));
                            tracing::debug!(owner = %self.owner, resume_id = %resume.resume_id, wait_id = %resume.wait_id,
                                correlation_id = %resume.correlation_id, execution_id = %resume.execution_id,
                                attempt = resume.attempts, "resume sent");
                            let trace = resume.trace.as_ref().and_then(send_context);
                            let message = v1::ResumeStreamResponse {
                                message: Some(v1::resume_stream_response::Message::Resume(
                                    convert::resume(&resume, trace.as_ref()),
                                )),
                            };
                            if let Err(stop) = self.send(message).await {
                                return stop;
                            }
                        }
                    }
                    Err(e) => {
                        look = true;
                        claiming.failed(&e);
                    }
                }
            }
            waiter
                .ready(usize::try_from(self.max_in_flight).unwrap_or(usize::MAX) > in_flight.len());
            tokio::select! {
                first = self.acks.recv() => {
                    if let Some(stop) = self.take_acks(first, &mut in_flight).await {
                        return stop;
                    }
                }
                () = waiter.wait(self.config.poll_interval) => look = true,
                () = self.out.closed() => return Stop::Quietly,
                Ok(()) = self.shutdown.changed() => {}
            }
        }
    }

    /// Takes `first` and every ack already waiting, and writes them in one statement.
    async fn take_acks(
        &mut self,
        first: Option<v1::ResumeStreamRequest>,
        in_flight: &mut HashMap<ResumeId, Timestamp>,
    ) -> Option<Stop> {
        let mut batch = Vec::new();
        let mut next = first;
        let now = self.service.now();
        let stop = loop {
            match next {
                Some(v1::ResumeStreamRequest {
                    message: Some(v1::resume_stream_request::Message::Ack(ack)),
                }) => match ResumeId::parse(&ack.resume_id) {
                    Ok(id) => {
                        // Sent when its lease began: one ack timeout before it runs out.
                        if let Some(until) = in_flight.remove(&id) {
                            let sent = until.minus(self.config.ack_timeout);
                            rendezvous_service::metrics::resume_acked(now.seconds_since(sent));
                        }
                        batch.push(id);
                    }
                    Err(e) => {
                        // Acks before the bad one still count.
                        break Some(Stop::Refuse(invalid("ack.resume_id", e.reason)));
                    }
                },
                Some(_) => {
                    break Some(Stop::Refuse(invalid(
                        "message",
                        "only Ack messages may follow Subscribe",
                    )));
                }
                None => break Some(Stop::Quietly),
            }
            match self.acks.try_recv() {
                Ok(message) => next = Some(message),
                Err(mpsc::error::TryRecvError::Empty) => break None,
                Err(mpsc::error::TryRecvError::Disconnected) => next = None,
            }
        };
        if !batch.is_empty()
            && let Err(e) = self.service.ack_resumes(&batch).await
        {
            // Unrecorded acks only mean redelivery after the lease.
            tracing::warn!(owner = %self.owner, acks = batch.len(), error = %e, "ack failed");
        }
        stop
    }
}

/// The context a resume carries: a PRODUCER span in the registration's trace (`registration`),
/// whose context the engine continues; the registration's own context when no tracer records
/// spans. A wait registered without a trace context gets no span and carries none.
fn send_context(
    registration: &rendezvous_domain::TraceContext,
) -> Option<rendezvous_domain::TraceContext> {
    let span = tracing::info_span!(
        "resume.send",
        otel.name = "send resume",
        otel.kind = "producer",
        rpc.system = "grpc",
        rpc.service = "rendezvous.v1.WaitService",
        rpc.method = "ResumeStream",
    );
    rendezvous_service::trace::continue_trace(&span, Some(registration));
    rendezvous_service::trace::context_of(&span, Some(registration))
}
