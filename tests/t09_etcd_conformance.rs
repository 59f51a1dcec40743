//! etcd v3 conformance, driven by Debian's `etcdctl` 3.4 against a three-node raftkv
//! cluster, and the same script against a real three-member etcd 3.4 in the same run (a
//! differential test): outputs must match, modulo member/cluster ids, timings and paths,
//! wherever the behaviour is specified: KV, txn, compaction, members, snapshot, watch
//! (replay from a revision with prev-kv, a compacted start) and leases (grant, put with a
//! lease, timetolive --keys, list, keep-alive, revoke, unknown lease), and etcdctl's
//! client-side lock and elect recipes. Also `etcdctl check perf --load=s` against
//! raftkv, and count_only (which etcdctl 3.4 cannot ask for) through the client crate on
//! both.
//!
//! Needs `etcdctl` and `etcd` (packages etcd-client, etcd-server; the CI script installs
//! them). Outside CI a missing tool skips with a message; under `CI=true` it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;

use raftkv_client::{Client, RangeRequest};
use support::etcd::EtcdCluster;
use support::process::ProcessCluster;

struct Step {
    args: &'static [&'static str],
    stdin: Option<&'static str>,
    /// Compare this step's normalized output between raftkv and etcd.
    compare: bool,
    /// Talk to the first endpoint only (etcdctl requires it for some commands).
    single: bool,
    /// A command that does not end by itself (watch): stop it after this long and
    /// compare what it printed.
    stop_after: Option<Duration>,
}

const fn step(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        compare: true,
        single: false,
        stop_after: None,
    }
}

const fn single(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        compare: true,
        single: true,
        stop_after: None,
    }
}

const fn unchecked(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        compare: false,
        single: false,
        stop_after: None,
    }
}

/// A watch: its output until it is stopped after 1.5 s.
const fn watch(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        compare: true,
        single: false,
        stop_after: Some(Duration::from_millis(1500)),
    }
}

const fn txn(stdin: &'static str) -> Step {
    Step {
        args: &["txn", "-i"],
        stdin: Some(stdin),
        compare: true,
        single: false,
        stop_after: None,
    }
}

