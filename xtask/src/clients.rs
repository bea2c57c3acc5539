//! `cargo xtask clients`: the Python client (`clients/python`), the TypeScript client
//! (`clients/typescript`) and the Temporal bridge example (`examples/temporal`) against the
//! release binary. Python runs in a virtualenv the project makes itself in the tool cache from
//! the pinned requirement files (made again when they change); TypeScript installs its locked
//! packages with the machine's npm (`npm ci`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{e2e, tools, workspace_root};

/// The pinned requirements, relative to the workspace root.
const REQUIREMENTS: &[&str] = &[
    "clients/python/requirements-dev.txt",
    "examples/temporal/requirements.txt",
];

/// `cargo xtask clients`: builds the release binary, then runs [`check`].
pub(crate) fn run() -> Result<()> {
    let target = e2e::build_release("rendezvous-e2e")?;
    check(&target.join("release/rendezvous"))
}

/// Each client's generated code or proto copy is current and its tests pass, and the Temporal
/// example runs, each against `binary`.
pub(crate) fn check(binary: &Path) -> Result<()> {
    let root = workspace_root();
    let python = venv()?;
    let run = |what: &str, program: &Path, args: &[&str], dir: &Path| -> Result<()> {
        eprintln!("clients: {what}");
        let status = Command::new(program)
            .args(args)
            .env("RENDEZVOUS_BINARY", binary)
            .env("PYTHONPATH", root.join("clients/python/src"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(dir)
            .status()
            .with_context(|| format!("running {what}"))?;
        if !status.success() {
            bail!("{what} failed ({status})");
        }
        Ok(())
    };
    run(
        "python: the generated stubs are current",
        &python,
        &["clients/python/generate.py", "--check"],
        &root,
    )?;
    run(
        "python: the client's tests",
        &python,
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "clients/python/tests",
        ],
        &root,
    )?;
    let typescript = root.join("clients/typescript");
    let npm = Path::new("npm");
    for (what, args) in [
        ("typescript: npm ci", &["ci", "--no-audit", "--no-fund"][..]),
        (
            "typescript: the proto copy is current",
            &["run", "check-proto"],
        ),
        ("typescript: build", &["run", "build"]),
        ("typescript: the client's tests", &["test"]),
    ] {
        run(what, npm, args, &typescript)?;
    }
    run(
        "the Temporal bridge example",
        &python,
        &["examples/temporal/run_ci.py"],
        &root,
    )
}

/// The virtualenv's python, with the pinned requirements installed.
fn venv() -> Result<PathBuf> {
    let root = workspace_root();
    let dir = tools::dir().join("python");
    let python = dir.join("bin/python");
    let mut wanted = String::new();
    for file in REQUIREMENTS {
        let path = root.join(file);
        wanted.push_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        );
    }
    let stamp = dir.join("rendezvous-requirements.txt");
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    eprintln!("tools: making the Python virtualenv in {}", dir.display());
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .context("running python3 -m venv (is Python 3 installed?)")?;
    if !status.success() {
        bail!("python3 -m venv failed ({status})");
    }
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    for file in REQUIREMENTS {
        pip.arg("-r").arg(root.join(file));
    }
    let status = pip.status().context("running pip install")?;
    if !status.success() {
        bail!("installing the Python requirements failed ({status})");
    }
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}
