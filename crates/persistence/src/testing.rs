//! Test support (feature `test-util`): a fresh, empty database per test on SQLite or on the
//! PostgreSQL server at 127.0.0.1:5432, removed on drop.

use rendezvous_ports::StoreError;
use sea_orm::{ConnectionTrait, Database};

/// The PostgreSQL server tests use (the machine's, started by `.ci/run`).
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

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
    name: Option<String>,
    dir: Option<std::path::PathBuf>,
}

impl TestDatabase {
    /// Creates one.
    pub async fn create(backend: Backend) -> Result<Self, StoreError> {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("rendezvous-test-{unique}"));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| StoreError::Other(format!("creating {}: {e}", dir.display())))?;
                Ok(Self {
                    url: format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display()),
                    name: None,
                    dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let name = format!("rendezvous_test_{unique}");
                let admin = Database::connect(POSTGRES_ADMIN_URL).await.map_err(|e| {
                    StoreError::Unavailable(format!(
                        "connecting to PostgreSQL at 127.0.0.1:5432: {e}"
                    ))
                })?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .map_err(|e| StoreError::Other(format!("creating database {name}: {e}")))?;
                let _ = admin.close().await;
                Ok(Self {
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    name: Some(name),
                    dir: None,
                })
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = self.name.take() {
            // A thread of its own: this may run inside or outside a runtime.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async {
                    if let Ok(admin) = Database::connect(POSTGRES_ADMIN_URL).await {
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
