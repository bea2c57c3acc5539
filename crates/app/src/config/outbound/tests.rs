//! Tests of the outbound hops' settings: secrets read from files (trimmed, errors naming the
//! setting and the path, never shown), the database's TLS settings reaching the adapter, and
//! the rules that span settings.

use std::path::PathBuf;

use crate::config::Config;
use crate::config::tests::{error, run};

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rdv-outbound-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn secrets_come_from_files_and_are_never_shown() {
    let d = dir("secrets");
    let url = write(
        &d,
        "url",
        "postgres://app:url-secret@db.internal:5432/rendezvous\n",
    );
    let password = write(&d, "password", "pg-secret\r\n");
    let kafka = write(&d, "kafka", "kafka-secret\n\n");
    let key_password = write(&d, "key-password", "key-secret");
    let config_file = write(
        &d,
        "c.toml",
        &format!(
            "[database]\nurl_file = {url:?}\npassword_file = {password:?}\n\
             [kafka]\nbrokers = \"k1:9093\"\n\
             [kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
             \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"ssl.key.password\" = \"inline-secret\"\n\
             [kafka.property_files]\n\"sasl.password\" = {kafka:?}\n"
        ),
    );
    let config = run(
        &["--config", &config_file],
        &[(
            "RENDEZVOUS__KAFKA__PROPERTY_FILES__SSL_KEYSTORE_PASSWORD",
            key_password.as_str(),
        )],
    )
    .unwrap();
    // One trailing newline is not part of the value; the rest is.
    assert_eq!(
        config.database_url(),
        "postgres://app:url-secret@db.internal:5432/rendezvous"
    );
    let database = config.database_config();
    assert_eq!(database.password.as_deref(), Some("pg-secret"));
    let ingress = config.kafka.ingress_config(false);
    let property = |name: &str| ingress.properties.get(name).map(String::as_str);
    assert_eq!(property("sasl.password"), Some("kafka-secret\n"));
    assert_eq!(property("ssl.keystore.password"), Some("key-secret"));
    assert_eq!(property("security.protocol"), Some("SASL_SSL"));

    // Neither the debug output nor the settings written out show a secret.
    let shown = format!("{config:?} {database:?} {}", toml_of(&config));
    for secret in [
        "url-secret",
        "pg-secret",
        "kafka-secret",
        "key-secret",
        "inline-secret",
    ] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(shown.contains(&password), "the paths are shown");
}

/// The configuration as settings (what a `config print` would write).
fn toml_of(config: &Config) -> String {
    serde_json::to_string(config).unwrap()
}

