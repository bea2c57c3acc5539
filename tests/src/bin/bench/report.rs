//! The benchmark's report: every setup's runs, the ratios between setups (a Kafka path against
//! gRPC, K instances against one), the JSON kept under `docs/bench/` (`--save`), and the ratios
//! to an earlier report (`--compare`), so that a regression shows in one command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::measure::{RunReport, round2};
use crate::{Args, Events, Setup};

/// The name of the main run of every setup (the one ratios are taken of).
const MAIN_RUN: &str = "join";
/// The name of the C=1 run.
const FLOOR_RUN: &str = "floor (C=1)";

/// What one invocation measured.
pub(crate) struct Report {
    meta: Value,
    pub(crate) setups: Vec<(Setup, Vec<RunReport>)>,
    ceiling: Option<f64>,
}

impl Report {
    pub(crate) fn new(args: &Args, database: &str) -> Self {
        Self {
            meta: json!({
                "benchmark": "two-event join",
                "revision": revision(),
                "date": utc_now(),
                "cpus": std::thread::available_parallelism().map_or(0, usize::from),
                "database": database,
                "concurrency": args.concurrency,
                "joins": args.joins,
                "cpu_quota_cores": args.cpu_quota,
                "secure": args.secure,
            }),
            setups: Vec::new(),
            ceiling: None,
        }
    }

    pub(crate) fn add(&mut self, setup: Setup, runs: Vec<RunReport>) {
        self.setups.push((setup, runs));
    }

    /// The PostgreSQL ceiling, and the scale run, which belongs to the first setup.
    pub(crate) fn extras(&mut self, ceiling: Option<f64>, scale: Option<RunReport>) {
        self.ceiling = ceiling;
        if let (Some(scale), Some((_, runs))) = (scale, self.setups.first_mut()) {
            runs.push(scale);
        }
    }

