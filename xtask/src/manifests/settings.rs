//! The ports and settings the deployment files name: only Rendezvous' ports and its companion
//! services', and only settings that `deploy/rendezvous.toml` has (`RENDEZVOUS__…` variables
//! and the chart's TOML).

use std::collections::BTreeSet;

use yaml_rust2::Yaml;

use super::{CHART, manifests, toml_table, yaml};

/// Rendezvous' own ports: gRPC (`server.listen`) and the admin HTTP listener (`admin.listen`).
const GRPC_PORT: u16 = 50151;
const ADMIN_PORT: u16 = 50152;

/// Every port a deployment file may name: Rendezvous' two, and the companion services' own.
const PORTS: &[(u16, &str)] = &[
    (GRPC_PORT, "Rendezvous gRPC (server.listen)"),
    (ADMIN_PORT, "Rendezvous admin HTTP (admin.listen)"),
    (5432, "PostgreSQL"),
    (9092, "Kafka (Tansu)"),
    (4317, "OTLP/gRPC (the OpenTelemetry collector)"),
    (4318, "OTLP/HTTP (the OpenTelemetry collector)"),
    (8888, "the OpenTelemetry collector's own metrics"),
    (13133, "the OpenTelemetry collector's health check"),
    (9090, "Prometheus"),
];

/// The environment variables of settings start with this.
const ENV_PREFIX: &str = "RENDEZVOUS__";

/// How comments write "any setting" (`RENDEZVOUS__SECTION__KEY`); not a setting itself.
const ENV_PLACEHOLDER: &str = "RENDEZVOUS__SECTION__KEY";

/// Whether a `:` at `colon` follows a host: a name or an address (with a letter or a dot),
/// nothing after another `:` or a `]` (`127.0.0.1::50151` publishes on any host port,
/// `[::1]:50151`), or a port after a `:` (`127.0.0.1:50151:50151`). A bare number is not a host
/// (`USER 10001:10001`).
fn host_before(text: &str, colon: usize) -> bool {
    let before = &text[..colon];
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let host = &before[start..];
    let previous = before[..start].chars().next_back();
    if host.is_empty() {
        return matches!(previous, Some(':' | ']'));
    }
    host.contains(|c: char| c.is_ascii_alphabetic() || c == '.')
        || (host.chars().all(|c| c.is_ascii_digit()) && previous == Some(':'))
}

/// The ports of the compose file's `ports:` lists (`"8080:80"`, `"127.0.0.1::50151/tcp"`, 80),
/// host and container side alike.
fn compose_ports(compose: &Yaml) -> Vec<u16> {
    let mut ports = Vec::new();
    for (_, service) in compose["services"].as_hash().into_iter().flatten() {
        for entry in service["ports"].as_vec().into_iter().flatten() {
            if let Some(port) = entry.as_i64() {
                ports.extend(u16::try_from(port).ok());
            }
            for part in entry.as_str().into_iter().flat_map(|e| e.split(':')) {
                let number = part.split('/').next().unwrap_or(part);
                ports.extend(number.parse::<u16>().ok());
            }
        }
    }
    ports
}

/// Every port `text` names: `host:port` (in addresses and URLs), `…port: N` and `…Port: N`
/// keys, Dockerfile `EXPOSE` lines and bash's `/dev/tcp/host/port`.
fn named_ports(text: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for (colon, _) in text.match_indices(':') {
        let after = &text[colon + 1..];
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        let ends_cleanly = after[digits..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace() || "/\"',)]}:".contains(c));
        if (2..=5).contains(&digits)
            && ends_cleanly
            && host_before(text, colon)
            && let Ok(port) = after[..digits].parse()
        {
            ports.push(port);
        }
    }
    for line in text.lines() {
        let line = line.trim().trim_start_matches("- ");
        if let Some(exposed) = line.strip_prefix("EXPOSE ") {
            ports.extend(
                exposed
                    .split_whitespace()
                    .filter_map(|p| p.split('/').next()?.parse::<u16>().ok()),
            );
        }
        if let Some((key, value)) = line.split_once(':') {
            let key = key.trim().trim_matches('"');
            if (key.ends_with("port") || key.ends_with("Port"))
                && let Ok(port) = value.trim().trim_matches('"').parse()
            {
                ports.push(port);
            }
        }
    }
    for (at, _) in text.match_indices("/dev/tcp/") {
        let rest = &text[at + "/dev/tcp/".len()..];
        if let Some(port) = rest.split('/').nth(1) {
            let digits: String = port.chars().take_while(char::is_ascii_digit).collect();
            ports.extend(digits.parse::<u16>().ok());
        }
    }
    ports
}

