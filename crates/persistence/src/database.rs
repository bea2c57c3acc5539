//! Connecting to the database: its configuration, the pools (a durable one, and on PostgreSQL
//! a small one for resume leases and acks), TLS and a password kept apart from the URL, migrations,
//! and URLs without their passwords.

use std::path::PathBuf;
use std::time::Duration;

use rendezvous_ports::StoreError;
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DbBackend, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::task::JoinHandle;

use crate::probe::DatabaseProbe;
use crate::rows::db_err;
use crate::signal::{self, SqlResumeSignal};
use crate::store::SqlStore;
use crate::{Migrator, MigratorTrait};

/// How to reach the database.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `postgres://...` or `sqlite://path?mode=rwc` / `sqlite::memory:`. A PostgreSQL URL may
    /// carry libpq's TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`).
    pub url: String,
    /// The PostgreSQL password when it is not in the URL (read from a file, say); it wins over
    /// one in the URL.
    pub password: Option<String>,
    /// PostgreSQL TLS settings that win over the URL's.
    pub tls: PgTls,
    /// Pool size (PostgreSQL; SQLite always uses one connection: one writer at a time).
    pub max_connections: u32,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Apply pending migrations when connecting.
    pub run_migrations: bool,
}

/// Without the password: the URL's is masked, a separate one is not shown.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("run_migrations", &self.run_migrations)
            .finish()
    }
}

impl DatabaseConfig {
    /// Defaults for a URL: 16 connections, 10 s connect timeout, migrations on, TLS and
    /// password as the URL says.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            tls: PgTls::default(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(10),
            run_migrations: true,
        }
    }
}

/// libpq's `sslmode`: whether the connection to PostgreSQL is encrypted and what is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, nothing verified (the default of a URL without
    /// `sslmode`).
    Prefer,
    /// TLS or no connection; the server's certificate is not verified.
    Require,
    /// TLS, and the server's certificate must chain to a trusted root (`sslrootcert`, else the
    /// system's roots).
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every mode, by its libpq name.
    pub const ALL: [(&'static str, Self); 5] = [
        ("disable", Self::Disable),
        ("prefer", Self::Prefer),
        ("require", Self::Require),
        ("verify-ca", Self::VerifyCa),
        ("verify-full", Self::VerifyFull),
    ];

    /// Its libpq name (`verify-full`, ...).
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("prefer", |(name, _)| name)
    }

    /// The mode of a libpq name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, mode)| *mode)
    }

    fn sqlx(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require => PgSslMode::Require,
            Self::VerifyCa => PgSslMode::VerifyCa,
            Self::VerifyFull => PgSslMode::VerifyFull,
        }
    }

    fn of(mode: PgSslMode) -> Self {
        match mode {
            PgSslMode::Disable | PgSslMode::Allow => Self::Disable,
            PgSslMode::Prefer => Self::Prefer,
            PgSslMode::Require => Self::Require,
            PgSslMode::VerifyCa => Self::VerifyCa,
            PgSslMode::VerifyFull => Self::VerifyFull,
        }
    }
}

/// TLS to PostgreSQL (rustls). Each setting left `None` keeps the URL's (`sslmode`,
/// `sslrootcert`, `sslcert`, `sslkey`); a URL without them means `prefer` with the system's
/// roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    /// `sslmode`.
    pub mode: Option<SslMode>,
    /// `sslrootcert`: PEM certificates of the roots the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: a PEM client certificate (certificate authentication), with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: the PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// What [`DatabaseConfig`] adds to the options sqlx reads from a PostgreSQL URL: applied to
/// every connection (both pools and the resume listener).
#[derive(Clone)]
struct PgExtras {
    password: Option<String>,
    tls: PgTls,
}

impl PgExtras {
    fn new(config: &DatabaseConfig) -> Self {
        Self {
            password: config.password.clone(),
            tls: config.tls.clone(),
        }
    }

    fn apply(&self, mut options: PgConnectOptions) -> PgConnectOptions {
        if let Some(password) = &self.password {
            options = options.password(password);
        }
        if let Some(mode) = self.tls.mode {
            options = options.ssl_mode(mode.sqlx());
        }
        if let Some(path) = &self.tls.root_cert {
            options = options.ssl_root_cert(path);
        }
        if let Some(path) = &self.tls.client_cert {
            options = options.ssl_client_cert(path);
        }
        if let Some(path) = &self.tls.client_key {
            options = options.ssl_client_key(path);
        }
        options
    }
}

