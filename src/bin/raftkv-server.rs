//! `raftkv-server`: one raftkv node serving etcd's v3 gRPC API (KV) to clients and the
//! Raft peer protocol to the other members. See `raftkv-server --help`.

use std::process::ExitCode;

/// The server's allocator (feature `mimalloc`, default on). With glibc's malloc, 10 minutes
/// of puts at 64 clients (`benches/steady-leader.sh`) ran at 4,897 op/s in the first minute
/// and 2,866 in the last, and by then malloc and free took about a quarter of the leader's
/// CPU (perf); with mimalloc the same run did 6,807 and 3,778 (README, "Performance").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 2.x's `mi_option_purge_delay`: its index in v2's `mi_option_e`
/// (`mimalloc.h`; the Rust bindings name only some of the options).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc 2.x's default purge delay (ms): how `tune_allocator` recognises the option.
#[cfg(feature = "mimalloc")]
const MI_DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 10;
/// How long freed memory stays committed for reuse before mimalloc gives it back to the
/// kernel (ms).
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Keep freed memory committed for a second instead of mimalloc's 10 ms. sled allocates
/// a fresh 512 KiB IO buffer for every log segment it fills (dozens a second per database
/// under load) and frees the sealed one; with a 10 ms delay each new buffer's pages were
/// faulted in and zeroed by the kernel again: 5 % of a 64-client put run's samples in
/// page faults (`perf record -a`, `clear_page_erms` under sled's `Log::reserve`). Same-run
/// A/B in the README ("Performance"). `MIMALLOC_PURGE_DELAY` set by the operator wins.
#[cfg(feature = "mimalloc")]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain option reads and writes of the linked mimalloc; the default check
    // makes sure index 15 is the purge delay of the mimalloc this binary links.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_DEFAULT_PURGE_DELAY_MS {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

