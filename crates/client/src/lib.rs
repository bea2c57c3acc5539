//! The Rust client of Rendezvous: the `rendezvous.v1` contract, a [`Client`] whose calls are
//! retried while the service is briefly unavailable, and a [`ResumeFeed`] that owns the resume
//! stream — the subtle half of the contract an engine would otherwise write by hand.
//!
//! ```no_run
//! use rendezvous_client::{Client, ResumeFeed, v1};
//! use tonic::transport::Endpoint;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // Register a wait for a workflow node (idempotent: a retry returns the same wait).
//! let client = Client::connect(Endpoint::from_static("http://127.0.0.1:50151")).await?;
//! let wait = client
//!     .register_wait(v1::RegisterWaitRequest {
//!         execution_id: "exec-1".into(),
//!         node_id: "wait-1".into(),
//!         node_config_json: r#"{"type":"wait_events","data":{"apiCall":{"enabled":true,
//!             "url":"https://api.example.com/act"},"aggregationStrategy":"all"}}"#.into(),
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("waiting on {}", wait.correlation_id);
//!
//! // Resume workflows as waits are decided: acked only after the handler succeeds,
//! // redeliveries deduplicated, reconnected to the next instance when one goes away.
//! let feed = ResumeFeed::new([
//!     Endpoint::from_static("http://127.0.0.1:50151"),
//!     Endpoint::from_static("http://127.0.0.1:50152"),
//! ]);
//! feed.run(
//!     |resume: v1::Resume| async move {
//!         println!("resume {} for execution {}", resume.resume_id, resume.execution_id);
//!         Ok::<(), std::io::Error>(())
//!     },
//!     tokio::signal::ctrl_c(),
//! )
//! .await?;
//! # Ok(())
//! # }
//! ```

mod client;
mod feed;
mod subscription;

pub use client::{Client, Credentials, InvalidToken, RetryPolicy, Transport};
pub use feed::{FeedError, FeedStats, ResumeFeed};
pub use subscription::Subscription;

/// The generated `rendezvous.v1` messages, clients and servers.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod v1 {
    include!("generated/rendezvous.v1.rs");

    /// The encoded `FileDescriptorSet` of `rendezvous.v1`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/rendezvous.v1.bin");
}
