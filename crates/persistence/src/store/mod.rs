//! The SQL implementation of the store port, on PostgreSQL and SQLite through SeaORM:
//! [`SqlStore`], whose methods hand each request to the module of its concern — waits, the
//! early-event buffer, the inbox, the API-call outbox, the resume outbox, Kafka topics and
//! quarantine, retention — and to the group commit of its backend (`crate::postgres`,
//! `crate::sqlite`).

mod buffer;
mod calls;
mod events;
mod inbox;
mod resumes;
mod retention;
mod tx;
mod unreadable;
mod waits;

use std::time::Duration;

use async_trait::async_trait;
use rendezvous_domain::{CorrelationId, LeaseOwner, ResumeId, TenantId, Timestamp, WaitId};
use rendezvous_ports::{
    ApiCallRecord, BufferedSummary, ChangeOutcome, FreshWait, Page, PurgeCounts, Quarantined,
    QuarantinedRow, Redelivered, ResumeRecord, Store, StoreError, StoredWait, TenantScope,
    TopicFields, WaitChange, WaitQuery,
};
use sea_orm::DatabaseConnection;

pub use self::tx::SqlTx;
pub(crate) use self::tx::correlation_lock_key;
pub(crate) use self::waits::one as read_found;
use crate::signal::SqlResumeSignal;

/// The store on a SeaORM connection (PostgreSQL or SQLite).
#[derive(Debug, Clone)]
pub struct SqlStore {
    conn: DatabaseConnection,
    /// Resume leases and acks: on PostgreSQL a pool with asynchronous commit (see
    /// `Database::connect`); on SQLite the one connection.
    lease_conn: DatabaseConnection,
    signal: SqlResumeSignal,
    /// Event changes and registrations (and on PostgreSQL lookups) coalesced across concurrent
    /// requests.
    group_commit: GroupCommit,
}

/// The group commit of a store's backend.
#[derive(Debug, Clone)]
enum GroupCommit {
    /// Shared statements (`crate::postgres`).
    Postgres(crate::postgres::Batchers),
    /// Shared transactions (`crate::sqlite`).
    Sqlite(crate::sqlite::Batchers),
}

impl SqlStore {
    /// Must run inside a Tokio runtime: on PostgreSQL it starts the batching tasks.
    pub(crate) fn new(
        conn: DatabaseConnection,
        lease_conn: DatabaseConnection,
        signal: SqlResumeSignal,
    ) -> Self {
        let group_commit = match crate::postgres::Batchers::for_connection(&conn, &signal) {
            Some(batchers) => GroupCommit::Postgres(batchers),
            None => GroupCommit::Sqlite(
                crate::sqlite::Batchers::for_connection(&conn, &signal)
                    .expect("a SeaORM connection of this store is PostgreSQL or SQLite"),
            ),
        };
        Self {
            conn,
            lease_conn,
            signal,
            group_commit,
        }
    }

    /// The connection of resume leases and acks (closed with the database).
    pub(crate) fn lease_conn(&self) -> DatabaseConnection {
        self.lease_conn.clone()
    }
}

#[async_trait]
impl Store for SqlStore {
    type Tx = SqlTx;

    async fn begin(&self) -> Result<SqlTx, StoreError> {
        SqlTx::begin(&self.conn, &self.signal).await
    }

    /// Shared with the changes other requests make at the same time: on PostgreSQL one
    /// statement committed on its own, one round trip for many events under load; on SQLite
    /// one transaction and one commit for many changes.
    async fn apply_change(&self, change: WaitChange<'_>) -> Result<ChangeOutcome, StoreError> {
        match &self.group_commit {
            GroupCommit::Postgres(batchers) => batchers.apply_change(change).await,
            GroupCommit::Sqlite(batchers) => batchers.apply_change(change).await,
        }
    }

    /// Shared with the registrations other requests make at the same time: on PostgreSQL one
    /// transaction of two statements for the whole batch; on SQLite one transaction and one
    /// commit for many registrations.
    async fn insert_fresh_wait(&self, fresh: FreshWait<'_>) -> Result<bool, StoreError> {
        match &self.group_commit {
            GroupCommit::Postgres(batchers) => batchers.insert_fresh_wait(fresh).await,
            GroupCommit::Sqlite(batchers) => batchers.insert_fresh_wait(fresh).await,
        }
    }