    /// The report as one JSON object: the settings, every setup's runs, the ceiling and the
    /// ratios between setups.
    pub(crate) fn json(&self) -> Value {
        let mut report = self.meta.clone();
        report["setups"] = self
            .setups
            .iter()
            .map(|(setup, runs)| {
                json!({
                    "events": setup.events.name(),
                    "instances": setup.instances,
                    "runs": runs.iter().map(|r| {
                        let mut v = r.json();
                        v["name"] = json!(r.name);
                        v
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        report["pg_ceiling_tps"] = json!(self.ceiling.map(f64::round));
        report["ratio_to_ceiling"] = json!(
            self.ceiling
                .zip(self.main_joins_per_s(0))
                .map(|(tps, joins)| round2(joins / tps))
        );
        report["ratios"] = self
            .ratios()
            .into_iter()
            .map(|r| (r.key(), json!(round2(r.value))))
            .collect::<serde_json::Map<_, _>>()
            .into();
        report
    }

    fn main_joins_per_s(&self, setup: usize) -> Option<f64> {
        self.setups
            .get(setup)?
            .1
            .iter()
            .find(|r| r.name == MAIN_RUN)
            .map(RunReport::joins_per_s)
    }

    fn run(&self, setup: Setup, name: &str) -> Option<&RunReport> {
        self.setups
            .iter()
            .find(|(s, _)| *s == setup)?
            .1
            .iter()
            .find(|r| r.name == name)
    }

    /// Each Kafka path against gRPC at the same instance count, and each instance count
    /// against the smallest with the same path.
    fn ratios(&self) -> Vec<Ratio> {
        let fewest = self.setups.iter().map(|(s, _)| s.instances).min();
        let mut ratios = Vec::new();
        for &(setup, _) in &self.setups {
            let Some(this) = self.run(setup, MAIN_RUN) else {
                continue;
            };
            if setup.events != Events::Grpc {
                let grpc = Setup {
                    events: Events::Grpc,
                    ..setup
                };
                if let Some(base) = self.run(grpc, MAIN_RUN) {
                    ratios.push(Ratio::of(setup, grpc, this, base));
                }
            }
            if let Some(fewest) = fewest.filter(|&f| f < setup.instances) {
                let one = Setup {
                    instances: fewest,
                    ..setup
                };
                if let Some(base) = self.run(one, MAIN_RUN) {
                    ratios.push(Ratio::of(setup, one, this, base));
                }
            }
        }
        ratios
    }

    /// The ratios as sentences, with the numbers they come from.
    pub(crate) fn ratio_lines(&self) -> Vec<String> {
        let mut lines = vec![String::new()];
        for r in self.ratios() {
            let mut line = format!(
                "{} vs {} at C={}: {:.2}x the joins/s ({:.0} vs {:.0})",
                r.setup.label(),
                r.base.label(),
                r.concurrency,
                r.value,
                r.joins_per_s,
                r.base_joins_per_s
            );
            if r.setup.instances > r.base.instances {
                let added = (r.setup.instances - r.base.instances) as f64;
                let per_instance = r.base_joins_per_s / r.base.instances as f64;
                line.push_str(&format!(
                    "; each instance added brings {:.2}x one instance's joins/s",
                    (r.joins_per_s - r.base_joins_per_s) / added / per_instance
                ));
            }
            if let (Some(floor), Some(base_floor)) =
                (self.run(r.setup, FLOOR_RUN), self.run(r.base, FLOOR_RUN))
            {
                line.push_str(&format!(
                    "; C=1 p50 {:.2} vs {:.2} ms",
                    floor.last_event_to_resume.p50, base_floor.last_event_to_resume.p50
                ));
            }
            lines.push(line);
        }
        if let (Some(tps), Some(joins)) = (self.ceiling, self.main_joins_per_s(0)) {
            let concurrency = self.meta["concurrency"].as_u64().unwrap_or(0);
            lines.push(format!(
                "PostgreSQL ceiling (pgbench, update + insert per transaction, {concurrency} clients): {tps:.0} tx/s; {} joins/s ÷ ceiling = {:.2}",
                self.setups[0].0.label(),
                joins / tps
            ));
        }
        lines
    }

    /// Writes the report to `dir` as `<date>-<database>-<paths>-<instances>.json`.
    pub(crate) fn save(&self, dir: &Path, json: &Value) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let list = |f: &dyn Fn(&Setup) -> String| {
            let mut items: Vec<String> = self.setups.iter().map(|(s, _)| f(s)).collect();
            items.dedup();
            items.join("+")
        };
        let name = format!(
            "{}-{}-{}-x{}.json",
            self.meta["date"]
                .as_str()
                .unwrap_or("undated")
                .replace(':', ""),
            self.meta["database"].as_str().unwrap_or("db"),
            list(&|s| s.events.name().to_owned()),
            list(&|s| s.instances.to_string()),
        );
        let path = dir.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// An earlier report, as saved.
    pub(crate) fn load(path: &Path) -> Result<Saved> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--compare: reading {}", path.display()))?;
        let report: Value = serde_json::from_str(&text)
            .with_context(|| format!("--compare: {} is not a report", path.display()))?;
        anyhow::ensure!(
            report["setups"].is_array(),
            "--compare: {} is not a report of this benchmark (no \"setups\")",
            path.display()
        );
        Ok(Saved {
            path: path.to_owned(),
            report,
        })
    }

    /// Ratios of this report to an earlier one, run by run.
    pub(crate) fn compare(&self, earlier: &Saved) -> Vec<String> {
        compare(
            &self.json(),
            &earlier.report,
            &earlier.path.display().to_string(),
        )
    }
}

/// A report read back from a file.
pub(crate) struct Saved {
    path: PathBuf,
    report: Value,
}

/// One setup's joins/s against another's.
struct Ratio {
    setup: Setup,
    base: Setup,
    concurrency: usize,
    joins_per_s: f64,
    base_joins_per_s: f64,
    value: f64,
}

impl Ratio {
    fn of(setup: Setup, base: Setup, this: &RunReport, other: &RunReport) -> Self {
        Self {
            setup,
            base,
            concurrency: this.concurrency,
            joins_per_s: this.joins_per_s(),
            base_joins_per_s: other.joins_per_s(),
            value: this.joins_per_s() / other.joins_per_s(),
        }
    }

    fn key(&self) -> String {
        format!("{} vs {}", self.setup.label(), self.base.label())
    }
}

/// `now` against `then` (both as [`Report::json`] writes them): for every run both have (same
/// path, instance count, run name and concurrency: ratios across concurrencies say nothing),
/// now ÷ then of joins/s, latency, CPU per join and peak memory; and the two ceilings, which say
/// how the machines compare.
fn compare(now: &Value, then: &Value, then_name: &str) -> Vec<String> {
    let mut lines = vec![format!(
        "now ({}, {}) ÷ then ({then_name}: {}, {}):",
        now["revision"].as_str().unwrap_or("?"),
        now["date"].as_str().unwrap_or("?"),
        then["revision"].as_str().unwrap_or("?"),
        then["date"].as_str().unwrap_or("?"),
    )];
    let empty = Vec::new();
    let setups = |report: &Value| report["setups"].as_array().cloned().unwrap_or_default();
    let mut matched = 0;
    for setup in setups(now) {
        let same_setup =
            |s: &&Value| s["events"] == setup["events"] && s["instances"] == setup["instances"];
        let Some(earlier) = setups(then).into_iter().find(|s| same_setup(&s)) else {
            continue;
        };
        let earlier_runs = earlier["runs"].as_array().unwrap_or(&empty);
        for run in setup["runs"].as_array().unwrap_or(&empty) {
            let Some(before) = earlier_runs
                .iter()
                .find(|r| r["name"] == run["name"] && r["concurrency"] == run["concurrency"])
            else {
                continue;
            };
            matched += 1;
            let ratio = |pointer: &str| match (
                run.pointer(pointer).and_then(Value::as_f64),
                before.pointer(pointer).and_then(Value::as_f64),
            ) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".to_owned(),
            };
            let peak = |r: &Value| {
                r["peak_rss_mib"]
                    .as_array()
                    .and_then(|m| m.iter().filter_map(Value::as_f64).reduce(f64::max))
            };
            let rss = match (peak(run), peak(before)) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".to_owned(),
            };
            lines.push(format!(
                "  {} x{} {:<18} joins/s {}  p50 {}  p99 {}  cpu/join {}  peak RSS {}",
                setup["events"].as_str().unwrap_or("?"),
                setup["instances"],
                run["name"].as_str().unwrap_or("?"),
                ratio("/joins_per_s"),
                ratio("/last_event_to_resume_ms/p50"),
                ratio("/last_event_to_resume_ms/p99"),
                ratio("/service_cpu_ms_per_join"),
                rss,
            ));
        }
    }
    if matched == 0 {
        lines.push(
            "  no run in common (same events path, instances, run name and concurrency)".to_owned(),
        );
    }
    if let (Some(a), Some(b)) = (
        now["pg_ceiling_tps"].as_f64(),
        then["pg_ceiling_tps"].as_f64(),
    ) {
        lines.push(format!(
            "  PostgreSQL ceiling {:.2}x ({a:.0} vs {b:.0} tx/s); joins/s ÷ ceiling {} now, {} then",
            a / b,
            now["ratio_to_ceiling"],
            then["ratio_to_ceiling"]
        ));
    }
    lines
}

/// The checkout's commit, `-dirty` when tracked files changed; `unknown` outside a checkout.
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{rev}-dirty"),
            _ => rev,
        },
        None => "unknown".to_owned(),
    }
}

