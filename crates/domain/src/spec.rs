//! The node config (`type: "wait_events"`) parsed and validated into a [`WaitSpec`].
//!
//! The seed's format is primary: `data.apiCall`, `data.kafkaEvent`, `data.aggregationStrategy`,
//! `data.timeout`. Extensions (documented in `docs/node-config.md`): `data.sources` for more
//! named sources, object forms of `aggregationStrategy` (`custom`, `k_of_n`, `expression`),
//! `data.onTimeout`, `apiCall.responseMode`, `apiCall.headers`, and a `filter` on any source.
//! Every problem is reported with its JSON path, all of them at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::condition::Condition;
use crate::filter::Filter;
use crate::ids::SourceName;
use crate::path::FieldPath;
use crate::problems::{ConfigErrors, Problems, child, json_kind};

/// The only node type this service handles.
pub const NODE_TYPE: &str = "wait_events";
/// Timeout when `data.timeout` is absent (seed example 3).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest accepted timeout: one year. Waits never last forever (invisible waits are a
/// known pain of other systems).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(366 * 24 * 3600);
/// Field holding the correlation id in a Kafka event when `correlationIdField` is absent.
pub const DEFAULT_CORRELATION_ID_FIELD: &str = "correlation_id";
/// Field holding the execution id in a Kafka event when `executionIdField` is absent.
pub const DEFAULT_EXECUTION_ID_FIELD: &str = "execution_id";
/// Whether a source is required when `required` is absent.
pub const DEFAULT_REQUIRED: bool = true;
/// Whether a present source object is enabled when `enabled` is absent.
pub const DEFAULT_ENABLED: bool = true;
/// HTTP method of the API call when `method` is absent.
pub const DEFAULT_METHOD: HttpMethod = HttpMethod::Post;
/// Strategy when `aggregationStrategy` is absent.
pub const DEFAULT_STRATEGY: &str = "all";
/// The longest Kafka topic name Kafka itself accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// A validated wait: its enabled sources and the condition that completes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitSpec {
    /// Enabled sources in declaration order (`api`, `kafka`, then `data.sources`).
    pub sources: Vec<SourceSpec>,
    /// Sources present in the config but disabled.
    pub disabled: Vec<SourceName>,
    /// The strategy as configured.
    pub strategy: Strategy,
    /// The strategy compiled over the enabled sources.
    pub condition: Condition,
    /// How long the wait may stay open.
    pub timeout: Duration,
    /// What happens when the timeout fires first.
    pub on_timeout: TimeoutPolicy,
}

/// One enabled event source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Its name (`api`, `kafka`, or a `data.sources` key).
    pub name: SourceName,
    /// Whether `required_only` waits for it.
    pub required: bool,
    /// What an event must match to count (empty: everything).
    pub filter: Filter,
    /// Where its events come from.
    pub kind: SourceKind,
}

/// Where a source's events come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The response to the outbound API call.
    Api(ApiCall),
    /// A Kafka topic.
    Kafka(KafkaSource),
    /// Events delivered by a callback gateway under the source's name.
    Callback,
}

/// The outbound HTTP call of a wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCall {
    /// The URL; may contain `{{variable}}` placeholders.
    pub url: String,
    /// The HTTP method.
    pub method: HttpMethod,
    /// Extra request headers; values may contain placeholders.
    pub headers: BTreeMap<String, String>,
    /// The JSON body, if any; strings may contain placeholders.
    pub body: Option<Value>,
    /// How the API's answer becomes the `api` event.
    pub response_mode: ResponseMode,
}

/// HTTP methods the API call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

/// How the API's answer becomes the `api` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// A 2xx only acknowledges; the event arrives through `DeliverApiResponse` (the seed's way).
    Callback,
    /// The HTTP response itself is the event.
    Sync,
}

/// A Kafka source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaSource {
    /// The topic.
    pub topic: String,
    /// Where the correlation id is in the event (a header of that name is accepted too).
    pub correlation_id_field: FieldPath,
    /// Where the execution id is in the event (a header of that name is accepted too).
    pub execution_id_field: FieldPath,
}

/// The aggregation strategy as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every enabled source.
    All,
    /// The first enabled source.
    Any,
    /// Every enabled source marked `required`.
    RequiredOnly,
    /// Exactly the named sources.
    Custom(Vec<SourceName>),
    /// At least `k` of the named sources (all enabled sources when none are named).
    KOfN {
        /// How many.
        k: usize,
        /// Of which sources.
        sources: Vec<SourceName>,
    },
    /// A boolean expression over source names.
    Expression(String),
}

