//! [`Subscription`]: one `ResumeStream` call with explicit acks — the protocol's building
//! block (Subscribe first, then an Ack per handled resume, half-close to end). No reconnects
//! and no deduplication: [`crate::ResumeFeed`] adds those.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::client::Transport;
use crate::v1;
use crate::v1::wait_service_client::WaitServiceClient;

/// Acks buffered on the way to the server before `ack` waits.
const ACK_BUFFER: usize = 1024;

/// One open resume stream.
#[derive(Debug)]
pub struct Subscription {
    acks: mpsc::Sender<v1::ResumeStreamRequest>,
    inbound: tonic::Streaming<v1::ResumeStreamResponse>,
}

impl Subscription {
    /// Opens the stream and subscribes. The server answers only after it took the
    /// `Subscribe`, so a refusal (credential, tenant, `max_in_flight`) is this call's error.
    pub(crate) async fn open(
        mut waits: WaitServiceClient<Transport>,
        subscribe: v1::Subscribe,
    ) -> Result<Self, Status> {
        let (acks, rx) = mpsc::channel(ACK_BUFFER);
        let first = v1::ResumeStreamRequest {
            message: Some(v1::resume_stream_request::Message::Subscribe(subscribe)),
        };
        acks.try_send(first)
            .expect("a fresh channel has room for the Subscribe");
        let inbound = waits
            .resume_stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { acks, inbound })
    }

    /// The next resume; `None` when the server ended the stream (it is shutting down:
    /// subscribe again, on any instance).
    pub async fn next(&mut self) -> Result<Option<v1::Resume>, Status> {
        loop {
            match self.inbound.message().await? {
                None => return Ok(None),
                Some(v1::ResumeStreamResponse {
                    message: Some(v1::resume_stream_response::Message::Resume(resume)),
                }) => return Ok(Some(resume)),
                // A message kind this client does not know (a newer server): skip it.
                Some(_) => continue,
            }
        }
    }

    /// Acknowledges a resume by id: it will not be delivered again. Acks are accepted on any
    /// stream of any instance. Fails only when the stream has ended.
    pub async fn ack(&self, resume_id: &str) -> Result<(), Status> {
        self.acks
            .send(ack_request(resume_id))
            .await
            .map_err(|_| Status::unavailable("the resume stream has ended"))
    }

    /// A sender of acks for this stream, for acking from other tasks.
    pub(crate) fn acker(&self) -> mpsc::Sender<v1::ResumeStreamRequest> {
        self.acks.clone()
    }

    /// Ends the stream gracefully: half-closes the request side, so that every ack sent is
    /// processed, and reads until the server ends the stream. Resumes that arrive meanwhile
    /// are not handled: their leases are freed and they go to another stream.
    pub async fn close(self) -> Result<(), Status> {
        let Self { acks, mut inbound } = self;
        drop(acks);
        while inbound.message().await?.is_some() {}
        Ok(())
    }
}

/// The request that acknowledges a resume.
pub(crate) fn ack_request(resume_id: &str) -> v1::ResumeStreamRequest {
    v1::ResumeStreamRequest {
        message: Some(v1::resume_stream_request::Message::Ack(v1::Ack {
            resume_id: resume_id.to_owned(),
        })),
    }
}
