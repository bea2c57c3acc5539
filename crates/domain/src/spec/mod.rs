//! The node config (`type: "wait_events"`) parsed and validated into a [`WaitSpec`].
//!
//! The seed's format is primary: `data.apiCall`, `data.kafkaEvent`, `data.aggregationStrategy`,
//! `data.timeout`. Extensions (documented in `docs/node-config.md`): `data.sources` for more
//! named sources, object forms of `aggregationStrategy` (`custom`, `k_of_n`, `expression`),
//! `data.onTimeout`, `apiCall.responseMode`, `apiCall.headers` (with secret references), and a
//! `filter` on any source.
//! Every problem is reported with its JSON path, all of them at once.
//!
//! This file holds the types and the entry points; `read.rs` is the validating reader of the
//! document and its sources (over `obj.rs`, a JSON object read field by field), `compile.rs`
//! reads the strategy and compiles it into a [`Condition`].

mod compile;
mod obj;
mod read;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::condition::Condition;
use crate::filter::Filter;
use crate::ids::SourceName;
use crate::limits::{MAX_JSON_DEPTH, parse_json};
use crate::path::FieldPath;
use crate::problems::{ConfigErrors, Problems};

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
    /// Headers whose value is a configured secret (`{"secret": "partner_token"}` in the node
    /// config): header name → secret name. Only the name is stored; the value is read from the
    /// service's `[secrets]` when the call is made.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_headers: BTreeMap<String, String>,
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
    /// The method named `raw`, in any case; `None` for methods the API call does not use.
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
    /// Parses a node config from JSON text: at most [`MAX_JSON_DEPTH`] levels deep, no key
    /// given twice in one object.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::default();
        let spec = match parse_json(text, MAX_JSON_DEPTH) {
            Ok(doc) => read::node_config(&doc, &mut problems),
            Err(e) => {
                problems.push("$", e.to_string());
                None
            }
        };
        problems.finish_read(spec)
    }

    /// Parses and validates a node config document, reporting every problem.
    pub fn from_node_config(doc: &Value) -> Result<Self, ConfigErrors> {
        let mut problems = Problems::default();
        let spec = read::node_config(doc, &mut problems);
        problems.finish_read(spec)
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
}
