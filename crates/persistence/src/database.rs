//! Connecting to the database: its configuration, the pools (a durable one, and on PostgreSQL
//! a small one for resume leases and acks), migrations, and URLs without their passwords.

use std::time::Duration;

use rendezvous_ports::StoreError;
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DbBackend, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};
use tokio::task::JoinHandle;

use crate::rows::db_err;
use crate::signal::{self, SqlResumeSignal};
use crate::store::SqlStore;
use crate::{Migrator, MigratorTrait};

/// How to reach the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `postgres://...` or `sqlite://path?mode=rwc` / `sqlite::memory:`.
    pub url: String,
    /// Pool size (PostgreSQL; SQLite always uses one connection: one writer at a time).
    pub max_connections: u32,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Apply pending migrations when connecting.
    pub run_migrations: bool,
}

impl DatabaseConfig {
    /// Defaults for a URL: 16 connections, 10 s connect timeout, migrations on.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
            run_migrations: true,
        }
    }
}

/// A connected database: the store, its resume signal, and the PostgreSQL listener task.
#[derive(Debug)]
pub struct Database {
    store: SqlStore,
    signal: SqlResumeSignal,
    conn: DatabaseConnection,
    listener: Option<JoinHandle<()>>,
}

/// Lock key serializing migrations across instances starting at once (PostgreSQL).
const MIGRATION_LOCK: i64 = 0x7265_6e64_657a_766f; // "rendezvo"

impl Database {
    /// Connects, applies migrations if configured, and (on PostgreSQL) starts listening for
    /// resume notifications.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let sqlite = config.url.starts_with("sqlite:");
        let mut options = ConnectOptions::new(config.url.clone());
        options
            .max_connections(if sqlite { 1 } else { config.max_connections })
            .min_connections(if sqlite { 1 } else { 2 })
            .connect_timeout(config.connect_timeout)
            .acquire_timeout(config.connect_timeout)
            .sqlx_logging(false);
        if sqlite {
            // One connection for the life of the process: an in-memory database lives in it.
            options.max_lifetime(None).idle_timeout(None);
            options.map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        } else {
            // READ COMMITTED for every transaction whatever the server's or the database's
            // default (the re-check after the correlation lock must see what committed while
            // it waited), set once per connection rather than by a `SET TRANSACTION` round
            // trip in every transaction.
            options.map_sqlx_postgres_opts(|o| {
                o.options([("default_transaction_isolation", "read committed")])
            });
        }
        // Opening a SQLite file switches it to WAL, which needs a moment of exclusive access:
        // another process opening the same file at that instant gets "database is locked"
        // before the busy timeout applies, so that one error is retried briefly.
        let mut attempt = 0;
        let conn = loop {
            match sea_orm::Database::connect(options.clone()).await {
                Ok(conn) => break conn,
                Err(e)
                    if sqlite && attempt < 20 && e.to_string().contains("database is locked") =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
                }
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "connecting to {}: {e}",
                        redact(&config.url)
                    )));
                }
            }
        };
        if config.run_migrations {
            migrate(&conn).await?;
        }
        // Resume leases and acks on PostgreSQL: a small pool whose commits do not wait for the
        // WAL flush (`synchronous_commit = off`). Both are soft state under at-least-once
        // delivery — a lease or ack lost in a database crash only means the resume goes out
        // again, with the same resume id — and the lease is on every resume's way to the
        // engine, so it should not wait for a disk flush.
        let lease_conn = if sqlite {
            conn.clone()
        } else {
            let mut lease_options = options.clone();
            lease_options
                .max_connections(4)
                .min_connections(1)
                .map_sqlx_postgres_opts(|o| {
                    o.options([
                        ("default_transaction_isolation", "read committed"),
                        ("synchronous_commit", "off"),
                    ])
                });
            sea_orm::Database::connect(lease_options)
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!("connecting to {}: {e}", redact(&config.url)))
                })?
        };
        let signal = SqlResumeSignal::default();
        let listener = (conn.get_database_backend() == DbBackend::Postgres)
            .then(|| tokio::spawn(signal::listen(config.url.clone(), signal.clone())));
        Ok(Self {
            store: SqlStore::new(conn.clone(), lease_conn.clone(), signal.clone()),
            signal,
            conn,
            listener,
        })
    }

    /// The store port.
    pub fn store(&self) -> SqlStore {
        self.store.clone()
    }

    /// The resume signal port.
    pub fn signal(&self) -> SqlResumeSignal {
        self.signal.clone()
    }

    /// Whether this is PostgreSQL (many instances) rather than SQLite (one instance).
    pub fn is_postgres(&self) -> bool {
        self.conn.get_database_backend() == DbBackend::Postgres
    }

    /// Stops the listener and closes the pool.
    pub async fn close(mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
        let lease_conn = self.store.lease_conn();
        let _ = self.conn.close().await;
        let _ = lease_conn.close().await;
    }
}

/// Applies pending migrations inside one transaction that first takes a database-wide lock
/// (an advisory lock on PostgreSQL, the write lock on SQLite), so instances starting at once
/// apply them once, one after the other.
pub async fn migrate(conn: &DatabaseConnection) -> Result<(), StoreError> {
    let tx = if conn.get_database_backend() == DbBackend::Postgres {
        let tx = conn.begin().await.map_err(db_err)?;
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [MIGRATION_LOCK.into()],
        ))
        .await
        .map_err(db_err)?;
        tx
    } else {
        conn.begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await
        .map_err(db_err)?
    };
    Migrator::up(&tx, None).await.map_err(db_err)?;
    tx.commit().await.map_err(db_err)
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use rendezvous_ports::Store;
    use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

    use crate::testing::{Backend, TestDatabase, postgres_admin_url};
    use crate::{Database, DatabaseConfig};

    /// Every transaction runs at READ COMMITTED even when the database's default is stricter
    /// (the re-check after the correlation lock relies on it), with no `SET TRANSACTION`.
    #[tokio::test]
    async fn transactions_are_read_committed_whatever_the_default() {
        let db = TestDatabase::create(Backend::Postgres).await.unwrap();
        let name = db.url.rsplit('/').next().unwrap();
        let admin = sea_orm::Database::connect(postgres_admin_url())
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
            .transaction()
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
        assert_eq!(setting(database.conn.clone()).await, "on");
        assert_eq!(setting(store.lease_conn()).await, "off");
        database.close().await;
    }
}
