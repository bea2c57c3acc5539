//! The database schema of Rendezvous as `sea-orm-migration` migrations, applied at start-up.

use sea_orm_migration::prelude::*;
pub use sea_orm_migration::{MigrationStatus, MigratorTrait};

mod m20261127_000001_initial;
mod m20261127_000002_kafka;
mod m20261127_000003_api_calls;
mod m20261201_000004_retention;
mod m20261207_000005_quarantine_replay;

/// Every migration, oldest first. Applied in order by [`MigratorTrait::up`].
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_initial::Migration),
            Box::new(m20261127_000002_kafka::Migration),
            Box::new(m20261127_000003_api_calls::Migration),
            Box::new(m20261201_000004_retention::Migration),
            Box::new(m20261207_000005_quarantine_replay::Migration),
        ]
    }
}
