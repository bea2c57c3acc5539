//! The database schema of Rendezvous as `sea-orm-migration` migrations, applied at start-up.

use sea_orm_migration::prelude::*;

/// Every migration, oldest first. Applied in order by [`MigratorTrait::up`].
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        Vec::new()
    }
}