use raftkv::tls::{ClientTls, ServerTls};
use raftkv::{AutoDefrag, Node};
use raftkv_server::config::AutoCompactionConfig;
use raftkv_server::socket_activation::{self, Inherited};
use raftkv_server::{Config, ConfigError, InheritedAddrs, Loaded, RestorePlan, TlsConfig, logging, signals};

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    tune_allocator();
    if std::env::args().nth(1).as_deref() == Some("restore") {
        return restore(std::env::args().skip(2));
    }
    // First, while this is the only thread: it edits the environment.
    let inherited = match socket_activation::take_inherited() {
        Ok(inherited) => inherited,
        Err(e) => {
            eprintln!("raftkv-server: {e}");
            return ExitCode::from(2);
        }
    };
    let addrs = InheritedAddrs {
        peer: inherited.peer_addr(),
        client: inherited.client_addr(),
    };
    // Before anything touches the disk: a bad configuration exits 2 having written nothing.
    let Loaded { config, warnings } = match Config::load(std::env::args().skip(1), addrs) {
        Ok(loaded) => loaded,
        Err(ConfigError::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("raftkv-server: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log.as_deref());
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    // The certificates are read now, so that a missing or bad file is a configuration
    // error (exit 2, nothing written) rather than a failure after start.
    let tls = match Tls::load(&config.tls) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("raftkv-server: {e}");
            return ExitCode::from(2);
        }
    };
    // A panic is a bug: stop the whole process (a restart recovers from what is durable)
    // rather than keep serving with one task or thread missing.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        tracing::error!(%info, "panic: aborting");
        std::process::abort();
    }));
    let runtime = match raftkv_server::runtime::build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("raftkv-server: {e}");
            // A bad worker count is a bad configuration (exit 2, as for a bad flag).
            return match e {
                raftkv_server::runtime::RuntimeError::WorkerCount(_) => ExitCode::from(2),
                raftkv_server::runtime::RuntimeError::Start(_) => ExitCode::FAILURE,
            };
        }
    };
    match runtime.block_on(serve(config, inherited, tls)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "raftkv-server failed");
            eprintln!("raftkv-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `raftkv-server restore SNAPSHOT ...`: seed a new member's data directory (etcdutl's
/// `snapshot restore`). Exit 2 for a bad command line, 1 if the restore fails.
fn restore(args: impl Iterator<Item = String>) -> ExitCode {
    let plan = match RestorePlan::load(args) {
        Ok(plan) => plan,
        Err(ConfigError::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("raftkv-server restore: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(Some("warn"));
    let restored = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(raftkv_storage::raft::restore::restore(
                    &plan.snapshot,
                    &plan.data_dir,
                    plan.id,
                    &plan.members,
                ))
                .map_err(|e| e.to_string())
        });
    match restored {
        Ok(report) => {
            println!(
                "restored {} into {}: member {:x} of cluster {:x} ({} members), revision {}, log index {}",
                plan.snapshot.display(),
                plan.data_dir.display(),
                plan.id,
                report.cluster_id,
                plan.members.len(),
                report.revision,
                report.applied_index
            );
            if let Some(import) = &report.etcd_import {
                println!(
                    "read as an etcd snapshot: {} versions, {} leases, compact revision {}",
                    import.versions, import.leases, import.compact_revision
                );
                if import.users > 0 {
                    println!(
                        "auth: {} users, {}",
                        import.users,
                        if import.auth_enabled {
                            "enabled"
                        } else {
                            "disabled"
                        }
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftkv-server restore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long a joining member asks the others for its id before giving up.
const MEMBER_LOOKUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The TLS configurations the flags asked for, loaded.
struct Tls {
    client: Option<ServerTls>,
    peer: Option<ServerTls>,
    peer_client: Option<ClientTls>,
}

impl Tls {
    fn load(config: &TlsConfig) -> Result<Self, String> {
        let server = |settings: &Option<raftkv::tls::TlsSettings>, alpn, flags: &str| {
            settings
                .as_ref()
                .map(|s| ServerTls::new(s, alpn))
                .transpose()
                .map_err(|e| format!("{flags}: {e}"))
        };
        Ok(Self {
            client: server(
                &config.client,
                raftkv::tls::CLIENT_PORT_ALPN,
                "client TLS (--cert-file, --key-file, --trusted-ca-file)",
            )?,
            peer: server(
                &config.peer_server,
                raftkv::tls::PEER_PORT_ALPN,
                "peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)",
            )?,
            peer_client: config
                .peer_client
                .as_ref()
                .map(ClientTls::new)
                .transpose()
                .map_err(|e| {
                    format!("peer TLS for dialing members (--peer-client-cert-file or --peer-cert-file): {e}")
                })?,
        })
    }
}

async fn serve(config: Config, inherited: Inherited, tls: Tls) -> raftkv::Result<()> {
    let id = match config.id {
        Some(id) => id,
        None => {
            let id = raftkv_net::find_own_id(
                &config.existing_peers,
                &config.advertise_peer_url,
                MEMBER_LOOKUP_DEADLINE,
                tls.peer_client.clone(),
            )
            .await
            .map_err(|e| raftkv::Error::Internal(e.to_string()))?;
            tracing::info!(id = format_args!("{id:x}"), "found this member's id at the peers");
            id
        }
    };
    let mut builder = Node::builder()
        .id(id)
        .name(config.name.clone())
        .data_dir(&config.data_dir);
    builder = match inherited.peer {
        Some(listener) => builder.peer_listener(listener),
        None => builder.listen_peer(config.listen_peer.addr),
    };
    builder = match (inherited.client, config.listen_client.first()) {
        (Some(listener), Some(url)) if url.tls => builder.client_listener_tls(listener),
        (Some(listener), _) => builder.client_listener(listener),
        (None, _) => config.listen_client.iter().fold(builder, |builder, url| {
            if url.tls {
                builder.listen_client_tls(url.addr)
            } else {
                builder.listen_client(url.addr)
            }
        }),
    };
    for url in &config.listen_metrics {
        builder = if url.tls {
            builder.listen_metrics_tls(url.addr)
        } else {
            builder.listen_metrics(url.addr)
        };
    }
    builder = builder.auth(raftkv::AuthOptions {
        bcrypt_cost: config.bcrypt_cost,
        token_ttl: config.auth_token_ttl,
        client_cert_auth: config.tls.client.as_ref().is_some_and(|c| c.client_cert_auth),
    });
    if let Some(client) = tls.client {
        builder = builder.client_tls(client);
    }
    if let Some(server) = tls.peer {
        builder = builder.peer_tls(server);
    }
    // Also for a plaintext peer listener: members may have https:// peer URLs.
    if let Some(client) = tls.peer_client {
        builder = builder.peer_dial_tls(client);
    }
    let mut builder = builder
        .advertise_peer_url(config.advertise_peer_url.clone())
        .advertise_client_urls(config.advertise_client_urls.clone())
        .request_timeout(config.request_timeout)
        .raft_timing(
            config.heartbeat,
            config.election_timeout,
            config.election_timeout * 2,
        )
        .snapshot_every_entries(config.snapshot_every)
        .quota_backend_bytes(config.quota_backend_bytes)
        .max_request_bytes(config.max_request_bytes)
        .max_txn_ops(config.max_txn_ops)
        .metrics_extensive(config.metrics_extensive)
        .auto_compaction(match config.auto_compaction {
            AutoCompactionConfig::Off => raftkv::AutoCompaction::Off,
            AutoCompactionConfig::Periodic(retention) => raftkv::AutoCompaction::Periodic { retention },
            AutoCompactionConfig::Revisions(retain) => raftkv::AutoCompaction::revisions(retain),
        })
        .lease_checkpoint_interval(config.lease_checkpoint)
        .proposer(raftkv::ProposerConfig {
            mode: if config.direct_proposals {
                raftkv::ProposalMode::Direct
            } else {
                raftkv::ProposalMode::GroupCommit
            },
            ..raftkv::ProposerConfig::default()
        })
        .state_cache_bytes(config.state_cache_mb.saturating_mul(1 << 20))
        .auto_defrag(AutoDefrag {
            ratio: config.auto_defrag_ratio,
            ..AutoDefrag::default()
        });
    if config.join {
        builder = builder.join();
    } else if !config.initial_cluster.is_empty() {
        builder = builder.initial_cluster(config.initial_cluster.clone());
    }
    let node = builder.start().await?;
    // The one line on stdout: scripts and the test harness wait for it.
    println!(
        "raftkv-server ready: id={} peer={} client={}",
        id,
        node.peer_url(),
        node.client_urls().join(",")
    );
    tracing::info!(
        id = format_args!("{id:x}"),
        name = %config.name,
        data_dir = %config.data_dir.display(),
        "serving"
    );
    tokio::select! {
        () = signals::terminate() => {}
        fatal = node.fatal_error() => {
            // Storage failed under Raft: nothing more can be acknowledged. Exit so a
            // supervisor restarts us; recovery starts from what is durable.
            tracing::error!(error = %fatal, "raft stopped on a fatal error; exiting");
            node.shutdown().await;
            return Err(raftkv::Error::Storage(format!("raft stopped: {fatal}")));
        }
    }
    // A planned stop: hand leadership over first (serving until the new leader is seen),
    // so the cluster keeps a leader and elects nobody.
    match node.step_down().await {
        Ok(Some(to)) => tracing::info!(to, "leadership handed over"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not hand leadership over; stopping anyway"),
    }
    // Stop accepting, let in-flight requests finish (bounded), then stop Raft. Every
    // acknowledged write is already durable (the log syncs before acknowledging).
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    use super::*;

    /// Fails when a mimalloc upgrade moves the purge delay's index or default, which would
    /// make `tune_allocator` a silent no-op.
    #[test]
    fn purge_delay_option_is_where_tune_allocator_looks() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: an option read of the linked mimalloc.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, MI_DEFAULT_PURGE_DELAY_MS);
    }
}
