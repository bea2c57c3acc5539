//! Connecting and migrating.

use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_persistence::{Database, DatabaseConfig};

pub(crate) async fn migrations_are_idempotent(backend: Backend) {
    let db = TestDatabase::create(backend).await.unwrap();
    let config = DatabaseConfig::new(&db.url);
    let (a, b) = tokio::join!(Database::connect(&config), Database::connect(&config));
    a.unwrap().close().await;
    b.unwrap().close().await;
    Database::connect(&config).await.unwrap().close().await;
}
