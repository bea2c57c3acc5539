//! A throwaway PostgreSQL cluster for `cargo xtask e2e` on a machine where no server runs:
//! `initdb` into a temporary directory, `pg_ctl start` on a free port on 127.0.0.1, a database
//! `rendezvous_e2e`; stopped and deleted on drop. As root the server runs as `postgres`
//! (PostgreSQL refuses to run as root).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A running throwaway cluster.
pub(crate) struct Throwaway {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    /// `postgres://postgres@127.0.0.1:PORT/rendezvous_e2e`.
    pub(crate) url: String,
}

/// Whether the machine's server answers on 127.0.0.1:5432.
pub(crate) fn local_server_ready() -> bool {
    Command::new("pg_isready")
        .args(["-h", "127.0.0.1", "-p", "5432", "-q"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The newest PostgreSQL `bin` directory with `initdb` (Debian: /usr/lib/postgresql/N/bin).
fn bin_dir() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no PostgreSQL installation in /usr/lib/postgresql")?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Throwaway {
    /// Creates and starts the cluster.
    pub(crate) fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("rendezvous-e2e-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let as_postgres = is_root();
        let me = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/rendezvous_e2e"),
            dir,
            bin,
            as_postgres,
        };
        if as_postgres {
            me.run(Command::new("chown").arg("postgres:").arg(&me.dir))?;
        }
        eprintln!(
            "e2e: starting a throwaway PostgreSQL cluster in {} on port {port}",
            me.dir.display()
        );
        let data = me.dir.join("data");
        me.run(
            me.pg("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        )?;
        me.run(
            me.pg("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-o")
                .arg(format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=on",
                    me.dir.display()
                ))
                .arg("-l")
                .arg(me.dir.join("server.log"))
                .args(["-w", "start"]),
        )?;
        me.run(me.pg("psql").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-qc",
            "CREATE DATABASE rendezvous_e2e",
        ]))?;
        Ok(me)
    }

    /// A PostgreSQL program, run as `postgres` when we are root.
    fn pg(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, command: &mut Command) -> Result<()> {
        let out = command
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("running {command:?}"))?;
        if !out.status.success() {
            bail!(
                "{command:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.run(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"]),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
