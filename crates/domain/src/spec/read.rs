//! The validating reader of a node config: walks the document, reads each source, and reports
//! every problem with its JSON path instead of stopping at the first.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::compile;
use super::obj::Obj;
use super::{
    ApiCall, DEFAULT_CORRELATION_ID_FIELD, DEFAULT_ENABLED, DEFAULT_EXECUTION_ID_FIELD,
    DEFAULT_METHOD, DEFAULT_REQUIRED, DEFAULT_TIMEOUT, HttpMethod, KafkaSource, MAX_TIMEOUT,
    MAX_TOPIC_LEN, NODE_TYPE, ResponseMode, SourceKind, SourceSpec, TimeoutPolicy, WaitSpec,
};
use crate::ids::SourceName;
use crate::limits::MAX_SOURCES;
use crate::problems::{Problems, child, json_kind};
use crate::request::{forbidden_header, header_name_problem, secret_name_problem};

/// Reads a node config document. `None` when it is too broken to build a spec; every problem,
/// including those of a spec that was built, is in `problems`.
pub(super) fn node_config(doc: &Value, problems: &mut Problems) -> Option<WaitSpec> {
    let Value::Object(root) = doc else {
        problems.push("$", format!("expected an object, found {}", json_kind(doc)));
        return None;
    };
    match root.get("type") {
        Some(Value::String(t)) if t == NODE_TYPE => {}
        Some(Value::String(t)) => {
            problems.push("type", format!("expected {NODE_TYPE:?}, found {t:?}"))
        }
        Some(other) => problems.push(
            "type",
            format!("expected a string, found {}", json_kind(other)),
        ),
        None => problems.push("type", format!("required (must be {NODE_TYPE:?})")),
    }
    // Other top-level keys are node metadata of the engine (id, name, position) and ignored.
    let Some(data) = root.get("data") else {
        problems.push("data", "required");
        return None;
    };
    let mut data = Obj::new(data, "data", problems)?;
    let mut declared = Vec::new();
    if let Some(api) = data.take("apiCall") {
        declared.push(parse_api(api, "data.apiCall", problems));
    }
    if let Some(kafka) = data.take("kafkaEvent") {
        let name = SourceName::kafka();
        declared.push(parse_kafka_like(
            kafka,
            "data.kafkaEvent",
            name,
            false,
            problems,
        ));
    }
    if let Some(extra) = data.take("sources") {
        parse_extra_sources(extra, &mut declared, problems);
    }
    let strategy = compile::read_strategy(&mut data, problems);
    let timeout = match data.take("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(value) => parse_timeout(value, problems),
    };
    let on_timeout = match data.take("onTimeout") {
        None => TimeoutPolicy::Fail,
        Some(Value::String(s)) if s == "fail" => TimeoutPolicy::Fail,
        Some(Value::String(s)) if s == "resume_with_partial" => TimeoutPolicy::ResumeWithPartial,
        Some(other) => {
            problems.push(
                "data.onTimeout",
                format!("expected \"fail\" or \"resume_with_partial\", found {other}"),
            );
            TimeoutPolicy::Fail
        }
    };
    data.reject_unknown(problems);

    let mut sources = Vec::new();
    let mut disabled = Vec::new();
    for d in declared {
        if !d.enabled {
            disabled.push(d.name);
        } else if let Some(source) = d.source {
            sources.push(source);
        }
    }
    let strategy = strategy?;
    let condition = compile::compile(&strategy, &sources, &disabled, problems)?;
    Some(WaitSpec {
        sources,
        disabled,
        strategy,
        condition,
        timeout,
        on_timeout,
    })
}

/// A source as the config declares it.
struct Declared {
    name: SourceName,
    /// Whether it is on. A source that is not even an object counts as off.
    enabled: bool,
    /// What it is; `None` when it is off, or on but too broken to build (reported).
    source: Option<SourceSpec>,
}

impl Declared {
    fn disabled(name: SourceName) -> Self {
        Self {
            name,
            enabled: false,
            source: None,
        }
    }

    fn broken(name: SourceName) -> Self {
        Self {
            name,
            enabled: true,
            source: None,
        }
    }

    fn enabled(source: SourceSpec) -> Self {
        Self {
            name: source.name.clone(),
            enabled: true,
            source: Some(source),
        }
    }
}

