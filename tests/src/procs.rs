//! Child processes for the e2e and bench harnesses: release `rendezvous` instances, the
//! Tansu broker, and the helpers they share (free ports, waiting for a port, retryable codes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rendezvous_grpc_api::v1;
use tonic::transport::{Channel, Endpoint};

use crate::security::{ClientCredentials, tls_channel, tls_endpoint};

/// A child process that is killed when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; fails unless it exits successfully within 20 s.
    pub fn terminate(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait()? {
                    ensure!(
                        status.success(),
                        "{} exited with {status} on SIGTERM",
                        self.name
                    );
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    bail!("{} did not stop within 20 s of SIGTERM", self.name);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Errors a caller retries (every RPC it retries is idempotent): the instance or its database
/// is away for a moment. `UNKNOWN` and `CANCELLED` are what tonic reports when the connection
/// drops mid-call (the server never answers them: every error maps to a code in `status.rs`).
pub fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Aborted
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    )
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub async fn wait_for_port(port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        ensure!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The Tansu broker process with durable SQLite storage in the output directory, so a
/// restart keeps its topics, records and group offsets like any real broker; restartable on
/// the same port.
pub struct Broker {
    proc: Proc,
    tansu: PathBuf,
    port: u16,
    log: PathBuf,
    /// Its working directory: it stores into `tansu.db` there.
    dir: PathBuf,
    /// `--storage-engine`.
    storage: &'static str,
}

impl Broker {
    /// Starts `tansu` on a free port, storing into `out/tansu.db` (so that its records outlive
    /// a restart), logging to `out/tansu.log`.
    pub async fn start(tansu: PathBuf, out: &Path) -> Result<Self> {
        Self::start_with(tansu, out, "sqlite://tansu.db").await
    }

    /// Starts `tansu` keeping its records in memory: no write of its own per record, as an
    /// Apache Kafka broker acknowledges from its page cache (the benchmark's broker).
    pub async fn start_in_memory(tansu: PathBuf, out: &Path) -> Result<Self> {
        Self::start_with(tansu, out, "memory://tansu/").await
    }

    async fn start_with(tansu: PathBuf, out: &Path, storage: &'static str) -> Result<Self> {
        let mut broker = Self {
            proc: Proc {
                name: "tansu".into(),
                child: None,
            },
            tansu,
            port: free_port()?,
            log: out.join("tansu.log"),
            dir: out.to_path_buf(),
            storage,
        };
        broker.restart().await?;
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (if running) and starts it again on the same port.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.kill();
        let listener = format!("tcp://{}", self.bootstrap());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.tansu)
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
                "--storage-engine",
                // Tansu resolves a SQLite path against its working directory.
                self.storage,
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .current_dir(&self.dir)
            .spawn()
            .context("starting tansu")?;
        self.proc.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(30)).await
    }
}

/// Creates the external service's topic (brokers need not auto-create topics).
pub async fn create_topic(bootstrap: &str) -> Result<()> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()?;
    let topic =
        rdkafka::admin::NewTopic::new(SERVICE_TOPIC, 3, rdkafka::admin::TopicReplication::Fixed(1));
    for result in admin
        .create_topics([&topic], &rdkafka::admin::AdminOptions::new())
        .await?
    {
        if let Err((name, code)) = result
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            bail!("creating topic {name}: {code}");
        }
    }
    Ok(())
}

/// One service instance.
pub struct Instance {
    /// The process.
    pub proc: Proc,
    port: u16,
    admin_port: u16,
    env: Vec<(String, String)>,
    binary: PathBuf,
    log: PathBuf,
    credentials: Option<ClientCredentials>,
}

impl Instance {
    /// Starts `binary` on a free port with `env`, logging to `out/<name>.log`.
    pub async fn start(
        binary: &Path,
        name: &str,
        env: Vec<(String, String)>,
        out: &Path,
    ) -> Result<Self> {
        let port = free_port()?;
        let admin_port = free_port()?;
        let log = out.join(format!("{name}.log"));
        let mut instance = Self {
            proc: Proc {
                name: name.into(),
                child: None,
            },
            port,
            admin_port,
            env,
            binary: binary.into(),
            log,
            credentials: None,
        };
        instance.restart().await?;
        Ok(instance)
    }

