//! # A guide to raftkv as a library
//!
//! Documentation only: what an application that embeds raftkv does, in the order it
//! meets it. Every example here runs as a doc-test.
//!
//! ## Embed a node
//!
//! A node needs an id and a data directory; alone, it is a cluster of one and elects
//! itself. Start it on a Tokio runtime (see [Runtime and shutdown](#runtime-and-shutdown)).
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
//! node.wait_for_leader(std::time::Duration::from_secs(10)).await?;
//! node.put("config/mode", "blue").await?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Form a cluster
//!
//! Give every member a peer address to listen on and the same initial membership (id
//! -> peer URL). Three members survive the loss of one; five, of two. Add a client
//! address and the member also serves etcd's v3 gRPC API (`etcdctl`, any etcd client,
//! `raftkv-client`).
//!
//! ```no_run
//! # async fn member(id: u64, data: &str) -> raftkv::Result<raftkv::Node> {
//! let members = [
//!     (1, "http://10.0.0.1:2380".to_string()),
//!     (2, "http://10.0.0.2:2380".to_string()),
//!     (3, "http://10.0.0.3:2380".to_string()),
//! ];
//! let node = raftkv::Node::builder()
//!     .id(id)
//!     .data_dir(data)
//!     .listen_peer(format!("10.0.0.{id}:2380").parse().expect("an address"))
//!     .listen_client(format!("10.0.0.{id}:2379").parse().expect("an address"))
//!     .initial_cluster(members)
//!     .start()
//!     .await?;
//! # Ok(node) }
//! ```
//!
//! Writes on any member are forwarded to the leader; members join and leave later
//! with `Node::member_add` / `member_remove` (etcd's runtime reconfiguration). In your
//! tests, [`crate::testing::TestCluster`] (feature `testing`) starts such a cluster in
//! one call, in-process on loopback, and stops, kills, restarts and partitions its
//! members.
//!
//! ## Read consistency
//!
//! - **Linearizable** (`get`, `range`, the default): sees every write acknowledged
//!   before the read started, on any member; costs a round of the leader's heartbeat
//!   (batched across concurrent reads).
//! - **Serializable** (`get_serializable`, `RangeRequest::with_serializable(true)`): this
//!   member's applied state, no round trip; on a lagging or cut-off follower, stale.
//! - **At a revision** (`RangeRequest::with_revision`): the store as it was then (MVCC),
//!   until compaction removes that history.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
//! use raftkv::RangeRequest;
//! let first = node.put("stock/apples", "3").await?;
//! node.put("stock/apples", "2").await?;
//! let now = node.get("stock/apples").await?.map(|kv| kv.value);
//! let local = node.get_serializable("stock/apples").await?.map(|kv| kv.value);
//! let then = node
//!     .range(RangeRequest::key("stock/apples").with_revision(first.header.revision))
//!     .await?;
//! assert_eq!((now, local), (Some(b"2".to_vec()), Some(b"2".to_vec())));
//! assert_eq!(then.kvs[0].value, b"3");
//! # node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Watch a prefix from a revision
//!
//! A watch delivers every change under a key or prefix, in revision order and without
//! gaps; from a past revision it first replays the history. Resume a broken watch from
//! the last revision you saw + 1. For a cache of a prefix kept current (list, then
//! watch, re-list when the history was compacted), use an [`crate::Informer`]
//! (`Node::informer`, `raftkv_client::Client::informer`).
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
//! use raftkv::WatchRequest;
//! let first = node.put("jobs/1", "queued").await?;
//! node.put("jobs/2", "queued").await?;
//! let mut request = WatchRequest::prefix("jobs/");
//! request.start_revision = first.header.revision;
//! let mut watch = node.watch(request)?;
//! let mut seen = Vec::new();
//! while seen.len() < 2 {
//!     let response = watch.next().await.ok_or("the watch ended")?;
//!     seen.extend(response.events.into_iter().map(|e| e.kv.key));
//! }
//! assert_eq!(seen, [b"jobs/1".to_vec(), b"jobs/2".to_vec()]);
//! # node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Lease-backed service registration
//!
//! Put the instance's key under a lease and keep the lease alive (every third of its
//! TTL); when the instance dies the lease expires and the key goes, and every watcher
//! of the prefix hears of it. `examples/service_registration.rs` is the whole pattern,
//! with discovery through an informer.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let node = raftkv::Node::builder().id(1).data_dir(dir.path()).start().await?;
//! use raftkv::PutRequest;
//! let lease = node.lease_grant(0, 10).await?;
//! node.put_with(PutRequest { lease: lease.id, ..PutRequest::new("services/api/a", "10.0.0.7:80") })
//!     .await?;
//! node.lease_keep_alive(lease.id).await?; // from a task, every ~3 s
//! node.lease_revoke(lease.id).await?; // a clean stop: the key goes at once
//! assert!(node.get("services/api/a").await?.is_none());
//! # node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Locks and elections, with fencing
//!
//! `Node::lock` and `Node::campaign` are etcd's recipes: a key under the caller's lease,
//! granted in creation order. A holder paused past its lease's TTL loses the lock
//! without knowing it, so **fence** every write the lock protects: a txn whose compare
//! is [`crate::LockKey::fence`] (or [`crate::LeaderKey::fence`]) applies only while that
//! holder's key exists. See `Node::lock`'s example, and `examples/distributed_lock.rs`
//! and `examples/leader_election.rs` for a worker pool.
//!
//! ## From another process: `raftkv-client`
//!
//! Every member with a client address serves etcd's v3 gRPC API; `raftkv-client` speaks
//! it (to raftkv and to etcd) with the same calls as the embedded API, fails over between
//! endpoints, and has the same List-Watch cache.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::time::Duration;
//! use raftkv_client::{Client, PutRequest, RequestOp, TxnRequest};
//! let cluster = raftkv::testing::TestCluster::start(3).await?;
//! let client = Client::connect(cluster.client_urls()).await?;
//! client.put("services/api/a", "10.0.0.7:80").await?;
//! let services = client.informer("services/", ());
//! services.wait_synced(Duration::from_secs(10)).await?;
//! assert_eq!(services.len(), 1);
//!
//! // A lock and a write fenced by it.
//! let lease = client.lease_grant(0, 30).await?;
//! let lock = client.lock("locks/report", lease.id).await?;
//! let fenced = TxnRequest {
//!     compare: vec![lock.fence()],
//!     success: vec![RequestOp::Put(PutRequest::new("report/owner", "me"))],
//!     failure: vec![],
//! };
//! assert!(client.txn(fenced).await?.succeeded);
//! client.unlock(lock.key).await?;
//! # drop(services);
//! # cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Errors, and what is safe to retry
//!
//! Every call returns [`crate::Error`]; [`crate::Error::is_retryable`] says when the same
//! request may simply be sent again.
//!
//! | Error | Meaning | Retry? |
//! |---|---|---|
//! | `Request(..)` | the request is wrong (too large, bad range, compacted revision, missing lease, failed auth) | no: fix it |
//! | `NotLeader`, `Timeout`, `TooManyRequests` | no leader right now, no quorum in time, apply lagging | yes, after a pause (elsewhere for `NotLeader`) |
//! | `Unknown` | a write was handed to Raft and the answer was lost: it may have applied, whole | read first, unless the write is idempotent |
//! | `NoSpace`, `Corrupt` | an alarm refuses writes | after an operator acts |
//! | `Shutdown`, `Storage` | this node stopped, or its disk failed | on another member, or after a restart |
//!
//! A write is never applied in part, and dropping its future does not cancel it (see
//! the crate docs' Cancellation section). To make any write safe to retry, guard it with
//! a compare on the key's `mod_revision` as you last read it.
//!
//! ## Runtime and shutdown
//!
//! A node runs its servers and background tasks on the Tokio runtime it was started on;
//! a multi-thread runtime is what it is built and measured for. A current-thread runtime
//! works too (`tests/t47_runtime_and_shutdown.rs`), with everything sharing one thread.
//!
//! `Node::shutdown` stops in this order: the member stops standing for election, watch
//! streams end, the servers finish the requests in flight (bounded by the request
//! timeout), then Raft stops; afterwards every call answers `Error::Shutdown`.
//! Acknowledged writes were durable before they were acknowledged. The data directory
//! stays locked until the last handle to the node is dropped (clones, watch streams); an
//! informer lets go of its node by itself once the node is shut down (it stops, keeps
//! its cache, and says why in `Informer::stopped`). For a planned restart of a cluster
//! member, hand leadership over first (`Node::step_down` or `Node::transfer_leader`) so
//! the cluster holds no election.
