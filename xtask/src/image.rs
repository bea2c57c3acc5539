//! `cargo xtask image [--smoke]`: the service's container image without a registry. The
//! Dockerfile builds on registry images (rust, debian-slim); this path needs none. A root
//! filesystem is assembled in `target/image/` from the release binary (without its debug line
//! tables), exactly the shared libraries `ldd` names for it (the dynamic loader among them),
//! `/etc/passwd` and `/etc/group` with the unprivileged user 10001, the host's CA bundle and a
//! data directory owned by 10001; `podman build` makes it `localhost/rendezvous:<revision>`
//! `FROM scratch`, with the labels, environment, volume, user, ports and entry point of the
//! Dockerfile's runtime stage copied from the Dockerfile (one source for both images) and a
//! health check that uses the binary itself (the image has no shell). `--smoke` runs the image
//! on a fresh PostgreSQL database and checks it ([`smoke`]). podman is installed with apt-get
//! when missing (and runc, where crun cannot run containers). docs/container.md tells the rest.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::workspace_root;

/// The image's repository; the tag is the binary's git revision.
const REPOSITORY: &str = "localhost/rendezvous";

/// The unprivileged user and group the service runs as (the Dockerfile's `USER`).
const UID: u32 = 10001;

/// Where the binary goes in the image (the Dockerfile's `ENTRYPOINT`).
const BINARY: &str = "/usr/local/bin/rendezvous";

/// The data directory (the Dockerfile's `RENDEZVOUS__DATA_DIR` and `VOLUME`).
const DATA_DIR: &str = "/var/lib/rendezvous";

/// The health check. The binary has no HTTP client to ask `/readyz` or `/livez` and the image
/// has no shell or curl; what the binary offers is its operator client, which connects to the
/// gRPC listener named by `RENDEZVOUS_SERVER` (default `http://127.0.0.1:50151`, the image's
/// `server.listen` port) and, with `--limit 0`, asks for nothing (and `--json` prints nothing):
/// healthy while the process accepts gRPC connections, as the Dockerfile's check of `/livez`
/// is healthy while it answers HTTP. It needs no credential. Readiness (`/readyz`) stays the
/// orchestrator's HTTP probe.
const HEALTH_CMD: &str =
    r#"["/usr/local/bin/rendezvous", "waits", "list", "--limit", "0", "--json"]"#;

/// The smoke's database, created fresh and dropped after.
const SMOKE_DATABASE: &str = "rendezvous_image_smoke";

/// Joins the smoke drives through the image with rendezvous-bench (after a warm-up of
/// 4 × [`SMOKE_CONCURRENCY`]).
const SMOKE_JOINS: usize = 40;
const SMOKE_CONCURRENCY: usize = 4;

pub(crate) fn run(args: &[&str]) -> Result<()> {
    let smoke = match args {
        [] => false,
        ["--smoke"] => true,
        _ => bail!("usage: cargo xtask image [--smoke]"),
    };
    let root = workspace_root();
    let target: PathBuf =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let podman = Podman::ensure()?;
    let binary = release_binary(&root, &target, "rendezvous-app", "rendezvous")?;
    let revision = revision(&root, &binary)?;
    let image = format!("{REPOSITORY}:{revision}");
    build(&podman, &root, &target, &binary, &revision, &image)?;
    if smoke {
        self::smoke(&podman, &root, &target, &image, &revision)?;
    }
    Ok(())
}

/// The podman command with the options this machine needs.
struct Podman {
    /// Global options (`--runtime runc` where crun cannot run containers).
    global: Vec<String>,
    /// `podman run` options: resource limits the machine allows.
    run: Vec<String>,
}