    /// Starts the process again (after a kill) on the same port, appending to its log.
    pub async fn restart(&mut self) -> Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .envs(self.env.iter().cloned())
            .env(
                "RENDEZVOUS__SERVER__LISTEN",
                format!("127.0.0.1:{}", self.port),
            )
            .env(
                "RENDEZVOUS__ADMIN__LISTEN",
                format!("127.0.0.1:{}", self.admin_port),
            );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = command
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?;
        self.proc.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(60)).await
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of its admin listener (`/metrics`, `/livez`, `/readyz`).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Clients of this instance connect over TLS with these credentials (it was started
    /// with the matching [`crate::security::SecureDeployment`] environment).
    pub fn with_credentials(mut self, credentials: ClientCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// A connected gRPC channel to it, as the engine (its client certificate, with TLS).
    pub async fn channel(&self) -> Result<Channel> {
        match &self.credentials {
            None => Ok(
                Channel::from_shared(format!("http://127.0.0.1:{}", self.port))?
                    .connect()
                    .await?,
            ),
            Some(c) => tls_channel(self.port, &c.ca, Some(&c.engine)).await,
        }
    }

    /// Its endpoint for the engine (with TLS, the engine's client certificate), not yet
    /// connected: what a [`rendezvous_client::ResumeFeed`] takes.
    pub fn endpoint(&self) -> Result<Endpoint> {
        match &self.credentials {
            None => Ok(Endpoint::from_shared(format!(
                "http://127.0.0.1:{}",
                self.port
            ))?),
            Some(c) => tls_endpoint(self.port, &c.ca, Some(&c.engine)),
        }
    }

    /// A connected gRPC channel to it, as the callback gateway.
    pub async fn gateway_channel(&self) -> Result<Channel> {
        match &self.credentials {
            None => self.channel().await,
            Some(c) => tls_channel(self.port, &c.ca, Some(&c.gateway)).await,
        }
    }
}

/// What the fake external service sends: its API response through the callback gateway.
pub fn api_response(correlation_id: &str, execution_id: &str) -> v1::DeliverApiResponseRequest {
    v1::DeliverApiResponseRequest {
        correlation_id: correlation_id.into(),
        execution_id: execution_id.into(),
        http_status: 200,
        body: br#"{"result":"ok"}"#.to_vec(),
        idempotency_key: format!("api-{correlation_id}"),
        ..Default::default()
    }
}

/// The topic the fake external service publishes to (seed node config 1's).
pub const SERVICE_TOPIC: &str = "external-service.events";

/// The fake external service's Kafka event for a wait, as JSON text.
pub fn service_event(correlation_id: &str, execution_id: &str) -> String {
    serde_json::json!({"correlation_id": correlation_id, "execution_id": execution_id, "event_type": "action.completed"}).to_string()
}

/// Publishes the service's event to [`SERVICE_TOPIC`], keyed by correlation id.
pub async fn publish(
    producer: &rdkafka::producer::FutureProducer,
    correlation_id: &str,
    execution_id: &str,
) -> Result<()> {
    let event = service_event(correlation_id, execution_id);
    producer
        .send(
            rdkafka::producer::FutureRecord::<str, str>::to(SERVICE_TOPIC)
                .key(correlation_id)
                .payload(&event),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("publishing: {e}"))?;
    Ok(())
}

/// Runs `statements` with `psql` against `database_url`, each as its own `-c` (so one may be
/// `VACUUM`), stopping at the first error; returns the output, unaligned and tuples only.
pub fn psql(database_url: &str, statements: &[&str]) -> Result<String> {
    let mut command = Command::new("psql");
    command.args([database_url, "-v", "ON_ERROR_STOP=1", "-qAt"]);
    for statement in statements {
        command.args(["-c", statement]);
    }
    let out = command.output().context("running psql")?;
    ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
