#![allow(clippy::unwrap_used)]

use super::*;

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn load(s: &str) -> Result<Loaded, ConfigError> {
    Config::load(args(s), InheritedAddrs::default())
}

fn config(s: &str) -> Config {
    load(s).unwrap().config
}

fn error(s: &str) -> String {
    load(s).unwrap_err().to_string()
}

const THREE: &str = "--initial-cluster infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra2=http://10.0.1.12:2380";

#[test]
fn etcds_clustering_guide_command_line() {
    let c = config(&format!(
        "--name infra1 --initial-advertise-peer-urls http://10.0.1.11:2380 \
         --listen-peer-urls http://10.0.1.11:2380 \
         --listen-client-urls http://10.0.1.11:2379,http://127.0.0.1:2379 \
         --advertise-client-urls http://10.0.1.11:2379 \
         --initial-cluster-token etcd-cluster-1 {THREE} --initial-cluster-state new"
    ));
    assert_eq!(c.name, "infra1");
    assert_eq!(c.data_dir, PathBuf::from("infra1.etcd"));
    assert_eq!(c.listen_peer.addr, "10.0.1.11:2380".parse().unwrap());
    assert_eq!(c.listen_client.len(), 2);
    assert_eq!(c.advertise_peer_url, "http://10.0.1.11:2380");
    assert_eq!(c.advertise_client_urls, vec!["http://10.0.1.11:2379".to_string()]);
    assert_eq!(c.initial_cluster.len(), 3);
    assert_eq!(
        c.id,
        Some(etcd_member_id(&["http://10.0.1.11:2380"], "etcd-cluster-1"))
    );
    assert_eq!(
        c.initial_cluster.get(&c.id.unwrap()).map(String::as_str),
        Some("http://10.0.1.11:2380")
    );
    assert!(!c.join);
}

#[test]
fn member_ids_are_etcds() {
    // Printed by etcd 3.4.23 (`etcdctl member list`) for a one-member cluster started
    // with `--initial-cluster default=http://localhost:2380` and the default token.
    assert_eq!(
        etcd_member_id(&["http://localhost:2380"], "etcd-cluster"),
        0x8e9e05c52164694d
    );
    // The token and every URL count; the order of the URLs does not.
    let a = etcd_member_id(&["http://a:1", "http://b:1"], "t");
    assert_eq!(a, etcd_member_id(&["http://b:1", "http://a:1"], "t"));
    assert_ne!(a, etcd_member_id(&["http://a:1", "http://b:1"], "u"));
}

