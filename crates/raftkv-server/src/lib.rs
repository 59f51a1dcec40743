//! # raftkv-server: the standalone server's configuration and process plumbing
//!
//! The `raftkv-server` binary (in the root package, so integration tests can run it as a
//! real process) is a thin `main` over this crate and the `raftkv` library:
//!
//! - [`config`]: the command line (`--id`, `--data-dir`, `--listen-client`,
//!   `--listen-peer`, `--initial-cluster 1=http://127.0.0.1:2380,...`, `--join`, ...),
//!   parsed into a typed [`Config`] with clear errors.
//! - [`socket_activation`]: listening sockets inherited the systemd way (`LISTEN_FDS`),
//!   which replace `--listen-peer` / `--listen-client`.
//! - [`signals`]: SIGTERM / SIGINT as a future, for a clean shutdown.
//! - [`logging`]: `tracing` to stderr, filtered by `RUST_LOG` or `--log`.
//!
//! It does not depend on the `raftkv` library (the library's package holds the binary,
//! and a dependency back would be a cycle).
//!
//! ## Caveats
//! - No metrics / health HTTP endpoint yet.

#![warn(missing_docs)]

pub mod config;
pub mod logging;
pub mod signals;
pub mod socket_activation;

pub use config::{Config, ConfigError, InheritedAddrs};
