//! The outbox of outbound API calls (`api_calls`): written with its wait, leased by the
//! dispatchers of every instance, then finished, put back for another attempt, or failed.

use std::time::Duration;

use rendezvous_domain::{Timestamp, WaitId};
use rendezvous_ports::{ApiCallRecord, StoreError};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};

use super::unreadable;
use crate::entities::api_calls;
use crate::rows::{CallStatus, call_from_row, call_json, db_err};
use crate::text;

/// Puts a wait's call in the outbox, due at once.
pub(super) async fn insert(
    conn: &impl ConnectionTrait,
    call: &ApiCallRecord,
    now: Timestamp,
) -> Result<(), StoreError> {
    api_calls::Entity::insert(api_calls::ActiveModel {
        wait_id: Set(call.wait_id.as_uuid()),
        request: Set(call_json(call)?),
        status: Set(CallStatus::Pending.as_str().to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(now.as_millis()),
        lease_owner: Set(None),
        lease_until: Set(None),
        last_error: Set(None),
        created_at: Set(now.as_millis()),
        updated_at: Set(now.as_millis()),
    })
    .exec_without_returning(conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Leases up to `limit` due calls whose lease is free or ran out to `owner` until
/// `now + lease`, counting the attempt: one `UPDATE ... WHERE wait_id IN (SELECT ... LIMIT)
/// RETURNING *`, whose subquery skips rows other dispatchers hold on PostgreSQL
/// (`FOR UPDATE SKIP LOCKED`; SQLite runs one writer at a time). A call that cannot be read
/// is failed and set aside (`unreadable.rs`).
pub(super) async fn claim(
    conn: &impl ConnectionTrait,
    owner: &str,
    now: Timestamp,
    lease: Duration,
    limit: u32,
) -> Result<Vec<ApiCallRecord>, StoreError> {
    let until = now.plus(lease).as_millis();
    let now = now.as_millis();
    let mut due = api_calls::Entity::find()
        .select_only()
        .column(api_calls::Column::WaitId)
        .filter(api_calls::Column::Status.eq(CallStatus::Pending.as_str()))
        .filter(api_calls::Column::NextAttemptAt.lte(now))
        .filter(
            Condition::any()
                .add(api_calls::Column::LeaseUntil.is_null())
                .add(api_calls::Column::LeaseUntil.lte(now)),
        )
        .order_by_asc(api_calls::Column::NextAttemptAt)
        .limit(u64::from(limit));
    if conn.get_database_backend() == DbBackend::Postgres {
        due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let attempts_plus_one = {
        // In a block: `ExprTrait`'s `eq` would be ambiguous with `ColumnTrait`'s above.
        use sea_orm::sea_query::ExprTrait;
        Expr::col(api_calls::Column::Attempts).add(1)
    };
    let mut claim = api_calls::Entity::update_many()
        .col_expr(api_calls::Column::LeaseOwner, Expr::value(owner))
        .col_expr(api_calls::Column::LeaseUntil, Expr::value(until))
        .col_expr(api_calls::Column::Attempts, attempts_plus_one)
        .col_expr(api_calls::Column::UpdatedAt, Expr::value(now))
        .filter(api_calls::Column::WaitId.in_subquery(due.into_query()))
        .into_query();
    claim.returning_all();
    let rows = conn.query_all(&claim).await.map_err(db_err)?;
    let mut calls = Vec::with_capacity(rows.len());
    for row in &rows {
        let row = api_calls::Model::from_query_result(row, "").map_err(db_err)?;
        match call_from_row(&row) {
            Ok(call) => calls.push(call),
            Err(error) => {
                unreadable::fail_call(conn, &row, &error, Timestamp::from_millis(now)).await?
            }
        }
    }
    Ok(calls)
}

/// Marks a call done.
pub(super) async fn finish(
    conn: &impl ConnectionTrait,
    wait_id: WaitId,
    now: Timestamp,
) -> Result<(), StoreError> {
    settle(conn, wait_id, CallStatus::Done, None, None, now).await
}

/// Puts calls `owner` claimed but did not attempt back in the outbox, due at
/// `next_attempt_at`: the lease freed and the claim's attempt uncounted. Calls no longer
/// pending or leased to someone else are left alone.
pub(super) async fn defer(
    conn: &impl ConnectionTrait,
    owner: &str,
    wait_ids: &[WaitId],
    next_attempt_at: Timestamp,
    now: Timestamp,
) -> Result<(), StoreError> {
    if wait_ids.is_empty() {
        return Ok(());
    }
    let attempts_minus_one = {
        use sea_orm::sea_query::ExprTrait;
        Expr::col(api_calls::Column::Attempts).sub(1)
    };
    api_calls::Entity::update_many()
        .col_expr(api_calls::Column::Attempts, attempts_minus_one)
        .col_expr(
            api_calls::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            api_calls::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(
            api_calls::Column::NextAttemptAt,
            Expr::value(next_attempt_at.as_millis()),
        )
        .col_expr(api_calls::Column::UpdatedAt, Expr::value(now.as_millis()))
        .filter(api_calls::Column::WaitId.is_in(wait_ids.iter().map(|id| id.as_uuid())))
        .filter(api_calls::Column::Status.eq(CallStatus::Pending.as_str()))
        .filter(api_calls::Column::LeaseOwner.eq(owner))
        .exec(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Puts a call back for another attempt at `next_attempt_at`, recording the error.
pub(super) async fn retry(
    conn: &impl ConnectionTrait,
    wait_id: WaitId,
    next_attempt_at: Timestamp,
    error: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    settle(
        conn,
        wait_id,
        CallStatus::Pending,
        Some(next_attempt_at),
        Some(error),
        now,
    )
    .await
}

/// Marks a call failed for good, recording the error.
pub(super) async fn fail(
    conn: &impl ConnectionTrait,
    wait_id: WaitId,
    error: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    settle(conn, wait_id, CallStatus::Failed, None, Some(error), now).await
}

/// Ends an attempt: the new status, the lease freed, and when given the next attempt's time
/// and the error.
async fn settle(
    conn: &impl ConnectionTrait,
    wait_id: WaitId,
    status: CallStatus,
    next_attempt_at: Option<Timestamp>,
    error: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut update = api_calls::Entity::update_many()
        .col_expr(api_calls::Column::Status, Expr::value(status.as_str()))
        .col_expr(
            api_calls::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            api_calls::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(api_calls::Column::UpdatedAt, Expr::value(now.as_millis()));
    if let Some(at) = next_attempt_at {
        update = update.col_expr(
            api_calls::Column::NextAttemptAt,
            Expr::value(at.as_millis()),
        );
    }
    if let Some(error) = error {
        update = update.col_expr(
            api_calls::Column::LastError,
            Expr::value(text::stored_owned(error)),
        );
    }
    update
        .filter(api_calls::Column::WaitId.eq(wait_id.as_uuid()))
        .exec(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}
