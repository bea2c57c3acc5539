//! Database errors as store errors: what a caller may retry ([`StoreError::Unavailable`]: the
//! database could not be reached, ran out of room, was shutting down, or gave up a transaction
//! it may run again — nothing was committed), uniqueness rules ([`StoreError::Conflict`]), and
//! everything else ([`StoreError::Other`]).

use rendezvous_ports::StoreError;
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// Maps a database error (see the module documentation).
pub(crate) fn db_err(e: DbErr) -> StoreError {
    if let Some(SqlErr::UniqueConstraintViolation(detail)) = e.sql_err() {
        return StoreError::Conflict(detail);
    }
    if rolled_back(&e) {
        StoreError::Unavailable(format!("{ROLLED_BACK}: {e}"))
    } else if unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Other(e.to_string())
    }
}

/// How the message of an [`StoreError::Unavailable`] starts when the database gave up a
/// transaction that may simply run again (serialization failure, deadlock): the server is fine,
/// so a batch that failed so is retried request by request (`postgres/changes.rs`).
pub(crate) const ROLLED_BACK: &str = "transaction rolled back by the database (retry)";

/// Whether a store error is a transaction the database gave up (see [`ROLLED_BACK`]).
pub(crate) fn is_rolled_back(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(message) if message.starts_with(ROLLED_BACK))
}

fn rolled_back(e: &DbErr) -> bool {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(&**e, sqlx::Error::Database(db)
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_none()
                    && matches!(db.code().as_deref(), Some("40001" | "40P01")))
        }
        _ => false,
    }
}

/// Whether an error means the database is (for now) unable to serve, so that the same request
/// may succeed later.
fn unavailable(e: &DbErr) -> bool {
    match e {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_unavailable(e)
        }
        _ => false,
    }
}

fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                code.parse().is_ok_and(sqlite_unavailable)
            } else {
                sqlstate_unavailable(&code)
            }
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs after which a request may be retried: class 08 (connection
/// exception), class 53 (insufficient resources: 53100 disk full, 53200 out of memory, 53300
/// too many connections), class 58 (system error: I/O), 57P01–57P03 (administrator shutdown,
/// crash shutdown, cannot connect now), 57014 (query cancelled), 25006 (read-only
/// transaction: a failover in progress), 40001 and 40P01 (serialization failure, deadlock: the
/// transaction was rolled back and may run again).
fn sqlstate_unavailable(code: &str) -> bool {
    ["08", "53", "58"]
        .iter()
        .any(|class| code.starts_with(class))
        || [
            "57P01", "57P02", "57P03", "57014", "25006", "40001", "40P01",
        ]
        .contains(&code)
}

/// SQLite result codes (extended codes keep the primary one in their low byte) after which a
/// request may be retried: SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_NOMEM (7), SQLITE_IOERR
/// (10), SQLITE_FULL (13), SQLITE_CANTOPEN (14).
fn sqlite_unavailable(code: i64) -> bool {
    matches!(code & 0xff, 5 | 6 | 7 | 10 | 13 | 14)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};

    use super::*;

    /// A database error with a SQLSTATE, as a server other than SQLite reports it.
    #[derive(Debug, thiserror::Error)]
    #[error("server error {0}")]
    struct ServerError(&'static str);

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            "server error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn exec(e: sqlx::Error) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
    }

    #[test]
    fn rolled_back_transactions_are_unavailable_and_recognisable() {
        for code in ["40001", "40P01"] {
            assert!(is_rolled_back(&server(code)), "{code}");
        }
        assert!(!is_rolled_back(&server("08006")));
        assert!(!is_rolled_back(&StoreError::Unavailable(
            "pool closed".into()
        )));
    }

    fn server(code: &'static str) -> StoreError {
        db_err(exec(sqlx::Error::Database(Box::new(ServerError(code)))))
    }

    #[test]
    fn connection_trouble_is_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        for e in [
            exec(sqlx::Error::Io(io)),
            exec(sqlx::Error::PoolTimedOut),
            exec(sqlx::Error::PoolClosed),
            DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::WorkerCrashed))),
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        ] {
            let shown = e.to_string();
            assert!(
                matches!(db_err(e), StoreError::Unavailable(_)),
                "{shown} is unavailable"
            );
        }
    }

    #[test]
    fn server_states_after_which_a_retry_may_succeed_are_unavailable() {
        for code in [
            "08006", "08003", "08000", "53100", "53200", "53300", "57P01", "57P02", "57P03",
            "58030", "40001", "40P01", "57014", "25006",
        ] {
            assert!(
                matches!(server(code), StoreError::Unavailable(_)),
                "{code} is unavailable"
            );
        }
    }

    #[test]
    fn other_server_states_are_other() {
        for code in ["42601", "22P02", "XX000", "23502", "54001", "57000"] {
            assert!(
                matches!(server(code), StoreError::Other(_)),
                "{code} is not retryable"
            );
        }
        let decode = exec(sqlx::Error::Protocol("bad data".into()));
        assert!(matches!(db_err(decode), StoreError::Other(_)));
        assert!(matches!(
            db_err(DbErr::Custom("a bug".into())),
            StoreError::Other(_)
        ));
    }

    #[test]
    fn sqlite_busy_full_and_io_errors_are_unavailable() {
        // Primary codes and extended ones (SQLITE_IOERR_WRITE 778, SQLITE_BUSY_SNAPSHOT 517).
        for code in [5, 6, 7, 10, 13, 14, 778, 517, 261] {
            assert!(sqlite_unavailable(code), "{code}");
        }
        // SQLITE_ERROR, SQLITE_CONSTRAINT_UNIQUE, SQLITE_CORRUPT, SQLITE_TOOBIG.
        for code in [1, 2067, 11, 18] {
            assert!(!sqlite_unavailable(code), "{code}");
        }
    }
}

