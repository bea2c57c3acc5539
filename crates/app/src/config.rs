//! The typed configuration: built-in defaults (the `Default` impls below: a section that feeds
//! an adapter takes that adapter's defaults, so each is written once) → optional TOML file → `RENDEZVOUS__SECTION__KEY` environment → command-line
//! flags, checked while it is read and validated once at start-up. Each section also builds
//! the config of the adapter it feeds (`KafkaSection::ingress_config`, ...).

mod auth;
mod duration;
mod kafka_tenants;
mod outbound;
mod retention;
mod secrets;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rendezvous_domain::{AllowedDestination, Destinations};
use rendezvous_grpc_api::ResumeStreamConfig;
use rendezvous_http_caller::CallerConfig;
use rendezvous_kafka_ingress::IngressConfig;
use rendezvous_persistence::{DatabaseConfig, PgTls};
use rendezvous_service::{ApiPolicy, ServiceConfig};
use serde::{Deserialize, Deserializer, Serialize};

pub use self::auth::{
    ApiKeyEntry, AuthSection, CertificateEntry, ClientCertificates, JwtSection, TlsSection,
    WebhookEntry,
};
pub use self::kafka_tenants::{AnyTopic, TopicName, TopicPatternSetting, TopicSection};
pub use self::outbound::{ENV_KAFKA_PROPERTY_FILES, Secret, SslModeSetting, read_secret};
pub use self::retention::RetentionSection;
pub use self::secrets::{SecretEntry, SecretsSection};

/// The prefix of the environment variables read: `RENDEZVOUS__SECTION__KEY`.
pub const ENV_PREFIX: &str = "RENDEZVOUS__";

/// The prefix of the environment variables that set librdkafka properties:
/// `RENDEZVOUS__KAFKA__PROPERTIES__SASL_PASSWORD` sets `sasl.password` (the rest of the name,
/// lowercased, with `_` read as `.`).
pub const ENV_KAFKA_PROPERTIES: &str = "RENDEZVOUS__KAFKA__PROPERTIES__";

/// Everything the binary can be told. A setting left out anywhere keeps its default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
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
    /// How long finished rows are kept.
    pub retention: RetentionSection,
    /// Logs and traces.
    pub telemetry: TelemetrySection,
    /// The Kafka ingress.
    pub kafka: KafkaSection,
    /// Outbound API calls.
    pub api: ApiSection,
    /// Secrets outbound calls may send in a header, by name.
    pub secrets: SecretsSection,
    /// Who may call, and as whom.
    pub auth: AuthSection,
    /// The admin HTTP listener: metrics, liveness, readiness.
    pub admin: AdminSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            server: ServerConfig::default(),
            database: DatabaseSection::default(),
            service: ServiceSection::default(),
            resume: ResumeSection::default(),
            sweeper: SweeperSection::default(),
            retention: RetentionSection::default(),
            telemetry: TelemetrySection::default(),
            kafka: KafkaSection::default(),
            api: ApiSection::default(),
            secrets: SecretsSection::default(),
            auth: AuthSection::default(),
            admin: AdminSection::default(),
        }
    }
}

