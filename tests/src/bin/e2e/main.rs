//! `rendezvous-e2e`, run by `cargo xtask e2e`: three release instances of `rendezvous` on one
//! PostgreSQL database and one Kafka broker (a real one: Tansu, or `KAFKA_BOOTSTRAP`), a fake
//! external service (a real HTTP server that answers through the callback gateway RPC and
//! publishes the Kafka event in the order a scenario chooses) and a fake engine consuming
//! `ResumeStream` from another instance. Prints a table of named scenarios and a load report;
//! exits non-zero on any failure. Process logs go to `--out` (kept on failure).

// The summary table is this program's output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::producer::FutureProducer;
use rendezvous_client::{Client, RetryPolicy};
use rendezvous_tests::procs::{Broker, Instance, create_topic};

mod abuse;
mod load;
mod scenarios;
mod world;

use abuse::scenario_abuse;
use load::load;
use scenarios::*;
use world::*;

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
    // Authentication on: TLS with required client certificates, the engine and the gateway
    // each with its own (the e2e's clients present them; see SecureDeployment).
    let secure = rendezvous_tests::security::SecureDeployment::create(&args.out.join("tls"), true)?;
    let env = |name: &str| -> Vec<(String, String)> {
        [
            ("RENDEZVOUS__DATABASE__URL", database_url.as_str()),
            ("RENDEZVOUS__KAFKA__BROKERS", bootstrap.as_str()),
            ("RENDEZVOUS__KAFKA__REFRESH_INTERVAL", "500ms"),
            // Tansu holds a fetch to its end (docs/configuration.md, kafka.fetch_wait).
            ("RENDEZVOUS__KAFKA__FETCH_WAIT", "10ms"),
            // Real brokers: only configured topics (the service's, and the abuse scenario's
            // topics that do not exist), their records the default tenant's.
            (
                "RENDEZVOUS__KAFKA__TOPICS",
                rendezvous_tests::procs::SERVICE_TOPIC,
            ),
            (
                "RENDEZVOUS__KAFKA__TENANT_TOPICS__DEFAULT",
                "abuse-missing-*",
            ),
            ("RENDEZVOUS__API__ALLOW_PRIVATE_NETWORKS", "true"),
            ("RENDEZVOUS__RESUME__ACK_TIMEOUT", "5s"),
            ("RENDEZVOUS__TELEMETRY__LOG_FORMAT", "json"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(secure.env.iter().cloned())
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
        instances.push(
            Instance::start(&args.binary, &name, env(&name), &args.out)
                .await?
                .with_credentials(secure.credentials.clone()),
        );
    }
    // The scenarios retry on another instance themselves: the clients do not retry.
    let mut clients = Vec::new();
    let mut callbacks = Vec::new();
    for instance in &instances {
        clients.push(Client::new(instance.channel().await?).with_retry(RetryPolicy::never()));
        callbacks
            .push(Client::new(instance.gateway_channel().await?).with_retry(RetryPolicy::never()));
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
    // The engine's feed subscribes on instance 2, which the load phase SIGKILLs: it must move
    // to instance 3 (then 1) and still hand every resume to its handler exactly once. Waits
    // are registered through all three.
    engine(
        vec![
            instances[1].endpoint()?,
            instances[2].endpoint()?,
            instances[0].endpoint()?,
        ],
        seen.clone(),
    );
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
    let report = scenario_abuse(&world, &instances).await;
    results.push((
        "abuse next to normal traffic".into(),
        report,
        started.elapsed(),
    ));
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
