//! `[secrets]`: named secrets an outbound API call may send in a header (`{"secret": "name"}`
//! in a node config), each read from a file or an environment variable by the HTTP adapter
//! when the call is made. Only names and sources are configured here; values are never stored,
//! logged or shown (this section's `Debug` holds paths and variable names only).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rendezvous_domain::request::secret_name_problem;
use rendezvous_http_caller::SecretSource;
use serde::{Deserialize, Deserializer, Serialize};

/// `[secrets]`: name → where its value is read from.
///
/// ```toml
/// [secrets]
/// partner_token = { file = "/run/secrets/partner_token" }
/// billing_key = { env = "BILLING_API_KEY" }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretsSection(#[serde(deserialize_with = "entries")] pub BTreeMap<String, SecretEntry>);

/// Where one secret is read from: exactly one of `file` (its text, without the trailing
/// newline) or `env` (an environment variable of the service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    /// A file holding the value (`/run/secrets/partner_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// An environment variable holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl SecretEntry {
    /// Reads the value now (at start-up), by the rules of an API call's secrets. The error
    /// names the source, never the value.
    pub fn read_now(&self) -> Result<String, String> {
        self.source().map_err(str::to_owned)?.read_now()
    }

    /// The source, or why the entry is not one.
    fn source(&self) -> Result<SecretSource, &'static str> {
        match (&self.file, &self.env) {
            (Some(file), None) if !file.as_os_str().is_empty() => {
                Ok(SecretSource::File(file.clone()))
            }
            (None, Some(env)) if !env.is_empty() && !env.contains(['=', '\0']) => {
                Ok(SecretSource::Env(env.clone()))
            }
            (Some(_), Some(_)) => Err("give either file or env, not both"),
            (None, None) => Err("give file = \"/path\" or env = \"VARIABLE\""),
            (Some(_), None) => Err("file: empty"),
            (None, Some(_)) => Err("env: not a variable name"),
        }
    }
}

/// The entries, each name and source checked; an error names the secret.
fn entries<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, SecretEntry>, D::Error> {
    let entries = BTreeMap::<String, SecretEntry>::deserialize(deserializer)?;
    for (name, entry) in &entries {
        if let Some(problem) = secret_name_problem(name) {
            return Err(serde::de::Error::custom(format!("secrets: {problem}")));
        }
        entry
            .source()
            .map_err(|why| serde::de::Error::custom(format!("secrets.{name}: {why}")))?;
    }
    Ok(entries)
}

impl SecretsSection {
    /// The names, for the registration check.
    pub fn names(&self) -> BTreeSet<String> {
        self.0.keys().cloned().collect()
    }

    /// The sources, for the HTTP adapter.
    pub fn sources(&self) -> BTreeMap<String, SecretSource> {
        self.0
            .iter()
            .filter_map(|(name, entry)| Some((name.clone(), entry.source().ok()?)))
            .collect()
    }
}

/// Tests of `[secrets]`, and of the `[api]` settings that guard the same outbound calls (the
/// allowlist, the proxy).
#[cfg(test)]
mod tests {
    use super::super::{Config, ServiceSection};
    use super::*;
    use rendezvous_domain::Destinations;

