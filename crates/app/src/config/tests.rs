//! Tests of the configuration: layering, defaults in one place, the example file, what each
//! setting accepts and how errors name it, and the configs built for the adapters.

use std::collections::BTreeSet;

use super::*;
use crate::cli::Command;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rendezvous.toml");

/// The configuration `args` and `env` load (shared by the sections' own tests).
pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    match Config::load(args, env)? {
        Command::Run(config) => Ok(*config),
        Command::Print(text) => bail!("printed {text}"),
        Command::Operate(operation) => bail!("an operator command: {operation:?}"),
    }
}

/// The error loading `args` and `env` gives, with its causes.
pub(crate) fn error(args: &[&str], env: &[(&str, &str)]) -> String {
    format!("{:#}", run(args, env).unwrap_err())
}

/// A TOML file in a fresh temporary directory.
fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rdv-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn defaults_need_no_setup() {
    let config = run(&[], &[]).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:50151");
    assert_eq!(
        config.database_url(),
        "sqlite://data/rendezvous.sqlite?mode=rwc"
    );
}

#[test]
fn defaults_written_out_read_back_the_same() {
    let written = config::Config::try_from(&Config::default()).unwrap();
    assert_eq!(
        written.try_deserialize::<Config>().unwrap(),
        Config::default()
    );
}

#[test]
fn the_documented_example_file_is_the_defaults() {
    assert_eq!(run(&["--config", EXAMPLE], &[]).unwrap(), Config::default());
}

/// Every table and setting path of a JSON tree (`kafka`, `kafka.brokers`, ...).
fn paths(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let serde_json::Value::Object(map) = value {
        for (key, value) in map {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            paths(value, &path, out);
            out.insert(path);
        }
    }
}

