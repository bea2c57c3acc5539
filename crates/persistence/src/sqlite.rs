//! SQLite group commit: [`Store::apply_change`] and [`Store::insert_fresh_wait`] requests made
//! at the same time share one transaction, and so one WAL write and one `fsync`, each request
//! still getting exactly the outcome it would get alone.
//!
//! SQLite has one writer (the store keeps one connection), so requests queue anyway; without
//! this each of them was a transaction of its own, `BEGIN IMMEDIATE` to a synchronous commit.
//! Under light load a request is a batch of one and runs at once (`crate::batch`). The steps
//! are the port's own (`rendezvous_ports::apply_change_steps`, `insert_fresh_wait_steps`), so
//! the conformance suite holds this path to exactly what the transactional one does; a refusal
//! writes nothing (a change reads its wait's version and inbox first), so no request needs a
//! savepoint. Every statement is a round trip to sqlx's SQLite thread, the cost that remains
//! (docs/performance.md), so the batch adds none it can avoid.
//!
//! [`Store::apply_change`]: rendezvous_ports::Store::apply_change
//! [`Store::insert_fresh_wait`]: rendezvous_ports::Store::insert_fresh_wait

use async_trait::async_trait;
use rendezvous_domain::{EventKey, SourceName};
use rendezvous_ports::{
    ApiCallRecord, ChangeOutcome, FreshWait, ResumeRecord, StoreError, StoreTx, StoredWait,
    WaitChange, apply_change_steps, insert_fresh_wait_steps,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::batch::Batcher;
use crate::rows::db_err;
use crate::signal::SqlResumeSignal;
use crate::store::SqlTx;

/// Most requests one transaction carries. A batch holds the only connection while it runs, so
/// it is kept short enough that reads queued behind it wait little.
const MAX_BATCH: usize = 64;

/// The SQLite batchers of a store.
#[derive(Debug, Clone)]
pub(crate) struct Batchers {
    changes: Batcher<OwnedChange, ChangeOutcome>,
    fresh: Batcher<OwnedFresh, bool>,
}

impl Batchers {
    /// The batchers of a connection, started (inside a Tokio runtime); `None` unless it is
    /// SQLite.
    pub(crate) fn for_connection(
        conn: &DatabaseConnection,
        signal: &SqlResumeSignal,
    ) -> Option<Self> {
        (conn.get_database_backend() == DbBackend::Sqlite).then(|| Self {
            changes: spawn("changes", conn, signal),
            fresh: spawn("fresh", conn, signal),
        })
    }

    /// [`Store::apply_change`](rendezvous_ports::Store::apply_change) in the next transaction
    /// of changes.
    pub(crate) async fn apply_change(
        &self,
        change: WaitChange<'_>,
    ) -> Result<ChangeOutcome, StoreError> {
        self.changes.call(OwnedChange::of(change)).await
    }

    /// [`Store::insert_fresh_wait`](rendezvous_ports::Store::insert_fresh_wait) in the next
    /// transaction of registrations.
    pub(crate) async fn insert_fresh_wait(&self, fresh: FreshWait<'_>) -> Result<bool, StoreError> {
        self.fresh.call(OwnedFresh::of(fresh)).await
    }
}

/// A batcher running its batches with [`in_one_transaction`], one at a time (one connection).
fn spawn<R: Request>(
    statement: &'static str,
    conn: &DatabaseConnection,
    signal: &SqlResumeSignal,
) -> Batcher<R, R::Outcome> {
    let (conn, signal) = (conn.clone(), signal.clone());
    Batcher::spawn(statement, MAX_BATCH, 1, move |requests| {
        let (conn, signal) = (conn.clone(), signal.clone());
        async move { in_one_transaction(&conn, &signal, requests).await }
    })
}

/// A request whose steps run in a shared transaction.
#[async_trait]
trait Request: Send + Sync + 'static {
    type Outcome: Send + 'static;

    /// Runs the steps; returns the outcome and whether they wrote anything. Writing is allowed
    /// only on the way to an outcome that keeps it: a refusal must have written nothing.
    async fn steps(&self, tx: &mut SqlTx) -> Result<(Self::Outcome, bool), StoreError>;
}

