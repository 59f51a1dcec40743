#!/usr/bin/env bash
# A list (Range of a prefix) over keys with a long history, side by side with etcd 3.4:
# K keys are written V times each (so the range returns K keys with V versions behind
# each), then `raftkv-bench range` reads the whole prefix from a few clients. Run once
# with V=1 too: the cost should follow K, not V. Prints throughput, p50 and p99.
#
# Usage: benches/range-history.sh [K] [V] [DURATION]    (defaults 1000 100 10s)
#        RANGE_ARGS="--limit 500" or "--count-only" shapes the reads (a page of a
#        paginated list, a count).
#        BASELINE_SERVER=/path/to/older/raftkv-server benches/range-history.sh ...
#        also runs a cluster of that build, for a before/after in the same run.
# Needs: etcd (Debian etcd-server; installed if missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
make_work_dir raftkv-range-history
K="${1:-1000}"
V="${2:-100}"
DURATION="${3:-10s}"

install_missing etcd:etcd-server etcdctl:etcd-client
build_release

start_raftkv_cluster "$WORK"
RK_EP=$RK_ENDPOINTS
SYSTEMS="raftkv etcd"
if [ -n "${BASELINE_SERVER:-}" ]; then
  NEW_SERVER=$SERVER SERVER=$BASELINE_SERVER
  start_raftkv_cluster "$WORK/base"
  BASE_EP=$RK_ENDPOINTS SERVER=$NEW_SERVER
  SYSTEMS="raftkv base etcd"
fi
start_etcd_cluster "$WORK"
wait_until_writable "$RK_EP" "$WORK/raftkv-*.log"
wait_until_writable "$ET_EP" "$WORK/etcd-*.log"
if [ -n "${BASE_EP:-}" ]; then wait_until_writable "$BASE_EP" "$WORK/base/raftkv-*.log"; fi

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
echo "range of a prefix: $K keys x $V versions each, ${DURATION} per system, 4 clients, linearizable ${RANGE_ARGS:-}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), fs $(df -T "$WORK" | awk 'NR==2 {print $2}')"
printf '%-8s | %10s %9s %9s\n' system "ranges/s" "p50 ms" "p99 ms"
for system in $SYSTEMS; do
  case $system in
    raftkv) ep=$RK_EP ;;
    base) ep=$BASE_EP ;;
    etcd) ep=$ET_EP ;;
  esac
  $BENCH put --endpoints "$ep" --clients 32 --key-space "$K" --total $((K * V)) --duration 10m \
    --key-prefix list/ >/dev/null 2>"$WORK/$system-fill.err"
  # shellcheck disable=SC2086
  $BENCH range --endpoints "$ep" --clients 4 --conns 4 --key-prefix list/ --duration "$DURATION" ${RANGE_ARGS:-} \
    --json "$WORK/$system.json" >/dev/null 2>"$WORK/$system.err"
  r=$WORK/$system.json
  printf '%-8s | %10.1f %9.3f %9.3f\n' "$system" "$(field "$r" throughput)" "$(field "$r" p50_ms)" "$(field "$r" p99_ms)"
done
