//! Tidy tests: architecture rules checked mechanically (domain purity, file headers), and
//! (`docs.rs`) the documents that must not drift from the code.

mod docs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{codegen, workspace_root};

/// Crates that must never be in the domain's dependency tree: I/O, async runtimes, transports,
/// databases, brokers.
const BANNED_IN_DOMAIN: &[&str] = &[
    "tokio",
    "tonic",
    "prost",
    "sea-orm",
    "sea-orm-migration",
    "sqlx",
    "sqlx-core",
    "rdkafka",
    "rdkafka-sys",
    "hyper",
    "mio",
    "reqwest",
    "async-std",
];

/// Banned crates reachable from `root` through normal and build dependencies, each with the
/// chain that pulls it in (`rendezvous-domain -> foo -> tokio`).
fn banned_in_closure(metadata: &Value, root: &str, banned: &[&str]) -> Vec<String> {
    let packages: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let nodes: BTreeMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|node| {
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|k| k["kind"].is_null() || k["kind"] == "build")
                })
                .filter_map(|dep| dep["pkg"].as_str())
                .collect();
            Some((node["id"].as_str()?, deps))
        })
        .collect();
    let Some(start) = packages
        .iter()
        .find(|(_, name)| **name == root)
        .map(|(id, _)| *id)
    else {
        return vec![format!("{root} is not in the metadata")];
    };
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![(start, vec![root])];
    while let Some((id, chain)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes.get(id).into_iter().flatten() {
            let name = packages.get(dep).copied().unwrap_or(dep);
            let mut chain = chain.clone();
            chain.push(name);
            if banned.contains(&name) {
                found.push(chain.join(" -> "));
            } else {
                stack.push((dep, chain));
            }
        }
    }
    found
}

#[test]
fn domain_has_no_io_in_its_dependency_tree() {
    let metadata = metadata();
    let banned = banned_in_closure(&metadata, "rendezvous-domain", BANNED_IN_DOMAIN);
    assert!(
        banned.is_empty(),
        "the domain must stay pure, but it depends on:\n{}",
        banned.join("\n")
    );
    // The check itself works: the gRPC adapter does pull in tonic and tokio.
    let adapter = banned_in_closure(&metadata, "rendezvous-grpc-api", &["tonic", "tokio"]);
    assert!(
        adapter.iter().any(|c| c.ends_with("-> tonic")),
        "{adapter:?}"
    );
}

#[test]
fn banned_dependencies_are_found_transitively() {
    let metadata = serde_json::json!({
        "packages": [
            {"id": "d", "name": "rendezvous-domain"},
            {"id": "s", "name": "serde"},
            {"id": "x", "name": "sneaky"},
            {"id": "t", "name": "tokio"},
            {"id": "p", "name": "proptest"}
        ],
        "resolve": {"nodes": [
            {"id": "d", "deps": [
                {"pkg": "s", "dep_kinds": [{"kind": null}]},
                {"pkg": "x", "dep_kinds": [{"kind": null}]},
                {"pkg": "p", "dep_kinds": [{"kind": "dev"}]}
            ]},
            {"id": "x", "deps": [{"pkg": "t", "dep_kinds": [{"kind": null}]}]},
            {"id": "p", "deps": [{"pkg": "t", "dep_kinds": [{"kind": null}]}]},
            {"id": "s", "deps": []},
            {"id": "t", "deps": []}
        ]}
    });
    assert_eq!(
        banned_in_closure(&metadata, "rendezvous-domain", &["tokio"]),
        ["rendezvous-domain -> sneaky -> tokio"]
    );
    assert!(
        banned_in_closure(&metadata, "rendezvous-domain", &["proptest"]).is_empty(),
        "dev-dependencies are allowed"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_doc_line() {
    let root = workspace_root();
    let generated = root.join(codegen::OUT_DIR);
    let mut files = Vec::new();
    for dir in ["crates", "migrations", "tests", "xtask"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(&generated))
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .starts_with("//!")
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` line:\n{}",
        missing.join("\n")
    );
}

/// Runs `cargo metadata` for the workspace.
pub(crate) fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
