//! The metrics the deployment files may name: the list Rendezvous exports, and the check that
//! the alert rules and the dashboard use only those metrics, labels and label values (and that
//! the dashboard shows each).

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::{json_strings, read, yaml, yaml_strings};

/// A metric's labels, each with the values it takes (empty: any value, such as a topic name).
type Labels = &'static [(&'static str, &'static [&'static str])];

/// A metric the admin listener's `/metrics` serves.
struct Metric {
    name: &'static str,
    /// Served as `<name>_bucket` (with `le`), `<name>_sum` and `<name>_count`.
    histogram: bool,
    labels: Labels,
}

const fn metric(name: &'static str, labels: Labels) -> Metric {
    Metric {
        name,
        histogram: false,
        labels,
    }
}

const fn histogram(name: &'static str, labels: Labels) -> Metric {
    Metric {
        name,
        histogram: true,
        labels,
    }
}

const DECISION_OUTCOMES: &[&str] = &["completed", "timed_out", "cancelled", "failed"];
const API_CALL_OUTCOMES: &[&str] = &["success", "retry", "failed"];

/// Every metric Rendezvous exports: the contract the alert rules
/// (`deploy/prometheus/alerts.yaml`) and the dashboard (`deploy/grafana/rendezvous.json`) are
/// built on, and the one place the deployment files' checks read it from. The app's own tests
/// check that a running instance exports each of these with plausible values; change both
/// together.
const METRICS: &[Metric] = &[
    // Open waits are counted by what they wait for (waiting_for_events, _api, _kafka).
    metric(
        "rendezvous_waits",
        &[(
            "status",
            &[
                "waiting_for_events",
                "waiting_for_api",
                "waiting_for_kafka",
                "completed",
                "timed_out",
                "cancelled",
                "failed",
            ],
        )],
    ),
    metric(
        "rendezvous_registrations_total",
        &[("outcome", &["created", "idempotent", "refused"])],
    ),
    metric(
        "rendezvous_deliveries_total",
        &[
            ("source", &["api", "event", "kafka"]),
            (
                "outcome",
                &[
                    "applied",
                    "duplicate",
                    "late",
                    "buffered",
                    "ignored",
                    "quarantined",
                    "refused",
                ],
            ),
        ],
    ),
    metric(
        "rendezvous_decisions_total",
        &[("outcome", DECISION_OUTCOMES)],
    ),
    histogram(
        "rendezvous_decision_duration_seconds",
        &[("outcome", DECISION_OUTCOMES)],
    ),
    histogram("rendezvous_resume_send_delay_seconds", &[]),
    histogram("rendezvous_resume_ack_delay_seconds", &[]),
    metric("rendezvous_resume_outbox_depth", &[]),
    metric("rendezvous_resume_oldest_unacked_age_seconds", &[]),
    metric("rendezvous_sweeper_lag_seconds", &[]),
    metric("rendezvous_early_events_pending", &[]),
    metric("rendezvous_quarantined_events", &[]),
    metric(
        "rendezvous_kafka_consumer_lag",
        &[("topic", &[]), ("partition", &[])],
    ),
    metric(
        "rendezvous_api_calls_total",
        &[("outcome", API_CALL_OUTCOMES)],
    ),
    histogram(
        "rendezvous_api_call_duration_seconds",
        &[("outcome", API_CALL_OUTCOMES)],
    ),
    metric(
        "rendezvous_db_pool_connections",
        &[("pool", &["main", "resumes"]), ("state", &["idle", "busy"])],
    ),
    histogram("rendezvous_group_commit_batch_size", &[("statement", &[])]),
    metric("rendezvous_up", &[]),
    metric("rendezvous_ready", &[]),
    metric(
        "rendezvous_build_info",
        &[("version", &[]), ("revision", &[])],
    ),
];

/// Labels Prometheus adds to every series from its target (static configs and the Prometheus
/// Operator's ServiceMonitor), usable on any metric.
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "container",
    "endpoint",
];

/// A metric name in a PromQL expression (or any text), with the label matchers right after it.
#[derive(Debug, PartialEq, Eq)]
struct Selector {
    name: String,
    matchers: Vec<Matcher>,
}

