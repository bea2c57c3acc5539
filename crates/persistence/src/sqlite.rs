//! SQLite group commit: [`Store::apply_change`] and [`Store::insert_fresh_wait`] requests made
//! at the same time share one transaction, and so one WAL write and one `fsync`, each request
//! in a savepoint of its own so that it still gets exactly the outcome it would get alone.
//!
//! SQLite has one writer (the store keeps one connection), so requests queue anyway; without
//! this each of them was a transaction of its own, `BEGIN IMMEDIATE` to a synchronous commit.
//! Under light load a request is a batch of one and runs at once (`crate::batch`). The steps
//! are the port's own (`rendezvous_ports::apply_change_steps`, `insert_fresh_wait_steps`), so
//! the conformance suite holds this path to exactly what the transactional one does.
//!
//! [`Store::apply_change`]: rendezvous_ports::Store::apply_change
//! [`Store::insert_fresh_wait`]: rendezvous_ports::Store::insert_fresh_wait

use async_trait::async_trait;
use rendezvous_domain::{EventKey, SourceName};
use rendezvous_ports::{
    ApiCallRecord, ChangeOutcome, FreshWait, ResumeRecord, StoreError, StoreTx, StoredWait,
    WaitChange, apply_change_steps, insert_fresh_wait_steps,
};
use sea_orm::{DatabaseConnection, DbBackend};

use crate::batch::Batcher;
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
        (conn.get_database_backend() == DbBackend::Sqlite).then(|| {
            let (c, s) = (conn.clone(), signal.clone());
            // One connection: one batch at a time.
            let changes = Batcher::spawn("changes", MAX_BATCH, 1, move |rows| {
                let (c, s) = (c.clone(), s.clone());
                async move { in_one_transaction(&c, &s, rows).await }
            });
            let (c, s) = (conn.clone(), signal.clone());
            let fresh = Batcher::spawn("fresh", MAX_BATCH, 1, move |rows| {
                let (c, s) = (c.clone(), s.clone());
                async move { in_one_transaction(&c, &s, rows).await }
            });
            Self { changes, fresh }
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

/// A request whose steps run in a savepoint of a shared transaction.
#[async_trait]
trait Request: Send + Sync + 'static {
    type Outcome: Send + 'static;

    /// Runs the steps; returns the outcome and whether what they wrote is to be kept.
    async fn steps(&self, tx: &mut SqlTx) -> Result<(Self::Outcome, bool), StoreError>;
}

/// Runs every request in a savepoint of one transaction: a request's savepoint is released
/// when it is to be kept and rolled back otherwise (an error, a version that moved, a
/// duplicate), then the transaction commits once, and only then are the streams woken. A
/// commit that fails fails every request of the batch: none of them was written.
async fn in_one_transaction<R: Request>(
    conn: &DatabaseConnection,
    signal: &SqlResumeSignal,
    requests: Vec<R>,
) -> Vec<Result<R::Outcome, StoreError>> {
    let every = |e: StoreError| -> Vec<Result<R::Outcome, StoreError>> {
        requests.iter().map(|_| Err(e.clone())).collect()
    };
    let mut outer = match SqlTx::begin(conn, signal).await {
        Ok(tx) => tx,
        Err(e) => return every(e),
    };
    let mut results = Vec::with_capacity(requests.len());
    for request in &requests {
        results.push(in_savepoint(&mut outer, request).await);
    }
    match outer.commit().await {
        Ok(()) => results,
        Err(e) => every(e),
    }
}

/// One request in a savepoint of `outer`: released when its writes are to be kept, rolled
/// back otherwise.
async fn in_savepoint<R: Request>(
    outer: &mut SqlTx,
    request: &R,
) -> Result<R::Outcome, StoreError> {
    let mut savepoint = outer.savepoint().await?;
    match request.steps(&mut savepoint).await {
        Ok((outcome, true)) => {
            savepoint.release_into(outer).await?;
            Ok(outcome)
        }
        Ok((outcome, false)) => {
            savepoint.roll_back().await?;
            Ok(outcome)
        }
        Err(e) => {
            savepoint.roll_back().await?;
            Err(e)
        }
    }
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
        let change = WaitChange {
            wait: &self.wait,
            expected_version: self.expected_version,
            processed: self.processed.as_ref().map(|(k, s)| (k, s)),
            resume: self.resume.as_ref(),
        };
        let outcome = apply_change_steps(tx, change).await?;
        Ok((outcome, outcome == ChangeOutcome::Applied))
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
        let inserted = insert_fresh_wait_steps(tx, fresh).await?;
        Ok((inserted, inserted))
    }
}