/// A duration as settings write it (`"90s"`, `"1h"`), for flags.
pub(crate) fn parse_age(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

/// `[admin]`: the admin HTTP listener — `/metrics` (Prometheus text), `/livez`, `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Serve the admin endpoints.
    pub enabled: bool,
    /// Their address (plain HTTP; port 0 picks a free one). It shows no tenant's data, only
    /// counts; keep it where the scraper and the orchestrator reach it.
    pub listen: SocketAddr,
    /// How often the database is checked for readiness (each check must answer within it).
    #[serde(with = "duration::positive")]
    pub health_interval: Duration,
    /// How often the database-wide gauges (waits by status, outbox depth and age, sweeper
    /// lag, buffered and quarantined events) are counted.
    #[serde(with = "duration::positive")]
    pub stats_interval: Duration,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 50152)),
            health_interval: Duration::from_secs(2),
            stats_interval: Duration::from_secs(15),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (printed at start-up).
    pub listen: SocketAddr,
    /// How long graceful shutdown waits for in-flight requests.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Connections open at once; the next client waits until one closes. Keep it below the
    /// process's file-descriptor limit (`ulimit -n`) minus the database pool and Kafka.
    pub max_connections: NonZeroU32,
    /// Concurrent requests (HTTP/2 streams) per connection.
    pub max_concurrent_streams: NonZeroU32,
    /// How often an idle connection is pinged (HTTP/2 PING and TCP keepalive).
    #[serde(with = "duration::positive")]
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[serde(with = "duration::positive")]
    pub keepalive_timeout: Duration,
    /// How long a connection may go without a request in flight before the server closes it
    /// (pings do not count; an open `ResumeStream` does).
    #[serde(with = "duration::positive")]
    pub idle_timeout: Duration,
    /// TLS (and client certificates).
    pub tls: TlsSection,
    /// The URL external services reach this server at (`https://rendezvous.example.com`),
    /// for the callback URL an API call may carry (`{{ callback_url }}`). Empty: `http://` (or
    /// `https://` with TLS) and the address the server listens on.
    pub public_url: String,
}

impl ServerConfig {
    /// The API-response callback URL of a server bound to `bound`.
    pub fn callback_url(&self, bound: SocketAddr) -> String {
        let base = if self.public_url.is_empty() {
            let scheme = if self.tls.enabled() { "https" } else { "http" };
            format!("{scheme}://{bound}")
        } else {
            self.public_url.trim_end_matches('/').to_owned()
        };
        format!("{base}{}", rendezvous_grpc_api::API_RESPONSE_PATH)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 50151)),
            shutdown_grace: Duration::from_secs(10),
            max_connections: const { NonZeroU32::new(512).unwrap() },
            max_concurrent_streams: const { NonZeroU32::new(256).unwrap() },
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            tls: TlsSection::default(),
            public_url: String::new(),
        }
    }
}

/// `[database]`
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSection {
    /// `postgres://user@host/db` or `sqlite://path?mode=rwc`. Empty: SQLite under `data_dir`.
    /// Written out with its password masked.
    #[serde(deserialize_with = "database_url", serialize_with = "redacted_url")]
    pub url: String,
    /// A file holding the URL instead of `url` (a mounted secret). Empty: none.
    pub url_file: PathBuf,
    /// A file holding the PostgreSQL password; it wins over one in the URL. Empty: none.
    pub password_file: PathBuf,
    /// PostgreSQL's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`).
    /// Empty: the URL's, whose default is `prefer`.
    pub ssl_mode: SslModeSetting,
    /// PEM root certificates the server's must chain to (`sslrootcert`). Empty: the URL's,
    /// else the system's roots.
    pub ssl_root_cert: PathBuf,
    /// A PEM client certificate for certificate authentication (`sslcert`), with `ssl_key`.
    pub ssl_cert: PathBuf,
    /// The PEM private key of `ssl_cert` (`sslkey`).
    pub ssl_key: PathBuf,
    /// Pool size (PostgreSQL).
    pub max_connections: NonZeroU32,
    /// Apply migrations at start-up.
    pub run_migrations: bool,
    /// Connect timeout.
    #[serde(with = "duration::positive")]
    pub connect_timeout: Duration,
    /// What `url_file` and `password_file` held (read with the configuration).
    #[serde(skip)]
    files: DatabaseFiles,
}

/// The values of `database.url_file` and `database.password_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DatabaseFiles {
    url: Option<Secret>,
    password: Option<Secret>,
}

/// Without secrets: the URL's password is masked, the files' contents are not shown.
impl std::fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSection")
            .field("url", &rendezvous_persistence::redact(&self.url))
            .field("url_file", &self.url_file)
            .field("password_file", &self.password_file)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("ssl_cert", &self.ssl_cert)
            .field("ssl_key", &self.ssl_key)
            .field("max_connections", &self.max_connections)
            .field("run_migrations", &self.run_migrations)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// The defaults of the sections that feed an adapter are that adapter's own (one source each);
