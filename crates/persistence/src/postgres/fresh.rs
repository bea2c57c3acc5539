//! Batched fresh registrations: many
//! [`Store::insert_fresh_wait`](rendezvous_ports::Store::insert_fresh_wait)s in one
//! transaction of two statements (`sql/lock_fresh.sql`, `sql/insert_fresh.sql`). The
//! conformance suite is the contract with `rendezvous_ports::insert_fresh_wait_in_tx`.

use rendezvous_ports::{FreshWait, StoreError};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use serde::Serialize;

use super::{batch_index, batch_params, numbered_json};
use crate::errors::is_rolled_back;
use crate::rows::{call_json, db_err, json, progress_json};
use crate::signal::SqlResumeSignal;
use crate::store::correlation_lock_key;
use crate::text;

/// The first statement: the correlation locks, taken with `pg_try_advisory_xact_lock` so that
/// a batch never waits for (or deadlocks with) another transaction; a registration whose lock
/// is held elsewhere is not fresh and takes the full path, which waits for the lock.
const LOCK_FRESH_SQL: &str = include_str!("sql/lock_fresh.sql");

/// The second statement, in a new snapshot that sees whatever committed before the locks were
/// taken: each locked registration is inserted with its call and resume only if nothing came
/// before it (no wait with its idempotency identity or correlation id, no pending early event).
const INSERT_FRESH_SQL: &str = include_str!("sql/insert_fresh.sql");

/// One [`FreshWait`], owned, as a row of [`INSERT_FRESH_SQL`]'s input.
#[derive(Debug, Serialize)]
pub(super) struct FreshRow {
    id: uuid::Uuid,
    tenant_id: String,
    correlation_id: String,
    execution_id: String,
    node_id: String,
    idempotency_key: String,
    workflow_id: Option<String>,
    status: &'static str,
    spec: String,
    progress: String,
    deadline: i64,
    created_at: i64,
    decided_at: Option<i64>,
    call: Option<String>,
    resume_id: Option<uuid::Uuid>,
    resume: Option<String>,
}

impl FreshRow {
    pub(super) fn of(fresh: FreshWait<'_>) -> Result<Self, StoreError> {
        let wait = fresh.wait;
        let s = &wait.state;
        if wait.version != 1 || wait.updated_at != s.created_at {
            return Err(StoreError::Other(format!(
                "a fresh wait has version 1 and was last changed when created; wait {} has version {} and changed at {}",
                s.key.id,
                wait.version,
                wait.updated_at.as_millis()
            )));
        }
        Ok(Self {
            id: s.key.id.as_uuid(),
            tenant_id: s.key.tenant.to_string(),
            correlation_id: s.key.correlation_id.to_string(),
            execution_id: s.key.execution_id.to_string(),
            node_id: s.key.node_id.to_string(),
            idempotency_key: text::stored_owned(&wait.idempotency_key),
            workflow_id: text::stored_opt(wait.workflow_id.as_deref()),
            status: s.status().as_str(),
            spec: json(&s.spec)?,
            progress: progress_json(s)?,
            deadline: s.deadline.as_millis(),
            created_at: s.created_at.as_millis(),
            decided_at: s.resolution.as_ref().map(|r| r.decided_at.as_millis()),
            call: fresh.call.map(call_json).transpose()?,
            resume_id: fresh.resume.map(|r| r.resume_id.as_uuid()),
            resume: fresh.resume.map(json).transpose()?,
        })
    }
}

/// A row of [`LOCK_FRESH_SQL`]'s input: the correlation lock's key, as
/// [`StoreTx::lock_correlation`](rendezvous_ports::StoreTx::lock_correlation) makes it.
#[derive(Serialize)]
struct LockRow {
    k: String,
}

/// Registers a batch in one transaction: the correlation locks, then the inserts, one commit.
/// Any failure but unavailability (a deadlock counts as "any failure") only means "not
/// fresh": each registration then takes the full path on its own.
pub(super) async fn insert_fresh_waits(
    conn: &DatabaseConnection,
    signal: &SqlResumeSignal,
    rows: Vec<FreshRow>,
) -> Vec<Result<bool, StoreError>> {
    match write(conn, &rows).await {
        Ok((inserted, woken)) => {
            if woken {
                signal.committed(
                    rows.iter()
                        .zip(&inserted)
                        .filter(|(row, inserted)| **inserted && row.resume.is_some())
                        .map(|(row, _)| row.tenant_id.as_str()),
                );
            }
            inserted.into_iter().map(Ok).collect()
        }
        Err(e @ StoreError::Unavailable(_)) if !is_rolled_back(&e) => {
            rows.iter().map(|_| Err(e.clone())).collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, registrations = rows.len(), "a batch of registrations failed; each takes the full path");
            rows.iter().map(|_| Ok(false)).collect()
        }
    }
}

/// The transaction of [`insert_fresh_waits`]: whether each row was inserted, and whether a
/// resume was written.
async fn write(
    conn: &DatabaseConnection,
    rows: &[FreshRow],
) -> Result<(Vec<bool>, bool), StoreError> {
    let locks: Vec<LockRow> = rows
        .iter()
        .map(|r| LockRow {
            k: correlation_lock_key(&r.tenant_id, &r.correlation_id),
        })
        .collect();
    let tx = conn.begin().await.map_err(db_err)?;
    let locked = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            LOCK_FRESH_SQL,
            [numbered_json(&locks)?.into()],
        ))
        .await
        .map_err(db_err)?;
    // Positions in `rows` of the registrations whose lock this transaction holds.
    let mut candidates = Vec::with_capacity(rows.len());
    for row in &locked {
        let n = batch_index(row, "n", rows.len())?;
        if row.try_get::<bool>("", "locked").map_err(db_err)? {
            candidates.push(n);
        }
    }
    let mut inserted = vec![false; rows.len()];
    let mut woken = false;
    if !candidates.is_empty() {
        let candidate_rows: Vec<&FreshRow> = candidates.iter().map(|&n| &rows[n]).collect();
        let written = tx
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                INSERT_FRESH_SQL,
                batch_params(&candidate_rows)?,
            ))
            .await
            .map_err(db_err)?;
        for row in &written {
            let n = candidates[batch_index(row, "n", candidates.len())?];
            inserted[n] = row.try_get("", "inserted").map_err(db_err)?;
            woken |= row.try_get::<i64>("", "resumes").map_err(db_err)? > 0;
        }
    }
    tx.commit().await.map_err(db_err)?;
    Ok((inserted, woken))
}