/// The sqlx options of a PostgreSQL URL with `extras` applied, or why the URL cannot be read
/// (sea-orm would panic on some of those).
fn pg_options(url: &str, extras: &PgExtras) -> Result<PgConnectOptions, StoreError> {
    url.parse::<PgConnectOptions>()
        .map(|options| extras.apply(options))
        .map_err(|e| StoreError::Unavailable(format!("invalid database URL {}: {e}", redact(url))))
}

/// How the connection is secured, for a message about a failed connection.
fn describe_tls(options: &PgConnectOptions, tls: &PgTls) -> String {
    let mut text = format!("sslmode {}", SslMode::of(options.get_ssl_mode()).as_str());
    if let Some(path) = &tls.root_cert {
        text.push_str(&format!(", root certificate {}", path.display()));
    }
    if let Some(path) = &tls.client_cert {
        text.push_str(&format!(", client certificate {}", path.display()));
    }
    text
}

/// A connected database: the store, its resume signal, and the PostgreSQL listener and
/// announcer tasks.
#[derive(Debug)]
pub struct Database {
    store: SqlStore,
    signal: SqlResumeSignal,
    conn: DatabaseConnection,
    listener: Option<JoinHandle<()>>,
    /// PostgreSQL: the task that tells the other instances about resumes committed here.
    announcer: Option<JoinHandle<()>>,
}

/// Lock key serializing migrations across instances starting at once (PostgreSQL).
const MIGRATION_LOCK: i64 = 0x7265_6e64_657a_766f; // "rendezvo"

impl Database {
    /// Connects, applies migrations if configured, and (on PostgreSQL) starts listening for
    /// resume notifications.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let sqlite = config.url.starts_with("sqlite:");
        let extras = PgExtras::new(config);
        // Read here first: a URL sqlx cannot read is an error naming it, and the effective TLS
        // settings go into the message of a failed connection.
        let pg = (!sqlite)
            .then(|| pg_options(&config.url, &extras))
            .transpose()?;
        let failed = |e: sea_orm::DbErr| {
            let how = pg
                .as_ref()
                .map(|o| format!(" ({})", describe_tls(o, &config.tls)))
                .unwrap_or_default();
            StoreError::Unavailable(format!("connecting to {}{how}: {e}", redact(&config.url)))
        };
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
            // trip in every transaction. The password and TLS settings of the config are
            // applied here too (sea-orm keeps one options function: each pool sets all).
            let extras = extras.clone();
            options.map_sqlx_postgres_opts(move |o| {
                extras
                    .apply(o)
                    .options([("default_transaction_isolation", "read committed")])
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
                Err(e) => return Err(failed(e)),
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
            let extras = extras.clone();
            lease_options
                .max_connections(4)
                .min_connections(1)
                .map_sqlx_postgres_opts(move |o| {
                    extras.apply(o).options([
                        ("default_transaction_isolation", "read committed"),
                        ("synchronous_commit", "off"),
                    ])
                });
            sea_orm::Database::connect(lease_options)
                .await
                .map_err(failed)?
        };
        let signal = SqlResumeSignal::default();
        let listener = pg.map(|options| tokio::spawn(signal::listen(options, signal.clone())));
        // Notifications go out after their resumes commit, on the lease pool (signal.rs).
        let announcer =
            (!sqlite).then(|| tokio::spawn(signal::announce(lease_conn.clone(), signal.clone())));
        Ok(Self {
            store: SqlStore::new(conn.clone(), lease_conn.clone(), signal.clone()),
            signal,
            conn,
            listener,
            announcer,
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

    /// A handle for health checks and statistics (see [`DatabaseProbe`]).
    pub fn probe(&self) -> DatabaseProbe {
        DatabaseProbe {
            conn: self.conn.clone(),
            lease_conn: self.store.lease_conn(),
        }
    }

    /// Every migration, oldest first, with whether it is applied. Read-only: creates nothing,
    /// so it also works for a database user without DDL rights.
    pub async fn migrations(&self) -> Result<Vec<(String, bool)>, StoreError> {
        let all = Migrator::get_migration_with_status_read_only(&self.conn)
            .await
            .map_err(db_err)?;
        Ok(all
            .iter()
            .map(|m| {
                (
                    m.name().to_owned(),
                    m.status() == rendezvous_migrations::MigrationStatus::Applied,
                )
            })
            .collect())
    }

    /// Applies the pending migrations ([`migrate`]: once, whoever else runs them at once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate(&self.conn).await
    }

    /// Whether this is PostgreSQL (many instances) rather than SQLite (one instance).
    pub fn is_postgres(&self) -> bool {
        self.conn.get_database_backend() == DbBackend::Postgres
    }

    /// Stops the listener and the announcer and closes the pools.
    pub async fn close(mut self) {
        for task in [self.listener.take(), self.announcer.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
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
