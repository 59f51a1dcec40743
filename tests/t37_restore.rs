//! Backup and restore into a new cluster, as etcd operators do it with `etcdctl snapshot
//! save` and `etcdutl snapshot restore`, here as the recovery from one surviving member:
//! a three-member cluster holding 100,000 keys and a lease loses two members, the
//! survivor (no quorum) is saved through `Maintenance.Snapshot`; `raftkv-server restore` seeds three
//! new data directories (new names, ports and token) from the file; the new members,
//! started with the same flags, serve the same keys at the same revision (HashKV equal),
//! the lease, their own membership, and take writes. A second restore into a used data
//! directory is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcdserverpb::request_op::Request;
use raftkv_proto::etcdserverpb::{
    HashKvRequest, LeaseGrantRequest, LeaseTimeToLiveRequest, MemberListRequest, PutRequest, RangeRequest,
    RequestOp, SnapshotRequest, TxnRequest,
};
use tokio::io::AsyncWriteExt as _;
use tonic::transport::Channel;

use crate::support;
use crate::support::child::{self, OwnedChild};
use crate::support::ports::ReservedPort;
use crate::support::process::{ProcessCluster, SERVER_BIN, run_restore};

const KEYS: usize = 100_000;
// The old cluster takes transactions this large (`--max-txn-ops`): fewer round trips.
const PER_TXN: usize = 1000;
const DEADLINE: Duration = Duration::from_secs(60);

fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

fn key(i: usize) -> Vec<u8> {
    format!("/data/{i:06}").into_bytes()
}

