//! Retention: what was finished long enough ago is deleted in bounded rounds — decided waits
//! with their inbox rows, acknowledged resume and settled call; early events applied or
//! expired; quarantined events. Never an open wait, an unacknowledged resume or a pending
//! early event.

use rendezvous_domain::Timestamp;
use rendezvous_ports::{PurgeCounts, StoreError};
use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::entities::{
    api_calls, early_events, processed_events, quarantined_events, resume_outbox, waits,
};
use crate::rows::{BufferStatus, CallStatus, db_err};

/// One round of [`Store::purge`](rendezvous_ports::Store::purge), in one transaction.
pub(super) async fn purge(
    conn: &DatabaseConnection,
    before: Timestamp,
    batch: u32,
) -> Result<PurgeCounts, StoreError> {
    let postgres = conn.get_database_backend() == DbBackend::Postgres;
    let tx = conn
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: (!postgres).then_some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await
        .map_err(db_err)?;
    let before = before.as_millis();
    let batch = u64::from(batch.max(1));
    let mut counts = PurgeCounts::default();

    // Decided waits whose resume was acknowledged (or that have none) and whose call is not
    // pending, oldest decisions first; locked on PostgreSQL, skipped while another holds them.
    let unacked = resume_outbox::Entity::find()
        .select_only()
        .column(resume_outbox::Column::WaitId)
        .filter(resume_outbox::Column::AckedAt.is_null())
        .into_query();
    let pending_calls = api_calls::Entity::find()
        .select_only()
        .column(api_calls::Column::WaitId)
        .filter(api_calls::Column::Status.eq(CallStatus::Pending.as_str()))
        .into_query();
    let mut done = waits::Entity::find()
        .select_only()
        .column(waits::Column::Id)
        .filter(waits::Column::DecidedAt.is_not_null())
        .filter(waits::Column::DecidedAt.lt(before))
        .filter(waits::Column::Id.not_in_subquery(unacked))
        .filter(waits::Column::Id.not_in_subquery(pending_calls))
        .order_by_asc(waits::Column::DecidedAt)
        .limit(batch);
    if postgres {
        done = done.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let ids: Vec<uuid::Uuid> = done.into_tuple().all(&tx).await.map_err(db_err)?;
    if !ids.is_empty() {
        counts.processed_events = processed_events::Entity::delete_many()
            .filter(processed_events::Column::WaitId.is_in(ids.iter().copied()))
            .exec(&tx)
            .await
            .map_err(db_err)?
            .rows_affected;
        counts.resumes = resume_outbox::Entity::delete_many()
            .filter(resume_outbox::Column::WaitId.is_in(ids.iter().copied()))
            .filter(resume_outbox::Column::AckedAt.is_not_null())
            .exec(&tx)
            .await
            .map_err(db_err)?
            .rows_affected;
        counts.api_calls = api_calls::Entity::delete_many()
            .filter(api_calls::Column::WaitId.is_in(ids.iter().copied()))
            .filter(api_calls::Column::Status.ne(CallStatus::Pending.as_str()))
            .exec(&tx)
            .await
            .map_err(db_err)?
            .rows_affected;
        counts.waits = waits::Entity::delete_many()
            .filter(waits::Column::Id.is_in(ids.iter().copied()))
            .filter(waits::Column::DecidedAt.is_not_null())
            .exec(&tx)
            .await
            .map_err(db_err)?
            .rows_affected;
    }

    // Early events applied or expired (the expired ones were copied into the quarantine).
    let finished = early_events::Entity::find()
        .select_only()
        .column(early_events::Column::Id)
        .filter(early_events::Column::Status.ne(BufferStatus::Pending.as_str()))
        .filter(early_events::Column::ResolvedAt.lt(before))
        .order_by_asc(early_events::Column::Id)
        .limit(batch)
        .into_query();
    counts.early_events = early_events::Entity::delete_many()
        .filter(early_events::Column::Id.in_subquery(finished))
        .exec(&tx)
        .await
        .map_err(db_err)?
        .rows_affected;

    let old = quarantined_events::Entity::find()
        .select_only()
        .column(quarantined_events::Column::Id)
        .filter(quarantined_events::Column::QuarantinedAt.lt(before))
        .order_by_asc(quarantined_events::Column::Id)
        .limit(batch)
        .into_query();
    counts.quarantined = quarantined_events::Entity::delete_many()
        .filter(quarantined_events::Column::Id.in_subquery(old))
        .exec(&tx)
        .await
        .map_err(db_err)?
        .rows_affected;

    tx.commit().await.map_err(db_err)?;
    Ok(counts)
}
