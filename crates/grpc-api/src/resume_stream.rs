//! `ResumeStream`: leases resumes from the outbox to one engine stream, delivers them, takes
//! acks, and frees what is left when the stream ends so another stream gets it at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rendezvous_domain::{TenantId, Timestamp};
use rendezvous_ports::{Clock, ResumeSignal, ResumeWaiter, Store};
use rendezvous_service::{ServiceError, WaitService};
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
}

impl Default for ResumeStreamConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(30),
            default_max_in_flight: 64,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The most unacknowledged resumes one stream may hold.
pub const MAX_IN_FLIGHT: u32 = 1024;

pub(crate) async fn serve_resume_stream<S: Store, G: ResumeSignal, C: Clock>(
    service: Arc<WaitService<S, G, C>>,
    config: ResumeStreamConfig,
    shutdown: watch::Receiver<bool>,
    mut inbound: tonic::Streaming<v1::ResumeStreamRequest>,
) -> Result<ResumeStream, Status> {
    let invalid = |reason: &str| {
        to_status(ServiceError::Invalid {
            field: "subscribe".into(),
            reason: reason.into(),
        })
    };
    let subscribe = match inbound.message().await? {
        Some(v1::ResumeStreamRequest {
            message: Some(v1::resume_stream_request::Message::Subscribe(s)),
        }) => s,
        _ => {
            return Err(invalid(
                "the first message on a resume stream must be Subscribe",
            ));
        }
    };
    let tenant = match subscribe.tenant_id.as_str() {
        "" => None,
        raw => Some(TenantId::parse(raw).map_err(|e| {
            to_status(ServiceError::Invalid {
                field: "subscribe.tenant_id".into(),
                reason: e.reason,
            })
        })?),
    };
    let max_in_flight = match subscribe.max_in_flight {
        0 => config.default_max_in_flight,
        n => n.min(MAX_IN_FLIGHT),
    };
    let owner = format!("stream-{}", uuid::Uuid::new_v4());
    let (out, rx) = mpsc::channel(max_in_flight as usize);
    let (acks_tx, acks) = mpsc::channel(max_in_flight as usize);
    // Read acks on their own task: the delivery loop then only selects on channels.
    let reader = tokio::spawn(async move {
        while let Ok(Some(message)) = inbound.message().await {
            if acks_tx.send(message).await.is_err() {
                break;
            }
        }
    });
    tracing::info!(owner, tenant = ?tenant.as_ref().map(ToString::to_string), max_in_flight, "resume stream subscribed");
    tokio::spawn(async move {
        let feed = Feed {
            service,
            config,
            owner,
            tenant,
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
    owner: String,
    tenant: Option<TenantId>,
    max_in_flight: u32,
    out: mpsc::Sender<Result<v1::ResumeStreamResponse, Status>>,
    acks: mpsc::Receiver<v1::ResumeStreamRequest>,
    shutdown: watch::Receiver<bool>,
}

impl<S: Store, G: ResumeSignal, C: Clock> Feed<S, G, C> {
    async fn run(mut self) {
        let mut waiter = self.service.signal().waiter();
        // Resume id -> when its lease runs out (then it may come back, to any stream).
        let mut in_flight: HashMap<String, Timestamp> = HashMap::new();
        'stream: loop {
            if *self.shutdown.borrow() {
                let _ = self
                    .out
                    .send(Err(Status::unavailable(
                        "the instance is shutting down; reconnect",
                    )))
                    .await;
                break 'stream;
            }
            let now = self.service.now();
            in_flight.retain(|_, until| *until > now);
            let room = self
                .max_in_flight
                .saturating_sub(u32::try_from(in_flight.len()).unwrap_or(u32::MAX));
            let mut full_batch = false;
            if room > 0 {
                match self
                    .service
                    .claim_resumes(
                        &self.owner,
                        self.tenant.as_ref(),
                        self.config.ack_timeout,
                        room,
                    )
                    .await
                {
                    Ok(resumes) => {
                        full_batch = resumes.len() as u32 == room;
                        for resume in resumes {
                            in_flight.insert(
                                resume.resume_id.to_string(),
                                now.plus(self.config.ack_timeout),
                            );
                            tracing::debug!(owner = %self.owner, resume_id = %resume.resume_id, wait_id = %resume.wait_id,
                                correlation_id = %resume.correlation_id, execution_id = %resume.execution_id,
                                attempt = resume.attempts, "resume sent");
                            let message = v1::ResumeStreamResponse {
                                message: Some(v1::resume_stream_response::Message::Resume(
                                    convert::resume(&resume),
                                )),
                            };
                            if self.out.send(Ok(message)).await.is_err() {
                                break 'stream;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(owner = %self.owner, error = %e, "cannot claim resumes; retrying")
                    }
                }
            }
            if full_batch && in_flight.len() < self.max_in_flight as usize {
                continue;
            }
            tokio::select! {
                first = self.acks.recv() => {
                    // Take every ack already waiting and write them in one statement.
                    let mut batch = Vec::new();
                    let mut next = first;
                    let end = loop {
                        match next {
                            Some(v1::ResumeStreamRequest { message: Some(v1::resume_stream_request::Message::Ack(ack)) }) => {
                                in_flight.remove(&ack.resume_id);
                                batch.push(ack.resume_id);
                            }
                            Some(_) => break Some("only Ack messages may follow Subscribe"),
                            None => break Some(""),
                        }
                        match self.acks.try_recv() {
                            Ok(message) => next = Some(message),
                            Err(mpsc::error::TryRecvError::Empty) => break None,
                            Err(mpsc::error::TryRecvError::Disconnected) => next = None,
                        }
                    };
                    if let Err(e) = self.service.ack_resumes(&batch).await {
                        tracing::warn!(owner = %self.owner, acks = batch.len(), error = %e, "ack failed");
                        if matches!(e, ServiceError::Invalid { .. }) {
                            let _ = self.out.send(Err(to_status(e))).await;
                            break 'stream;
                        }
                    }
                    match end {
                        None => {}
                        Some("") => break 'stream,
                        Some(reason) => {
                            let _ = self.out.send(Err(to_status(ServiceError::Invalid {
                                field: "message".into(),
                                reason: reason.into(),
                            }))).await;
                            break 'stream;
                        }
                    }
                }
                () = waiter.wait(self.config.poll_interval) => {}
                () = self.out.closed() => break 'stream,
                Ok(()) = self.shutdown.changed() => {}
            }
        }
        match self.service.release_resumes(&self.owner).await {
            Ok(released) => tracing::info!(owner = %self.owner, released, "resume stream closed"),
            Err(e) => {
                tracing::warn!(owner = %self.owner, error = %e, "cannot release leases; they run out on their own")
            }
        }
    }
}
