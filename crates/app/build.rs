//! Records the git revision the binary is built from as `RENDEZVOUS_REVISION` (shown by
//! `rendezvous --version` and the `rendezvous_build_info` metric). A build without git (a
//! source tarball, a container build without `.git`) may set `RENDEZVOUS_REVISION` itself;
//! otherwise it is `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RENDEZVOUS_REVISION");
    let revision = std::env::var("RENDEZVOUS_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=RENDEZVOUS_REVISION={revision}");
}

/// `git rev-parse --short=12 HEAD`, rebuilding when HEAD moves.
fn git_revision() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        out.status.success().then_some(())?;
        Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
    };
    let revision = git(&["rev-parse", "--short=12", "HEAD"])?;
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        let git_dir = Path::new(&git_dir);
        println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
        // The branch's ref file (or packed-refs) changes on every commit. Only files that
        // exist are named: cargo reruns the script on every build for a missing one, which
        // rebuilt the app on each release build (three times in `cargo xtask ci`).
        for watched in ["refs", "packed-refs"] {
            let path = git_dir.join(watched);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(revision)
}
