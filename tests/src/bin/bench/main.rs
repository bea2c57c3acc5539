//! `rendezvous-bench`, run by `cargo xtask bench`: the two-event join benchmark against release
//! instances of `rendezvous`. Each join registers a wait (seed node config 1; the outbound call
//! is recorded in the outbox but not made, the API response arriving in callback mode), then
//! delivers the API response (`DeliverApiResponse`) and the Kafka event (`DeliverEvent` on the
//! `kafka` source, or a record published to a broker: `--events`, `--kafka` for all three paths)
//! in random order, and waits for the resume on `ResumeStream`, which it acknowledges. Each
//! setup (a path for events, a number of instances, optionally limited by a cgroup CPU quota)
//! runs on a fresh database. Prints a table, the ratios between setups (Kafka vs gRPC, K
//! instances vs one) and, last, one JSON line, which `--save DIR` keeps and `--compare FILE`
//! holds against an earlier one (`report.rs`). Also measures the PostgreSQL ceiling (pgbench),
//! the unloaded floor (C=1) and a scale run over a million pending waits. It measures; it
//! asserts no time.

// The report is this program's output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use rendezvous_grpc_api::v1;
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_tests::procs::{Broker, create_topic};
use rendezvous_tests::seed_variables;

mod cgroup;
mod deployment;
mod measure;
mod report;

use deployment::*;
use measure::*;
use report::Report;

pub(crate) struct Args {
    pub(crate) binary: PathBuf,
    pub(crate) tansu: Option<PathBuf>,
    pub(crate) out: PathBuf,
    pub(crate) joins: usize,
    pub(crate) concurrency: usize,
    /// Instance counts to run, each a setup of its own (`--instances 1,2,4`).
    pub(crate) instances: Vec<usize>,
    pub(crate) backend: Backend,
    /// The paths events take, each a setup of its own (`--kafka` is all three).
    pub(crate) events: Vec<Events>,
    pub(crate) secure: bool,
    /// Each instance limited to this many cores (a cgroup v1 `cpu` quota).
    pub(crate) cpu_quota: Option<f64>,
    pub(crate) floor_joins: usize,
    pub(crate) scale_waits: usize,
    pub(crate) ceiling_secs: u32,
    /// Where to save the report as JSON (a directory).
    pub(crate) save: Option<PathBuf>,
    /// An earlier report to print ratios against.
    pub(crate) compare: Option<PathBuf>,
}

/// The path the Kafka event of a join takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Events {
    /// `DeliverEvent` over gRPC.
    Grpc,
    /// A record through the embedded mock cluster (librdkafka's, started in this process).
    Embedded,
    /// A record through a Tansu broker.
    Tansu,
}

impl Events {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Embedded => "embedded",
            Self::Tansu => "tansu",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "grpc" => Self::Grpc,
            "embedded" => Self::Embedded,
            "tansu" => Self::Tansu,
            other => bail!("--events: expected grpc, embedded or tansu, found {other:?}"),
        })
    }
}

/// One combination of the options that vary within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Setup {
    pub(crate) events: Events,
    pub(crate) instances: usize,
}

impl Setup {
    pub(crate) fn label(self) -> String {
        format!("{} x{}", self.events.name(), self.instances)
    }
}

const USAGE: &str = "--joins N (20000) --concurrency C (64) --instances K[,K...] (1) --database postgres|sqlite \
--events grpc,embedded,tansu (grpc) --kafka (all three: gRPC, the embedded mock cluster in the bench's process, Tansu) \
--kafka-embedded (embedded only) --cpu-quota CORES (each instance limited by a cgroup v1 cpu quota) \
--secure (TLS; the engine's stream over its client certificate, registrations with a JWT, deliveries with an API key) --floor-joins N (1000, 0 skips) \
--scale-waits N (1000000, 0 skips) --ceiling-secs S (10, 0 skips) --save DIR --compare FILE --binary --tansu --out";