/// The time now, UTC, as `2026-12-07T04:40:00Z`.
fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "undated".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Percentiles;

    fn run(name: &str, joins_per_s: f64, p50: f64) -> RunReport {
        RunReport {
            name: name.into(),
            joins: 1000,
            concurrency: 64,
            seconds: 1000.0 / joins_per_s,
            last_event_to_resume: Percentiles {
                p50,
                p95: p50 * 2.0,
                p99: p50 * 3.0,
                max: p50 * 4.0,
            },
            register: Percentiles::default(),
            cpu_ms_per_join: 0.5,
            peak_rss_mib: vec![30.0, 32.0],
        }
    }

    fn report(grpc: f64, embedded: f64, two: f64) -> Report {
        let mut report = Report {
            meta: json!({"revision": "r", "date": "d", "database": "postgres", "concurrency": 64}),
            setups: Vec::new(),
            ceiling: None,
        };
        let setup = |events, instances| Setup { events, instances };
        report.add(setup(Events::Grpc, 1), vec![run(MAIN_RUN, grpc, 3.0)]);
        report.add(
            setup(Events::Embedded, 1),
            vec![run(MAIN_RUN, embedded, 7.0)],
        );
        report.add(setup(Events::Grpc, 2), vec![run(MAIN_RUN, two, 4.0)]);
        report.extras(Some(4000.0), None);
        report
    }

    #[test]
    fn ratios_set_each_kafka_path_against_grpc_and_each_instance_count_against_the_fewest() {
        let json = report(1000.0, 800.0, 1900.0).json();
        assert_eq!(json["ratios"]["embedded x1 vs grpc x1"], json!(0.8));
        assert_eq!(json["ratios"]["grpc x2 vs grpc x1"], json!(1.9));
        assert_eq!(json["ratio_to_ceiling"], json!(0.25));
        let lines = report(1000.0, 800.0, 1900.0).ratio_lines().join("\n");
        assert!(
            lines.contains("embedded x1 vs grpc x1 at C=64: 0.80x"),
            "{lines}"
        );
        assert!(
            lines.contains("each instance added brings 0.90x one instance's joins/s"),
            "{lines}"
        );
    }

    #[test]
    fn a_saved_report_reads_back_and_compares_run_by_run() {
        let dir = std::env::temp_dir().join(format!("bench-report-{}", uuid::Uuid::new_v4()));
        let then = report(1000.0, 800.0, 1900.0);
        let path = then.save(&dir, &then.json()).unwrap();
        let saved = Report::load(&path).unwrap();
        let now = report(1100.0, 400.0, 1900.0);
        let lines = now.compare(&saved).join("\n");
        assert!(
            lines.contains("grpc x1 join               joins/s 1.10x"),
            "{lines}"
        );
        assert!(
            lines.contains("embedded x1 join               joins/s 0.50x"),
            "{lines}"
        );
        assert!(lines.contains("PostgreSQL ceiling 1.00x"), "{lines}");
        std::fs::write(dir.join("other.json"), "{\"benchmark\": 1}").unwrap();
        let refused = Report::load(&dir.join("other.json")).err().unwrap();
        assert!(refused.to_string().contains("no \"setups\""), "{refused}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reports_without_a_run_in_common_say_so() {
        let now = report(1.0, 1.0, 1.0).json();
        let mut then = now.clone();
        then["setups"] = json!([]);
        let lines = compare(&now, &then, "f").join("\n");
        assert!(lines.contains("no run in common"), "{lines}");
        // The same runs at another concurrency are not held against each other.
        let mut then = now.clone();
        for setup in then["setups"].as_array_mut().unwrap() {
            for run in setup["runs"].as_array_mut().unwrap() {
                run["concurrency"] = json!(16);
            }
        }
        let lines = compare(&now, &then, "f").join("\n");
        assert!(lines.contains("no run in common"), "{lines}");
    }
}