/// What a timeout does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPolicy {
    /// The wait fails: the engine gets outcome `timed_out`.
    Fail,
    /// The engine resumes with what arrived and the list of missing sources.
    ResumeWithPartial,
}

impl HttpMethod {
    fn parse(raw: &str) -> Option<Self> {
        Some(match raw.to_ascii_uppercase().as_str() {
            "GET" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// The method as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

impl WaitSpec {
    /// Parses a node config from JSON text.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigErrors> {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => Self::from_node_config(&value),
            Err(e) => {
                let mut problems = Problems::default();
                problems.push("$", format!("not valid JSON: {e}"));
                problems.finish(unreachable_spec())
            }
        }
    }

    /// Parses and validates a node config document, reporting every problem.
    pub fn from_node_config(doc: &Value) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::default();
        let Value::Object(root) = doc else {
            problems.push("$", format!("expected an object, found {}", json_kind(doc)));
            return problems.finish(unreachable_spec());
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
            return problems.finish(unreachable_spec());
        };
        let Some(mut data) = Obj::new(data, "data", &mut problems) else {
            return problems.finish(unreachable_spec());
        };
        let mut declared = Vec::new(); // (name, enabled, source if enabled)
        if let Some(api) = data.take("apiCall") {
            declared.push(parse_api(api, "data.apiCall", &mut problems));
        }
        if let Some(kafka) = data.take("kafkaEvent") {
            let (enabled, source) = parse_kafka_like(
                kafka,
                "data.kafkaEvent",
                SourceName::kafka(),
                false,
                &mut problems,
            );
            declared.push((SourceName::kafka(), enabled, source));
        }
        if let Some(extra) = data.take("sources") {
            parse_extra_sources(extra, &mut declared, &mut problems);
        }
        let strategy = match data.take("aggregationStrategy") {
            Some(value) => parse_strategy(value, &mut data, &mut problems),
            None => Some(Strategy::All),
        };
        if data.map.contains_key("customSources") && !matches!(strategy, Some(Strategy::Custom(_)))
        {
            data.take("customSources");
            problems.push(
                "data.customSources",
                "only allowed with aggregationStrategy \"custom\"",
            );
        }
        let timeout = match data.take("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(value) => parse_timeout(value, &mut problems),
        };
        let on_timeout = match data.take("onTimeout") {
            None => TimeoutPolicy::Fail,
            Some(Value::String(s)) if s == "fail" => TimeoutPolicy::Fail,
            Some(Value::String(s)) if s == "resume_with_partial" => {
                TimeoutPolicy::ResumeWithPartial
            }
            Some(other) => {
                problems.push(
                    "data.onTimeout",
                    format!("expected \"fail\" or \"resume_with_partial\", found {other}"),
                );
                TimeoutPolicy::Fail
            }
        };
        data.reject_unknown(&mut problems);

        let sources: Vec<SourceSpec> = declared.iter().filter_map(|(_, _, s)| s.clone()).collect();
        let disabled: Vec<SourceName> = declared
            .iter()
            .filter(|(_, enabled, _)| !enabled)
            .map(|(name, _, _)| name.clone())
            .collect();
        let condition = strategy
            .as_ref()
            .and_then(|s| compile(s, &sources, &disabled, &mut problems));
        match (strategy, condition) {
            (Some(strategy), Some(condition)) if problems.is_empty() => Ok(Self {
                sources,
                disabled,
                strategy,
                condition,
                timeout,
                on_timeout,
            }),
            _ => problems.finish(unreachable_spec()),
        }
    }

    /// The enabled source with this name.
    pub fn source(&self, name: &SourceName) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| &s.name == name)
    }

    /// The outbound API call, when the `api` source is enabled.
    pub fn api_call(&self) -> Option<&ApiCall> {
        self.sources.iter().find_map(|s| match &s.kind {
            SourceKind::Api(call) => Some(call),
            _ => None,
        })
    }

    /// The Kafka topics this wait listens to, without repeats.
    pub fn topics(&self) -> BTreeSet<&str> {
        self.sources
            .iter()
            .filter_map(|s| match &s.kind {
                SourceKind::Kafka(k) => Some(k.topic.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Placeholder for `Problems::finish` on paths that always carry a problem.
fn unreachable_spec() -> WaitSpec {
    WaitSpec {
        sources: Vec::new(),
        disabled: Vec::new(),
        strategy: Strategy::All,
        condition: Condition::All(Vec::new()),
        timeout: DEFAULT_TIMEOUT,
        on_timeout: TimeoutPolicy::Fail,
    }
}

/// An object being read: fields are taken one by one; what is left over is unknown.
struct Obj<'a> {
    map: Map<String, Value>,
    at: String,
    known: Vec<&'a str>,
}

impl<'a> Obj<'a> {
    fn new(value: &Value, at: &str, problems: &mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self {
                map: map.clone(),
                at: at.to_owned(),
                known: Vec::new(),
            }),
            other => {
                problems.push(
                    at,
                    format!("expected an object, found {}", json_kind(other)),
                );
                None
            }
        }
    }

    fn path(&self, key: &str) -> String {
        child(&self.at, key)
    }

    fn take(&mut self, key: &'a str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key)
    }

    fn bool(&mut self, key: &'a str, default: bool, problems: &mut Problems) -> bool {
        match self.take(key) {
            None => default,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                problems.push(
                    self.path(key),
                    format!("expected a boolean, found {}", json_kind(&other)),
                );
                default
            }
        }
    }

    fn string(&mut self, key: &'a str, problems: &mut Problems) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s),
            other => {
                problems.push(
                    self.path(key),
                    format!("expected a string, found {}", json_kind(&other)),
                );
                None
            }
        }
    }

    fn field_path(&mut self, key: &'a str, default: &str, problems: &mut Problems) -> FieldPath {
        let raw = self
            .string(key, problems)
            .unwrap_or_else(|| default.to_owned());
        FieldPath::parse(raw).unwrap_or_else(|reason| {
            problems.push(self.path(key), reason);
            FieldPath::parse(default).expect("default field paths are valid")
        })
    }

    fn filter(&mut self, problems: &mut Problems) -> Filter {
        match self.take("filter") {
            None | Some(Value::Null) => Filter::default(),
            Some(value) => Filter::parse(&value, &self.path("filter"), problems),
        }
    }

    fn reject_unknown(self, problems: &mut Problems) {
        for key in self.map.keys() {
            let mut known = self.known.clone();
            known.sort_unstable();
            known.dedup();
            problems.push(
                child(&self.at, key),
                format!("unknown field (known: {})", known.join(", ")),
            );
        }
    }
}