#[test]
fn a_secret_file_that_cannot_be_read_names_the_setting_and_the_path() {
    let d = dir("unreadable");
    let missing = d.join("missing").to_str().unwrap().to_owned();
    let err = error(&[], &[("RENDEZVOUS__DATABASE__PASSWORD_FILE", &missing)]);
    assert!(
        err.contains("database.password_file") && err.contains(&missing),
        "{err}"
    );
    let err = error(
        &[],
        &[("RENDEZVOUS__KAFKA__PROPERTY_FILES__SASL_PASSWORD", &missing)],
    );
    assert!(
        err.contains("kafka.property_files")
            && err.contains("sasl.password")
            && err.contains(&missing),
        "{err}"
    );
    let empty = write(&d, "empty", "\n");
    let err = error(&[], &[("RENDEZVOUS__DATABASE__URL_FILE", &empty)]);
    assert!(
        err.contains("database.url_file") && err.contains("is empty"),
        "{err}"
    );
    let bad_url = write(&d, "bad-url", "mysql://u:hunter2@h/db\n");
    let err = error(&[], &[("RENDEZVOUS__DATABASE__URL_FILE", &bad_url)]);
    assert!(err.contains("database.url_file"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let both = write(&d, "url", "postgres://h/db\n");
    let err = error(
        &[],
        &[
            ("RENDEZVOUS__DATABASE__URL_FILE", &both),
            ("RENDEZVOUS__DATABASE__URL", "postgres://h/db"),
        ],
    );
    assert!(err.contains("not both"), "{err}");
    let twice = write(
        &d,
        "twice.toml",
        &format!(
            "[kafka.properties]\n\"sasl.password\" = \"x\"\n\
             [kafka.property_files]\n\"sasl.password\" = {both:?}\n"
        ),
    );
    let err = error(&["--config", &twice], &[]);
    assert!(err.contains("give it once"), "{err}");
    let owned = write(
        &d,
        "owned.toml",
        &format!("[kafka.property_files]\n\"group.id\" = {both:?}\n"),
    );
    let err = error(&["--config", &owned], &[]);
    assert!(err.contains("kafka.group_id instead"), "{err}");
}

#[test]
fn database_tls_settings_reach_the_adapter() {
    let d = dir("tls");
    let ca = write(&d, "ca.pem", "-----BEGIN CERTIFICATE-----\n");
    let cert = write(&d, "client.pem", "x");
    let key = write(&d, "client.key", "x");
    let config = run(
        &[],
        &[
            (
                "RENDEZVOUS__DATABASE__URL",
                "postgres://app@db.internal/rendezvous",
            ),
            ("RENDEZVOUS__DATABASE__SSL_MODE", "verify-full"),
            ("RENDEZVOUS__DATABASE__SSL_ROOT_CERT", &ca),
            ("RENDEZVOUS__DATABASE__SSL_CERT", &cert),
            ("RENDEZVOUS__DATABASE__SSL_KEY", &key),
        ],
    )
    .unwrap();
    let tls = config.database_config().tls;
    assert_eq!(tls.mode, Some(rendezvous_persistence::SslMode::VerifyFull));
    assert_eq!(tls.root_cert, Some(PathBuf::from(&ca)));
    assert_eq!(tls.client_cert, Some(PathBuf::from(&cert)));
    assert_eq!(tls.client_key, Some(PathBuf::from(&key)));
    assert_eq!(Config::default().database_config().tls, Default::default());

    let err = error(&[], &[("RENDEZVOUS__DATABASE__SSL_MODE", "verify")]);
    assert!(
        err.contains("verify-full") && err.contains("database.ssl_mode"),
        "{err}"
    );
    let err = error(&[], &[("RENDEZVOUS__DATABASE__SSL_MODE", "require")]);
    assert!(
        err.contains("database.ssl_mode: applies to PostgreSQL only"),
        "{err}"
    );
    let err = error(
        &[],
        &[
            (
                "RENDEZVOUS__DATABASE__URL",
                "postgres://db.internal/rendezvous",
            ),
            ("RENDEZVOUS__DATABASE__SSL_CERT", &cert),
        ],
    );
    assert!(err.contains("needs its key"), "{err}");
    let missing = d.join("missing-ca.pem").to_str().unwrap().to_owned();
    let err = error(
        &[],
        &[
            (
                "RENDEZVOUS__DATABASE__URL",
                "postgres://db.internal/rendezvous",
            ),
            ("RENDEZVOUS__DATABASE__SSL_ROOT_CERT", &missing),
        ],
    );
    assert!(
        err.contains("database.ssl_root_cert") && err.contains(&missing),
        "{err}"
    );
}

#[test]
fn the_collectors_ca_needs_https_and_a_readable_file() {
    let d = dir("otlp");
    let ca = write(&d, "ca.pem", "x");
    let config = run(
        &[],
        &[
            (
                "RENDEZVOUS__TELEMETRY__OTLP_ENDPOINT",
                "https://collector:4317",
            ),
            ("RENDEZVOUS__TELEMETRY__OTLP_CA_FILE", &ca),
        ],
    )
    .unwrap();
    assert_eq!(config.telemetry.otlp_ca_file, PathBuf::from(&ca));
    let err = error(
        &[],
        &[
            (
                "RENDEZVOUS__TELEMETRY__OTLP_ENDPOINT",
                "http://collector:4317",
            ),
            ("RENDEZVOUS__TELEMETRY__OTLP_CA_FILE", &ca),
        ],
    );
    assert!(err.contains("needs an https://"), "{err}");
    let err = error(
        &[],
        &[
            (
                "RENDEZVOUS__TELEMETRY__OTLP_ENDPOINT",
                "https://collector:4317",
            ),
            ("RENDEZVOUS__TELEMETRY__OTLP_CA_FILE", "/nonexistent/ca.pem"),
        ],
    );
    assert!(
        err.contains("telemetry.otlp_ca_file") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
}

#[test]
fn kafka_properties_are_checked_at_start_up() {
    let err = error(
        &[],
        &[("RENDEZVOUS__KAFKA__PROPERTIES__NO_SUCH_THING", "1")],
    );
    assert!(
        err.contains("kafka.properties") && err.contains("no.such.thing"),
        "{err}"
    );
    let err = error(
        &[],
        &[(
            "RENDEZVOUS__KAFKA__PROPERTIES__SSL_CA_LOCATION",
            "/nonexistent/kafka-ca.pem",
        )],
    );
    assert!(
        err.contains("ssl.ca.location") && err.contains("/nonexistent/kafka-ca.pem"),
        "{err}"
    );
    run(
        &[],
        &[
            (
                "RENDEZVOUS__KAFKA__PROPERTIES__SECURITY_PROTOCOL",
                "SASL_SSL",
            ),
            (
                "RENDEZVOUS__KAFKA__PROPERTIES__SASL_MECHANISM",
                "SCRAM-SHA-256",
            ),
        ],
    )
    .expect("SASL_SSL and SCRAM are built into librdkafka");
}
