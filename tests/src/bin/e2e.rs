//! `rendezvous-e2e`, run by `cargo xtask e2e`: three release instances of `rendezvous` on one
//! PostgreSQL database and one Kafka broker (a real one: Tansu, or `KAFKA_BOOTSTRAP`), a fake
//! external service (a real HTTP server that answers through the callback gateway RPC and
//! publishes the Kafka event in the order a scenario chooses) and a fake engine consuming
//! `ResumeStream` from another instance. Prints a table of named scenarios and a load report;
//! exits non-zero on any failure. Process logs go to `--out` (kept on failure).

// The summary table is this program's output.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::producer::FutureProducer;
use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::callback_service_client::CallbackServiceClient;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;
use rendezvous_tests::procs::{
    Broker, Instance, api_response, create_topic, psql, publish, retryable,
};
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

/// The fake external service: gets the API call, then (per the URL path) answers through the
/// callback RPC and publishes the Kafka event in the scenario's order.
#[derive(Clone)]
struct External {
    callbacks: Vec<CallbackServiceClient<Channel>>,
    producer: FutureProducer,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    /// Correlation id → when the external service began sending the wait's last event.
    last_event: Arc<Mutex<HashMap<String, Instant>>>,
}

impl External {
    /// Publishes the service's Kafka event, as a producer does: retried while the broker is
    /// away (a restart), for up to a minute.
    async fn publish(&self, correlation_id: &str, execution_id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match publish(&self.producer, correlation_id, execution_id).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Answers through the callback gateway RPC of a random instance, as a gateway does:
    /// `UNAVAILABLE` (an instance down, the database away) is retried, on any instance, for
    /// up to a minute.
    async fn callback(&self, correlation_id: &str, execution_id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut client = self.callbacks[fastrand::usize(..self.callbacks.len())].clone();
            let answered = client
                .deliver_api_response(api_response(correlation_id, execution_id))
                .await;
            match answered {
                Ok(_) => return Ok(()),
                Err(s) if retryable(&s) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => bail!("DeliverApiResponse: {s}"),
            }
        }
    }

    fn last_event_now(&self, correlation_id: &str) {
        self.last_event
            .lock()
            .expect("lock")
            .insert(correlation_id.to_owned(), Instant::now());
    }