#[test]
fn numeric_names_are_ids_and_defaults_make_a_single_member() {
    let c = config(
        "--name 2 --data-dir /tmp/d --initial-cluster 1=http://127.0.0.1:2480,2=http://127.0.0.1:2380",
    );
    assert_eq!(c.id, Some(2));
    assert_eq!(c.initial_cluster.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    let alone = config("");
    assert_eq!(alone.name, "default");
    assert_eq!(
        alone.listen_client,
        vec![ListenUrl::http("127.0.0.1:2379".parse().unwrap())]
    );
    assert_eq!(
        alone.listen_peer,
        ListenUrl::http("127.0.0.1:2380".parse().unwrap())
    );
    assert_eq!(alone.initial_cluster.len(), 1);
    assert_eq!(
        alone.id,
        Some(etcd_member_id(&["http://127.0.0.1:2380"], "etcd-cluster"))
    );
    assert_eq!(
        (alone.heartbeat, alone.election_timeout),
        (Duration::from_millis(100), Duration::from_millis(350))
    );
    assert_eq!((alone.max_request_bytes, alone.max_txn_ops), (1_572_864, 128));
    assert_eq!(alone.quota_backend_bytes, 2 << 30);
    assert_eq!(alone.state_cache_mb, DEFAULT_STATE_CACHE_MB);
    assert_eq!(alone.log, None);
    assert_eq!(alone.auto_compaction, AutoCompactionConfig::Off);
    assert_eq!(
        config("--auto-compaction-retention 1h30m").auto_compaction,
        AutoCompactionConfig::Periodic(Duration::from_secs(5400))
    );
}

#[test]
fn every_interface_needs_advertised_urls() {
    let c = config(
        "--listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://10.0.0.1:2379 \
         --listen-peer-urls http://0.0.0.0:2380 --initial-advertise-peer-urls http://10.0.0.1:2380",
    );
    assert_eq!(c.advertise_peer_url, "http://10.0.0.1:2380");
    assert_eq!(c.listen_peer.addr, "0.0.0.0:2380".parse().unwrap());
}

#[test]
fn go_flag_forms_are_accepted() {
    let c = config(
        "-name=x --data-dir=/tmp/d -heartbeat-interval 50 --election-timeout=500 --quota-backend-bytes=-1 --log-level warn",
    );
    assert_eq!(c.name, "x");
    assert_eq!(c.heartbeat, Duration::from_millis(50));
    assert_eq!(c.election_timeout, Duration::from_millis(500));
    assert_eq!(c.quota_backend_bytes, u64::MAX);
    assert_eq!(c.log.as_deref(), Some("warn"));
}

#[test]
fn existing_members_take_their_id_or_look_it_up() {
    let c = config(&format!(
        "--name infra2 {THREE} --initial-cluster-state existing --id 0x1f"
    ));
    assert!(c.join);
    assert_eq!(c.id, Some(0x1f));
    assert!(c.initial_cluster.is_empty());
    assert_eq!(c.advertise_peer_url, "http://10.0.1.12:2380");
    let lookup = config(&format!("--name infra2 {THREE} --initial-cluster-state existing"));
    assert_eq!(lookup.id, None);
    assert_eq!(
        lookup.existing_peers,
        vec![
            "http://10.0.1.10:2380".to_string(),
            "http://10.0.1.11:2380".to_string()
        ]
    );
}

#[test]
fn unimplemented_etcd_flags_are_refused_or_warned_about_by_name() {
    let loaded = load(
        "--experimental-initial-corrupt-check=true --max-wals 5 --pre-vote --enable-v2=false --proxy off",
    )
    .unwrap();
    let warnings = loaded.warnings.join("\n");
    assert!(
        warnings.contains("--experimental-initial-corrupt-check=true is ignored"),
        "{warnings}"
    );
    assert!(warnings.contains("--max-wals=5 is ignored"), "{warnings}");
    assert!(warnings.contains("--pre-vote=true is ignored"), "{warnings}");
    assert!(
        !warnings.contains("enable-v2") && !warnings.contains("proxy"),
        "{warnings}"
    );
    for (line, expected) in [
        (
            "--auto-tls",
            "--auto-tls is not supported: raftkv makes no self-signed",
        ),
        ("--client-crl-file /crl.pem", "--client-crl-file is not supported"),
        ("--wal-dir /wal", "--wal-dir is not supported"),
        ("--enable-v2=true", "--enable-v2 is not supported"),
        (
            "--discovery https://discovery.etcd.io/x",
            "--discovery is not supported",
        ),
        ("--force-new-cluster", "--force-new-cluster is not supported"),
        ("--proxy on", "--proxy is not supported"),
        ("--enable-v2=maybe", "expected true or false"),
    ] {
        let err = error(line);
        assert!(err.contains(expected), "{line}: {err}");
    }
}

#[test]
fn bad_configurations_name_the_flag() {
    let cases = [
        ("--bogus 1", "--bogus"),
        ("--heartbeat-interval soon", "--heartbeat-interval"),
        ("--heartbeat-interval 200", "more than three --heartbeat-interval"),
        (
            "--name a --initial-cluster b=http://127.0.0.1:1",
            "couldn't find local name \"a\"",
        ),
        ("--initial-cluster default=127.0.0.1:1", "expected a URL"),
        (
            "--initial-cluster default=http://h:1/path",
            "must not contain a path",
        ),
        (
            "--initial-cluster default=http://h:1,default=http://h:2",
            "more than one peer URL",
        ),
        (
            "--initial-cluster 1=http://h:1,default=http://h:1",
            "same id or peer URL",
        ),
        ("--initial-cluster-state maybe", "--initial-cluster-state"),
        (
            "--initial-cluster default=http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:9",
            "missing from --initial-advertise-peer-urls",
        ),
        (
            "--listen-peer-urls http://127.0.0.1:1,http://127.0.0.1:2",
            "one URL",
        ),
        (
            "--listen-client-urls http://example.com:2379",
            "an IP address or localhost",
        ),
        (
            "--listen-client-urls https://127.0.0.1:2379",
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379",
        ),
        ("--listen-metrics-urls 127.0.0.1:2381", "expected a URL"),
        ("--metrics some", "expected basic or extensive"),
        (
            "--auto-compaction-mode revision --auto-compaction-retention 1h",
            "whole number of revisions",
        ),
        ("--auto-compaction-mode daily", "expected periodic or revision"),
        ("--log-level loud", "--log-level"),
        ("--lease-checkpoint-ms 0", "must be positive"),
        ("--auto-defrag-ratio 1", "0 (off) or at least 2"),
        ("--state-cache-mb 0", "must be positive"),
        ("--proposer fast", "group-commit or direct"),
        ("--id 7", "differs from the id --initial-cluster gives"),
        ("--id 0", "non-zero"),
        (
            "--listen-client-urls http://0.0.0.0:2379",
            "--advertise-client-urls is required when listening on 0.0.0.0:2379",
        ),
        (
            "--listen-peer-urls http://[::]:2380",
            "--initial-advertise-peer-urls is required when listening on [::]:2380",
        ),
    ];
    for (line, expected) in cases {
        let err = error(line);
        assert!(err.contains(expected), "{line}: {err}");
    }
}

#[test]
fn inherited_sockets_replace_the_listen_flags() {
    let inherited = InheritedAddrs {
        peer: Some("127.0.0.1:4001".parse().unwrap()),
        client: Some("127.0.0.1:4002".parse().unwrap()),
    };
    let c = Config::load(args("--data-dir /tmp/d"), inherited).unwrap().config;
    assert_eq!(c.listen_peer.addr, inherited.peer.unwrap());
    assert_eq!(c.advertise_client_urls, vec!["http://127.0.0.1:4002".to_string()]);
    assert_eq!(c.advertise_peer_url, "http://127.0.0.1:4001");
    assert!(Config::load(args("--listen-peer-urls http://127.0.0.1:4001"), inherited).is_ok());
    let err = Config::load(args("--listen-client-urls http://127.0.0.1:9"), inherited)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("differs from the inherited socket's address"),
        "{err}"
    );
}