#[test]
fn manifests_name_only_known_ports() {
    let mut problems = Vec::new();
    let mut rendezvous_ports = BTreeSet::new();
    let compose = (
        "deploy/compose.yaml".to_owned(),
        yaml("deploy/compose.yaml"),
    );
    let named = manifests()
        .into_iter()
        .map(|(path, text)| (path, named_ports(&text)))
        .chain([(compose.0, compose_ports(&compose.1))]);
    for (path, ports) in named {
        for port in ports {
            if matches!(port, GRPC_PORT | ADMIN_PORT) {
                rendezvous_ports.insert(port);
            }
            if !PORTS.iter().any(|(p, _)| *p == port) {
                problems.push(format!("{path} names port {port}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "ports that are neither Rendezvous' ({GRPC_PORT}, {ADMIN_PORT}) nor a companion \
         service's (PORTS in xtask/src/manifests/settings.rs):\n{}",
        problems.join("\n")
    );
    assert_eq!(
        rendezvous_ports,
        BTreeSet::from([GRPC_PORT, ADMIN_PORT]),
        "the manifests should name both of Rendezvous' ports"
    );
}

/// The ports the manifests use are the ones Rendezvous listens on by default.
#[test]
fn rendezvous_ports_are_the_default_listen_ports() {
    let settings = toml_table("deploy/rendezvous.toml");
    for (section, port) in [("server", GRPC_PORT), ("admin", ADMIN_PORT)] {
        let listen = settings
            .get(section)
            .and_then(|s| s.get("listen"))
            .and_then(toml::Value::as_str);
        assert_eq!(
            listen.and_then(|l| l.rsplit_once(':')).map(|(_, p)| p),
            Some(port.to_string().as_str()),
            "{section}.listen in deploy/rendezvous.toml is {listen:?}, the manifests use port {port}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

/// Whether `path` (`["database", "url"]`) is a setting or a section of `reference` (the parsed
/// `deploy/rendezvous.toml`). Below an empty table (`[kafka.properties]`, `[secrets]`) or an
/// array (`auth.api_keys`, written as `[[auth.api_keys]]`) any name goes: their entries are
/// free-form.
fn known_setting(reference: &toml::Table, path: &[String]) -> bool {
    let mut table = reference;
    for (i, part) in path.iter().enumerate() {
        if table.is_empty() && i > 0 {
            return true;
        }
        match table.get(part) {
            Some(toml::Value::Table(inner)) => table = inner,
            Some(toml::Value::Array(_)) => return true,
            Some(_) => return i == path.len() - 1,
            None => return false,
        }
    }
    true
}

/// The setting a `RENDEZVOUS__SECTION__KEY` variable sets, as a path (`["section", "key"]`);
/// a name ending in `__` (a prefix a template completes) gives the path so far.
fn env_setting(var: &str) -> Vec<String> {
    var.strip_prefix(ENV_PREFIX)
        .unwrap_or(var)
        .split("__")
        .filter(|part| !part.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Every `RENDEZVOUS__…` name in `text`.
fn env_vars(text: &str) -> Vec<&str> {
    text.match_indices(ENV_PREFIX)
        .filter(|(at, _)| {
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// Every setting a TOML document sets, as paths (`[a.b] c = 1` gives `["a", "b", "c"]`).
fn toml_settings(table: &toml::Table, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for (key, value) in table {
        let mut path = prefix.to_vec();
        path.push(key.clone());
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => toml_settings(inner, &path, out),
            _ => out.push(path),
        }
    }
}

/// The settings a deployment file's text sets that `reference` does not know, as
/// `RENDEZVOUS__…` variables.
fn unknown_env_settings(reference: &toml::Table, text: &str) -> Vec<String> {
    env_vars(text)
        .into_iter()
        .filter(|var| *var != ENV_PLACEHOLDER)
        .filter(|var| {
            let path = env_setting(var);
            path.is_empty() || !known_setting(reference, &path)
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_setting_the_manifests_set_exists() {
    let reference = toml_table("deploy/rendezvous.toml");
    let mut problems = Vec::new();
    let mut variables = 0;
    for (path, text) in manifests() {
        variables += env_vars(&text).len();
        for var in unknown_env_settings(&reference, &text) {
            problems.push(format!("{path}: {var}"));
        }
    }
    assert!(
        variables > 10,
        "found only {variables} RENDEZVOUS__ variables"
    );
    // The chart's settings file, and what its README's example sets.
    let values = yaml(&format!("{CHART}/values.yaml"));
    let config = values["config"]
        .as_str()
        .expect("values.yaml has a `config` string (TOML)");
    match config.parse::<toml::Table>() {
        Err(e) => problems.push(format!("{CHART}/values.yaml: config is not TOML: {e}")),
        Ok(table) => {
            let mut settings = Vec::new();
            toml_settings(&table, &[], &mut settings);
            assert!(!settings.is_empty(), "values.yaml's config sets nothing");
            for setting in settings {
                if !known_setting(&reference, &setting) {
                    problems.push(format!(
                        "{CHART}/values.yaml: config sets {}",
                        setting.join(".")
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "settings that deploy/rendezvous.toml does not have:\n{}",
        problems.join("\n")
    );
}

/// The checks find the ports and settings a stale manifest gets wrong.
#[test]
fn the_port_and_setting_checks_catch_stale_manifests() {
    assert_eq!(
        named_ports(
            "EXPOSE 50151 50152/tcp\nUSER 10001:10001\nimage: postgres:17-bookworm\n\
             - \"127.0.0.1::50151\"\nurl: http://otel:4317/v1\ncontainerPort: 8080\n\
             targetPort: grpc\n\"h\": 8\nexec 3<>/dev/tcp/127.0.0.1/50152 && x\n\
             image: tansu:0.6.0\nlisten: [::1]:9090\n- \"127.0.0.1:8080:8081\"\n"
        ),
        [50151, 4317, 9090, 8080, 8081, 50151, 50152, 8080, 50152]
    );
    let compose = super::parse_yaml(
        "services:\n  a:\n    ports: [\"8080:80\", \"127.0.0.1::50151/tcp\", 9000]\n",
    )
    .unwrap()
    .remove(0);
    assert_eq!(compose_ports(&compose), [8080, 80, 50151, 9000]);

    let reference: toml::Table = "data_dir = \"d\"\n[database]\nurl = \"\"\n[kafka]\n\
        brokers = \"\"\n[kafka.properties]\n[auth]\napi_keys = []\n"
        .parse()
        .unwrap();
    assert_eq!(
        unknown_env_settings(
            &reference,
            "RENDEZVOUS__DATA_DIR RENDEZVOUS__DATABASE__URL RENDEZVOUS__DATABASE__URI \
             RENDEZVOUS__KAFKA__PROPERTIES__SASL_PASSWORD RENDEZVOUS__KAFKA__PROPERTIES__ \
             RENDEZVOUS__SECTION__KEY XRENDEZVOUS__NOPE RENDEZVOUS__DATABASE__URL__X \
             RENDEZVOUS__ADMIN__LISTEN RENDEZVOUS__"
        ),
        [
            "RENDEZVOUS__DATABASE__URI",
            "RENDEZVOUS__DATABASE__URL__X",
            "RENDEZVOUS__ADMIN__LISTEN",
            "RENDEZVOUS__",
        ]
    );
    let chart_config: toml::Table = "[database]\nurl = \"x\"\nmax_conections = 3\n\
        [[auth.api_keys]]\nname = \"a\"\n[kafka.properties]\n\"sasl.password\" = \"p\"\n"
        .parse()
        .unwrap();
    let mut settings = Vec::new();
    toml_settings(&chart_config, &[], &mut settings);
    let unknown: Vec<String> = settings
        .iter()
        .filter(|s| !known_setting(&reference, s))
        .map(|s| s.join("."))
        .collect();
    assert_eq!(unknown, ["database.max_conections"]);
}
