//! The `waits` table: lookups by id, correlation id and idempotency identity, the listing, the
//! insert, the compare-and-set update and the sweeper's claim of due waits.

use rendezvous_domain::{CorrelationId, ExecutionId, NodeId, TenantId, Timestamp, WaitId};
use rendezvous_ports::{Page, StoreError, StoredWait, WaitQuery};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};

use super::unreadable::{read_wait, read_waits, wall_clock};
use crate::entities::waits;
use crate::rows::{db_err, progress_json, wait_to_row};
use crate::signal::SqlResumeSignal;
use crate::text;

/// The wait a row found by a lookup holds; an unreadable row is marked (`unreadable.rs`) and
/// comes back readable, or as an error naming what could not be read.
pub(crate) async fn one<C: ConnectionTrait + TransactionTrait>(
    conn: &C,
    signal: &SqlResumeSignal,
    row: Option<waits::Model>,
) -> Result<Option<StoredWait>, StoreError> {
    match row {
        Some(row) => read_wait(conn, signal, &row, wall_clock()).await.map(Some),
        None => Ok(None),
    }
}

/// A wait by id.
pub(super) async fn get<C: ConnectionTrait + TransactionTrait>(
    conn: &C,
    signal: &SqlResumeSignal,
    id: WaitId,
) -> Result<Option<StoredWait>, StoreError> {
    let row = waits::Entity::find_by_id(id.as_uuid())
        .one(conn)
        .await
        .map_err(db_err)?;
    one(conn, signal, row).await
}

/// A wait by correlation id.
pub(super) async fn find<C: ConnectionTrait + TransactionTrait>(
    conn: &C,
    signal: &SqlResumeSignal,
    tenant: &TenantId,
    correlation_id: &CorrelationId,
) -> Result<Option<StoredWait>, StoreError> {
    let row = waits::Entity::find()
        .filter(waits::Column::TenantId.eq(tenant.as_str()))
        .filter(waits::Column::CorrelationId.eq(correlation_id.as_str()))
        .one(conn)
        .await
        .map_err(db_err)?;
    one(conn, signal, row).await
}

/// The wait registered under an idempotency identity.
pub(super) async fn find_by_idempotency<C: ConnectionTrait + TransactionTrait>(
    conn: &C,
    signal: &SqlResumeSignal,
    tenant: &TenantId,
    execution_id: &ExecutionId,
    node_id: &NodeId,
    idempotency_key: &str,
) -> Result<Option<StoredWait>, StoreError> {
    let row = waits::Entity::find()
        .filter(waits::Column::TenantId.eq(tenant.as_str()))
        .filter(waits::Column::ExecutionId.eq(execution_id.as_str()))
        .filter(waits::Column::NodeId.eq(node_id.as_str()))
        .filter(waits::Column::IdempotencyKey.eq(text::stored(idempotency_key).as_ref()))
        .one(conn)
        .await
        .map_err(db_err)?;
    one(conn, signal, row).await
}

/// A page of waits, newest first (by creation time, then id, descending). A row that cannot
/// be read is marked and listed as marked, or left out when it cannot be marked.
pub(super) async fn list<C: ConnectionTrait + TransactionTrait>(
    conn: &C,
    signal: &SqlResumeSignal,
    query: &WaitQuery,
) -> Result<Page<StoredWait>, StoreError> {
    let mut select = waits::Entity::find();
    if let Some(tenants) = query.tenants.tenants() {
        select = select.filter(waits::Column::TenantId.is_in(tenants.iter().map(|t| t.as_str())));
    }
    if !query.statuses.is_empty() {
        select =
            select.filter(waits::Column::Status.is_in(query.statuses.iter().map(|s| s.as_str())));
    }
    if let Some(execution) = &query.execution_id {
        select = select.filter(waits::Column::ExecutionId.eq(execution.as_str()));
    }
    if let Some(before) = query.created_before {
        select = select.filter(waits::Column::CreatedAt.lt(before.as_millis()));
    }
    if let Some((at, id)) = query.after {
        select = select.filter(
            Condition::any()
                .add(waits::Column::CreatedAt.lt(at.as_millis()))
                .add(
                    Condition::all()
                        .add(waits::Column::CreatedAt.eq(at.as_millis()))
                        .add(waits::Column::Id.lt(id.as_uuid())),
                ),
        );
    }
    let limit = query.limit.max(1);
    let mut rows = select
        .order_by_desc(waits::Column::CreatedAt)
        .order_by_desc(waits::Column::Id)
        .limit(u64::from(limit) + 1)
        .all(conn)
        .await
        .map_err(db_err)?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    // Where the next page starts, from the rows (a row left out still counts).
    let next = more
        .then(|| {
            rows.last().map(|r| {
                (
                    Timestamp::from_millis(r.created_at),
                    WaitId::from_uuid(r.id),
                )
            })
        })
        .flatten();
    let items = read_waits(conn, signal, rows, wall_clock()).await?;
    Ok(Page { items, next })
}

/// Inserts a new wait; a taken correlation id or idempotency identity is a conflict.
pub(super) async fn insert(
    conn: &impl ConnectionTrait,
    wait: &StoredWait,
) -> Result<(), StoreError> {
    waits::Entity::insert(wait_to_row(wait)?)
        .exec_without_returning(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Stores a wait's new state if its version is still `expected_version` (compare-and-set).
pub(super) async fn update(
    conn: &impl ConnectionTrait,
    wait: &StoredWait,
    expected_version: i64,
) -> Result<bool, StoreError> {
    let s = &wait.state;
    let result = waits::Entity::update_many()
        .col_expr(waits::Column::Status, Expr::value(s.status().as_str()))
        .col_expr(waits::Column::Progress, Expr::value(progress_json(s)?))
        .col_expr(
            waits::Column::UpdatedAt,
            Expr::value(wait.updated_at.as_millis()),
        )
        .col_expr(
            waits::Column::DecidedAt,
            Expr::value(s.resolution.as_ref().map(|r| r.decided_at.as_millis())),
        )
        .col_expr(waits::Column::Version, Expr::value(wait.version))
        .filter(waits::Column::Id.eq(s.key.id.as_uuid()))
        .filter(waits::Column::Version.eq(expected_version))
        .exec(conn)
        .await
        .map_err(db_err)?;
    Ok(result.rows_affected == 1)
}

/// Open waits past their deadline, earliest first. On PostgreSQL they stay locked until the
/// transaction ends, and other sweepers skip them (`FOR UPDATE SKIP LOCKED`); SQLite has no row
/// locks and runs one writer at a time. A row that cannot be read is marked decided in this
/// transaction (`unreadable.rs`) and left out: it never stops the sweep of the others.
pub(super) async fn claim_due<C: ConnectionTrait + TransactionTrait>(
    conn: &C,
    signal: &SqlResumeSignal,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<StoredWait>, StoreError> {
    let mut select = waits::Entity::find()
        .filter(waits::Column::DecidedAt.is_null())
        .filter(waits::Column::Deadline.lte(now.as_millis()))
        .order_by_asc(waits::Column::Deadline)
        .limit(u64::from(limit));
    if conn.get_database_backend() == DbBackend::Postgres {
        select = select.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let rows = select.all(conn).await.map_err(db_err)?;
    let mut due = read_waits(conn, signal, rows, now).await?;
    due.retain(|w| w.state.resolution.is_none());
    Ok(due)
}