impl Podman {
    /// podman, installed with apt-get when `command -v podman` finds none.
    fn ensure() -> Result<Self> {
        if !on_path("podman") {
            apt_install("podman")?;
        }
        let mut global = Vec::new();
        // crun (podman's default runtime on Debian) refuses a host whose cgroup v2 hierarchy
        // has controllers while cgroup v1 is mounted too ("cgroups in hybrid mode not
        // supported, drop all controllers from cgroupv2"); runc runs there.
        if hybrid_cgroups() {
            if !on_path("runc") {
                apt_install("runc")?;
            }
            global.extend(["--runtime".to_owned(), "runc".to_owned()]);
        }
        Ok(Self {
            global,
            run: ulimits()?,
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command.args(&self.global);
        command
    }

    /// Runs `podman args` and returns its standard output; fails with its standard error.
    fn output(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running podman {}", args.join(" ")))?;
        ensure!(
            out.status.success(),
            "podman {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// Whether `command -v` finds `program`.
fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null", "sh", program])
        .status()
        .is_ok_and(|s| s.success())
}

/// `apt-get install -y <package>`, after `apt-get update` when the first try fails (a fresh
/// machine has no package lists).
fn apt_install(package: &str) -> Result<()> {
    eprintln!("image: {package} is missing; installing it with apt-get (once per machine)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if install() {
        return Ok(());
    }
    let updated = Command::new("apt-get")
        .arg("update")
        .status()
        .context("running apt-get update")?;
    ensure!(updated.success(), "apt-get update failed ({updated})");
    ensure!(
        install(),
        "apt-get install -y {package} failed (as root, with Debian's package lists)"
    );
    Ok(())
}

/// cgroup v1 with controllers also enabled in the cgroup v2 hierarchy (`/sys/fs/cgroup/unified`).
fn hybrid_cgroups() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| !c.trim().is_empty())
}

/// `--ulimit` options within what this process may set. Without them rootful podman gives a
/// container 1,048,576 open files and processes, which fails to start ("setrlimit
/// RLIMIT_NOFILE: Operation not permitted") where the hard limit is lower and raising it is
/// not allowed (no `CAP_SYS_RESOURCE`); the process limit also stays within `pid_max`, which
/// podman's own process limit is held to.
fn ulimits() -> Result<Vec<String>> {
    let limits =
        std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let hard = |name: &str| -> Option<u64> {
        let line = limits.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().nth(1)?.parse().ok()
    };
    let pid_max: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let mut options = Vec::new();
    if let Some(files) = hard("Max open files") {
        options.push(format!("--ulimit=nofile={files}:{files}"));
    }
    let processes = match (hard("Max processes"), pid_max) {
        (Some(h), Some(p)) => Some(h.min(p)),
        (h, p) => h.or(p),
    };
    if let Some(processes) = processes {
        options.push(format!("--ulimit=nproc={processes}:{processes}"));
    }
    Ok(options)
}

/// `target/release/<bin>`, built with cargo when missing (cargo's lock on the target directory
/// queues the build behind any other build of it).
fn release_binary(root: &Path, target: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    let binary = target.join("release").join(bin);
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!("image: {} is missing; building it", binary.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            package,
            "--bin",
            bin,
        ])
        .current_dir(root)
        .status()
        .with_context(|| format!("building {bin}"))?;
    ensure!(
        status.success() && binary.is_file(),
        "building {bin} failed ({status})"
    );
    Ok(binary)
}

/// The revision the binary was built from (`rendezvous --version`: `rendezvous X.Y.Z (rev)`),
/// or the checkout's when the binary says `unknown`. Warns when it is not the checkout's HEAD.
fn revision(root: &Path, binary: &Path) -> Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    ensure!(
        out.status.success(),
        "{} --version failed",
        binary.display()
    );
    let version = String::from_utf8_lossy(&out.stdout);
    let built = version
        .rsplit_once('(')
        .and_then(|(_, r)| r.trim().strip_suffix(')'))
        .map(str::to_owned);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let revision = match (built, head) {
        (Some(built), head) if built != "unknown" => {
            if head.as_ref().is_some_and(|h| *h != built) {
                eprintln!(
                    "image: warning: {} was built from {built}, the checkout is at {}; rebuild it \
                     (cargo build --release -p rendezvous-app --bin rendezvous) to package HEAD",
                    binary.display(),
                    head.unwrap_or_default()
                );
            }
            built
        }
        (_, Some(head)) => head,
        _ => "unknown".to_owned(),
    };
    ensure!(
        revision
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "revision {revision:?} is not a valid image tag"
    );
    Ok(revision)
}

