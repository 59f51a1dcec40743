//! A cluster of real `raftkv-server` processes on 127.0.0.1, for tests that kill, stop
//! and restart nodes. Each member's two ports are [`HeldPort`]s: held by the test for its
//! whole life and handed to each start of the member as inherited listening sockets, so
//! no other process can take them, not even while the member is down. Each child's
//! stderr goes to `<dir>/node-N.log`, printed when a test fails while the cluster is
//! alive. Children die with the test ([`OwnedChild`]). Every wait has a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::StatusRequest;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use super::ClusterTurn;
use super::child::{self, OwnedChild};
use super::ports::HeldPort;

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_raftkv-server");

/// How long a member may take from spawn to its ready line.
const READY_DEADLINE: Duration = Duration::from_secs(30);

pub struct ServerProcess {
    pub id: u64,
    pub client_url: String,
    pub peer_url: String,
    peer_port: HeldPort,
    client_port: HeldPort,
    args: Vec<String>,
    /// Extra environment variables of the process.
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<OwnedChild>,
}

impl ServerProcess {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let (peer, client) = (self.peer_port.listener(), self.client_port.listener());
        let mut cmd = child::command(SERVER_BIN, &self.args, &[("peer", &peer), ("client", &client)]);
        cmd.env("RUST_LOG", "info,openraft=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = OwnedChild::spawn(cmd).expect("spawn raftkv-server");
        // Only the child listens now: when it dies, connections are refused.
        drop((peer, client));
        let stdout = child.stdout().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("raftkv-server ready") => break,
                Ok(_) => continue,
                // `child` is dropped (killed) as the panic unwinds.
                Err(_) => panic!(
                    "node {} did not become ready:\n{}",
                    self.id,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ),
            }
        }
        self.child = Some(child);
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The port this member's client URL names (held by the test).
    pub fn client_port(&self) -> &HeldPort {
        &self.client_port
    }

    fn signal(&mut self, signal: i32) {
        if let Some(child) = &self.child {
            child.signal(signal);
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        if child.wait_timeout(timeout).is_some() {
            self.child = None;
            return true;
        }
        false
    }
}

pub struct ProcessCluster {
    pub nodes: BTreeMap<u64, ServerProcess>,
    /// Declared after `nodes`: the data dir goes once the members are dead.
    pub dir: tempfile::TempDir,
    /// This binary's one cluster at a time (RELIABILITY.md); released last.
    _turn: ClusterTurn,
}

