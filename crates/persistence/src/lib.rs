//! SeaORM persistence adapters of Rendezvous, behind the ports of `rendezvous-ports`: the wait
//! store with its inbox of processed event keys, the early-event buffer, the resume outbox and
//! its wake-ups, the outbox of outbound API calls, the Kafka topics waits listen on and the
//! quarantine of events set aside — on PostgreSQL (production, many instances; concurrent
//! requests share statements, see `postgres/`) and SQLite (the embedded default, one
//! instance). One conformance suite (`tests/conformance/`) runs on both.
//!
//! Where things are: `database.rs` connects and migrates; `store/` implements the store port,
//! one module per concern; `postgres/` holds the PostgreSQL group commit and its SQL,
//! `sqlite.rs` SQLite's (one transaction for many requests);
//! `signal.rs` the resume wake-ups; `probe.rs` health checks and statistics for operators; `rows.rs` the conversions between rows and domain types;
//! `text.rs` free text as the databases can store it (NUL characters); `testing.rs` (feature
//! `test-util`) a fresh database per test.
//!
//! The only crate (with `migrations/`) allowed to depend on SeaORM.

mod batch;
mod database;
mod entities;
mod errors;
mod postgres;
mod probe;
mod rows;
mod signal;
mod sqlite;
mod store;
#[cfg(feature = "test-util")]
pub mod testing;
mod text;

pub use database::{Database, DatabaseConfig, PgTls, SslMode, migrate, redact};
pub use probe::{DatabaseProbe, DatabaseStats, PoolStats};
pub use rendezvous_migrations::{Migrator, MigratorTrait};
pub use signal::{SqlResumeSignal, SqlResumeWaiter};
pub use store::{SqlStore, SqlTx};
