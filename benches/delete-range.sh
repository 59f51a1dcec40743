#!/usr/bin/env bash
# How long does one large prefix delete take? Writes KEYS keys (random, never repeated:
# 1 KiB values, as `etcdctl check perf` writes) at 64 clients to a fresh three-node raftkv
# cluster and a fresh three-member etcd 3.4 cluster, then times `etcdctl del --prefix` of
# all of them through the first endpoint. `check perf`'s clean-up is such a delete
# (README, "etcdctl check perf").
#
# Usage: benches/delete-range.sh [KEYS] [SYSTEMS...]   (defaults: 150000 raftkv etcd)
#        BASELINE_SERVER=/path/to/older/raftkv-server benches/delete-range.sh KEYS baseline raftkv
#        (system `baseline`: a raftkv cluster of that build, in the same run)
# Needs: etcd and etcdctl (Debian etcd-server, etcd-client; installed if missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
make_work_dir raftkv-delete-range
KEYS=${1:-150000}
shift || true
SYSTEMS=("$@")
[ "${#SYSTEMS[@]}" -gt 0 ] || SYSTEMS=(raftkv etcd)
install_missing etcd:etcd-server etcdctl:etcd-client
build_release

run=0
for sys in "${SYSTEMS[@]}"; do
  # A directory per run: a system may be named twice (alternating builds).
  run=$((run + 1)); dir="$WORK/$run-$sys"
  mkdir -p "$dir"
  if [ "$sys" = raftkv ] || [ "$sys" = baseline ]; then
    if [ "$sys" = baseline ]; then
      SERVER=${BASELINE_SERVER:?system baseline needs BASELINE_SERVER} start_raftkv_cluster "$dir"
    else
      start_raftkv_cluster "$dir"
    fi
    endpoints=$RK_ENDPOINTS
  else
    start_etcd_cluster "$dir"; endpoints=$ET_EP
  fi
  wait_until_writable "$endpoints" "$dir/*.log"
  "$BENCH" put --endpoints "$endpoints" --clients 64 --total "$KEYS" --duration 300s \
    --key-space 1000000000000 --value-size 1024 --key-prefix perf/ | grep throughput
  first=${endpoints%%,*}; first=${first#http://}
  count=$(etcdctl --endpoints="$first" get perf/ --prefix --keys-only --limit 1 -w json |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))')
  start=$(date +%s.%N)
  etcdctl --endpoints="$first" --command-timeout=120s del --prefix perf/ >/dev/null
  end=$(date +%s.%N)
  python3 -c 'import sys; print(f"{sys.argv[1]:7} deleted {sys.argv[2]} keys in one prefix delete: {float(sys.argv[4]) - float(sys.argv[3]):.2f} s")' \
    "$sys" "$count" "$start" "$end"
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  PIDS=()
done
