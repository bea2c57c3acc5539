//! `rendezvous-e2e`, run by `cargo xtask e2e`: three release instances of `rendezvous` on one
//! PostgreSQL database and one Kafka broker (a real one: Tansu, or `KAFKA_BOOTSTRAP`), a fake
//! external service (a real HTTP server that answers through the callback gateway RPC and
//! publishes the Kafka event in the order a scenario chooses) and a fake engine consuming
//! `ResumeStream` from another instance. Prints a table of named scenarios and a load report;
//! exits non-zero on any failure. Process logs go to `--out` (kept on failure).

// The summary table is this program's output.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::callback_service_client::CallbackServiceClient;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;
use rendezvous_tests::{Engine, seed, seed_variables};
use serde_json::{Value, json};
use tonic::transport::Channel;

struct Args {
    binary: PathBuf,
    tansu: Option<PathBuf>,
    out: PathBuf,
    waits: usize,
}

fn args() -> Result<Args> {
    let mut args = Args {
        binary: PathBuf::from("target/release/rendezvous"),
        tansu: None,
        out: PathBuf::from("target/e2e"),
        waits: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--binary" => args.binary = value()?.into(),
            "--tansu" => args.tansu = Some(value()?.into()),
            "--out" => args.out = value()?.into(),
            "--waits" => args.waits = value()?.parse().context("--waits")?,
            other => bail!("unknown argument {other:?} (--binary, --tansu, --out, --waits)"),
        }
    }
    Ok(args)
}

