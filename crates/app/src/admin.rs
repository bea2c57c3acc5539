//! The admin HTTP listener (`[admin]`): `/metrics` (Prometheus text), `/livez` (the process
//! answers) and `/readyz` (the database answers and the instance is not draining); the health
//! watcher that keeps readiness, gRPC health and the `rendezvous_ready` gauge true; and the
//! counter of the database-wide gauges.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Gauge;
use rendezvous_domain::{Timestamp, WaitStatus};
use rendezvous_persistence::DatabaseProbe;
use rendezvous_ports::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::metrics::Metrics;

/// The gRPC services whose health follows readiness ("" is the server as a whole).
pub(crate) const SERVICES: [&str; 3] = [
    "",
    rendezvous_grpc_api::v1::wait_service_server::SERVICE_NAME,
    rendezvous_grpc_api::v1::callback_service_server::SERVICE_NAME,
];

/// Whether this instance should get traffic, and why not.
#[derive(Clone)]
pub(crate) struct Readiness {
    inner: Arc<Mutex<Why>>,
    reporter: HealthReporter,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Why {
    /// The database's last error, while it does not answer.
    database: Option<String>,
    /// Failed checks in a row (for the one warning per outage).
    failures: u32,
    draining: bool,
}

impl Why {
    fn ready(&self) -> bool {
        self.database.is_none() && !self.draining
    }
}

impl Readiness {
    /// Ready (the database was just connected), serving.
    pub(crate) async fn new(reporter: HealthReporter, metrics: Arc<Metrics>) -> Self {
        let readiness = Self {
            inner: Arc::default(),
            reporter,
            metrics,
        };
        readiness.publish(true).await;
        readiness
    }

    /// `None` when ready, else why not.
    pub(crate) fn not_ready(&self) -> Option<String> {
        let why = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if why.draining {
            Some("draining: the instance is shutting down".to_owned())
        } else {
            why.database
                .as_ref()
                .map(|e| format!("database unreachable: {e}"))
        }
    }

    /// Records a database check; a change of readiness is published and logged once.
    pub(crate) async fn database(&self, result: Result<(), String>) {
        let (before, after) = {
            let mut why = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let before = why.ready();
            match result {
                Ok(()) => {
                    if why.database.take().is_some() {
                        tracing::info!(
                            failed_checks = why.failures,
                            "the database answers again: ready"
                        );
                    }
                    why.failures = 0;
                }
                Err(e) => {
                    if why.database.is_none() {
                        tracing::warn!(error = %e, "the database does not answer: not ready (gRPC health NOT_SERVING) until it does");
                    }
                    why.failures += 1;
                    why.database = Some(e);
                }
            }
            (before, why.ready())
        };
        if before != after {
            self.publish(after).await;
        }
    }

    /// The instance is shutting down: not ready from now on.
    pub(crate) async fn drain(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .draining = true;
        self.publish(false).await;
    }

