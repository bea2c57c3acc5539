//! Resume wake-ups: a local watch channel, fed on PostgreSQL by a `LISTEN` task so that a
//! resume committed on any instance wakes the streams of every instance. Owns the channel's
//! name; the statements announcing resumes pass it as a parameter.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rendezvous_ports::{ResumeSignal, ResumeWaiter, StoreError};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::watch;

use crate::rows::db_err;

/// The PostgreSQL channel resume wake-ups are sent on.
pub(crate) const RESUME_CHANNEL: &str = "rendezvous_resumes";

/// The resume signal of the SQL store.
#[derive(Debug, Clone)]
pub struct SqlResumeSignal {
    sender: Arc<watch::Sender<u64>>,
    /// The payload of this instance's notifications: its own listener skips them, because
    /// whoever sent one has already woken the local streams.
    origin: Arc<str>,
}

impl Default for SqlResumeSignal {
    fn default() -> Self {
        Self {
            sender: Arc::new(watch::Sender::new(0)),
            origin: uuid::Uuid::new_v4().to_string().into(),
        }
    }
}

impl SqlResumeSignal {
    /// The payload this instance's notifications carry (a UUID).
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// Announces resumes from this instance to every instance's listener: on PostgreSQL a
    /// notification on [`RESUME_CHANNEL`], sent when (and only if) the transaction `conn` runs
    /// in commits, or at once outside one. SQLite has a single instance: nothing to send (the
    /// writer wakes its own streams with [`ResumeSignal::notify_local`]).
    pub(crate) async fn announce(&self, conn: &impl ConnectionTrait) -> Result<(), StoreError> {
        if conn.get_database_backend() == DbBackend::Postgres {
            conn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [RESUME_CHANNEL.into(), self.origin().into()],
            ))
            .await
            .map_err(db_err)?;
        }
        Ok(())
    }
}

/// One stream's view of [`SqlResumeSignal`].
#[derive(Debug)]
pub struct SqlResumeWaiter(watch::Receiver<u64>);

impl ResumeSignal for SqlResumeSignal {
    type Waiter = SqlResumeWaiter;

    fn waiter(&self) -> SqlResumeWaiter {
        SqlResumeWaiter(self.sender.subscribe())
    }

    fn notify_local(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[async_trait]
impl ResumeWaiter for SqlResumeWaiter {
    async fn wait(&mut self, fallback: Duration) {
        // Err: the sender is gone (shutdown) or the fallback passed; either way, look again.
        let _ = tokio::time::timeout(fallback, self.0.changed()).await;
    }
}

/// Forwards PostgreSQL notifications on the resume channel to the local signal until aborted.
/// The listener has a connection of its own (not one of the pool's), made with the same
/// options as the pool's (password, TLS).
pub(crate) async fn listen(options: PgConnectOptions, signal: SqlResumeSignal) {
    loop {
        match connect_listener(options.clone()).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(RESUME_CHANNEL).await {
                    tracing::warn!(error = %e, "cannot listen for resume notifications; polling meanwhile");
                } else {
                    loop {
                        match listener.try_recv().await {
                            // Our own were announced locally when they committed.
                            Ok(Some(n)) if n.payload() == signal.origin() => {}
                            Ok(Some(_)) => signal.notify_local(),
                            // The connection was lost and is re-established on the next call;
                            // anything sent meanwhile was missed, so look now.
                            Ok(None) => signal.notify_local(),
                            Err(e) => {
                                tracing::warn!(error = %e, "resume notification listener failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect the resume listener; polling meanwhile")
            }
        }
        // Anything may have been missed while disconnected.
        signal.notify_local();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A listener on a pool of one connection of its own, as `PgListener::connect` makes from a
/// URL, but from options.
async fn connect_listener(options: PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options)
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    Ok(listener)
}