/// a zero there would be a bug in the adapter.
fn non_zero<T: TryInto<N>, N>(value: T, what: &str) -> N {
    value
        .try_into()
        .unwrap_or_else(|_| panic!("the default of {what} must not be zero"))
}

impl Default for DatabaseSection {
    fn default() -> Self {
        let adapter = DatabaseConfig::new(String::new());
        Self {
            url: adapter.url,
            url_file: PathBuf::new(),
            password_file: PathBuf::new(),
            ssl_mode: SslModeSetting(adapter.tls.mode),
            ssl_root_cert: PathBuf::new(),
            ssl_cert: PathBuf::new(),
            ssl_key: PathBuf::new(),
            max_connections: non_zero(adapter.max_connections, "database.max_connections"),
            run_migrations: adapter.run_migrations,
            connect_timeout: adapter.connect_timeout,
            files: DatabaseFiles::default(),
        }
    }
}

/// `[service]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSection {
    /// How long events for unknown correlation ids are kept for a wait to register.
    #[serde(with = "duration::positive")]
    pub buffer_ttl: Duration,
    /// The largest event payload, in bytes.
    pub max_payload_bytes: NonZeroUsize,
    /// The largest node config, in bytes.
    pub max_config_bytes: NonZeroUsize,
    /// Optimistic-lock conflicts one request may meet before giving up (0: give up at once).
    pub max_conflict_retries: u32,
}

impl Default for ServiceSection {
    fn default() -> Self {
        let adapter = ServiceConfig::default();
        Self {
            buffer_ttl: adapter.buffer_ttl,
            max_payload_bytes: non_zero(adapter.max_payload_bytes, "service.max_payload_bytes"),
            max_config_bytes: non_zero(adapter.max_config_bytes, "service.max_config_bytes"),
            max_conflict_retries: adapter.max_conflict_retries,
        }
    }
}

/// `[resume]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResumeSection {
    /// Unacknowledged resumes are delivered again after this long.
    #[serde(with = "duration::positive")]
    pub ack_timeout: Duration,
    /// Unacknowledged resumes per stream when the subscriber asks for none.
    pub max_in_flight: NonZeroU32,
    /// Fallback polling when no wake-up arrives.
    #[serde(with = "duration::positive")]
    pub poll_interval: Duration,
}

impl Default for ResumeSection {
    fn default() -> Self {
        let adapter = ResumeStreamConfig::default();
        Self {
            ack_timeout: adapter.ack_timeout,
            max_in_flight: non_zero(adapter.default_max_in_flight, "resume.max_in_flight"),
            poll_interval: adapter.poll_interval,
        }
    }
}

impl ResumeSection {
    /// The config of one engine's resume stream.
    pub fn stream_config(&self) -> ResumeStreamConfig {
        ResumeStreamConfig {
            ack_timeout: self.ack_timeout,
            default_max_in_flight: self.max_in_flight.get(),
            poll_interval: self.poll_interval,
            ..ResumeStreamConfig::default()
        }
    }
}

/// `[sweeper]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweeperSection {
    /// How often due waits are looked for.
    #[serde(with = "duration::positive")]
    pub interval: Duration,
    /// How many due waits one sweep transaction takes.
    pub batch: NonZeroU32,
}

impl Default for SweeperSection {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(250),
            batch: const { NonZeroU32::new(256).unwrap() },
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            _ => Err(format!("expected \"human\" or \"json\", found {name:?}")),
        }
    }
}

/// `[telemetry]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySection {
    /// `human` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `rendezvous=debug,info`. `RUST_LOG` wins when set.
    pub log_level: String,
    /// OTLP/gRPC collector for trace export, e.g. `http://127.0.0.1:4317`, or `https://...`
    /// (TLS, verified against the system's roots and `otlp_ca_file`). Empty: off.
    #[serde(deserialize_with = "otlp_endpoint")]
    pub otlp_endpoint: String,
    /// PEM root certificates the collector's must chain to (a private CA), besides the
    /// system's. Empty: the system's only.
    pub otlp_ca_file: PathBuf,
    /// How often metrics are pushed to the OTLP endpoint (when one is set).
    #[serde(with = "duration::positive")]
    pub metrics_interval: Duration,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Human,
            log_level: "info".to_owned(),
            otlp_endpoint: String::new(),
            otlp_ca_file: PathBuf::new(),
            metrics_interval: Duration::from_secs(30),
        }
    }
}

