#!/usr/bin/env bash
# `etcdctl check perf` against a fresh three-node raftkv cluster and a fresh three-member
# etcd 3.4 cluster on 127.0.0.1, one after the other, in one run: etcd's own tail test
# (60 s of puts at a load level's rate; it fails on a slow request or a high stddev).
#
# Usage: benches/check-perf.sh [LOAD...]   (default: m l; etcd's levels are s m l xl)
# Needs: etcd and etcdctl (Debian etcd-server, etcd-client; installed if missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
make_work_dir raftkv-check-perf
LOADS=("$@")
[ "${#LOADS[@]}" -gt 0 ] || LOADS=(m l)

install_missing etcd:etcd-server etcdctl:etcd-client
build_release

check() { # system endpoints load
  # host:port: raftkv refuses etcdctl's :authority for http:// endpoints on some calls
  # (noted in the etcd compatibility issue).
  local endpoints=${2//http:\/\//}
  echo "== $1, --load=$3"
  # The progress bar goes to the same stream; keep the verdict lines and any error.
  ETCDCTL_API=3 etcdctl --endpoints="$endpoints" --command-timeout=120s check perf --load="$3" 2>&1 |
    tr '\r' '\n' | grep -vE '^ *[0-9]+ / [0-9]+|^\s*$' | tail -8 || true
}

stop_members() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
}

for load in "${LOADS[@]}"; do
  # Fresh clusters per load: check perf leaves its keys behind (it deletes them at the
  # end, but the history stays).
  start_raftkv_cluster "$WORK/rk-$load"
  wait_until_writable "$RK_ENDPOINTS" "$WORK/rk-$load/raftkv-*.log"
  check raftkv "$RK_ENDPOINTS" "$load"
  stop_members
  mkdir -p "$WORK/et-$load"
  start_etcd_cluster "$WORK/et-$load"
  wait_until_writable "$ET_EP" "$WORK/et-$load/etcd-*.log"
  check etcd "$ET_EP" "$load"
  stop_members
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), fs $(df -T "$WORK" | awk 'NR==2 {print $2}'), $(git rev-parse --short HEAD)"
