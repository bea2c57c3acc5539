//! PostgreSQL group commit: [`Store::apply_change`], [`Store::find_wait`] and
//! [`Store::insert_fresh_wait`] requests made at the same time share one statement (and one
//! commit), each request still getting its own outcome, exactly as if it ran alone.
//! `group_commit.rs` queues the requests (over `crate::batch`); `changes.rs`, `finds.rs` and
//! `fresh.rs` run a batch of each kind, with their statements in `sql/`, one file each; this
//! module holds what those share: how a batch is numbered and passed as parameters.
//!
//! The conformance suite is the contract: the batched statements here and
//! `rendezvous_ports::apply_change_steps` / `insert_fresh_wait_steps` (the steps SQLite's
//! group commit runs) implement the same semantics, and only
//! `tests/conformance` ties them together. Change one, run the suite on both backends.
//!
//! [`Store::apply_change`]: rendezvous_ports::Store::apply_change
//! [`Store::find_wait`]: rendezvous_ports::Store::find_wait
//! [`Store::insert_fresh_wait`]: rendezvous_ports::Store::insert_fresh_wait

mod changes;
mod finds;
mod fresh;
mod group_commit;

use rendezvous_ports::StoreError;
use sea_orm::{QueryResult, Value};
use serde::Serialize;

pub(crate) use self::group_commit::Batchers;
use crate::rows::{db_err, json};

/// A row of a batch statement's input: the request's position `n` in the batch, then its
/// fields. Result rows name the request they answer by that `n` ([`batch_index`]).
#[derive(Serialize)]
struct Numbered<'a, T> {
    n: usize,
    #[serde(flatten)]
    row: &'a T,
}

/// The rows of a batch, numbered by position, as the JSON array a statement reads with
/// `json_to_recordset`.
fn numbered_json<T: Serialize>(rows: &[T]) -> Result<String, StoreError> {
    let numbered: Vec<Numbered<'_, T>> = rows
        .iter()
        .enumerate()
        .map(|(n, row)| Numbered { n, row })
        .collect();
    json(&numbered)
}

/// The parameters of a batch statement: `$1` the rows as a numbered JSON array, `$2` how many
/// there are. `LIMIT $2` on the input keeps the planner's idea of a batch small (it assumes 100
/// rows of any set-returning function; of a `LIMIT` parameter, a tenth of that), so that even
/// a plan cached while the tables were nearly empty joins them by index lookups.
fn batch_params<T: Serialize>(rows: &[T]) -> Result<Vec<Value>, StoreError> {
    Ok(vec![
        numbered_json(rows)?.into(),
        i64::try_from(rows.len()).unwrap_or(i64::MAX).into(),
    ])
}

/// The request of a batch a result row answers: its `column` (the request's position in the
/// batch), checked against the batch's length.
fn batch_index(row: &QueryResult, column: &str, len: usize) -> Result<usize, StoreError> {
    let n: i32 = row.try_get("", column).map_err(db_err)?;
    usize::try_from(n).ok().filter(|&n| n < len).ok_or_else(|| {
        StoreError::Other(format!(
            "a batch statement returned {column} {n} for a batch of {len}"
        ))
    })
}