/// A label matcher: `(label, operator, value)`, as in `outcome=~"failed|retry"`.
type Matcher = (String, String, String);

/// A character of a metric name. (Recording rules' names may hold `:` too, and a name right
/// after one, as in `job:rendezvous_x:rate5m`, is part of such a name; a `:` after a name ends it,
/// as in a description's "rendezvous_up: ...".)
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `rendezvous_…` name in `text` with its matchers (`{label="value", …}`); `Err` names a
/// selector whose matchers do not parse.
fn selectors(text: &str) -> Result<Vec<Selector>, String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("rendezvous_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c| !is_name_char(c)).unwrap_or(tail.len());
        let name = &tail[..end];
        rest = &tail[end..];
        if before.is_some_and(|c| is_name_char(c) || c == ':') {
            continue;
        }
        let mut matchers = Vec::new();
        let after = rest.trim_start();
        if let Some(body) = after.strip_prefix('{') {
            let (parsed, remaining) =
                matchers_of(body).ok_or_else(|| format!("{name}: unreadable label matchers"))?;
            matchers = parsed;
            rest = remaining;
        }
        found.push(Selector {
            name: name.to_owned(),
            matchers,
        });
    }
    Ok(found)
}

/// Reads `label op "value", …}`; answers the matchers and the text after the `}`.
fn matchers_of(mut body: &str) -> Option<(Vec<Matcher>, &str)> {
    let mut matchers = Vec::new();
    loop {
        body = body.trim_start();
        if let Some(rest) = body.strip_prefix('}') {
            return Some((matchers, rest));
        }
        let end = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        let label = &body[..end];
        body = body[end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| body.starts_with(op))?;
        body = body[op.len()..].trim_start();
        let quote = body
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\'' | '`'))?;
        let mut value = String::new();
        let mut chars = body[1..].char_indices();
        let close = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                c if c == quote => break i,
                c => value.push(c),
            }
        };
        body = body[1 + close + 1..].trim_start();
        if label.is_empty() {
            return None;
        }
        matchers.push((label.to_owned(), op.to_owned(), value));
        body = body.strip_prefix(',').unwrap_or(body);
    }
}

/// The metric a name refers to (a histogram through its `_bucket`, `_sum` or `_count` series),
/// and whether it is the `_bucket` series.
fn resolve(name: &str) -> Option<(&'static Metric, bool)> {
    if let Some(m) = METRICS.iter().find(|m| m.name == name) {
        return Some((m, false));
    }
    ["_bucket", "_sum", "_count"]
        .into_iter()
        .find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            let m = METRICS.iter().find(|m| m.histogram && m.name == base)?;
            Some((m, suffix == "_bucket"))
        })
}

/// What is wrong with the metrics `text` names: unknown metrics, labels a metric does not have,
/// label values it never takes (values with `$`, template variables, are not checked).
fn metric_problems(text: &str) -> Vec<String> {
    let selectors = match selectors(text) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for Selector { name, matchers } in selectors {
        let Some((metric, bucket)) = resolve(&name) else {
            problems.push(format!("unknown metric {name}"));
            continue;
        };
        for (label, op, value) in matchers {
            if TARGET_LABELS.contains(&label.as_str()) || (bucket && label == "le") {
                continue;
            }
            let Some((_, values)) = metric.labels.iter().find(|(l, _)| *l == label) else {
                problems.push(format!("{name} has no label {label}"));
                continue;
            };
            if values.is_empty() || value.contains('$') {
                continue;
            }
            let written: Vec<&str> = if op.contains('~') {
                value
                    .split('|')
                    .filter(|v| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    .collect()
            } else {
                vec![value.as_str()]
            };
            for v in written {
                if !values.contains(&v) {
                    problems.push(format!("{name}: {label} is never \"{v}\""));
                }
            }
        }
    }
    problems
}

/// The metrics (by their listed name) that `text` names.
fn metrics_named(text: &str) -> BTreeSet<&'static str> {
    selectors(text)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| resolve(&s.name))
        .map(|(m, _)| m.name)
        .collect()
}

