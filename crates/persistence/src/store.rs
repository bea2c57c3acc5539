//! The SQL implementation of the store port, on PostgreSQL and SQLite through SeaORM.

use std::time::Duration;

use async_trait::async_trait;
use rendezvous_domain::{
    CorrelationId, EventKey, ExecutionId, FieldPath, IncomingEvent, NodeId, SourceName, TenantId,
    Timestamp, WaitId,
};
use rendezvous_ports::{
    ApiCallRecord, BufferedEvent, ChangeOutcome, FreshWait, Page, Quarantined, ResumeRecord,
    ResumeSignal, Store, StoreError, StoreTx, StoredWait, TopicFields, WaitChange, WaitQuery,
    apply_change_in_tx, insert_fresh_wait_in_tx,
};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};

use crate::batch::Batcher;
use crate::entities::{
    api_calls, early_events, kafka_topics, processed_events, quarantined_events, resume_outbox,
    waits,
};
use crate::rows::{db_err, json, progress_json, resume_from_row, wait_from_row, wait_to_row};
use crate::signal::SqlResumeSignal;

/// The PostgreSQL channel resume wake-ups are sent on.
pub(crate) const RESUME_CHANNEL: &str = "rendezvous_resumes";

/// The store on a SeaORM connection (PostgreSQL or SQLite).
#[derive(Debug, Clone)]
pub struct SqlStore {
    conn: DatabaseConnection,
    /// Resume leases and acks: on PostgreSQL a pool with asynchronous commit (see
    /// `Database::connect`); on SQLite the one connection.
    lease_conn: DatabaseConnection,
    signal: SqlResumeSignal,
    /// PostgreSQL only: event changes and lookups coalesced across concurrent requests.
    batchers: Option<Batchers>,
}

impl SqlStore {
    /// Must run inside a Tokio runtime: on PostgreSQL it starts the batching tasks.
    pub(crate) fn new(
        conn: DatabaseConnection,
        lease_conn: DatabaseConnection,
        signal: SqlResumeSignal,
    ) -> Self {
        let batchers = (conn.get_database_backend() == DbBackend::Postgres)
            .then(|| Batchers::spawn(&conn, &signal));
        Self {
            conn,
            lease_conn,
            signal,
            batchers,
        }
    }

    /// The connection of resume leases and acks (closed with the database).
    pub(crate) fn lease_conn(&self) -> DatabaseConnection {
        self.lease_conn.clone()
    }

    fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    async fn settle_api_call(
        &self,
        wait_id: WaitId,
        status: &str,
        next_attempt_at: Option<Timestamp>,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut update = api_calls::Entity::update_many()
            .col_expr(api_calls::Column::Status, Expr::value(status))
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
            update = update.col_expr(api_calls::Column::LastError, Expr::value(error));
        }
        update
            .filter(api_calls::Column::WaitId.eq(wait_id.as_uuid()))
            .exec(&self.conn)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

/// What `api_calls.request` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCall {
    tenant: TenantId,
    correlation_id: CorrelationId,
    execution_id: ExecutionId,
    request: rendezvous_domain::ApiRequest,
}

/// `api_calls.request` of a call.
fn stored_call_json(call: &ApiCallRecord) -> Result<String, StoreError> {
    json(&StoredCall {
        tenant: call.tenant.clone(),
        correlation_id: call.correlation_id.clone(),
        execution_id: call.execution_id.clone(),
        request: call.request.clone(),
    })
}

/// The request of a batch a result row answers: its `column` (the request's index in the
/// batch), checked against the batch's length.
fn batch_index(row: &sea_orm::QueryResult, column: &str, len: usize) -> Result<usize, StoreError> {
    let n: i32 = row.try_get("", column).map_err(db_err)?;
    usize::try_from(n).ok().filter(|&n| n < len).ok_or_else(|| {
        StoreError::Other(format!(
            "a batch statement returned {column} {n} for a batch of {len}"
        ))
    })
}

/// Numbered placeholder `n` (1-based) in the backend's syntax (`$n`, or `?n` on SQLite), so a
/// parameter may be used more than once.
fn ph(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => format!("?{n}"),
    }
}

/// A batch of [`Store::apply_change`]s on PostgreSQL in one statement (built once: it names
/// [`RESUME_CHANNEL`]). `$1` is a JSON array of [`ChangeRow`]s, each for a different wait,
/// `$2` their count, `$3` the instance's notification payload.
/// Per row: the compare-and-set `UPDATE` (refused when the version moved or the inbox already
/// has the event), and only where it happened the inbox row and the resume; one `NOTIFY` when
/// any resume was written. A statement is atomic, so each row is what a transaction of the
/// [`StoreTx`] steps would have written, and the batch commits once.
static APPLY_CHANGES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH input AS ( \
               SELECT * FROM json_to_recordset($1::json) AS t( \
                 n int, id uuid, expected bigint, status text, progress text, updated_at bigint, \
                 decided_at bigint, version bigint, event_key text, source text, \
                 resume_id uuid, tenant_id text, resume text) LIMIT $2), \
             upd AS ( \
               UPDATE waits w SET status = i.status, progress = i.progress, \
                 updated_at = i.updated_at, decided_at = i.decided_at, version = i.version \
               FROM input i \
               WHERE w.id = i.id AND w.version = i.expected \
                 AND NOT EXISTS (SELECT 1 FROM processed_events p \
                                 WHERE p.wait_id = i.id AND p.event_key = i.event_key) \
               RETURNING w.id), \
             inbox AS ( \
               INSERT INTO processed_events (wait_id, event_key, source, processed_at) \
               SELECT i.id, i.event_key, i.source, i.updated_at FROM input i JOIN upd ON upd.id = i.id \
               WHERE i.event_key IS NOT NULL \
               ON CONFLICT DO NOTHING RETURNING 1), \
             outbox AS ( \
               INSERT INTO resume_outbox (resume_id, wait_id, tenant_id, resume, created_at, attempts) \
               SELECT i.resume_id, i.id, i.tenant_id, i.resume, i.decided_at, 0 \
               FROM input i JOIN upd ON upd.id = i.id WHERE i.resume IS NOT NULL \
               ON CONFLICT (wait_id) DO NOTHING RETURNING 1), \
             wake AS (SELECT pg_notify('{RESUME_CHANNEL}', $3) FROM (SELECT 1 FROM outbox LIMIT 1) o) \
             SELECT i.n, u.id IS NOT NULL AS updated, \
                    CASE WHEN u.id IS NULL THEN (SELECT true FROM processed_events p \
                      WHERE p.wait_id = i.id AND p.event_key = i.event_key LIMIT 1) IS NOT NULL \
                    ELSE false END AS already, \
                    (SELECT count(*) FROM wake) AS woken \
             FROM input i LEFT JOIN upd u ON u.id = i.id"
    )
});

