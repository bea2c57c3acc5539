//! [`SqlTx`], a transaction of the SQL store: how one begins and commits, the correlation lock,
//! and its [`StoreTx`] steps handed to the module of their concern.

use async_trait::async_trait;
use rendezvous_domain::{
    CorrelationId, EventKey, ExecutionId, IncomingEvent, NodeId, SourceName, TenantId, Timestamp,
    WaitId,
};
use rendezvous_ports::{
    ApiCallRecord, BufferedEvent, ResumeRecord, StoreError, StoreTx, StoredWait, TopicFields,
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};

use super::{buffer, calls, events, inbox, resumes, waits};
use crate::rows::db_err;
use crate::signal::SqlResumeSignal;

/// A transaction of [`SqlStore`](super::SqlStore).
#[derive(Debug)]
pub struct SqlTx {
    tx: DatabaseTransaction,
    signal: SqlResumeSignal,
    /// The tenants of the resumes written: their streams are woken after the commit.
    resume_tenants: Vec<String>,
}

impl SqlTx {
    /// Begins one. SQLite: the write lock is taken at `BEGIN`, so a transaction never fails
    /// half-way when it upgrades from reading to writing. PostgreSQL: READ COMMITTED, set on
    /// every connection (`Database::connect`), not by a statement here.
    pub(crate) async fn begin(
        conn: &DatabaseConnection,
        signal: &SqlResumeSignal,
    ) -> Result<Self, StoreError> {
        let sqlite = conn.get_database_backend() == DbBackend::Sqlite;
        let options = TransactionOptions {
            sqlite_transaction_mode: sqlite.then_some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        Ok(Self {
            tx: conn.begin_with_options(options).await.map_err(db_err)?,
            signal: signal.clone(),
            resume_tenants: Vec::new(),
        })
    }

    /// Rolls back.
    pub(crate) async fn roll_back(self) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(db_err)
    }

    /// The database transaction: for reads of the SQLite group commit, and for tests that ask
    /// the server about it.
    pub(crate) fn transaction(&self) -> &DatabaseTransaction {
        &self.tx
    }
}

/// The key of a correlation id's advisory lock. Ids cannot hold control characters, so the
/// unit separator keeps keys unambiguous.
pub(crate) fn correlation_lock_key(tenant: &str, correlation_id: &str) -> String {
    format!("{tenant}\u{1f}{correlation_id}")
}

#[async_trait]
impl StoreTx for SqlTx {
    async fn lock_correlation(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<(), StoreError> {
        // SQLite runs one writer at a time (one pooled connection), so only PostgreSQL needs a lock.
        if self.tx.get_database_backend() == DbBackend::Postgres {
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
        waits::find_by_idempotency(
            &self.tx,
            &self.signal,
            tenant,
            execution_id,
            node_id,
            idempotency_key,
        )
        .await
    }

    async fn find_wait(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
    ) -> Result<Option<StoredWait>, StoreError> {
        waits::find(&self.tx, &self.signal, tenant, correlation_id).await
    }

    async fn insert_wait(&mut self, wait: &StoredWait) -> Result<(), StoreError> {
        waits::insert(&self.tx, wait).await
    }

    async fn update_wait(
        &mut self,
        wait: &StoredWait,
        expected_version: i64,
    ) -> Result<bool, StoreError> {
        waits::update(&self.tx, wait, expected_version).await
    }

    async fn claim_due_waits(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredWait>, StoreError> {
        waits::claim_due(&self.tx, &self.signal, now, limit).await
    }

    async fn record_processed(
        &mut self,
        wait_id: WaitId,
        key: &EventKey,
        source: &SourceName,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        inbox::record_processed(&self.tx, wait_id, key, source, now).await
    }

    async fn pending_buffered(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
        now: Timestamp,
    ) -> Result<Vec<BufferedEvent>, StoreError> {
        buffer::pending(&self.tx, tenant, correlation_id, now).await
    }

    async fn mark_buffered_applied(
        &mut self,
        ids: &[i64],
        wait_id: WaitId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        buffer::mark_applied(&self.tx, ids, wait_id, now).await
    }

    async fn buffer_event(
        &mut self,
        tenant: &TenantId,
        correlation_id: &CorrelationId,
        event: &IncomingEvent,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        buffer::buffer_event(&self.tx, tenant, correlation_id, event, expires_at).await
    }

    async fn remember_topic(
        &mut self,
        topic: &TopicFields,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        events::remember_topic(&self.tx, topic, now).await
    }

    async fn insert_api_call(
        &mut self,
        call: &ApiCallRecord,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        calls::insert(&self.tx, call, now).await
    }

    async fn insert_resume(&mut self, resume: &ResumeRecord) -> Result<bool, StoreError> {
        let inserted = resumes::insert(&self.tx, resume).await?;
        if inserted {
            self.resume_tenants.push(resume.tenant.to_string());
        }
        Ok(inserted)
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(db_err)?;
        if !self.resume_tenants.is_empty() {
            self.signal
                .committed(self.resume_tenants.iter().map(String::as_str));
        }
        Ok(())
    }
}