fn alerts_text() -> Vec<String> {
    let mut strings = Vec::new();
    yaml_strings(&yaml("deploy/prometheus/alerts.yaml"), &mut strings);
    strings
}

fn dashboard_text() -> Vec<String> {
    let path = "deploy/grafana/rendezvous.json";
    let doc: Json = serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut strings = Vec::new();
    json_strings(&doc, &mut strings);
    strings
}

#[test]
fn alerts_and_dashboard_name_only_exported_metrics() {
    for (file, strings) in [
        ("deploy/prometheus/alerts.yaml", alerts_text()),
        ("deploy/grafana/rendezvous.json", dashboard_text()),
    ] {
        let problems: BTreeSet<String> = strings.iter().flat_map(|s| metric_problems(s)).collect();
        assert!(
            problems.is_empty(),
            "{file} names metrics Rendezvous does not export (the list: METRICS in \
             xtask/src/manifests/metrics.rs):\n{}",
            problems.into_iter().collect::<Vec<_>>().join("\n")
        );
        let named: BTreeSet<&str> = strings.iter().flat_map(|s| metrics_named(s)).collect();
        assert!(named.len() > 5, "{file} names only {named:?}");
    }
}

#[test]
fn the_dashboard_shows_every_metric() {
    let named: BTreeSet<&str> = dashboard_text()
        .iter()
        .flat_map(|s| metrics_named(s))
        .collect();
    let missing: Vec<&str> = METRICS
        .iter()
        .map(|m| m.name)
        .filter(|n| !named.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/grafana/rendezvous.json has no panel for {missing:?}"
    );
}

#[test]
fn every_alert_is_documented_with_a_runbook() {
    let doc = yaml("deploy/prometheus/alerts.yaml");
    let mut problems = Vec::new();
    let mut alerts = 0;
    for group in doc["groups"].as_vec().into_iter().flatten() {
        for rule in group["rules"].as_vec().into_iter().flatten() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            if rule["expr"].as_str().is_none() {
                problems.push(format!("{alert}: no expr"));
            }
            for annotation in ["summary", "description", "runbook"] {
                if rule["annotations"][annotation].as_str().is_none() {
                    problems.push(format!("{alert}: no {annotation} annotation"));
                }
            }
            if !rule["annotations"]["runbook"]
                .as_str()
                .is_some_and(|r| r.contains("`rendezvous "))
            {
                problems.push(format!(
                    "{alert}: the runbook names no `rendezvous` command"
                ));
            }
        }
    }
    assert!(alerts >= 8, "only {alerts} alerts");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checks find what a stale alert rule or dashboard gets wrong.
#[test]
fn the_metric_checks_catch_stale_names() {
    assert_eq!(
        selectors(
            r#"sum by (le) (rate(rendezvous_api_call_duration_seconds_bucket{outcome=~"failed|retry", job="$job"}[5m]))"#
        ),
        Ok(vec![Selector {
            name: "rendezvous_api_call_duration_seconds_bucket".into(),
            matchers: vec![
                ("outcome".into(), "=~".into(), "failed|retry".into()),
                ("job".into(), "=".into(), "$job".into()),
            ],
        }])
    );
    assert!(
        metric_problems("x_rendezvous_up, job:rendezvous_thing:rate5m, rendezvous_up: 1")
            .is_empty()
    );
    assert_eq!(
        metric_problems(
            r#"rendezvous_waits{state="open"} + rendezvous_waits{status="done"} + rendezvous_wait_count
               + rendezvous_up_bucket + rendezvous_api_calls_total{outcome=~"failed|.*"}
               + rendezvous_resume_ack_delay_seconds_bucket{le="1"} + rendezvous_ready{instance="a"}"#
        ),
        [
            "rendezvous_waits has no label state",
            "rendezvous_waits: status is never \"done\"",
            "unknown metric rendezvous_wait_count",
            "unknown metric rendezvous_up_bucket",
        ]
    );
    assert_eq!(
        metrics_named("rendezvous_decision_duration_seconds_count / rendezvous_up"),
        BTreeSet::from(["rendezvous_decision_duration_seconds", "rendezvous_up"])
    );
}
