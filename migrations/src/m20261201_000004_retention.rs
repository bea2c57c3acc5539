//! Retention: an index of decided waits by decision time, so that purging the oldest ones
//! reads only them (the quarantine and the early-event buffer are purged in id order).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

// The trait is written with an elided `SchemaManager` lifetime; implementations must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Same syntax on PostgreSQL and SQLite.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX waits_decided ON waits (decided_at) WHERE decided_at IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX waits_decided")
            .await?;
        Ok(())
    }
}