/// Where a consumer group starts on a partition it has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum OffsetReset {
    /// The oldest record kept: nothing published before the subscription is missed.
    Earliest,
    /// Only records published from now on.
    Latest,
}

impl TryFrom<String> for OffsetReset {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            _ => Err(format!(
                "expected \"earliest\" or \"latest\", found {name:?}"
            )),
        }
    }
}

impl OffsetReset {
    /// librdkafka's name for it (`auto.offset.reset`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

/// `[kafka]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
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
    #[serde(with = "duration::positive")]
    pub refresh_interval: Duration,
    /// Header or JSON field with an event's identity (else topic/partition/offset).
    pub event_id_field: String,
    /// Header that may name an event's tenant, on topics whose table sets
    /// `tenant_from_header` (elsewhere a record's tenant is its topic's).
    pub tenant_header: String,
    /// Whether waits may name topics no setting configures: `false`, `true` (records' tenant
    /// from the header: the old behaviour) or `"embedded"` (only on the in-process broker).
    pub allow_any_topic: AnyTopic,
    /// `[kafka.topic."name"]`: per topic, the tenant its records belong to.
    #[serde(deserialize_with = "kafka_tenants::topic_tables")]
    pub topic: BTreeMap<TopicName, TopicSection>,
    /// `[kafka.tenant_topics]`: per tenant, patterns of further topics its waits may name.
    #[serde(deserialize_with = "kafka_tenants::tenant_topics")]
    pub tenant_topics: BTreeMap<rendezvous_domain::TenantId, Vec<TopicPatternSetting>>,
    /// Most records per processing batch.
    pub max_batch: NonZeroUsize,
    /// Most waits whose records are handled at once (one wait's records stay in order).
    pub max_in_flight: NonZeroUsize,
    /// How long a fetch may wait at the broker for records (librdkafka's
    /// `fetch.wait.max.ms`), or `"auto"`: see [`FetchWait`].
    pub fetch_wait: FetchWait,
    /// Where the group starts on a topic it has no offset for.
    pub auto_offset_reset: OffsetReset,
    /// Static group membership: a stable id per instance (e.g. the pod name). A restarted
    /// instance with the same id gets its partitions back at once instead of after the
    /// session timeout. Empty: dynamic membership.
    pub group_instance_id: String,
    /// librdkafka properties passed as they are (`security.protocol`, `sasl.*`, `ssl.*`,
    /// tuning). Those the settings above own are refused.
    #[serde(deserialize_with = "librdkafka_properties")]
    pub properties: KafkaProperties,
    /// librdkafka properties read from files (`"sasl.password" = "/run/secrets/kafka"`): the
    /// file's text, without one trailing newline, is the value.
    #[serde(deserialize_with = "outbound::property_files")]
    pub property_files: BTreeMap<String, PathBuf>,
    /// What the `property_files` held (read with the configuration).
    #[serde(skip)]
    property_values: BTreeMap<String, Secret>,
}

/// `kafka.fetch_wait`: how long a fetch may wait at the broker for records. Apache Kafka
/// answers a waiting fetch as soon as a record arrives, so there the wait is only how often an
/// idle consumer asks (and librdkafka's 500 ms costs nothing); brokers that hold a fetch to its
/// end (the embedded mock cluster, Tansu) add up to the whole wait to every event's latency,
/// and a short one costs idle CPU (on this project's machine, 10 ms: about 1.5 % of a core for
/// the service and 5 % for Tansu, against 0.6 % and 0.2 % at 500 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchWait {
    /// `"auto"`: [`FetchWait::EMBEDDED`] with the embedded broker, librdkafka's 500 ms with
    /// real brokers.
    Auto,
    /// A duration (`"10ms"`).
    Fixed(Duration),
}

impl FetchWait {
    /// The wait with the embedded broker under `"auto"`.
    pub const EMBEDDED: Duration = Duration::from_millis(10);