#[test]
fn help_lists_etcds_flags_and_the_environment() {
    let ConfigError::Help(text) = load("--help").unwrap_err() else {
        panic!("not help");
    };
    for expected in [
        "--initial-cluster",
        "ETCD_INITIAL_CLUSTER",
        "--listen-metrics-urls",
        "--auto-defrag-ratio",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    assert!(!text.contains("--wal-dir"), "unsupported flags are hidden");
}

#[test]
fn a_config_file_replaces_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd.yaml");
    std::fs::write(
        &path,
        "name: infra0\ndata-dir: /var/lib/etcd\nheartbeat-interval: 50\nelection-timeout: 500\n\
         listen-client-urls: http://127.0.0.1:2379\n\
         initial-cluster: infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380\n\
         initial-cluster-token: tok\nauto-compaction-retention: 0\nmax-wals: 5\nfavourite-colour: blue\n\
         client-transport-security:\n  cert-file: ''\n  client-cert-auth: false\n",
    )
    .unwrap();
    let loaded = load(&format!("--config-file {} --name ignored", path.display())).unwrap();
    let c = loaded.config;
    assert_eq!(c.name, "infra0");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/etcd"));
    assert_eq!(c.heartbeat, Duration::from_millis(50));
    assert_eq!(c.id, Some(etcd_member_id(&["http://10.0.1.10:2380"], "tok")));
    let warnings = loaded.warnings.join("\n");
    for expected in [
        "--name is ignored",
        "--max-wals=5 is ignored",
        "unknown key \"favourite-colour\"",
    ] {
        assert!(warnings.contains(expected), "{expected}: {warnings}");
    }
    std::fs::write(&path, "peer-transport-security:\n  auto-tls: true\n").unwrap();
    let err = error(&format!("--config-file {}", path.display()));
    assert!(err.contains("--peer-auto-tls"), "{err}");
    std::fs::write(&path, "heartbeat-interval: fast\n").unwrap();
    let err = error(&format!("--config-file {}", path.display()));
    assert!(err.contains("heartbeat-interval: invalid type"), "{err}");
    let err = error("--config-file /nonexistent/etcd.yaml");
    assert!(err.contains("config file /nonexistent/etcd.yaml"), "{err}");
}

#[test]
fn version_answers_as_etcds_does_with_both_dash_forms() {
    for flag in ["--version", "-version"] {
        let ConfigError::Help(text) = load(flag).unwrap_err() else {
            panic!("{flag}: not answered");
        };
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            concat!("raftkv-server ", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
        assert_eq!(lines[1], "etcd API Version: 3.4");
        assert!(lines[2].starts_with("Rust OS/Arch: "), "{text}");
    }
}
