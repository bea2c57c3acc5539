//! The typed configuration: built-in defaults → optional file → `RENDEZVOUS__SECTION__KEY`
//! environment → command-line flags, validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Everything the binary can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where local state lives (the SQLite file of the embedded default).
    pub data_dir: PathBuf,
    /// The gRPC server.
    pub server: ServerConfig,
    /// The database.
    pub database: DatabaseSection,
    /// Limits of the use cases.
    pub service: ServiceSection,
    /// Resume streams.
    pub resume: ResumeSection,
    /// The timeout sweeper.
    pub sweeper: SweeperSection,
    /// Logs.
    pub telemetry: TelemetrySection,
    /// The Kafka ingress.
    pub kafka: KafkaSection,
    /// Outbound API calls.
    pub api: ApiSection,
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Make the API calls. Off: calls are still recorded with their waits and are made once an
    /// instance with calls enabled runs.
    pub enabled: bool,
    /// URL prefixes or host names API calls may go to. Empty: any public host.
    pub allowed: Vec<String>,
    /// Allow loopback and private addresses (off: SSRF protection).
    pub allow_private_networks: bool,
    /// Timeout of one HTTP attempt.
    pub timeout_ms: u64,
    /// Attempts before the wait fails.
    pub max_attempts: u32,
    /// First retry delay (doubles per attempt).
    pub backoff_ms: u64,
    /// Longest retry delay.
    pub max_backoff_ms: u64,
    /// The largest response body read.
    pub max_response_bytes: usize,
    /// How often due calls are looked for when no registration wakes the dispatcher.
    pub poll_interval_ms: u64,
    /// Calls made at once per instance.
    pub concurrency: u32,
}

/// `[kafka]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Run the Kafka ingress.
    pub enabled: bool,
    /// Bootstrap servers. Empty: start the embedded mock cluster (printed at start-up).
    pub brokers: String,
    /// The consumer group, shared by every instance. Keep it stable across upgrades.
    pub group_id: String,
    /// Topics always consumed, besides those of registered waits.
    pub topics: Vec<String>,
    /// Also consume every topic a registered wait listens on.
    pub follow_waits: bool,
    /// How often the topics of registered waits are re-read.
    pub refresh_interval_ms: u64,
    /// Header or JSON field with an event's identity (else topic/partition/offset).
    pub event_id_field: String,
    /// Header with an event's tenant (else the default tenant).
    pub tenant_header: String,
    /// Most records per processing batch.
    pub max_batch: usize,
    /// Where the group starts on a topic it has no offset for: `earliest` or `latest`.
    pub auto_offset_reset: String,
    /// Static group membership: a stable id per instance (e.g. the pod name). A restarted
    /// instance with the same id gets its partitions back at once instead of after the
    /// session timeout. Empty: dynamic membership.
    pub group_instance_id: String,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    pub listen: SocketAddr,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `postgres://user@host/db` or `sqlite://path?mode=rwc`. Empty: SQLite under `data_dir`.
    pub url: String,
    /// Pool size (PostgreSQL).
    pub max_connections: u32,
    /// Apply migrations at start-up.
    pub run_migrations: bool,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
}

/// `[service]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// How long events for unknown correlation ids are kept for a wait to register.
    pub buffer_ttl_secs: u64,
    /// The largest event payload, in bytes.
    pub max_payload_bytes: usize,
    /// The largest node config, in bytes.
    pub max_config_bytes: usize,
    /// Optimistic-lock conflicts one request may meet before giving up.
    pub max_conflict_retries: u32,
}

/// `[resume]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeSection {
    /// Unacknowledged resumes are delivered again after this long.
    pub ack_timeout_ms: u64,
    /// Unacknowledged resumes per stream when the subscriber asks for none.
    pub max_in_flight: u32,
    /// Fallback polling when no wake-up arrives.
    pub poll_interval_ms: u64,
}

/// `[sweeper]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweeperSection {
    /// How often due waits are looked for.
    pub interval_ms: u64,
    /// How many due waits one sweep transaction takes.
    pub batch: u32,
}

/// `[telemetry]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// `human` or `json`.
    pub log_format: String,
    /// A tracing filter, e.g. `info` or `rendezvous=debug,info`. `RUST_LOG` wins when set.
    pub log_level: String,
    /// OTLP/gRPC collector for trace export, e.g. `http://127.0.0.1:4317`. Empty: off.
    pub otlp_endpoint: String,
}

/// The built-in defaults, as a TOML document (also the reference for `deploy/rendezvous.toml`).
pub const DEFAULTS: &str = r#"
data_dir = "data"