    /// The wait with real brokers under `"auto"` (librdkafka's default).
    pub const BROKERS: Duration = Duration::from_millis(500);

    /// The wait, given whether the brokers are the embedded mock cluster.
    pub fn duration(self, embedded: bool) -> Duration {
        match self {
            Self::Fixed(wait) => wait,
            Self::Auto if embedded => Self::EMBEDDED,
            Self::Auto => Self::BROKERS,
        }
    }
}

impl Serialize for FetchWait {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Fixed(wait) => serializer.serialize_str(&duration::format(*wait)),
        }
    }
}

impl<'de> Deserialize<'de> for FetchWait {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "auto" {
            return Ok(Self::Auto);
        }
        match duration::parse(&text) {
            Ok(wait) if wait >= Duration::from_millis(1) => Ok(Self::Fixed(wait)),
            Ok(_) => Err(serde::de::Error::custom(
                "fetch_wait must be at least 1ms, or \"auto\"",
            )),
            Err(e) => Err(serde::de::Error::custom(format!("{e}, or \"auto\""))),
        }
    }
}

/// `kafka.properties`: librdkafka property → value. Its `Debug` and its serialized form (what
/// a printed configuration would show) mask the values of secret properties (passwords,
/// secrets, keys).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl KafkaProperties {
    fn masked(&self) -> impl Iterator<Item = (&String, &str)> {
        self.0.iter().map(|(name, value)| {
            let shown = if Self::is_secret(name) { "***" } else { value };
            (name, shown)
        })
    }
}

impl Serialize for KafkaProperties {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.masked())
    }
}

impl KafkaProperties {
    /// Whether a property holds a secret (its value is masked in `Debug`).
    pub fn is_secret(name: &str) -> bool {
        name.contains("password")
            || name.contains("secret")
            || name == "ssl.key.pem"
            || name == "sasl.oauthbearer.config"
    }
}

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.masked()).finish()
    }
}

impl Default for KafkaSection {
    fn default() -> Self {
        let adapter = IngressConfig::new(String::new(), "rendezvous");
        Self {
            enabled: true,
            brokers: adapter.brokers,
            group_id: adapter.group_id,
            topics: adapter.topics,
            follow_waits: adapter.follow_waits,
            refresh_interval: adapter.refresh_interval,
            event_id_field: adapter.event_id_field,
            tenant_header: adapter.tenant_header,
            allow_any_topic: AnyTopic::Embedded,
            topic: BTreeMap::new(),
            tenant_topics: BTreeMap::new(),
            max_batch: non_zero(adapter.max_batch, "kafka.max_batch"),
            max_in_flight: non_zero(adapter.max_in_flight, "kafka.max_in_flight"),
            fetch_wait: FetchWait::Auto,
            auto_offset_reset: OffsetReset::try_from(adapter.auto_offset_reset)
                .expect("the ingress's default offset reset is one of ours"),
            group_instance_id: String::new(),
            properties: KafkaProperties(adapter.properties),
            property_files: BTreeMap::new(),
            property_values: BTreeMap::new(),
        }
    }
}