/// A child process that is killed when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.into(),
            child: Some(child),
        })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) -> Result<()> {
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

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for_port(port: u16, within: Duration) -> Result<()> {
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

/// One service instance.
struct Instance {
    proc: Proc,
    port: u16,
    env: Vec<(String, String)>,
    binary: PathBuf,
    log: PathBuf,
}

impl Instance {
    async fn start(
        binary: &Path,
        name: &str,
        env: Vec<(String, String)>,
        out: &Path,
    ) -> Result<Self> {
        let port = free_port()?;
        let log = out.join(format!("{name}.log"));
        let mut instance = Self {
            proc: Proc {
                name: name.into(),
                child: None,
            },
            port,
            env,
            binary: binary.into(),
            log,
        };
        instance.restart().await?;
        Ok(instance)
    }

    async fn restart(&mut self) -> Result<()> {
        let mut command = Command::new(&self.binary);
        command.envs(self.env.iter().cloned()).env(
            "RENDEZVOUS__SERVER__LISTEN",
            format!("127.0.0.1:{}", self.port),
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

    async fn channel(&self) -> Result<Channel> {
        Ok(
            Channel::from_shared(format!("http://127.0.0.1:{}", self.port))?
                .connect()
                .await?,
        )
    }
}

/// The fake external service: gets the API call, then (per the URL path) answers through the
/// callback RPC and publishes the Kafka event in the scenario's order.
#[derive(Clone)]
struct External {
    callbacks: Vec<CallbackServiceClient<Channel>>,
    producer: FutureProducer,
    calls: Arc<Mutex<HashMap<String, usize>>>,
}

impl External {
    async fn publish(&self, correlation_id: &str, execution_id: &str) -> Result<()> {
        let event = json!({"correlation_id": correlation_id, "execution_id": execution_id, "event_type": "action.completed"}).to_string();
        self.producer
            .send(
                FutureRecord::<str, str>::to("external-service.events")
                    .key(correlation_id)
                    .payload(&event),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing: {e}"))?;
        Ok(())
    }

    async fn callback(&self, correlation_id: &str, execution_id: &str) -> Result<()> {
        let mut client = self.callbacks[fastrand::usize(..self.callbacks.len())].clone();
        client
            .deliver_api_response(v1::DeliverApiResponseRequest {
                correlation_id: correlation_id.into(),
                execution_id: execution_id.into(),
                http_status: 200,
                body: br#"{"result":"ok"}"#.to_vec(),
                idempotency_key: format!("api-{correlation_id}"),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// `order`: "api-then-kafka", "kafka-then-api", "none" (the scenario sends events itself).
    async fn handle(
        &self,
        order: &str,
        correlation_id: String,
        execution_id: String,
    ) -> Result<()> {
        *self
            .calls
            .lock()
            .expect("lock")
            .entry(correlation_id.clone())
            .or_default() += 1;
        match order {
            "api-then-kafka" => {
                self.callback(&correlation_id, &execution_id).await?;
                self.publish(&correlation_id, &execution_id).await
            }
            "kafka-then-api" => {
                self.publish(&correlation_id, &execution_id).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.callback(&correlation_id, &execution_id).await
            }
            _ => Ok(()),
        }
    }

    async fn serve(self) -> Result<String> {
        use axum::extract::Path as UrlPath;
        use axum::http::HeaderMap;
        let handler = move |UrlPath(order): UrlPath<String>, headers: HeaderMap| {
            let me = self.clone();
            async move {
                let get = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let (c, e) = (get("x-correlation-id"), get("x-execution-id"));
                // Both events before the HTTP call returns: they are sent before answering.
                if let Err(err) = me.handle(&order, c, e).await {
                    eprintln!("e2e: external service: {err:#}");
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "retry").into_response();
                }
                (axum::http::StatusCode::ACCEPTED, "accepted").into_response()
            }
        };
        use axum::response::IntoResponse;
        let app = axum::Router::new().route("/call/{order}", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(url)
    }
}

/// Resumes seen by the fake engine over the whole run: wait id → resume ids and outcomes.
type Seen = Arc<Mutex<HashMap<String, Vec<(String, i32, Instant)>>>>;

/// The fake engine: one resume stream per given instance, acking everything, recording it all.
fn engine(channel: Channel, seen: Seen) {
    tokio::spawn(async move {
        loop {
            // The default tenant only: scenarios with a tenant of their own run their own engine.
            let client = WaitServiceClient::new(channel.clone());
            let Ok(mut stream) = Engine::connect_tenant(client, "default", 256).await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            while let Ok(resume) = stream.next(Duration::from_secs(3600)).await {
                seen.lock()
                    .expect("lock")
                    .entry(resume.wait_id.clone())
                    .or_default()
                    .push((resume.resume_id.clone(), resume.outcome, Instant::now()));
                let _ = stream.ack(&resume).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

struct World {
    clients: Vec<WaitServiceClient<Channel>>,
    callbacks: Vec<CallbackServiceClient<Channel>>,
    external_url: String,
    external: External,
    seen: Seen,
}

impl World {
    fn client(&self) -> WaitServiceClient<Channel> {
        self.clients[fastrand::usize(..self.clients.len())].clone()
    }

    async fn register(
        &self,
        execution_id: &str,
        config: &Value,
        correlation_id: &str,
    ) -> Result<v1::RegisterWaitResponse> {
        Ok(self
            .client()
            .register_wait(v1::RegisterWaitRequest {
                execution_id: execution_id.into(),
                node_id: "wait-1".into(),
                node_config_json: config.to_string(),
                input_variables: seed_variables(),
                correlation_id: correlation_id.into(),
                ..Default::default()
            })
            .await?
            .into_inner())
    }

    fn seed_1(&self, order: &str) -> Value {
        let mut config = seed("01-wait-for-both.json");
        config["data"]["apiCall"]["url"] = json!(format!("{}/call/{order}", self.external_url));
        config
    }

    async fn resume_of(&self, wait_id: &str, within: Duration) -> Result<(String, i32)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(first) = self
                .seen
                .lock()
                .expect("lock")
                .get(wait_id)
                .and_then(|v| v.first().cloned())
            {
                return Ok((first.0, first.1));
            }
            ensure!(
                Instant::now() < deadline,
                "no resume for wait {wait_id} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn expect_outcome(&self, wait_id: &str, outcome: v1::Outcome) -> Result<()> {
        let (_, got) = self.resume_of(wait_id, Duration::from_secs(60)).await?;
        ensure!(
            got == outcome as i32,
            "wait {wait_id}: outcome {got}, expected {outcome:?}"
        );
        Ok(())
    }
}

async fn scenario_seed_1(world: &World, order: &str) -> Result<()> {
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let r = world.register(&exec, &world.seed_1(order), "").await?;
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await
}

async fn scenario_duplicates_and_wrong_execution(world: &World) -> Result<()> {
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let r = world.register(&exec, &world.seed_1("none"), "").await?;
    // Wrong execution id: refused, recorded, never applied.
    let wrong = world.callbacks[0]
        .clone()
        .deliver_api_response(v1::DeliverApiResponseRequest {
            correlation_id: r.correlation_id.clone(),
            execution_id: "someone-else".into(),
            http_status: 200,
            idempotency_key: "wrong".into(),
            ..Default::default()
        })
        .await;
    ensure!(
        wrong.is_err_and(|s| s.code() == tonic::Code::FailedPrecondition),
        "a wrong execution id is refused"
    );
    // Duplicates on both channels, through different instances.
    for _ in 0..3 {
        world.external.callback(&r.correlation_id, &exec).await?;
        world.external.publish(&r.correlation_id, &exec).await?;
    }
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await?;
    let w = world
        .client()
        .get_wait(v1::GetWaitRequest {
            key: Some(v1::get_wait_request::Key::WaitId(r.wait_id.clone())),
            tenant_id: String::new(),
        })
        .await?
        .into_inner();
    ensure!(
        w.ignored.iter().any(|i| i.kind == "execution_mismatch"),
        "the mismatch is recorded on the wait"
    );
    Ok(())
}

async fn scenario_events_before_registration(world: &World) -> Result<()> {
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let correlation_id = format!("order-{}", uuid::Uuid::new_v4());
    world.external.publish(&correlation_id, &exec).await?;
    world.external.callback(&correlation_id, &exec).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = world
        .register(&exec, &world.seed_1("none"), &correlation_id)
        .await?;
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await
}

async fn scenario_timeout_and_cancel(world: &World) -> Result<()> {
    let mut config = world.seed_1("none");
    config["data"]["timeout"] = json!(2);
    let timed = world
        .register(&format!("exec-{}", uuid::Uuid::new_v4()), &config, "")
        .await?;
    config["data"]["onTimeout"] = json!("resume_with_partial");
    let partial = world
        .register(&format!("exec-{}", uuid::Uuid::new_v4()), &config, "")
        .await?;
    let cancelled = world
        .register(
            &format!("exec-{}", uuid::Uuid::new_v4()),
            &world.seed_1("none"),
            "",
        )
        .await?;
    world
        .client()
        .cancel_wait(v1::CancelWaitRequest {
            key: Some(v1::cancel_wait_request::Key::WaitId(
                cancelled.wait_id.clone(),
            )),
            ..Default::default()
        })
        .await?;
    world
        .expect_outcome(&timed.wait_id, v1::Outcome::TimedOut)
        .await?;
    world
        .expect_outcome(&partial.wait_id, v1::Outcome::Partial)
        .await?;
    world
        .expect_outcome(&cancelled.wait_id, v1::Outcome::Cancelled)
        .await
}

async fn scenario_seed_configs_and_strategies(world: &World) -> Result<()> {
    // Seed 2 (any): the Kafka event alone completes it.
    let mut any = seed("02-wait-for-any.json");
    any["data"]["apiCall"]["url"] = json!(format!("{}/call/none", world.external_url));
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let r = world.register(&exec, &any, "").await?;
    world.external.publish(&r.correlation_id, &exec).await?;
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await?;
    // Seed 3 (api only): the callback alone completes it.
    let mut api_only = seed("03-api-only.json");
    api_only["data"]["apiCall"]["url"] =
        json!(format!("{}/call/api-then-kafka", world.external_url));
    let r = world
        .register(&format!("exec-{}", uuid::Uuid::new_v4()), &api_only, "")
        .await?;
    world
        .expect_outcome(&r.wait_id, v1::Outcome::Completed)
        .await?;
    // required_only and custom over the seed's two sources: the API response suffices.
    for strategy in [
        json!("required_only"),
        json!({"type": "custom", "sources": ["api"]}),
    ] {
        let mut config = world.seed_1("none");
        config["data"]["kafkaEvent"]["required"] = json!(false);
        config["data"]["aggregationStrategy"] = strategy;
        let exec = format!("exec-{}", uuid::Uuid::new_v4());
        let r = world.register(&exec, &config, "").await?;
        world.external.callback(&r.correlation_id, &exec).await?;
        world
            .expect_outcome(&r.wait_id, v1::Outcome::Completed)
            .await?;
    }
    Ok(())
}

/// An engine that disconnects without acking gets the resume again on reconnect (to another
/// instance); once acknowledged it never comes back.
async fn scenario_engine_reconnects(world: &World, instances: &[Instance]) -> Result<()> {
    // A tenant of its own, so the always-on engine does not take these resumes.
    let tenant = format!("t-{}", fastrand::u32(..));
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let r = world
        .client()
        .register_wait(v1::RegisterWaitRequest {
            execution_id: exec.clone(),
            node_id: "wait-1".into(),
            node_config_json:
                json!({"type": "wait_events", "data": {"sources": {"done": {"type": "callback"}}}})
                    .to_string(),
            tenant_id: tenant.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    world.callbacks[0]
        .clone()
        .deliver_event(v1::DeliverEventRequest {
            correlation_id: r.correlation_id.clone(),
            execution_id: exec,
            source: "done".into(),
            payload_json: "{}".into(),
            event_key: "e".into(),
            tenant_id: tenant.clone(),
        })
        .await?;
    let connect =
        |channel: Channel| Engine::connect_tenant(WaitServiceClient::new(channel), &tenant, 8);
    let within = Duration::from_secs(20);
    let mut engine = connect(instances[0].channel().await?).await?;
    let first = engine.next(within).await?;
    ensure!(first.wait_id == r.wait_id);
    drop(engine);
    let mut engine = connect(instances[1].channel().await?).await?;
    let again = engine.next(within).await?;
    ensure!(
        again.resume_id == first.resume_id && again.delivery_attempt >= 2,
        "redelivered after the reconnect"
    );
    engine.ack(&again).await?;
    engine.close().await?;
    let mut engine = connect(instances[2].channel().await?).await?;
    engine.expect_nothing(Duration::from_secs(3)).await?;
    Ok(())
}

/// The load phase: `n` waits through random instances, events in random order; one instance
/// is SIGKILLed half-way and restarted. Every wait must be decided once.
async fn load(world: &World, instances: &mut [Instance], n: usize) -> Result<String> {
    let started = Instant::now();
    let mut registered = Vec::with_capacity(n);
    let mut registered_at: HashMap<String, Instant> = HashMap::with_capacity(n);
    let mut killed = false;
    let mut batch = Vec::new();
    for i in 0..n {
        let order = if fastrand::bool() {
            "api-then-kafka"
        } else {
            "kafka-then-api"
        };
        let config = world.seed_1(order);
        batch.push(async move {
            let exec = format!("load-{i}");
            let r = world.register(&exec, &config, "").await;
            (exec, r)
        });
        if batch.len() == 64 || i + 1 == n {
            for (exec, r) in futures_util::future::join_all(batch.drain(..)).await {
                match r {
                    Ok(r) => {
                        registered_at.insert(r.wait_id.clone(), Instant::now());
                        registered.push(r.wait_id);
                    }
                    // The killed instance refuses: the engine retries on another.
                    Err(_) => registered.push(
                        world
                            .register(&exec, &world.seed_1("api-then-kafka"), "")
                            .await?
                            .wait_id,
                    ),
                }
            }
        }
        if !killed && i >= n / 2 {
            instances[1].proc.kill();
            killed = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
            instances[1].restart().await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = {
            let seen = world.seen.lock().expect("lock");
            registered.iter().filter(|w| seen.contains_key(*w)).count()
        };
        if done == n {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {done} of {n} waits resumed within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    let seen = world.seen.lock().expect("lock");
    for w in &registered {
        let resumes = &seen[w];
        let first = &resumes[0].0;
        ensure!(
            resumes
                .iter()
                .all(|(id, outcome, _)| id == first && *outcome == v1::Outcome::Completed as i32),
            "wait {w} decided twice or not completed: {resumes:?}"
        );
    }
    // Registration-to-resume latency (the external service answers at once, so this covers
    // the call, both events and the resume; the finer last-event split is the bench's job).
    let mut latencies: Vec<Duration> = registered
        .iter()
        .filter_map(|w| {
            Some(
                seen[w][0]
                    .2
                    .saturating_duration_since(*registered_at.get(w)?),
            )
        })
        .collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(format!(
        "{n} waits, {:.0} joins/s over {:.1} s, register to resume p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms; one instance SIGKILLed and restarted",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.95),
        pct(0.99)
    ))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("e2e: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<bool> {
    let args = args()?;
    std::fs::create_dir_all(&args.out)?;
    // PostgreSQL: DATABASE_URL, or a fresh database on the local server.
    let (database_url, _db) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let db = rendezvous_persistence::testing::TestDatabase::create(
                rendezvous_persistence::testing::Backend::Postgres,
            )
            .await?;
            (db.url.clone(), Some(db))
        }
    };
    // Kafka: KAFKA_BOOTSTRAP, or a Tansu broker process.
    let mut _broker = None;
    let bootstrap = match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) => b,
        Err(_) => {
            let tansu = args
                .tansu
                .clone()
                .context("no KAFKA_BOOTSTRAP and no --tansu")?;
            let port = free_port()?;
            let listener = format!("tcp://127.0.0.1:{port}");
            let mut command = Command::new(tansu);
            command.args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
                "--storage-engine",
                "memory://tansu/",
            ]);
            _broker = Some(Proc::spawn("tansu", command, &args.out.join("tansu.log"))?);
            wait_for_port(port, Duration::from_secs(30)).await?;
            format!("127.0.0.1:{port}")
        }
    };
    let env = |name: &str| -> Vec<(String, String)> {
        [
            ("RENDEZVOUS__DATABASE__URL", database_url.as_str()),
            ("RENDEZVOUS__KAFKA__BROKERS", bootstrap.as_str()),
            ("RENDEZVOUS__KAFKA__REFRESH_INTERVAL_MS", "500"),
            ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
            ("RENDEZVOUS__RESUME__ACK_TIMEOUT_MS", "5000"),
            ("RENDEZVOUS__TELEMETRY__LOG_FORMAT", "json"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([
            (
                "RENDEZVOUS__DATA_DIR".to_owned(),
                args.out.join(name).display().to_string(),
            ),
            (
                "RENDEZVOUS__KAFKA__GROUP_INSTANCE_ID".to_owned(),
                name.to_owned(),
            ),
        ])
        .collect()
    };
    let mut instances = Vec::new();
    for i in 1..=3 {
        let name = format!("instance-{i}");
        instances.push(Instance::start(&args.binary, &name, env(&name), &args.out).await?);
    }
    let mut clients = Vec::new();
    let mut callbacks = Vec::new();
    for instance in &instances {
        let channel = instance.channel().await?;
        clients.push(WaitServiceClient::new(channel.clone()));
        callbacks.push(CallbackServiceClient::new(channel));
    }
    // The external service's topic (brokers need not auto-create topics).
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
    let topic = rdkafka::admin::NewTopic::new(
        "external-service.events",
        3,
        rdkafka::admin::TopicReplication::Fixed(1),
    );
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
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let external = External {
        callbacks: callbacks.clone(),
        producer,
        calls: Arc::default(),
    };
    let external_url = external.clone().serve().await?;
    let seen: Seen = Arc::default();
    // The engine consumes from instance 3; waits are registered through 1 and 2 (and 3).
    engine(instances[2].channel().await?, seen.clone());
    let world = World {
        clients,
        callbacks,
        external_url,
        external,
        seen,
    };

    let mut results: Vec<(String, Result<String>, Duration)> = Vec::new();
    macro_rules! scenario {
        ($name:expr, $body:expr) => {{
            let started = Instant::now();
            let result = $body.await.map(|_| String::new());
            results.push(($name.to_owned(), result, started.elapsed()));
        }};
    }
    scenario!(
        "api response first",
        scenario_seed_1(&world, "api-then-kafka")
    );
    scenario!(
        "kafka event first",
        scenario_seed_1(&world, "kafka-then-api")
    );
    scenario!(
        "duplicates on both channels, wrong execution id",
        scenario_duplicates_and_wrong_execution(&world)
    );
    scenario!(
        "events before registration",
        scenario_events_before_registration(&world)
    );
    scenario!(
        "timeout (both policies) and cancel",
        scenario_timeout_and_cancel(&world)
    );
    scenario!(
        "seed configs 2 and 3, required_only, custom",
        scenario_seed_configs_and_strategies(&world)
    );
    scenario!(
        "engine disconnects and reconnects elsewhere",
        scenario_engine_reconnects(&world, &instances)
    );
    let started = Instant::now();
    let report = load(&world, &mut instances, args.waits).await;
    results.push((
        "load with SIGKILL of one instance".into(),
        report,
        started.elapsed(),
    ));
    let mut stop = Ok(String::new());
    for instance in &mut instances {
        if let Err(e) = instance.proc.terminate() {
            stop = Err(e);
        }
    }
    results.push((
        "graceful stop of every instance".into(),
        stop,
        Duration::ZERO,
    ));

    println!("\n{:<52} {:<6} {:>9}  detail", "scenario", "result", "time");
    let mut ok = true;
    for (name, result, took) in &results {
        let (verdict, detail) = match result {
            Ok(detail) => ("ok", detail.clone()),
            Err(e) => {
                ok = false;
                ("FAIL", format!("{e:#}"))
            }
        };
        println!(
            "{name:<52} {verdict:<6} {:>8.1}s  {detail}",
            took.as_secs_f64()
        );
    }
    if ok {
        println!("\nall scenarios passed");
    } else {
        println!(
            "\nsome scenarios failed; process logs are in {}",
            args.out.display()
        );
    }
    Ok(ok)
}
