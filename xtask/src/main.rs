//! `cargo xtask`: developer tasks (codegen, proto checks, the CI pipeline, e2e, bench, the
//! clients' checks, tool installs, the registry-free container image) and the tidy tests.

mod ci;
mod clients;
mod codegen;
mod e2e;
mod image;
#[cfg(test)]
mod manifests;
mod postgres;
mod proto;
#[cfg(test)]
mod tidy;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  codegen [--check]   generate Rust code from proto/ (--check: fail when the checked-in code is stale)
  proto [--release VERSION]
                      buf lint, and buf breaking against the last released contract in proto/releases/
                      (--release: record the current contract as released VERSION)
  ci                  what CI runs: fmt, codegen --check, proto, clippy, every test, e2e (starts PostgreSQL if down)
  e2e [--waits N] [--throwaway-postgres]
                      three instances, real PostgreSQL and Kafka (Tansu), named scenarios, a load phase
                      (DATABASE_URL / KAFKA_BOOTSTRAP use outside servers)
  bench [--joins N] [--concurrency C] [--instances K[,K...]] [--database postgres|sqlite]
        [--kafka | --events grpc,embedded,tansu] [--cpu-quota CORES] [--floor-joins N] [--scale-waits N]
        [--ceiling-secs S] [--compare FILE] [--no-save]
                      the two-event join benchmark (release build); prints a table, the ratios between
                      setups (Kafka vs gRPC, K instances vs one) and a JSON line, saved under docs/bench/
  clients             the Python and TypeScript clients' tests and the Temporal bridge example against the
                      release binary (Python in a virtualenv made from the pinned requirements in the tool
                      cache, TypeScript with npm ci)
  tools               install the tools e2e, bench and proto need (Tansu, buf) into the machine's tool cache
  image [--smoke]     the container image without a registry: FROM scratch with target/release/rendezvous and its
                      shared libraries, built by podman (installed when missing) as localhost/rendezvous:<revision>
                      (--smoke: run it on PostgreSQL, probe it, drive joins through it with rendezvous-bench, SIGTERM)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["codegen"] => codegen::run(codegen::Mode::Write),
        ["codegen", "--check"] => codegen::run(codegen::Mode::Check),
        ["proto"] => proto::run(),
        ["proto", "--release", version] => proto::release(version),
        ["ci"] => ci::run(),
        ["tools"] => tools::run(),
        ["clients"] => clients::run(),
        ["e2e", rest @ ..] => e2e::run(e2e::Harness::E2e, rest),
        ["bench", rest @ ..] => e2e::run(e2e::Harness::Bench, rest),
        ["image", rest @ ..] => image::run(rest),
        ["help" | "--help" | "-h"] => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`). Read at run time (cargo sets it for
/// `cargo run` and `cargo test`), so a binary built from another checkout sharing the target
/// directory still works on this one.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    Path::new(&manifest_dir)
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
