//! The queues of the PostgreSQL group commit: one [`Batcher`] per kind of request (changes,
//! lookups, fresh registrations), each running its batches with the statement of its module.
//! The conformance suite is the contract: what a batch does for each of its requests is what
//! `rendezvous_ports::apply_change_in_tx` / `insert_fresh_wait_in_tx` (or a plain lookup) do
//! alone, and only `tests/conformance` ties them together.

use rendezvous_domain::{CorrelationId, TenantId};
use rendezvous_ports::{ChangeOutcome, FreshWait, StoreError, StoredWait, WaitChange};
use sea_orm::{DatabaseConnection, DbBackend};

use super::changes::{ChangeRow, apply_changes};
use super::finds::{FindRow, find_waits};
use super::fresh::{FreshRow, insert_fresh_waits};
use crate::batch::Batcher;
use crate::signal::SqlResumeSignal;

/// Most requests one batch statement carries.
const MAX_BATCH: usize = 128;

/// Batch statements of one kind running at once (each holds a pooled connection). One is
/// fastest: requests that wait for the running batch make the next one bigger, and a bigger
/// batch costs the database little more than a small one (measurements: `docs/performance.md`,
/// "One batch in flight per kind"). What a batch statement can wait for is brief: row and
/// unique-index locks of the service's own short transactions (the sweeper, a cancel, a
/// full-path registration).
const BATCHES_IN_FLIGHT: usize = 1;

/// The PostgreSQL batchers of a store.
#[derive(Debug, Clone)]
pub(crate) struct Batchers {
    changes: Batcher<ChangeRow, ChangeOutcome>,
    finds: Batcher<FindRow, Option<StoredWait>>,
    /// Whether each registration was inserted.
    fresh: Batcher<FreshRow, bool>,
}

impl Batchers {
    /// The batchers of a connection, started (inside a Tokio runtime); `None` unless it is
    /// PostgreSQL.
    pub(crate) fn for_connection(
        conn: &DatabaseConnection,
        signal: &SqlResumeSignal,
    ) -> Option<Self> {
        (conn.get_database_backend() == DbBackend::Postgres).then(|| Self::spawn(conn, signal))
    }

    fn spawn(conn: &DatabaseConnection, signal: &SqlResumeSignal) -> Self {
        let (c, s) = (conn.clone(), signal.clone());
        let changes = Batcher::spawn("changes", MAX_BATCH, BATCHES_IN_FLIGHT, move |rows| {
            let (c, s) = (c.clone(), s.clone());
            async move { apply_changes(&c, &s, rows).await }
        });
        let (c, s) = (conn.clone(), signal.clone());
        let finds = Batcher::spawn("finds", MAX_BATCH, BATCHES_IN_FLIGHT, move |rows| {
            let (c, s) = (c.clone(), s.clone());
            async move { find_waits(&c, &s, rows).await }
        });
        let (c, s) = (conn.clone(), signal.clone());
        let fresh = Batcher::spawn("fresh", MAX_BATCH, BATCHES_IN_FLIGHT, move |rows| {
            let (c, s) = (c.clone(), s.clone());
            async move { insert_fresh_waits(&c, &s, rows).await }
        });
        Self {
            changes,
            finds,
            fresh,
        }
    }

    /// [`Store::apply_change`](rendezvous_ports::Store::apply_change) in the next batch of
    /// changes.
    pub(crate) async fn apply_change(
        &self,
        change: WaitChange<'_>,
    ) -> Result<ChangeOutcome, StoreError> {
        self.changes.call(ChangeRow::of(change)?).await
    }

    /// [`Store::insert_fresh_wait`](rendezvous_ports::Store::insert_fresh_wait) in the next
    /// batch of registrations.
    pub(crate) async fn insert_fresh_wait(&self, fresh: FreshWait<'_>) -> Result<bool, StoreError> {
        self.fresh.call(FreshRow::of(fresh)?).await
    }

    /// [`Store::find_wait`](rendezvous_ports::Store::find_wait) in the next batch of lookups.
    pub(crate) async fn find_wait(
        &self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<Option<StoredWait>, StoreError> {
        self.finds
            .call(FindRow {
                tenant_id: tenant.to_string(),
                correlation_id: correlation_id.to_string(),
            })
            .await
    }
}