/// Write the keys in transactions of `PER_TXN` puts, four writers at once.
async fn fill(url: &str, lease: i64) {
    let batches: Vec<Vec<usize>> = (0..KEYS)
        .collect::<Vec<_>>()
        .chunks(PER_TXN)
        .map(<[usize]>::to_vec)
        .collect();
    let batches = std::sync::Arc::new(parking_lot::Mutex::new(batches));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (batches, mut kv) = (batches.clone(), KvClient::new(channel(url)));
            tokio::spawn(async move {
                loop {
                    let Some(batch) = batches.lock().pop() else { return };
                    let success = batch
                        .iter()
                        .map(|i| RequestOp {
                            request: Some(Request::RequestPut(PutRequest {
                                key: key(*i),
                                value: format!("value-{i}").into_bytes(),
                                ..Default::default()
                            })),
                        })
                        .collect();
                    kv.txn(TxnRequest {
                        success,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    KvClient::new(channel(url))
        .put(PutRequest {
            key: b"/leased".to_vec(),
            value: b"held".to_vec(),
            lease,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The Snapshot stream, written to `path`.
async fn save_snapshot(url: &str, path: &Path) {
    let mut stream = MaintenanceClient::new(channel(url))
        .snapshot(SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut file = tokio::fs::File::create(path).await.unwrap();
    while let Some(chunk) = stream.message().await.unwrap() {
        file.write_all(&chunk.blob).await.unwrap();
    }
    file.sync_all().await.unwrap();
}

/// (revision, hash, key count, a sample value) as a member serves them.
async fn fingerprint(url: &str, revision: i64) -> (i64, u32, i64, Vec<u8>) {
    // The linearizable reads first: once answered, this member has applied everything
    // committed before them, so its local HashKV covers the same writes.
    let mut kv = KvClient::new(channel(url));
    let count = kv
        .range(RangeRequest {
            key: b"/data/".to_vec(),
            range_end: b"/data0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let sample = kv
        .range(RangeRequest {
            key: key(KEYS / 2),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let hash = MaintenanceClient::new(channel(url))
        .hash_kv(HashKvRequest { revision })
        .await
        .unwrap()
        .into_inner();
    (
        count.header.unwrap().revision,
        hash.hash,
        count.count,
        sample.kvs.first().map(|kv| kv.value.clone()).unwrap_or_default(),
    )
}

/// The cluster id a member puts in its response headers.
async fn cluster_id(url: &str) -> u64 {
    KvClient::new(channel(url))
        .range(RangeRequest {
            key: b"/leased".to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .cluster_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_into_a_new_cluster_with_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("backup.db");

    // The old cluster: 100,000 keys and a lease, saved, fingerprinted, stopped.
    let (before, lease, old_cluster) = {
        let mut cluster = ProcessCluster::start(3, &["--max-txn-ops", "1000"]);
        cluster.agreed_leader(DEADLINE).await;
        let url = cluster.url(1);
        let lease = LeaseClient::new(channel(&url))
            .lease_grant(LeaseGrantRequest { ttl: 3600, id: 0 })
            .await
            .unwrap()
            .into_inner()
            .id;
        fill(&url, lease).await;
        let revision = fingerprint(&url, 0).await.0;
        let before = fingerprint(&url, revision).await;
        // The survivor has applied everything: a linearizable read through it waited for
        // that. Then the other two are lost.
        assert_eq!(fingerprint(&cluster.url(2), revision).await, before);
        cluster.kill(1);
        cluster.kill(3);
        save_snapshot(&cluster.url(2), &snapshot).await;
        (before, lease, cluster_id(&cluster.url(2)).await)
    };
    assert_eq!(before.2, KEYS as i64);

    // The new cluster's flags, as `etcdutl snapshot restore` takes them.
    let _turn = support::ClusterTurn::take();
    let ports: Vec<(ReservedPort, ReservedPort)> = (0..3)
        .map(|_| (ReservedPort::new(), ReservedPort::new()))
        .collect();
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("r{i}=http://127.0.0.1:{}", p.port()))
        .collect();
    let cluster = cluster.join(",");
    let member_flags = |i: usize| -> Vec<String> {
        vec![
            format!("--name=r{i}"),
            format!("--data-dir={}", dir.path().join(format!("r{i}")).display()),
            format!("--initial-cluster={cluster}"),
            "--initial-cluster-token=restored".into(),
            format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                ports[i].1.port()
            ),
        ]
    };
    // The three restores at once, as three operators on three machines would run them.
    let restores: Vec<_> = (0..3)
        .map(|i| {
            let mut args = vec![snapshot.display().to_string()];
            args.extend(member_flags(i));
            std::thread::spawn(move || run_restore(&args))
        })
        .collect();
    for (i, restore) in restores.into_iter().enumerate() {
        let (code, out) = restore.join().unwrap();
        assert_eq!(code, Some(0), "restore r{i}: {out}");
    }
    let mut again = vec![snapshot.display().to_string()];
    again.extend(member_flags(0));
    let (code, out) = run_restore(&again);
    assert!(code == Some(1) && out.contains("exists"), "{code:?}: {out}");

    let mut members = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let mut args = member_flags(i);
        args.extend([
            format!("--listen-client-urls=http://127.0.0.1:{}", client.port()),
            format!("--advertise-client-urls=http://127.0.0.1:{}", client.port()),
            format!("--listen-peer-urls=http://127.0.0.1:{}", peer.port()),
        ]);
        let mut cmd = child::command(SERVER_BIN, &args, &[]);
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("r{i}.log"))).unwrap());
        members.push(OwnedChild::spawn(cmd).unwrap());
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("http://127.0.0.1:{}", c.port()))
        .collect();
    let logs = || {
        (0..3)
            .map(|i| std::fs::read_to_string(dir.path().join(format!("r{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    // Serving linearizable reads (a leader) on every member.
    let deadline = Instant::now() + DEADLINE;
    for url in &urls {
        loop {
            let read = KvClient::new(channel(url))
                .range(RangeRequest {
                    key: b"/leased".to_vec(),
                    ..Default::default()
                })
                .await;
            if read.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url} not serving: {read:?}\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let new_cluster = cluster_id(&urls[0]).await;
    for url in &urls {
        assert_eq!(fingerprint(url, before.0).await, before, "{url}");
        assert_eq!(cluster_id(url).await, new_cluster, "{url}");
    }
    assert_ne!(new_cluster, old_cluster, "a restored cluster is a new cluster");
    let ttl = LeaseClient::new(channel(&urls[1]))
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ttl.ttl > 0 && ttl.keys == [b"/leased".to_vec()], "{ttl:?}");
    // Each member publishes its name and client URLs once it runs.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = ClusterClient::new(channel(&urls[0]))
            .member_list(MemberListRequest { linearizable: true })
            .await
            .unwrap()
            .into_inner();
        let mut names: Vec<String> = listed.members.iter().map(|m| m.name.clone()).collect();
        names.sort();
        if names == ["r0", "r1", "r2"] {
            break;
        }
        assert!(Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let put = KvClient::new(channel(&urls[2]))
        .put(PutRequest {
            key: b"/after".to_vec(),
            value: b"restore".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(put.header.unwrap().revision, before.0 + 1);
    drop(members);
}
