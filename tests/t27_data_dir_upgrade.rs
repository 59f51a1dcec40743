//! Upgrade: a data directory written by the openraft 0.9 build of raftkv opens with this
//! build, unchanged, with every key, revision, lease and the compaction point where they
//! were, and keeps working across a restart.
//!
//! The fixture `tests/fixtures/datadir-openraft-0.9.tar.gz` is a single-member data dir
//! written by `raftkv-server` at commit 6029709 (openraft 0.9.25) with etcdctl: `put
//! k001..k120 v<i>`, `put k001 again`, `del k002`, `lease grant 3600` and `put leased x
//! --lease=<id>`, `compact 5`, with `--snapshot-every 50` so it also holds a snapshot
//! file; then SIGTERM. openraft 0.10's log ids, votes, entries, memberships and snapshot
//! metadata encode as 0.9's did (bincode through serde, same field order; 0.10 keeps an
//! empty `snapshot_id` slot for exactly this), which is what this test holds us to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use crate::support;

use raftkv::*;

const LEASE_ID: i64 = 0x46aa_7f22_615b_2273;

fn unpack_fixture(into: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-openraft-0.9.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(status.success(), "tar failed on {}", fixture.display());
}

async fn start(dir: &Path) -> Node {
    let node = Node::builder().id(1).data_dir(dir).start().await.unwrap();
    node.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    node
}

async fn check_fixture_data(node: &Node) {
    let k001 = node.get("k001").await.unwrap().expect("k001 is in the fixture");
    assert_eq!(k001.value, b"again");
    assert_eq!(
        (k001.create_revision, k001.mod_revision, k001.version),
        (2, 122, 2)
    );
    assert!(node.get("k002").await.unwrap().is_none(), "k002 was deleted");
    let k120 = node.get("k120").await.unwrap().unwrap();
    assert_eq!((k120.value.as_slice(), k120.mod_revision), (&b"v120"[..], 121));
    let all = node.range(RangeRequest::prefix("k")).await.unwrap();
    assert_eq!(all.count, 119);
    let leased = node.get("leased").await.unwrap().unwrap();
    assert_eq!(leased.lease, LEASE_ID);
    let (_, lease) = node.lease_time_to_live(LEASE_ID, true).await.unwrap();
    assert_eq!(lease.granted_ttl, 3600);
    assert_eq!(lease.keys, vec![b"leased".to_vec()]);
    // Compacted at 5: revision 4 is gone, 5 is readable.
    let at = |revision| RangeRequest {
        revision,
        ..RangeRequest::key("k001")
    };
    assert!(matches!(
        node.range(at(4)).await,
        Err(Error::Request(RequestError::Compacted { .. }))
    ));
    let old = node.range(at(5)).await.unwrap();
    assert_eq!(old.kvs[0].value, b"v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_the_openraft_0_9_build_opens_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    unpack_fixture(dir.path());
    let data = dir.path().join("data");

    let node = start(&data).await;
    check_fixture_data(&node).await;
    assert!(node.metrics().revision >= 124);
    let put = node.put("after-upgrade", "yes").await.unwrap();
    assert!(put.header.revision > 124);
    node.shutdown().await;
    drop(node);

    let node = start(&data).await;
    check_fixture_data(&node).await;
    let after = node.get("after-upgrade").await.unwrap().unwrap();
    assert_eq!(after.mod_revision, put.header.revision);
    node.shutdown().await;
}

/// A member of the openraft 0.9 build (whose peer requests carry no protocol version) is
/// refused at its first exchange with a member of this build, with a message saying what
/// to do, before Raft sees its message; the current protocol passes the same check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_the_09_build_is_refused_at_the_first_exchange() {
    use raftkv_net::peer_protocol::{self, StampRequests};
    use raftkv_proto::raftkvpeer::raft_peer_client::RaftPeerClient;
    use raftkv_proto::raftkvpeer::{RaftBytes, ReadIndexRequest};

    let dir = tempfile::tempdir().unwrap();
    let slot = support::slot(1);
    let node = support::builder(&slot, dir.path()).start().await.unwrap();
    node.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(slot.peer_url.clone())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();

    // What the 0.9 build sends: the same service, no version.
    let mut old = RaftPeerClient::new(channel.clone());
    for status in [
        old.vote(RaftBytes { data: vec![1, 2, 3] }).await.unwrap_err(),
        old.read_index(ReadIndexRequest {}).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains(&format!(
                "this member speaks version {}, the peer version 1",
                raftkv_net::peer_protocol::VERSION
            )) && status.message().contains("upgrade every member"),
            "{}",
            status.message()
        );
    }

    // This build's client passes, and the answer names the version.
    let mut current = RaftPeerClient::with_interceptor(channel, StampRequests);
    let answer = current.read_index(ReadIndexRequest {}).await.unwrap();
    assert!(peer_protocol::check_answer(answer.metadata()).is_ok());
    node.shutdown().await;
}