[server]
listen = "127.0.0.1:50151"
shutdown_grace_ms = 10000

[database]
url = ""
max_connections = 16
run_migrations = true
connect_timeout_ms = 10000

[service]
buffer_ttl_secs = 3600
max_payload_bytes = 1048576
max_config_bytes = 262144
max_conflict_retries = 32

[resume]
ack_timeout_ms = 30000
max_in_flight = 64
poll_interval_ms = 1000

[sweeper]
interval_ms = 250
batch = 256

[telemetry]
log_format = "human"
log_level = "info"
otlp_endpoint = ""

[kafka]
enabled = true
brokers = ""
group_id = "rendezvous"
topics = []
follow_waits = true
refresh_interval_ms = 1000
event_id_field = "event_id"
tenant_header = "tenant_id"
max_batch = 500
auto_offset_reset = "earliest"
group_instance_id = ""

[api]
enabled = true
allowed = []
allow_private_networks = false
timeout_ms = 10000
max_attempts = 8
backoff_ms = 1000
max_backoff_ms = 60000
max_response_bytes = 1048576
poll_interval_ms = 1000
concurrency = 32
"#;

const USAGE: &str = "usage: rendezvous [--config FILE] [--listen ADDR] [--database-url URL] [--data-dir DIR] [--log-format human|json]

Runs the Rendezvous service. With no configuration it listens on 127.0.0.1:50151 and keeps its
state in SQLite under ./data. Settings come from built-in defaults, then the --config file (TOML),
then RENDEZVOUS__SECTION__KEY environment variables (e.g. RENDEZVOUS__DATABASE__URL), then flags.";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run with this configuration.
    Run(Box<Config>),
    /// Print this text and exit successfully.
    Print(String),
}

impl Config {
    /// Loads the configuration from the command line (without the program name) and the
    /// environment.
    pub fn from_args(args: &[String]) -> Result<Command> {
        Self::load(args, std::env::vars())
    }

    /// Loads from explicit arguments and environment variables (testable).
    pub fn load(
        args: &[String],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Command> {
        let mut file = None;
        let mut overrides: Vec<(&str, String)> = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| -> Result<String> {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
            };
            match flag {
                "-h" | "--help" => return Ok(Command::Print(USAGE.to_owned())),
                "-V" | "--version" => {
                    return Ok(Command::Print(format!("rendezvous {}", crate::VERSION)));
                }
                "--config" => file = Some(value("--config")?),
                "--listen" => overrides.push(("server.listen", value("--listen")?)),
                "--database-url" => overrides.push(("database.url", value("--database-url")?)),
                "--data-dir" => overrides.push(("data_dir", value("--data-dir")?)),
                "--log-format" => overrides.push(("telemetry.log_format", value("--log-format")?)),
                other => bail!("unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if let Some(path) = &file {
            if !std::path::Path::new(path).is_file() {
                bail!("config file {path:?} does not exist");
            }
            builder = builder.add_source(config::File::new(path, config::FileFormat::Toml));
        }
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("RENDEZVOUS__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("RENDEZVOUS")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("kafka.topics")
                .with_list_parse_key("api.allowed")
                .source(Some(env)),
        );
        for (key, value) in overrides {
            builder = builder.set_override(key, value)?;
        }
        let config: Config = builder
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(Command::Run(Box::new(config)))
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if !matches!(self.telemetry.log_format.as_str(), "human" | "json") {
            problems.push(format!(
                "telemetry.log_format: expected \"human\" or \"json\", found {:?}",
                self.telemetry.log_format
            ));
        }
        if !matches!(self.kafka.auto_offset_reset.as_str(), "earliest" | "latest") {
            problems.push(format!(
                "kafka.auto_offset_reset: expected \"earliest\" or \"latest\", found {:?}",
                self.kafka.auto_offset_reset
            ));
        }
        if self.kafka.enabled && self.kafka.group_id.is_empty() {
            problems
                .push("kafka.group_id: required (an explicit, stable consumer group)".to_owned());
        }
        let otlp = &self.telemetry.otlp_endpoint;
        if !(otlp.is_empty() || otlp.starts_with("http://") || otlp.starts_with("https://")) {
            problems.push(format!("telemetry.otlp_endpoint: expected http://host:port or https://host:port, found {otlp:?}"));
        }
        let url = &self.database.url;
        if !(url.is_empty()
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            problems.push(format!(
                "database.url: expected postgres://..., postgresql://... or sqlite:..., found {:?}",
                rendezvous_persistence::redact(url)
            ));
        }
        for (name, value) in [
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
            ),
            ("resume.ack_timeout_ms", self.resume.ack_timeout_ms),
            ("resume.max_in_flight", u64::from(self.resume.max_in_flight)),
            ("resume.poll_interval_ms", self.resume.poll_interval_ms),
            ("sweeper.interval_ms", self.sweeper.interval_ms),
            ("sweeper.batch", u64::from(self.sweeper.batch)),
            ("kafka.refresh_interval_ms", self.kafka.refresh_interval_ms),
            ("kafka.max_batch", self.kafka.max_batch as u64),
            ("api.timeout_ms", self.api.timeout_ms),
            ("api.max_attempts", u64::from(self.api.max_attempts)),
            ("api.max_response_bytes", self.api.max_response_bytes as u64),
            ("api.poll_interval_ms", self.api.poll_interval_ms),
            ("api.concurrency", u64::from(self.api.concurrency)),
            ("service.buffer_ttl_secs", self.service.buffer_ttl_secs),
            (
                "service.max_payload_bytes",
                self.service.max_payload_bytes as u64,
            ),
            (
                "service.max_config_bytes",
                self.service.max_config_bytes as u64,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{name}: must be greater than 0"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid configuration:\n  {}", problems.join("\n  "))
        }
    }

    /// The database URL, defaulting to SQLite under `data_dir`.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("rendezvous.sqlite").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    /// `ms` as a duration.
    pub(crate) fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        match Config::load(&args, env)? {
            Command::Run(config) => Ok(*config),
            Command::Print(text) => bail!("printed {text}"),
        }
    }