fn parse_api(value: Value, at: &str, problems: &mut Problems) -> Declared {
    let name = SourceName::api();
    let Some(mut obj) = Obj::new(&value, at, problems) else {
        return Declared::disabled(name);
    };
    let enabled = obj.bool("enabled", DEFAULT_ENABLED, problems);
    let required = obj.bool("required", DEFAULT_REQUIRED, problems);
    let url = obj.string("url", problems);
    let method = match obj.string("method", problems) {
        None => DEFAULT_METHOD,
        Some(raw) => HttpMethod::parse(&raw).unwrap_or_else(|| {
            problems.push(
                obj.path("method"),
                format!("unsupported method {raw:?} (GET, POST, PUT, PATCH, DELETE)"),
            );
            DEFAULT_METHOD
        }),
    };
    let (headers, secret_headers) = match obj.take("headers") {
        None => Default::default(),
        Some(Value::Object(map)) => read_headers(map, &obj.path("headers"), problems),
        Some(other) => {
            problems.push(
                obj.path("headers"),
                format!("expected an object, found {}", json_kind(&other)),
            );
            Default::default()
        }
    };
    let body = obj.take("body");
    let response_mode = match obj.string("responseMode", problems).as_deref() {
        None | Some("callback") => ResponseMode::Callback,
        Some("sync") => ResponseMode::Sync,
        Some(other) => {
            problems.push(
                obj.path("responseMode"),
                format!("expected \"callback\" or \"sync\", found {other:?}"),
            );
            ResponseMode::Callback
        }
    };
    let filter = obj.filter(problems);
    let url_at = obj.path("url");
    obj.reject_unknown(problems);
    if !enabled {
        return Declared::disabled(name);
    }
    let Some(url) = url else {
        problems.push(url_at, "required when enabled");
        return Declared::broken(name);
    };
    if let Err(reason) = check_url(&url) {
        problems.push(url_at, reason);
    }
    Declared::enabled(SourceSpec {
        name,
        required,
        filter,
        kind: SourceKind::Api(ApiCall {
            url,
            method,
            headers,
            secret_headers,
            body,
            response_mode,
        }),
    })
}

/// Reads `apiCall.headers`: each value a string (a template) or `{"secret": "name"}` (a
/// configured secret, by name). Names must be HTTP tokens, not set twice (they are compared
/// without case), and none the service or the connection owns (`Host`, `Content-Length`,
/// hop-by-hop headers: [`forbidden_header`]). Returns the templates and the secret
/// references.
fn read_headers(
    map: serde_json::Map<String, Value>,
    at: &str,
    problems: &mut Problems,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (mut headers, mut secrets) = (BTreeMap::new(), BTreeMap::new());
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in map {
        let at = child(at, &name);
        if let Some(problem) = header_name_problem(&name).or_else(|| forbidden_header(&name)) {
            problems.push(&at, problem);
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            problems.push(
                &at,
                "set twice (header names are compared without case)".to_owned(),
            );
            continue;
        }
        match value {
            Value::String(s) => {
                headers.insert(name, s);
            }
            Value::Object(reference) => match secret_reference(&reference) {
                Ok(secret) => {
                    secrets.insert(name, secret);
                }
                Err(problem) => problems.push(&at, problem),
            },
            other => problems.push(
                &at,
                format!(
                    "expected a string or {{\"secret\": NAME}}, found {}",
                    json_kind(&other)
                ),
            ),
        }
    }
    (headers, secrets)
}

/// The secret name of a header value `{"secret": "name"}`, or what is wrong with it.
fn secret_reference(reference: &serde_json::Map<String, Value>) -> Result<String, String> {
    let shape = "expected {\"secret\": NAME} (the name of a secret in the service's [secrets])";
    if reference.len() != 1 {
        return Err(shape.to_owned());
    }
    match reference.get("secret") {
        Some(Value::String(name)) => match secret_name_problem(name) {
            Some(problem) => Err(problem),
            None => Ok(name.clone()),
        },
        Some(other) => Err(format!(
            "secret: expected a string, found {}",
            json_kind(other)
        )),
        None => Err(shape.to_owned()),
    }
}

