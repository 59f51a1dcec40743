#!/usr/bin/env bash
# What one write costs each member, raftkv beside etcd 3.4: system calls per put
# (`strace -f -c` on the leader and on one follower over PUTS sequential puts of 256 B),
# and the cluster's CPU seconds per 1,000 acknowledged writes (from /proc, without
# strace, over CPU_PUTS puts at 16 clients).
#
# Usage: benches/syscalls-per-put.sh [PUTS] [CPU_PUTS]   (default 300 and 20000)
# Needs: strace and etcd (Debian's strace, etcd-server; installed if missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
make_work_dir raftkv-syscalls
PUTS="${1:-300}"
CPU_PUTS="${2:-20000}"

install_missing etcd:etcd-server etcdctl:etcd-client strace:strace
build_release

# Start both clusters; RK_PIDS / ET_PIDS are the members' pids in endpoint order.
start_raftkv_cluster "$WORK"
RK_EP=$RK_ENDPOINTS
RK_PIDS=("${PIDS[@]}")
start_etcd_cluster "$WORK"
ET_PIDS=("${PIDS[@]:3}")
wait_until_writable "$RK_EP" "$WORK/raftkv-*.log"
wait_until_writable "$ET_EP" "$WORK/etcd-*.log"

# Per-put counts of one member's syscalls from an `strace -c` summary file.
per_put() {
  python3 - "$1" "$PUTS" <<'EOF'
import sys
calls = {}
for line in open(sys.argv[1]):
    parts = line.split()
    # % time, seconds, usecs/call, calls, [errors], syscall
    if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
        calls[parts[-1]] = int(parts[3])
n = int(sys.argv[2])
disk = sum(calls.get(c, 0) for c in ("fdatasync", "fsync", "sync_file_range"))
total = sum(calls.values())
print(f"{disk / n:7.2f} {calls.get('futex', 0) / n:7.1f} {calls.get('getdents64', 0) / n:6.2f} "
      f"{calls.get('pwrite64', 0) / n + calls.get('write', 0) / n:7.1f} {total / n:8.1f}")
EOF
}

# strace the leader and one follower of a cluster over PUTS sequential puts.
measure_syscalls() {
  local system=$1 endpoints=$2 leader follower
  shift 2
  local -a pids=("$@")
  leader=$(leader_position "$endpoints")
  follower=$(((leader + 1) % 3))
  for role in leader follower; do
    local pos=${!role}
    strace -f -c -q -o "$WORK/$system-$role.strace" -p "${pids[$pos]}" &
    eval "STRACE_$role=\$!"
  done
  sleep 1 # strace attaches to every thread before the puts start
  "$BENCH" put --endpoints "$endpoints" --clients 1 --conns 1 --total "$PUTS" --duration 120s \
    --value-size 256 --key-prefix "syscalls/" >/dev/null
  # shellcheck disable=SC2154
  kill -INT "$STRACE_leader" "$STRACE_follower"
  wait "$STRACE_leader" "$STRACE_follower" 2>/dev/null || true
}

cpu_per_1000() {
  local endpoints=$1 before after
  shift
  before=$(cpu_seconds "$@")
  "$BENCH" put --endpoints "$endpoints" --clients 16 --conns 8 --total "$CPU_PUTS" --duration 300s \
    --value-size 256 --key-prefix "cpu/" --json "$WORK/cpu.json" >/dev/null
  after=$(cpu_seconds "$@")
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{($after - $before) * 1000 / r[\"ops\"]:.3f}')" "$WORK/cpu.json"
}

measure_syscalls raftkv "$RK_EP" "${RK_PIDS[@]}"
measure_syscalls etcd "$ET_EP" "${ET_PIDS[@]}"
RK_CPU=$(cpu_per_1000 "$RK_EP" "${RK_PIDS[@]}")
ET_CPU=$(cpu_per_1000 "$ET_EP" "${ET_PIDS[@]}")

echo "per put, each member ($PUTS sequential puts of 256 B, strace -f -c; 3 members each on 127.0.0.1)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), fs $(df -T "$WORK" | awk 'NR==2 {print $2}'), $(git rev-parse --short HEAD)"
printf '%-16s %7s %7s %6s %7s %8s\n' member "disk" "futex" "getdents" "writes" "all"
printf '%-16s %7s %7s %6s %7s %8s\n' "" "waits" "" "" "" "syscalls"
for system in raftkv etcd; do
  for role in leader follower; do
    # shellcheck disable=SC2046
    printf '%-16s %s\n' "$system $role" "$(per_put "$WORK/$system-$role.strace")"
  done
done
echo "disk waits: fdatasync + fsync + sync_file_range; writes: write + pwrite64"
echo "CPU seconds per 1,000 acknowledged writes (all three members, $CPU_PUTS puts at 16 clients): raftkv $RK_CPU, etcd $ET_CPU"