/// Assembles the root filesystem and the Containerfile in `target/image/` and builds the image.
fn build(
    podman: &Podman,
    root: &Path,
    target: &Path,
    binary: &Path,
    revision: &str,
    image: &str,
) -> Result<()> {
    let dir = target.join("image");
    let _ = std::fs::remove_dir_all(&dir);
    let rootfs = dir.join("rootfs");
    let inside = |path: &str| rootfs.join(path.trim_start_matches('/'));

    // The binary without its debug line tables (as the Dockerfile does: backtraces still name
    // the functions).
    let packed = inside(BINARY);
    std::fs::create_dir_all(packed.parent().expect("a directory"))?;
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&packed)
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        eprintln!("image: warning: strip failed or is missing; packing the binary unstripped");
        std::fs::copy(binary, &packed)?;
    }
    set_mode(&packed, 0o755)?;

    // Exactly the shared libraries the dynamic loader resolves for it, and the loader.
    let libraries = shared_libraries(binary)?;
    for library in &libraries {
        let to = inside(&library.display().to_string());
        std::fs::create_dir_all(to.parent().expect("a directory"))?;
        // Copies what a symbolic link points to, under the link's name.
        std::fs::copy(library, &to).with_context(|| format!("copying {}", library.display()))?;
    }

    // Users and groups: root, and the service's unprivileged user.
    std::fs::create_dir_all(inside("/etc"))?;
    std::fs::write(
        inside("/etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             rendezvous:x:{UID}:{UID}:rendezvous:{DATA_DIR}:/sbin/nologin\n"
        ),
    )?;
    std::fs::write(
        inside("/etc/group"),
        format!("root:x:0:\nrendezvous:x:{UID}:\n"),
    )?;
    // The system roots (https OTLP, PostgreSQL verify-full, Kafka TLS without a CA file).
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    std::fs::create_dir_all(inside("/etc/ssl/certs"))?;
    std::fs::copy(bundle, inside(bundle)).with_context(|| {
        format!("copying {bundle} (apt-get install ca-certificates provides it)")
    })?;
    // Where a configuration file is mounted, and what the Dockerfile's image also carries.
    std::fs::create_dir_all(inside("/etc/rendezvous"))?;
    let doc = inside("/usr/share/doc/rendezvous");
    std::fs::create_dir_all(&doc)?;
    std::fs::copy(root.join("LICENSE"), doc.join("LICENSE"))?;
    std::fs::copy(
        root.join("deploy/rendezvous.toml"),
        doc.join("rendezvous.toml"),
    )?;
    // The data directory, copied with `--chown` (COPY makes everything else root's).
    let state = dir.join("state");
    let data_dir = state.join(DATA_DIR.rsplit_once('/').expect("an absolute path").1);
    std::fs::create_dir_all(&data_dir)?;
    set_mode(&data_dir, 0o750)?;

    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    let containerfile = containerfile(&dockerfile)?;
    std::fs::write(dir.join("Containerfile"), &containerfile)?;

    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "image: rootfs: {BINARY} {:.1} MB (from {:.1} MB), {} libraries {:.1} MB: {}",
        mb(size(&packed)),
        mb(size(binary)),
        libraries.len(),
        mb(libraries.iter().map(|l| size(l)).sum()),
        libraries
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("image: podman build {image} from {}", dir.display());
    let status = podman
        .command()
        .args(["build", "--format", "docker", "--pull=never", "--build-arg"])
        .arg(format!("GIT_REVISION={revision}"))
        .args(["--tag", image, "--file"])
        .arg(dir.join("Containerfile"))
        .arg(&dir)
        .status()
        .context("running podman build")?;
    ensure!(status.success(), "podman build failed ({status})");

    let bytes: u64 = podman
        .output(&["image", "inspect", "--format", "{{.Size}}", image])?
        .parse()
        .context("podman image inspect: the size is not a number")?;
    // The image runs: the loader finds every library.
    let mut version = podman.command();
    version
        .args(["run", "--rm", "--network", "none"])
        .args(&podman.run)
        .args([image, "--version"]);
    let out = version.output().context("running the image")?;
    ensure!(
        out.status.success(),
        "{image} --version failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    eprintln!(
        "image: built {image}, {:.1} MB ({bytes} bytes); it runs: {}",
        mb(bytes),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The files `ldd` resolves for `binary`: its shared libraries and the dynamic loader (the
/// kernel's vDSO has no file).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    ensure!(out.status.success(), "ldd {} failed", binary.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let libraries = ldd_paths(&text)?;
    ensure!(
        libraries
            .iter()
            .any(|l| l.to_string_lossy().contains("/ld-")),
        "ldd named no dynamic loader for {}:\n{text}",
        binary.display()
    );
    Ok(libraries)
}

/// The paths of `ldd`'s output: `name => /path (0x...)` and `/path (0x...)` lines.
fn ldd_paths(ldd: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in ldd.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let resolved = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                ensure!(
                    !rest.starts_with("not found"),
                    "ldd: {} not found",
                    name.trim()
                );
                rest
            }
            None => line,
        };
        let path = resolved.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// The Dockerfile's instructions, one per logical line: continuation lines joined, comments
