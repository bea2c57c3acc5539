//! Resume wake-ups: a local watch channel, fed on PostgreSQL by a `LISTEN` task so that a
//! resume committed on any instance wakes the streams of every instance, and the announcer
//! task that sends this instance's notifications once its resumes have committed.
//!
//! Why after the commit, in a transaction of their own: PostgreSQL takes one cluster-wide lock
//! when a transaction that called `NOTIFY` commits and holds it until the commit is flushed,
//! so notifying transactions never share a WAL flush. With the notification inside the group
//! commit's statements, two instances' batches committed one flush after the other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rendezvous_ports::{ResumeSignal, ResumeWaiter, TenantScope};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{Notify, watch};

/// The PostgreSQL channel resume wake-ups are sent on.
pub(crate) const RESUME_CHANNEL: &str = "rendezvous_resumes";

/// The resume signal of the SQL store.
#[derive(Debug, Clone)]
pub struct SqlResumeSignal {
    sender: Arc<watch::Sender<u64>>,
    /// The payload of this instance's notifications: its own listener skips them, because
    /// whoever sent one has already woken the local streams.
    origin: Arc<str>,
    /// Set when resumes committed here have not been announced to the other instances yet;
    /// the announcer ([`announce`]) sends one notification for all of them.
    unannounced: Arc<Notify>,
    /// The scopes of this instance's ready streams, by waiter.
    ready: Arc<Mutex<HashMap<u64, TenantScope>>>,
    /// The id of the next waiter.
    next_waiter: Arc<AtomicU64>,
}

impl Default for SqlResumeSignal {
    fn default() -> Self {
        Self {
            sender: Arc::new(watch::Sender::new(0)),
            origin: uuid::Uuid::new_v4().to_string().into(),
            unannounced: Arc::new(Notify::new()),
            ready: Arc::default(),
            next_waiter: Arc::default(),
        }
    }
}

impl SqlResumeSignal {
    /// The payload this instance's notifications carry (a UUID).
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// Resumes of these tenants were committed: wakes this instance's streams at once and
    /// (on PostgreSQL, through the announcer) every other instance's, unless a ready stream
    /// here takes each tenant's (local first, see [`ResumeSignal`]). Call it only after the
    /// commit, so that whoever is woken finds them.
    pub(crate) fn committed<'a>(&self, tenants: impl IntoIterator<Item = &'a str>) {
        self.notify_local();
        let ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tenants = tenants.into_iter().peekable();
        let nobody_here = tenants.peek().is_none()
            || tenants.any(|tenant| !ready.values().any(|scope| covers(scope, tenant)));
        drop(ready);
        if nobody_here {
            self.unannounced.notify_one();
        }
    }

    /// Resumes became free for any stream (leases released, a redelivery): wakes the streams
    /// of every instance.
    pub(crate) fn freed(&self) {
        self.notify_local();
        self.unannounced.notify_one();
    }
}

/// Whether a stream of `scope` may take a resume of `tenant`.
fn covers(scope: &TenantScope, tenant: &str) -> bool {
    scope
        .tenants()
        .is_none_or(|tenants| tenants.iter().any(|t| t.as_str() == tenant))
}

/// Sends this instance's notifications until aborted: one `NOTIFY` on [`RESUME_CHANNEL`] after
/// resumes committed ([`SqlResumeSignal::committed`]), however many commits it covers, in a
/// transaction of its own on `conn` (the lease pool, whose commits do not wait for a flush: a
/// notification lost in a crash only means the other instances look at their poll interval).
pub(crate) async fn announce(conn: DatabaseConnection, signal: SqlResumeSignal) {
    loop {
        signal.unannounced.notified().await;
        let sent = conn
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [RESUME_CHANNEL.into(), signal.origin().into()],
            ))
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot announce resumes to the other instances; they look at their poll interval");
            // Not in a tight loop while the database is away.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One stream's view of [`SqlResumeSignal`]; its readiness goes when it is dropped.
#[derive(Debug)]
pub struct SqlResumeWaiter {
    changes: watch::Receiver<u64>,
    id: u64,
    scope: TenantScope,
    ready: Arc<Mutex<HashMap<u64, TenantScope>>>,
    /// What it last told `ready`.
    is_ready: bool,
}

impl Drop for SqlResumeWaiter {
    fn drop(&mut self) {
        self.ready(false);
    }
}

impl ResumeSignal for SqlResumeSignal {
    type Waiter = SqlResumeWaiter;

    fn waiter(&self, scope: &TenantScope) -> SqlResumeWaiter {
        SqlResumeWaiter {
            changes: self.sender.subscribe(),
            id: self.next_waiter.fetch_add(1, Ordering::Relaxed),
            scope: scope.clone(),
            ready: self.ready.clone(),
            is_ready: false,
        }
    }

    fn notify_local(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[async_trait]
impl ResumeWaiter for SqlResumeWaiter {
    async fn wait(&mut self, fallback: Duration) {
        // Err: the sender is gone (shutdown) or the fallback passed; either way, look again.
        let _ = tokio::time::timeout(fallback, self.changes.changed()).await;
    }

    fn ready(&mut self, ready: bool) {
        if ready == self.is_ready {
            return;
        }
        self.is_ready = ready;
        let mut streams = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        if ready {
            streams.insert(self.id, self.scope.clone());
        } else {
            streams.remove(&self.id);
        }
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