    async fn get_wait(&self, id: WaitId) -> Result<Option<StoredWait>, StoreError> {
        waits::get(&self.conn, &self.signal, id).await
    }

    async fn find_wait(
        &self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<Option<StoredWait>, StoreError> {
        match &self.group_commit {
            GroupCommit::Postgres(batchers) => batchers.find_wait(tenant, correlation_id).await,
            GroupCommit::Sqlite(_) => {
                waits::find(&self.conn, &self.signal, tenant, correlation_id).await
            }
        }
    }

    async fn list_waits(&self, query: &WaitQuery) -> Result<Page<StoredWait>, StoreError> {
        waits::list(&self.conn, &self.signal, query).await
    }

    async fn expire_buffered(&self, now: Timestamp) -> Result<u64, StoreError> {
        buffer::expire(&self.conn, now).await
    }

    async fn kafka_topics(&self) -> Result<Vec<TopicFields>, StoreError> {
        events::kafka_topics(&self.conn, unreadable::wall_clock()).await
    }

    async fn quarantine(&self, event: &Quarantined) -> Result<(), StoreError> {
        events::quarantine(&self.conn, event).await
    }

    async fn quarantined(&self, limit: u32) -> Result<Vec<QuarantinedRow>, StoreError> {
        events::quarantined(&self.conn, limit).await
    }

    async fn quarantined_event(&self, id: i64) -> Result<Option<QuarantinedRow>, StoreError> {
        events::quarantined_event(&self.conn, id).await
    }

    async fn settle_replay(&self, id: i64, refused: Option<&str>) -> Result<bool, StoreError> {
        events::settle_replay(&self.conn, id, refused).await
    }

    async fn list_buffered(
        &self,
        tenants: &TenantScope,
        limit: u32,
    ) -> Result<Vec<BufferedSummary>, StoreError> {
        buffer::list(&self.conn, tenants, limit).await
    }

    async fn redeliver_resume(&self, wait_id: WaitId) -> Result<Option<Redelivered>, StoreError> {
        resumes::redeliver(&self.conn, &self.signal, wait_id).await
    }

    async fn claim_api_calls(
        &self,
        owner: &LeaseOwner,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ApiCallRecord>, StoreError> {
        calls::claim(&self.conn, owner.as_str(), now, lease, limit).await
    }

    async fn finish_api_call(&self, wait_id: WaitId, now: Timestamp) -> Result<(), StoreError> {
        calls::finish(&self.conn, wait_id, now).await
    }

    async fn defer_api_calls(
        &self,
        owner: &LeaseOwner,
        wait_ids: &[WaitId],
        next_attempt_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        calls::defer(&self.conn, owner.as_str(), wait_ids, next_attempt_at, now).await
    }

    async fn retry_api_call(
        &self,
        wait_id: WaitId,
        next_attempt_at: Timestamp,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        calls::retry(&self.conn, wait_id, next_attempt_at, error, now).await
    }

    async fn fail_api_call(
        &self,
        wait_id: WaitId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        calls::fail(&self.conn, wait_id, error, now).await
    }

    async fn claim_resumes(
        &self,
        owner: &LeaseOwner,
        tenants: &TenantScope,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ResumeRecord>, StoreError> {
        resumes::claim(&self.lease_conn, owner.as_str(), tenants, now, lease, limit).await
    }

    async fn ack_resumes(
        &self,
        resume_ids: &[ResumeId],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        resumes::ack(&self.lease_conn, resume_ids, now).await
    }

    async fn release_resumes(&self, owner: &LeaseOwner) -> Result<u64, StoreError> {
        resumes::release(&self.conn, &self.signal, owner.as_str()).await
    }

    async fn purge(&self, before: Timestamp, batch: u32) -> Result<PurgeCounts, StoreError> {
        retention::purge(&self.conn, before, batch).await
    }
}
