//! Documents that must not drift from the code: each test reads a source of truth (cargo
//! metadata, the migrations, xtask's task list, the deploy file) and the document that
//! describes it, and fails naming what the document is missing. Each check is a function over
//! text, tested on a stale document too, so a check that cannot fail is noticed.

use std::collections::BTreeSet;

use serde_json::Value;

use super::metadata;
use crate::workspace_root;

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The package ids of the workspace's members.
fn workspace_members(metadata: &Value) -> BTreeSet<&str> {
    metadata["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Workspace members as directories relative to the root (`crates/domain`, `xtask`).
fn member_dirs(metadata: &Value) -> Vec<String> {
    let root = workspace_root();
    let members = workspace_members(metadata);
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id)))
        .filter_map(|p| {
            let manifest = std::path::Path::new(p["manifest_path"].as_str()?);
            let dir = manifest.parent()?.strip_prefix(&root).ok()?;
            Some(dir.display().to_string())
        })
        .collect()
}

/// Members without a `` ### `dir` `` heading in the architecture document.
fn crates_without_heading(architecture: &str, dirs: &[String]) -> Vec<String> {
    dirs.iter()
        .filter(|dir| {
            !architecture
                .lines()
                .any(|l| l.starts_with(&format!("### `{dir}`")))
        })
        .cloned()
        .collect()
}

#[test]
fn every_workspace_crate_has_a_heading_in_architecture() {
    let dirs = member_dirs(&metadata());
    assert!(dirs.len() >= 10, "found only {dirs:?}");
    let missing = crates_without_heading(&read("ARCHITECTURE.md"), &dirs);
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md has no \"### `<dir>`\" heading for: {missing:?}"
    );
}

/// `ProcessedEvents` → `processed_events`, as SeaORM's `DeriveIden` names tables.
fn snake_case(ident: &str) -> String {
    let mut out = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The tables a migration's source creates (`Table::create() ... .table(Name::Table)`).
fn created_tables(migration: &str) -> Vec<String> {
    migration
        .split("Table::create()")
        .skip(1)
        .filter_map(|rest| {
            let after = rest.split_once(".table(")?.1;
            let ident = after.split_once("::Table")?.0.trim();
            Some(snake_case(ident))
        })
        .collect()
}

#[test]
fn every_table_is_named_in_architecture() {
    let dir = workspace_root().join("migrations/src");
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        tables.extend(created_tables(&std::fs::read_to_string(path).unwrap()));
    }
    assert!(tables.len() >= 7, "found only {tables:?}");
    let architecture = read("ARCHITECTURE.md");
    let missing: Vec<&String> = tables
        .iter()
        .filter(|t| !architecture.contains(&format!("`{t}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "tables created by migrations but not named in ARCHITECTURE.md: {missing:?}"
    );
}

/// The task names of xtask's usage text (lines `  name ...`).
fn tasks(usage: &str) -> Vec<&str> {
    usage
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// Tasks the text never shows as `cargo xtask <task>` (a whole word: `bench` is not shown by
/// `benchmark`).
fn tasks_not_shown<'a>(text: &str, tasks: &[&'a str]) -> Vec<&'a str> {
    tasks
        .iter()
        .copied()
        .filter(|task| {
            let shown = format!("cargo xtask {task}");
            !text.match_indices(&shown).any(|(at, _)| {
                text[at + shown.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_alphanumeric() && c != '-' && c != '_')
            })
        })
        .collect()
}

#[test]
fn every_xtask_task_is_in_the_readme() {
    let tasks = tasks(crate::USAGE);
    assert!(tasks.len() >= 6, "found only {tasks:?}");
    let missing = tasks_not_shown(&read("README.md"), &tasks);
    assert!(
        missing.is_empty(),
        "xtask tasks not shown in README.md: {missing:?}"
    );
}

/// A `**Dependency rule:** only `a` (and `b`) may depend on `x` (and `y`)` line.
#[derive(Debug, PartialEq)]
struct DependencyRule {
    allowed: Vec<String>,
    dependencies: Vec<String>,
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn dependency_rules(architecture: &str) -> Vec<DependencyRule> {
    architecture
        .lines()
        .filter_map(|l| l.trim().strip_prefix("**Dependency rule:** only "))
        .filter_map(|rule| {
            let (allowed, rest) = rule.split_once(" may depend on ")?;
            let dependencies = rest.split_once('.').map_or(rest, |(d, _)| d);
            Some(DependencyRule {
                allowed: backticked(allowed),
                dependencies: backticked(dependencies),
            })
        })
        .collect()
}

/// Crates outside the rules: the black-box test and harness crate and xtask play the outside
/// world (a Kafka producer, an HTTP server) and may use anything.
const EXEMPT: &[&str] = &["rendezvous-tests", "xtask"];

/// `crate -> dependency` pairs that break a rule (normal and build dependencies only;
/// dev-dependencies are test code).
fn broken_rules(metadata: &Value, rules: &[DependencyRule]) -> Vec<String> {
    let members = workspace_members(metadata);
    let mut broken = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (package["id"].as_str(), package["name"].as_str()) else {
            continue;
        };
        if !members.contains(id) || EXEMPT.contains(&name) {
            continue;
        }
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            if dep["kind"] == "dev" {
                continue;
            }
            let dep_name = dep["name"].as_str().unwrap_or_default();
            for rule in rules {
                if rule.dependencies.iter().any(|d| d == dep_name)
                    && !rule.allowed.iter().any(|a| a == name)
                {
                    broken.push(format!(
                        "{name} -> {dep_name} (only {:?} may)",
                        rule.allowed
                    ));
                }
            }
        }
    }
    broken
}

