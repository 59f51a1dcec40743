//! The main job: a three-node raftkv cluster on this machine, one command.
//!
//! `cargo run --release --example three_node` starts three nodes as child processes (this
//! same program, re-run in node mode) on 127.0.0.1, writes and reads through the client
//! crate, SIGKILLs the leader, shows a new leader elected and every acknowledged write
//! still readable, restarts the old leader and shows it catch up, then exits 0.
//!
//! `--keep-running` leaves the cluster up afterwards (Ctrl-C stops it) so you can point
//! `etcdctl` at it. `--data-dir DIR` keeps the data somewhere you choose.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv::Node;
use raftkv_client::{Client, ClientOptions, RangeRequest};
use raftkv_proto::etcdserverpb::StatusRequest;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Member {
    id: u64,
    client_url: String,
    args: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Member {
    fn start(&mut self) -> Res<()> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--node")
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("ready") => {
                self.child = Some(child);
                Ok(())
            }
            _ => {
                let _ = child.kill();
                Err(format!("node {} did not start", self.id).into())
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn status(url: &str) -> Option<raftkv_proto::etcdserverpb::StatusResponse> {
    let call = async {
        let mut c = MaintenanceClient::connect(url.to_string()).await.ok()?;
        c.status(StatusRequest {}).await.ok().map(|r| r.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .ok()
        .flatten()
}

/// The leader every running member agrees on.
async fn agreed_leader(members: &[Member], timeout: Duration) -> Res<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = Vec::new();
        for m in members.iter().filter(|m| m.child.is_some()) {
            seen.push(status(&m.client_url).await.map_or(0, |s| s.leader));
        }
        if let Some(&first) = seen.first()
            && first != 0
            && seen.iter().all(|l| *l == first)
            && members.iter().any(|m| m.id == first && m.child.is_some())
        {
            return Ok(first);
        }
        if Instant::now() > deadline {
            return Err(format!("no leader agreed within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--node") {
        return run_node(&args[1..]).await;
    }
    let keep_running = args.iter().any(|a| a == "--keep-running");
    let temp = tempfile::tempdir()?;
    let dir = match args.iter().position(|a| a == "--data-dir") {
        Some(i) => std::path::PathBuf::from(args.get(i + 1).ok_or("--data-dir needs a path")?),
        None => temp.path().to_path_buf(),
    };
    let ports: Vec<(u64, u16, u16)> = (1..=3)
        .map(|id| Ok((id, free_port()?, free_port()?)))
        .collect::<Res<_>>()?;
    let cluster: Vec<String> = ports
        .iter()
        .map(|(id, _, p)| format!("{id}=http://127.0.0.1:{p}"))
        .collect();
    let mut members: Vec<Member> = ports
        .iter()
        .map(|(id, c, p)| Member {
            id: *id,
            client_url: format!("http://127.0.0.1:{c}"),
            args: vec![
                id.to_string(),
                dir.join(format!("node-{id}")).display().to_string(),
                format!("127.0.0.1:{c}"),
                format!("127.0.0.1:{p}"),
                cluster.join(","),
            ],
            child: None,
        })
        .collect();
    for m in &mut members {
        m.start()?;
    }
    let urls: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    println!("started 3 nodes, clients at {}", urls.join(" "));
    let outcome = demo(&mut members, &urls).await;
    if outcome.is_ok() && keep_running {
        println!(
            "cluster running; try: ETCDCTL_API=3 etcdctl --endpoints={} put hello world",
            urls.join(",")
        );
        println!("Ctrl-C stops it");
        tokio::signal::ctrl_c().await?;
    }
    for m in &mut members {
        m.kill();
    }
    outcome
}

async fn demo(members: &mut [Member], urls: &[String]) -> Res<()> {
    let t = Instant::now();
    let leader = agreed_leader(members, Duration::from_secs(30)).await?;
    println!("node {leader} is leader after {:.1?}", t.elapsed());
    let client = Client::connect_with(
        urls.to_vec(),
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        },
    )
    .await?;
    let t = Instant::now();
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in (w..1000).step_by(16) {
                    client.put(format!("key/{i:04}"), format!("value {i}")).await?;
                }
                Ok::<(), raftkv_client::ClientError>(())
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    println!(
        "wrote 1000 keys through the client in {:.2?} (16 concurrent writers)",
        t.elapsed()
    );
    let all = client.range(RangeRequest::prefix("key/")).await?;
    println!(
        "linearizable range read: {} keys at revision {}",
        all.count, all.header.revision
    );

    let victim = members
        .iter_mut()
        .find(|m| m.id == leader)
        .ok_or("leader not found")?;
    victim.kill();
    let t = Instant::now();
    let new_leader = agreed_leader(members, Duration::from_secs(30)).await?;
    println!(
        "killed leader {leader} (SIGKILL); node {new_leader} elected after {:.2?}",
        t.elapsed()
    );
    let all = client.range(RangeRequest::prefix("key/")).await?;
    if all.count != 1000 {
        return Err(format!("only {} of 1000 acknowledged keys readable", all.count).into());
    }
    for i in 1000..1100 {
        client.put(format!("key/{i:04}"), format!("value {i}")).await?;
    }
    println!("all 1000 acknowledged keys readable; wrote 100 more under the new leader");

    let old = members
        .iter_mut()
        .find(|m| m.id == leader)
        .ok_or("leader not found")?;
    old.start()?;
    let old_url = old.client_url.clone();
    let target = status(
        &members
            .iter()
            .find(|m| m.id == new_leader)
            .ok_or("no leader")?
            .client_url,
    )
    .await
    .ok_or("leader status")?
    .raft_index;
    let t = Instant::now();
    loop {
        if let Some(s) = status(&old_url).await
            && s.raft_applied_index >= target
            && s.leader == new_leader
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err("the old leader did not catch up".into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let local = Client::connect([old_url])
        .await?
        .range(RangeRequest::prefix("key/").with_serializable(true))
        .await?;
    println!(
        "restarted node {leader}: a follower of {new_leader}, caught up in {:.2?}, holds {} keys locally",
        t.elapsed(),
        local.count
    );
    if local.count != 1100 {
        return Err("the restarted node is missing keys".into());
    }
    println!("ok");
    Ok(())
}

/// Node mode: `--node ID DATA_DIR CLIENT_ADDR PEER_ADDR INITIAL_CLUSTER`.
async fn run_node(args: &[String]) -> Res<()> {
    let [id, data_dir, client, peer, cluster] = args else {
        return Err("usage: --node ID DATA_DIR CLIENT_ADDR PEER_ADDR INITIAL_CLUSTER".into());
    };
    // Numeric names, so the members' ids are 1, 2, 3.
    let members: BTreeMap<u64, String> = raftkv_server::config::urls::members_by_id(
        &raftkv_server::config::parse_initial_cluster(cluster, "etcd-cluster")?,
    );
    let node = Node::builder()
        .id(id.parse()?)
        .data_dir(data_dir)
        .listen_client(client.parse()?)
        .listen_peer(peer.parse()?)
        .initial_cluster(members)
        .start()
        .await?;
    println!("ready");
    raftkv_server::signals::terminate().await;
    node.shutdown().await;
    Ok(())
}