impl KafkaSection {
    /// The ingress's config: this section, with `properties` handed to librdkafka. `embedded`:
    /// the brokers are the in-process mock cluster, which creates topics on first use (a wait
    /// may name a topic before anything is published to it).
    pub fn ingress_config(&self, embedded: bool) -> IngressConfig {
        let mut ingress = IngressConfig::new(&self.brokers, &self.group_id);
        ingress.topics = self.topics.clone();
        ingress.follow_waits = self.follow_waits;
        ingress.refresh_interval = self.refresh_interval;
        ingress.event_id_field = self.event_id_field.clone();
        ingress.tenant_header = self.tenant_header.clone();
        ingress.max_batch = self.max_batch.get();
        ingress.max_in_flight = self.max_in_flight.get();
        ingress.fetch_wait = self.fetch_wait.duration(embedded);
        ingress.auto_offset_reset = self.auto_offset_reset.as_str().to_owned();
        ingress.properties = self.properties.0.clone();
        for (name, value) in &self.property_values {
            ingress
                .properties
                .insert(name.clone(), value.expose().to_owned());
        }
        if !self.group_instance_id.is_empty() {
            ingress
                .properties
                .insert("group.instance.id".into(), self.group_instance_id.clone());
        }
        if embedded {
            ingress
                .properties
                .entry("allow.auto.create.topics".into())
                .or_insert_with(|| "true".into());
            // The embedded broker waits `session.timeout.ms` - 1 s before it assigns the
            // partitions of a topic added to the subscription (44 s with librdkafka's
            // default). Its only member is this process, so a short session costs nothing.
            ingress
                .properties
                .entry("session.timeout.ms".into())
                .or_insert_with(|| "6000".into());
        }
        ingress
    }
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Make the API calls. Off: calls are still recorded with their waits and are made once an
    /// instance with calls enabled runs.
    pub enabled: bool,
    /// Where API calls may go: `[scheme://](host | *.suffix)[:port][/path]` entries, parsed
    /// (and refused, named, when they do not parse) and compared with the normalised URL.
    /// Empty: any public host.
    pub allowed: Vec<AllowedDestination>,
    /// Allow loopback, private and other non-public addresses (off: SSRF protection).
    pub allow_private_networks: bool,
    /// The proxy every call goes through (`http://proxy.internal:3128`). Empty: none, whatever
    /// `HTTP_PROXY` and the other proxy variables say.
    #[serde(deserialize_with = "proxy_url")]
    pub proxy: String,
    /// Timeout of one HTTP attempt.
    #[serde(with = "duration::positive")]
    pub timeout: Duration,
    /// Attempts before the wait fails.
    pub max_attempts: NonZeroU32,
    /// First retry delay (doubles per attempt).
    #[serde(with = "duration")]
    pub backoff: Duration,
    /// Longest retry delay.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// The largest response body read.
    pub max_response_bytes: NonZeroUsize,
    /// How often due calls are looked for when no registration wakes the dispatcher.
    #[serde(with = "duration::positive")]
    pub poll_interval: Duration,
    /// Calls made at once per instance (`concurrency` is the old name).
    #[serde(alias = "concurrency")]
    pub max_in_flight: NonZeroU32,
    /// Calls made at once per instance to one destination (host and port), so that one slow
    /// partner cannot take every slot.
    pub max_per_destination: NonZeroU32,
}

impl Default for ApiSection {
    fn default() -> Self {
        let (policy, caller) = (ApiPolicy::default(), CallerConfig::default());
        Self {
            enabled: true,
            allowed: policy.destinations.allowed,
            allow_private_networks: policy.destinations.allow_private_networks,
            proxy: caller.proxy.unwrap_or_default(),
            timeout: caller.timeout,
            max_attempts: non_zero(policy.max_attempts, "api.max_attempts"),
            backoff: policy.backoff,
            max_backoff: policy.max_backoff,
            max_response_bytes: non_zero(caller.max_response_bytes, "api.max_response_bytes"),
            poll_interval: Duration::from_secs(1),
            max_in_flight: non_zero(policy.max_in_flight, "api.max_in_flight"),
            max_per_destination: non_zero(policy.max_per_destination, "api.max_per_destination"),
        }
    }
}

impl ServiceSection {
    /// The use cases' config, with the API-call policy of `[api]` and the secret names of
    /// `[secrets]`.
    pub fn service_config(&self, api: &ApiSection, secrets: &SecretsSection) -> ServiceConfig {
        ServiceConfig {
            buffer_ttl: self.buffer_ttl,
            max_conflict_retries: self.max_conflict_retries,
            max_payload_bytes: self.max_payload_bytes.get(),
            max_config_bytes: self.max_config_bytes.get(),
            api: ApiPolicy {
                secrets: secrets.names(),
                ..api.policy()
            },
            // Closed here; `Application::build` sets `KafkaSection::topic_policy`.
            topics: rendezvous_service::TopicPolicy::only([]),
            // `Application::build` sets it once the listener is bound.
            callback_url: None,
        }
    }
}

