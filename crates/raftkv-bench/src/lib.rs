//! # raftkv-bench: an etcd v3 load generator, and the physical floor
//!
//! `raftkv-bench` drives any server that speaks etcd v3's KV gRPC API (raftkv, etcd)
//! with one of three workloads and reports throughput and latency percentiles. It is
//! the tool behind the README's performance table, so it stays small, honest about what
//! it measures, and has no dependencies beyond what the workspace already uses (plus
//! `hdrhistogram`).
//!
//! ```no_run
//! # async fn example() -> Result<(), raftkv_bench::Error> {
//! use std::time::Duration;
//! use raftkv_bench::{LoadConfig, Report, Workload};
//!
//! let mut config = LoadConfig::new(Workload::Put, vec!["http://127.0.0.1:2379".into()]);
//! config.duration = Duration::from_secs(5);
//! let result = raftkv_bench::workload::run(&config).await?;
//! print!("{}", Report::new(&result).to_text());
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//! - [`cli`]: the command line, parsed by clap into [`Command`], [`LoadConfig`],
//!   [`FloorConfig`]; `--help` is clap's.
//! - [`channel`]: opening one gRPC channel (bounded connect, Nagle off).
//! - [`workload`]: [`workload::connect`] (the long-lived channels),
//!   [`workload::prefill`], [`workload::measure`] (the client loops), and
//!   [`workload::run`], all three without a progress line.
//! - [`keys`]: the per-client xorshift RNG and the key names.
//! - [`histogram`]: the latency histograms' one shape, merge and percentiles.
//! - [`report`]: [`Report`] as text and as JSON.
//! - [`watchers`]: `--watchers`, etcd Watch streams held open (and drained) during
//!   the measured phase, to measure what watchers cost the server;
//!   [`watch_counting`]: their count-only decoding of the responses.
//! - [`progress`]: the live progress line on stderr.
//! - [`floor`]: fdatasync and loopback round-trip latency, the floor any replicated
//!   write stands on.
//! - [`error`]: [`Error`], the failures that stop a run (setup only).
//!
//! ## What a run measures
//! `--conns` gRPC channels are opened first, round-robin over the endpoints, and
//! `--clients` tasks share them (client `i` uses channel `i mod conns`); HTTP/2
//! multiplexes the clients of one channel. Each client is closed-loop: one request in
//! flight, the next sent as soon as the answer arrives, so the offered load is the
//! clients' concurrency, not a fixed rate. Latency is measured around the RPC, from
//! just before the request is handed to tonic to the decoded answer, in microseconds,
//! into each client's own HDR histogram (3 significant digits); the histograms are
//! merged when the run ends. The measured phase ends at `--duration` or after
//! `--total` successful or failed operations, whichever comes first; requests in flight
//! at the deadline are dropped and not counted. Throughput is successful operations
//! divided by the length of the measured phase; the `get --prefill` phase and the
//! connection setup are outside it.
//!
//! With `--watchers N`, N watchers are opened on one server (`--watch-endpoint`, else
//! the first endpoint) after the prefill and before the measured phase, over Watch
//! streams of their own connections; the events they receive during the measured phase
//! and the watchers that failed are reported. They watch keys the load never writes
//! (`--watch-mode idle`) or the whole key prefix (`written`: every watcher gets every
//! event). Their responses are decoded count-only (events are skipped and counted,
//! not decoded), so that this process's own CPU, on the same machine as the servers,
//! stays small next to what the watchers cost the server.
//!
//! Every request has a 10 s timeout. A failed or timed-out request counts as an error,
//! its latency is not recorded, its client pauses 10 ms (so an unreachable server does
//! not become a busy loop) and carries on; the first distinct error messages are kept
//! for the report. Only setup failures (a bad URL, a server not reachable when the
//! channels are opened, an unwritable `--json` file) stop a run.
//!
//! ## Caveats
//! - Closed loop only: with a slow server the clients slow down too, so latency under a
//!   fixed offered rate (coordinated omission) is not measured.
//! - Keys are uniform over the key space; no skewed (zipfian) or range workloads, no
//!   deletes, and values are a fixed byte pattern (compressible).
//! - A `get` of a key never written still counts as a success (an empty answer); use
//!   `--prefill` so reads find values.
//! - The load generator shares the machine with the servers when run locally, and
//!   competes with them for the CPU.
//! - No TLS, no authentication, no leader awareness: requests go to whichever endpoint a
//!   channel was opened to, and a follower forwards or refuses as the server does.

#![warn(missing_docs)]

pub mod channel;
pub mod cli;
pub mod error;
pub mod floor;
pub mod histogram;
pub mod keys;
pub mod progress;
pub mod report;
pub mod watch_counting;
pub mod watchers;
pub mod workload;

pub use cli::{Command, Consistency, FloorConfig, LoadConfig, WatchMode, Workload};
pub use error::{Error, Result};
pub use floor::FloorResult;
pub use report::Report;
pub use watchers::{WatchResult, WatchSet};
pub use workload::{LiveCounters, LoadResult};
