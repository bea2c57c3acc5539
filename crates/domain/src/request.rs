//! The outbound API call of a wait, rendered: `{{variable}}` placeholders filled from the
//! registration's input variables (with minijinja, undefined variables are errors; bounded in
//! time and output, see [`template`]), header values checked, and the wait's `correlation_id`
//! and `execution_id` injected into the JSON body and the headers. Headers that reference a
//! secret carry only its name (`secret_headers`); the HTTP adapter reads the value when it
//! makes the call, so no credential is stored. `redact.rs` says what of a call may be logged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{CorrelationId, ExecutionId, WaitId};
use crate::problems::{ConfigErrors, Problems, child};
use crate::spec::{ApiCall, HttpMethod, ResponseMode};

mod redact;
mod template;

pub use redact::{MAX_BODY_SNIPPET_BYTES, redact_url, sanitize_text};
use template::Renderer;
pub use template::{FILTERS, MAX_RENDERED_REQUEST_BYTES, TEMPLATE_FUEL};

/// Header carrying the correlation id on the API call.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// Header carrying the execution id on the API call.
pub const EXECUTION_HEADER: &str = "x-execution-id";
/// Header carrying the idempotency key (the wait id: stable across retries).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// An API call ready to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiRequest {
    /// The method.
    pub method: HttpMethod,
    /// The URL, placeholders filled.
    pub url: String,
    /// Header names (lowercase) and values.
    pub headers: BTreeMap<String, String>,
    /// Headers whose value is a secret, read when the call is made: header name (lowercase) →
    /// secret name. Only names are stored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_headers: BTreeMap<String, String>,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// Whether the response is the `api` event (`sync`) or only an acknowledgement.
    pub response_mode: ResponseMode,
}

/// The templates of a call rendered from the registration's variables, before the wait's ids
/// are injected: the heavy part, bounded by the limits of [`template`] (fuel, output size)
/// and meant to run off the request threads. [`RenderedCall::for_wait`] then makes the request.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedCall {
    method: HttpMethod,
    url: String,
    headers: BTreeMap<String, String>,
    secret_headers: BTreeMap<String, String>,
    /// `None`: no body is sent; `Some(None)`: the body is `{}` plus the ids.
    body: Option<Option<Value>>,
    response_mode: ResponseMode,
}

/// Renders the string leaves of a JSON body. `depth` guards the recursion (the body was
/// read with the JSON depth limit, so this is a second fence).
fn render_json(
    renderer: &mut Renderer<'_>,
    value: &Value,
    at: &str,
    depth: usize,
    problems: &mut Problems,
) -> Value {
    if depth > crate::limits::MAX_JSON_DEPTH {
        problems.push(
            at,
            format!(
                "nested deeper than {} levels",
                crate::limits::MAX_JSON_DEPTH
            ),
        );
        return Value::Null;
    }
    match value {
        Value::String(s) => Value::String(render_into(renderer, s, at, problems)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_json(renderer, v, &format!("{at}[{i}]"), depth + 1, problems))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        render_json(renderer, v, &child(at, k), depth + 1, problems),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Renders one string, recording a failure at `at` (the text is kept, so that the other
/// templates are still checked).
fn render_into(
    renderer: &mut Renderer<'_>,
    text: &str,
    at: &str,
    problems: &mut Problems,
) -> String {
    renderer.render(text).unwrap_or_else(|reason| {
        problems.push(at, reason);
        String::new()
    })
}

/// Why `name` is not a valid HTTP header name (a token: visible ASCII without separators).
pub fn header_name_problem(name: &str) -> Option<String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Some(format!(
            "{name:?} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
        ));
    }
    None
}

/// Headers a node config may not set, because the HTTP client or the connection owns them:
/// a `Host` of its own would aim the request elsewhere than the checked URL, and the framing
/// and hop-by-hop headers could split or smuggle requests.
pub const FORBIDDEN_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

/// Why a node config may not set the header `name` ([`FORBIDDEN_HEADERS`] and every
/// `Proxy-*` header, compared without case), or `None` when it may.
pub fn forbidden_header(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    (FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-")).then(|| {
        format!(
            "the {name} header may not be set by a node config (Host, Content-Length, \
             Transfer-Encoding, Connection, Keep-Alive, Proxy-*, TE, Trailer and Upgrade belong \
             to the HTTP client)"
        )
    })
}

/// The longest secret name.
pub const MAX_SECRET_NAME_LEN: usize = 64;