fn args() -> Result<Args> {
    let mut args = Args {
        binary: PathBuf::from("target/release/rendezvous"),
        tansu: None,
        out: PathBuf::from("target/bench"),
        joins: 20_000,
        concurrency: 64,
        instances: vec![1],
        backend: Backend::Postgres,
        events: vec![Events::Grpc],
        secure: false,
        cpu_quota: None,
        floor_joins: 1_000,
        scale_waits: 1_000_000,
        ceiling_secs: 10,
        save: None,
        compare: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--kafka" => {
                args.events = vec![Events::Grpc, Events::Embedded, Events::Tansu];
                continue;
            }
            "--kafka-embedded" => {
                args.events = vec![Events::Embedded];
                continue;
            }
            "--secure" => {
                args.secure = true;
                continue;
            }
            _ => {}
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value ({USAGE})"))?;
        let number = |value: &str| -> Result<usize> {
            value
                .parse()
                .with_context(|| format!("{flag}: not a number: {value:?}"))
        };
        match flag.as_str() {
            "--binary" => args.binary = value.into(),
            "--tansu" => args.tansu = Some(value.into()),
            "--out" => args.out = value.into(),
            "--save" => args.save = Some(value.into()),
            "--compare" => args.compare = Some(value.into()),
            "--joins" => args.joins = number(&value)?,
            "--concurrency" => args.concurrency = number(&value)?.max(1),
            "--instances" => {
                args.instances = value
                    .split(',')
                    .map(|k| number(k).map(|k| k.max(1)))
                    .collect::<Result<_>>()?;
            }
            "--events" => {
                args.events = value.split(',').map(Events::parse).collect::<Result<_>>()?;
            }
            "--cpu-quota" => {
                let cores: f64 = value
                    .parse()
                    .with_context(|| format!("--cpu-quota: not a number: {value:?}"))?;
                ensure!(
                    cores > 0.0 && cores <= 64.0,
                    "--cpu-quota: expected a number of cores above 0 (0.5 is half a core), found {value}"
                );
                args.cpu_quota = Some(cores);
            }
            "--floor-joins" => args.floor_joins = number(&value)?,
            "--scale-waits" => args.scale_waits = number(&value)?,
            "--ceiling-secs" => args.ceiling_secs = u32::try_from(number(&value)?)?,
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
        args.backend == Backend::Postgres || args.instances == [1],
        "--database sqlite runs one instance (the embedded default is single-instance)"
    );
    ensure!(
        !args.events.is_empty() && !args.instances.is_empty(),
        "nothing to run ({USAGE})"
    );
    Ok(args)
}

impl Args {
    /// Every setup to run: each path events take, at each instance count.
    fn setups(&self) -> Vec<Setup> {
        self.instances
            .iter()
            .flat_map(|&instances| {
                self.events
                    .iter()
                    .map(move |&events| Setup { events, instances })
            })
            .collect()
    }
}

