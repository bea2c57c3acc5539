//! `cargo xtask ci`: exactly what CI runs, in the order a developer wants to see failures:
//! formatting, codegen, the proto contract (buf lint and breaking), clippy, every test (with
//! Tansu installed first, for the Kafka SASL test), then the e2e, then the Python and
//! TypeScript clients' tests and the Temporal bridge example, then a few seconds of the benchmark through each path (gRPC,
//! the embedded broker, Tansu), printed and not judged.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{clients, codegen, e2e, proto, tools, workspace_root};

pub(crate) fn run() -> Result<()> {
    ensure_postgres()?;
    cargo(&["fmt", "--all", "--check"])?;
    codegen::run(codegen::Mode::Check)?;
    proto::run()?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])?;
    // Kafka's SASL test runs against Tansu, installed once per machine (the e2e needs it too);
    // with the variable set it fails rather than skips when Tansu is missing.
    let tansu = tools::tansu()?;
    cargo_with(
        &["test", "--workspace", "--locked"],
        &[("RENDEZVOUS_TEST_TANSU", tansu.as_os_str())],
    )?;
    // The multi-instance e2e: release build, three instances, PostgreSQL, a Tansu broker
    // (installed once per machine into the tool cache), faults and a 10,000-wait load phase.
    eprintln!("ci: cargo xtask e2e");
    e2e::run(e2e::Harness::E2e, &[])?;
    // The Python and TypeScript clients and the Temporal bridge against the release binary the
    // e2e built.
    eprintln!("ci: cargo xtask clients");
    let target = e2e::build_release("rendezvous-e2e")?;
    clients::check(&target.join("release/rendezvous"))?;
    // A few seconds of each benchmark path (gRPC, the embedded broker, Tansu) so that the
    // harness cannot rot: it prints numbers and asserts none (a CI machine's speed says
    // nothing; docs/performance.md compares runs made in one session). Held against the newest
    // saved report of the same paths, so that `--compare` runs too (its C=1 runs match);
    // nothing is saved.
    let mut args = vec![
        "--kafka",
        "--no-save",
        "--joins",
        "300",
        "--concurrency",
        "16",
        "--floor-joins",
        "20",
        "--scale-waits",
        "0",
        "--ceiling-secs",
        "0",
    ];
    let newest = newest_report()?;
    let newest = newest.as_ref().map(|p| p.to_string_lossy().into_owned());
    if let Some(path) = &newest {
        args.extend(["--compare", path]);
    }
    eprintln!("ci: cargo xtask bench {}", args.join(" "));
    e2e::run(e2e::Harness::Bench, &args)?;
    eprintln!("ci: all checks passed");
    Ok(())
}

/// The newest report under docs/bench/ of the paths the quick bench takes (names start with
/// the date, then the database, the paths and the instance counts).
fn newest_report() -> Result<Option<std::path::PathBuf>> {
    let dir = workspace_root().join("docs/bench");
    if !dir.exists() {
        return Ok(None);
    }
    let mut reports: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("-postgres-grpc+embedded+tansu-x1.json"))
        })
        .collect();
    reports.sort();
    Ok(reports.pop())
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_with(args, &[])
}

/// `cargo args` with these environment variables set.
fn cargo_with(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
    eprintln!("ci: cargo {}", args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The tests use the PostgreSQL server at 127.0.0.1:5432; start the machine's cluster when it
/// is down (the same command the machine's own start-up uses).
pub(crate) fn ensure_postgres() -> Result<()> {
    let ready = || {
        Command::new("pg_isready")
            .args(["-h", "127.0.0.1", "-p", "5432", "-q"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return Ok(());
    }
    eprintln!("ci: PostgreSQL is down; starting it");
    let versions =
        std::fs::read_dir("/etc/postgresql").context("no PostgreSQL cluster in /etc/postgresql")?;
    for version in versions {
        let version = version?.file_name();
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect"])
            .arg(&version)
            .args(["main", "start"])
            .status();
    }
    for _ in 0..30 {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    bail!("PostgreSQL did not come up on 127.0.0.1:5432")
}
