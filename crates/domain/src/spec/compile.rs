//! The aggregation strategy: read from `data.aggregationStrategy` (a name, or an object for
//! `custom`, `k_of_n` and `expression`) and compiled over the enabled sources into one monotone
//! [`Condition`] that can be met.

use std::collections::BTreeSet;

use serde_json::Value;

use super::obj::Obj;
use super::{SourceSpec, Strategy};
use crate::condition::Condition;
use crate::ids::SourceName;
use crate::problems::{Problems, json_kind};

const STRATEGIES: &str = "\"all\", \"any\", \"required_only\", \"custom\", {\"type\": \"k_of_n\"}, {\"type\": \"expression\"}";

/// Takes `aggregationStrategy` (and `customSources`, which only `"custom"` may use) from `data`.
/// `None` when the strategy is invalid (reported); [`Strategy::All`] when it is absent.
pub(super) fn read_strategy(data: &mut Obj<'_>, problems: &mut Problems) -> Option<Strategy> {
    let strategy = match data.take("aggregationStrategy") {
        Some(value) => parse_strategy(value, data, problems),
        None => Some(Strategy::All),
    };
    if data.has("customSources") && !matches!(strategy, Some(Strategy::Custom(_))) {
        data.take("customSources");
        problems.push(
            "data.customSources",
            "only allowed with aggregationStrategy \"custom\"",
        );
    }
    strategy
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

/// Compiles the strategy over the enabled sources and checks it can be met.
pub(super) fn compile(
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
