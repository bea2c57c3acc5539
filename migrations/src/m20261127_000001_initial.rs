//! The initial schema: waits, the inbox of processed events, the early-event buffer and the
//! resume outbox. Times are milliseconds since the Unix epoch (BIGINT) on both backends.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum Waits {
    Table,
    Id,
    TenantId,
    CorrelationId,
    ExecutionId,
    NodeId,
    IdempotencyKey,
    WorkflowId,
    Status,
    Spec,
    Progress,
    Deadline,
    CreatedAt,
    UpdatedAt,
    DecidedAt,
    Version,
}

#[derive(DeriveIden)]
enum ProcessedEvents {
    Table,
    WaitId,
    EventKey,
    Source,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum EarlyEvents {
    Table,
    Id,
    TenantId,
    CorrelationId,
    EventKey,
    Event,
    ReceivedAt,
    ExpiresAt,
    Status,
    WaitId,
    ResolvedAt,
}

#[derive(DeriveIden)]
enum ResumeOutbox {
    Table,
    ResumeId,
    WaitId,
    TenantId,
    Resume,
    CreatedAt,
    LeaseOwner,
    LeaseUntil,
    Attempts,
    AckedAt,
}

// The trait is written with an elided `SchemaManager` lifetime; implementations must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Waits::Table)
                    .col(uuid(Waits::Id).primary_key())
                    .col(string(Waits::TenantId))
                    .col(string(Waits::CorrelationId))
                    .col(string(Waits::ExecutionId))
                    .col(string(Waits::NodeId))
                    .col(string(Waits::IdempotencyKey))
                    .col(string_null(Waits::WorkflowId))
                    .col(string(Waits::Status))
                    .col(text(Waits::Spec))
                    .col(text(Waits::Progress))
                    .col(big_integer(Waits::Deadline))
                    .col(big_integer(Waits::CreatedAt))
                    .col(big_integer(Waits::UpdatedAt))
                    .col(big_integer_null(Waits::DecidedAt))
                    .col(big_integer(Waits::Version))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("waits_correlation")
                    .table(Waits::Table)
                    .col(Waits::TenantId)
                    .col(Waits::CorrelationId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("waits_idempotency")
                    .table(Waits::Table)
                    .col(Waits::TenantId)
                    .col(Waits::ExecutionId)
                    .col(Waits::NodeId)
                    .col(Waits::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("waits_created")
                    .table(Waits::Table)
                    .col(Waits::CreatedAt)
                    .col(Waits::Id)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // Partial indexes: only open waits are swept, only pending early events are looked up,
        // only unacknowledged resumes are claimed. Same syntax on PostgreSQL and SQLite.
        db.execute_unprepared(
            "CREATE INDEX waits_open_deadline ON waits (deadline) WHERE decided_at IS NULL",
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(ProcessedEvents::Table)
                    .col(uuid(ProcessedEvents::WaitId))
                    .col(string(ProcessedEvents::EventKey))
                    .col(string(ProcessedEvents::Source))
                    .col(big_integer(ProcessedEvents::ProcessedAt))
                    .primary_key(
                        Index::create()
                            .col(ProcessedEvents::WaitId)
                            .col(ProcessedEvents::EventKey),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EarlyEvents::Table)
                    .col(big_integer(EarlyEvents::Id).primary_key().auto_increment())
                    .col(string(EarlyEvents::TenantId))
                    .col(string(EarlyEvents::CorrelationId))
                    .col(string(EarlyEvents::EventKey))
                    .col(text(EarlyEvents::Event))
                    .col(big_integer(EarlyEvents::ReceivedAt))
                    .col(big_integer(EarlyEvents::ExpiresAt))
                    .col(string(EarlyEvents::Status))
                    .col(uuid_null(EarlyEvents::WaitId))
                    .col(big_integer_null(EarlyEvents::ResolvedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("early_events_key")
                    .table(EarlyEvents::Table)
                    .col(EarlyEvents::TenantId)
                    .col(EarlyEvents::CorrelationId)
                    .col(EarlyEvents::EventKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared("CREATE INDEX early_events_pending_expiry ON early_events (expires_at) WHERE status = 'pending'")
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ResumeOutbox::Table)
                    .col(uuid(ResumeOutbox::ResumeId).primary_key())
                    .col(uuid(ResumeOutbox::WaitId).unique_key())
                    .col(string(ResumeOutbox::TenantId))
                    .col(text(ResumeOutbox::Resume))
                    .col(big_integer(ResumeOutbox::CreatedAt))
                    .col(string_null(ResumeOutbox::LeaseOwner))
                    .col(big_integer_null(ResumeOutbox::LeaseUntil))
                    .col(integer(ResumeOutbox::Attempts))
                    .col(big_integer_null(ResumeOutbox::AckedAt))
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared("CREATE INDEX resume_outbox_unacked ON resume_outbox (created_at) WHERE acked_at IS NULL")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["resume_outbox", "early_events", "processed_events", "waits"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
