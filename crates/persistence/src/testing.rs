//! Test support (feature `test-util`): a fresh, empty database per test on SQLite or on a
//! PostgreSQL server — by default the machine's at 127.0.0.1:5432, or the one whose admin URL
//! is in [`POSTGRES_URL_VARIABLE`] — removed on drop.

use std::time::Duration;

use rendezvous_ports::StoreError;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

use crate::redact;

/// The PostgreSQL server tests use unless [`POSTGRES_URL_VARIABLE`] names another (the
/// machine's, started by `.ci/run`). The URL that is actually used is [`postgres_admin_url`].
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The environment variable that overrides [`POSTGRES_ADMIN_URL`]: the URL of a database on the
/// server as a user that may create and drop databases, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub const POSTGRES_URL_VARIABLE: &str = "RENDEZVOUS_TEST_POSTGRES_URL";

/// The admin URL of the PostgreSQL server tests use: [`POSTGRES_URL_VARIABLE`] when it is set
/// and not empty, else [`POSTGRES_ADMIN_URL`].
pub fn postgres_admin_url() -> String {
    std::env::var(POSTGRES_URL_VARIABLE)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| POSTGRES_ADMIN_URL.to_owned())
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh PostgreSQL database, dropped afterwards.
    Postgres,
}

/// A fresh, empty database for one test; removed on drop.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL.
    pub url: String,
    /// PostgreSQL: the admin URL and the database's name, to drop it.
    postgres: Option<(String, String)>,
    dir: Option<std::path::PathBuf>,
}

impl TestDatabase {
    /// Creates one. On PostgreSQL, fails with a message naming the server's URL and
    /// [`POSTGRES_URL_VARIABLE`] when no server answers there.
    pub async fn create(backend: Backend) -> Result<Self, StoreError> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("rendezvous-test-{unique}"));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| StoreError::Other(format!("creating {}: {e}", dir.display())))?;
                Ok(Self {
                    url: format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display()),
                    postgres: None,
                    dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("rendezvous_test_{unique}");
                let admin = connect_admin(&admin_url).await.map_err(|e| {
                    StoreError::Unavailable(format!(
                        "no PostgreSQL server for the tests at {} ({e}); start one (`.ci/run` \
                         starts the machine's) or set {POSTGRES_URL_VARIABLE} to the admin URL \
                         of another, e.g. {POSTGRES_ADMIN_URL}",
                        redact(&admin_url)
                    ))
                })?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .map_err(|e| StoreError::Other(format!("creating database {name}: {e}")))?;
                let _ = admin.close().await;
                Ok(Self {
                    url: with_database(&admin_url, &name),
                    postgres: Some((admin_url, name)),
                    dir: None,
                })
            }
        }
    }
}

/// A connection to the server's admin database; gives up after a few seconds when nothing
/// answers (rather than the pool's default half minute).
async fn connect_admin(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    Database::connect(options).await
}

/// `url` with its database (the path) replaced by `name`, keeping any query parameters.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority = base.find("://").map_or(0, |s| s + 3);
    let server = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    format!("{server}/{name}{query}")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin_url, name)) = self.postgres.take() {
            // A thread of its own: this may run inside or outside a runtime.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async {
                    if let Ok(admin) = connect_admin(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_test_database_replaces_the_admin_database_and_keeps_the_rest() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@db.example:6543/admin?sslmode=disable", "t1"),
            "postgres://u:p@db.example:6543/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://postgres@localhost", "t1"),
            "postgres://postgres@localhost/t1"
        );
    }
}
