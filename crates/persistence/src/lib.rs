//! SeaORM persistence adapters of Rendezvous: the wait store, the inbox of processed event
//! keys, the early-event buffer and the resume outbox, on PostgreSQL (production, many
//! instances) and SQLite (the embedded default, one instance), behind the ports of
//! `rendezvous-ports`, with one conformance suite run on both.
//!
//! The only crate (with `migrations/`) allowed to depend on SeaORM.

pub use rendezvous_migrations::Migrator;
