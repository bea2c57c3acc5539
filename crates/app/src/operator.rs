//! The operator commands of the binary: `waits list|get|cancel`, `quarantine list|replay`,
//! `buffered list` and `resumes redeliver` talk gRPC to a running instance (with an admin
//! credential: `RENDEZVOUS_TOKEN` as a bearer token, or a client certificate), `migrate
//! [status]` works on the database of the configuration, and `config check|print` on the
//! configuration itself. Output is a table for people, or JSON (`--json`) for scripts.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use rendezvous_client::v1::admin_service_client::AdminServiceClient;
use rendezvous_client::v1::wait_service_client::WaitServiceClient;
use rendezvous_client::{Credentials, Transport, v1};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::config::Config;

/// Where the running instance is and who we are to it.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Remote {
    /// The instance's gRPC address (`https://` for TLS).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "RENDEZVOUS_SERVER",
        default_value = "http://127.0.0.1:50151"
    )]
    pub server: String,
    /// PEM roots the server's certificate must chain to (besides the system's).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS, with `--key-file`.
    #[arg(long, global = true, value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// A file holding the bearer credential (a JWT or an API key). The `RENDEZVOUS_TOKEN`
    /// environment variable does the same without a file.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `waits`' subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum WaitsCommand {
    /// Waits, newest first (open ones by default with `--status open`).
    List {
        /// Only these statuses (repeatable): open, completed, timed_out, cancelled, failed.
        #[arg(long, value_enum)]
        status: Vec<StatusFilter>,
        /// Only this execution's waits.
        #[arg(long)]
        execution: Option<String>,
        /// Only waits created more than this long ago, e.g. `1h` (stuck waits).
        #[arg(long, value_name = "AGE", value_parser = crate::config::parse_age)]
        older_than: Option<Duration>,
        /// Only this tenant's waits (one of the credential's).
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One wait with what it received, what it still waits for and what it ignored.
    Get {
        /// The wait id.
        wait_id: String,
    },
    /// Cancels an open wait: the engine gets a CANCELLED resume.
    Cancel {
        /// The wait id.
        wait_id: String,
        /// Why (shown to the engine in the resume).
        #[arg(long, default_value = "cancelled by an operator")]
        reason: String,
    },
}

/// `quarantine`'s subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum QuarantineCommand {
    /// Events set aside with their reason, newest first (needs a credential of every tenant).
    List {
        /// At most this many (1000 at most).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Sends quarantined events back through the door they came in by (a Kafka record is read
    /// again with the topics waits name now; an expired early event is delivered again). An
    /// event taken leaves the quarantine; one refused again stays with the new reason.
    Replay {
        /// The events' ids, as `quarantine list` shows them (at most 100).
        #[arg(required = true, num_args = 1..)]
        ids: Vec<i64>,
    },
}

/// `buffered`'s subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum BufferedCommand {
    /// Early events waiting for a wait to register, newest first.
    List {
        /// Only this tenant's (one of the credential's).
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many (1000 at most).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `resumes`' subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ResumesCommand {
    /// Sends a decided wait's resume again, with the same resume id (for an engine that lost
    /// it, acknowledged or not).
    Redeliver {
        /// The wait id.
        wait_id: String,
    },
}

/// A status to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    /// Every open status (waiting for events, the API or Kafka).
    Open,
    /// Completed.
    Completed,
    /// Timed out.
    TimedOut,
    /// Cancelled.
    Cancelled,
    /// Failed.
    Failed,
}

impl StatusFilter {
    fn statuses(self) -> Vec<v1::WaitStatus> {
        match self {
            Self::Open => vec![
                v1::WaitStatus::WaitingForEvents,
                v1::WaitStatus::WaitingForApi,
                v1::WaitStatus::WaitingForKafka,
            ],
            Self::Completed => vec![v1::WaitStatus::Completed],
            Self::TimedOut => vec![v1::WaitStatus::TimedOut],
            Self::Cancelled => vec![v1::WaitStatus::Cancelled],
            Self::Failed => vec![v1::WaitStatus::Failed],
        }
    }
}

/// An operator command, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `waits ...` against `remote`.
    Waits(Box<Remote>, WaitsCommand),
    /// `quarantine ...` against `remote`.
    Quarantine(Box<Remote>, QuarantineCommand),
    /// `buffered ...` against `remote`.
    Buffered(Box<Remote>, BufferedCommand),
    /// `resumes ...` against `remote`.
    Resumes(Box<Remote>, ResumesCommand),
    /// `migrate`: apply pending migrations (`status`: only list them).
    Migrate {
        /// The configuration naming the database.
        config: Box<Config>,
        /// Only show what is applied and what is pending.
        status: bool,
    },
}

