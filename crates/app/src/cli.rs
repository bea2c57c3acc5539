//! The command line (clap): `rendezvous [serve] [flags]`. `serve` is the default command, so
//! `rendezvous --listen ...` and `rendezvous serve --listen ...` mean the same; operator
//! commands go beside it in [`CliCommand`]. Flags are the last layer of the configuration.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat, check_database_url};
use crate::operator::{
    BufferedCommand, Operation, QuarantineCommand, Remote, ResumesCommand, WaitsCommand,
};

/// `rendezvous --version`: the version and the git revision it was built from.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RENDEZVOUS_REVISION"),
    ")"
);

const ABOUT: &str = "Rendezvous: waits on several events (API responses, Kafka records) and \
resumes a workflow engine once they arrived.";

const LONG_ABOUT: &str = "Rendezvous: waits on several events (API responses, Kafka records) \
and resumes a workflow engine once they arrived.

With no configuration it listens on 127.0.0.1:50151, keeps its state in SQLite under ./data and \
starts an embedded Kafka. Settings come from built-in defaults, then the --config file (TOML; \
deploy/rendezvous.toml lists every setting), then RENDEZVOUS__SECTION__KEY environment variables \
(e.g. RENDEZVOUS__DATABASE__URL, RENDEZVOUS__RESUME__ACK_TIMEOUT=30s), then flags.";

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "rendezvous",
    version = LONG_VERSION,
    about = ABOUT,
    long_about = LONG_ABOUT,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// The command; none is `serve`.
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    /// `serve`'s flags, given without the word `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the service (the default command).
    Serve(ServeArgs),
    /// Make a new API key (or hash one given) and print it with the SHA-256 that goes into
    /// `[[auth.api_keys]]`. Only the hash belongs in the configuration.
    ApiKey(ApiKeyArgs),
    /// Find, inspect and cancel waits of a running instance (admin credential:
    /// `RENDEZVOUS_TOKEN`, `--token-file` or a client certificate).
    Waits {
        /// Where the instance is and who we are.
        #[command(flatten)]
        remote: Remote,
        /// What to do.
        #[command(subcommand)]
        command: WaitsCommand,
    },
    /// List events set aside with their reason (admin credential of every tenant).
    Quarantine {
        /// Where the instance is and who we are.
        #[command(flatten)]
        remote: Remote,
        /// What to do.
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// List early events waiting for their wait to register (admin credential).
    Buffered {
        /// Where the instance is and who we are.
        #[command(flatten)]
        remote: Remote,
        /// What to do.
        #[command(subcommand)]
        command: BufferedCommand,
    },
    /// Send a decided wait's resume again (admin credential).
    Resumes {
        /// Where the instance is and who we are.
        #[command(flatten)]
        remote: Remote,
        /// What to do.
        #[command(subcommand)]
        command: ResumesCommand,
    },
    /// Apply the database migrations and exit (for a deployment step of its own, with
    /// `database.run_migrations = false` on the instances); `migrate status` only lists them.
    Migrate {
        /// The configuration naming the database.
        #[command(flatten)]
        serve: ServeArgs,
        /// `status`: list applied and pending migrations, change nothing.
        #[arg(value_parser = ["status"])]
        action: Option<String>,
    },
    /// Check the configuration (every file it names read, every key parsed) or print it
    /// with secrets hidden.
    Config {
        /// `check` or `print`.
        #[arg(value_parser = ["check", "print"])]
        action: String,
        /// The configuration: the same flags as `serve`.
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// `api-key`'s flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ApiKeyArgs {
    /// Hash this key instead of making a new one (read from the environment, not the command
    /// line, so it stays out of shell history).
    #[arg(long, value_name = "VAR")]
    pub from_env: Option<String>,
}

impl ApiKeyArgs {
    /// The text `api-key` prints.
    fn run(&self, env: impl IntoIterator<Item = (String, String)>) -> Result<String> {
        let key = match &self.from_env {
            Some(var) => env
                .into_iter()
                .find(|(k, _)| k == var)
                .map(|(_, v)| v)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--from-env: {var} is not set"))?,
            None => format!(
                "rdv_{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
        };
        let sha256 = rendezvous_grpc_api::auth::api_key_sha256(&key);
        Ok(format!(
            "key:    {key}\nsha256: {sha256}\n\n[[auth.api_keys]]\nname = \"...\"\nsha256 = \"{sha256}\"\nroles = [\"engine\"]\ntenants = [\"...\"]\n"
        ))
    }
}

/// `serve`'s flags: each overrides one setting of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ServeArgs {
    /// A TOML file of settings (see deploy/rendezvous.toml).
    #[arg(long, value_name = "FILE", env = "RENDEZVOUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// The gRPC address; port 0 picks a free one [setting: server.listen].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// postgres://... or sqlite:...; empty: SQLite under the data dir [setting: database.url].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Where local state lives [setting: data_dir].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// How logs are written [setting: telemetry.log_format].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl ServeArgs {
    /// The configuration: defaults, the file, the `RENDEZVOUS__...` variables of `env`, then
    /// these flags.
    pub fn config(&self, env: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let mut config = Config::read(self.config.as_deref(), env)?;
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(url) = &self.database_url {
            // Checked here rather than by clap, whose error would show the password.
            check_database_url(url).map_err(|e| anyhow::anyhow!("--database-url: {e}"))?;
            config.database.url = url.clone();
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(format) = self.log_format {
            config.telemetry.log_format = format;
        }
        config.validate()?;
        Ok(config)
    }
}

/// What the command line asks the binary to do, with its configuration loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `serve` (also with no command): run with this configuration.
    Run(Box<Config>),
    /// `--help` or `--version`: print this text on stdout and exit successfully.
    Print(String),
    /// An operator command that needs the runtime (gRPC, the database).
    Operate(Operation),
}

impl Config {
    /// [`Config::load`] with the process's arguments and environment.
    pub fn from_args() -> Result<Command> {
        Self::load(std::env::args_os().skip(1), std::env::vars())
    }

    /// Parses `args` (without the program name) and loads the configuration they name from
    /// the defaults, the file and `env`. A bad flag is an error naming it, with the usage.
    pub fn load<I, T>(args: I, env: impl IntoIterator<Item = (String, String)>) -> Result<Command>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let program = std::iter::once(OsString::from("rendezvous"));
        let cli = match Cli::try_parse_from(program.chain(args.into_iter().map(Into::into))) {
            Ok(cli) => cli,
            Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
                return Ok(Command::Print(e.to_string()));
            }
            Err(e) => {
                let text = e.to_string();
                let text = text.strip_prefix("error: ").unwrap_or(&text);
                anyhow::bail!("{}", text.trim_end());
            }
        };
        match cli.command {
            Some(CliCommand::Serve(args)) => Ok(Command::Run(Box::new(args.config(env)?))),
            Some(CliCommand::ApiKey(args)) => Ok(Command::Print(args.run(env)?)),
            Some(CliCommand::Waits { remote, command }) => Ok(Command::Operate(Operation::Waits(
                Box::new(remote),
                command,
            ))),
            Some(CliCommand::Quarantine { remote, command }) => Ok(Command::Operate(
                Operation::Quarantine(Box::new(remote), command),
            )),
            Some(CliCommand::Buffered { remote, command }) => Ok(Command::Operate(
                Operation::Buffered(Box::new(remote), command),
            )),
            Some(CliCommand::Resumes { remote, command }) => Ok(Command::Operate(
                Operation::Resumes(Box::new(remote), command),
            )),
            Some(CliCommand::Migrate { serve, action }) => {
                Ok(Command::Operate(Operation::Migrate {
                    config: Box::new(serve.config(env)?),
                    status: action.is_some(),
                }))
            }
            Some(CliCommand::Config { action, serve }) => {
                let config = serve.config(env)?;
                Ok(Command::Print(if action == "print" {
                    crate::operator::print_config(&config)?
                } else {
                    crate::operator::check_config(&config)?
                }))
            }
            None => Ok(Command::Run(Box::new(cli.serve.config(env)?))),
        }
    }
}
