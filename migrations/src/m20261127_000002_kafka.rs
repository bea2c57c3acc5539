//! Kafka ingress tables: the topics registered waits listen on (with the fields that carry
//! their ids), and quarantined events (poison, unmatched, expired unclaimed) with a reason.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum KafkaTopics {
    Table,
    Topic,
    CorrelationField,
    ExecutionField,
    FirstSeenAt,
}

#[derive(DeriveIden)]
enum QuarantinedEvents {
    Table,
    Id,
    Origin,
    EventKey,
    CorrelationId,
    Payload,
    Reason,
    QuarantinedAt,
}

// The trait is written with an elided `SchemaManager` lifetime; implementations must match it.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KafkaTopics::Table)
                    .col(string(KafkaTopics::Topic))
                    .col(string(KafkaTopics::CorrelationField))
                    .col(string(KafkaTopics::ExecutionField))
                    .col(big_integer(KafkaTopics::FirstSeenAt))
                    .primary_key(
                        Index::create()
                            .col(KafkaTopics::Topic)
                            .col(KafkaTopics::CorrelationField)
                            .col(KafkaTopics::ExecutionField),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QuarantinedEvents::Table)
                    .col(
                        big_integer(QuarantinedEvents::Id)
                            .primary_key()
                            .auto_increment(),
                    )
                    .col(string(QuarantinedEvents::Origin))
                    .col(string_null(QuarantinedEvents::EventKey))
                    .col(string_null(QuarantinedEvents::CorrelationId))
                    .col(text(QuarantinedEvents::Payload))
                    .col(text(QuarantinedEvents::Reason))
                    .col(big_integer(QuarantinedEvents::QuarantinedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quarantined_events_at")
                    .table(QuarantinedEvents::Table)
                    .col(QuarantinedEvents::QuarantinedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["quarantined_events", "kafka_topics"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
