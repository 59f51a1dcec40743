//! # raftkv-server: the standalone server's configuration and process plumbing
//!
//! The `raftkv-server` binary (in the root package, so integration tests can run it as a
//! real process) is a thin `main` over this crate and the `raftkv` library:
//!
//! - [`config`]: etcd's command line (`--name`, `--initial-cluster name=url,...`,
//!   `--listen-client-urls`, ...), its `ETCD_<FLAG>` variables and its YAML config file,
//!   parsed into a typed [`Config`] with clear errors; etcd's flags raftkv lacks are
//!   refused or warned about by name.
//! - [`socket_activation`]: listening sockets inherited the systemd way (`LISTEN_FDS`),
//!   which replace `--listen-peer-urls` / `--listen-client-urls`.
//! - [`signals`]: SIGTERM / SIGINT as a future, for a clean shutdown.
//! - [`logging`]: `tracing` to stderr, filtered by `--log`, `--log-level` or `RUST_LOG`.
//! - [`runtime`]: the Tokio runtime, one async worker fewer than the cores (the disk
//!   threads get the last), `TOKIO_WORKER_THREADS` to override.
//!
//! It does not depend on the `raftkv` library (the library's package holds the binary,
//! and a dependency back would be a cycle).

#![warn(missing_docs)]

pub mod config;
pub mod logging;
pub mod runtime;
pub mod signals;
pub mod socket_activation;

pub use config::{Config, ConfigError, InheritedAddrs, Loaded, RestorePlan, TlsConfig};