/// A batch of [`Store::find_wait`]s on PostgreSQL in one statement: `$1` is a JSON array of
/// [`FindRow`]s; each wait found comes back with the `n` of the lookup it answers.
const FIND_WAITS_SQL: &str = "SELECT i.n AS batch_n, w.* \
     FROM (SELECT * FROM json_to_recordset($1::json) AS t(n int, tenant_id text, correlation_id text) \
           LIMIT $2) i \
     JOIN waits w ON w.tenant_id = i.tenant_id AND w.correlation_id = i.correlation_id";

/// A batch of [`Store::insert_fresh_wait`]s on PostgreSQL, first statement of the batch's
/// transaction: the correlation locks, taken with `pg_try_advisory_xact_lock` so that a batch
/// never waits for (or deadlocks with) another transaction; a registration whose lock is held
/// elsewhere is not fresh and takes the full path, which waits for the lock.
const LOCK_FRESH_SQL: &str = "SELECT i.n, pg_try_advisory_xact_lock(hashtextextended(i.k, 0)) AS locked \
     FROM json_to_recordset($1::json) AS i(n int, k text)";

/// The second statement, in a new snapshot that sees whatever committed before the locks were
/// taken: each locked registration is inserted with its call and resume only if no wait has
/// its idempotency identity and no early event is pending for its correlation id (a wait with
/// its correlation id makes the insert do nothing). One `NOTIFY` when any resume was written.
static INSERT_FRESH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH input AS ( \
               SELECT * FROM json_to_recordset($1::json) AS t( \
                 n int, id uuid, tenant_id text, correlation_id text, execution_id text, \
                 node_id text, idempotency_key text, workflow_id text, status text, spec text, \
                 progress text, deadline bigint, created_at bigint, decided_at bigint, \
                 call text, resume_id uuid, resume text) LIMIT $2), \
             fresh AS ( \
               SELECT i.* FROM input i \
               WHERE NOT EXISTS (SELECT 1 FROM waits w WHERE w.tenant_id = i.tenant_id \
                   AND w.execution_id = i.execution_id AND w.node_id = i.node_id \
                   AND w.idempotency_key = i.idempotency_key) \
                 AND NOT EXISTS (SELECT 1 FROM early_events e WHERE e.tenant_id = i.tenant_id \
                   AND e.correlation_id = i.correlation_id AND e.status = 'pending' \
                   AND e.expires_at > i.created_at)), \
             ins AS ( \
               INSERT INTO waits (id, tenant_id, correlation_id, execution_id, node_id, \
                 idempotency_key, workflow_id, status, spec, progress, deadline, created_at, \
                 updated_at, decided_at, version) \
               SELECT id, tenant_id, correlation_id, execution_id, node_id, idempotency_key, \
                 workflow_id, status, spec, progress, deadline, created_at, created_at, \
                 decided_at, 1 FROM fresh \
               ON CONFLICT DO NOTHING RETURNING id), \
             calls AS ( \
               INSERT INTO api_calls (wait_id, request, status, attempts, next_attempt_at, \
                 created_at, updated_at) \
               SELECT f.id, f.call, 'pending', 0, f.created_at, f.created_at, f.created_at \
               FROM fresh f JOIN ins ON ins.id = f.id WHERE f.call IS NOT NULL), \
             outbox AS ( \
               INSERT INTO resume_outbox (resume_id, wait_id, tenant_id, resume, created_at, attempts) \
               SELECT f.resume_id, f.id, f.tenant_id, f.resume, f.decided_at, 0 \
               FROM fresh f JOIN ins ON ins.id = f.id WHERE f.resume IS NOT NULL \
               ON CONFLICT (wait_id) DO NOTHING RETURNING 1), \
             wake AS (SELECT pg_notify('{RESUME_CHANNEL}', $3) FROM (SELECT 1 FROM outbox LIMIT 1) o) \
             SELECT i.n, ins.id IS NOT NULL AS inserted, (SELECT count(*) FROM wake) AS woken \
             FROM input i LEFT JOIN ins ON ins.id = i.id"
    )
});

/// The parameters of a batch statement: `$1` the rows as a JSON array, `$2` how many there
/// are. `LIMIT $2` on the input keeps the planner's idea of a batch small (it assumes 100
/// rows of any set-returning function; of a `LIMIT` parameter, a tenth of that), so that even
/// a plan cached while the tables were nearly empty joins them by index lookups.
fn batch_params<T: serde::Serialize>(rows: &[T]) -> Result<Vec<Value>, StoreError> {
    Ok(vec![
        json(&rows)?.into(),
        i64::try_from(rows.len()).unwrap_or(i64::MAX).into(),
    ])
}