type Declared = (SourceName, bool, Option<SourceSpec>);

fn parse_api(value: Value, at: &str, problems: &mut Problems) -> Declared {
    let name = SourceName::api();
    let Some(mut obj) = Obj::new(&value, at, problems) else {
        return (name, false, None);
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
    let mut headers = BTreeMap::new();
    match obj.take("headers") {
        None => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => {
                        headers.insert(k, s);
                    }
                    other => problems.push(
                        child(&obj.path("headers"), &k),
                        format!("expected a string, found {}", json_kind(&other)),
                    ),
                }
            }
        }
        Some(other) => problems.push(
            obj.path("headers"),
            format!("expected an object, found {}", json_kind(&other)),
        ),
    }
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
        return (name, false, None);
    }
    let Some(url) = url else {
        problems.push(url_at, "required when enabled");
        return (name, true, None);
    };
    if let Err(reason) = check_url(&url) {
        problems.push(url_at, reason);
    }
    let source = SourceSpec {
        name: name.clone(),
        required,
        filter,
        kind: SourceKind::Api(ApiCall {
            url,
            method,
            headers,
            body,
            response_mode,
        }),
    };
    (name, true, Some(source))
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
) -> (bool, Option<SourceSpec>) {
    let Some(mut obj) = Obj::new(&value, at, problems) else {
        return (false, None);
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
        return (false, None);
    }
    let Some(topic) = topic else {
        problems.push(topic_at, "required when enabled");
        return (true, None);
    };
    if let Err(reason) = check_topic(&topic) {
        problems.push(topic_at, reason);
    }
    let kind = SourceKind::Kafka(KafkaSource {
        topic,
        correlation_id_field,
        execution_id_field,
    });
    (
        true,
        Some(SourceSpec {
            name,
            required,
            filter,
            kind,
        }),
    )
}