/// Checks an absolute http(s) URL; `{{placeholders}}` stand for path or query text.
fn check_url(raw: &str) -> Result<(), String> {
    let mut probe = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            return Err(format!("unclosed placeholder in {raw:?}"));
        };
        probe.push_str(&rest[..start]);
        probe.push('x');
        rest = &rest[start + len + 2..];
    }
    probe.push_str(rest);
    let url = url::Url::parse(&probe).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, found {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

/// Checks a Kafka topic name the way Kafka does.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("must not be empty".into());
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(format!("is longer than {MAX_TOPIC_LEN} characters"));
    }
    if topic == "." || topic == ".." {
        return Err("cannot be \".\" or \"..\"".into());
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "{topic:?} may contain only ascii letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Parses `kafkaEvent`, or a `data.sources` entry of type `kafka` (`typed` = it has a `type`).
fn parse_kafka_like(
    value: Value,
    at: &str,
    name: SourceName,
    typed: bool,
    problems: &mut Problems,
) -> Declared {
    let Some(mut obj) = Obj::new(&value, at, problems) else {
        return Declared::disabled(name);
    };
    if typed {
        obj.take("type");
    }
    let enabled = obj.bool("enabled", DEFAULT_ENABLED, problems);
    let required = obj.bool("required", DEFAULT_REQUIRED, problems);
    let topic = obj.string("topic", problems);
    let correlation_id_field =
        obj.field_path("correlationIdField", DEFAULT_CORRELATION_ID_FIELD, problems);
    let execution_id_field =
        obj.field_path("executionIdField", DEFAULT_EXECUTION_ID_FIELD, problems);
    let filter = obj.filter(problems);
    let topic_at = obj.path("topic");
    obj.reject_unknown(problems);
    if !enabled {
        return Declared::disabled(name);
    }
    let Some(topic) = topic else {
        problems.push(topic_at, "required when enabled");
        return Declared::broken(name);
    };
    if let Err(reason) = check_topic(&topic) {
        problems.push(topic_at, reason);
    }
    Declared::enabled(SourceSpec {
        name,
        required,
        filter,
        kind: SourceKind::Kafka(KafkaSource {
            topic,
            correlation_id_field,
            execution_id_field,
        }),
    })
}

/// Parses a `data.sources` entry of type `callback`.
fn parse_callback(value: Value, at: &str, name: SourceName, problems: &mut Problems) -> Declared {
    let Some(mut obj) = Obj::new(&value, at, problems) else {
        return Declared::disabled(name);
    };
    obj.take("type");
    let enabled = obj.bool("enabled", DEFAULT_ENABLED, problems);
    let required = obj.bool("required", DEFAULT_REQUIRED, problems);
    let filter = obj.filter(problems);
    obj.reject_unknown(problems);
    if !enabled {
        return Declared::disabled(name);
    }
    Declared::enabled(SourceSpec {
        name,
        required,
        filter,
        kind: SourceKind::Callback,
    })
}

/// Parses `data.sources`: more named Kafka and callback sources.
fn parse_extra_sources(value: Value, declared: &mut Vec<Declared>, problems: &mut Problems) {
    let Value::Object(map) = value else {
        problems.push(
            "data.sources",
            format!("expected an object, found {}", json_kind(&value)),
        );
        return;
    };
    // `apiCall` and `kafkaEvent` count too.
    let room = MAX_SOURCES.saturating_sub(declared.len());
    if map.len() > room {
        problems.push(
            "data.sources",
            format!(
                "declares {} sources, over the limit of {MAX_SOURCES} sources per wait",
                map.len() + declared.len()
            ),
        );
        return;
    }
    for (key, spec) in map {
        let at = child("data.sources", &key);
        let name = match SourceName::parse(key.as_str()) {
            Ok(name) => name,
            Err(e) => {
                problems.push(&at, format!("invalid {e}"));
                continue;
            }
        };
        if name.as_str() == SourceName::API || name.as_str() == SourceName::KAFKA {
            problems.push(
                &at,
                format!("\"{name}\" is reserved for data.apiCall / data.kafkaEvent"),
            );
            continue;
        }
        let kind = spec.get("type").cloned();
        let source = match kind.as_ref().and_then(Value::as_str) {
            Some("kafka") => parse_kafka_like(spec, &at, name, true, problems),
            Some("callback") => parse_callback(spec, &at, name, problems),
            Some(other) => {
                problems.push(
                    child(&at, "type"),
                    format!("expected \"kafka\" or \"callback\", found {other:?}"),
                );
                continue;
            }
            None => {
                problems.push(child(&at, "type"), "required (\"kafka\" or \"callback\")");
                continue;
            }
        };
        declared.push(source);
    }
}

/// Parses `data.timeout`, whole seconds between 1 and [`MAX_TIMEOUT`].
fn parse_timeout(value: Value, problems: &mut Problems) -> Duration {
    let max = MAX_TIMEOUT.as_secs();
    match value.as_u64() {
        Some(0) => problems.push("data.timeout", "must be at least 1 second"),
        Some(secs) if secs > max => problems.push(
            "data.timeout",
            format!("must be at most {max} seconds (one year)"),
        ),
        Some(secs) => return Duration::from_secs(secs),
        None => problems.push(
            "data.timeout",
            format!("expected a whole number of seconds, found {value}"),
        ),
    }
    DEFAULT_TIMEOUT
}
