//! The application: connects the database, builds the service and the gRPC server (with health
//! and reflection), the admin listener (metrics, liveness, readiness), runs the sweeper and the
//! retention purge, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use rendezvous_domain::LeaseOwner;
use rendezvous_grpc_api::webhook::Webhooks;
use rendezvous_grpc_api::{GrpcApi, v1};
use rendezvous_http_caller::ReqwestCaller;
use rendezvous_kafka_ingress::{EmbeddedKafka, KafkaIngress, RecordReplay};
use rendezvous_persistence::{Database, SqlResumeSignal, SqlStore};
use rendezvous_ports::SystemClock;
use rendezvous_service::{Outage, WaitService};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Readiness;
use crate::config::Config;
use crate::metrics::Metrics;

/// The service as wired in production.
pub type Service = WaitService<SqlStore, SqlResumeSignal, SystemClock>;

/// A built application, bound to its address, not yet serving.
pub struct Application {
    config: Config,
    listener: TcpListener,
    database: Database,
    service: Arc<Service>,
    /// The embedded mock Kafka, when no brokers are configured.
    embedded_kafka: Option<EmbeddedKafka>,
    /// The admin listener, when `admin.enabled`.
    admin: Option<TcpListener>,
    metrics: Arc<Metrics>,
    /// The HTTP callbacks' signing secrets, read at build time.
    webhooks: Webhooks,
}

/// A running application (for tests and `main`): its address and a way to stop it.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The admin listener's address (`/metrics`, `/livez`, `/readyz`), when enabled.
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, ends resume streams, and waits.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task panicked")?
    }
}

impl Application {
    /// Connects the database (running migrations if configured) and binds the listener.
    pub async fn build(config: Config) -> Result<Self> {
        // First: instruments made before the provider is installed would stay no-ops.
        let metrics = crate::metrics::install(&config.telemetry)?;
        // Secrets are read once, before anything starts: a missing one stops the start-up.
        let webhooks = config.auth.webhooks()?;
        let url = config.database_url();
        if url.starts_with("sqlite:") && config.database.url.is_empty() {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        }
        let database = Database::connect(&config.database_config())
            .await
            .with_context(|| {
                format!(
                    "opening the database {}",
                    rendezvous_persistence::redact(&url)
                )
            })?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let service = Arc::new(WaitService::new(
            database.store(),
            database.signal(),
            SystemClock,
            rendezvous_service::ServiceConfig {
                topics: config.kafka.topic_policy(config.kafka.brokers.is_empty()),
                callback_url: Some(config.server.callback_url(listener.local_addr()?)),
                ..config.service.service_config(&config.api, &config.secrets)
            },
        ));
        let admin = if config.admin.enabled {
            Some(
                TcpListener::bind(config.admin.listen)
                    .await
                    .with_context(|| format!("binding admin.listen {}", config.admin.listen))?,
            )
        } else {
            None
        };
        let mut config = config;
        let embedded_kafka = if config.kafka.enabled && config.kafka.brokers.is_empty() {
            let kafka = EmbeddedKafka::start(1).map_err(anyhow::Error::msg)?;
            config.kafka.brokers = kafka.bootstrap_servers().to_owned();
            Some(kafka)
        } else {
            None
        };
        Ok(Self {
            config,
            listener,
            database,
            service,
            embedded_kafka,
            admin,
            metrics,
            webhooks,
        })
    }

    /// The embedded Kafka's bootstrap servers, when it runs.
    pub fn embedded_kafka(&self) -> Option<&str> {
        self.embedded_kafka
            .as_ref()
            .map(EmbeddedKafka::bootstrap_servers)
    }

    /// The Kafka brokers the ingress reads from, when it runs.
    pub fn kafka_brokers(&self) -> Option<&str> {
        self.config
            .kafka
            .enabled
            .then_some(self.config.kafka.brokers.as_str())
    }

