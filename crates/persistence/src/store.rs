//! The SQL implementation of the store port, on PostgreSQL and SQLite through SeaORM.

use std::time::Duration;

use async_trait::async_trait;
use rendezvous_domain::{
    CorrelationId, EventKey, ExecutionId, FieldPath, IncomingEvent, NodeId, SourceName, TenantId,
    Timestamp, WaitId,
};
use rendezvous_ports::{
    ApiCallRecord, BufferedEvent, ChangeOutcome, Page, Quarantined, ResumeRecord, ResumeSignal,
    Store, StoreError, StoreTx, StoredWait, TopicFields, WaitChange, WaitQuery, apply_change_in_tx,
};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};

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
    signal: SqlResumeSignal,
}

impl SqlStore {
    pub(crate) fn new(conn: DatabaseConnection, signal: SqlResumeSignal) -> Self {
        Self { conn, signal }
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

/// Numbered placeholder `n` (1-based) in the backend's syntax (`$n`, or `?n` on SQLite), so a
/// parameter may be used more than once.
fn ph(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => format!("?{n}"),
    }
}

/// `SqlStore::apply_change` on PostgreSQL (built once: it names [`RESUME_CHANNEL`]).
static APPLY_CHANGE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH upd AS ( \
               UPDATE waits SET status = $3, progress = $4, updated_at = $5, decided_at = $6, version = $7 \
               WHERE id = $1 AND version = $2 \
                 AND NOT EXISTS (SELECT 1 FROM processed_events WHERE wait_id = $1 AND event_key = $8) \
               RETURNING id), \
             inbox AS ( \
               INSERT INTO processed_events (wait_id, event_key, source, processed_at) \
               SELECT id, $8, $9, $5 FROM upd WHERE $8::text IS NOT NULL \
               ON CONFLICT DO NOTHING RETURNING 1), \
             outbox AS ( \
               INSERT INTO resume_outbox (resume_id, wait_id, tenant_id, resume, created_at, attempts) \
               SELECT $10, id, $11, $12, $6, 0 FROM upd WHERE $12::text IS NOT NULL \
               ON CONFLICT (wait_id) DO NOTHING RETURNING 1), \
             wake AS (SELECT pg_notify('{RESUME_CHANNEL}', '') FROM outbox) \
             SELECT (SELECT count(*) FROM upd) AS updated, \
                    (SELECT count(*) FROM wake) AS woken, \
                    EXISTS (SELECT 1 FROM processed_events WHERE wait_id = $1 AND event_key = $8) AS already"
    )
});

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

    /// On PostgreSQL one statement, committed on its own (one round trip): the compare-and-set
    /// `UPDATE` (which also refuses when the inbox already has the event), the inbox row and
    /// the resume with its `NOTIFY`, each insert running only if the update did. A statement
    /// is atomic, so this is the transaction of the default, without its round trips.
    async fn apply_change(&self, change: WaitChange<'_>) -> Result<ChangeOutcome, StoreError> {
        if self.backend() != DbBackend::Postgres {
            return apply_change_in_tx(self, change).await;
        }
        let s = &change.wait.state;
        let (event_key, source) = change.processed.map_or((None, None), |(k, s)| {
            (Some(k.to_string()), Some(s.to_string()))
        });
        let resume = change.resume.map(json).transpose()?;
        let sql = APPLY_CHANGE_SQL.as_str();
        let values: Vec<Value> = vec![
            s.key.id.as_uuid().into(),
            change.expected_version.into(),
            s.status().as_str().into(),
            progress_json(s)?.into(),
            change.wait.updated_at.as_millis().into(),
            s.resolution
                .as_ref()
                .map(|r| r.decided_at.as_millis())
                .into(),
            change.wait.version.into(),
            event_key.into(),
            source.into(),
            change.resume.map(|r| r.resume_id).into(),
            change.resume.map(|r| r.tenant.to_string()).into(),
            resume.into(),
        ];
        let row = self
            .conn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await
            .map_err(db_err)?
            .ok_or_else(|| StoreError::Other("apply_change returned no row".into()))?;
        let get = |c: &str| row.try_get::<i64>("", c).map_err(db_err);
        if get("updated")? == 0 {
            let already: bool = row.try_get("", "already").map_err(db_err)?;
            return Ok(if already {
                ChangeOutcome::AlreadyProcessed
            } else {
                ChangeOutcome::VersionMoved
            });
        }
        if get("woken")? > 0 {
            self.signal.notify_local();
        }
        Ok(ChangeOutcome::Applied)
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
        find_wait(&self.conn, tenant, correlation_id).await
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
            .conn
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
                    .execute_unprepared(&format!("NOTIFY {RESUME_CHANNEL}"))
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
            // Ids cannot hold control characters, so the unit separator keeps keys unambiguous.
            let key = format!("{tenant}\u{1f}{correlation_id}");
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
        let stored = StoredCall {
            tenant: call.tenant.clone(),
            correlation_id: call.correlation_id.clone(),
            execution_id: call.execution_id.clone(),
            request: call.request.clone(),
        };
        api_calls::Entity::insert(api_calls::ActiveModel {
            wait_id: Set(call.wait_id.as_uuid()),
            request: Set(json(&stored)?),
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
                .execute_unprepared(&format!("NOTIFY {RESUME_CHANNEL}"))
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
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

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
}