/// The script. Revisions are the same on both servers: the empty store is at revision 1.
const SCRIPT: &[Step] = &[
    step(&["put", "foo", "bar"]),
    step(&["put", "foo2", "bar2"]),
    step(&["put", "fop", "x"]),
    step(&["put", "zoo", "y"]),
    step(&["put", "foo", "bar-again", "--prev-kv"]),
    step(&["get", "foo"]),
    step(&["get", "foo", "--prefix"]),
    step(&["get", "foo", "--from-key"]),
    step(&["get", "foo", "--rev=2"]),
    step(&["get", "", "--prefix", "--limit=2"]),
    step(&["get", "", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"]),
    step(&[
        "get",
        "",
        "--prefix",
        "--sort-by=VALUE",
        "--order=ASCEND",
        "--keys-only",
    ]),
    step(&["get", "f", "--prefix", "--keys-only"]),
    step(&["get", "foo", "--print-value-only"]),
    step(&["get", "foo", "-w", "json"]),
    step(&["get", "", "--prefix", "--limit=1", "-w", "json"]),
    step(&["put", "counter", "1", "-w", "json"]),
    step(&["get", "nothing-here"]),
    // A range that ends before it starts is empty (and deletes nothing) on the wire.
    step(&["get", "zoo", "foo"]),
    step(&["del", "zoo", "foo"]),
    txn("value(\"foo\") = \"bar-again\"\n\nput txn-ok yes\nget foo\n\nput txn-failed yes\n\n"),
    txn("mod(\"foo\") > \"1000\"\n\nput txn-ok2 yes\n\nput txn-else yes\ndel zoo\n\n"),
    txn("version(\"foo\") = \"2\"\ncreate(\"foo2\") = \"3\"\n\nget foo2\n\n\n"),
    step(&["get", "txn", "--prefix"]),
    step(&["get", "zoo"]),
    step(&["del", "fo", "--prefix", "--prev-kv"]),
    step(&["del", "nothing-here"]),
    step(&["get", "", "--prefix", "-w", "json"]),
    step(&["compaction", "5"]),
    step(&["get", "foo", "--rev=4"]),
    step(&["get", "txn-ok", "--rev=5"]),
    step(&["get", "counter", "--rev=99"]),
    step(&["compaction", "3"]),
    step(&["put", "", "empty-key"]),
    step(&["endpoint", "health"]),
    unchecked(&["endpoint", "status", "-w", "table"]),
    unchecked(&["member", "list", "-w", "json"]),
    unchecked(&[
        "member",
        "add",
        "extra",
        "--peer-urls=http://127.0.0.1:1",
        "--learner",
    ]),
    // ADDED_ID: the id the member add above printed (each server picks its own).
    step(&["member", "promote", "ADDED_ID"]),
    step(&["member", "remove", "ADDED_ID"]),
    step(&["member", "remove", "ADDED_ID"]),
    single(&["snapshot", "save", "SNAPSHOT_PATH"]),
    // Watch: replay from a revision after the compaction, then live (nothing more comes);
    // from the compact revision itself (its event is still served); a compacted start
    // revision is refused.
    watch(&["watch", "--rev=6", "--prefix", "--prev-kv", "txn"]),
    watch(&["watch", "--rev=5", "zoo"]),
    watch(&["watch", "--rev=2", "foo"]),
    // Leases. LEASE_ID: the id `lease grant` printed (each server picks its own).
    step(&["lease", "grant", "100"]),
    step(&["lease", "grant", "9000000001"]),
    step(&["put", "leased", "v", "--lease=LEASE_ID"]),
    step(&["lease", "timetolive", "LEASE_ID", "--keys"]),
    step(&["lease", "list"]),
    step(&["lease", "keep-alive", "--once", "LEASE_ID"]),
    step(&["lease", "revoke", "LEASE_ID"]),
    step(&["get", "leased"]),
    step(&["lease", "timetolive", "LEASE_ID"]),
    step(&["put", "leased", "v", "--lease=1234"]),
    // etcdctl's client-side lock and election recipes (leases, txns and watches).
    step(&["lock", "dlock", "echo", "held"]),
    watch(&["elect", "delect", "proposal"]),
];

fn tool_available(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run one step; returns (exit ok, stdout, the "Error:" lines of stderr).
fn run(endpoints: &[String], step: &Step, snapshot: &str, ids: &Ids) -> (bool, String, String) {
    let endpoints: Vec<&str> = endpoints
        .iter()
        .map(|u| u.trim_start_matches("http://"))
        .collect();
    let endpoints = if step.single {
        &endpoints[..1]
    } else {
        &endpoints[..]
    };
    let args: Vec<String> = step
        .args
        .iter()
        .map(|a| {
            a.replace("SNAPSHOT_PATH", snapshot)
                .replace("ADDED_ID", &ids.added_member)
                .replace("LEASE_ID", &ids.lease)
        })
        .collect();
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--command-timeout=15s")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = step.stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    if let Some(after) = step.stop_after {
        std::thread::sleep(after);
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("Error:"))
        .map(String::from)
        .collect();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        errors.join("\n"),
    )
}

/// Mask what legitimately differs: ids, terms, timings, paths.
fn normalize(text: &str, snapshot: &str) -> String {
    let text = text.replace(snapshot, "<snapshot>");
    let mut out = String::new();
    for line in text.lines() {
        let mut masked = Vec::new();
        for word in line.split(' ') {
            let word = mask_json_fields(word);
            // A lock or election key ends in its lease id: `name/694d7a6b2b1c2f05`.
            let word = match word.rsplit_once('/') {
                Some((name, tail)) if tail.len() >= 8 && tail.chars().all(|c| c.is_ascii_hexdigit()) => {
                    format!("{name}/<id>")
                }
                _ => word,
            };
            let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            let is_id = bare.len() >= 8
                && bare.chars().all(|c| c.is_ascii_hexdigit())
                && bare.chars().any(|c| c.is_ascii_digit());
            masked.push(if is_id { word.replace(bare, "<id>") } else { word });
        }
        // etcdctl pads ids to 16 columns (`%16x`): collapse runs of spaces.
        let line = masked.join(" ").split_whitespace().collect::<Vec<_>>().join(" ");
        let line = match line.find("took = ") {
            Some(i) => format!("{}took = <t>", &line[..i]),
            None => line,
        };
        // A lease's remaining TTL depends on when it is asked.
        let line = match (line.find("remaining("), line.find("s), attached")) {
            (Some(i), Some(j)) if i < j => format!("{}remaining(<t>{}", &line[..i], &line[j..]),
            _ => line,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn mask_json_fields(word: &str) -> String {
    let mut word = word.to_string();
    for field in ["\"cluster_id\":", "\"member_id\":", "\"raft_term\":"] {
        while let Some(start) = word.find(field) {
            let value_start = start + field.len();
            let value_end = word[value_start..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(word.len(), |e| value_start + e);
            let masked_field = field.replace(':', "=");
            word = format!("{}{masked_field}<x>{}", &word[..start], &word[value_end..]);
        }
    }
    word
}

/// Ids a server picked that later steps name (ADDED_ID, LEASE_ID).
struct Ids {
    added_member: String,
    lease: String,
}

fn run_script(endpoints: &[String], snapshot_dir: &std::path::Path) -> Vec<(bool, String, String)> {
    let snapshot = snapshot_dir.join("snap.db").display().to_string();
    let mut ids = Ids {
        added_member: String::from("0"),
        lease: String::from("0"),
    };
    let mut results = Vec::new();
    for s in SCRIPT {
        let (ok, out, err) = run(endpoints, s, &snapshot, &ids);
        // "Member 3f3f88dbff23d0ce added to cluster ..."
        if let Some(rest) = out
            .strip_prefix("Member ")
            .filter(|r| r.contains(" added to cluster "))
            && let Some((id, _)) = rest.trim_start().split_once(' ')
        {
            ids.added_member = id.to_string();
        }
        // "lease 694d7a6b2b1c2f05 granted with TTL(100s)"
        if let Some(rest) = out
            .strip_prefix("lease ")
            .filter(|r| r.contains(" granted with TTL("))
            && let Some((id, _)) = rest.split_once(' ')
        {
            ids.lease = id.to_string();
        }
        results.push((ok, normalize(&out, &snapshot), normalize(&err, &snapshot)));
    }
    results
}

fn tools_or_skip() -> bool {
    let have = tool_available("etcdctl", "version") && support::etcd::available();
    if !have {
        assert!(
            std::env::var("CI").is_err(),
            "etcdctl and etcd are required under CI=true"
        );
        eprintln!("SKIPPED: etcdctl / etcd not installed (apt-get install etcd-client etcd-server)");
    }
    have
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_script_gives_the_same_answers_on_raftkv_and_etcd() {
    if !tools_or_skip() {
        return;
    }
    let raftkv = ProcessCluster::start(3, &[]);
    raftkv.agreed_leader(Duration::from_secs(30)).await;
    let etcd = EtcdCluster::start(3).await;

    let ours = run_script(&raftkv.client_urls(), raftkv.dir.path());
    let theirs = run_script(&etcd.client_urls, etcd.dir.path());
    let mut mismatches = Vec::new();
    for ((step, a), b) in SCRIPT.iter().zip(&ours).zip(&theirs) {
        println!("$ etcdctl {}\n{}{}", step.args.join(" "), a.1, a.2);
        if !step.compare {
            println!("(etcd answered)\n{}{}", b.1, b.2);
        }
        if step.compare && a != b {
            mismatches.push(format!(
                "etcdctl {}:\n  raftkv: ok={} out={:?} err={:?}\n  etcd:   ok={} out={:?} err={:?}",
                step.args.join(" "),
                a.0,
                a.1,
                a.2,
                b.0,
                b.1,
                b.2
            ));
        }
        // Unchecked steps must still work on raftkv.
        if !step.compare {
            assert!(a.0, "etcdctl {} failed on raftkv: {}", step.args.join(" "), a.2);
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} differences:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );

    // Spot checks that the comparison cannot hide (both sides could be wrong alike).
    let by_args = |args: &[&str]| SCRIPT.iter().position(|s| s.args == args).unwrap();
    assert_eq!(ours[by_args(&["get", "foo", "--rev=2"])].1, "foo\nbar\n");
    assert!(
        ours[by_args(&["get", "foo", "--rev=4"])]
            .2
            .contains("required revision has been compacted")
    );
    assert!(
        ours[by_args(&["put", "", "empty-key"])]
            .2
            .contains("key is not provided")
    );
    assert!(
        ours[by_args(&["get", "foo", "-w", "json"])]
            .1
            .contains("\"mod_revision\":6")
    );

    // Revision filters and limits, which etcdctl 3.4 cannot ask for: the same answers
    // (keys, count, more) from both servers, through the client crate.
    let mut answers = Vec::new();
    for urls in [raftkv.client_urls(), etcd.client_urls.clone()] {
        let client = Client::connect(urls).await.unwrap();
        let mut seen = Vec::new();
        for (min_mod, max_mod, min_create, limit) in [(8, 9, 0, 0), (0, 8, 0, 1), (0, 0, 8, 0), (7, 0, 0, 2)]
        {
            let mut req = RangeRequest::prefix("");
            req.min_mod_revision = min_mod;
            req.max_mod_revision = max_mod;
            req.min_create_revision = min_create;
            req.limit = limit;
            let r = client.range(req).await.unwrap();
            // The election key ends in a lease id each server picked.
            let keys: Vec<Vec<u8>> = r
                .kvs
                .into_iter()
                .map(|kv| match kv.key.strip_prefix(b"delect/") {
                    Some(_) => b"delect/<id>".to_vec(),
                    None => kv.key,
                })
                .collect();
            seen.push((keys, r.count, r.more));
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1], "revision filters differ (raftkv, etcd)");

    // count_only, which etcdctl 3.4 cannot ask for, through the client crate on both.
    for urls in [raftkv.client_urls(), etcd.client_urls.clone()] {
        let client = Client::connect(urls).await.unwrap();
        let mut req = RangeRequest::prefix("");
        req.count_only = true;
        let counted = client.range(req).await.unwrap();
        assert!(counted.kvs.is_empty());
        let all = client.range(RangeRequest::prefix("")).await.unwrap();
        assert_eq!(counted.count, all.kvs.len() as i64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_check_perf_small_load_passes() {
    if !tools_or_skip() {
        return;
    }
    let raftkv = ProcessCluster::start(3, &[]);
    raftkv.agreed_leader(Duration::from_secs(30)).await;
    let endpoints: Vec<String> = raftkv
        .client_urls()
        .iter()
        .map(|u| u.trim_start_matches("http://").to_string())
        .collect();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["check", "perf", "--load=s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdict: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("PASS") || l.contains("FAIL"))
        .collect();
    println!("{}", verdict.join("\n"));
    assert!(
        out.status.success(),
        "check perf failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(verdict.last().is_some_and(|l| l.trim() == "PASS"), "{verdict:?}");
}