fn parse_callback(
    value: Value,
    at: &str,
    name: SourceName,
    problems: &mut Problems,
) -> (bool, Option<SourceSpec>) {
    let Some(mut obj) = Obj::new(&value, at, problems) else {
        return (false, None);
    };
    obj.take("type");
    let enabled = obj.bool("enabled", DEFAULT_ENABLED, problems);
    let required = obj.bool("required", DEFAULT_REQUIRED, problems);
    let filter = obj.filter(problems);
    obj.reject_unknown(problems);
    let source = enabled.then_some(SourceSpec {
        name,
        required,
        filter,
        kind: SourceKind::Callback,
    });
    (enabled, source)
}

fn parse_extra_sources(value: Value, declared: &mut Vec<Declared>, problems: &mut Problems) {
    let Value::Object(map) = value else {
        problems.push(
            "data.sources",
            format!("expected an object, found {}", json_kind(&value)),
        );
        return;
    };
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
        let (enabled, source) = match kind.as_ref().and_then(Value::as_str) {
            Some("kafka") => parse_kafka_like(spec, &at, name.clone(), true, problems),
            Some("callback") => parse_callback(spec, &at, name.clone(), problems),
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
        declared.push((name, enabled, source));
    }
}

fn parse_source_list(value: &Value, at: &str, problems: &mut Problems) -> Option<Vec<SourceName>> {
    let Value::Array(items) = value else {
        problems.push(
            at,
            format!(
                "expected an array of source names, found {}",
                json_kind(value)
            ),
        );
        return None;
    };
    let mut names = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let here = format!("{at}[{i}]");
        match item.as_str().map(SourceName::parse) {
            Some(Ok(name)) if names.contains(&name) => {
                problems.push(here, format!("\"{name}\" is listed twice"));
                ok = false;
            }
            Some(Ok(name)) => names.push(name),
            Some(Err(e)) => {
                problems.push(here, format!("invalid {e}"));
                ok = false;
            }
            None => {
                problems.push(
                    here,
                    format!("expected a source name, found {}", json_kind(item)),
                );
                ok = false;
            }
        }
    }
    ok.then_some(names)
}

const STRATEGIES: &str = "\"all\", \"any\", \"required_only\", \"custom\", {\"type\": \"k_of_n\"}, {\"type\": \"expression\"}";

fn parse_strategy(value: Value, data: &mut Obj<'_>, problems: &mut Problems) -> Option<Strategy> {
    const AT: &str = "data.aggregationStrategy";
    match value {
        Value::String(s) => match s.as_str() {
            "all" => Some(Strategy::All),
            "any" => Some(Strategy::Any),
            "required_only" => Some(Strategy::RequiredOnly),
            "custom" => match data.take("customSources") {
                Some(list) => {
                    parse_source_list(&list, "data.customSources", problems).map(Strategy::Custom)
                }
                None => {
                    problems.push(
                        "data.customSources",
                        "required when aggregationStrategy is \"custom\"",
                    );
                    None
                }
            },
            other => {
                problems.push(
                    AT,
                    format!("unknown strategy {other:?} (known: {STRATEGIES})"),
                );
                None
            }
        },
        Value::Object(_) => {
            let mut obj = Obj::new(&value, AT, problems)?;
            let kind = obj.string("type", problems);
            let strategy = match kind.as_deref() {
                Some("all") => Some(Strategy::All),
                Some("any") => Some(Strategy::Any),
                Some("required_only") => Some(Strategy::RequiredOnly),
                Some("custom") => match obj.take("sources") {
                    Some(list) => parse_source_list(&list, &obj.path("sources"), problems)
                        .map(Strategy::Custom),
                    None => {
                        problems.push(obj.path("sources"), "required for \"custom\"");
                        None
                    }
                },
                Some("k_of_n") => {
                    let k = match obj.take("k") {
                        Some(Value::Number(n)) if n.as_u64().is_some() => {
                            n.as_u64().and_then(|k| usize::try_from(k).ok())
                        }
                        Some(other) => {
                            problems.push(
                                obj.path("k"),
                                format!("expected a positive integer, found {other}"),
                            );
                            None
                        }
                        None => {
                            problems.push(obj.path("k"), "required for \"k_of_n\"");
                            None
                        }
                    };
                    let sources = match obj.take("sources") {
                        Some(list) => parse_source_list(&list, &obj.path("sources"), problems),
                        None => Some(Vec::new()),
                    };
                    k.zip(sources)
                        .map(|(k, sources)| Strategy::KOfN { k, sources })
                }
                Some("expression") => match obj.string("expression", problems) {
                    Some(text) => Some(Strategy::Expression(text)),
                    None => {
                        problems.push(obj.path("expression"), "required for \"expression\"");
                        None
                    }
                },
                Some(other) => {
                    problems.push(
                        obj.path("type"),
                        format!("unknown strategy {other:?} (known: {STRATEGIES})"),
                    );
                    None
                }
                None => {
                    problems.push(obj.path("type"), "required");
                    None
                }
            };
            obj.reject_unknown(problems);
            strategy
        }
        other => {
            problems.push(
                AT,
                format!(
                    "expected a string or an object, found {}",
                    json_kind(&other)
                ),
            );
            None
        }
    }
}

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