/// The error a batch statement failed with, for each request it carried.
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Other(m) => StoreError::Other(m.clone()),
    }
}

/// Most requests one batch statement carries.
const MAX_BATCH: usize = 128;
/// Batch statements of one kind running at once (each holds a pooled connection). One is
/// fastest: requests that wait for the running batch make the next one bigger, and a bigger
/// batch costs the database little more than a small one (`docs/performance.md`: 1 in flight
/// 1,582–1,708 joins/s, 2 1,397–1,436, 4 ≈ 1,000, 8 ≈ 900, alternating runs). What a batch
/// statement can wait for is brief: row and unique-index locks of the service's own short
/// transactions (the sweeper, a cancel, a full-path registration).
const BATCHES_IN_FLIGHT: usize = 1;

/// One [`WaitChange`], owned, as a row of the batch statement's input.
#[derive(Debug, serde::Serialize)]
struct ChangeRow {
    n: usize,
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
    fn of(change: WaitChange<'_>) -> Result<Self, StoreError> {
        let s = &change.wait.state;
        let (event_key, source) = change.processed.map_or((None, None), |(k, s)| {
            (Some(k.to_string()), Some(s.to_string()))
        });
        Ok(Self {
            n: 0,
            id: s.key.id.as_uuid(),
            expected: change.expected_version,
            status: s.status().as_str(),
            progress: progress_json(s)?,
            updated_at: change.wait.updated_at.as_millis(),
            decided_at: s.resolution.as_ref().map(|r| r.decided_at.as_millis()),
            version: change.wait.version,
            event_key,
            source,
            resume_id: change.resume.map(|r| r.resume_id),
            tenant_id: change.resume.map(|r| r.tenant.to_string()),
            resume: change.resume.map(json).transpose()?,
        })
    }
}

/// One [`FreshWait`], owned, as a row of [`INSERT_FRESH_SQL`]'s input.
#[derive(Debug, serde::Serialize)]
struct FreshRow {
    n: usize,
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
    fn of(fresh: FreshWait<'_>) -> Result<Self, StoreError> {
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
        let call = fresh.call.map(stored_call_json).transpose()?;
        Ok(Self {
            n: 0,
            id: s.key.id.as_uuid(),
            tenant_id: s.key.tenant.to_string(),
            correlation_id: s.key.correlation_id.to_string(),
            execution_id: s.key.execution_id.to_string(),
            node_id: s.key.node_id.to_string(),
            idempotency_key: wait.idempotency_key.clone(),
            workflow_id: wait.workflow_id.clone(),
            status: s.status().as_str(),
            spec: json(&s.spec)?,
            progress: progress_json(s)?,
            deadline: s.deadline.as_millis(),
            created_at: s.created_at.as_millis(),
            decided_at: s.resolution.as_ref().map(|r| r.decided_at.as_millis()),
            call,
            resume_id: fresh.resume.map(|r| r.resume_id),
            resume: fresh.resume.map(json).transpose()?,
        })
    }

    /// The correlation lock's key, as [`StoreTx::lock_correlation`] makes it.
    fn lock_key(&self) -> String {
        correlation_lock_key(&self.tenant_id, &self.correlation_id)
    }
}

/// The key of a correlation id's advisory lock. Ids cannot hold control characters, so the
/// unit separator keeps keys unambiguous.
fn correlation_lock_key(tenant: &str, correlation_id: &str) -> String {
    format!("{tenant}\u{1f}{correlation_id}")
}

/// One [`Store::find_wait`] as a row of the batch statement's input.
#[derive(Debug, serde::Serialize)]
struct FindRow {
    n: usize,
    tenant_id: String,
    correlation_id: String,
}

/// The PostgreSQL batchers of a store.
#[derive(Debug, Clone)]
struct Batchers {
    changes: Batcher<ChangeRow, ChangeOutcome>,
    finds: Batcher<FindRow, Option<StoredWait>>,
    /// Whether each registration was inserted.
    fresh: Batcher<FreshRow, bool>,
}

impl Batchers {
    fn spawn(conn: &DatabaseConnection, signal: &SqlResumeSignal) -> Self {
        let (c, s) = (conn.clone(), signal.clone());
        let changes = Batcher::spawn(MAX_BATCH, BATCHES_IN_FLIGHT, move |rows| {
            let (c, s) = (c.clone(), s.clone());
            async move { apply_changes(&c, &s, rows).await }
        });
        let c = conn.clone();
        let finds = Batcher::spawn(MAX_BATCH, BATCHES_IN_FLIGHT, move |rows| {
            let c = c.clone();
            async move { find_waits(&c, rows).await }
        });
        let (c, s) = (conn.clone(), signal.clone());
        let fresh = Batcher::spawn(MAX_BATCH, BATCHES_IN_FLIGHT, move |rows| {
            let (c, s) = (c.clone(), s.clone());
            async move { insert_fresh_waits(&c, &s, rows).await }
        });
        Self {
            changes,
            finds,
            fresh,
        }
    }
}