fn print_run(setup: Setup, r: &RunReport) {
    println!(
        "{:<12} {:<18} {:>7} {:>4} {:>9.0} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>7.2} {:>7.2} {:>8.3} {:>9}",
        setup.label(),
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

/// What the first setup measures besides its own runs: the PostgreSQL ceiling and the scale
/// run over many pending waits.
#[derive(Default)]
struct Extras {
    ceiling: Option<f64>,
    scale: Option<RunReport>,
}

async fn run() -> Result<()> {
    let args = args()?;
    std::fs::create_dir_all(&args.out)?;
    // Read before anything runs: a report that cannot be compared fails now, not in an hour.
    let earlier = args.compare.as_deref().map(Report::load).transpose()?;
    let database = match args.backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    let mut report = Report::new(&args, database);
    let mut extras = Extras::default();
    for (i, setup) in args.setups().into_iter().enumerate() {
        eprintln!(
            "bench: {} joins at C={} on {} instance(s), {database}, events through {}{}",
            args.joins,
            args.concurrency,
            setup.instances,
            setup.events.name(),
            args.cpu_quota
                .map(|q| format!(", each instance limited to {q} cores"))
                .unwrap_or_default()
        );
        let runs = run_setup(&args, setup, (i == 0).then_some(&mut extras)).await?;
        report.add(setup, runs);
    }
    report.extras(extras.ceiling, extras.scale);

    println!(
        "\n{:<12} {:<18} {:>7} {:>4} {:>9} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>8} {:>9}",
        "setup",
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
        "{:<12} {:<18} {:>7} {:>4} {:>9} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>8} {:>9}",
        "", "", "", "", "", "(ms, last event to resume)", "", "", "", "(ms)", "", "(ms)", "(peak)"
    );
    for (setup, runs) in &report.setups {
        for r in runs {
            print_run(*setup, r);
        }
    }
    for line in report.ratio_lines() {
        println!("{line}");
    }
    if let Some(earlier) = &earlier {
        println!();
        for line in report.compare(earlier) {
            println!("{line}");
        }
    }
    let json = report.json();
    if let Some(dir) = &args.save {
        let path = report.save(dir, &json)?;
        println!("\nsaved: {}", path.display());
    }
    println!("\n{json}");
    Ok(())
}

/// One setup: a fresh database (unless `DATABASE_URL` names one), its broker, the instances,
/// a warm-up, the C runs and the C=1 floor. The first setup also measures the `extras`.
async fn run_setup(
    args: &Args,
    setup: Setup,
    extras: Option<&mut Extras>,
) -> Result<Vec<RunReport>> {
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
    let bootstrap = match setup.events {
        Events::Grpc => None,
        Events::Embedded => {
            // The service's own embedded broker, started here so that every instance shares
            // it; it creates the topic itself (it has no CreateTopics).
            let kafka =
                rendezvous_kafka_ingress::EmbeddedKafka::start(1).map_err(anyhow::Error::msg)?;
            kafka
                .create_topic(rendezvous_tests::procs::SERVICE_TOPIC, 3)
                .map_err(anyhow::Error::msg)?;
            let b = kafka.bootstrap_servers().to_owned();
            _embedded = Some(kafka);
            Some(b)
        }
        Events::Tansu => {
            let b = match std::env::var("KAFKA_BOOTSTRAP") {
                Ok(b) => b,
                Err(_) => {
                    let started = Broker::start_in_memory(
                        args.tansu
                            .clone()
                            .context("events through tansu need --tansu or KAFKA_BOOTSTRAP")?,
                        &args.out,
                    )
                    .await?;
                    let b = started.bootstrap();
                    _broker = Some(started);
                    b
                }
            };
            create_topic(&b).await?;
            Some(b)
        }
    };
    let mut runs = Vec::new();
    let deployment = Deployment::start(args, setup, &database_url, bootstrap.as_deref()).await?;
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
    let Some(extras) = extras else {
        deployment.stop()?;
        return Ok(runs);
    };
    let main_pending = {
        // One pending wait to copy for the scale run (registered, never completed).
        deployment.waits[0]
            .register_wait(v1::RegisterWaitRequest {
                execution_id: format!("template-{}", uuid::Uuid::new_v4()),
                node_id: "wait-1".into(),
                node_config_json: deployment.config.clone(),
                input_variables: seed_variables(),
                ..Default::default()
            })
            .await?
            .wait_id
    };
    deployment.stop()?;
    if args.backend == Backend::Postgres && args.ceiling_secs > 0 {
        extras.ceiling = Some(pg_ceiling(
            &database_url,
            args.concurrency,
            args.ceiling_secs,
            &args.out,
        )?);
    }
    if args.backend == Backend::Postgres && args.scale_waits > 0 {
        eprintln!(
            "bench: seeding {} pending waits (copies of {main_pending})",
            args.scale_waits
        );
        let seeding = Instant::now();
        seed_pending(&database_url, &main_pending, args.scale_waits)?;
        eprintln!("bench: seeded in {:.1} s", seeding.elapsed().as_secs_f64());
        let deployment =
            Deployment::start(args, setup, &database_url, bootstrap.as_deref()).await?;
        deployment
            .run("warm-up", args.concurrency * 4, args.concurrency)
            .await?;
        let mut r = deployment
            .run("join, 1M pending", args.joins / 2, args.concurrency)
            .await?;
        r.name = format!("join, {} pending", args.scale_waits);
        eprintln!("bench: {}", r.json());
        extras.scale = Some(r);
        deployment.stop()?;
    }
    Ok(runs)
}
