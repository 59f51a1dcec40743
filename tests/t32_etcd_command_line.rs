//! etcd's command line, environment and config file: one operator session run against
//! etcd 3.4 and against `raftkv-server`, the same flags, variables and YAML file on the
//! same ports, one after the other, with the same observable results: the member ids
//! (derived from names, URLs and the token), names and URLs in `etcdctl member list`, a
//! put and get, `/health`; and the same refusals of bad configurations, with raftkv
//! writing nothing to disk before it refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::child::{self, OwnedChild};
use crate::support::ports::ReservedPort;
use crate::support::process::SERVER_BIN;

const START_DEADLINE: Duration = Duration::from_secs(60);

fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=2s", "--command-timeout=5s"])
        .args(args)
        .output()
        .expect("run etcdctl");
    let text = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    });
    (out.status.success(), text.into_owned())
}

/// Both programs, or none when etcd is not installed outside CI.
fn programs() -> Option<[(&'static str, &'static str); 2]> {
    if !support::etcd::available() {
        assert!(std::env::var("CI").is_err(), "etcd is required under CI=true");
        eprintln!("SKIPPED: etcd not installed");
        return None;
    }
    Some([("etcd", "etcd"), ("raftkv", SERVER_BIN)])
}

/// `GET /health` over HTTP/1.1 on `addr`, bounded: the status line and whether the body
/// says healthy (etcd 3.4's body has no `reason` field, 3.5's and raftkv's have).
fn health(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let healthy = body.starts_with(r#"{"health":"true""#);
    format!("{} healthy={healthy}", head.lines().next().unwrap_or_default())
}

/// Run `program args` with `env` until it exits (bounded): its status and stderr.
fn run_to_exit(program: &str, args: &[String], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr");
    let mut cmd = child::command(program, args, &[]);
    cmd.envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let mut child = OwnedChild::spawn(cmd).unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{program} {args:?} did not exit"));
    (status.code(), std::fs::read_to_string(stderr).unwrap())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bad_configurations_are_refused_as_etcd_refuses_them() {
    let Some(programs) = programs() else { return };
    let peer = ReservedPort::new();
    let peer_url = format!("http://127.0.0.1:{}", peer.port());
    let other_url = format!("http://127.0.0.1:{}", peer.port() + 1);
    let mismatch = format!(
        "--initial-cluster has default={peer_url} but missing from --initial-advertise-peer-urls={other_url}"
    );
    // (flags, variables, texts both must print)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, [&'a str; 2]);
    let cases: Vec<Case> = vec![
        (
            strings(&["--name", "y"]),
            vec![("ETCD_NAME", "x")],
            ["conflicting environment variable", "ETCD_NAME"],
        ),
        (
            strings(&["--name", "a", "--initial-cluster", &format!("b={peer_url}")]),
            vec![],
            ["couldn't find local name \"a\"", "initial cluster"],
        ),
        (
            strings(&["--heartbeat-interval", "soon"]),
            vec![],
            ["invalid value", "heartbeat-interval"],
        ),
        (
            strings(&["--no-such-flag", "1"]),
            vec![],
            ["no-such-flag", "no-such-flag"],
        ),
        (
            strings(&["--initial-cluster-state", "maybe"]),
            vec![],
            ["invalid value", "initial-cluster-state"],
        ),
        (
            strings(&[
                "--initial-cluster",
                &format!("default={peer_url}"),
                "--initial-advertise-peer-urls",
                &other_url,
            ]),
            vec![],
            [&mismatch, "initial-advertise-peer-urls"],
        ),
    ];
    for (args, env, expected) in &cases {
        for (system, program) in programs {
            let dir = tempfile::tempdir().unwrap();
            let data_dir = dir.path().join("member");
            let mut full = strings(&["--data-dir", &data_dir.display().to_string()]);
            full.extend(args.iter().cloned());
            let (code, stderr) = run_to_exit(program, &full, env);
            assert!(
                matches!(code, Some(c) if c != 0),
                "{system} {args:?} {env:?}: exit {code:?}\n{stderr}"
            );
            for text in expected {
                assert!(
                    stderr.contains(text),
                    "{system} {args:?} {env:?}: {text:?} not in\n{stderr}"
                );
            }
            if system == "raftkv" {
                // raftkv: exit 2 and nothing written (etcd creates the data dir first).
                assert_eq!(code, Some(2), "{args:?}\n{stderr}");
                assert!(!data_dir.exists(), "{args:?}: the data dir was created");
            }
        }
    }
}

/// raftkv's one setting of its own outside etcd's flags: the async worker count
/// (`TOKIO_WORKER_THREADS`, Tokio's variable). Nonsense is refused like a bad flag.
#[test]
fn a_bad_worker_count_is_refused_before_anything_is_written() {
    for bad in ["0", "many"] {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("member");
        let args = strings(&["--data-dir", &data_dir.display().to_string()]);
        let (code, stderr) = run_to_exit(SERVER_BIN, &args, &[("TOKIO_WORKER_THREADS", bad)]);
        assert_eq!(code, Some(2), "{bad:?}\n{stderr}");
        assert!(
            stderr.contains("TOKIO_WORKER_THREADS must be a positive integer"),
            "{bad:?}: {stderr}"
        );
        assert!(!data_dir.exists(), "{bad:?}: the data dir was created");
    }
}

/// One member's part in the session: its flags, or a config file plus a flag the file
/// overrides.
struct Member {
    name: String,
    client: String,
    args: Vec<String>,
}

/// Start the three members of `program` (two from flags and variables, the third from a
/// config file), run the session, add a fourth the etcd way, stop them; the observable
/// results as text.
fn session(program: &str, ports: &[(ReservedPort, ReservedPort)], dir: &Path) -> (Vec<String>, Vec<String>) {
    let cluster: Vec<String> = ports[..3]
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{}", p.port()))
        .collect();
    let cluster = cluster.join(",");
    let members: Vec<Member> = ports[..3]
        .iter()
        .enumerate()
        .map(|(i, (c, p))| {
            let (name, client, peer) = (
                format!("m{i}"),
                format!("http://127.0.0.1:{}", c.port()),
                format!("http://127.0.0.1:{}", p.port()),
            );
            let data_dir = dir.join(&name).display().to_string();
            let args = if i < 2 {
                strings(&[
                    &format!("--name={name}"),
                    "--data-dir",
                    &data_dir,
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                    "-listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
            } else {
                let file = dir.join("m2.yaml");
                std::fs::write(
                    &file,
                    format!(
                        "name: {name}\ndata-dir: {data_dir}\nlisten-client-urls: {client}\n\
                         advertise-client-urls: {client}\nlisten-peer-urls: {peer}\n\
                         initial-advertise-peer-urls: {peer}\ninitial-cluster: {cluster}\n\
                         initial-cluster-token: session-token\ninitial-cluster-state: new\n\
                         heartbeat-interval: 100\nelection-timeout: 1000\n\
                         client-transport-security:\n  client-cert-auth: false\n"
                    ),
                )
                .unwrap();
                strings(&[
                    "--config-file",
                    &file.display().to_string(),
                    "--name",
                    "overridden",
                ])
            };
            Member { name, client, args }
        })
        .collect();
    let mut children = Vec::new();
    for member in &members {
        let mut cmd = child::command(program, &member.args, &[]);
        cmd.env("ETCD_INITIAL_CLUSTER", &cluster)
            .env("ETCD_INITIAL_CLUSTER_TOKEN", "session-token")
            .env("ETCD_INITIAL_CLUSTER_STATE", "new")
            .env("ETCD_FAVOURITE_COLOUR", "blue")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{}.log", member.name))).unwrap());
        children.push(OwnedChild::spawn(cmd).unwrap());
    }
    let endpoints: Vec<String> = members
        .iter()
        .map(|m| m.client.trim_start_matches("http://").to_string())
        .collect();
    let all = endpoints.join(",");
    // Up once every member is healthy and has published its client URL.
    let deadline = Instant::now() + START_DEADLINE;
    let listed = loop {
        let (ok, out) = etcdctl(&all, &["member", "list"]);
        // `id, started, name, peer URL, client URLs, is learner`: etcd knows the names
        // from --initial-cluster, the client URLs once the member has published them.
        let published = |line: &str| line.split(", ").nth(4).is_some_and(|urls| !urls.is_empty());
        let complete =
            ok && out.lines().count() == 3 && out.lines().all(|l| l.contains(", started, m") && published(l));
        if complete && etcdctl(&all, &["endpoint", "health"]).0 {
            break out;
        }
        let logs: Vec<String> = members
            .iter()
            .map(|m| std::fs::read_to_string(dir.join(format!("{}.log", m.name))).unwrap_or_default())
            .collect();
        assert!(
            Instant::now() < deadline,
            "{program}: cluster not up: {out}\n{}",
            logs.join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut results: Vec<String> = listed.lines().map(|l| format!("member {l}")).collect();
    results.sort();
    let (ok, out) = etcdctl(&endpoints[0], &["put", "greeting", "hello"]);
    results.push(format!("put {ok} {}", out.trim()));
    let (ok, out) = etcdctl(&endpoints[2], &["get", "greeting"]);
    results.push(format!("get {ok} {}", out.trim()));
    for endpoint in &endpoints {
        results.push(format!("health {}", health(endpoint)));
    }
    let (joined, mut joiner) = join_fourth_member(program, &ports[3], dir, &all);
    results.extend(joined);
    children.append(&mut joiner);
    drop(children);
    let logs: Vec<String> = members
        .iter()
        .map(|m| std::fs::read_to_string(dir.join(format!("{}.log", m.name))).unwrap_or_default())
        .collect();
    (results, logs)
}

/// The etcd way to grow a cluster: `etcdctl member add m3 --peer-urls=...` prints the
/// variables to start the member with (name, initial cluster, state `existing`, no id);
/// the member starts with them and its listen flags, and must find its id, catch up and
/// serve. Its results, with the id `member add` made at random masked.
fn join_fourth_member(
    program: &str,
    (client, peer): &(ReservedPort, ReservedPort),
    dir: &Path,
    endpoints: &str,
) -> (Vec<String>, Vec<OwnedChild>) {
    let (client, peer) = (
        format!("http://127.0.0.1:{}", client.port()),
        format!("http://127.0.0.1:{}", peer.port()),
    );
    // etcd refuses MemberAdd for its first 5 s of health ("unhealthy cluster").
    let deadline = Instant::now() + START_DEADLINE;
    let mut failures = Vec::new();
    let printed = loop {
        let (ok, out) = etcdctl(
            endpoints,
            &["member", "add", "m3", &format!("--peer-urls={peer}")],
        );
        if ok {
            break out;
        }
        failures.push(out);
        assert!(
            Instant::now() < deadline,
            "{program}: member add failed: {failures:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let added_id = printed
        .split_whitespace()
        .skip_while(|w| *w != "Member")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let env: Vec<(String, String)> = printed
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("ETCD_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "ETCD_NAME",
            "ETCD_INITIAL_CLUSTER",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            "ETCD_INITIAL_CLUSTER_STATE"
        ],
        "{program}: {printed}"
    );
    let args = strings(&[
        "--data-dir",
        &dir.join("m3").display().to_string(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
    ]);
    let mut cmd = child::command(program, &args, &[]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("m3.log")).unwrap());
    let children = vec![OwnedChild::spawn(cmd).unwrap()];
    let m3 = client.trim_start_matches("http://");
    let listed = loop {
        let (ok, out) = etcdctl(endpoints, &["member", "list"]);
        let started = ok
            && out
                .lines()
                .any(|l| l.contains(", started, m3, ") && !l.contains(", , "));
        if started && etcdctl(m3, &["get", "greeting"]).1.trim() == "greeting\nhello" {
            break out;
        }
        let log = std::fs::read_to_string(dir.join("m3.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "{program}: m3 did not join: {out}\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut results: Vec<String> = listed
        .lines()
        .map(|l| format!("after join: {}", l.replacen(&added_id, "ADDED", 1)))
        .collect();
    results.sort();
    results.push(format!("member add printed {} variables", env.len()));
    results.push(format!("m3 health {}", health(m3)));
    (results, children)
}

#[test]
fn the_same_flags_variables_and_config_file_give_the_same_cluster() {
    let Some(programs) = programs() else { return };
    let _turn = support::ClusterTurn::take();
    let ports: Vec<(ReservedPort, ReservedPort)> = (0..4)
        .map(|_| (ReservedPort::new(), ReservedPort::new()))
        .collect();
    let mut answers = Vec::new();
    for (system, program) in programs {
        let dir = tempfile::tempdir().unwrap();
        let (results, logs) = session(program, &ports, dir.path());
        for (i, log) in logs.iter().enumerate().take(2) {
            // The variable nobody reads is reported by both (not by m2: a config file
            // replaces the environment).
            assert!(
                log.contains("unrecognized environment variable ETCD_FAVOURITE_COLOUR=blue"),
                "{system} m{i}:\n{log}"
            );
        }
        answers.push((system, results));
    }
    let [(_, etcd), (_, raftkv)] = [&answers[0], &answers[1]];
    // The ids are etcd's (SHA-1 of peer URL and token), the names and URLs the same.
    assert_eq!(etcd, raftkv, "etcd (left) and raftkv (right) differ");
    assert!(
        raftkv.iter().any(|r| r == "get true greeting\nhello"),
        "{raftkv:?}"
    );
    assert!(
        raftkv
            .iter()
            .filter(|r| r.starts_with("health HTTP/1.1 200"))
            .count()
            == 3,
        "{raftkv:?}"
    );
}
