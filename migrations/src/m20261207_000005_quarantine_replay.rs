//! Replaying quarantined events: what a replay needs that the row did not keep — the tenant of
//! an early event that expired unclaimed, and the UTF-8 headers of a Kafka record — and how
//! many times an operator replayed the row without success.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

// The trait is written with an elided `SchemaManager` lifetime; implementations must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time. Same syntax on both.
        for statement in [
            "ALTER TABLE quarantined_events ADD COLUMN tenant_id VARCHAR NULL",
            "ALTER TABLE quarantined_events ADD COLUMN headers TEXT NULL",
            "ALTER TABLE quarantined_events ADD COLUMN replays INTEGER NOT NULL DEFAULT 0",
        ] {
            manager
                .get_connection()
                .execute_unprepared(statement)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["replays", "headers", "tenant_id"] {
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "ALTER TABLE quarantined_events DROP COLUMN {column}"
                ))
                .await?;
        }
        Ok(())
    }
}