/// Why `name` is not a valid secret name: 1 to [`MAX_SECRET_NAME_LEN`] lowercase ASCII letters,
/// digits, `_` and `-`, starting with a letter (so it is also a configuration key:
/// `RENDEZVOUS__SECRETS__PARTNER_TOKEN__FILE`).
pub fn secret_name_problem(name: &str) -> Option<String> {
    let ok = (1..=MAX_SECRET_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    (!ok).then(|| {
        format!(
            "{name:?} is not a valid secret name (1 to {MAX_SECRET_NAME_LEN} lowercase letters, \
             digits, _ and -, starting with a letter)"
        )
    })
}

/// Why `value` is not a valid HTTP header value: control characters (CR, LF, NUL, DEL, ...)
/// other than a horizontal tab are refused, so no variable can split or forge a header.
pub fn header_value_problem(value: &str) -> Option<String> {
    value
        .bytes()
        .position(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
        .map(|at| {
            format!(
                "the rendered value is not a valid HTTP header value: control character {:#04x} at byte {at} (CR, LF, NUL and other control characters are refused)",
                value.as_bytes()[at]
            )
        })
}

impl ApiCall {
    /// Renders the call for one wait. Errors name the JSON path of the template that failed
    /// (`data.apiCall.body.data: template: undefined value`).
    pub fn render(
        &self,
        vars: &BTreeMap<String, String>,
        wait_id: WaitId,
        correlation_id: &CorrelationId,
        execution_id: &ExecutionId,
    ) -> Result<ApiRequest, ConfigErrors> {
        Ok(self
            .render_templates(vars)?
            .for_wait(wait_id, correlation_id, execution_id))
    }

    /// Renders the call's templates (URL, header values, the body's strings) from `vars`,
    /// within the limits: [`TEMPLATE_FUEL`] per template, [`MAX_RENDERED_REQUEST_BYTES`] for
    /// the whole request. Errors name the JSON path of the template and the limit
    /// (`data.apiCall.body.x: template: output is over the limit of 1048576 bytes`); a header
    /// value with a control character is an error naming the header.
    pub fn render_templates(
        &self,
        vars: &BTreeMap<String, String>,
    ) -> Result<RenderedCall, ConfigErrors> {
        let mut renderer = Renderer::new(vars);
        let mut problems = Problems::default();
        let url = render_into(&mut renderer, &self.url, "data.apiCall.url", &mut problems);
        let mut headers = BTreeMap::new();
        for (name, value) in &self.headers {
            let at = child("data.apiCall.headers", name);
            if let Some(problem) = header_name_problem(name).or_else(|| forbidden_header(name)) {
                problems.push(&at, problem);
                continue;
            }
            let value = render_into(&mut renderer, value, &at, &mut problems);
            if let Some(problem) = header_value_problem(&value) {
                problems.push(&at, problem);
            }
            headers.insert(name.to_ascii_lowercase(), value);
        }
        let sends_body =
            !matches!(self.method, HttpMethod::Get | HttpMethod::Delete) || self.body.is_some();
        let body = sends_body.then(|| {
            self.body
                .as_ref()
                .map(|b| render_json(&mut renderer, b, "data.apiCall.body", 0, &mut problems))
        });
        let secret_headers: BTreeMap<String, String> = self
            .secret_headers
            .iter()
            .map(|(name, secret)| (name.to_ascii_lowercase(), secret.clone()))
            .collect();
        let size = url.len()
            + headers
                .iter()
                .chain(&secret_headers)
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + body.as_ref().and_then(Option::as_ref).map_or(0, json_size);
        if size > MAX_RENDERED_REQUEST_BYTES {
            problems.push("data.apiCall", template::over_limit());
        }
        problems.finish(RenderedCall {
            method: self.method,
            url,
            headers,
            secret_headers,
            body,
            response_mode: self.response_mode,
        })
    }
}

/// The serialized size of a JSON value.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl RenderedCall {
    /// The request for one wait: the rendered call with the wait's `correlation_id` and
    /// `execution_id` injected into the headers and the JSON body, and its id as the
    /// idempotency key.
    pub fn for_wait(
        &self,
        wait_id: WaitId,
        correlation_id: &CorrelationId,
        execution_id: &ExecutionId,
    ) -> ApiRequest {
        let mut headers = self.headers.clone();
        let mut secret_headers = self.secret_headers.clone();
        for (name, value) in [
            (CORRELATION_HEADER, correlation_id.to_string()),
            (EXECUTION_HEADER, execution_id.to_string()),
            (IDEMPOTENCY_HEADER, wait_id.to_string()),
        ] {
            secret_headers.remove(name);
            headers.insert(name.into(), value);
        }
        let body = self.body.as_ref().map(|body| {
            let mut body = body
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default()));
            if let Value::Object(map) = &mut body {
                map.insert(
                    "correlation_id".into(),
                    Value::String(correlation_id.to_string()),
                );
                map.insert(
                    "execution_id".into(),
                    Value::String(execution_id.to_string()),
                );
            }
            body
        });
        ApiRequest {
            method: self.method,
            url: self.url.clone(),
            headers,
            secret_headers,
            body,
            response_mode: self.response_mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::WaitSpec;
    use serde_json::json;

    fn call(config: Value) -> ApiCall {
        WaitSpec::from_node_config(&json!({"type": "wait_events", "data": {"apiCall": config}}))
            .unwrap()
            .api_call()
            .unwrap()
            .clone()
    }

    fn ids() -> (WaitId, CorrelationId, ExecutionId) {
        (
            WaitId::from_uuid(uuid::Uuid::from_u128(5)),
            CorrelationId::parse("corr").unwrap(),
            ExecutionId::parse("exec").unwrap(),
        )
    }

    #[test]
    fn fills_placeholders_and_injects_ids() {
        let c = call(json!({
            "url": "https://x.example/orders/{{order_id}}?q={{ q }}",
            "headers": {"X-Tenant": "{{tenant}}"},
            "body": {"action": "process", "data": "{{input_data}}", "n": 3, "list": ["{{q}}"]}
        }));
        let vars: BTreeMap<String, String> = [
            ("order_id", "o-1"),
            ("q", "a b"),
            ("tenant", "t"),
            ("input_data", "payload"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (w, c_id, e_id) = ids();
        let r = c.render(&vars, w, &c_id, &e_id).unwrap();
        assert_eq!(r.url, "https://x.example/orders/o-1?q=a b");
        assert_eq!(r.headers["x-tenant"], "t");
        assert_eq!(r.headers[CORRELATION_HEADER], "corr");
        assert_eq!(r.headers[EXECUTION_HEADER], "exec");
        assert_eq!(r.headers[IDEMPOTENCY_HEADER], w.to_string());
        assert_eq!(
            r.body,
            Some(
                json!({"action": "process", "data": "payload", "n": 3, "list": ["a b"], "correlation_id": "corr", "execution_id": "exec"})
            )
        );
    }

    #[test]
    fn undefined_variables_are_errors_with_their_path() {
        let c = call(
            json!({"url": "https://x.example/{{missing}}", "body": {"data": "{{input_data}}"}}),
        );
        let (w, c_id, e_id) = ids();
        let err = c.render(&BTreeMap::new(), w, &c_id, &e_id).unwrap_err();
        assert!(err.has("data.apiCall.url"), "{err}");
        assert!(err.has("data.apiCall.body.data"), "{err}");
    }

    #[test]
    fn control_characters_in_header_values_are_refused_naming_the_header() {
        let c = call(json!({
            "url": "https://x.example/a",
            "headers": {"X-Tenant": "{{tenant}}", "X-Ok": "a\tb {{ok}}"}
        }));
        for bad in ["t\r\nX-Injected: 1", "t\n", "t\0", "t\u{7f}", "t\u{1b}"] {
            let vars: BTreeMap<String, String> = [("tenant", bad), ("ok", "fine")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let err = c.render_templates(&vars).unwrap_err();
            assert!(
                err.has("data.apiCall.headers.\"X-Tenant\""),
                "{bad:?}: {err}"
            );
            assert!(!err.has("data.apiCall.headers.\"X-Ok\""), "{bad:?}: {err}");
            assert!(
                err.to_string().contains("not a valid HTTP header value"),
                "{err}"
            );
        }
    }

    #[test]
    fn over_the_limit_names_the_template_and_the_limit() {
        let c = call(json!({
            "url": "https://x.example/a",
            "body": {"x": "{{ big }}{{ big }}{{ big }}"}
        }));
        let big = "y".repeat(MAX_RENDERED_REQUEST_BYTES / 2);
        let vars: BTreeMap<String, String> = [("big".to_string(), big)].into();
        let err = c.render_templates(&vars).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.apiCall.body.x: template: output is over the limit of 1048576 bytes"
        );
    }

    #[test]
    fn headers_the_client_owns_are_refused_naming_them() {
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Keep-Alive",
            "Proxy-Authorization",
            "proxy-connection",
            "TE",
            "Trailer",
            "Upgrade",
        ] {
            let config = json!({"type": "wait_events", "data": {"apiCall": {
                "url": "https://x.example/a", "headers": {name: "v", "X-Ok": "fine"}}}});
            let err = WaitSpec::from_node_config(&config).unwrap_err();
            assert!(
                err.has(&child("data.apiCall.headers", name)),
                "{name}: {err}"
            );
            assert!(
                err.to_string().contains(&format!(
                    "the {name} header may not be set by a node config"
                )),
                "{err}"
            );
            assert_eq!(err.to_string().matches("header may not be set").count(), 1);
        }
        for fine in [
            "X-Host",
            "Authorization",
            "Content-Type",
            "Proxyish",
            "Trailers",
        ] {
            let config = json!({"type": "wait_events", "data": {"apiCall": {
                "url": "https://x.example/a", "headers": {fine: "v"}}}});
            WaitSpec::from_node_config(&config).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
    }

    #[test]
    fn a_header_is_set_once_whatever_its_case() {
        let config = json!({"type": "wait_events", "data": {"apiCall": {
            "url": "https://x.example/a", "headers": {"X-A": "1", "x-a": "2"}}}});
        let err = WaitSpec::from_node_config(&config).unwrap_err();
        assert!(err.to_string().contains("set twice"), "{err}");
    }

    #[test]
    fn secret_headers_keep_only_the_secret_name() {
        let c = call(json!({
            "url": "https://x.example/a",
            "headers": {"Authorization": {"secret": "partner_token"}, "X-Plain": "p"}
        }));
        assert_eq!(
            c.secret_headers,
            BTreeMap::from([("Authorization".to_owned(), "partner_token".to_owned())])
        );
        assert!(!c.headers.contains_key("Authorization"));
        let (w, c_id, e_id) = ids();
        let r = c.render(&BTreeMap::new(), w, &c_id, &e_id).unwrap();
        assert_eq!(r.secret_headers["authorization"], "partner_token");
        assert!(!r.headers.contains_key("authorization"));
        // What is stored: the reference, in its own field.
        let stored = serde_json::to_value(&r).unwrap();
        assert_eq!(
            stored["secret_headers"],
            json!({"authorization": "partner_token"})
        );
        let back: ApiRequest = serde_json::from_value(stored).unwrap();
        assert_eq!(back, r);
        // Calls stored before secret headers existed read back with none.
        let mut old = serde_json::to_value(&r).unwrap();
        old.as_object_mut().unwrap().remove("secret_headers");
        let old: ApiRequest = serde_json::from_value(old).unwrap();
        assert!(old.secret_headers.is_empty());
        let plain = call(json!({"url": "https://x.example/a"}));
        let plain = plain.render(&BTreeMap::new(), w, &c_id, &e_id).unwrap();
        assert!(
            serde_json::to_value(&plain)
                .unwrap()
                .get("secret_headers")
                .is_none(),
            "a call without secrets is stored as before"
        );
    }

    #[test]
    fn bad_secret_references_are_refused_naming_the_header() {
        for (value, expected) in [
            (json!({"secret": "Partner"}), "not a valid secret name"),
            (json!({"secret": ""}), "not a valid secret name"),
            (json!({"secret": "a b"}), "not a valid secret name"),
            (
                json!({"secret": 1}),
                "secret: expected a string, found a number",
            ),
            (
                json!({"secret": "ok", "x": 1}),
                "expected {\"secret\": NAME}",
            ),
            (json!({"name": "ok"}), "expected {\"secret\": NAME}"),
            (
                json!(["x"]),
                "expected a string or {\"secret\": NAME}, found an array",
            ),
        ] {
            let config = json!({"type": "wait_events", "data": {"apiCall": {
                "url": "https://x.example/a", "headers": {"X-Token": value}}}});
            let err = WaitSpec::from_node_config(&config).unwrap_err();
            assert!(err.has("data.apiCall.headers.\"X-Token\""), "{err}");
            assert!(err.to_string().contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn get_without_body_sends_none() {
        let c = call(json!({"url": "https://x.example/a", "method": "GET"}));
        let (w, c_id, e_id) = ids();
        assert_eq!(
            c.render(&BTreeMap::new(), w, &c_id, &e_id).unwrap().body,
            None
        );
    }
}
