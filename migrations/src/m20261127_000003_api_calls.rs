//! The outbox of outbound API calls: one row per wait whose `apiCall` is enabled, written in the
//! registration transaction (so no answer can outrun the wait) and claimed with a lease by any
//! instance (so a crash never loses a call).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ApiCalls {
    Table,
    WaitId,
    Request,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseOwner,
    LeaseUntil,
    LastError,
    CreatedAt,
    UpdatedAt,
}

// The trait is written with an elided `SchemaManager` lifetime; implementations must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiCalls::Table)
                    .col(uuid(ApiCalls::WaitId).primary_key())
                    .col(text(ApiCalls::Request))
                    .col(string(ApiCalls::Status))
                    .col(integer(ApiCalls::Attempts))
                    .col(big_integer(ApiCalls::NextAttemptAt))
                    .col(string_null(ApiCalls::LeaseOwner))
                    .col(big_integer_null(ApiCalls::LeaseUntil))
                    .col(text_null(ApiCalls::LastError))
                    .col(big_integer(ApiCalls::CreatedAt))
                    .col(big_integer(ApiCalls::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("CREATE INDEX api_calls_due ON api_calls (next_attempt_at) WHERE status = 'pending'")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiCalls::Table).to_owned())
            .await
    }
}
