//! The outbound hops' TLS and secrets: `database.ssl_*`, `database.url_file` and
//! `database.password_file`, `kafka.property_files`, `telemetry.otlp_ca_file`. Secret files are
//! read once, while the configuration is read (a file that cannot be read stops the start,
//! naming the setting and the path), into values that are never serialized and whose `Debug`
//! does not show them; certificate files are checked to be readable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rendezvous_persistence::SslMode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Config, ENV_PREFIX, OWNED_PROPERTIES, check_database_url};

/// The prefix of the environment variables that name files holding librdkafka properties:
/// `RENDEZVOUS__KAFKA__PROPERTY_FILES__SASL_PASSWORD=/run/secrets/kafka` reads `sasl.password`
/// from that file (the rest of the name lowercased, `_` read as `.`).
pub const ENV_KAFKA_PROPERTY_FILES: &str = "RENDEZVOUS__KAFKA__PROPERTY_FILES__";

/// A value read from a secret file. Its `Debug` does not show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The largest secret file read (a password, a key, a URL).
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Reads the secret in `path` for `setting`: its text without one trailing newline. A file
/// that cannot be read, is too large, is not UTF-8 or is empty is an error naming the setting
/// and the path, never the content.
pub fn read_secret(setting: &str, path: &Path) -> Result<Secret> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?
        .len();
    if size > MAX_SECRET_BYTES {
        bail!(
            "{setting}: {} is larger than {MAX_SECRET_BYTES} bytes",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if value.is_empty() {
        bail!("{setting}: {} is empty", path.display());
    }
    Ok(Secret(value.to_owned()))
}

/// Checks that `path` (a certificate or key `setting` names) can be read.
fn check_readable(setting: &str, path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))
}

fn is_set(path: &Path) -> bool {
    !path.as_os_str().is_empty()
}

/// `database.ssl_mode`: libpq's `sslmode`, or empty for the URL's (whose default is
/// `prefer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SslModeSetting(pub Option<SslMode>);

impl Serialize for SslModeSetting {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.map_or("", SslMode::as_str))
    }
}

impl<'de> Deserialize<'de> for SslModeSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if name.is_empty() {
            return Ok(Self(None));
        }
        SslMode::parse(&name)
            .map(|mode| Self(Some(mode)))
            .ok_or_else(|| {
                let names: Vec<&str> = SslMode::ALL.iter().map(|(n, _)| *n).collect();
                serde::de::Error::custom(format!(
                    "expected \"\" (the URL's) or one of {names:?}, found {name:?}"
                ))
            })
    }
}

/// What the secret files of the configuration held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SecretValues {
    /// `database.url_file`'s URL.
    pub(crate) database_url: Option<Secret>,
    /// `database.password_file`'s password.
    pub(crate) database_password: Option<Secret>,
    /// `kafka.property_files`: property → value.
    pub(crate) kafka_properties: BTreeMap<String, Secret>,
}

/// `kafka.property_files`: librdkafka property → the file holding its value. The properties
/// the ingress owns are refused, as in `kafka.properties`.
pub(crate) fn property_files<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, PathBuf>, D::Error> {
    let files = BTreeMap::<String, PathBuf>::deserialize(deserializer)?;
    for (name, why) in OWNED_PROPERTIES {
        if files.contains_key(*name) {
            return Err(serde::de::Error::custom(format!(
                "{name:?} cannot be set here: {why}"
            )));
        }
    }
    Ok(files)
}

/// The `RENDEZVOUS__KAFKA__PROPERTY_FILES__...` variables of `env` as a table of property
/// names (for `kafka.property_files`), and the other variables.
pub(crate) fn split_property_files(
    env: Vec<(String, String)>,
) -> (config::Map<String, config::Value>, Vec<(String, String)>) {
    let (files, rest): (Vec<_>, Vec<_>) = env
        .into_iter()
        .partition(|(k, _)| k.starts_with(ENV_KAFKA_PROPERTY_FILES));
    let origin = "the environment".to_owned();
    let table = files
        .into_iter()
        .map(|(k, v)| {
            let name = k[ENV_KAFKA_PROPERTY_FILES.len()..]
                .to_lowercase()
                .replace('_', ".");
            (name, config::Value::new(Some(&origin), v))
        })
        .collect();
    debug_assert!(ENV_KAFKA_PROPERTY_FILES.starts_with(ENV_PREFIX));
    (table, rest)
}