impl Operation {
    /// Runs it; the text to print on stdout.
    pub async fn run(self) -> Result<String> {
        match self {
            Operation::Waits(remote, command) => waits(&remote, command).await,
            Operation::Quarantine(remote, QuarantineCommand::List { limit }) => {
                quarantined(&remote, limit).await
            }
            Operation::Quarantine(remote, QuarantineCommand::Replay { ids }) => {
                replay(&remote, ids).await
            }
            Operation::Buffered(remote, BufferedCommand::List { tenant, limit }) => {
                buffered(&remote, tenant, limit).await
            }
            Operation::Resumes(remote, ResumesCommand::Redeliver { wait_id }) => {
                redeliver(&remote, wait_id).await
            }
            Operation::Migrate { config, status } => migrate(&config, status).await,
        }
    }
}

type Client = WaitServiceClient<Transport>;
type Admin = AdminServiceClient<Transport>;

async fn connect(remote: &Remote) -> Result<Client> {
    Ok(client(remote).await?.waits())
}

async fn connect_admin(remote: &Remote) -> Result<Admin> {
    Ok(client(remote).await?.admin())
}

/// A client of `remote`, with the credential every call carries.
async fn client(remote: &Remote) -> Result<rendezvous_client::Client> {
    let mut endpoint = Channel::from_shared(remote.server.clone())
        .with_context(|| format!("--server: {} is not a URL", remote.server))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if remote.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &remote.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("--ca-file {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&remote.cert_file, &remote.key_file) {
            let cert =
                std::fs::read(cert).with_context(|| format!("--cert-file {}", cert.display()))?;
            let key =
                std::fs::read(key).with_context(|| format!("--key-file {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls)?;
    } else if remote.ca_file.is_some() || remote.cert_file.is_some() {
        bail!("--ca-file and --cert-file need an https:// --server");
    }
    let token = match &remote.token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("--token-file {}", file.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("RENDEZVOUS_TOKEN").ok(),
    }
    .filter(|t| !t.is_empty());
    let credentials = match token {
        Some(token) => Credentials::bearer(&token).context("the token")?,
        None => Credentials::none(),
    };
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", remote.server))?;
    Ok(rendezvous_client::Client::new(channel).with_credentials(credentials))
}

async fn quarantined(remote: &Remote, limit: u32) -> Result<String> {
    let events = connect_admin(remote)
        .await?
        .list_quarantined(v1::ListQuarantinedRequest { page_size: limit })
        .await
        .map_err(status)?
        .into_inner()
        .events;
    if remote.json {
        return Ok(json_lines(events.iter().map(|e| {
            json!({
                "id": e.id,
                "origin": e.origin,
                "event_key": e.event_key,
                "correlation_id": e.correlation_id,
                "payload": e.payload,
                "reason": e.reason,
                "quarantined_at": time(e.quarantined_at.as_ref()),
                "replays": e.replays,
                "replayable": e.replayable,
            })
        })));
    }
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|e| {
            [
                e.id.to_string(),
                time(e.quarantined_at.as_ref()),
                e.origin.clone(),
                e.correlation_id.clone(),
                match (e.replayable, e.replays) {
                    (false, _) => "no".to_owned(),
                    (true, 0) => "yes".to_owned(),
                    (true, n) => format!("yes ({n} refused)"),
                },
                e.reason.clone(),
            ]
        })
        .collect();
    Ok(table(
        [
            "ID",
            "QUARANTINED",
            "ORIGIN",
            "CORRELATION",
            "REPLAYABLE",
            "REASON",
        ],
        &rows,
    ))
}

async fn replay(remote: &Remote, ids: Vec<i64>) -> Result<String> {
    let results = connect_admin(remote)
        .await?
        .replay_quarantined(v1::ReplayQuarantinedRequest { ids })
        .await
        .map_err(status)?
        .into_inner()
        .results;
    let word = |r: &v1::ReplayResult| enum_word(r.outcome().as_str_name(), "REPLAY_OUTCOME_");
    if remote.json {
        return Ok(json_lines(results.iter().map(
            |r| json!({"id": r.id, "outcome": word(r), "reason": r.reason}),
        )));
    }
    let rows: Vec<[String; 3]> = results
        .iter()
        .map(|r| [r.id.to_string(), word(r), r.reason.clone()])
        .collect();
    Ok(table(["ID", "OUTCOME", "REASON"], &rows))
}

async fn buffered(remote: &Remote, tenant: Option<String>, limit: u32) -> Result<String> {
    let events = connect_admin(remote)
        .await?
        .list_buffered(v1::ListBufferedRequest {
            tenant_id: tenant.unwrap_or_default(),
            page_size: limit,
        })
        .await
        .map_err(status)?
        .into_inner()
        .events;
    if remote.json {
        return Ok(json_lines(events.iter().map(|e| {
            json!({
                "tenant_id": e.tenant_id,
                "correlation_id": e.correlation_id,
                "event_key": e.event_key,
                "channel": e.channel,
                "received_at": time(e.received_at.as_ref()),
                "expires_at": time(e.expires_at.as_ref()),
            })
        })));
    }
    let rows: Vec<[String; 5]> = events
        .iter()
        .map(|e| {
            [
                e.tenant_id.clone(),
                e.correlation_id.clone(),
                e.channel.clone(),
                time(e.received_at.as_ref()),
                time(e.expires_at.as_ref()),
            ]
        })
        .collect();
    Ok(table(
        ["TENANT", "CORRELATION", "CHANNEL", "RECEIVED", "EXPIRES"],
        &rows,
    ))
}

async fn redeliver(remote: &Remote, wait_id: String) -> Result<String> {
    let answer = connect_admin(remote)
        .await?
        .redeliver_resume(v1::RedeliverResumeRequest {
            wait_id: wait_id.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    Ok(if remote.json {
        json_lines([json!({
            "wait_id": wait_id,
            "resume_id": answer.resume_id,
            "was_acked": answer.was_acked,
        })])
    } else {
        format!(
            "resume {} of wait {wait_id} goes out again ({})\n",
            answer.resume_id,
            if answer.was_acked {
                "it had been acknowledged"
            } else {
                "it was not acknowledged yet"
            }
        )
    })
}

/// A gRPC error as an operator reads it: the code in words and the message.
fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

async fn waits(remote: &Remote, command: WaitsCommand) -> Result<String> {
    let mut client = connect(remote).await?;
    match command {
        WaitsCommand::List {
            status: statuses,
            execution,
            older_than,
            tenant,
            limit,
        } => {
            let created_before = older_than.map(|age| {
                let at = std::time::SystemTime::now() - age;
                let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                prost_types::Timestamp {
                    seconds: since.as_secs() as i64,
                    nanos: since.subsec_nanos() as i32,
                }
            });
            let mut found = Vec::new();
            let mut token = String::new();
            while found.len() < limit as usize {
                let page = client
                    .list_waits(v1::ListWaitsRequest {
                        tenant_id: tenant.clone().unwrap_or_default(),
                        statuses: statuses
                            .iter()
                            .flat_map(|s| s.statuses())
                            .map(Into::into)
                            .collect(),
                        execution_id: execution.clone().unwrap_or_default(),
                        created_before,
                        page_size: (limit as usize - found.len()).min(1000) as u32,
                        page_token: token,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                found.extend(page.waits);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            Ok(if remote.json {
                json_lines(found.iter().map(wait_json))
            } else {
                waits_table(&found)
            })
        }
        WaitsCommand::Get { wait_id } => {
            let wait = client
                .get_wait(v1::GetWaitRequest {
                    key: Some(v1::get_wait_request::Key::WaitId(wait_id)),
                    tenant_id: String::new(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .wait
                .context("the server sent no wait")?;
            Ok(if remote.json {
                json_lines([wait_json(&wait)])
            } else {
                wait_details(&wait)
            })
        }
        WaitsCommand::Cancel { wait_id, reason } => {
            let answer = client
                .cancel_wait(v1::CancelWaitRequest {
                    key: Some(v1::cancel_wait_request::Key::WaitId(wait_id.clone())),
                    tenant_id: String::new(),
                    reason,
                })
                .await
                .map_err(status)?
                .into_inner();
            let wait = answer.wait.context("the server sent no wait")?;
            Ok(if remote.json {
                let mut value = wait_json(&wait);
                value["already_decided"] = answer.already_decided.into();
                json_lines([value])
            } else if answer.already_decided {
                format!(
                    "wait {wait_id} was already decided ({}); nothing changed\n",
                    status_word(wait.status())
                )
            } else {
                format!("wait {wait_id} cancelled; the engine gets a CANCELLED resume\n")
            })
        }
    }
}

async fn migrate(config: &Config, status_only: bool) -> Result<String> {
    let mut database = config.database_config();
    database.run_migrations = false;
    let database = rendezvous_persistence::Database::connect(&database)
        .await
        .with_context(|| {
            format!(
                "opening the database {}",
                rendezvous_persistence::redact(&config.database_url())
            )
        })?;
    let result = async {
        let before = database.migrations().await?;
        if status_only {
            return Ok(migrations_table(&before));
        }
        database.migrate().await?;
        let after = database.migrations().await?;
        let applied = after.iter().filter(|(_, done)| *done).count()
            - before.iter().filter(|(_, done)| *done).count();
        Ok::<_, anyhow::Error>(format!(
            "{}{applied} migration(s) applied\n",
            migrations_table(&after)
        ))
    }
    .await;
    database.close().await;
    result
}

/// `config print`: the effective configuration as JSON, the database URL without its
/// password and every librdkafka property that may hold a secret hidden.
pub fn print_config(config: &Config) -> Result<String> {
    let mut value = serde_json::to_value(config)?;
    if let Some(url) = value.pointer_mut("/database/url")
        && let Some(text) = url.as_str()
    {
        *url = rendezvous_persistence::redact(text).into();
    }
    if let Some(Value::Object(properties)) = value.pointer_mut("/kafka/properties") {
        for (key, v) in properties.iter_mut() {
            if ["password", "secret", "key", "token", "jaas"]
                .iter()
                .any(|s| key.contains(s))
                && !key.ends_with(".location")
            {
                *v = "<hidden>".into();
            }
        }
    }
    Ok(format!("{}\n", serde_json::to_string_pretty(&value)?))
}

/// `config check`: what `serve` would refuse at start-up, refused now (every key and value,
/// the TLS files, the JWT keys, the Kafka properties), and a summary when all is well.
pub fn check_config(config: &Config) -> Result<String> {
    let auth = config.auth.authenticator()?;
    config.server.tls.server_config()?;
    if config.kafka.enabled {
        config
            .kafka
            .ingress_config(config.kafka.brokers.is_empty())
            .check()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut out = String::from("configuration OK\n");
    let _ = writeln!(out, "  gRPC       {}", config.server.listen);
    let _ = writeln!(
        out,
        "  admin      {}",
        if config.admin.enabled {
            config.admin.listen.to_string()
        } else {
            "off".to_owned()
        }
    );
    let _ = writeln!(
        out,
        "  database   {}",
        rendezvous_persistence::redact(&config.database_url())
    );
    let _ = writeln!(
        out,
        "  kafka      {}",
        match (config.kafka.enabled, config.kafka.brokers.is_empty()) {
            (false, _) => "off".to_owned(),
            (true, true) => "embedded mock cluster".to_owned(),
            (true, false) => config.kafka.brokers.clone(),
        }
    );
    let _ = writeln!(
        out,
        "  auth       {}",
        if auth.is_open() {
            "none (every caller is an admin; loopback only)"
        } else {
            "required"
        }
    );
    let _ = writeln!(
        out,
        "  tls        {}",
        if config.server.tls.enabled() {
            "on"
        } else {
            "off"
        }
    );
    Ok(out)
}

fn migrations_table(migrations: &[(String, bool)]) -> String {
    let mut out = String::new();
    for (name, applied) in migrations {
        let _ = writeln!(
            out,
            "{:<8} {name}",
            if *applied { "applied" } else { "pending" }
        );
    }
    out
}

fn json_lines(values: impl IntoIterator<Item = Value>) -> String {
    let mut out = String::new();
    for value in values {
        let _ = writeln!(out, "{value}");
    }
    out
}

/// A status as the domain names it (`waiting_for_events`, `timed_out`, ...): the proto's enum
/// name without its `WAIT_STATUS_` prefix, in lower case.
fn status_word(status: v1::WaitStatus) -> String {
    enum_word(status.as_str_name(), "WAIT_STATUS_")
}

/// An outcome as the domain names it; empty while the wait is open.
fn outcome_word(outcome: v1::Outcome) -> String {
    match outcome {
        v1::Outcome::Unspecified => String::new(),
        outcome => enum_word(outcome.as_str_name(), "OUTCOME_"),
    }
}

fn enum_word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

/// RFC 3339 (UTC, milliseconds) of a protobuf timestamp; empty when unset.
fn time(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else { return String::new() };
    rfc3339(t.seconds, t.nanos / 1_000_000)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a Unix time (the civil-from-days algorithm of H. Hinnant).
fn rfc3339(seconds: i64, millis: i32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn wait_json(w: &v1::Wait) -> Value {
    json!({
        "wait_id": w.wait_id,
        "tenant_id": w.tenant_id,
        "correlation_id": w.correlation_id,
        "execution_id": w.execution_id,
        "node_id": w.node_id,
        "workflow_id": w.workflow_id,
        "status": status_word(w.status()),
        "condition": w.condition,
        "sources": w.sources,
        "received": w.received.iter().map(|e| json!({
            "source": e.source,
            "event_key": e.event_key,
            "payload": serde_json::from_str::<Value>(&e.payload_json).unwrap_or(Value::String(e.payload_json.clone())),
            "received_at": time(e.received_at.as_ref()),
        })).collect::<Vec<_>>(),
        "waiting_for": w.waiting_for,
        "missing": w.missing,
        "ignored": w.ignored.iter().map(|i| json!({
            "event_key": i.event_key,
            "at": time(i.at.as_ref()),
            "kind": i.kind,
            "detail": i.detail,
        })).collect::<Vec<_>>(),
        "ignored_total": w.ignored_total,
        "created_at": time(w.created_at.as_ref()),
        "deadline": time(w.deadline.as_ref()),
        "outcome": outcome_word(w.outcome()),
        "decided_at": time(w.decided_at.as_ref()),
        "reason": w.reason,
        "version": w.version,
    })
}

fn waits_table(waits: &[v1::Wait]) -> String {
    let rows: Vec<[String; 6]> = waits
        .iter()
        .map(|w| {
            [
                w.wait_id.clone(),
                w.tenant_id.clone(),
                w.execution_id.clone(),
                status_word(w.status()),
                w.waiting_for.join(","),
                time(w.created_at.as_ref()),
            ]
        })
        .collect();
    table(
        [
            "WAIT",
            "TENANT",
            "EXECUTION",
            "STATUS",
            "WAITING FOR",
            "CREATED",
        ],
        &rows,
    )
}

/// Columns padded to their widest cell.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn wait_details(w: &v1::Wait) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        if !value.is_empty() {
            let _ = writeln!(out, "{name:<14}{value}");
        }
    };
    field("wait", &w.wait_id);
    field("tenant", &w.tenant_id);
    field("correlation", &w.correlation_id);
    field("execution", &w.execution_id);
    field("node", &w.node_id);
    field("workflow", &w.workflow_id);
    field("status", &status_word(w.status()));
    field("condition", &w.condition);
    field("sources", &w.sources.join(", "));
    field("waiting for", &w.waiting_for.join(", "));
    field("created", &time(w.created_at.as_ref()));
    field("deadline", &time(w.deadline.as_ref()));
    field("outcome", &outcome_word(w.outcome()));
    field("decided", &time(w.decided_at.as_ref()));
    field("reason", &w.reason);
    for e in &w.received {
        field(
            "received",
            &format!(
                "{} ({}) at {}",
                e.source,
                e.event_key,
                time(e.received_at.as_ref())
            ),
        );
    }
    for i in &w.ignored {
        field(
            "ignored",
            &format!(
                "{} ({}): {} at {}",
                i.event_key,
                i.kind,
                i.detail,
                time(i.at.as_ref())
            ),
        );
    }
    if w.ignored_total > w.ignored.len() as u64 {
        field("ignored total", &w.ignored_total.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_outcomes_read_as_the_domain_names_them() {
        for raw in 1..=7 {
            let status = v1::WaitStatus::try_from(raw).unwrap();
            let word = status_word(status);
            assert!(
                rendezvous_domain::WaitStatus::parse(&word).is_some(),
                "{word}"
            );
        }
        assert_eq!(outcome_word(v1::Outcome::TimedOut), "timed_out");
        assert_eq!(outcome_word(v1::Outcome::Unspecified), "");
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(rfc3339(1_796_601_599, 999), "2026-12-06T23:59:59.999Z");
        assert_eq!(rfc3339(-1, 0), "1969-12-31T23:59:59.000Z");
    }

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let text = table(
            ["A", "LONGER"],
            &[["x".into(), "y".into()], ["wide cell".into(), "z".into()]],
        );
        assert_eq!(text, "A          LONGER\nx          y\nwide cell  z\n");
    }
}
