//! A three-member etcd 3.4 cluster (Debian's `etcd-server`) on 127.0.0.1, for
//! differential tests: the same etcdctl script against etcd and against raftkv. Default
//! durability (etcd fsyncs its WAL). Killed on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::StatusRequest;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    pub client_urls: Vec<String>,
    children: Vec<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl EtcdCluster {
    pub async fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut children = Vec::new();
        let mut client_urls = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.path().join(format!("e{i}.log"))).unwrap();
            let child = Command::new("etcd")
                .args([
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
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn etcd");
            children.push(child);
            client_urls.push(format!("http://127.0.0.1:{c}"));
        }
        let cluster = Self {
            dir,
            client_urls,
            children,
        };
        cluster.wait_for_leader(Duration::from_secs(60)).await;
        // etcd refuses membership changes ("unhealthy cluster") until every member has
        // been connected for its HealthInterval (5 s): the members are connected once a
        // leader is elected, so wait that out from here.
        let healthy_at = Instant::now() + Duration::from_millis(5500);
        tokio::time::sleep_until(healthy_at.into()).await;
        cluster
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

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
