//! The `rendezvous` binary's library half: configuration, wiring of the adapters around the
//! service, and telemetry. `main.rs` stays thin: load config, install telemetry, run, map the
//! exit code. Tests start the same application on port 0 with [`Application::spawn`].

mod application;
pub mod cli;
pub mod config;
mod idle;
mod listener;
mod oversize;
pub mod telemetry;

pub use application::{Application, Running, Service};
pub use cli::Command;
pub use config::{
    ApiKeyEntry, AuthSection, CertificateEntry, ClientCertificates, Config, JwtSection, TlsSection,
};

/// The version printed by `rendezvous --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
