//! The behaviour tests, one module per file and one test binary for all of them.
//!
//! One binary instead of one per file: each test binary links and monomorphises the
//! whole stack again (about 28 CPU-seconds each on the CI machine), so thirty files cost
//! more than ten minutes of a 2-core CI run before a test ran. The tests run one at a
//! time (`RUST_TEST_THREADS=1` in `.cargo/config.toml`): in one binary a test without a
//! cluster would otherwise run beside another file's cluster, and on two cores that
//! contention timed out a write and a leadership transfer in CI. Tests that start a
//! cluster also take [`support::ClusterTurn`], so a caller that asks for more threads
//! still gets one cluster at a time.
//!
//! One file: `cargo test --features failpoints --test behaviour t15_partitions::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod t01_single_node_kv;
mod t02_restart;
mod t03_cluster_in_process;
mod t04_leader_failover;
mod t05_quorum_loss;
mod t06_etcdctl;
mod t07_membership;
mod t08_snapshot_catch_up;
mod t09_etcd_conformance;
mod t10_client_admin;
mod t11_bad_input;
mod t12_history_checker;
mod t13_leader_kill9_under_load;
mod t14_leader_paused;
mod t15_partitions;
mod t16_message_loss;
mod t17_disk_faults;
mod t18_full_restart;
mod t19_soak;
mod t20_checker_catches_stale_reads;
mod t21_watch;
mod t22_lease;
mod t23_lock_election;
mod t24_lock_fencing_under_faults;
mod t25_read_after_leader_restart;
mod t26_test_harness;
mod t27_data_dir_upgrade;
mod t28_leadership_transfer;
mod t29_leader_writes_while_replicating;
mod t30_slow_follower;
mod t31_health_probes;
mod t32_etcd_command_line;
mod t33_auto_compaction;
mod t34_etcd_mixin_metrics;
mod t35_tls;
mod t36_statefulset;
mod t37_restore;
mod t38_hash_kv;
mod t39_container_image;
mod t40_alarms;
mod t41_etcd_snapshot_import;
mod t42_auth;
mod t43_crate_layers;
mod t44_cancellation;
mod t45_test_cluster;
mod t46_informer;
mod t47_runtime_and_shutdown;
mod t48_long_apply;
mod t49_read_index_leader_change;
