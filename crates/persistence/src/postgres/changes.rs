//! Batched wait changes: many [`Store::apply_change`](rendezvous_ports::Store::apply_change)s
//! in one statement (`sql/apply_changes.sql`), committed on its own. The conformance suite is
//! the contract with `rendezvous_ports::apply_change_in_tx`.

use std::collections::HashSet;

use rendezvous_ports::{ChangeOutcome, StoreError, WaitChange};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde::Serialize;

use super::{batch_index, batch_params};
use crate::errors::is_rolled_back;
use crate::rows::{db_err, json, progress_json};
use crate::signal::SqlResumeSignal;

/// A batch of changes, each for a different wait: per row the compare-and-set `UPDATE`
/// (refused when the version moved or the inbox already has the event), and only where it
/// happened the inbox row and the resume. A statement is atomic, so each row is what a
/// transaction of the `StoreTx` steps would have written.
const APPLY_CHANGES_SQL: &str = include_str!("sql/apply_changes.sql");

/// One [`WaitChange`], owned, as a row of [`APPLY_CHANGES_SQL`]'s input.
#[derive(Debug, Serialize)]
pub(super) struct ChangeRow {
    id: uuid::Uuid,
    expected: i64,
    status: &'static str,
    progress: String,
    updated_at: i64,
    decided_at: Option<i64>,
    version: i64,
    event_key: Option<String>,
    source: Option<String>,
    resume_id: Option<uuid::Uuid>,
    tenant_id: Option<String>,
    resume: Option<String>,
}

impl ChangeRow {
    pub(super) fn of(change: WaitChange<'_>) -> Result<Self, StoreError> {
        let s = &change.wait.state;
        let (event_key, source) = change.processed.map_or((None, None), |(k, s)| {
            (Some(k.to_string()), Some(s.to_string()))
        });
        Ok(Self {
            id: s.key.id.as_uuid(),
            expected: change.expected_version,
            status: s.status().as_str(),
            progress: progress_json(s)?,
            updated_at: change.wait.updated_at.as_millis(),
            decided_at: s.resolution.as_ref().map(|r| r.decided_at.as_millis()),
            version: change.wait.version,
            event_key,
            source,
            resume_id: change.resume.map(|r| r.resume_id.as_uuid()),
            tenant_id: change.resume.map(|r| r.tenant.to_string()),
            resume: change.resume.map(json).transpose()?,
        })
    }
}

/// Writes a batch of changes: in rounds in which each wait changes at most once (an `UPDATE`
/// cannot change one row twice in a statement; a later change of the same wait was computed
/// from the same version and is refused by its round as it would be on its own). A round that
/// fails for anything but unavailability (a deadlock counts as "anything") is retried change
/// by change, so that one bad change cannot fail the others.
pub(super) async fn apply_changes(
    conn: &DatabaseConnection,
    signal: &SqlResumeSignal,
    rows: Vec<ChangeRow>,
) -> Vec<Result<ChangeOutcome, StoreError>> {
    let mut results: Vec<Option<Result<ChangeOutcome, StoreError>>> =
        rows.iter().map(|_| None).collect();
    // Positions in `rows` still to write.
    let mut remaining: Vec<usize> = (0..rows.len()).collect();
    let mut woken = false;
    while !remaining.is_empty() {
        let mut ids = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) =
            remaining.into_iter().partition(|&n| ids.insert(rows[n].id));
        let round_rows: Vec<&ChangeRow> = round.iter().map(|&n| &rows[n]).collect();
        match apply_round(conn, &round_rows).await {
            Ok((outcomes, wake)) => {
                woken |= wake;
                for (&n, outcome) in round.iter().zip(outcomes) {
                    results[n] = Some(Ok(outcome));
                }
            }
            Err(e)
                if round.len() == 1
                    || (matches!(e, StoreError::Unavailable(_)) && !is_rolled_back(&e)) =>
            {
                for &n in &round {
                    results[n] = Some(Err(e.clone()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, changes = round.len(), "a batch of wait changes failed; writing them one by one");
                for (&n, row) in round.iter().zip(round_rows) {
                    results[n] = Some(match apply_round(conn, &[row]).await {
                        Ok((outcomes, wake)) => {
                            woken |= wake;
                            Ok(outcomes[0])
                        }
                        Err(e) => Err(e),
                    });
                }
            }
        }
        remaining = later;
    }
    if woken {
        // The tenants of the applied changes that carried a resume.
        signal.committed(rows.iter().zip(&results).filter_map(|(row, result)| {
            matches!(result, Some(Ok(ChangeOutcome::Applied)))
                .then_some(row.tenant_id.as_deref())
                .flatten()
        }));
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Other("apply_change returned no row".into()))))
        .collect()
}

/// One statement of [`APPLY_CHANGES_SQL`]: the outcome of each row of `round`, in order, and
/// whether a resume was written.
async fn apply_round(
    conn: &DatabaseConnection,
    round: &[&ChangeRow],
) -> Result<(Vec<ChangeOutcome>, bool), StoreError> {
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            APPLY_CHANGES_SQL,
            batch_params(round)?,
        ))
        .await
        .map_err(db_err)?;
    let mut woken = false;
    let mut outcomes = vec![None; round.len()];
    for row in &rows {
        let n = batch_index(row, "n", round.len())?;
        let updated: bool = row.try_get("", "updated").map_err(db_err)?;
        let already: bool = row.try_get("", "already").map_err(db_err)?;
        woken |= row.try_get::<i64>("", "resumes").map_err(db_err)? > 0;
        outcomes[n] = Some(match (updated, already) {
            (true, _) => ChangeOutcome::Applied,
            (false, true) => ChangeOutcome::AlreadyProcessed,
            (false, false) => ChangeOutcome::VersionMoved,
        });
    }
    let outcomes: Option<Vec<ChangeOutcome>> = outcomes.into_iter().collect();
    match outcomes {
        Some(outcomes) if rows.len() == round.len() => Ok((outcomes, woken)),
        _ => Err(StoreError::Other(
            "apply_change returned rows that do not match its input".into(),
        )),
    }
}