impl ApiSection {
    /// Where calls may go and how they are retried. An attempt is leased well past its timeout
    /// (three times), so a live call is never taken over; a crashed instance's call is retried
    /// after it.
    pub fn policy(&self) -> ApiPolicy {
        ApiPolicy {
            destinations: Destinations {
                allowed: self.allowed.clone(),
                allow_private_networks: self.allow_private_networks,
            },
            max_attempts: self.max_attempts.get(),
            backoff: self.backoff,
            max_backoff: self.max_backoff,
            lease: self.timeout.saturating_mul(3),
            max_in_flight: self.max_in_flight.get(),
            max_per_destination: self.max_per_destination.get(),
            secrets: Default::default(),
        }
    }

    /// The HTTP caller's config, with the secret sources of `[secrets]`.
    pub fn caller_config(&self, secrets: &SecretsSection) -> CallerConfig {
        CallerConfig {
            timeout: self.timeout,
            max_response_bytes: self.max_response_bytes.get(),
            allow_private_networks: self.allow_private_networks,
            proxy: (!self.proxy.is_empty()).then(|| self.proxy.clone()),
            secrets: secrets.sources(),
        }
    }
}

impl Config {
    /// Reads the defaults, then `file` (TOML, when given), then the `RENDEZVOUS__...` variables
    /// of `env`, checking each setting. Command-line flags go on top of this (see
    /// [`crate::cli`]); [`Config::validate`] comes last.
    pub fn read(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                bail!("config file {} does not exist", path.display());
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let (properties, settings): (Vec<_>, Vec<_>) = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .partition(|(k, _)| k.starts_with(ENV_KAFKA_PROPERTIES));
        let (property_files, settings) = outbound::split_property_files(settings);
        builder = builder.add_source(
            config::Environment::with_prefix("RENDEZVOUS")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("kafka.topics")
                .with_list_parse_key("api.allowed")
                .source(Some(settings.into_iter().collect())),
        );
        if !properties.is_empty() {
            // Set as one table: a librdkafka name's dots are part of the name, not a path.
            let origin = "the environment".to_owned();
            let table: config::Map<String, config::Value> = properties
                .into_iter()
                .map(|(k, v)| {
                    let name = k[ENV_KAFKA_PROPERTIES.len()..]
                        .to_lowercase()
                        .replace('_', ".");
                    (name, config::Value::new(Some(&origin), v))
                })
                .collect();
            builder = builder.set_override("kafka.properties", table)?;
        }
        if !property_files.is_empty() {
            builder = builder.set_override("kafka.property_files", property_files)?;
        }
        let mut config: Self = builder
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("invalid configuration")?;
        config
            .read_secret_files()
            .context("invalid configuration")?;
        Ok(config)
    }

    /// Checks the rules that span several settings (each setting's own rules are checked
    /// while it is read).
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.kafka.enabled && self.kafka.group_id.is_empty() {
            problems.push(
                "kafka.group_id: required while kafka.enabled (an explicit, stable consumer group)"
                    .to_owned(),
            );
        }
        // Secure by default: off loopback, callers must authenticate over TLS.
        let listen = self.server.listen;
        if !listen.ip().is_loopback() && !self.auth.allow_insecure {
            if !self.auth.configured() {
                problems.push(format!(
                    "server.listen: {listen} is not a loopback address and no authentication is configured: configure [auth] (SECURITY.md) or set auth.allow_insecure = true"
                ));
            } else if !self.server.tls.enabled() {
                problems.push(format!(
                    "server.listen: {listen} is not a loopback address and TLS is off, so credentials would cross the network in clear: configure [server.tls] or set auth.allow_insecure = true"
                ));
            }
        }
        if !self.auth.certificates.is_empty()
            && self.server.tls.client_ca_file.as_os_str().is_empty()
        {
            problems.push(
                "auth.certificates: client certificates need server.tls.client_ca_file".to_owned(),
            );
        }
        if self.admin.enabled
            && self.admin.listen.port() != 0
            && self.admin.listen == self.server.listen
        {
            problems.push(format!(
                "admin.listen: {} is also server.listen; give the admin listener its own port",
                self.admin.listen
            ));
        }
        let public = &self.server.public_url;
        if !public.is_empty()
            && (!(public.starts_with("http://") || public.starts_with("https://"))
                || public.contains(['?', '#', ' ']))
        {
            problems.push(format!(
                "server.public_url: expected http://host[:port][/path] or https://…, without query or fragment; found {public:?}"
            ));
        }
        problems.extend(self.outbound_problems());
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("invalid configuration:\n  {}", problems.join("\n  "))
        }
    }

    /// The database URL (`database.url`, or what `database.url_file` held), defaulting to
    /// SQLite under `data_dir`.
    pub fn database_url(&self) -> String {
        if let Some(url) = &self.database.files.url {
            url.expose().to_owned()
        } else if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("rendezvous.sqlite").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    /// The database adapter's config.
    pub fn database_config(&self) -> DatabaseConfig {
        let path = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
        let database = &self.database;
        DatabaseConfig {
            url: self.database_url(),
            password: database
                .files
                .password
                .as_ref()
                .map(|p| p.expose().to_owned()),
            tls: PgTls {
                mode: database.ssl_mode.0,
                root_cert: path(&database.ssl_root_cert),
                client_cert: path(&database.ssl_cert),
                client_key: path(&database.ssl_key),
            },
            max_connections: self.database.max_connections.get(),
            connect_timeout: self.database.connect_timeout,
            run_migrations: self.database.run_migrations,
        }
    }
}

