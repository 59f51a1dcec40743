//! # raftkv: an embeddable, replicated, linearizable key-value store
//!
//! Link this crate, give the process a node id and a data directory, and get a
//! crash-safe key-value map with etcd v3's data model (revisions, MVCC reads,
//! transactions with compares):
//!
//! ```no_run
//! # async fn demo() -> raftkv::Result<()> {
//! let node = raftkv::Node::builder().id(1).data_dir("/tmp/raftkv-demo").start().await?;
//! node.put("greeting", "hello").await?;
//! let kv = node.get("greeting").await?.expect("present");
//! assert_eq!(kv.value, b"hello");
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The crate is the facade over the workspace: `raftkv-core` (types, watermarks, group
//! commit), `raftkv-storage` (sled log store and MVCC state machine). See
//! `ARCHITECTURE.md` for the write and read paths end to end.
//!
//! ## Caveats
//! - This release runs a single-node cluster: every write still goes through Raft (and
//!   its log sync), but there are no peers yet. Replication over gRPC is the next step.

#![warn(missing_docs)]

mod kv;
mod network;
mod node;

pub use node::{Node, NodeBuilder, NodeMetrics, StorageStats};
pub use raftkv_core::kv::*;
pub use raftkv_core::validate::{DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS, Limits};
pub use raftkv_core::{Error, ProposerConfig, RequestError, Result, Watermark};