    #[test]
    fn defaults_need_no_setup() {
        let config = run(&[], &[]).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:50151");
        assert_eq!(
            config.database_url(),
            "sqlite://data/rendezvous.sqlite?mode=rwc"
        );
    }

    #[test]
    fn layers_file_env_and_flags_in_order() {
        let dir = std::env::temp_dir().join(format!("rdv-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1\"\n[resume]\nack_timeout_ms = 5\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let config = run(
            &["--config", file],
            &[("RENDEZVOUS__SERVER__LISTEN", "127.0.0.1:2")],
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 2, "environment beats the file");
        assert_eq!(
            config.resume.ack_timeout_ms, 5,
            "the file beats the defaults"
        );
        let config = run(
            &["--config", file, "--listen=127.0.0.1:3"],
            &[("RENDEZVOUS__SERVER__LISTEN", "127.0.0.1:2")],
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 3, "flags beat everything");
        let config = run(
            &[],
            &[("RENDEZVOUS__DATABASE__URL", "postgres://u:secret@h/db")],
        )
        .unwrap();
        assert_eq!(config.database_url(), "postgres://u:secret@h/db");
    }

    #[test]
    fn the_documented_example_file_is_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rendezvous.toml");
        assert_eq!(
            run(&["--config", example], &[]).unwrap(),
            run(&[], &[]).unwrap()
        );
    }

    #[test]
    fn kafka_topics_from_the_environment() {
        let config = run(
            &[],
            &[
                ("RENDEZVOUS__KAFKA__TOPICS", "a.events,b.events"),
                ("RENDEZVOUS__KAFKA__BROKERS", "k1:9092"),
            ],
        )
        .unwrap();
        assert_eq!(config.kafka.topics, ["a.events", "b.events"]);
        assert_eq!(config.kafka.brokers, "k1:9092");
        let err = format!(
            "{:#}",
            run(&[], &[("RENDEZVOUS__KAFKA__AUTO_OFFSET_RESET", "middle")]).unwrap_err()
        );
        assert!(err.contains("kafka.auto_offset_reset"), "{err}");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let err = run(&["--log-format", "xml"], &[]).unwrap_err().to_string();
        assert!(err.contains("telemetry.log_format"), "{err}");
        let err = format!(
            "{:#}",
            run(&[], &[("RENDEZVOUS__SERVER__LISTEN", "nowhere")]).unwrap_err()
        );
        assert!(err.contains("listen"), "{err}");
        let err = run(&["--database-url", "mysql://x:pw@h/d"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url") && !err.contains("pw"), "{err}");
        let err = run(&["--bogus"], &[]).unwrap_err().to_string();
        assert!(err.contains("unknown argument \"--bogus\""), "{err}");
        let err = run(&["--config", "/nonexistent.toml"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        let err = format!(
            "{:#}",
            run(&[], &[("RENDEZVOUS__SWEEPER__BATCH", "0")]).unwrap_err()
        );
        assert!(
            err.contains("sweeper.batch: must be greater than 0"),
            "{err}"
        );
    }
}
