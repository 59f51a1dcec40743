//! The StatefulSet in `deploy/kubernetes/statefulset.yaml`, run as its pods would run:
//! three `raftkv-server` processes started in parallel (`podManagementPolicy: Parallel`)
//! with the container's exact arguments, `$(POD_NAME)`/`$(POD_NAMESPACE)` expanded as
//! the kubelet expands them, TLS from files laid out as the Secret volume lays them out;
//! then probed as the kubelet probes them (the startup, liveness and readiness probes'
//! own paths and ports, from the manifest). What a loopback test cannot have is mapped,
//! and only that: each pod's DNS name and each `0.0.0.0:<port>` to a reserved
//! `127.0.0.1` port of its own, the pod's mount paths to directories of the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_yaml_ng::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support;
use crate::support::certs::{TestCa, Validity};
use crate::support::child::{self, OwnedChild};
use crate::support::ports::ReservedPort;
use crate::support::process::SERVER_BIN;

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/statefulset.yaml");
const START_DEADLINE: Duration = Duration::from_secs(60);
const PORTS: [u16; 3] = [2379, 2380, 2381];

/// An HTTP probe from the manifest: path and container port.
#[derive(Debug)]
struct Probe {
    path: String,
    port: u16,
}

/// The container's arguments and probes.
struct Container {
    args: Vec<String>,
    probes: BTreeMap<String, Probe>,
    tls_mount: String,
    data_mount: String,
}

fn read_manifest() -> Container {
    let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(MANIFEST).unwrap()).unwrap();
    let spec = &doc["spec"];
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    assert_eq!(spec["replicas"].as_u64(), Some(3));
    let container = &spec["template"]["spec"]["containers"][0];
    let named_ports: BTreeMap<String, u16> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    let probes = ["startupProbe", "livenessProbe", "readinessProbe"]
        .into_iter()
        .map(|kind| {
            let get = &container[kind]["httpGet"];
            let port = match &get["port"] {
                Value::String(name) => named_ports[name],
                other => other.as_u64().unwrap() as u16,
            };
            let path = get["path"].as_str().unwrap().to_string();
            (kind.to_string(), Probe { path, port })
        })
        .collect();
    let mount = |name: &str| {
        container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .and_then(|m| m["mountPath"].as_str())
            .unwrap()
            .to_string()
    };
    Container {
        args: container["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect(),
        probes,
        tls_mount: mount("tls"),
        data_mount: mount("data"),
    }
}

/// `GET path` over plain HTTP/1.1, as the kubelet's httpGet probe: the status code.
async fn probe(port: u16, path: &str) -> Option<u16> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.ok()?;
        String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// The pod's arguments with the kubelet's expansion and the loopback mapping applied.
fn pod_args(container: &Container, pod: usize, ports: &[Vec<ReservedPort>], dir: &Path) -> Vec<String> {
    let name = format!("raftkv-{pod}");
    container
        .args
        .iter()
        .map(|arg| {
            let mut arg = arg
                .replace("$(POD_NAME)", &name)
                .replace("$(POD_NAMESPACE)", "default")
                .replace(&container.tls_mount, &dir.join("tls").display().to_string())
                .replace(&container.data_mount, &dir.join(&name).display().to_string());
            for (other, reserved) in ports.iter().enumerate() {
                for (port, held) in PORTS.iter().zip(reserved) {
                    arg = arg.replace(
                        &format!("raftkv-{other}.raftkv.default.svc:{port}"),
                        &format!("127.0.0.1:{}", held.port()),
                    );
                }
            }
            for (port, held) in PORTS.iter().zip(&ports[pod]) {
                arg = arg.replace(&format!("0.0.0.0:{port}"), &format!("127.0.0.1:{}", held.port()));
            }
            arg
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statefulsets_pods_form_a_cluster_and_pass_the_kubelets_probes() {
    let _turn = support::ClusterTurn::take();
    let container = read_manifest();
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    // The Secret `raftkv-tls`, as its volume shows it.
    let ca = TestCa::new("raftkv CA");
    ca.write(&tls, "ca");
    ca.leaf("raftkv", Validity::Current).write(&tls, "server");
    ca.leaf("raftkv-peer", Validity::Current).write(&tls, "peer");

    let ports: Vec<Vec<ReservedPort>> = (0..3)
        .map(|_| PORTS.iter().map(|_| ReservedPort::new()).collect())
        .collect();
    let mut pods: Vec<Option<OwnedChild>> = (0..3)
        .map(|pod| {
            let args = pod_args(&container, pod, &ports, dir.path());
            for arg in &args {
                assert!(
                    !arg.contains("$(") && !arg.contains(".svc") && !arg.contains("0.0.0.0"),
                    "unmapped: {arg}"
                );
            }
            let mut cmd = child::command(SERVER_BIN, &args, &[]);
            cmd.stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join(format!("raftkv-{pod}.log"))).unwrap());
            Some(OwnedChild::spawn(cmd).unwrap())
        })
        .collect();
    let logs = || {
        (0..3)
            .map(|p| std::fs::read_to_string(dir.path().join(format!("raftkv-{p}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    // The container port each probe names, on pod `pod`.
    let port_of = |pod: usize, probe: &Probe| {
        let index = PORTS.iter().position(|p| *p == probe.port).unwrap();
        ports[pod][index].port()
    };

    // The startup probe passes on every pod once the cluster has formed.
    let startup = &container.probes["startupProbe"];
    let deadline = Instant::now() + START_DEADLINE;
    for pod in 0..3 {
        loop {
            let status = probe(port_of(pod, startup), &startup.path).await;
            if status == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "raftkv-{pod}: startup probe {} answered {status:?}\n{}",
                startup.path,
                logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for pod in 0..3 {
        for kind in ["livenessProbe", "readinessProbe"] {
            let p = &container.probes[kind];
            assert_eq!(
                probe(port_of(pod, p), &p.path).await,
                Some(200),
                "raftkv-{pod} {kind}"
            );
        }
    }

    // A pod lost: the other two stay live and ready (a quorum is left), as the
    // PodDisruptionBudget promises.
    pods[0] = None;
    let readiness = &container.probes["readinessProbe"];
    let deadline = Instant::now() + START_DEADLINE;
    for pod in 1..3 {
        loop {
            if probe(port_of(pod, readiness), &readiness.path).await == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "raftkv-{pod} not ready after raftkv-0 died\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let liveness = &container.probes["livenessProbe"];
        assert_eq!(probe(port_of(pod, liveness), &liveness.path).await, Some(200));
    }
}
