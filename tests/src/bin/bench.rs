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

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rdkafka::producer::FutureProducer;
use rendezvous_grpc_api::v1;
use rendezvous_grpc_api::v1::callback_service_client::CallbackServiceClient;
use rendezvous_grpc_api::v1::wait_service_client::WaitServiceClient;
use rendezvous_persistence::testing::{Backend, TestDatabase};
use rendezvous_tests::procs::{
    Broker, Instance, api_response, create_topic, psql, publish, service_event,
};
use rendezvous_tests::{Engine, seed, seed_variables};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tonic::transport::Channel;

struct Args {
    binary: PathBuf,
    tansu: Option<PathBuf>,
    out: PathBuf,
    joins: usize,
    concurrency: usize,
    instances: usize,
    backend: Backend,
    kafka: bool,
    floor_joins: usize,
    scale_waits: usize,
    ceiling_secs: u32,
}

const USAGE: &str = "--joins N (20000) --concurrency C (64) --instances K (1) --database postgres|sqlite \
--kafka (events through the broker, not gRPC) --floor-joins N (1000, 0 skips) \
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

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |p: f64| {
            samples
                .get(((samples.len().saturating_sub(1)) as f64 * p).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    fn json(&self) -> Value {
        json!({"p50": round2(self.p50), "p95": round2(self.p95), "p99": round2(self.p99), "max": round2(self.max)})
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What one join run measured.
struct RunReport {
    name: String,
    joins: usize,
    concurrency: usize,
    seconds: f64,
    last_event_to_resume: Percentiles,
    register: Percentiles,
    cpu_ms_per_join: f64,
    peak_rss_mib: Vec<f64>,
}

impl RunReport {
    fn joins_per_s(&self) -> f64 {
        self.joins as f64 / self.seconds
    }

    fn json(&self) -> Value {
        json!({
            "joins": self.joins,
            "concurrency": self.concurrency,
            "seconds": round2(self.seconds),
            "joins_per_s": self.joins_per_s().round(),
            "last_event_to_resume_ms": self.last_event_to_resume.json(),
            "register_ms": self.register.json(),
            "service_cpu_ms_per_join": round2(self.cpu_ms_per_join),
            "peak_rss_mib": self.peak_rss_mib.iter().map(|m| round2(*m)).collect::<Vec<_>>(),
        })
    }
}

/// CPU time (user + system) of a process, from /proc.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').context("/proc stat format")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz: u64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
        .trim()
        .parse()?;
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// Peak resident set size (VmHWM) of a process in MiB.
fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM format")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Resumes that reached the engine before their join asked for them, and joins waiting.
#[derive(Default)]
struct Mailbox {
    waiting: HashMap<String, oneshot::Sender<Instant>>,
    early: HashMap<String, Instant>,
}

type SharedMailbox = Arc<Mutex<Mailbox>>;

/// The engine: one resume stream per instance, acking every resume and handing its arrival
/// time to the join that waits for it.
async fn engine(channel: Channel, mailbox: SharedMailbox) -> Result<()> {
    let mut stream = Engine::connect(WaitServiceClient::new(channel), 1024).await?;
    tokio::spawn(async move {
        while let Ok(resume) = stream.next(Duration::from_secs(3600)).await {
            let at = Instant::now();
            let _ = stream.ack(&resume).await;
            let mut m = mailbox.lock().expect("lock");
            match m.waiting.remove(&resume.wait_id) {
                Some(tx) => {
                    let _ = tx.send(at);
                }
                None => {
                    m.early.insert(resume.wait_id, at);
                }
            }
        }
    });
    Ok(())
}

/// One deployment under test: instances, clients, the engine, optionally a producer.
struct Deployment {
    instances: Vec<Instance>,
    waits: Vec<WaitServiceClient<Channel>>,
    callbacks: Vec<CallbackServiceClient<Channel>>,
    mailbox: SharedMailbox,
    producer: Option<FutureProducer>,
    config: String,
}

impl Deployment {
    async fn start(args: &Args, database_url: &str, bootstrap: Option<&str>) -> Result<Self> {
        let mut instances = Vec::new();
        for i in 1..=args.instances {
            let name = format!("instance-{i}");
            let mut env: Vec<(String, String)> = [
                ("RENDEZVOUS__DATABASE__URL", database_url),
                ("RENDEZVOUS__API__ENABLED", "false"),
                ("RENDEZVOUS__TELEMETRY__LOG_FORMAT", "json"),
                ("RENDEZVOUS__TELEMETRY__LOG_LEVEL", "warn"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            env.push((
                "RENDEZVOUS__DATA_DIR".into(),
                args.out.join(&name).display().to_string(),
            ));
            match bootstrap {
                Some(b) => {
                    env.push(("RENDEZVOUS__KAFKA__BROKERS".into(), b.into()));
                    env.push(("RENDEZVOUS__KAFKA__GROUP_INSTANCE_ID".into(), name.clone()));
                }
                None => env.push(("RENDEZVOUS__KAFKA__ENABLED".into(), "false".into())),
            }
            instances.push(Instance::start(&args.binary, &name, env, &args.out).await?);
        }
        let mailbox = SharedMailbox::default();
        let mut waits = Vec::new();
        let mut callbacks = Vec::new();
        for instance in &instances {
            let channel = instance.channel().await?;
            waits.push(WaitServiceClient::new(channel.clone()));
            callbacks.push(CallbackServiceClient::new(channel.clone()));
            engine(channel, mailbox.clone()).await?;
        }
        let producer = match bootstrap {
            Some(b) => Some(
                rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", b)
                    .set("linger.ms", "1")
                    .create()?,
            ),
            None => None,
        };
        let mut config = seed("01-wait-for-both.json");
        // Callback mode: the call is recorded, the response comes through DeliverApiResponse.
        config["data"]["apiCall"]["url"] = json!("https://external-service.example/actions");
        Ok(Self {
            instances,
            waits,
            callbacks,
            mailbox,
            producer,
            config: config.to_string(),
        })
    }

    fn pids(&self) -> Vec<u32> {
        self.instances.iter().filter_map(|i| i.proc.pid()).collect()
    }

    fn stop(mut self) -> Result<()> {
        for instance in &mut self.instances {
            instance.proc.terminate()?;
        }
        Ok(())
    }

    /// One join; returns (register latency, last event sent → resume received).
    async fn join(&self, execution_id: String) -> Result<(Duration, Duration)> {
        let k = fastrand::usize(..self.waits.len());
        let started = Instant::now();
        let r = self.waits[k]
            .clone()
            .register_wait(v1::RegisterWaitRequest {
                execution_id: execution_id.clone(),
                node_id: "wait-1".into(),
                node_config_json: self.config.clone(),
                input_variables: seed_variables(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let registered = started.elapsed();
        let (tx, rx) = oneshot::channel();
        {
            let mut m = self.mailbox.lock().expect("lock");
            match m.early.remove(&r.wait_id) {
                Some(at) => {
                    let _ = tx.send(at);
                }
                None => {
                    m.waiting.insert(r.wait_id.clone(), tx);
                }
            }
        }
        let api_first = fastrand::bool();
        let mut last = Instant::now();
        for step in 0..2 {
            if step == 1 {
                last = Instant::now();
            }
            if (step == 0) == api_first {
                self.api_response(k, &r.correlation_id, &execution_id)
                    .await?;
            } else {
                self.kafka_event(k, &r.correlation_id, &execution_id)
                    .await?;
            }
        }
        let resumed = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .with_context(|| format!("no resume for wait {} within 60 s", r.wait_id))??;
        Ok((registered, resumed.saturating_duration_since(last)))
    }

    async fn api_response(&self, k: usize, correlation_id: &str, execution_id: &str) -> Result<()> {
        self.callbacks[k]
            .clone()
            .deliver_api_response(api_response(correlation_id, execution_id))
            .await?;
        Ok(())
    }

    async fn kafka_event(&self, k: usize, correlation_id: &str, execution_id: &str) -> Result<()> {
        match &self.producer {
            Some(producer) => publish(producer, correlation_id, execution_id).await?,
            None => {
                self.callbacks[k]
                    .clone()
                    .deliver_event(v1::DeliverEventRequest {
                        correlation_id: correlation_id.into(),
                        execution_id: execution_id.into(),
                        source: "kafka".into(),
                        payload_json: service_event(correlation_id, execution_id),
                        event_key: format!("kafka-{correlation_id}"),
                        tenant_id: String::new(),
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// `joins` joins, `concurrency` at a time.
    async fn run(&self, name: &str, joins: usize, concurrency: usize) -> Result<RunReport> {
        let pids = self.pids();
        let cpu_before: Vec<Duration> = pids.iter().map(|p| cpu_time(*p)).collect::<Result<_>>()?;
        let next = AtomicUsize::new(0);
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let started = Instant::now();
        let workers = (0..concurrency).map(|_| async {
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= joins {
                    return Ok::<_, anyhow::Error>(samples);
                }
                samples.push(self.join(format!("{name}-{run_id}-{i}")).await?);
            }
        });
        let results = futures_util::future::try_join_all(workers).await?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu: Duration = pids
            .iter()
            .zip(&cpu_before)
            .map(|(p, before)| cpu_time(*p).map(|after| after.saturating_sub(*before)))
            .sum::<Result<Duration>>()?;
        let (register, latency): (Vec<Duration>, Vec<Duration>) =
            results.into_iter().flatten().unzip();
        Ok(RunReport {
            name: name.into(),
            joins,
            concurrency,
            seconds,
            last_event_to_resume: Percentiles::of(latency),
            register: Percentiles::of(register),
            cpu_ms_per_join: cpu.as_secs_f64() * 1000.0 / joins as f64,
            peak_rss_mib: pids
                .iter()
                .map(|p| peak_rss_mib(*p))
                .collect::<Result<_>>()?,
        })
    }
}

/// The PostgreSQL ceiling: pgbench running a one-row update plus an insert per transaction
/// (what one state change of a wait costs at least) with `clients` clients.
fn pg_ceiling(
    database_url: &str,
    clients: usize,
    seconds: u32,
    out: &std::path::Path,
) -> Result<f64> {
    psql(
        database_url,
        &[
            "DROP TABLE IF EXISTS ceiling_rows, ceiling_log",
            "CREATE TABLE ceiling_rows (id bigint PRIMARY KEY, version bigint NOT NULL, progress text NOT NULL)",
            "INSERT INTO ceiling_rows SELECT g, 1, '{}' FROM generate_series(1, 100000) g",
            "CREATE TABLE ceiling_log (id bigserial PRIMARY KEY, row_id bigint NOT NULL, event_key text NOT NULL, at bigint NOT NULL)",
            "VACUUM ANALYZE ceiling_rows",
        ],
    )?;
    let script = out.join("ceiling.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 100000)\n\
         BEGIN;\n\
         UPDATE ceiling_rows SET version = version + 1, progress = '{\"received\":[\"api\"]}' WHERE id = :id AND version > 0;\n\
         INSERT INTO ceiling_log (row_id, event_key, at) VALUES (:id, 'api-' || :id, 0);\n\
         COMMIT;\n",
    )?;
    let o = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2", "-c"])
        .arg(clients.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(&script)
        .arg(database_url)
        .output()
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&o.stdout);
    ensure!(
        o.status.success(),
        "pgbench: {}{}",
        text,
        String::from_utf8_lossy(&o.stderr)
    );
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .context("no tps line in pgbench output")?
        .parse()?;
    psql(database_url, &["DROP TABLE ceiling_rows, ceiling_log"])?;
    Ok(tps)
}

/// Seeds `n` pending waits straight into the database, copied from one registered through
/// the API (so every row is one the service could have written), with distinct ids.
fn seed_pending(database_url: &str, template: &str, n: usize) -> Result<()> {
    let sql = format!(
        "INSERT INTO waits (id, tenant_id, correlation_id, execution_id, node_id, idempotency_key, \
           workflow_id, status, spec, progress, deadline, created_at, updated_at, decided_at, version) \
         SELECT gen_random_uuid(), t.tenant_id, 'scale-' || g, 'scale-exec-' || g, t.node_id, '', \
           NULL, t.status, t.spec, t.progress, t.deadline + 86400000, t.created_at, t.updated_at, NULL, 1 \
         FROM (SELECT * FROM waits WHERE id = '{template}') t, generate_series(1, {n}) g"
    );
    psql(database_url, &[&sql, "VACUUM ANALYZE waits"]).context("seeding")?;
    Ok(())
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
    let bootstrap = if args.kafka {
        let b = match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(b) => b,
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
        create_topic(&b).await?;
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