/// Registers a batch in one transaction: the correlation locks ([`LOCK_FRESH_SQL`]), then the
/// inserts ([`INSERT_FRESH_SQL`]), one commit. Any failure but unavailability only means "not
/// fresh": each registration then takes the full path on its own.
async fn insert_fresh_waits(
    conn: &DatabaseConnection,
    signal: &SqlResumeSignal,
    mut rows: Vec<FreshRow>,
) -> Vec<Result<bool, StoreError>> {
    for (n, row) in rows.iter_mut().enumerate() {
        row.n = n;
    }
    let written = async {
        #[derive(serde::Serialize)]
        struct Lock {
            n: usize,
            k: String,
        }
        let locks: Vec<Lock> = rows
            .iter()
            .map(|r| Lock {
                n: r.n,
                k: r.lock_key(),
            })
            .collect();
        let tx = conn.begin().await.map_err(db_err)?;
        let locked = tx
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                LOCK_FRESH_SQL,
                [json(&locks)?.into()],
            ))
            .await
            .map_err(db_err)?;
        let mut candidates = Vec::with_capacity(rows.len());
        for row in locked {
            let n = batch_index(&row, "n", rows.len())?;
            if row.try_get::<bool>("", "locked").map_err(db_err)? {
                candidates.push(&rows[n]);
            }
        }
        let mut inserted = vec![false; rows.len()];
        let mut woken = false;
        if !candidates.is_empty() {
            let written = tx
                .query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    INSERT_FRESH_SQL.as_str(),
                    [batch_params(&candidates)?, vec![signal.origin().into()]].concat(),
                ))
                .await
                .map_err(db_err)?;
            for row in written {
                let n = batch_index(&row, "n", inserted.len())?;
                inserted[n] = row.try_get("", "inserted").map_err(db_err)?;
                woken |= row.try_get::<i64>("", "woken").map_err(db_err)? > 0;
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok::<_, StoreError>((inserted, woken))
    }
    .await;
    match written {
        Ok((inserted, woken)) => {
            if woken {
                signal.notify_local();
            }
            inserted.into_iter().map(Ok).collect()
        }
        Err(e @ StoreError::Unavailable(_)) => rows.iter().map(|_| Err(same_error(&e))).collect(),
        Err(e) => {
            tracing::warn!(error = %e, registrations = rows.len(), "a batch of registrations failed; each takes the full path");
            rows.iter().map(|_| Ok(false)).collect()
        }
    }
}

/// Writes a batch of changes: in rounds in which each wait changes at most once (an `UPDATE`
/// cannot change one row twice in a statement; a later change of the same wait was computed
/// from the same version and is refused by its round as it would be on its own). A round that
/// fails for anything but unavailability is retried change by change, so that one bad change
/// cannot fail the others.
async fn apply_changes(
    conn: &DatabaseConnection,
    signal: &SqlResumeSignal,
    mut rows: Vec<ChangeRow>,
) -> Vec<Result<ChangeOutcome, StoreError>> {
    for (n, row) in rows.iter_mut().enumerate() {
        row.n = n;
    }
    let mut results: Vec<Option<Result<ChangeOutcome, StoreError>>> =
        rows.iter().map(|_| None).collect();
    let mut remaining: Vec<&ChangeRow> = rows.iter().collect();
    let mut woken = false;
    while !remaining.is_empty() {
        let mut ids = std::collections::HashSet::new();
        let (round, later): (Vec<&ChangeRow>, Vec<&ChangeRow>) =
            remaining.into_iter().partition(|r| ids.insert(r.id));
        match apply_round(conn, signal.origin(), &round).await {
            Ok((outcomes, wake)) => {
                woken |= wake;
                for (n, outcome) in outcomes {
                    results[n] = Some(Ok(outcome));
                }
            }
            Err(e) if round.len() == 1 || matches!(e, StoreError::Unavailable(_)) => {
                for row in &round {
                    results[row.n] = Some(Err(same_error(&e)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, changes = round.len(), "a batch of wait changes failed; writing them one by one");
                for row in &round {
                    results[row.n] = Some(match apply_round(conn, signal.origin(), &[row]).await {
                        Ok((mut outcomes, wake)) => {
                            woken |= wake;
                            outcomes.pop().map(|(_, o)| o).ok_or_else(|| {
                                StoreError::Other("apply_change returned no row".into())
                            })
                        }
                        Err(e) => Err(e),
                    });
                }
            }
        }
        remaining = later;
    }
    if woken {
        signal.notify_local();
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Other("apply_change returned no row".into()))))
        .collect()
}

/// One statement of [`APPLY_CHANGES_SQL`]: each row's outcome by its `n`, and whether a
/// resume was written.
async fn apply_round(
    conn: &DatabaseConnection,
    origin: &str,
    round: &[&ChangeRow],
) -> Result<(Vec<(usize, ChangeOutcome)>, bool), StoreError> {
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            APPLY_CHANGES_SQL.as_str(),
            [batch_params(round)?, vec![origin.into()]].concat(),
        ))
        .await
        .map_err(db_err)?;
    let mut woken = false;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let n: i32 = row.try_get("", "n").map_err(db_err)?;
        let updated: bool = row.try_get("", "updated").map_err(db_err)?;
        let already: bool = row.try_get("", "already").map_err(db_err)?;
        woken |= row.try_get::<i64>("", "woken").map_err(db_err)? > 0;
        let outcome = match (updated, already) {
            (true, _) => ChangeOutcome::Applied,
            (false, true) => ChangeOutcome::AlreadyProcessed,
            (false, false) => ChangeOutcome::VersionMoved,
        };
        outcomes.push((usize::try_from(n).unwrap_or(usize::MAX), outcome));
    }
    if outcomes.len() != round.len()
        || outcomes
            .iter()
            .any(|(n, _)| !round.iter().any(|r| r.n == *n))
    {
        return Err(StoreError::Other(
            "apply_change returned rows that do not match its input".into(),
        ));
    }
    Ok((outcomes, woken))
}

/// Looks up a batch of correlation ids in one statement.
async fn find_waits(
    conn: &DatabaseConnection,
    mut rows: Vec<FindRow>,
) -> Vec<Result<Option<StoredWait>, StoreError>> {
    for (n, row) in rows.iter_mut().enumerate() {
        row.n = n;
    }
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
            // A corrupt row fails its own lookup only.
            results[n] = waits::Model::from_query_result(&row, "")
                .map_err(db_err)
                .and_then(wait_from_row)
                .map(Some);
        }
        Ok::<_, StoreError>(results)
    }
    .await;
    match found {
        Ok(results) => results,
        Err(e) => rows.iter().map(|_| Err(same_error(&e))).collect(),
    }
}

