//! `cargo xtask proto`: `buf lint` on the `rendezvous.v1` contract and `buf breaking` against
//! the last released contract (the newest image in `proto/releases/`), so a change that would
//! break engines or gateways built against a release fails the build.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{tools, workspace_root};

/// Where released contracts are kept: one `buf build` image per release, `v<version>.txtpb`.
pub(crate) const RELEASES_DIR: &str = "proto/releases";

pub(crate) fn run() -> Result<()> {
    let buf = tools::buf()?;
    let proto = workspace_root().join("proto");
    eprintln!("proto: buf lint");
    buf_in(&buf, &proto, &["lint"])?;
    let release = latest_release()?;
    let against = release
        .strip_prefix(&proto)
        .unwrap_or(&release)
        .display()
        .to_string();
    eprintln!("proto: buf breaking against {against}");
    buf_in(&buf, &proto, &["breaking", "--against", &against])?;
    Ok(())
}

/// The newest released contract in [`RELEASES_DIR`] (by version, not by name).
pub(crate) fn latest_release() -> Result<PathBuf> {
    let dir = workspace_root().join(RELEASES_DIR);
    let mut releases: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let version = name.strip_prefix('v')?.strip_suffix(".txtpb")?;
            let parts = version
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u64>, _>>()
                .ok()?;
            Some((parts, path))
        })
        .collect();
    releases.sort();
    releases.pop().map(|(_, path)| path).with_context(|| {
        format!(
            "no released contract (v<version>.txtpb) in {}",
            dir.display()
        )
    })
}

/// `cargo xtask proto --release <version>`: records the current contract as released, the
/// baseline later changes must stay compatible with.
pub(crate) fn release(version: &str) -> Result<()> {
    if version.split('.').any(|p| p.parse::<u64>().is_err()) || version.split('.').count() != 3 {
        bail!("a release version is three numbers, e.g. 0.2.0; got {version:?}");
    }
    let buf = tools::buf()?;
    let proto = workspace_root().join("proto");
    let out = format!("releases/v{version}.txtpb");
    buf_in(
        &buf,
        &proto,
        &["build", "--exclude-source-info", "-o", &out],
    )?;
    eprintln!("proto: recorded proto/{out}");
    Ok(())
}

fn buf_in(buf: &PathBuf, dir: &PathBuf, args: &[&str]) -> Result<()> {
    let status = Command::new(buf)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("running buf {}", args.join(" ")))?;
    if !status.success() {
        bail!("buf {} failed ({status})", args.join(" "));
    }
    Ok(())
}
