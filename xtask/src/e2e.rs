//! `cargo xtask e2e`: builds the release binaries, makes sure a Kafka broker is at hand (Tansu
//! from the tool cache unless `KAFKA_BOOTSTRAP` is set) and PostgreSQL is up (unless
//! `DATABASE_URL` is set), then runs `rendezvous-e2e` (tests/src/bin/e2e.rs), which starts three
//! instances and runs the named scenarios. Logs of every process are kept in `target/e2e/`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{ci, tools, workspace_root};

pub(crate) fn run(extra: &[&str]) -> Result<()> {
    let root = workspace_root();
    if std::env::var_os("DATABASE_URL").is_none() {
        ci::ensure_postgres()?;
    }
    let tansu = if std::env::var_os("KAFKA_BOOTSTRAP").is_none() {
        Some(tools::tansu()?)
    } else {
        None
    };
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
            "rendezvous-e2e",
        ])
        .current_dir(&root)
        .status()
        .context("building the release binaries")?;
    if !status.success() {
        bail!("building the release binaries failed");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let out = target.join("e2e");
    let _ = std::fs::remove_dir_all(&out);
    let mut command = Command::new(target.join("release/rendezvous-e2e"));
    command
        .arg("--binary")
        .arg(target.join("release/rendezvous"))
        .arg("--out")
        .arg(&out)
        .args(extra)
        .current_dir(&root);
    if let Some(tansu) = tansu {
        command.arg("--tansu").arg(tansu);
    }
    let status = command.status().context("running rendezvous-e2e")?;
    if !status.success() {
        bail!("e2e failed; process logs are in {}", out.display());
    }
    Ok(())
}