/// Checks a `database.url`: empty, or a PostgreSQL or SQLite URL. The error shows the URL
/// without its password.
pub(crate) fn check_database_url(url: &str) -> Result<(), String> {
    let known = ["postgres://", "postgresql://", "sqlite:"];
    if url.is_empty() || known.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(())
    } else {
        Err(format!(
            "expected postgres://..., postgresql://... or sqlite:..., found {:?}",
            rendezvous_persistence::redact(url)
        ))
    }
}

/// `database.url` written out: without its password.
fn redacted_url<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rendezvous_persistence::redact(url))
}

/// `database.url`, checked by [`check_database_url`].
fn database_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let url = String::deserialize(deserializer)?;
    check_database_url(&url).map_err(serde::de::Error::custom)?;
    Ok(url)
}

/// `api.proxy`: empty, or an `http(s)://host[:port]` URL (the error shows it without
/// credentials).
fn proxy_url<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let proxy = String::deserialize(deserializer)?;
    if proxy.is_empty() {
        return Ok(proxy);
    }
    rendezvous_http_caller::check_proxy(&proxy).map_err(serde::de::Error::custom)?;
    Ok(proxy)
}

/// `telemetry.otlp_endpoint`: empty, or an `http(s)://` address.
fn otlp_endpoint<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let url = String::deserialize(deserializer)?;
    if url.is_empty() || url.starts_with("http://") || url.starts_with("https://") {
        Ok(url)
    } else {
        Err(serde::de::Error::custom(format!(
            "expected http://host:port or https://host:port, found {url:?}"
        )))
    }
}

/// librdkafka properties the ingress sets itself, and why they cannot be given.
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("metadata.broker.list", "set kafka.brokers instead"),
    ("group.id", "set kafka.group_id instead"),
    ("group.instance.id", "set kafka.group_instance_id instead"),
    ("auto.offset.reset", "set kafka.auto_offset_reset instead"),
    ("fetch.wait.max.ms", "set kafka.fetch_wait instead"),
    (
        "enable.auto.commit",
        "the ingress commits an offset only once its event is stored",
    ),
    (
        "enable.auto.offset.store",
        "the ingress commits an offset only once its event is stored",
    ),
];

/// `kafka.properties`: any librdkafka property but those the ingress owns.
fn librdkafka_properties<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<KafkaProperties, D::Error> {
    let properties = BTreeMap::<String, String>::deserialize(deserializer)?;
    for (name, why) in OWNED_PROPERTIES {
        if properties.contains_key(*name) {
            return Err(serde::de::Error::custom(format!(
                "{name:?} cannot be set here: {why}"
            )));
        }
    }
    Ok(KafkaProperties(properties))
}

#[cfg(test)]
mod tests;