#[cfg(all(test, feature = "test-util"))]
mod database_tests {
    use rendezvous_domain::{CorrelationId, TenantId};
    use rendezvous_ports::{Store, StoreError, StoreTx};
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    use crate::testing::{Backend, TestDatabase, postgres_admin_url};
    use crate::{Database, DatabaseConfig};

    /// A PostgreSQL connection cut in the middle of a transaction (its backend terminated, as
    /// a failover or a network cut does) is `Unavailable`: nothing was committed, the caller
    /// may retry. The store serves the next request on a new connection.
    #[tokio::test]
    async fn a_connection_cut_mid_transaction_is_unavailable() {
        let db = TestDatabase::create(Backend::Postgres).await.unwrap();
        let database = Database::connect(&DatabaseConfig::new(&db.url))
            .await
            .unwrap();
        let store = database.store();
        let (tenant, c) = (
            TenantId::default_tenant(),
            CorrelationId::parse("c").unwrap(),
        );
        let mut tx = store.begin().await.unwrap();
        tx.lock_correlation(&tenant, &c).await.unwrap();
        let row = tx
            .transaction()
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_backend_pid() AS pid",
            ))
            .await
            .unwrap()
            .unwrap();
        let pid: i32 = row.try_get("", "pid").unwrap();
        let admin = sea_orm::Database::connect(postgres_admin_url())
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
            .await
            .unwrap();
        let _ = admin.close().await;
        match tx.find_wait(&tenant, &c).await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("a cut connection is unavailable, got {other:?}"),
        }
        drop(tx);
        assert_eq!(store.find_wait(&tenant, &c).await.unwrap(), None);
        database.close().await;
    }

    /// A full SQLite database (SQLITE_FULL, here by capping its pages) is `Unavailable`.
    #[tokio::test]
    async fn a_full_sqlite_database_is_unavailable() {
        let db = TestDatabase::create(Backend::Sqlite).await.unwrap();
        let database = Database::connect(&DatabaseConfig::new(&db.url))
            .await
            .unwrap();
        let store = database.store();
        let tx = store.begin().await.unwrap();
        let conn = tx.transaction();
        let row = conn
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA page_count",
            ))
            .await
            .unwrap()
            .unwrap();
        let pages: i64 = row.try_get_by_index(0).unwrap();
        conn.execute_unprepared(&format!("PRAGMA max_page_count = {pages}"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let quarantined = rendezvous_ports::Quarantined::new(
            "test",
            "x".repeat(64 * 1024),
            "filling the disk",
            rendezvous_domain::Timestamp::from_millis(0),
        );
        match store.quarantine(&quarantined).await {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("full"), "{message}")
            }
            other => panic!("a full database is unavailable, got {other:?}"),
        }
        database.close().await;
    }
}