    /// The bound address (the real port when configured with port 0).
    pub fn addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The admin listener's address, when enabled.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>> {
        Ok(self
            .admin
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?)
    }

    /// Starts serving in the background.
    pub fn spawn(self) -> Result<Running> {
        let addr = self.addr()?;
        let admin_addr = self.admin_addr()?;
        let (shutdown, stopped) = watch::channel(false);
        let mut stop = stopped.clone();
        let task = tokio::spawn(self.serve(
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
            stopped,
        ));
        Ok(Running {
            addr,
            admin_addr,
            shutdown,
            task,
        })
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let (shutdown, stopped) = watch::channel(false);
        let trigger = async move {
            signal.await;
            let _ = shutdown.send(true);
        };
        let mut stop = stopped.clone();
        tokio::spawn(trigger);
        self.serve(
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
            stopped,
        )
        .await
    }

    async fn serve(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
        stopped: watch::Receiver<bool>,
    ) -> Result<()> {
        let Self {
            config,
            listener,
            database,
            service,
            embedded_kafka,
            admin,
            metrics,
            webhooks,
        } = self;
        let addr = listener.local_addr()?;
        let auth = config.auth.authenticator()?;
        if auth.is_open() {
            tracing::warn!(%addr, "no authentication configured: every caller acts as an admin of every tenant (allowed on loopback; see SECURITY.md)");
        }
        let tls = config
            .server
            .tls
            .server_config()?
            .map(tokio_rustls::TlsAcceptor::from);
        let ingress_config = config
            .kafka
            .enabled
            .then(|| config.kafka.ingress_config(embedded_kafka.is_some()));
        let mut api = GrpcApi::new(
            service.clone(),
            config.resume.stream_config(),
            stopped.clone(),
        )
        .with_auth(auth)
        .with_webhooks(webhooks);
        if let Some(ingress_config) = &ingress_config {
            api = api.with_record_reader(Arc::new(RecordReplay::new(
                service.clone(),
                ingress_config.clone(),
            )));
        }
        // gRPC health, /readyz and rendezvous_ready say the same: serving while the database
        // answers and the instance is not draining.
        let (health, health_service) = tonic_health::server::health_reporter();
        let readiness = Readiness::new(health, metrics.clone()).await;
        let health_watch = tokio::spawn(crate::admin::watch_health(
            database.probe(),
            readiness.clone(),
            config.admin.health_interval,
            stopped.clone(),
        ));
        let stats = tokio::spawn(crate::admin::count_stats(
            database.probe(),
            config.admin.stats_interval,
            stopped.clone(),
        ));
        // The admin listener outlives the gRPC server's grace period, so /readyz can say
        // "draining" while in-flight requests finish.
        let (admin_stop, admin_stopped) = watch::channel(false);
        let admin = admin.map(|listener| {
            tokio::spawn(crate::admin::serve(
                listener,
                metrics.clone(),
                readiness.clone(),
                admin_stopped,
            ))
        });
        // Both reflection versions: grpcurl and grpcui speak v1, older tools (Postman,
        // Python's grpc tooling) still ask v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .context("building the reflection service (v1alpha)")?;
        let reflection = reflection()
            .build_v1()
            .context("building the reflection service")?;
        let sweeper = tokio::spawn(sweep(service.clone(), config.clone(), stopped.clone()));
        let purger = config
            .retention
            .enabled
            .then(|| tokio::spawn(purge(service.clone(), config.clone(), stopped.clone())));
        let caller = ReqwestCaller::new(config.api.caller_config(&config.secrets))
            .map_err(anyhow::Error::msg)?;
        let dispatcher = config.api.enabled.then(|| {
            tokio::spawn(dispatch_calls(
                service.clone(),
                caller,
                config.clone(),
                stopped.clone(),
            ))
        });
        let ingress = ingress_config.map(|ingress_config| {
            tokio::spawn(KafkaIngress::new(service.clone(), ingress_config).run(stopped.clone()))
        });
        tracing::info!(%addr, database = %rendezvous_persistence::redact(&config.database_url()), postgres = database.is_postgres(), tls = config.server.tls.enabled(), "rendezvous listening");
        let incoming = crate::listener::incoming(
            listener,
            config.server.max_connections.get() as usize,
            config.server.idle_timeout,
            tls,
        );
        let grace = config.server.shutdown_grace;
        let mut stopped_for_grace = stopped.clone();
        // gRPC, and on the same port the HTTP callbacks (HTTP/1.1 or HTTP/2).
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(api.wait_service())
            .add_service(api.callback_service())
            .add_service(api.admin_service());
        let mut routes = routes.routes();
        let grpc = std::mem::take(routes.axum_router_mut());
        *routes.axum_router_mut() = grpc.merge(api.http_routes());
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(config.server.max_concurrent_streams.get())
            .http2_keepalive_interval(Some(config.server.keepalive_interval))
            .http2_keepalive_timeout(Some(config.server.keepalive_timeout))
            .tcp_keepalive(Some(config.server.keepalive_interval))
            .layer(crate::oversize::OversizeLayer)
            .layer(crate::idle::ActivityLayer)
            .trace_fn(crate::telemetry::request_span)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r.context("serving gRPC"),
            _ = async {
                let _ = stopped_for_grace.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(?grace, "in-flight requests did not finish in time");
                Ok(())
            }
        };
        let _ = admin_stop.send(true);
        let _ = health_watch.await;
        let _ = stats.await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        let _ = sweeper.await;
        if let Some(purger) = purger {
            let _ = purger.await;
        }
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
        }
        if let Some(ingress) = ingress {
            match ingress.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "the kafka ingress failed"),
                Err(e) => tracing::error!(error = %e, "the kafka ingress panicked"),
            }
        }
        drop(embedded_kafka);
        database.close().await;
        tracing::info!("rendezvous stopped");
        result
    }
}