    async fn publish(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
        self.metrics.set_ready(ready);
    }
}

/// Checks the database every `interval` (each check within `interval`) until shutdown, then
/// marks the instance draining. The pools' use is recorded at the same pace.
pub(crate) async fn watch_health(
    probe: DatabaseProbe,
    readiness: Readiness,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let pools = crate::metrics::meter()
        .u64_gauge("rendezvous.db.pool.connections")
        .with_description("Database connections by pool (main, resumes) and state (idle, busy).")
        .build();
    loop {
        for pool in probe.pools() {
            for (state, n) in [("idle", pool.idle), ("busy", pool.busy)] {
                pools.record(
                    u64::from(n),
                    &[
                        KeyValue::new("pool", pool.pool),
                        KeyValue::new("state", state),
                    ],
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
        let result = match tokio::time::timeout(interval, probe.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {interval:?}")),
        };
        readiness.database(result).await;
    }
    readiness.drain().await;
}

/// Every status a wait can have, so a status no wait has any more shows 0.
const STATUSES: [WaitStatus; 7] = [
    WaitStatus::WaitingForEvents,
    WaitStatus::WaitingForApi,
    WaitStatus::WaitingForKafka,
    WaitStatus::Completed,
    WaitStatus::TimedOut,
    WaitStatus::Cancelled,
    WaitStatus::Failed,
];

/// The gauges counted from the database.
struct StatsGauges {
    waits: Gauge<u64>,
    outbox_depth: Gauge<u64>,
    oldest_unacked: Gauge<f64>,
    sweeper_lag: Gauge<f64>,
    early_events: Gauge<u64>,
    quarantined: Gauge<u64>,
}

impl StatsGauges {
    fn new() -> Self {
        let meter = crate::metrics::meter();
        let count = |name: &'static str, description: &'static str| {
            meter.u64_gauge(name).with_description(description).build()
        };
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_gauge(name)
                .with_unit("s")
                .with_description(description)
                .build()
        };
        Self {
            waits: count(
                "rendezvous.waits",
                "Waits in the database by status (open: waiting_for_*).",
            ),
            outbox_depth: count(
                "rendezvous.resume.outbox_depth",
                "Resumes written and not yet acknowledged by an engine.",
            ),
            oldest_unacked: seconds(
                "rendezvous.resume.oldest_unacked_age",
                "Age of the oldest unacknowledged resume (0 when none).",
            ),
            sweeper_lag: seconds(
                "rendezvous.sweeper.lag",
                "How far past its deadline the most overdue open wait is (0 when none is due).",
            ),
            early_events: count(
                "rendezvous.early_events.pending",
                "Early events buffered, waiting for their wait to register.",
            ),
            quarantined: count(
                "rendezvous.quarantined_events",
                "Events set aside with their reason (kept until retention purges them).",
            ),
        }
    }
}

/// Counts the database-wide gauges every `interval` until shutdown. A failed count keeps the
/// last values (readiness reports the outage).
pub(crate) async fn count_stats(
    probe: DatabaseProbe,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let gauges = StatsGauges::new();
    let mut counting = rendezvous_service::Outage::new("counting the database gauges");
    loop {
        match probe.stats().await {
            Ok(stats) => {
                counting.succeeded();
                let now = SystemClock.now();
                let age = |at: Option<Timestamp>| at.map_or(0.0, |at| now.seconds_since(at));
                for status in STATUSES {
                    let n = stats
                        .waits_by_status
                        .get(status.as_str())
                        .copied()
                        .unwrap_or(0);
                    gauges
                        .waits
                        .record(n, &[KeyValue::new("status", status.as_str())]);
                }
                gauges.outbox_depth.record(stats.unacked_resumes, &[]);
                gauges
                    .oldest_unacked
                    .record(age(stats.oldest_unacked_resume), &[]);
                gauges
                    .sweeper_lag
                    .record(age(stats.earliest_open_deadline), &[]);
                gauges.early_events.record(stats.pending_early_events, &[]);
                gauges.quarantined.record(stats.quarantined_events, &[]);
            }
            Err(e) => counting.failed(&e),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

#[derive(Clone)]
struct Admin {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// Serves the admin endpoints on `listener` until `stopped`.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    mut stopped: watch::Receiver<bool>,
) {
    let router = axum::Router::new()
        .route("/metrics", get(metrics_text))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Admin { metrics, readiness });
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "the admin listener failed");
    }
}

async fn metrics_text(State(admin): State<Admin>) -> impl IntoResponse {
    let metrics = admin.metrics.clone();
    let text = tokio::task::spawn_blocking(move || metrics.render())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

async fn ready(State(admin): State<Admin>) -> impl IntoResponse {
    match admin.readiness.not_ready() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Answer;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;
    use crate::config::TelemetrySection;

    async fn statuses(client: &mut HealthClient<tonic::transport::Channel>) -> Vec<Answer> {
        let mut out = Vec::new();
        for service in SERVICES {
            let answer = client
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            out.push(answer.status());
        }
        out
    }

    /// gRPC health (over a real server) and the readiness reason follow the database checks,
    /// and draining wins over a database that answers.
    #[tokio::test]
    async fn an_unreachable_database_and_draining_are_not_ready() {
        let (reporter, service) = tonic_health::server::health_reporter();
        let metrics = crate::metrics::install(&TelemetrySection::default()).unwrap();
        let readiness = Readiness::new(reporter, metrics).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let serving = vec![Answer::Serving; 3];
        let not_serving = vec![Answer::NotServing; 3];
        assert_eq!(statuses(&mut client).await, serving);
        assert_eq!(readiness.not_ready(), None);

        readiness.database(Err("connection refused".into())).await;
        assert_eq!(statuses(&mut client).await, not_serving);
        assert_eq!(
            readiness.not_ready().as_deref(),
            Some("database unreachable: connection refused")
        );
        readiness.database(Err("still refused".into())).await;
        readiness.database(Ok(())).await;
        assert_eq!(statuses(&mut client).await, serving);
        assert_eq!(readiness.not_ready(), None);

        readiness.drain().await;
        assert_eq!(statuses(&mut client).await, not_serving);
        readiness.database(Ok(())).await;
        assert_eq!(statuses(&mut client).await, not_serving);
        assert!(readiness.not_ready().unwrap().starts_with("draining"));
    }
}
