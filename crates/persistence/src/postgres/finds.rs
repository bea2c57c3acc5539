//! Batched lookups: many [`Store::find_wait`](rendezvous_ports::Store::find_wait)s by
//! correlation id in one statement (`sql/find_waits.sql`).

use rendezvous_ports::{StoreError, StoredWait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, FromQueryResult, Statement};
use serde::Serialize;

use super::{batch_index, batch_params};
use crate::entities::waits;
use crate::rows::db_err;
use crate::signal::SqlResumeSignal;
use crate::store::read_found;

/// A batch of lookups: each wait found comes back with the `batch_n` of the lookup it answers.
const FIND_WAITS_SQL: &str = include_str!("sql/find_waits.sql");

/// One lookup as a row of [`FIND_WAITS_SQL`]'s input.
#[derive(Debug, Serialize)]
pub(super) struct FindRow {
    pub(super) tenant_id: String,
    pub(super) correlation_id: String,
}

/// Looks up a batch of correlation ids in one statement. A row that cannot be read is marked
/// (see `store/unreadable.rs`) and affects its own lookup only; a failed statement fails them
/// all.
pub(super) async fn find_waits(
    conn: &DatabaseConnection,
    signal: &SqlResumeSignal,
    rows: Vec<FindRow>,
) -> Vec<Result<Option<StoredWait>, StoreError>> {
    let found = async {
        let found = conn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                FIND_WAITS_SQL,
                batch_params(&rows)?,
            ))
            .await
            .map_err(db_err)?;
        let mut results: Vec<Result<Option<StoredWait>, StoreError>> =
            rows.iter().map(|_| Ok(None)).collect();
        for row in found {
            let n = batch_index(&row, "batch_n", results.len())?;
            results[n] = match waits::Model::from_query_result(&row, "").map_err(db_err) {
                Ok(row) => read_found(conn, signal, Some(row)).await,
                Err(e) => Err(e),
            };
        }
        Ok::<_, StoreError>(results)
    }
    .await;
    match found {
        Ok(results) => results,
        Err(e) => rows.iter().map(|_| Err(e.clone())).collect(),
    }
}