/// Makes due API calls until shutdown (concurrently, within `api.max_in_flight` and
/// `api.max_per_destination`); woken at once by registrations and by calls ending, polling
/// otherwise.
async fn dispatch_calls(
    service: Arc<Service>,
    caller: ReqwestCaller,
    config: Config,
    mut stopped: watch::Receiver<bool>,
) {
    let owner = LeaseOwner::parse(format!("dispatcher-{}", uuid::Uuid::new_v4()))
        .expect("a UUID makes a valid lease owner");
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    service
        .run_api_calls(Arc::new(caller), owner, config.api.poll_interval, stop)
        .await;
}

/// Times out due waits and expires unclaimed buffered events, until shutdown.
async fn sweep(service: Arc<Service>, config: Config, mut stopped: watch::Receiver<bool>) {
    let interval = config.sweeper.interval;
    let batch = config.sweeper.batch.get();
    let mut sweeping = Outage::new("sweeping due waits");
    let mut expiring = Outage::new("expiring buffered events");
    loop {
        loop {
            match service.expire_due(batch).await {
                Ok(n) => {
                    sweeping.succeeded();
                    if n < batch as usize {
                        break;
                    }
                }
                Err(e) => {
                    sweeping.failed(&e);
                    break;
                }
            }
        }
        match service.expire_buffered().await {
            Ok(_) => expiring.succeeded(),
            Err(e) => expiring.failed(&e),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Purges what finished more than `retention.keep_for` ago, every `retention.interval` (the
/// first time one interval after start), until shutdown; while a call leaves a backlog (it ran
/// `MAX_PURGE_ROUNDS` full rounds), the next follows after [`PURGE_BACKLOG_PAUSE`].
async fn purge(service: Arc<Service>, config: Config, mut stopped: watch::Receiver<bool>) {
    let retention = config.retention;
    let mut pause = retention.interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        pause = match service
            .purge_expired(
                retention.keep_for,
                retention.batch.get(),
                rendezvous_service::MAX_PURGE_ROUNDS,
            )
            .await
        {
            Ok(purged) if purged.backlog => PURGE_BACKLOG_PAUSE.min(retention.interval),
            Ok(_) => retention.interval,
            Err(e) => {
                tracing::warn!(error = %e, "purging finished rows failed; retrying at the next interval");
                retention.interval
            }
        };
    }
}

/// The pause between purge calls while a backlog lasts: short, so that purging keeps up with
/// any rate of finished waits, and not nothing, so that other work gets the store between
/// calls.
const PURGE_BACKLOG_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
