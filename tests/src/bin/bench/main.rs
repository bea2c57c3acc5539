//! `rendezvous-bench`, run by `cargo xtask bench`: the two-event join benchmark against release
//! instances of `rendezvous`. Each join registers a wait (seed node config 1; the outbound call
//! is recorded in the outbox but not made, the API response arriving in callback mode), then
//! delivers the API response (`DeliverApiResponse`) and the Kafka event (`DeliverEvent` on the
//! `kafka` source, or a record published to a real broker with `--kafka`) in random order, and
//! waits for the resume on `ResumeStream`, which it acknowledges. Prints a table and, last, one
//! JSON line. Also measures the PostgreSQL ceiling (pgbench), the unloaded floor (C=1) and a
//! scale run over a million pending waits. It measures; it asserts no time.

// The report is this program's output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use rendezvous_grpc_api::v1;
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_tests::procs::{Broker, create_topic};
use rendezvous_tests::seed_variables;
use serde_json::json;

mod deployment;
mod measure;

use deployment::*;
use measure::*;

pub(crate) struct Args {
    pub(crate) binary: PathBuf,
    pub(crate) tansu: Option<PathBuf>,
    pub(crate) out: PathBuf,
    pub(crate) joins: usize,
    pub(crate) concurrency: usize,
    pub(crate) instances: usize,
    pub(crate) backend: Backend,
    pub(crate) kafka: bool,
    /// With `kafka`: the embedded mock cluster (librdkafka's, in this process), not Tansu.
    pub(crate) embedded_kafka: bool,
    pub(crate) secure: bool,
    pub(crate) floor_joins: usize,
    pub(crate) scale_waits: usize,
    pub(crate) ceiling_secs: u32,
}

const USAGE: &str = "--joins N (20000) --concurrency C (64) --instances K (1) --database postgres|sqlite \
--kafka (events through the broker, not gRPC) --kafka-embedded (through the embedded mock cluster, in the bench's process) \
--secure (TLS; the engine's stream over its client certificate, registrations with a JWT, deliveries with an API key) --floor-joins N (1000, 0 skips) \
--scale-waits N (1000000, 0 skips) --ceiling-secs S (10, 0 skips) --binary --tansu --out";

fn args() -> Result<Args> {
    let mut args = Args {
        binary: PathBuf::from("target/release/rendezvous"),
        tansu: None,
        out: PathBuf::from("target/bench"),
        joins: 20_000,
        concurrency: 64,
        instances: 1,
        backend: Backend::Postgres,
        kafka: false,
        embedded_kafka: false,
        secure: false,
        floor_joins: 1_000,
        scale_waits: 1_000_000,
        ceiling_secs: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--kafka" {
            args.kafka = true;
            continue;
        }
        if flag == "--kafka-embedded" {
            args.kafka = true;
            args.embedded_kafka = true;
            continue;
        }
        if flag == "--secure" {
            args.secure = true;
            continue;
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value ({USAGE})"))?;
        let number = || -> Result<usize> {
            value
                .parse()
                .with_context(|| format!("{flag}: not a number: {value:?}"))
        };
        match flag.as_str() {
            "--binary" => args.binary = value.into(),
            "--tansu" => args.tansu = Some(value.into()),
            "--out" => args.out = value.into(),
            "--joins" => args.joins = number()?,
            "--concurrency" => args.concurrency = number()?.max(1),
            "--instances" => args.instances = number()?.max(1),
            "--floor-joins" => args.floor_joins = number()?,
            "--scale-waits" => args.scale_waits = number()?,
            "--ceiling-secs" => args.ceiling_secs = u32::try_from(number()?)?,
            "--database" => {
                args.backend = match value.as_str() {
                    "postgres" => Backend::Postgres,
                    "sqlite" => Backend::Sqlite,
                    other => bail!("--database: expected postgres or sqlite, found {other:?}"),
                }
            }
            other => bail!("unknown argument {other:?} ({USAGE})"),
        }
    }
    ensure!(
        args.backend == Backend::Postgres || args.instances == 1,
        "--database sqlite runs one instance (the embedded default is single-instance)"
    );
    Ok(args)
}