    fn read(env: &[(&str, &str)]) -> Result<Config, String> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::read(None, env).map_err(|e| format!("{e:#}"))
    }

    fn read_file(name: &str, text: &str) -> Result<Config, String> {
        let dir =
            std::env::temp_dir().join(format!("rdv-secrets-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::read(Some(&path), Vec::new()).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn allowlist_entries_are_parsed_when_the_configuration_is_read() {
        let config = read(&[(
            "RENDEZVOUS__API__ALLOWED",
            "https://api.partner.example/v1,*.hooks.example",
        )])
        .unwrap();
        let policy = config.api.policy();
        let allowed = |url: &str| policy.destinations.check(url).is_ok();
        assert!(allowed("https://api.partner.example/v1/orders"));
        assert!(allowed("https://x.hooks.example/"));
        assert!(!allowed("https://api.partner.example/v1/../admin"));
        assert!(!allowed("https://api.partner.example.evil.test/v1/"));
        assert!(!allowed("http://api.partner.example/v1/orders"));
        assert_eq!(
            config
                .api
                .allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["https://api.partner.example/v1", "*.hooks.example"]
        );
        let from_file = read_file(
            "allowed",
            "[api]\nallowed = [\"https://a.example:8443/x\"]\n",
        )
        .unwrap();
        assert_eq!(
            from_file.api.policy().destinations,
            Destinations {
                allowed: vec!["https://a.example:8443/x".parse().unwrap()],
                allow_private_networks: false,
            }
        );
    }

    #[test]
    fn a_bad_allowlist_entry_stops_the_start_naming_it() {
        let err =
            read(&[("RENDEZVOUS__API__ALLOWED", "https://a.example,gopher://x")]).unwrap_err();
        assert!(
            err.contains(
                "\"gopher://x\" is not a valid destination: the scheme must be http or https"
            ) && err.contains("api.allowed"),
            "{err}"
        );
        for (entry, reason) in [
            ("https://a.*.example", "wildcard"),
            ("https://user:pw@a.example", "credentials"),
            ("*.com", "too broad"),
        ] {
            let err = read_file("bad", &format!("[api]\nallowed = [{entry:?}]\n")).unwrap_err();
            let shown = entry.replace("user:pw", "…");
            assert!(
                err.contains(&format!("{shown:?}")) && err.contains(reason),
                "{err}"
            );
            assert!(
                !err.contains("pw@"),
                "credentials are not echoed whole: {err}"
            );
        }
    }

    #[test]
    fn the_proxy_is_explicit_and_checked() {
        let config = read(&[]).unwrap();
        assert_eq!(config.api.caller_config(&config.secrets).proxy, None);
        let config = read(&[("RENDEZVOUS__API__PROXY", "http://proxy.internal:3128")]).unwrap();
        assert_eq!(
            config.api.caller_config(&config.secrets).proxy.as_deref(),
            Some("http://proxy.internal:3128")
        );
        let err =
            read(&[("RENDEZVOUS__API__PROXY", "socks5://me:hunter2@proxy:1080")]).unwrap_err();
        assert!(
            err.contains("api.proxy") && err.contains("expected http://host:port"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_or_the_environment() {
        let config = read_file(
            "secrets",
            "[secrets]\npartner_token = { file = \"/run/secrets/partner_token\" }\n\
             [secrets.billing-key]\nenv = \"BILLING_API_KEY\"\n",
        )
        .unwrap();
        let caller = config.api.caller_config(&config.secrets);
        assert_eq!(
            caller.secrets,
            BTreeMap::from([
                (
                    "billing-key".to_owned(),
                    SecretSource::Env("BILLING_API_KEY".into())
                ),
                (
                    "partner_token".to_owned(),
                    SecretSource::File("/run/secrets/partner_token".into())
                ),
            ])
        );
        let service = ServiceSection::default().service_config(&config.api, &config.secrets);
        assert_eq!(
            service.api.secrets,
            BTreeSet::from(["billing-key".to_owned(), "partner_token".to_owned()])
        );
        let from_env = read(&[(
            "RENDEZVOUS__SECRETS__PARTNER_TOKEN__FILE",
            "/run/secrets/partner_token",
        )])
        .unwrap();
        assert_eq!(
            from_env.secrets.sources()["partner_token"],
            SecretSource::File("/run/secrets/partner_token".into())
        );
    }

    #[test]
    fn bad_secret_entries_are_refused_naming_them() {
        for (text, expected) in [
            (
                "[secrets.both]\nfile = \"/x\"\nenv = \"X\"\n",
                "secrets.both: give either file or env, not both",
            ),
            (
                "[secrets.none]\n",
                "secrets.none: give file = \"/path\" or env = \"VARIABLE\"",
            ),
            (
                "[secrets.blank]\nfile = \"\"\n",
                "secrets.blank: file: empty",
            ),
            (
                "[secrets.blank]\nenv = \"\"\n",
                "secrets.blank: env: not a variable name",
            ),
            (
                "[secrets.odd]\nvalue = \"s3cret\"\n",
                "unknown field `value`",
            ),
            (
                "[secrets.Upper]\nenv = \"X\"\n",
                "\"Upper\" is not a valid secret name",
            ),
        ] {
            let err = read_file("bad-secret", text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
