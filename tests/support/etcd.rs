//! A three-member etcd 3.4 cluster (Debian's `etcd-server`) on 127.0.0.1, for
//! differential tests: the same etcdctl script against etcd and against raftkv. Default
//! durability (etcd fsyncs its WAL). Its ports are [`ReservedPort`]s (etcd binds them
//! itself and cannot inherit sockets), held until the cluster is dropped; its members
//! die with the test ([`OwnedChild`]).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::StatusRequest;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use super::child::{self, OwnedChild};
use super::ports::ReservedPort;

pub struct EtcdCluster {
    pub client_urls: Vec<String>,
    /// Declared first: the members die before their ports and data dir go.
    children: Vec<OwnedChild>,
    ports: Vec<(ReservedPort, ReservedPort)>,
    pub dir: tempfile::TempDir,
}

pub fn available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl EtcdCluster {
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, &[]).await
    }

    /// [`EtcdCluster::start`] with more flags for every member.
    pub async fn start_with(n: usize, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(ReservedPort, ReservedPort)> = (0..n)
            .map(|_| (ReservedPort::new(), ReservedPort::new()))
            .collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{}", p.port()))
            .collect();
        let mut children = Vec::new();
        let mut client_urls = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let (c, p) = (c.port(), p.port());
            let log = std::fs::File::create(dir.path().join(format!("e{i}.log"))).unwrap();
            let args: Vec<String> = [
                "--name",
                &format!("e{i}"),
                "--data-dir",
                &dir.path().join(format!("e{i}")).display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{c}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{c}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{p}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{p}"),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "raftkv-differential",
            ]
            .map(String::from)
            .to_vec();
            let args: Vec<String> = args
                .into_iter()
                .chain(extra.iter().map(|a| a.to_string()))
                .collect();
            let mut cmd = child::command("etcd", &args, &[]);
            cmd.stdout(Stdio::null()).stderr(Stdio::from(log));
            children.push(OwnedChild::spawn(cmd).expect("spawn etcd"));
            client_urls.push(format!("http://127.0.0.1:{c}"));
        }
        let cluster = Self {
            client_urls,
            children,
            ports,
            dir,
        };
        cluster.wait_for_leader(Duration::from_secs(60)).await;
        // etcd refuses membership changes ("unhealthy cluster") until every member has
        // been connected for its HealthInterval (5 s): the members are connected once a
        // leader is elected, so wait that out from here.
        let healthy_at = Instant::now() + Duration::from_millis(5500);
        tokio::time::sleep_until(healthy_at.into()).await;
        cluster
    }

    /// The members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    async fn wait_for_leader(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for url in &self.client_urls {
                let call = async {
                    let mut c = MaintenanceClient::connect(url.clone()).await.ok()?;
                    c.status(StatusRequest {})
                        .await
                        .ok()
                        .map(|r| r.into_inner().leader)
                };
                leaders.push(
                    tokio::time::timeout(Duration::from_secs(1), call)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or(0),
                );
            }
            if leaders.iter().all(|l| *l != 0 && *l == leaders[0]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd cluster has no leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Run etcdctl (API 3) against `endpoint`: (succeeded, stdout, stderr).
pub fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoint.trim_start_matches("http://")))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("run etcdctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether etcdctl is installed.
pub fn etcdctl_available() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}