fn print_run(r: &RunReport) {
    println!(
        "{:<18} {:>7} {:>4} {:>9.0} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>7.2} {:>7.2} {:>8.3} {:>9}",
        r.name,
        r.joins,
        r.concurrency,
        r.joins_per_s(),
        r.last_event_to_resume.p50,
        r.last_event_to_resume.p95,
        r.last_event_to_resume.p99,
        r.last_event_to_resume.max,
        r.register.p50,
        r.register.p99,
        r.cpu_ms_per_join,
        r.peak_rss_mib
            .iter()
            .map(|m| format!("{m:.1}"))
            .collect::<Vec<_>>()
            .join("/")
    );
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let args = args()?;
    std::fs::create_dir_all(&args.out)?;
    // PostgreSQL: DATABASE_URL (used as it is), or a fresh database on the local server.
    let (database_url, _db) = match (args.backend, std::env::var("DATABASE_URL")) {
        (Backend::Postgres, Ok(url)) => (url, None),
        (backend, _) => {
            let db = TestDatabase::create(backend).await?;
            (db.url.clone(), Some(db))
        }
    };
    let mut _broker = None;
    let mut _embedded = None;
    let bootstrap = if args.kafka {
        let b = match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(b) => b,
            Err(_) if args.embedded_kafka => {
                // The service's own embedded broker, started here so that every instance
                // shares it; it creates the topic itself (it has no CreateTopics).
                let kafka = rendezvous_kafka_ingress::EmbeddedKafka::start(1)
                    .map_err(anyhow::Error::msg)?;
                kafka
                    .create_topic(rendezvous_tests::procs::SERVICE_TOPIC, 3)
                    .map_err(anyhow::Error::msg)?;
                let b = kafka.bootstrap_servers().to_owned();
                _embedded = Some(kafka);
                b
            }
            Err(_) => {
                let started = Broker::start(
                    args.tansu
                        .clone()
                        .context("--kafka needs --tansu or KAFKA_BOOTSTRAP")?,
                    &args.out,
                )
                .await?;
                let b = started.bootstrap();
                _broker = Some(started);
                b
            }
        };
        if !args.embedded_kafka {
            create_topic(&b).await?;
        }
        Some(b)
    } else {
        None
    };
    let database = match args.backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    eprintln!(
        "bench: {} joins at C={} on {} instance(s), {database}, events through {}",
        args.joins,
        args.concurrency,
        args.instances,
        if bootstrap.is_some() { "Kafka" } else { "gRPC" }
    );
    let mut runs = Vec::new();
    let deployment = Deployment::start(&args, &database_url, bootstrap.as_deref()).await?;
    // Warm-up: connections, prepared statements, page cache.
    deployment
        .run("warm-up", args.concurrency * 4, args.concurrency)
        .await?;
    runs.push(deployment.run("join", args.joins, args.concurrency).await?);
    eprintln!("bench: {}", runs[0].json());
    if args.floor_joins > 0 {
        runs.push(deployment.run("floor (C=1)", args.floor_joins, 1).await?);
        eprintln!("bench: {}", runs[1].json());
    }
    let main_pending = {
        // One pending wait to copy for the scale run (registered, never completed).
        let mut client = deployment.waits[0].clone();
        client
            .register_wait(v1::RegisterWaitRequest {
                execution_id: format!("template-{}", uuid::Uuid::new_v4()),
                node_id: "wait-1".into(),
                node_config_json: deployment.config.clone(),
                input_variables: seed_variables(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .wait_id
    };
    deployment.stop()?;
    let ceiling = if args.backend == Backend::Postgres && args.ceiling_secs > 0 {
        Some(pg_ceiling(
            &database_url,
            args.concurrency,
            args.ceiling_secs,
            &args.out,
        )?)
    } else {
        None
    };
    if args.backend == Backend::Postgres && args.scale_waits > 0 {
        eprintln!(
            "bench: seeding {} pending waits (copies of {main_pending})",
            args.scale_waits
        );
        let seeding = Instant::now();
        seed_pending(&database_url, &main_pending, args.scale_waits)?;
        eprintln!("bench: seeded in {:.1} s", seeding.elapsed().as_secs_f64());
        let deployment = Deployment::start(&args, &database_url, bootstrap.as_deref()).await?;
        deployment
            .run("warm-up", args.concurrency * 4, args.concurrency)
            .await?;
        let mut r = deployment
            .run("join, 1M pending", args.joins / 2, args.concurrency)
            .await?;
        r.name = format!("join, {} pending", args.scale_waits);
        eprintln!("bench: {}", r.json());
        runs.push(r);
        deployment.stop()?;
    }

    println!(
        "\n{:<18} {:>7} {:>4} {:>9} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>8} {:>9}",
        "run",
        "joins",
        "C",
        "joins/s",
        "p50",
        "p95",
        "p99",
        "max",
        "reg50",
        "reg99",
        "cpu/join",
        "rss MiB"
    );
    println!(
        "{:<18} {:>7} {:>4} {:>9} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>8} {:>9}",
        "", "", "", "", "(ms, last event to resume)", "", "", "", "(ms)", "", "(ms)", "(peak)"
    );
    for r in &runs {
        print_run(r);
    }
    if let Some(tps) = ceiling {
        println!(
            "\nPostgreSQL ceiling (pgbench, update + insert per transaction, {} clients): {tps:.0} tx/s; joins/s ÷ ceiling = {:.2}",
            args.concurrency,
            runs[0].joins_per_s() / tps
        );
    }
    let line = json!({
        "benchmark": "two-event join",
        "database": database,
        "events": if bootstrap.is_some() { "kafka" } else { "grpc" },
        "instances": args.instances,
        "runs": runs.iter().map(|r| { let mut v = r.json(); v["name"] = json!(r.name); v }).collect::<Vec<_>>(),
        "pg_ceiling_tps": ceiling.map(f64::round),
        "ratio_to_ceiling": ceiling.map(|tps| round2(runs[0].joins_per_s() / tps)),
    });
    println!("\n{line}");
    Ok(())
}
