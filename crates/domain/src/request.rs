//! The outbound API call of a wait, rendered: `{{variable}}` placeholders filled from the
//! registration's input variables (with minijinja, undefined variables are errors), and the
//! wait's `correlation_id` and `execution_id` injected into the JSON body and the headers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{CorrelationId, ExecutionId, WaitId};
use crate::problems::{ConfigErrors, Problems, child};
use crate::spec::{ApiCall, HttpMethod, ResponseMode};

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
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// Whether the response is the `api` event (`sync`) or only an acknowledgement.
    pub response_mode: ResponseMode,
}

/// Fills `{{...}}` in one string. `at` names it in errors.
fn render(
    env: &minijinja::Environment<'_>,
    text: &str,
    vars: &BTreeMap<String, String>,
    at: &str,
    problems: &mut Problems,
) -> String {
    if !text.contains("{{") && !text.contains("{%") {
        return text.to_owned();
    }
    env.render_str(text, vars).unwrap_or_else(|e| {
        problems.push(
            at,
            format!("template: {}", e.detail().unwrap_or(&e.to_string())),
        );
        text.to_owned()
    })
}

fn render_json(
    env: &minijinja::Environment<'_>,
    value: &Value,
    vars: &BTreeMap<String, String>,
    at: &str,
    problems: &mut Problems,
) -> Value {
    match value {
        Value::String(s) => Value::String(render(env, s, vars, at, problems)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_json(env, v, vars, &format!("{at}[{i}]"), problems))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        render_json(env, v, vars, &child(at, k), problems),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
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
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let mut problems = Problems::default();
        let url = render(&env, &self.url, vars, "data.apiCall.url", &mut problems);
        let mut headers: BTreeMap<String, String> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let at = child("data.apiCall.headers", k);
                (
                    k.to_ascii_lowercase(),
                    render(&env, v, vars, &at, &mut problems),
                )
            })
            .collect();
        headers.insert(CORRELATION_HEADER.into(), correlation_id.to_string());
        headers.insert(EXECUTION_HEADER.into(), execution_id.to_string());
        headers.insert(IDEMPOTENCY_HEADER.into(), wait_id.to_string());
        let sends_body =
            !matches!(self.method, HttpMethod::Get | HttpMethod::Delete) || self.body.is_some();
        let body = sends_body.then(|| {
            let mut body = self.body.as_ref().map_or_else(
                || Value::Object(Default::default()),
                |b| render_json(&env, b, vars, "data.apiCall.body", &mut problems),
            );
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
        problems.finish(ApiRequest {
            method: self.method,
            url,
            headers,
            body,
            response_mode: self.response_mode,
        })
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
    fn get_without_body_sends_none() {
        let c = call(json!({"url": "https://x.example/a", "method": "GET"}));
        let (w, c_id, e_id) = ids();
        assert_eq!(
            c.render(&BTreeMap::new(), w, &c_id, &e_id).unwrap().body,
            None
        );
    }
}