#[async_trait]
impl Store for SqlStore {
    type Tx = SqlTx;

    async fn begin(&self) -> Result<SqlTx, StoreError> {
        // SQLite: take the write lock at BEGIN, so a transaction never fails half-way when
        // it upgrades from reading to writing.
        // PostgreSQL: READ COMMITTED, set on every connection (`Database::connect`).
        let sqlite = self.backend() == DbBackend::Sqlite;
        let options = TransactionOptions {
            sqlite_transaction_mode: sqlite.then_some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        Ok(SqlTx {
            tx: self
                .conn
                .begin_with_options(options)
                .await
                .map_err(db_err)?,
            signal: self.signal.clone(),
            wrote_resume: false,
        })
    }

    /// On PostgreSQL one statement, committed on its own, shared with the changes other
    /// requests make at the same time ([`APPLY_CHANGES_SQL`], through the batcher): one round
    /// trip and one commit for many events under load.
    async fn apply_change(&self, change: WaitChange<'_>) -> Result<ChangeOutcome, StoreError> {
        match &self.batchers {
            Some(batchers) => batchers.changes.call(ChangeRow::of(change)?).await,
            None => apply_change_in_tx(self, change).await,
        }
    }

    /// On PostgreSQL shared with the registrations other requests make at the same time:
    /// one transaction of two statements for the whole batch ([`insert_fresh_waits`]).
    async fn insert_fresh_wait(&self, fresh: FreshWait<'_>) -> Result<bool, StoreError> {
        match &self.batchers {
            Some(batchers) => batchers.fresh.call(FreshRow::of(fresh)?).await,
            None => insert_fresh_wait_in_tx(self, fresh).await,
        }
    }

    async fn get_wait(&self, id: WaitId) -> Result<Option<StoredWait>, StoreError> {
        waits::Entity::find_by_id(id.as_uuid())
            .one(&self.conn)
            .await
            .map_err(db_err)?
            .map(wait_from_row)
            .transpose()
    }

    async fn find_wait(
        &self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<Option<StoredWait>, StoreError> {
        match &self.batchers {
            Some(batchers) => {
                batchers
                    .finds
                    .call(FindRow {
                        n: 0,
                        tenant_id: tenant.to_string(),
                        correlation_id: correlation_id.to_string(),
                    })
                    .await
            }
            None => find_wait(&self.conn, tenant, correlation_id).await,
        }
    }

    async fn list_waits(&self, query: &WaitQuery) -> Result<Page<StoredWait>, StoreError> {
        let mut select = waits::Entity::find();
        if let Some(tenant) = &query.tenant {
            select = select.filter(waits::Column::TenantId.eq(tenant.as_str()));
        }
        if !query.statuses.is_empty() {
            select = select
                .filter(waits::Column::Status.is_in(query.statuses.iter().map(|s| s.as_str())));
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
            .all(&self.conn)
            .await
            .map_err(db_err)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let items = rows
            .into_iter()
            .map(wait_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = more
            .then(|| items.last().map(|w| (w.state.created_at, w.state.key.id)))
            .flatten();
        Ok(Page { items, next })
    }

    async fn expire_buffered(&self, now: Timestamp) -> Result<u64, StoreError> {
        let tx = self.conn.begin().await.map_err(db_err)?;
        let expired = early_events::Entity::find()
            .filter(early_events::Column::Status.eq("pending"))
            .filter(early_events::Column::ExpiresAt.lte(now.as_millis()))
            .order_by_asc(early_events::Column::Id)
            .limit(1000)
            .all(&tx)
            .await
            .map_err(db_err)?;
        if expired.is_empty() {
            return Ok(0);
        }
        let rows = expired.iter().map(|e| quarantined_events::ActiveModel {
            origin: Set("buffer".to_owned()),
            event_key: Set(Some(e.event_key.clone())),
            correlation_id: Set(Some(e.correlation_id.clone())),
            payload: Set(e.event.clone()),
            reason: Set(format!(
                "no wait registered for correlation id {} within the buffer TTL (received at {} ms, expired at {} ms)",
                e.correlation_id, e.received_at, e.expires_at
            )),
            quarantined_at: Set(now.as_millis()),
            ..Default::default()
        });
        quarantined_events::Entity::insert_many(rows)
            .exec_without_returning(&tx)
            .await
            .map_err(db_err)?;
        let result = early_events::Entity::update_many()
            .col_expr(early_events::Column::Status, Expr::value("expired"))
            .col_expr(
                early_events::Column::ResolvedAt,
                Expr::value(now.as_millis()),
            )
            .filter(early_events::Column::Id.is_in(expired.iter().map(|e| e.id)))
            .exec(&tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(result.rows_affected)
    }

    async fn kafka_topics(&self) -> Result<Vec<TopicFields>, StoreError> {
        let rows = kafka_topics::Entity::find()
            .order_by_asc(kafka_topics::Column::Topic)
            .all(&self.conn)
            .await
            .map_err(db_err)?;
        rows.into_iter()
            .map(|row| {
                let path = |raw: String| {
                    FieldPath::parse(raw).map_err(|e| {
                        StoreError::Other(format!("corrupt field path in kafka_topics: {e}"))
                    })
                };
                Ok(TopicFields {
                    correlation_field: path(row.correlation_field)?,
                    execution_field: path(row.execution_field)?,
                    topic: row.topic,
                })
            })
            .collect()
    }

    async fn quarantine(&self, event: &Quarantined) -> Result<(), StoreError> {
        quarantined_events::Entity::insert(quarantined_events::ActiveModel {
            origin: Set(event.origin.clone()),
            event_key: Set(event.event_key.clone()),
            correlation_id: Set(event.correlation_id.clone()),
            payload: Set(event.payload.clone()),
            reason: Set(event.reason.clone()),
            quarantined_at: Set(event.at.as_millis()),
            ..Default::default()
        })
        .exec_without_returning(&self.conn)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn quarantined(&self, limit: u32) -> Result<Vec<Quarantined>, StoreError> {
        let rows = quarantined_events::Entity::find()
            .order_by_desc(quarantined_events::Column::Id)
            .limit(u64::from(limit))
            .all(&self.conn)
            .await
            .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|row| Quarantined {
                origin: row.origin,
                event_key: row.event_key,
                correlation_id: row.correlation_id,
                payload: row.payload,
                reason: row.reason,
                at: Timestamp::from_millis(row.quarantined_at),
            })
            .collect())
    }

    async fn claim_api_calls(
        &self,
        owner: &str,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ApiCallRecord>, StoreError> {
        let backend = self.backend();
        let until = now.plus(lease).as_millis();
        let lock = if backend == DbBackend::Postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE api_calls SET lease_owner = {p1}, lease_until = {p2}, attempts = attempts + 1, updated_at = {p3} \
             WHERE wait_id IN (SELECT wait_id FROM api_calls \
             WHERE status = 'pending' AND next_attempt_at <= {p3} AND (lease_until IS NULL OR lease_until <= {p3}) \
             ORDER BY next_attempt_at LIMIT {p4} {lock}) RETURNING *",
            p1 = ph(backend, 1),
            p2 = ph(backend, 2),
            p3 = ph(backend, 3),
            p4 = ph(backend, 4),
        );
        let values: Vec<Value> = vec![
            owner.into(),
            until.into(),
            now.as_millis().into(),
            i64::from(limit).into(),
        ];
        let rows = self
            .conn
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await
            .map_err(db_err)?;
        let mut calls = Vec::new();
        for row in &rows {
            let row = api_calls::Model::from_query_result(row, "").map_err(db_err)?;
            match serde_json::from_str::<StoredCall>(&row.request) {
                Ok(stored) => calls.push(ApiCallRecord {
                    wait_id: WaitId::from_uuid(row.wait_id),
                    tenant: stored.tenant,
                    correlation_id: stored.correlation_id,
                    execution_id: stored.execution_id,
                    request: stored.request,
                    attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
                }),
                Err(e) => {
                    tracing::error!(wait_id = %row.wait_id, error = %e, "cannot read an api call from the outbox; skipping it")
                }
            }
        }
        Ok(calls)
    }

    async fn finish_api_call(&self, wait_id: WaitId, now: Timestamp) -> Result<(), StoreError> {
        self.settle_api_call(wait_id, "done", None, None, now).await
    }

    async fn retry_api_call(
        &self,
        wait_id: WaitId,
        next_attempt_at: Timestamp,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.settle_api_call(wait_id, "pending", Some(next_attempt_at), Some(error), now)
            .await
    }

    async fn fail_api_call(
        &self,
        wait_id: WaitId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.settle_api_call(wait_id, "failed", None, Some(error), now)
            .await
    }

    async fn claim_resumes(
        &self,
        owner: &str,
        tenant: Option<&TenantId>,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ResumeRecord>, StoreError> {
        let backend = self.backend();
        let until = now.plus(lease).as_millis();
        let mut values: Vec<Value> = vec![owner.into(), until.into(), now.as_millis().into()];
        let tenant_clause = match tenant {
            Some(t) => {
                values.push(t.as_str().into());
                format!("AND tenant_id = {}", ph(backend, values.len()))
            }
            None => String::new(),
        };
        values.push(i64::from(limit).into());
        let lock = if backend == DbBackend::Postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE resume_outbox SET lease_owner = {p1}, lease_until = {p2}, attempts = attempts + 1 \
             WHERE resume_id IN (SELECT resume_id FROM resume_outbox \
             WHERE acked_at IS NULL AND (lease_until IS NULL OR lease_until <= {p3}) {tenant_clause} \
             ORDER BY created_at LIMIT {pl} {lock}) RETURNING *",
            p1 = ph(backend, 1),
            p2 = ph(backend, 2),
            p3 = ph(backend, 3),
            pl = ph(backend, values.len()),
        );
        let rows = self
            .lease_conn
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await
            .map_err(db_err)?;
        let mut claimed = rows
            .iter()
            .map(|row| resume_outbox::Model::from_query_result(row, "").map_err(db_err))
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|r| r.created_at);
        // One unreadable row must not hold back the others leased with it; it stays leased
        // (and comes back after the lease) while the error is logged.
        Ok(claimed
            .into_iter()
            .filter_map(|row| {
                let resume_id = row.resume_id;
                resume_from_row(row)
                    .inspect_err(|e| tracing::error!(%resume_id, error = %e, "cannot read a resume from the outbox; skipping it"))
                    .ok()
            })
            .collect())
    }

    async fn ack_resumes(
        &self,
        resume_ids: &[uuid::Uuid],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        if resume_ids.is_empty() {
            return Ok(0);
        }
        if self.backend() == DbBackend::Postgres {
            // One statement shape whatever the number of acks (an `IN` list of parameters is
            // a new prepared statement for every length).
            let result = self
                .lease_conn
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE resume_outbox SET acked_at = $1 \
                     WHERE resume_id IN (SELECT value::uuid FROM json_array_elements_text($2::json)) \
                       AND acked_at IS NULL",
                    [now.as_millis().into(), json(&resume_ids)?.into()],
                ))
                .await
                .map_err(db_err)?;
            return Ok(result.rows_affected());
        }
        let result = resume_outbox::Entity::update_many()
            .col_expr(resume_outbox::Column::AckedAt, Expr::value(now.as_millis()))
            .filter(resume_outbox::Column::ResumeId.is_in(resume_ids.iter().copied()))
            .filter(resume_outbox::Column::AckedAt.is_null())
            .exec(&self.conn)
            .await
            .map_err(db_err)?;
        Ok(result.rows_affected)
    }

    async fn release_resumes(&self, owner: &str) -> Result<u64, StoreError> {
        let result = resume_outbox::Entity::update_many()
            .col_expr(
                resume_outbox::Column::LeaseUntil,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(
                resume_outbox::Column::LeaseOwner,
                Expr::value(Option::<String>::None),
            )
            .filter(resume_outbox::Column::LeaseOwner.eq(owner))
            .filter(resume_outbox::Column::AckedAt.is_null())
            .exec(&self.conn)
            .await
            .map_err(db_err)?;
        if result.rows_affected > 0 {
            self.signal.notify_local();
            if self.backend() == DbBackend::Postgres {
                // Streams on other instances may take them at once, too.
                self.conn
                    .execute_unprepared(&self.signal.notify_statement())
                    .await
                    .map_err(db_err)?;
            }
        }
        Ok(result.rows_affected)
    }
}

async fn find_wait(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    correlation_id: &CorrelationId,
) -> Result<Option<StoredWait>, StoreError> {
    waits::Entity::find()
        .filter(waits::Column::TenantId.eq(tenant.as_str()))
        .filter(waits::Column::CorrelationId.eq(correlation_id.as_str()))
        .one(conn)
        .await
        .map_err(db_err)?
        .map(wait_from_row)
        .transpose()
}

/// A transaction of [`SqlStore`].
#[derive(Debug)]
pub struct SqlTx {
    tx: DatabaseTransaction,
    signal: SqlResumeSignal,
    wrote_resume: bool,
}

impl SqlTx {
    fn backend(&self) -> DbBackend {
        self.tx.get_database_backend()
    }
}

#[async_trait]
impl StoreTx for SqlTx {
    async fn lock_correlation(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<(), StoreError> {
        // SQLite runs one writer at a time (one pooled connection), so only PostgreSQL needs a lock.
        if self.backend() == DbBackend::Postgres {
            let key = correlation_lock_key(tenant.as_str(), correlation_id.as_str());
            self.tx
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    [key.into()],
                ))
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    async fn find_by_idempotency(
        &mut self,
        tenant: &TenantId,
        execution_id: &ExecutionId,
        node_id: &NodeId,
        idempotency_key: &str,
    ) -> Result<Option<StoredWait>, StoreError> {
        waits::Entity::find()
            .filter(waits::Column::TenantId.eq(tenant.as_str()))
            .filter(waits::Column::ExecutionId.eq(execution_id.as_str()))
            .filter(waits::Column::NodeId.eq(node_id.as_str()))
            .filter(waits::Column::IdempotencyKey.eq(idempotency_key))
            .one(&self.tx)
            .await
            .map_err(db_err)?
            .map(wait_from_row)
            .transpose()
    }

    async fn find_wait(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<Option<StoredWait>, StoreError> {
        find_wait(&self.tx, tenant, correlation_id).await
    }

    async fn insert_wait(&mut self, wait: &StoredWait) -> Result<(), StoreError> {
        waits::Entity::insert(wait_to_row(wait)?)
            .exec_without_returning(&self.tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn update_wait(
        &mut self,
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
            .exec(&self.tx)
            .await
            .map_err(db_err)?;
        Ok(result.rows_affected == 1)
    }

    async fn claim_due_waits(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredWait>, StoreError> {
        let mut select = waits::Entity::find()
            .filter(waits::Column::DecidedAt.is_null())
            .filter(waits::Column::Deadline.lte(now.as_millis()))
            .order_by_asc(waits::Column::Deadline)
            .limit(u64::from(limit));
        if self.backend() == DbBackend::Postgres {
            select = select.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        select
            .all(&self.tx)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(wait_from_row)
            .collect()
    }

    async fn record_processed(
        &mut self,
        wait_id: WaitId,
        key: &EventKey,
        source: &SourceName,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let row = processed_events::ActiveModel {
            wait_id: Set(wait_id.as_uuid()),
            event_key: Set(key.to_string()),
            source: Set(source.to_string()),
            processed_at: Set(now.as_millis()),
        };
        let inserted = processed_events::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    processed_events::Column::WaitId,
                    processed_events::Column::EventKey,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&self.tx)
            .await
            .map_err(db_err)?;
        Ok(inserted == 1)
    }

    async fn pending_buffered(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
        now: Timestamp,
    ) -> Result<Vec<BufferedEvent>, StoreError> {
        let rows = early_events::Entity::find()
            .filter(early_events::Column::TenantId.eq(tenant.as_str()))
            .filter(early_events::Column::CorrelationId.eq(correlation_id.as_str()))
            .filter(early_events::Column::Status.eq("pending"))
            .filter(early_events::Column::ExpiresAt.gt(now.as_millis()))
            .order_by_asc(early_events::Column::Id)
            .all(&self.tx)
            .await
            .map_err(db_err)?;
        rows.into_iter()
            .map(|row| {
                let event: IncomingEvent = serde_json::from_str(&row.event).map_err(|e| {
                    StoreError::Other(format!("corrupt buffered event {}: {e}", row.id))
                })?;
                Ok(BufferedEvent {
                    id: row.id,
                    event,
                    expires_at: Timestamp::from_millis(row.expires_at),
                })
            })
            .collect()
    }

    async fn mark_buffered_applied(
        &mut self,
        ids: &[i64],
        wait_id: WaitId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        early_events::Entity::update_many()
            .col_expr(early_events::Column::Status, Expr::value("applied"))
            .col_expr(early_events::Column::WaitId, Expr::value(wait_id.as_uuid()))
            .col_expr(
                early_events::Column::ResolvedAt,
                Expr::value(now.as_millis()),
            )
            .filter(early_events::Column::Id.is_in(ids.iter().copied()))
            .exec(&self.tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn buffer_event(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
        event: &IncomingEvent,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let row = early_events::ActiveModel {
            tenant_id: Set(tenant.to_string()),
            correlation_id: Set(correlation_id.to_string()),
            event_key: Set(event.key.to_string()),
            event: Set(json(event)?),
            received_at: Set(event.received_at.as_millis()),
            expires_at: Set(expires_at.as_millis()),
            status: Set("pending".to_owned()),
            wait_id: Set(None),
            resolved_at: Set(None),
            ..Default::default()
        };
        // A redelivery of a pending event changes nothing; one of an event that expired (or is
        // past its TTL) buffers it again, so it is not lost.
        let now = event.received_at.as_millis();
        let revive = {
            use sea_orm::sea_query::ExprTrait;
            Expr::col((early_events::Entity, early_events::Column::Status))
                .eq("expired")
                .or(Expr::col((early_events::Entity, early_events::Column::ExpiresAt)).lte(now))
        };
        let inserted = early_events::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    early_events::Column::TenantId,
                    early_events::Column::CorrelationId,
                    early_events::Column::EventKey,
                ])
                .update_columns([
                    early_events::Column::Event,
                    early_events::Column::ReceivedAt,
                    early_events::Column::ExpiresAt,
                    early_events::Column::Status,
                    early_events::Column::ResolvedAt,
                ])
                .action_and_where(revive)
                .to_owned(),
            )
            .exec_without_returning(&self.tx)
            .await
            .map_err(db_err)?;
        Ok(inserted == 1)
    }

    async fn remember_topic(
        &mut self,
        topic: &TopicFields,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        kafka_topics::Entity::insert(kafka_topics::ActiveModel {
            topic: Set(topic.topic.clone()),
            correlation_field: Set(topic.correlation_field.to_string()),
            execution_field: Set(topic.execution_field.to_string()),
            first_seen_at: Set(now.as_millis()),
        })
        .on_conflict(
            OnConflict::columns([
                kafka_topics::Column::Topic,
                kafka_topics::Column::CorrelationField,
                kafka_topics::Column::ExecutionField,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&self.tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn insert_api_call(
        &mut self,
        call: &ApiCallRecord,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        api_calls::Entity::insert(api_calls::ActiveModel {
            wait_id: Set(call.wait_id.as_uuid()),
            request: Set(stored_call_json(call)?),
            status: Set("pending".to_owned()),
            attempts: Set(0),
            next_attempt_at: Set(now.as_millis()),
            lease_owner: Set(None),
            lease_until: Set(None),
            last_error: Set(None),
            created_at: Set(now.as_millis()),
            updated_at: Set(now.as_millis()),
        })
        .exec_without_returning(&self.tx)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn insert_resume(&mut self, resume: &ResumeRecord) -> Result<bool, StoreError> {
        let row = resume_outbox::ActiveModel {
            resume_id: Set(resume.resume_id),
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
            .exec_without_returning(&self.tx)
            .await
            .map_err(db_err)?;
        if inserted == 1 && self.backend() == DbBackend::Postgres {
            // Delivered to every instance's listener when (and only if) this commits.
            self.tx
                .execute_unprepared(&self.signal.notify_statement())
                .await
                .map_err(db_err)?;
        }
        self.wrote_resume |= inserted == 1;
        Ok(inserted == 1)
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(db_err)?;
        if self.wrote_resume {
            self.signal.notify_local();
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use rendezvous_ports::Store;
    use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

    use crate::testing::{Backend, POSTGRES_ADMIN_URL, TestDatabase};
    use crate::{Database, DatabaseConfig};

    /// Every transaction runs at READ COMMITTED even when the database's default is stricter
    /// (the re-check after the correlation lock relies on it), with no `SET TRANSACTION`.
    #[tokio::test]
    async fn transactions_are_read_committed_whatever_the_default() {
        let db = TestDatabase::create(Backend::Postgres).await.unwrap();
        let name = db.url.rsplit('/').next().unwrap();
        let admin = sea_orm::Database::connect(POSTGRES_ADMIN_URL)
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!(
                "ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'"
            ))
            .await
            .unwrap();
        let _ = admin.close().await;
        let database = Database::connect(&DatabaseConfig::new(&db.url))
            .await
            .unwrap();
        let tx = database.store().begin().await.unwrap();
        let row = tx
            .tx
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SHOW transaction_isolation",
            ))
            .await
            .unwrap()
            .unwrap();
        let level: String = row.try_get("", "transaction_isolation").unwrap();
        assert_eq!(level, "read committed");
        drop(tx);
        database.close().await;
    }

    /// Waits, events and resumes are written with durable commits; only leases and acks (soft
    /// state under at-least-once delivery) commit without waiting for the WAL flush.
    #[tokio::test]
    async fn only_leases_and_acks_commit_asynchronously() {
        let db = TestDatabase::create(Backend::Postgres).await.unwrap();
        let database = Database::connect(&DatabaseConfig::new(&db.url))
            .await
            .unwrap();
        let store = database.store();
        let setting = |conn: DatabaseConnection| async move {
            let row = conn
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SHOW synchronous_commit",
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<String>("", "synchronous_commit").unwrap()
        };
        assert_eq!(setting(store.conn.clone()).await, "on");
        assert_eq!(setting(store.lease_conn()).await, "off");
        database.close().await;
    }
}
