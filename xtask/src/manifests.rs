//! The deployment files checked against the code: every YAML, JSON and TOML file under `deploy/`
//! parses; the alert rules and the dashboard name only metrics Rendezvous exports (and the
//! dashboard shows each); every port named is Rendezvous' or a companion service's; every
//! setting the Dockerfile, the compose file and the Helm chart set exists in
//! `deploy/rendezvous.toml`; the chart's templates use only values `values.yaml` defines.

mod metrics;
mod settings;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use yaml_rust2::{Yaml, YamlLoader};

use crate::workspace_root;

const CHART: &str = "deploy/helm/rendezvous";

fn read(path: &str) -> String {
    let path = workspace_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn parse_yaml(text: &str) -> Result<Vec<Yaml>, String> {
    YamlLoader::load_from_str(text).map_err(|e| e.to_string())
}

/// The one YAML document of a file.
fn yaml(path: &str) -> Yaml {
    let mut docs = parse_yaml(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: expected one YAML document");
    docs.remove(0)
}

fn toml_table(path: &str) -> toml::Table {
    read(path).parse().unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Files under `dir` (relative to the workspace root), recursively, as relative paths.
fn files_under(dir: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let root = workspace_root();
    let mut out = Vec::new();
    walk(&root, &root.join(dir), &mut out);
    out
}

fn extension(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(_, ext)| ext)
}

/// The chart's templates (Go templates: checked as text, never parsed as YAML).
fn is_chart_template(path: &str) -> bool {
    path.starts_with(&format!("{CHART}/templates/"))
}

/// The files that deploy Rendezvous (the root `Dockerfile`, everything under `deploy/` but the
/// settings reference and the READMEs), each with its text.
fn manifests() -> Vec<(String, String)> {
    let mut paths = vec!["Dockerfile".to_owned()];
    paths.extend(
        files_under("deploy")
            .into_iter()
            .filter(|p| p != "deploy/rendezvous.toml" && extension(p) != "md"),
    );
    paths
        .into_iter()
        .map(|p| {
            let text = read(&p);
            (p, text)
        })
        .collect()
}

/// Every string in a YAML document, keys included.
fn yaml_strings(doc: &Yaml, out: &mut Vec<String>) {
    match doc {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Array(items) => items.iter().for_each(|i| yaml_strings(i, out)),
        Yaml::Hash(map) => map.iter().for_each(|(k, v)| {
            yaml_strings(k, out);
            yaml_strings(v, out);
        }),
        _ => {}
    }
}

/// Every string in a JSON document, keys included.
fn json_strings(doc: &Json, out: &mut Vec<String>) {
    match doc {
        Json::String(s) => out.push(s.clone()),
        Json::Array(items) => items.iter().for_each(|i| json_strings(i, out)),
        Json::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            json_strings(v, out);
        }),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Why a deployment file does not parse, if it does not: YAML (all documents), JSON and TOML.
fn parse_problem(path: &str, text: &str) -> Option<String> {
    let problem = match extension(path) {
        "yaml" | "yml" => match parse_yaml(text) {
            Ok(docs) if docs.is_empty() => Some("no YAML document".to_owned()),
            Ok(_) => None,
            Err(e) => Some(e),
        },
        "json" => serde_json::from_str::<Json>(text)
            .err()
            .map(|e| e.to_string()),
        "toml" => text.parse::<toml::Table>().err().map(|e| e.to_string()),
        _ => None,
    };
    problem.map(|p| format!("{path}: {p}"))
}

#[test]
fn every_manifest_parses() {
    let files: Vec<String> = files_under("deploy")
        .into_iter()
        .filter(|p| !is_chart_template(p))
        .filter(|p| matches!(extension(p), "yaml" | "yml" | "json" | "toml"))
        .collect();
    for expected in [
        "deploy/compose.yaml",
        "deploy/prometheus/alerts.yaml",
        "deploy/grafana/rendezvous.json",
        "deploy/helm/rendezvous/Chart.yaml",
        "deploy/helm/rendezvous/values.yaml",
    ] {
        assert!(files.iter().any(|f| f == expected), "{expected} is missing");
    }
    let problems: Vec<String> = files
        .iter()
        .filter_map(|p| parse_problem(p, &read(p)))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The chart's version facts: a v2 chart named rendezvous whose appVersion is the workspace's
/// version (the image tag it deploys by default).
#[test]
fn the_chart_deploys_the_workspace_version() {
    let chart = yaml(&format!("{CHART}/Chart.yaml"));
    let cargo = toml_table("Cargo.toml");
    let version = cargo["workspace"]["package"]["version"].as_str();
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    assert_eq!(chart["name"].as_str(), Some("rendezvous"));
    assert!(
        chart["version"].as_str().is_some(),
        "Chart.yaml has no version"
    );
    assert_eq!(
        chart["appVersion"].as_str(),
        version,
        "Chart.yaml's appVersion is not the workspace version"
    );
}

// ---------------------------------------------------------------------------------------------
// Helm values

/// Every `.Values.a.b` path a template uses (`$.Values` too), as `["a", "b"]`.
fn values_paths(template: &str) -> Vec<Vec<String>> {
    template
        .match_indices(".Values.")
        .map(|(at, m)| {
            let rest = &template[at + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(rest.len());
            rest[..end]
                .split('.')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// Whether `values` (the parsed `values.yaml`) defines `path`.
fn defines(values: &Yaml, path: &[String]) -> bool {
    let mut node = values;
    for part in path {
        match node
            .as_hash()
            .and_then(|h| h.get(&Yaml::String(part.clone())))
        {
            Some(inner) => node = inner,
            None => return false,
        }
    }
    true
}

fn chart_templates() -> Vec<(String, String)> {
    files_under(&format!("{CHART}/templates"))
        .into_iter()
        .map(|p| {
            let text = read(&p);
            (p, text)
        })
        .collect()
}

#[test]
fn chart_templates_use_only_defined_values() {
    let values = yaml(&format!("{CHART}/values.yaml"));
    let templates = chart_templates();
    assert!(
        templates
            .iter()
            .any(|(p, _)| p.ends_with("deployment.yaml")),
        "no templates found"
    );
    let mut problems = Vec::new();
    let mut used_top = BTreeSet::new();
    for (path, text) in &templates {
        for value in values_paths(text) {
            if let Some(top) = value.first() {
                used_top.insert(top.clone());
            }
            if !defines(&values, &value) {
                problems.push(format!("{path}: .Values.{}", value.join(".")));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "values the templates use that values.yaml does not define:\n{}",
        problems.join("\n")
    );
    // And the other way: every value does something, and the chart's README lists it.
    let readme = read(&format!("{CHART}/README.md"));
    let keys: Vec<String> = values
        .as_hash()
        .expect("values.yaml is a map")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    for key in keys {
        if !used_top.contains(&key) {
            problems.push(format!("values.yaml: {key} is used by no template"));
        }
        if !readme.contains(&format!("`{key}`")) && !readme.contains(&format!("`{key}.")) {
            problems.push(format!(
                "values.yaml: {key} is not in the chart's README.md"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The compose file

/// The compose file's local paths (build contexts and bind mounts, relative to `deploy/`) that
/// do not exist.
fn missing_compose_paths(compose: &Yaml, base: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    for (name, service) in compose["services"].as_hash().into_iter().flatten() {
        let name = name.as_str().unwrap_or("?");
        let build = &service["build"];
        if let Some(context) = build["context"].as_str() {
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            if !base.join(context).join(dockerfile).is_file() {
                missing.push(format!("{name}: build {context}/{dockerfile}"));
            }
        }
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let source = volume.as_str().and_then(|v| v.split(':').next());
            if let Some(source) = source.filter(|s| s.starts_with("./") || s.starts_with("../"))
                && !base.join(source).exists()
            {
                missing.push(format!("{name}: volume {source}"));
            }
        }
    }
    missing
}

#[test]
fn the_compose_file_mounts_files_that_exist() {
    let compose = yaml("deploy/compose.yaml");
    let services = compose["services"].as_hash().map_or(0, |s| s.len());
    assert!(services >= 6, "compose.yaml has {services} services");
    let missing = missing_compose_paths(&compose, &workspace_root().join("deploy"));
    assert!(
        missing.is_empty(),
        "deploy/compose.yaml names paths that do not exist: {missing:?}"
    );
}

/// The checks find what a stale manifest gets wrong (so none passes by finding nothing).
#[test]
fn the_checks_catch_stale_manifests() {
    assert!(parse_problem("a.yaml", "a: [1, 2").is_some());
    assert!(parse_problem("a.json", "{\"a\": }").is_some());
    assert!(parse_problem("a.toml", "[a\nb = 1").is_some());
    assert_eq!(parse_problem("a.yaml", "a: 1\n"), None);

    let values = parse_yaml("image:\n  tag: \"\"\nresources: {}\n")
        .unwrap()
        .remove(0);
    let used = values_paths(
        "{{ .Values.image.tag }} {{ $.Values.resources }} {{ .Values.image.digest | x }}",
    );
    assert_eq!(
        used.iter()
            .filter(|p| !defines(&values, p))
            .map(|p| p.join("."))
            .collect::<Vec<_>>(),
        ["image.digest"]
    );

    let compose = parse_yaml(
        "services:\n  a:\n    build: {context: .., dockerfile: Dockerfile}\n    volumes:\n      \
         - ./no-such-file.yaml:/etc/x:ro\n      - named:/data\n      - ./compose.yaml:/c\n",
    )
    .unwrap()
    .remove(0);
    assert_eq!(
        missing_compose_paths(&compose, &workspace_root().join("deploy")),
        ["a: volume ./no-such-file.yaml"]
    );
}