#[test]
fn the_documented_example_file_shows_every_setting() {
    let mut settings = BTreeSet::new();
    paths(
        &serde_json::to_value(Config::default()).unwrap(),
        "",
        &mut settings,
    );
    let example: serde_json::Value = config::Config::builder()
        .add_source(config::File::new(EXAMPLE, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    let mut shown = BTreeSet::new();
    paths(&example, "", &mut shown);
    assert!(settings.contains("resume.ack_timeout"), "{settings:?}");
    assert!(settings.contains("kafka.properties"), "{settings:?}");
    assert_eq!(
        settings.difference(&shown).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "settings missing from deploy/rendezvous.toml"
    );
    assert_eq!(
        shown.difference(&settings).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "deploy/rendezvous.toml shows settings that do not exist"
    );
}

#[test]
fn layers_file_env_and_flags_in_order() {
    let file = file(
        "layers",
        "[server]\nlisten = \"127.0.0.1:1\"\n[resume]\nack_timeout = \"5s\"\n",
    );
    let file = file.to_str().unwrap();
    let config = run(
        &["--config", file],
        &[("RENDEZVOUS__SERVER__LISTEN", "127.0.0.1:2")],
    )
    .unwrap();
    assert_eq!(config.server.listen.port(), 2, "environment beats the file");
    assert_eq!(
        config.resume.ack_timeout,
        Duration::from_secs(5),
        "the file beats the defaults"
    );
    assert_eq!(
        config.resume.poll_interval,
        Duration::from_secs(1),
        "what the file leaves out keeps its default"
    );
    let config = run(
        &["--config", file, "--listen=127.0.0.1:3"],
        &[("RENDEZVOUS__SERVER__LISTEN", "127.0.0.1:2")],
    )
    .unwrap();
    assert_eq!(config.server.listen.port(), 3, "flags beat everything");
    let config = run(&["serve", "--config", file, "--listen", "127.0.0.1:4"], &[]).unwrap();
    assert_eq!(config.server.listen.port(), 4, "serve is the same command");
    let config = run(
        &[],
        &[("RENDEZVOUS__DATABASE__URL", "postgres://u:secret@h/db")],
    )
    .unwrap();
    assert_eq!(config.database_url(), "postgres://u:secret@h/db");
}

#[test]
fn durations_are_written_with_a_unit() {
    let config = run(
        &[],
        &[
            ("RENDEZVOUS__RESUME__ACK_TIMEOUT", "250ms"),
            ("RENDEZVOUS__SERVICE__BUFFER_TTL", "1h30m"),
            ("RENDEZVOUS__SERVER__SHUTDOWN_GRACE", "0s"),
        ],
    )
    .unwrap();
    assert_eq!(config.resume.ack_timeout, Duration::from_millis(250));
    assert_eq!(config.service.buffer_ttl, Duration::from_secs(5400));
    assert_eq!(config.server.shutdown_grace, Duration::ZERO);

    let err = error(&[], &[("RENDEZVOUS__RESUME__ACK_TIMEOUT", "30")]);
    assert!(
        err.contains("resume.ack_timeout") && err.contains("a number needs a unit"),
        "{err}"
    );
    assert!(err.contains("ms, s, m, h or d"), "{err}");
    let file = file("durations", "[api]\ntimeout = 10\n");
    let err = error(&["--config", file.to_str().unwrap()], &[]);
    assert!(err.contains("api.timeout"), "{err}");
    let err = error(&[], &[("RENDEZVOUS__SWEEPER__INTERVAL", "0ms")]);
    assert!(
        err.contains("sweeper.interval") && err.contains("longer than 0"),
        "{err}"
    );
}

#[test]
fn the_old_names_with_units_are_refused() {
    let err = error(&[], &[("RENDEZVOUS__RESUME__ACK_TIMEOUT_MS", "1500")]);
    assert!(err.contains("ack_timeout_ms"), "{err}");
    let file = file("old", "[service]\nbuffer_ttl_secs = 3600\n");
    let err = error(&["--config", file.to_str().unwrap()], &[]);
    assert!(err.contains("buffer_ttl_secs"), "{err}");
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
}

#[test]
fn choices_and_counts_are_typed() {
    let config = run(
        &["--log-format", "json"],
        &[("RENDEZVOUS__KAFKA__AUTO_OFFSET_RESET", "latest")],
    )
    .unwrap();
    assert_eq!(config.telemetry.log_format, LogFormat::Json);
    assert_eq!(config.kafka.auto_offset_reset, OffsetReset::Latest);
    let err = error(&[], &[("RENDEZVOUS__KAFKA__AUTO_OFFSET_RESET", "middle")]);
    assert!(
        err.contains("kafka.auto_offset_reset") && err.contains("earliest"),
        "{err}"
    );
    let err = error(&[], &[("RENDEZVOUS__TELEMETRY__LOG_FORMAT", "xml")]);
    assert!(
        err.contains("telemetry.log_format") && err.contains("json"),
        "{err}"
    );
    let err = error(&[], &[("RENDEZVOUS__SWEEPER__BATCH", "0")]);
    assert!(
        err.contains("sweeper.batch") && err.contains("nonzero"),
        "{err}"
    );
    let err = error(&[], &[("RENDEZVOUS__API__MAX_ATTEMPTS", "-1")]);
    assert!(err.contains("api.max_attempts"), "{err}");
}

#[test]
fn errors_name_what_is_wrong() {
    let err = error(&[], &[("RENDEZVOUS__SERVER__LISTEN", "nowhere")]);
    assert!(err.contains("server.listen"), "{err}");
    let err = error(&[], &[("RENDEZVOUS__DATABASE__URL", "mysql://x:pw@h/d")]);
    assert!(err.contains("database.url") && !err.contains("pw"), "{err}");
    let err = error(
        &[],
        &[("RENDEZVOUS__TELEMETRY__OTLP_ENDPOINT", "collector:4317")],
    );
    assert!(err.contains("telemetry.otlp_endpoint"), "{err}");
    let err = error(&["--config", "/nonexistent.toml"], &[]);
    assert!(err.contains("does not exist"), "{err}");
    let err = error(
        &[],
        &[
            ("RENDEZVOUS__KAFKA__GROUP_ID", ""),
            ("RENDEZVOUS__KAFKA__ENABLED", "true"),
        ],
    );
    assert!(err.contains("kafka.group_id: required"), "{err}");
    assert!(
        run(
            &[],
            &[
                ("RENDEZVOUS__KAFKA__GROUP_ID", ""),
                ("RENDEZVOUS__KAFKA__ENABLED", "false"),
            ],
        )
        .is_ok()
    );
}

#[test]
fn flags_are_checked_by_name() {
    let err = error(&["--bogus"], &[]);
    assert!(err.contains("'--bogus'") && err.contains("Usage"), "{err}");
    let err = error(&["--listen", "nowhere"], &[]);
    assert!(err.contains("--listen"), "{err}");
    let err = error(&["--log-format", "xml"], &[]);
    assert!(
        err.contains("--log-format") && err.contains("human") && err.contains("json"),
        "{err}"
    );
    let err = error(&["--database-url", "mysql://x:pw@h/d"], &[]);
    assert!(
        err.contains("--database-url") && !err.contains("pw"),
        "{err}"
    );
    let err = error(&["--listen"], &[]);
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn help_and_version_are_printed() {
    let env = std::iter::empty();
    let Command::Print(help) = Config::load(["--help"], env).unwrap() else {
        panic!("help expected")
    };
    for flag in [
        "serve",
        "--config",
        "--listen",
        "--database-url",
        "--data-dir",
        "--log-format",
        "RENDEZVOUS__SECTION__KEY",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
    let Command::Print(help) = Config::load(["serve", "--help"], std::iter::empty()).unwrap()
    else {
        panic!("help expected")
    };
    assert!(help.contains("--listen"), "{help}");
    let Command::Print(version) = Config::load(["--version"], std::iter::empty()).unwrap() else {
        panic!("version expected")
    };
    assert_eq!(
        version.trim(),
        format!("rendezvous {} ({})", crate::VERSION, crate::REVISION)
    );
}

#[test]
fn kafka_properties_from_the_file_reach_the_ingress() {
    let file = file(
        "properties",
        "[kafka]\nbrokers = \"k1:9093\"\ngroup_instance_id = \"pod-1\"\n\
         [kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"fetch.max.bytes\" = 1048576\n",
    );
    let config = run(
        &["--config", file.to_str().unwrap()],
        &[("RENDEZVOUS__KAFKA__PROPERTIES__SASL_PASSWORD", "s3cret")],
    )
    .unwrap();
    let ingress = config.kafka.ingress_config(false);
    assert_eq!(ingress.brokers, "k1:9093");
    assert_eq!(ingress.auto_offset_reset, "earliest");
    assert_eq!(ingress.refresh_interval, Duration::from_secs(1));
    assert_eq!(ingress.max_batch, 500);
    let properties: Vec<(&str, &str)> = ingress
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        properties,
        [
            ("fetch.max.bytes", "1048576"),
            ("group.instance.id", "pod-1"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.password", "s3cret"),
            ("security.protocol", "SASL_SSL"),
        ]
    );
    let embedded = Config::default().kafka.ingress_config(true);
    assert_eq!(
        embedded
            .properties
            .get("allow.auto.create.topics")
            .map(String::as_str),
        Some("true"),
        "the embedded cluster creates topics on first use"
    );
    assert_eq!(
        embedded
            .properties
            .get("session.timeout.ms")
            .map(String::as_str),
        Some("6000"),
        "a topic a new wait names is assigned in seconds, not 44 s"
    );
}

#[test]
fn kafka_properties_the_ingress_owns_are_refused() {
    let file = file(
        "owned",
        "[kafka.properties]\n\"enable.auto.commit\" = \"false\"\n",
    );
    let err = error(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        err.contains("kafka.properties") && err.contains("enable.auto.commit"),
        "{err}"
    );
    let err = error(&[], &[("RENDEZVOUS__KAFKA__PROPERTIES__GROUP_ID", "other")]);
    assert!(err.contains("kafka.group_id instead"), "{err}");
}

#[test]
fn adapters_get_the_sections_settings() {
    let config = run(
        &[],
        &[
            ("RENDEZVOUS__RESUME__ACK_TIMEOUT", "2s"),
            ("RENDEZVOUS__RESUME__MAX_IN_FLIGHT", "7"),
            ("RENDEZVOUS__API__TIMEOUT", "3s"),
            ("RENDEZVOUS__API__MAX_RESPONSE_BYTES", "100"),
            ("RENDEZVOUS__DATABASE__CONNECT_TIMEOUT", "4s"),
        ],
    )
    .unwrap();
    let stream = config.resume.stream_config();
    assert_eq!(stream.ack_timeout, Duration::from_secs(2));
    assert_eq!(stream.default_max_in_flight, 7);
    let caller = config.api.caller_config(&config.secrets);
    assert_eq!(caller.timeout, Duration::from_secs(3));
    assert_eq!(caller.max_response_bytes, 100);
    let database = config.database_config();
    assert_eq!(database.connect_timeout, Duration::from_secs(4));
    assert_eq!(database.url, config.database_url());
}

#[test]
fn the_fetch_wait_is_short_only_where_the_broker_needs_it() {
    let auto = run(&[], &[]).unwrap().kafka;
    assert_eq!(
        auto.ingress_config(true).fetch_wait,
        Duration::from_millis(10)
    );
    assert_eq!(
        auto.ingress_config(false).fetch_wait,
        Duration::from_millis(500)
    );
    let fixed = run(&[], &[("RENDEZVOUS__KAFKA__FETCH_WAIT", "25ms")])
        .unwrap()
        .kafka;
    for embedded in [true, false] {
        assert_eq!(
            fixed.ingress_config(embedded).fetch_wait,
            Duration::from_millis(25)
        );
    }
    let zero = error(&[], &[("RENDEZVOUS__KAFKA__FETCH_WAIT", "0ms")]);
    assert!(zero.contains("fetch_wait must be at least 1ms"), "{zero}");
    let bad = error(&[], &[("RENDEZVOUS__KAFKA__FETCH_WAIT", "soon")]);
    assert!(bad.contains("or \"auto\""), "{bad}");
    let owned = error(
        &[],
        &[("RENDEZVOUS__KAFKA__PROPERTIES__FETCH_WAIT_MAX_MS", "5")],
    );
    assert!(owned.contains("set kafka.fetch_wait instead"), "{owned}");
}
