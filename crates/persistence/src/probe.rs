//! What operators ask of the database itself: does it answer (`ping`, for readiness), how many
//! waits are in each state, how deep the resume outbox is and how old its oldest unacked
//! resume, how far behind the sweeper is (`stats`, for the metrics), and how busy the pools are.

use std::collections::BTreeMap;

use rendezvous_domain::Timestamp;
use rendezvous_ports::StoreError;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::errors::db_err;

/// A cheap handle on the database's connections for health checks and statistics.
#[derive(Debug, Clone)]
pub struct DatabaseProbe {
    pub(crate) conn: DatabaseConnection,
    pub(crate) lease_conn: DatabaseConnection,
}

/// A snapshot of the database's contents, as the metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseStats {
    /// Waits by status (`open`, `completed`, `timed_out`, `cancelled`, `failed`).
    pub waits_by_status: BTreeMap<String, u64>,
    /// Resumes not yet acknowledged.
    pub unacked_resumes: u64,
    /// When the oldest unacknowledged resume was written.
    pub oldest_unacked_resume: Option<Timestamp>,
    /// The earliest deadline of an open wait.
    pub earliest_open_deadline: Option<Timestamp>,
    /// Early events buffered and not yet claimed or expired.
    pub pending_early_events: u64,
    /// Events set aside with their reason.
    pub quarantined_events: u64,
}

/// How busy one connection pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// `main` (every durable write and read) or `resumes` (leases and acks).
    pub pool: &'static str,
    /// Connections open and idle.
    pub idle: u32,
    /// Connections open and in use.
    pub busy: u32,
}

impl DatabaseProbe {
    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.conn.ping().await.map_err(db_err)
    }

    /// Counts what the metrics show. A handful of aggregate queries over partial indexes,
    /// except the count by status, which reads the waits table (kept small by retention).
    pub async fn stats(&self) -> Result<DatabaseStats, StoreError> {
        let backend = self.conn.get_database_backend();
        let rows = |sql: &str| {
            self.conn
                .query_all_raw(Statement::from_string(backend, sql.to_owned()))
        };
        let mut stats = DatabaseStats::default();
        for row in rows("SELECT status, COUNT(*) AS n FROM waits GROUP BY status")
            .await
            .map_err(db_err)?
        {
            let status: String = row.try_get("", "status").map_err(db_err)?;
            let n: i64 = row.try_get("", "n").map_err(db_err)?;
            stats.waits_by_status.insert(status, n.max(0) as u64);
        }
        let one = |sql: &'static str| async move {
            let rows = rows(sql).await.map_err(db_err)?;
            let row = rows
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::Unavailable(format!("no row from {sql}")))?;
            let n: i64 = row.try_get("", "n").map_err(db_err)?;
            let at: Option<i64> = row.try_get("", "at").map_err(db_err)?;
            Ok::<_, StoreError>((n.max(0) as u64, at.map(Timestamp::from_millis)))
        };
        (stats.unacked_resumes, stats.oldest_unacked_resume) = one(
            "SELECT COUNT(*) AS n, MIN(created_at) AS at FROM resume_outbox WHERE acked_at IS NULL",
        )
        .await?;
        (_, stats.earliest_open_deadline) =
            one("SELECT CAST(0 AS BIGINT) AS n, MIN(deadline) AS at FROM waits WHERE decided_at IS NULL").await?;
        (stats.pending_early_events, _) = one(
            "SELECT COUNT(*) AS n, CAST(NULL AS BIGINT) AS at FROM early_events WHERE status = 'pending'",
        )
        .await?;
        (stats.quarantined_events, _) =
            one("SELECT COUNT(*) AS n, CAST(NULL AS BIGINT) AS at FROM quarantined_events").await?;
        Ok(stats)
    }

    /// The pools' connections, idle and busy (one pool on SQLite).
    pub fn pools(&self) -> Vec<PoolStats> {
        match self.conn.get_database_backend() {
            DbBackend::Postgres => {
                let stats = |pool: &'static str, p: &sqlx::PgPool| {
                    let idle = p.num_idle() as u32;
                    PoolStats {
                        pool,
                        idle,
                        busy: p.size().saturating_sub(idle),
                    }
                };
                vec![
                    stats("main", self.conn.get_postgres_connection_pool()),
                    stats("resumes", self.lease_conn.get_postgres_connection_pool()),
                ]
            }
            _ => {
                let p = self.conn.get_sqlite_connection_pool();
                let idle = p.num_idle() as u32;
                vec![PoolStats {
                    pool: "main",
                    idle,
                    busy: p.size().saturating_sub(idle),
                }]
            }
        }
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use crate::testing::{Backend, TestDatabase};
    use crate::{Database, DatabaseConfig};

    /// Every statistic reads on both backends (the column types differ: an integer literal
    /// is INTEGER on PostgreSQL, and every count must read as BIGINT).
    #[tokio::test]
    async fn an_empty_database_answers_and_counts_nothing() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let db = TestDatabase::create(backend).await.unwrap();
            let database = Database::connect(&DatabaseConfig::new(&db.url))
                .await
                .unwrap();
            let probe = database.probe();
            probe.ping().await.unwrap();
            let stats = probe.stats().await.unwrap();
            assert_eq!(stats, super::DatabaseStats::default(), "{backend:?}");
            let pools = probe.pools();
            assert_eq!(pools[0].pool, "main");
            assert_eq!(
                pools.len(),
                if backend == Backend::Postgres { 2 } else { 1 }
            );
            database.close().await;
        }
    }
}
