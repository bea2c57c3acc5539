//! Tools the e2e, bench and proto tasks need (Tansu, buf), installed by xtask into a cache outside the repo
//! (`$RENDEZVOUS_TOOLS_DIR`, default `~/.cache/rendezvous-tools`), so a machine pays each
//! install once and a clean clone finds them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The Tansu version the e2e runs against.
pub(crate) const TANSU_VERSION: &str = "0.6.0";

/// Its features: `libsql` for durable SQLite storage (the e2e restarts the broker and expects
/// its log and group offsets back, as with any real broker), `dynostore` for memory storage.
const TANSU_FEATURES: &str = "dynostore,libsql";

/// The cache directory.
pub(crate) fn dir() -> PathBuf {
    std::env::var_os("RENDEZVOUS_TOOLS_DIR").map_or_else(
        || {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
            home.join(".cache/rendezvous-tools")
        },
        PathBuf::from,
    )
}

/// The Tansu broker binary, installed with `cargo install` on first use (about ten minutes on a
/// 2-core machine).
pub(crate) fn tansu() -> Result<PathBuf> {
    let root = dir().join(format!("tansu-{TANSU_VERSION}-libsql"));
    let binary = root.join("bin/tansu");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "tools: installing tansu {TANSU_VERSION} into {} (once per machine)",
        root.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "install",
            "tansu",
            "--version",
            TANSU_VERSION,
            "--locked",
            "--features",
            TANSU_FEATURES,
            "--root",
        ])
        .arg(&root)
        .env("CARGO_TARGET_DIR", dir().join("build"))
        .status()
        .context("running cargo install tansu")?;
    if !status.success() || !binary.is_file() {
        bail!("installing tansu failed ({status})");
    }
    Ok(binary)
}

/// The buf version that lints the proto contract and checks it for breaking changes.
pub(crate) const BUF_VERSION: &str = "1.75.0";

/// The `buf` binary, from the `@bufbuild/buf` npm package (it ships the binary for the
/// platform as an optional dependency), installed with the machine's npm on first use.
pub(crate) fn buf() -> Result<PathBuf> {
    let root = dir().join(format!("buf-{BUF_VERSION}"));
    let binary = root.join("node_modules/.bin/buf");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "tools: installing buf {BUF_VERSION} into {} (once per machine)",
        root.display()
    );
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&root)
        .arg(format!("@bufbuild/buf@{BUF_VERSION}"))
        .status()
        .context("running npm install @bufbuild/buf (is Node.js installed?)")?;
    if !status.success() || !binary.is_file() {
        bail!("installing buf failed ({status})");
    }
    Ok(binary)
}

/// `cargo xtask tools`: installs every tool and prints where.
pub(crate) fn run() -> Result<()> {
    let tansu = tansu()?;
    eprintln!("tools: tansu at {}", tansu.display());
    let buf = buf()?;
    eprintln!("tools: buf at {}", buf.display());
    Ok(())
}