/// Compiles the strategy over the enabled sources and checks it can be met.
fn compile(
    strategy: &Strategy,
    sources: &[SourceSpec],
    disabled: &[SourceName],
    problems: &mut Problems,
) -> Option<Condition> {
    const AT: &str = "data.aggregationStrategy";
    let enabled: Vec<SourceName> = sources.iter().map(|s| s.name.clone()).collect();
    let check_names = |names: &[SourceName], at: &str, problems: &mut Problems| {
        let mut ok = true;
        for name in names {
            if enabled.contains(name) {
                continue;
            }
            ok = false;
            if disabled.contains(name) {
                problems.push(
                    at,
                    format!("source \"{name}\" is disabled, so the condition could never be met"),
                );
            } else {
                let known: Vec<&str> = enabled.iter().map(SourceName::as_str).collect();
                problems.push(
                    at,
                    format!(
                        "unknown source \"{name}\" (enabled sources: [{}])",
                        known.join(", ")
                    ),
                );
            }
        }
        ok
    };
    let leaves = |names: &[SourceName]| {
        names
            .iter()
            .cloned()
            .map(Condition::Source)
            .collect::<Vec<_>>()
    };
    let condition = match strategy {
        // No enabled source at all: the design allows "no waiting"; the wait completes at once.
        Strategy::All | Strategy::Any | Strategy::RequiredOnly if enabled.is_empty() => {
            Condition::All(Vec::new())
        }
        Strategy::All => Condition::All(leaves(&enabled)),
        Strategy::Any => Condition::Any(leaves(&enabled)),
        Strategy::RequiredOnly => {
            let required: Vec<SourceName> = sources
                .iter()
                .filter(|s| s.required)
                .map(|s| s.name.clone())
                .collect();
            if required.is_empty() {
                problems.push(AT, "required_only, but no enabled source is required: it would wait for nothing (mark a source required or use \"any\")");
                return None;
            }
            Condition::All(leaves(&required))
        }
        Strategy::Custom(names) => {
            if names.is_empty() {
                problems.push("data.customSources", "must name at least one source");
                return None;
            }
            if !check_names(names, "data.customSources", problems) {
                return None;
            }
            Condition::All(leaves(names))
        }
        Strategy::KOfN { k, sources: names } => {
            let names = if names.is_empty() {
                enabled.clone()
            } else {
                names.clone()
            };
            if !check_names(&names, AT, problems) {
                return None;
            }
            if *k == 0 || *k > names.len() {
                problems.push(
                    format!("{AT}.k"),
                    format!(
                        "must be between 1 and {} (the number of sources)",
                        names.len()
                    ),
                );
                return None;
            }
            Condition::AtLeast {
                k: *k,
                of: leaves(&names),
            }
        }
        Strategy::Expression(text) => {
            let at = format!("{AT}.expression");
            let condition = match Condition::parse_expression(text) {
                Ok(c) => c,
                Err(reason) => {
                    problems.push(at, reason);
                    return None;
                }
            };
            if !check_names(&condition.sources(), &at, problems) {
                return None;
            }
            condition
        }
    };
    let everything: BTreeSet<SourceName> = enabled.iter().cloned().collect();
    if !condition.holds(&everything) {
        problems.push(
            AT,
            format!("{condition} can never be met by the enabled sources"),
        );
        return None;
    }
    Some(condition)
}
