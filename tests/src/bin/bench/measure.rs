//! What the benchmark measures: latency percentiles, a run's report, a process's CPU time
//! and peak memory, the PostgreSQL ceiling (pgbench), and the pending waits of the scale run.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rendezvous_tests::procs::psql;
use serde_json::{Value, json};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Self {
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

    pub(crate) fn json(&self) -> Value {
        json!({"p50": round2(self.p50), "p95": round2(self.p95), "p99": round2(self.p99), "max": round2(self.max)})
    }
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What one join run measured.
pub(crate) struct RunReport {
    pub(crate) name: String,
    pub(crate) joins: usize,
    pub(crate) concurrency: usize,
    pub(crate) seconds: f64,
    pub(crate) last_event_to_resume: Percentiles,
    pub(crate) register: Percentiles,
    pub(crate) cpu_ms_per_join: f64,
    pub(crate) peak_rss_mib: Vec<f64>,
}

impl RunReport {
    pub(crate) fn joins_per_s(&self) -> f64 {
        self.joins as f64 / self.seconds
    }

    pub(crate) fn json(&self) -> Value {
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
pub(crate) fn cpu_time(pid: u32) -> Result<Duration> {
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
pub(crate) fn peak_rss_mib(pid: u32) -> Result<f64> {
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

/// The PostgreSQL ceiling: pgbench running a one-row update plus an insert per transaction
/// (what one state change of a wait costs at least) with `clients` clients.
pub(crate) fn pg_ceiling(
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
pub(crate) fn seed_pending(database_url: &str, template: &str, n: usize) -> Result<()> {
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