impl Config {
    /// Reads the secret files the configuration names (`database.url_file`,
    /// `database.password_file`, `kafka.property_files`) into values kept beside the settings.
    pub(crate) fn read_secret_files(&mut self) -> Result<()> {
        let mut values = SecretValues::default();
        let database = &self.database;
        if is_set(&database.url_file) {
            let url = read_secret("database.url_file", &database.url_file)?;
            check_database_url(url.expose()).map_err(|e| {
                anyhow::anyhow!("database.url_file: {}: {e}", database.url_file.display())
            })?;
            values.database_url = Some(url);
        }
        if is_set(&database.password_file) {
            values.database_password = Some(read_secret(
                "database.password_file",
                &database.password_file,
            )?);
        }
        for (name, path) in &self.kafka.property_files {
            let setting = format!("kafka.property_files.{name:?}");
            values
                .kafka_properties
                .insert(name.clone(), read_secret(&setting, path)?);
        }
        self.database.files.url = values.database_url;
        self.database.files.password = values.database_password;
        self.kafka.property_values = values.kafka_properties;
        Ok(())
    }

    /// The rules of the outbound hops' settings that span several of them, and the
    /// certificate files they name: each problem names its setting.
    pub(crate) fn outbound_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let database = &self.database;
        if !database.url.is_empty() && is_set(&database.url_file) {
            problems.push(
                "database.url_file: give the URL either in database.url or in a file, not both"
                    .to_owned(),
            );
        }
        let postgres = !self.database_url().starts_with("sqlite:");
        let tls_files = [
            ("database.ssl_root_cert", &database.ssl_root_cert),
            ("database.ssl_cert", &database.ssl_cert),
            ("database.ssl_key", &database.ssl_key),
        ];
        if !postgres {
            let mut set: Vec<&str> = tls_files
                .iter()
                .filter(|(_, path)| is_set(path))
                .map(|(name, _)| *name)
                .collect();
            if database.ssl_mode.0.is_some() {
                set.push("database.ssl_mode");
            }
            if is_set(&database.password_file) {
                set.push("database.password_file");
            }
            for name in set {
                problems.push(format!(
                    "{name}: applies to PostgreSQL only (the database is SQLite)"
                ));
            }
        } else {
            for (name, path) in tls_files {
                if is_set(path)
                    && let Err(e) = check_readable(name, path)
                {
                    problems.push(format!("{e:#}"));
                }
            }
        }
        if is_set(&database.ssl_cert) != is_set(&database.ssl_key) {
            problems.push(
                "database.ssl_cert, database.ssl_key: a client certificate needs its key, and a key its certificate"
                    .to_owned(),
            );
        }
        let telemetry = &self.telemetry;
        if is_set(&telemetry.otlp_ca_file) {
            if !telemetry.otlp_endpoint.starts_with("https://") {
                problems.push(
                    "telemetry.otlp_ca_file: needs an https:// telemetry.otlp_endpoint".to_owned(),
                );
            } else if let Err(e) = check_readable("telemetry.otlp_ca_file", &telemetry.otlp_ca_file)
            {
                problems.push(format!("{e:#}"));
            }
        }
        for name in self.kafka.property_files.keys() {
            if self.kafka.properties.0.contains_key(name) {
                problems.push(format!(
                    "kafka.property_files.{name:?}: also set in kafka.properties; give it once"
                ));
            }
        }
        if self.kafka.enabled
            && let Err(e) = self.kafka.ingress_config(false).check()
        {
            let e = e.to_string();
            problems.push(format!(
                "kafka.properties: {}",
                e.strip_prefix("kafka: ").unwrap_or(&e)
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests;
