//! `deploy/Dockerfile` as CI can check it without a container engine: a build stage on
//! the Rust toolchain the workspace declares as its minimum (`rust-version`, so the
//! image is built with the version the crates promise to build with), then the server
//! binary alone on a distroless base, run as a non-root user, with etcd's ports.

use std::path::Path;

fn dockerfile() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Instructions, continuation lines joined, comments dropped.
    let mut out: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        let (body, continued) = match line.strip_suffix('\\') {
            Some(body) => (body.trim_end(), true),
            None => (line, false),
        };
        pending.push_str(body);
        pending.push(' ');
        if !continued {
            out.push(pending.trim().to_string());
            pending.clear();
        }
    }
    out
}

fn rust_version() -> String {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("rust-version in the workspace manifest")
        .to_string()
}

#[test]
fn the_image_is_the_server_alone_as_non_root_built_on_the_minimum_toolchain() {
    let lines = dockerfile();
    let stages: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage: {lines:#?}");
    let (build, runtime) = (&lines[stages[0]..stages[1]], &lines[stages[1]..]);

    assert_eq!(
        build[0],
        format!("FROM rust:{}-bookworm AS build", rust_version()),
        "the build stage uses the workspace's rust-version"
    );
    let cargo = build
        .iter()
        .find(|l| l.starts_with("RUN cargo build"))
        .expect("a cargo build");
    for flag in ["--release", "--locked", "--bin raftkv-server"] {
        assert!(cargo.contains(flag), "{cargo}: {flag}");
    }
    assert!(
        build.contains(&"ENV CARGO_PROFILE_RELEASE_DEBUG=0".to_string()),
        "the image's binary without the profiling line tables"
    );

    assert_eq!(runtime[0], "FROM gcr.io/distroless/cc-debian12:nonroot");
    let copies: Vec<&String> = runtime.iter().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(
        copies,
        ["COPY --from=build /out/raftkv-server /usr/local/bin/raftkv-server"],
        "the binary alone"
    );
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric uid");
    assert_ne!(uid, 0, "not root");
    assert!(runtime.contains(&"EXPOSE 2379 2380 2381".to_string()));
    assert_eq!(
        runtime.last().map(String::as_str),
        Some(r#"ENTRYPOINT ["/usr/local/bin/raftkv-server"]"#)
    );
}
