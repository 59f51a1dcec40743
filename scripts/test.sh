#!/usr/bin/env bash
# The test command: installs the system tools the tests need, then runs every test.
# Usage: ./scripts/test.sh   (as root, or with strace and etcdctl already installed)
set -euo pipefail
cd "$(dirname "$0")/.."

# strace: the fsync test watches the log store's syscalls with it.
# etcdctl (Debian's etcd-client, etcdctl 3.4): the etcd compatibility tests drive it.
# etcd (Debian's etcd-server, 3.4): the differential tests run the same script against it.
# python3: the import-cycle check (scripts/file-cycles.py).
missing=()
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "scripts/test.sh: missing ${missing[*]}; install with: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# The Kubernetes manifests, against Kubernetes' schemas (offline once installed).
./scripts/validate-manifests.sh

# No two files of a crate import each other, directly or around a loop.
./scripts/file-cycles.py

# No dependency needs a newer Rust than the workspace's rust-version (clippy's
# incompatible_msrv lint checks our own use of std against it).
./scripts/msrv-check.py

# `failpoints`: the servers the tests start serve the test-only fault-injection service
# (network faults, storage failpoints) the reliability scenarios switch at run time.
# The fault scenarios append their summary lines here; printed at the end.
reliability_log="${CARGO_TARGET_DIR:-target}/tmp/reliability.log"
rm -f "$reliability_log"
# --no-fail-fast: one failing test binary does not hide the failures of the others.
# --all-targets adds the benchmarks, run once each in test mode (they keep compiling and
# working), to the same build: a second `cargo test` of the root package alone would
# unify features differently and compile the workspace again (1m46s in CI). Doc tests
# are not among --all-targets, so they run next, from the same build.
cargo test --workspace --all-targets --locked --no-fail-fast --features failpoints
cargo test --workspace --doc --locked --no-fail-fast --features failpoints

# The examples of what people build with etcd, each against an embedded three-node
# cluster (`raftkv::testing`); each must exit 0. Same features as above: no rebuild.
for example in service_registration leader_election distributed_lock; do
  echo "== example $example"
  timeout 300 cargo run --locked --quiet --features failpoints --example "$example"
done

echo "== reliability: faults injected and operations checked in this run (RELIABILITY.md)"
cat "$reliability_log"
