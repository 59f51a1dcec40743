//! etcd 3.4's snapshot format (a bbolt file holding etcd's buckets), read and written by
//! our own code against bbolt's documented page layout: [`import()`] turns an etcd
//! snapshot into one of ours (the migration path from etcd, used by
//! [`restore`](crate::raft::restore::restore)); [`export()`] writes one of ours as etcd's (what
//! `Maintenance.Snapshot` streams, so `etcdctl snapshot restore` can seed an etcd
//! cluster from raftkv).
//!
//! - `bbolt.rs`: reading a bbolt file, page by page.
//! - `bbolt_write.rs`: writing one, front to back.
//! - `wire.rs`: etcd's encodings inside its buckets (revision keys, `mvccpb.KeyValue`,
//!   `leasepb.Lease`).
//! - `import.rs`: etcd's buckets to our tree records.
//! - `export.rs`: our snapshot's records to etcd's buckets.
//! - `auth.rs`: the auth store in etcd's `auth`, `authUsers` and `authRoles` buckets.
//! - `members.rs`: the members in etcd's `members` and `cluster` buckets (export only).

mod auth;
pub mod bbolt;
pub mod bbolt_write;
pub mod export;
pub mod import;
mod members;
mod wire;

pub use export::{ExportReport, export};
pub use import::{ImportReport, convert as import, is_etcd_snapshot};