/// and blank lines dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim_end().to_owned());
    }
    out
}

/// The Containerfile: the root filesystem `FROM scratch`, then the Dockerfile's runtime stage
/// without what installs files (`RUN`, `COPY`: the root filesystem replaces them) and with
/// the health check's command replaced (the image has no bash).
fn containerfile(dockerfile: &str) -> Result<String> {
    let all = instructions(dockerfile);
    let start = all
        .iter()
        .position(|i| {
            let words: Vec<&str> = i.split_whitespace().collect();
            words
                .first()
                .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
                && words.len() >= 4
                && words[words.len() - 2].eq_ignore_ascii_case("AS")
                && words[words.len() - 1] == "runtime"
        })
        .context("the Dockerfile has no `FROM ... AS runtime` stage")?;
    let mut kept = Vec::new();
    let mut health_options = None;
    for instruction in &all[start + 1..] {
        let (keyword, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((instruction.as_str(), ""));
        match keyword.to_ascii_uppercase().as_str() {
            "FROM" => break,
            "RUN" | "COPY" | "ADD" => {}
            "HEALTHCHECK" => {
                let options: Vec<&str> = rest
                    .split_whitespace()
                    .take_while(|w| w.starts_with("--"))
                    .collect();
                health_options = Some(options.join(" "));
            }
            "USER" => {
                ensure!(
                    rest.trim() == format!("{UID}:{UID}"),
                    "the Dockerfile's USER is {rest:?}; xtask/src/image.rs makes /etc/passwd \
                     and the data directory for {UID}:{UID}"
                );
                kept.push(instruction.clone());
            }
            "ENTRYPOINT" => {
                ensure!(
                    rest.contains(&format!("\"{BINARY}\"")),
                    "the Dockerfile's ENTRYPOINT is {rest:?}; xtask/src/image.rs puts the \
                     binary at {BINARY}"
                );
                kept.push(instruction.clone());
            }
            "ARG" | "ENV" | "LABEL" | "VOLUME" | "WORKDIR" | "EXPOSE" | "CMD" | "STOPSIGNAL" => {
                kept.push(instruction.clone());
            }
            other => bail!(
                "the Dockerfile's runtime stage has a {other} instruction that \
                 xtask/src/image.rs does not know how to carry over"
            ),
        }
    }
    let health_options =
        health_options.context("the Dockerfile's runtime stage has no HEALTHCHECK")?;
    ensure!(
        kept.iter()
            .any(|i| i.starts_with("ENV ")
                && i.contains(&format!("RENDEZVOUS__DATA_DIR={DATA_DIR}"))),
        "the Dockerfile's ENV no longer sets RENDEZVOUS__DATA_DIR={DATA_DIR}, the directory \
         xtask/src/image.rs makes writable"
    );
    let parent = DATA_DIR.rsplit_once('/').expect("an absolute path").0;
    let mut text = format!(
        "# Written by `cargo xtask image` (xtask/src/image.rs): the root filesystem beside this\n\
         # file FROM scratch, then the runtime stage of the repository's Dockerfile without RUN\n\
         # and COPY, and with a health check that needs no shell. Do not edit; edit those.\n\
         FROM scratch\n\
         COPY rootfs/ /\n\
         COPY --chown={UID}:{UID} state/ {parent}/\n"
    );
    for instruction in kept {
        text.push_str(&instruction);
        text.push('\n');
    }
    text.push_str(&format!("HEALTHCHECK {health_options} CMD {HEALTH_CMD}\n"));
    Ok(text)
}

/// `--smoke`: runs the image against a fresh PostgreSQL database on the host's network
/// (loopback addresses, so no credentials or TLS are needed) and checks that
/// 0. its data directory is writable by the unprivileged user (`migrate` on SQLite there);
/// 1. it gets ready: `/readyz` 200 on its admin listener, `/livez` 200, `rendezvous_up` in
///    `/metrics`, `--version` the revision, its process not root but uid 10001;
/// 2. it is healthy by its own health check (`podman healthcheck run`), and that the check fails
///    when no gRPC listener answers;
/// 3. joins: rendezvous-bench drives real joins (RegisterWait, DeliverApiResponse, DeliverEvent,
///    ResumeStream with acks) through a second container of the image on the same database,
///    started in place of the binary by a wrapper script, stopped with SIGTERM (the bench
///    fails unless it exits 0), and the first container's operator CLI lists them completed;
/// 4. it stops cleanly: SIGTERM, exit code 0 within the drain time.
///
/// Both containers and the database are removed afterwards, also on failure.
fn smoke(podman: &Podman, root: &Path, target: &Path, image: &str, revision: &str) -> Result<()> {
    crate::ci::ensure_postgres()?;
    let bench = release_binary(root, target, "rendezvous-tests", "rendezvous-bench")?;
    let database = Database::create()?;
    let name = format!("rendezvous-smoke-{}", std::process::id());
    let bench_name = format!("{name}-bench");
    let _containers = Containers {
        podman,
        names: vec![name.clone(), bench_name.clone()],
    };
    let grpc = free_port()?;
    let admin = free_port()?;
    let admin_addr = format!("127.0.0.1:{admin}");

    // 0. The data directory is the unprivileged user's: `migrate` on the embedded default
    // (SQLite under RENDEZVOUS__DATA_DIR) creates and migrates a database there. Loopback
    // listen addresses, which the configuration check accepts without authentication.
    let mut migrate = podman.command();
    migrate
        .args(["run", "--rm", "--network", "none"])
        .args(&podman.run)
        .args(["--env", "RENDEZVOUS__SERVER__LISTEN=127.0.0.1:50151"])
        .args(["--env", "RENDEZVOUS__ADMIN__LISTEN=127.0.0.1:50152"])
        .args([image, "migrate"]);
    let out = migrate.output().context("running podman run ... migrate")?;
    let said = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "migrate on SQLite in {DATA_DIR} failed ({}): {said}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    eprintln!(
        "smoke: podman run {image} migrate (SQLite in {DATA_DIR}): {}",
        said.lines().last().unwrap_or_default()
    );

    eprintln!(
        "smoke: starting {name} (gRPC 127.0.0.1:{grpc}, admin {admin_addr}, database {SMOKE_DATABASE})"
    );
    let mut run = podman.command();
    run.args(["run", "--detach", "--name", &name, "--network", "host"])
        .args(&podman.run)
        .arg("--env")
        .arg(format!("RENDEZVOUS__DATABASE__URL={}", database.url))
        .arg("--env")
        .arg(format!("RENDEZVOUS__SERVER__LISTEN=127.0.0.1:{grpc}"))
        .arg("--env")
        .arg(format!("RENDEZVOUS__ADMIN__LISTEN={admin_addr}"))
        // Where the health check and the operator CLI find the gRPC listener.
        .arg("--env")
        .arg(format!("RENDEZVOUS_SERVER=http://127.0.0.1:{grpc}"))
        .arg(image);
    let out = run.output().context("running podman run")?;
    ensure!(
        out.status.success(),
        "podman run failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );

    // 1. Ready, live, metrics, version, user.
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = http_get(&admin_addr, "/readyz") {
            break;
        }
        let state = podman.output(&["inspect", "--format", "{{.State.Status}}", &name])?;
        if state != "running" || started.elapsed() > Duration::from_secs(60) {
            bail!(
                "{name} is {state} and not ready after {:.0?}; its log:\n{}",
                started.elapsed(),
                logs(podman, &name)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("smoke: GET /readyz: 200 after {:.1?}", started.elapsed());
    let (status, _) = http_get(&admin_addr, "/livez")?;
    ensure!(status == 200, "GET /livez: {status}");
    eprintln!("smoke: GET /livez: 200");
    let (status, metrics) = http_get(&admin_addr, "/metrics")?;
    ensure!(status == 200, "GET /metrics: {status}");
    let up = metric_lines(&metrics, "rendezvous_up");
    ensure!(
        up.iter().any(|l| l.trim_end().ends_with(" 1")),
        "/metrics has no `rendezvous_up ... 1`: {up:?}"
    );
    eprintln!("smoke: GET /metrics: {}", up.join("; "));
    for line in metric_lines(&metrics, "rendezvous_build_info") {
        eprintln!("smoke: GET /metrics: {line}");
    }
    let version = podman.output(&["exec", &name, BINARY, "--version"])?;
    ensure!(
        version.contains(revision),
        "the container's --version {version:?} does not name {revision}"
    );
    eprintln!("smoke: podman exec {name} rendezvous --version: {version}");
    // Not root: the service's process as the host sees it (rootful podman maps no user ids).
    let pid = podman.output(&["inspect", "--format", "{{.State.Pid}}", &name])?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    ensure!(
        uid.iter().all(|u| *u == UID.to_string()),
        "{name}'s process runs as uids {uid:?}, not {UID}"
    );
    eprintln!("smoke: {name}'s process (host pid {pid}) runs as uid {UID}");

    // 2. The image's health check, and that it can fail.
    podman
        .output(&["healthcheck", "run", &name])
        .context("the image's health check failed")?;
    let health = podman.output(&["inspect", "--format", "{{.State.Health.Status}}", &name])?;
    ensure!(health == "healthy", "health after a check: {health}");
    eprintln!("smoke: podman healthcheck run {name}: {health}");
    let closed = format!("RENDEZVOUS_SERVER=http://127.0.0.1:{}", free_port()?);
    let mut probe = podman.command();
    probe.args([
        "exec", "--env", &closed, &name, BINARY, "waits", "list", "--limit", "0", "--json",
    ]);
    let out = probe.output()?;
    ensure!(
        !out.status.success(),
        "the health check's command succeeds with no listener at {closed}"
    );
    eprintln!(
        "smoke: the health check's command fails with {closed}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );

    // 3. Joins through a second container of the image, on the same database.
    let smoke_dir = target.join("image-smoke");
    let _ = std::fs::remove_dir_all(&smoke_dir);
    std::fs::create_dir_all(&smoke_dir)?;
    let wrapper = smoke_dir.join("rendezvous-in-container");
    std::fs::write(&wrapper, wrapper_script(podman, &bench_name, image))?;
    set_mode(&wrapper, 0o755)?;
    eprintln!(
        "smoke: rendezvous-bench: {SMOKE_JOINS} joins (after a warm-up of {}) through {bench_name}",
        4 * SMOKE_CONCURRENCY
    );
    let status = Command::new(&bench)
        .arg("--binary")
        .arg(&wrapper)
        .arg("--out")
        .arg(smoke_dir.join("bench"))
        .args(["--joins", &SMOKE_JOINS.to_string()])
        .args(["--concurrency", &SMOKE_CONCURRENCY.to_string()])
        .args([
            "--floor-joins",
            "0",
            "--scale-waits",
            "0",
            "--ceiling-secs",
            "0",
        ])
        .env("DATABASE_URL", &database.url)
        .current_dir(root)
        .status()
        .context("running rendezvous-bench")?;
    ensure!(
        status.success(),
        "rendezvous-bench failed ({status}); the container's log is {}",
        smoke_dir.join("bench/instance-1.log").display()
    );
    let listed = podman.output(&[
        "exec",
        &name,
        BINARY,
        "waits",
        "list",
        "--status",
        "completed",
        "--json",
        "--limit",
        "1000",
    ])?;
    let completed = listed
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|w| w["status"] == "completed")
        .count();
    let expected = SMOKE_JOINS + 4 * SMOKE_CONCURRENCY;
    ensure!(
        completed == expected,
        "`rendezvous waits list --status completed` in {name} lists {completed} waits, not {expected}"
    );
    eprintln!(
        "smoke: podman exec {name} rendezvous waits list --status completed --json: {completed} waits, the bench's"
    );

    // 4. SIGTERM: drained and exited 0 within the drain time (server.shutdown_grace, 10 s by
    // default) and a margin, as the e2e expects of a process.
    let health = podman.output(&["inspect", "--format", "{{json .State.Health}}", &name])?;
    eprintln!("smoke: {name} .State.Health before stopping: {health}");
    let stopping = Instant::now();
    podman.output(&["kill", "--signal", "TERM", &name])?;
    let (state, code) = loop {
        let state = podman.output(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &name,
        ])?;
        let (state, code) = state.split_once(' ').unwrap_or((&state, ""));
        if state != "running" && state != "stopping" {
            break (state.to_owned(), code.to_owned());
        }
        ensure!(
            stopping.elapsed() < Duration::from_secs(20),
            "{name} still runs 20 s after SIGTERM; its log:\n{}",
            logs(podman, &name)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        code == "0",
        "{name} ended {state} with exit code {code} after SIGTERM; its log:\n{}",
        logs(podman, &name)
    );
    eprintln!(
        "smoke: SIGTERM: {name} {state}, exit code 0, after {:.1?}",
        stopping.elapsed()
    );
    let last: Vec<String> = logs(podman, &name)
        .lines()
        .rev()
        .take(2)
        .map(str::to_owned)
        .collect();
    for line in last.iter().rev() {
        eprintln!("smoke: its log: {line}");
    }
    let inspect = podman.output(&[
        "inspect",
        "--format",
        "{{.Name}} {{.ImageName}} status={{.State.Status}} exit={{.State.ExitCode}} health={{.State.Health.Status}} failing_streak={{.State.Health.FailingStreak}}",
        &name,
    ])?;
    eprintln!("smoke: podman inspect: {inspect}");
    eprintln!("smoke: passed ({image})");
    Ok(())
}

/// The script rendezvous-bench starts as its `rendezvous` binary: it runs the image instead,
/// with the `RENDEZVOUS__*` settings the bench chose (its ports, the database), on the host's
/// network. SIGTERM to it reaches the service: `podman run` passes signals on.
fn wrapper_script(podman: &Podman, name: &str, image: &str) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut command = vec!["podman".to_owned()];
    command.extend(podman.global.iter().map(|a| quote(a)));
    command.extend(["run", "--rm", "--name"].map(str::to_owned));
    command.push(quote(name));
    command.extend(["--network", "host"].map(str::to_owned));
    command.extend(podman.run.iter().map(|a| quote(a)));
    command.push("--env 'RENDEZVOUS__*'".to_owned());
    command.push("--env \"RENDEZVOUS_SERVER=http://$RENDEZVOUS__SERVER__LISTEN\"".to_owned());
    command.push(quote(image));
    format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask image --smoke` (xtask/src/image.rs): rendezvous-bench starts\n\
         # this as its `rendezvous` binary, and it runs the image instead, with the bench's\n\
         # RENDEZVOUS__* settings (the data dir is the image's own volume).\n\
         RENDEZVOUS__DATA_DIR={DATA_DIR}\n\
         export RENDEZVOUS__DATA_DIR\n\
         exec {}\n",
        command.join(" ")
    )
}

/// The smoke's database on the tests' PostgreSQL server, dropped on drop.
struct Database {
    admin: String,
    url: String,
}

impl Database {
    fn create() -> Result<Self> {
        // The server the tests use: RENDEZVOUS_TEST_POSTGRES_URL, else the machine's.
        let admin = std::env::var("RENDEZVOUS_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let (server, _) = base
            .rsplit_once('/')
            .filter(|(server, _)| server.contains("//"))
            .context("the PostgreSQL URL has no database name")?;
        let url = if query.is_empty() {
            format!("{server}/{SMOKE_DATABASE}")
        } else {
            format!("{server}/{SMOKE_DATABASE}?{query}")
        };
        let database = Self { admin, url };
        database.psql(&format!(
            "DROP DATABASE IF EXISTS {SMOKE_DATABASE} WITH (FORCE)"
        ))?;
        database.psql(&format!("CREATE DATABASE {SMOKE_DATABASE}"))?;
        Ok(database)
    }

    fn psql(&self, statement: &str) -> Result<()> {
        let out = Command::new("psql")
            .args([&self.admin, "-v", "ON_ERROR_STOP=1", "-qc", statement])
            .output()
            .context("running psql")?;
        ensure!(
            out.status.success(),
            "psql -c {statement:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        match self.psql(&format!(
            "DROP DATABASE IF EXISTS {SMOKE_DATABASE} WITH (FORCE)"
        )) {
            Ok(()) => eprintln!("smoke: dropped the database {SMOKE_DATABASE}"),
            Err(e) => eprintln!("smoke: warning: {e:#}"),
        }
    }
}

/// The smoke's containers, removed (with their anonymous volumes) on drop.
struct Containers<'a> {
    podman: &'a Podman,
    names: Vec<String>,
}

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self
                .podman
                .command()
                .args(["rm", "--force", "--volumes", "--ignore", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        eprintln!("smoke: removed the containers {}", self.names.join(", "));
    }
}

/// A container's log (podman keeps it after the container exits).
fn logs(podman: &Podman, name: &str) -> String {
    podman
        .command()
        .args(["logs", name])
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default()
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `GET path` over HTTP/1.0 (so the body comes whole, not chunked): the status and the body.
fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of the HTTP header")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_owned()))
}

/// The samples of a metric family in Prometheus text (`name` or `name{...}` lines).
fn metric_lines<'a>(metrics: &'a str, name: &str) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd1a5f2000)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f0e9c1b0000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e9bfcf000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e9c1d6000)\n";
        assert_eq!(
            ldd_paths(ldd).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libz.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(ldd_paths("\tlibfoo.so.1 => not found\n").is_err());
    }

    #[test]
    fn the_containerfile_carries_the_runtime_stage_of_the_dockerfile() {
        let dockerfile = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
        let text = containerfile(&dockerfile).unwrap();
        assert!(text.contains("\nFROM scratch\n"), "{text}");
        for expected in [
            "ENV RENDEZVOUS__SERVER__LISTEN=0.0.0.0:50151",
            "RENDEZVOUS__DATA_DIR=/var/lib/rendezvous",
            "LABEL org.opencontainers.image.title=\"rendezvous\"",
            "org.opencontainers.image.revision=\"${GIT_REVISION}\"",
            "ARG GIT_REVISION=unknown",
            "USER 10001:10001",
            "VOLUME [\"/var/lib/rendezvous\"]",
            "EXPOSE 50151 50152",
            "ENTRYPOINT [\"/usr/local/bin/rendezvous\"]",
            "CMD [\"serve\"]",
            "HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD [\"/usr/local/bin/rendezvous\", \"waits\", \"list\", \"--limit\", \"0\", \"--json\"]",
        ] {
            assert!(text.contains(expected), "no {expected:?} in\n{text}");
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        for absent in ["RUN ", "apt-get", "/bin/bash", "COPY --from", "docker.io"] {
            assert!(
                !lines.iter().any(|l| l.contains(absent)),
                "{absent:?} in\n{text}"
            );
        }
        // Only the runtime stage.
        let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(froms, [&"FROM scratch"], "{text}");
    }

    #[test]
    fn metric_lines_match_the_family_only() {
        let metrics = "# HELP rendezvous_up Up.\nrendezvous_up 1\nrendezvous_up_since 5\n\
                       rendezvous_build_info{version=\"1\"} 1\n";
        assert_eq!(metric_lines(metrics, "rendezvous_up"), ["rendezvous_up 1"]);
        assert_eq!(
            metric_lines(metrics, "rendezvous_build_info"),
            ["rendezvous_build_info{version=\"1\"} 1"]
        );
    }
}