impl ProcessCluster {
    /// Start `n` members bootstrapped together, with extra flags for every member.
    pub fn start(n: u64, extra: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), n, extra)
    }

    /// [`Self::start`] with the members' data dirs (`node-N`) and logs under `dir`.
    pub fn start_in(dir: tempfile::TempDir, n: u64, extra: &[&str]) -> Self {
        Self::start_with_env(dir, n, extra, &[])
    }

    /// [`Self::start_in`] with extra environment variables for every member.
    pub fn start_with_env(dir: tempfile::TempDir, n: u64, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let turn = ClusterTurn::take();
        let ports: Vec<(u64, HeldPort, HeldPort)> =
            (1..=n).map(|id| (id, HeldPort::new(), HeldPort::new())).collect();
        let initial: Vec<String> = ports
            .iter()
            .map(|(id, _, peer)| format!("{id}={}", peer.url()))
            .collect();
        let initial = initial.join(",");
        let mut nodes = BTreeMap::new();
        for (id, client_port, peer_port) in ports {
            // No --listen-* flags: the listeners are inherited (LISTEN_FDS).
            let mut args: Vec<String> = vec![
                // A numeric name is the member's id (raftkv's one extension to etcd's form).
                "--name".into(),
                id.to_string(),
                "--data-dir".into(),
                dir.path().join(format!("node-{id}")).display().to_string(),
                "--initial-cluster".into(),
                initial.clone(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let node = ServerProcess {
                id,
                client_url: client_port.url(),
                peer_url: peer_port.url(),
                peer_port,
                client_port,
                args,
                env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            };
            nodes.insert(id, node);
        }
        // Start them all before waiting: a member is "ready" once it serves, not once
        // it has a leader. A member that fails to start panics here; the members
        // already started are killed as `nodes` unwinds.
        for node in nodes.values_mut() {
            node.spawn();
        }
        Self {
            nodes,
            dir,
            _turn: turn,
        }
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.client_url.clone()).collect()
    }

    pub fn url(&self, id: u64) -> String {
        self.nodes[&id].client_url.clone()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.signal(libc::SIGKILL);
        assert!(
            node.wait_exit(Duration::from_secs(10)),
            "node {id} survived SIGKILL"
        );
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        node.signal(libc::SIGTERM);
        assert!(
            node.wait_exit(Duration::from_secs(20)),
            "node {id} did not exit on SIGTERM"
        );
    }

    /// Wait for node `id` to exit by itself (a fatal storage error, an abort); its exit
    /// status, or `None` if it is still running at the deadline.
    pub async fn wait_for_exit(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let node = self.nodes.get_mut(&id).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let child = node.child.as_mut()?;
            if let Some(status) = child.try_wait() {
                node.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Position of node `id` in [`Self::client_urls`].
    pub fn endpoint(&self, id: u64) -> usize {
        self.nodes.keys().position(|k| *k == id).unwrap()
    }

    pub fn pause(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().signal(libc::SIGSTOP);
    }

    pub fn resume(&mut self, id: u64) {
        self.nodes.get_mut(&id).unwrap().signal(libc::SIGCONT);
    }

    pub fn restart(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(!node.is_running(), "node {id} is still running");
        node.spawn();
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// Every member's log, then the machine's pressure (how long tasks waited for CPU,
    /// disk and memory lately): whether a failure came with a stalled machine.
    pub fn logs(&self) -> String {
        let mut out: String = self
            .nodes
            .values()
            .map(|n| {
                format!(
                    "--- node {} ---\n{}",
                    n.id,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect();
        for file in [
            "/proc/pressure/cpu",
            "/proc/pressure/io",
            "/proc/pressure/memory",
            "/proc/loadavg",
        ] {
            if let Ok(text) = std::fs::read_to_string(file) {
                out.push_str(&format!("--- {file} ---\n{text}"));
            }
        }
        out
    }

    /// etcd `Status` of one member, if it answers within a second.
    pub async fn status(&self, id: u64) -> Option<raftkv_proto::etcdserverpb::StatusResponse> {
        let url = self.url(id);
        let call = async move {
            let mut client = MaintenanceClient::connect(url).await.ok()?;
            client.status(StatusRequest {}).await.ok().map(|r| r.into_inner())
        };
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .ok()
            .flatten()
    }

    /// Wait until every running member names the same leader, and that leader is running.
    pub async fn agreed_leader(&self, timeout: Duration) -> u64 {
        self.agreed_leader_among(&self.running(), timeout).await
    }

    /// Wait until the members `ids` (all running, none paused) name the same leader, one
    /// of them.
    pub async fn agreed_leader_among(&self, ids: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let running = ids.to_vec();
            let mut leaders = Vec::new();
            for id in &running {
                leaders.push(self.status(*id).await.map(|s| s.leader).unwrap_or(0));
            }
            if let Some(&first) = leaders.first()
                && first != 0
                && running.contains(&first)
                && leaders.iter().all(|l| *l == first)
            {
                return first;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {leaders:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        // Kill every member first (their `OwnedChild`s would too, but the logs are
        // complete only once they are dead).
        for node in self.nodes.values_mut() {
            node.child = None;
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// `raftkv-server restore ARGS`, bounded: its exit code and output.
pub fn run_restore(args: &[String]) -> (Option<i32>, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut all = vec!["restore".to_string()];
    all.extend(args.iter().cloned());
    let mut cmd = super::child::command(SERVER_BIN, &all, &[]);
    // Both streams into one file, appending: neither overwrites the other.
    let append = || std::fs::OpenOptions::new().append(true).open(out.path()).unwrap();
    cmd.stdout(append()).stderr(append());
    let mut child = super::child::OwnedChild::spawn(cmd).unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("restore {args:?} did not finish"));
    (status.code(), std::fs::read_to_string(out.path()).unwrap())
}
