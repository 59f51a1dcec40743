//! The workspace's crates depend on each other in one direction only: `raftkv-core` at the
//! bottom; `raftkv-storage` and `raftkv-proto` over it; `raftkv-net` and `raftkv-client`
//! over the protocol; `raftkv-server` (the command line) over the network crate; the
//! load tool over the protocol; the `raftkv` facade over them all. Read from `cargo
//! metadata`, so a new `[dependencies]` line that points the wrong way (storage reaching
//! for the network, the client for storage) fails here, before it becomes a knot.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// For each workspace crate, the workspace crates it may depend on (any kind: normal,
/// build or dev). A crate missing from this table fails the test: place it first.
const ALLOWED: &[(&str, &[&str])] = &[
    ("raftkv-core", &[]),
    ("raftkv-storage", &["raftkv-core"]),
    ("raftkv-proto", &["raftkv-core"]),
    ("raftkv-net", &["raftkv-core", "raftkv-proto"]),
    ("raftkv-client", &["raftkv-core", "raftkv-proto"]),
    ("raftkv-server", &["raftkv-net"]),
    ("raftkv-bench", &["raftkv-proto"]),
    (
        "raftkv",
        &[
            "raftkv-core",
            "raftkv-storage",
            "raftkv-proto",
            "raftkv-net",
            "raftkv-client",
            "raftkv-server",
        ],
    ),
];

/// Workspace crate -> the workspace crates it depends on, from `cargo metadata`.
fn workspace_edges() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("package name").to_owned();
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                // A crate's dev-dependency on itself only turns on its own features for
                // its tests and examples (the root's `testing`): no edge between crates.
                .filter(|d| !(d["name"].as_str() == Some(name.as_str()) && d["kind"].as_str() == Some("dev")))
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(*d))
                .map(str::to_owned)
                .collect();
            (name, deps)
        })
        .collect()
}

#[test]
fn crate_dependencies_point_down_the_layers() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(name, deps)| (*name, deps.iter().copied().collect()))
        .collect();
    let mut wrong = Vec::new();
    for (name, deps) in workspace_edges() {
        let Some(may) = allowed.get(name.as_str()) else {
            wrong.push(format!("{name} is not in ALLOWED: give it its layer"));
            continue;
        };
        for dep in deps {
            if !may.contains(dep.as_str()) {
                wrong.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies against the layers: {wrong:#?}");
}

#[test]
fn the_layer_table_has_no_cycle() {
    // A table that allowed a cycle would make the test above meaningless: walk it.
    let allowed: BTreeMap<&str, Vec<&str>> = ALLOWED.iter().map(|(n, d)| (*n, d.to_vec())).collect();
    fn reaches(table: &BTreeMap<&str, Vec<&str>>, from: &str, target: &str, depth: usize) -> bool {
        depth < table.len()
            && table.get(from).is_some_and(|deps| {
                deps.iter()
                    .any(|d| *d == target || reaches(table, d, target, depth + 1))
            })
    }
    for name in allowed.keys() {
        assert!(!reaches(&allowed, name, name, 0), "{name} reaches itself");
    }
}
