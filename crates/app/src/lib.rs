//! The `rendezvous` binary's library half: configuration, wiring of the adapters around the
//! service, and telemetry. `main.rs` stays thin: load config, install telemetry, run, map the
//! exit code. Tests start the same application on port 0 with [`Application::spawn`].

mod admin;
mod application;
pub mod cli;
pub mod config;
mod idle;
mod listener;
pub mod metrics;
pub mod operator;
mod oversize;
pub mod telemetry;

pub use application::{Application, Running, Service};
pub use cli::Command;
pub use config::{
    ApiKeyEntry, AuthSection, CertificateEntry, ClientCertificates, Config, JwtSection, TlsSection,
};

/// The version printed by `rendezvous --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision the binary was built from (`unknown` outside a git checkout; a `-dirty`
/// suffix when it had uncommitted changes), set by `build.rs`.
pub const REVISION: &str = env!("RENDEZVOUS_REVISION");
