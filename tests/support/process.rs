//! A cluster of real `raftkv-server` processes on 127.0.0.1, for tests that kill, stop
//! and restart nodes. Ports are picked by the OS (bind port 0, read it back, release it
//! for the child). Each child's stderr goes to `<dir>/node-N.log`, printed when a test
//! fails while the cluster is alive. Every wait has a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::StatusRequest;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_raftkv-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct ServerProcess {
    pub id: u64,
    pub client_url: String,
    pub peer_url: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(SERVER_BIN)
            .args(&self.args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn raftkv-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("raftkv-server ready") => break,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "node {} did not become ready:\n{}",
                        self.id,
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
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

    fn signal(&mut self, signal: i32) {
        if let Some(child) = &self.child {
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub struct ProcessCluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, ServerProcess>,
}

impl ProcessCluster {
    /// Start `n` members bootstrapped together, with extra flags for every member.
    pub fn start(n: u64, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u64, u16, u16)> = (1..=n).map(|id| (id, free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .map(|(id, _, p)| format!("{id}=http://127.0.0.1:{p}"))
            .collect();
        let initial = initial.join(",");
        let mut nodes = BTreeMap::new();
        for (id, client, peer) in ports {
            let mut args: Vec<String> = vec![
                "--id".into(),
                id.to_string(),
                "--data-dir".into(),
                dir.path().join(format!("node-{id}")).display().to_string(),
                "--listen-client".into(),
                format!("127.0.0.1:{client}"),
                "--listen-peer".into(),
                format!("127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.clone(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let node = ServerProcess {
                id,
                client_url: format!("http://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
                args,
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            };
            nodes.insert(id, node);
        }
        // Start them all before waiting: a member is "ready" once it serves, not once
        // it has a leader.
        for node in nodes.values_mut() {
            node.spawn();
        }
        Self { dir, nodes }
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
            if let Ok(Some(status)) = child.try_wait() {
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

    pub fn logs(&self) -> String {
        self.nodes
            .values()
            .map(|n| {
                format!(
                    "--- node {} ---\n{}",
                    n.id,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect()
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
        for node in self.nodes.values_mut() {
            node.signal(libc::SIGCONT);
            node.signal(libc::SIGKILL);
            node.wait_exit(Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