    /// `order`: "api-then-kafka", "kafka-then-api" (both sent before the HTTP call returns),
    /// "reply-first" (the call returns, then both events follow), "none" (the scenario sends
    /// the events itself).
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
                self.last_event_now(&correlation_id);
                self.publish(&correlation_id, &execution_id).await
            }
            "kafka-then-api" => {
                self.publish(&correlation_id, &execution_id).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.last_event_now(&correlation_id);
                self.callback(&correlation_id, &execution_id).await
            }
            "reply-first" => {
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let sent = async {
                        me.callback(&correlation_id, &execution_id).await?;
                        me.last_event_now(&correlation_id);
                        me.publish(&correlation_id, &execution_id).await
                    };
                    if let Err(e) = sent.await {
                        eprintln!("e2e: external service: {e:#}");
                    }
                });
                Ok(())
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
        // An instance that is down (or loses its database) answers UNAVAILABLE: the engine
        // retries on any instance. Registration is idempotent per execution and node, so a
        // retry after a lost reply gets the same wait.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let registered = self
                .client()
                .register_wait(v1::RegisterWaitRequest {
                    execution_id: execution_id.into(),
                    node_id: "wait-1".into(),
                    node_config_json: config.to_string(),
                    input_variables: seed_variables(),
                    correlation_id: correlation_id.into(),
                    ..Default::default()
                })
                .await;
            match registered {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if retryable(&s) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => bail!("RegisterWait: {s}"),
            }
        }
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
        self.expect_outcome_within(wait_id, outcome, Duration::from_secs(60))
            .await
    }

    async fn expect_outcome_within(
        &self,
        wait_id: &str,
        outcome: v1::Outcome,
        within: Duration,
    ) -> Result<()> {
        let (_, got) = self.resume_of(wait_id, within).await?;
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
        .into_inner()
        .wait
        .context("GetWait answered without a wait")?;
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

/// The broker is SIGKILLed and restarted (durable storage: it keeps its log and the group's
/// offsets): a wait whose Kafka event was published just before the kill, one whose event is
/// published after the restart, and one registered after it, all complete.
async fn scenario_broker_restart(world: &World, broker: &mut Broker) -> Result<()> {
    let new_exec = || format!("exec-{}", uuid::Uuid::new_v4());
    let (exec_a, exec_b) = (new_exec(), new_exec());
    let published = world.register(&exec_a, &world.seed_1("none"), "").await?;
    let before = world.register(&exec_b, &world.seed_1("none"), "").await?;
    world
        .external
        .publish(&published.correlation_id, &exec_a)
        .await?;
    broker.restart().await?;
    world
        .external
        .callback(&published.correlation_id, &exec_a)
        .await?;
    world
        .external
        .callback(&before.correlation_id, &exec_b)
        .await?;
    world
        .external
        .publish(&before.correlation_id, &exec_b)
        .await?;
    let after = world
        .register(&new_exec(), &world.seed_1("kafka-then-api"), "")
        .await?;
    for wait in [&published, &before, &after] {
        world
            .expect_outcome_within(
                &wait.wait_id,
                v1::Outcome::Completed,
                Duration::from_secs(120),
            )
            .await
            .context("after the broker restart")?;
    }
    Ok(())
}

/// Every database connection of every instance is cut (`pg_terminate_backend`, as a failover
/// or a proxy restart does): the pools and the LISTEN connection reconnect, a wait registered
/// before the cut and one registered after it complete.
async fn scenario_database_drop(world: &World, database_url: &str) -> Result<()> {
    let exec = format!("exec-{}", uuid::Uuid::new_v4());
    let before = world.register(&exec, &world.seed_1("none"), "").await?;
    let cut = psql(
        database_url,
        &[
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
           WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ],
    )?;
    let terminated: u32 = cut.trim().parse()?;
    ensure!(terminated > 0, "no connection to cut");
    world
        .external
        .callback(&before.correlation_id, &exec)
        .await?;
    world
        .external
        .publish(&before.correlation_id, &exec)
        .await?;
    let after = world
        .register(
            &format!("exec-{}", uuid::Uuid::new_v4()),
            &world.seed_1("api-then-kafka"),
            "",
        )
        .await?;
    for wait in [&before, &after] {
        world
            .expect_outcome(&wait.wait_id, v1::Outcome::Completed)
            .await
            .context("after the connections were cut")?;
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

/// The load phase: `n` waits through random instances (at most 128 registrations in flight),
/// events in random order; one instance is SIGKILLed half-way and restarted. Every wait must
/// be decided exactly once. Reports throughput and last-event-to-resume latency.
async fn load(world: &World, instances: &mut [Instance], n: usize) -> Result<String> {
    use futures_util::StreamExt as _;
    let started = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let register = async {
        futures_util::stream::iter(0..n)
            .map(|i| {
                let done = &done;
                async move {
                    let order = if fastrand::bool() {
                        "api-then-kafka"
                    } else {
                        "kafka-then-api"
                    };
                    let r = world
                        .register(&format!("load-{i}"), &world.seed_1(order), "")
                        .await;
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    r
                }
            })
            .buffer_unordered(128)
            .collect::<Vec<_>>()
            .await
    };
    let kill = async {
        while done.load(std::sync::atomic::Ordering::Relaxed) < n / 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        instances[1].proc.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        instances[1].restart().await
    };
    let (registered, killed) = tokio::join!(register, kill);
    killed?;
    let registered: Vec<v1::RegisterWaitResponse> =
        registered.into_iter().collect::<Result<_>>()?;
    let registered_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let resumed = {
            let seen = world.seen.lock().expect("lock");
            registered
                .iter()
                .filter(|r| seen.contains_key(&r.wait_id))
                .count()
        };
        if resumed == n {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {resumed} of {n} waits resumed within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let seen = world.seen.lock().expect("lock");
    let mut resume_ids = std::collections::HashSet::new();
    for r in &registered {
        let resumes = &seen[&r.wait_id];
        let first = &resumes[0].0;
        ensure!(
            resumes
                .iter()
                .all(|(id, outcome, _)| id == first && *outcome == v1::Outcome::Completed as i32),
            "wait {} decided twice or not completed: {resumes:?}",
            r.wait_id
        );
        resume_ids.insert(first.clone());
    }
    ensure!(
        resume_ids.len() == n,
        "{} distinct resumes for {n} waits",
        resume_ids.len()
    );
    // From the moment the external service began sending a wait's last event to the resume
    // reaching the engine (redeliveries after the SIGKILL included).
    let last_event = world.external.last_event.lock().expect("lock");
    let mut latencies: Vec<Duration> = registered
        .iter()
        .filter_map(|r| {
            Some(
                seen[&r.wait_id][0]
                    .2
                    .saturating_duration_since(*last_event.get(&r.correlation_id)?),
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
        "{n} waits, exactly {n} resumes; {:.0} joins/s ({:.1} s, registered in {:.1} s); last event to resume p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms max {:.0} ms ({} measured); one instance SIGKILLed and restarted",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        registered_in.as_secs_f64(),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        pct(1.0),
        latencies.len()
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
    // Kafka: KAFKA_BOOTSTRAP, or a Tansu broker process (which the broker-restart scenario
    // restarts; with KAFKA_BOOTSTRAP that scenario is skipped).
    let mut broker = None;
    let bootstrap = match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) => b,
        Err(_) => {
            let tansu = args
                .tansu
                .clone()
                .context("no KAFKA_BOOTSTRAP and no --tansu")?;
            let started = Broker::start(tansu, &args.out).await?;
            let bootstrap = started.bootstrap();
            broker = Some(started);
            bootstrap
        }
    };
    let env = |name: &str| -> Vec<(String, String)> {
        [
            ("RENDEZVOUS__DATABASE__URL", database_url.as_str()),
            ("RENDEZVOUS__KAFKA__BROKERS", bootstrap.as_str()),
            ("RENDEZVOUS__KAFKA__REFRESH_INTERVAL", "500ms"),
            ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
            ("RENDEZVOUS__RESUME__ACK_TIMEOUT", "5s"),
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
    create_topic(&bootstrap).await?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let external = External {
        callbacks: callbacks.clone(),
        producer,
        calls: Arc::default(),
        last_event: Arc::default(),
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
        "api response first (both before the call returns)",
        scenario_seed_1(&world, "api-then-kafka")
    );
    scenario!(
        "kafka event first (both before the call returns)",
        scenario_seed_1(&world, "kafka-then-api")
    );
    scenario!(
        "call returns, then both events",
        scenario_seed_1(&world, "reply-first")
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
    scenario!(
        "database connections cut",
        scenario_database_drop(&world, &database_url)
    );
    let started = Instant::now();
    let report = load(&world, &mut instances, args.waits).await;
    results.push((
        "load with SIGKILL of one instance".into(),
        report,
        started.elapsed(),
    ));
    match broker.as_mut() {
        Some(broker) => scenario!("broker restart", scenario_broker_restart(&world, broker)),
        None => results.push((
            "broker restart".into(),
            Ok("skipped: KAFKA_BOOTSTRAP is an outside broker".into()),
            Duration::ZERO,
        )),
    }
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
