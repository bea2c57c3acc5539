//! The resume outbox (`resume_outbox`): one resume per decided wait, written in the deciding
//! transaction, leased to resume streams, acknowledged, or released when a stream ends.

use std::time::Duration;

use rendezvous_domain::{ResumeId, Timestamp, WaitId};
use rendezvous_ports::{Redelivered, ResumeRecord, StoreError, TenantScope};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
};

use super::unreadable;
use crate::entities::resume_outbox;
use crate::rows::{db_err, json, resume_from_row};
use crate::signal::SqlResumeSignal;

/// Acknowledgements on PostgreSQL: the ids as one JSON array, so the statement has one shape
/// whatever their number (an `IN` list of parameters is a new prepared statement per length).
const ACK_RESUMES_POSTGRES: &str = "UPDATE resume_outbox SET acked_at = $1 \
     WHERE resume_id IN (SELECT value::uuid FROM json_array_elements_text($2::json)) \
       AND acked_at IS NULL";

/// Puts a wait's resume in the outbox (`false`: the wait already has one). Whoever commits the
/// transaction announces it ([`SqlResumeSignal::committed`]).
pub(super) async fn insert(
    conn: &impl ConnectionTrait,
    resume: &ResumeRecord,
) -> Result<bool, StoreError> {
    let row = resume_outbox::ActiveModel {
        resume_id: Set(resume.resume_id.as_uuid()),
        wait_id: Set(resume.wait_id.as_uuid()),
        tenant_id: Set(resume.tenant.to_string()),
        resume: Set(json(resume)?),
        created_at: Set(resume.decided_at.as_millis()),
        lease_owner: Set(None),
        lease_until: Set(None),
        attempts: Set(0),
        acked_at: Set(None),
    };
    let inserted = resume_outbox::Entity::insert(row)
        .on_conflict(
            OnConflict::column(resume_outbox::Column::WaitId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await
        .map_err(db_err)?
        == 1;
    Ok(inserted)
}

/// Leases up to `limit` unacknowledged resumes whose lease is free or ran out (of the tenants
/// in scope) to `owner` until `now + lease`, oldest first, counting the attempt: one
/// `UPDATE ... WHERE resume_id IN (SELECT ... LIMIT) RETURNING *`, whose subquery skips rows
/// other streams hold on PostgreSQL (`FOR UPDATE SKIP LOCKED`; SQLite runs one writer at a
/// time). A resume that cannot be read is replaced by a `failed` one (`unreadable.rs`), which
/// is delivered instead.
pub(super) async fn claim(
    conn: &impl ConnectionTrait,
    owner: &str,
    tenants: &TenantScope,
    now: Timestamp,
    lease: Duration,
    limit: u32,
) -> Result<Vec<ResumeRecord>, StoreError> {
    let until = now.plus(lease).as_millis();
    let now = now.as_millis();
    let mut due = resume_outbox::Entity::find()
        .select_only()
        .column(resume_outbox::Column::ResumeId)
        .filter(resume_outbox::Column::AckedAt.is_null())
        .filter(
            sea_orm::Condition::any()
                .add(resume_outbox::Column::LeaseUntil.is_null())
                .add(resume_outbox::Column::LeaseUntil.lte(now)),
        )
        .apply_if(tenants.tenants(), |q, tenants| {
            q.filter(resume_outbox::Column::TenantId.is_in(tenants.iter().map(|t| t.as_str())))
        })
        .order_by_asc(resume_outbox::Column::CreatedAt)
        .limit(u64::from(limit));
    if conn.get_database_backend() == DbBackend::Postgres {
        due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let attempts_plus_one = {
        // In a block: `ExprTrait`'s `eq` would be ambiguous with `ColumnTrait`'s above.
        use sea_orm::sea_query::ExprTrait;
        Expr::col(resume_outbox::Column::Attempts).add(1)
    };
    let mut claim = resume_outbox::Entity::update_many()
        .col_expr(resume_outbox::Column::LeaseOwner, Expr::value(owner))
        .col_expr(resume_outbox::Column::LeaseUntil, Expr::value(until))
        .col_expr(resume_outbox::Column::Attempts, attempts_plus_one)
        .filter(resume_outbox::Column::ResumeId.in_subquery(due.into_query()))
        .into_query();
    claim.returning_all();
    let rows = conn.query_all(&claim).await.map_err(db_err)?;
    let mut claimed = rows
        .iter()
        .map(|row| resume_outbox::Model::from_query_result(row, "").map_err(db_err))
        .collect::<Result<Vec<_>, _>>()?;
    claimed.sort_by_key(|r| r.created_at);
    let mut resumes = Vec::with_capacity(claimed.len());
    for row in &claimed {
        match resume_from_row(row) {
            Ok(resume) => resumes.push(resume),
            Err(error) => {
                let replaced =
                    unreadable::replace_resume(conn, row, &error, Timestamp::from_millis(now))
                        .await?;
                resumes.extend(replaced);
            }
        }
    }
    Ok(resumes)
}

/// Acknowledges resumes: they are never delivered again. Returns how many were still
/// unacknowledged.
pub(super) async fn ack(
    conn: &impl ConnectionTrait,
    resume_ids: &[ResumeId],
    now: Timestamp,
) -> Result<u64, StoreError> {
    if resume_ids.is_empty() {
        return Ok(0);
    }
    if conn.get_database_backend() == DbBackend::Postgres {
        let result = conn
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                ACK_RESUMES_POSTGRES,
                [now.as_millis().into(), json(&resume_ids)?.into()],
            ))
            .await
            .map_err(db_err)?;
        return Ok(result.rows_affected());
    }
    let result = resume_outbox::Entity::update_many()
        .col_expr(resume_outbox::Column::AckedAt, Expr::value(now.as_millis()))
        .filter(resume_outbox::Column::ResumeId.is_in(resume_ids.iter().map(ResumeId::as_uuid)))
        .filter(resume_outbox::Column::AckedAt.is_null())
        .exec(conn)
        .await
        .map_err(db_err)?;
    Ok(result.rows_affected)
}

/// Sends a wait's resume again: clears its acknowledgement and lease, and wakes the streams of
/// every instance. `None` when the wait has no resume.
pub(super) async fn redeliver(
    conn: &impl ConnectionTrait,
    signal: &SqlResumeSignal,
    wait_id: WaitId,
) -> Result<Option<Redelivered>, StoreError> {
    let Some(row) = resume_outbox::Entity::find()
        .filter(resume_outbox::Column::WaitId.eq(wait_id.as_uuid()))
        .one(conn)
        .await
        .map_err(db_err)?
    else {
        return Ok(None);
    };
    without_lease(resume_outbox::Entity::update_many())
        .col_expr(
            resume_outbox::Column::AckedAt,
            Expr::value(Option::<i64>::None),
        )
        .filter(resume_outbox::Column::ResumeId.eq(row.resume_id))
        .exec(conn)
        .await
        .map_err(db_err)?;
    signal.freed();
    Ok(Some(Redelivered {
        resume_id: ResumeId::from_uuid(row.resume_id),
        was_acked: row.acked_at.is_some(),
    }))
}

/// Frees the leases `owner` holds on unacknowledged resumes, and wakes the streams of every
/// instance, which may take them at once.
pub(super) async fn release(
    conn: &impl ConnectionTrait,
    signal: &SqlResumeSignal,
    owner: &str,
) -> Result<u64, StoreError> {
    let result = without_lease(resume_outbox::Entity::update_many())
        .filter(resume_outbox::Column::LeaseOwner.eq(owner))
        .filter(resume_outbox::Column::AckedAt.is_null())
        .exec(conn)
        .await
        .map_err(db_err)?;
    if result.rows_affected > 0 {
        signal.freed();
    }
    Ok(result.rows_affected)
}

/// An update that also frees the rows' leases.
fn without_lease(
    update: sea_orm::UpdateMany<resume_outbox::Entity>,
) -> sea_orm::UpdateMany<resume_outbox::Entity> {
    update
        .col_expr(
            resume_outbox::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(
            resume_outbox::Column::LeaseOwner,
            Expr::value(Option::<String>::None),
        )
}