#[test]
fn dependency_rules_in_architecture_hold() {
    let rules = dependency_rules(&read("ARCHITECTURE.md"));
    assert!(rules.len() >= 4, "found only {rules:?}");
    let broken = broken_rules(&metadata(), &rules);
    assert!(
        broken.is_empty(),
        "dependencies that break a **Dependency rule:** of ARCHITECTURE.md:\n{}",
        broken.join("\n")
    );
}

/// Settings of a TOML file without a `#` comment directly above them (in the lines since the
/// previous setting, section or blank line).
fn undocumented_settings(toml: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let mut commented = false;
    let mut section = String::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('#') {
            commented = true;
        } else if line.is_empty() {
            commented = false;
        } else if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']').to_owned();
            commented = false;
        } else if let Some((key, _)) = line.split_once('=') {
            if !commented {
                let key = key.trim();
                missing.push(if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                });
            }
            commented = false;
        }
    }
    missing
}

#[test]
fn every_setting_in_the_deploy_file_is_documented() {
    let missing = undocumented_settings(&read("deploy/rendezvous.toml"));
    assert!(
        missing.is_empty(),
        "settings in deploy/rendezvous.toml without a comment above them: {missing:?}"
    );
}

/// Repository paths quoted in backticks (`crates/...`, `docs/...`) that do not exist.
fn missing_paths(doc: &str) -> Vec<String> {
    const ROOTS: &[&str] = &[
        "crates/",
        "migrations/",
        "tests/",
        "xtask/",
        "proto/",
        "docs/",
        "deploy/",
        ".ci/",
    ];
    let root = workspace_root();
    backticked(doc)
        .into_iter()
        .filter(|p| ROOTS.iter().any(|r| p.starts_with(r)))
        .filter(|p| !p.contains(['*', '<', ' ', '{']))
        .map(|p| p.split("::").next().unwrap_or(&p).to_owned())
        .filter(|p| !root.join(p).exists())
        .collect()
}

#[test]
fn every_path_named_in_the_docs_exists() {
    for doc in ["ARCHITECTURE.md", "README.md"] {
        let missing = missing_paths(&read(doc));
        assert!(
            missing.is_empty(),
            "{doc} names paths that do not exist: {missing:?}"
        );
    }
}

/// The checks find what a stale document lacks (so none of them passes by finding nothing).
#[test]
fn the_checks_catch_stale_documents() {
    let architecture = "### `crates/domain` (`rendezvous-domain`)\nTables: `waits`.\n\
        **Dependency rule:** only `rendezvous-kafka-ingress` may depend on `rdkafka`.\n";
    assert_eq!(
        crates_without_heading(architecture, &["crates/domain".into(), "xtask".into()]),
        ["xtask"]
    );
    assert_eq!(
        created_tables("Table::create()\n  .table(ProcessedEvents::Table)\n  .col(x)"),
        ["processed_events"]
    );
    assert_eq!(
        tasks(
            "usage: cargo xtask <task>\n\ntasks:\n  ci   what CI runs\n                      more\n  e2e [--waits N]\n"
        ),
        ["ci", "e2e"]
    );
    assert_eq!(
        tasks_not_shown(
            "run `cargo xtask benchmark` or cargo xtask ci.",
            &["bench", "ci"]
        ),
        ["bench"]
    );
    let rules = dependency_rules(architecture);
    assert_eq!(
        rules,
        [DependencyRule {
            allowed: vec!["rendezvous-kafka-ingress".into()],
            dependencies: vec!["rdkafka".into()],
        }]
    );
    let metadata = serde_json::json!({
        "workspace_members": ["a", "b", "t"],
        "packages": [
            {"id": "a", "name": "rendezvous-app", "dependencies": [{"name": "rdkafka", "kind": null}]},
            {"id": "b", "name": "rendezvous-kafka-ingress", "dependencies": [{"name": "rdkafka", "kind": null}]},
            {"id": "t", "name": "rendezvous-service", "dependencies": [{"name": "rdkafka", "kind": "dev"}]}
        ]
    });
    assert_eq!(
        broken_rules(&metadata, &rules),
        ["rendezvous-app -> rdkafka (only [\"rendezvous-kafka-ingress\"] may)"]
    );
    assert_eq!(
        undocumented_settings("# a\nx = 1\ny = 2\n\n[s]\n# z\nz = 3\nw = 4\n"),
        ["y", "s.w"]
    );
    assert_eq!(
        missing_paths("see `crates/no-such-crate/src/lib.rs` and `xtask/src/main.rs`"),
        ["crates/no-such-crate/src/lib.rs"]
    );
}