/// Runs every request in one transaction and commits once; only then are the streams woken.
/// A request that fails (nothing else can leave half its writes behind) rolls the batch back,
/// and then each request runs again in a transaction of its own, so that one bad request
/// cannot fail the others. A commit that fails fails every request: none was written.
async fn in_one_transaction<R: Request>(
    conn: &DatabaseConnection,
    signal: &SqlResumeSignal,
    requests: Vec<R>,
) -> Vec<Result<R::Outcome, StoreError>> {
    let every = |e: StoreError| -> Vec<Result<R::Outcome, StoreError>> {
        requests.iter().map(|_| Err(e.clone())).collect()
    };
    if requests.len() > 1 {
        let mut tx = match SqlTx::begin(conn, signal).await {
            Ok(tx) => tx,
            Err(e) => return every(e),
        };
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in &requests {
            match request.steps(&mut tx).await {
                Ok((outcome, _)) => outcomes.push(outcome),
                Err(e) => {
                    tracing::warn!(error = %e, requests = requests.len(), "a request of a SQLite batch failed; running each on its own");
                    if let Err(e) = tx.roll_back().await {
                        return every(e);
                    }
                    return alone(conn, signal, &requests).await;
                }
            }
        }
        return match tx.commit().await {
            Ok(()) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => every(e),
        };
    }
    alone(conn, signal, &requests).await
}

/// Each request in a transaction of its own, committed when it wrote something.
async fn alone<R: Request>(
    conn: &DatabaseConnection,
    signal: &SqlResumeSignal,
    requests: &[R],
) -> Vec<Result<R::Outcome, StoreError>> {
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        let result = async {
            let mut tx = SqlTx::begin(conn, signal).await?;
            let (outcome, wrote) = request.steps(&mut tx).await?;
            if wrote {
                tx.commit().await?;
            }
            Ok(outcome)
        };
        results.push(result.await);
    }
    results
}

/// A [`WaitChange`] that owns its parts, to wait in the queue.
struct OwnedChange {
    wait: StoredWait,
    expected_version: i64,
    processed: Option<(EventKey, SourceName)>,
    resume: Option<ResumeRecord>,
}

impl OwnedChange {
    fn of(change: WaitChange<'_>) -> Self {
        Self {
            wait: change.wait.clone(),
            expected_version: change.expected_version,
            processed: change.processed.map(|(k, s)| (k.clone(), s.clone())),
            resume: change.resume.cloned(),
        }
    }
}

#[async_trait]
impl Request for OwnedChange {
    type Outcome = ChangeOutcome;

    async fn steps(&self, tx: &mut SqlTx) -> Result<(ChangeOutcome, bool), StoreError> {
        // What the steps would refuse, found before they write: the compare-and-set first,
        // then the inbox, as `apply_change_steps` decides.
        let key = self.processed.as_ref().map(|(k, _)| k.to_string());
        let found = tx
            .transaction()
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "SELECT w.version = ? AS current, \
                   EXISTS (SELECT 1 FROM processed_events p \
                           WHERE p.wait_id = w.id AND p.event_key = ?) AS seen \
                 FROM waits w WHERE w.id = ?",
                [
                    self.expected_version.into(),
                    key.into(),
                    self.wait.state.key.id.as_uuid().into(),
                ],
            ))
            .await
            .map_err(db_err)?;
        let (current, seen) = match found {
            Some(row) => (
                row.try_get::<bool>("", "current").map_err(db_err)?,
                row.try_get::<bool>("", "seen").map_err(db_err)?,
            ),
            None => (false, false),
        };
        if !current {
            return Ok((ChangeOutcome::VersionMoved, false));
        }
        if seen {
            return Ok((ChangeOutcome::AlreadyProcessed, false));
        }
        let change = WaitChange {
            wait: &self.wait,
            expected_version: self.expected_version,
            processed: self.processed.as_ref().map(|(k, s)| (k, s)),
            resume: self.resume.as_ref(),
        };
        match apply_change_steps(tx, change).await? {
            ChangeOutcome::Applied => Ok((ChangeOutcome::Applied, true)),
            // Only another writer in between could make the steps refuse now, and SQLite has
            // one: whatever they wrote must not stay.
            other => Err(StoreError::Other(format!(
                "a change checked in its own transaction was refused ({other:?})"
            ))),
        }
    }
}

/// A [`FreshWait`] that owns its parts, to wait in the queue.
struct OwnedFresh {
    wait: StoredWait,
    call: Option<ApiCallRecord>,
    resume: Option<ResumeRecord>,
}

impl OwnedFresh {
    fn of(fresh: FreshWait<'_>) -> Self {
        Self {
            wait: fresh.wait.clone(),
            call: fresh.call.cloned(),
            resume: fresh.resume.cloned(),
        }
    }
}

#[async_trait]
impl Request for OwnedFresh {
    type Outcome = bool;

    async fn steps(&self, tx: &mut SqlTx) -> Result<(bool, bool), StoreError> {
        let fresh = FreshWait {
            wait: &self.wait,
            call: self.call.as_ref(),
            resume: self.resume.as_ref(),
        };
        // Refused, it wrote nothing: the checks only read, and an insert refused by a unique
        // index is undone by SQLite alone, the transaction going on.
        let inserted = insert_fresh_wait_steps(tx, fresh).await?;
        Ok((inserted, inserted))
    }
}
