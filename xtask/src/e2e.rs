//! `cargo xtask e2e` and `cargo xtask bench`: build the release binaries, make sure a Kafka
//! broker is at hand (Tansu from the tool cache unless `KAFKA_BOOTSTRAP` is set) and PostgreSQL
//! (`DATABASE_URL`; else a fresh database on the local server; else, or with
//! `--throwaway-postgres`, a throwaway cluster), then run `rendezvous-e2e`
//! (tests/src/bin/e2e/: three instances, named scenarios, a load phase) or `rendezvous-bench`
//! (tests/src/bin/bench/: the two-event join benchmark). Logs of every process are kept in
//! `target/e2e/` or `target/bench/`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{postgres, tools, workspace_root};

/// Which harness to run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Harness {
    E2e,
    Bench,
}

pub(crate) fn run(harness: Harness, args: &[&str]) -> Result<()> {
    let root = workspace_root();
    let throwaway_flag = args.contains(&"--throwaway-postgres");
    let extra: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--throwaway-postgres")
        .collect();
    let throwaway = if std::env::var_os("DATABASE_URL").is_none()
        && (throwaway_flag || !postgres::local_server_ready())
    {
        Some(postgres::Throwaway::start()?)
    } else {
        None
    };
    // The e2e always needs a broker; the bench only for events through Tansu.
    let events_through_tansu = extra
        .windows(2)
        .any(|w| w[0] == "--events" && w[1].split(',').any(|e| e == "tansu"));
    let needs_broker =
        harness == Harness::E2e || extra.contains(&"--kafka") || events_through_tansu;
    let tansu = if needs_broker && std::env::var_os("KAFKA_BOOTSTRAP").is_none() {
        Some(tools::tansu()?)
    } else {
        None
    };
    let (bin, dir) = match harness {
        Harness::E2e => ("rendezvous-e2e", "e2e"),
        Harness::Bench => ("rendezvous-bench", "bench"),
    };
    let target = build_release(bin)?;
    let out = target.join(dir);
    let _ = std::fs::remove_dir_all(&out);
    let mut command = Command::new(target.join("release").join(bin));
    command
        .arg("--binary")
        .arg(target.join("release/rendezvous"))
        .arg("--out")
        .arg(&out)
        .args(extra.iter().filter(|a| **a != "--no-save"))
        .current_dir(&root);
    // Every bench run is kept under docs/bench/ (`--compare` reads them) unless told not to.
    if harness == Harness::Bench && !extra.contains(&"--no-save") && !extra.contains(&"--save") {
        command.arg("--save").arg(root.join("docs/bench"));
    }
    if let Some(pg) = &throwaway {
        command.env("DATABASE_URL", &pg.url);
    }
    if let Some(tansu) = tansu {
        command.arg("--tansu").arg(tansu);
    }
    let status = command.status().with_context(|| format!("running {bin}"))?;
    if !status.success() {
        bail!("{bin} failed; process logs are in {}", out.display());
    }
    Ok(())
}

/// Builds the release `rendezvous` binary with the harness `bin` (always together, so that
/// every task builds with the same features and none rebuilds the other's); the target dir.
pub(crate) fn build_release(bin: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "rendezvous-app",
            "--bin",
            "rendezvous",
            "-p",
            "rendezvous-tests",
            "--bin",
            bin,
        ])
        .current_dir(&root)
        .status()
        .context("building the release binaries")?;
    if !status.success() {
        bail!("building the release binaries failed");
    }
    Ok(std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into))
}
