#!/usr/bin/env bash
# Does the write rate hold as history grows? MINUTES of puts at 64 clients over KEYS
# random keys (256 B values) on a fresh three-node raftkv cluster and a fresh three-member
# etcd 3.4 cluster, each once without compaction and once with periodic compaction (every
# minute, to the revision of a minute before, as etcd's --auto-compaction-mode=periodic
# with a 1m retention; done by this script through etcdctl for both, so both compact
# alike). Prints each minute's throughput and p99, last minute / second minute, and the
# members' memory (RSS, summed) and data on disk at the end. Quota 8 GiB for both.
#
# Usage: benches/long-run.sh [MINUTES] [KEYS] [SYSTEMS...]
#        (defaults: 10 1000000 raftkv etcd; MODES="none periodic" to choose modes,
#        RK_EXTRA_FLAGS for raftkv-server, RK_LOG for its log filter, RAFTKV_SERVER=PATH
#        to run another build, KEEP_LOGS=DIR to keep the servers' logs)
# Needs: etcd and etcdctl (Debian etcd-server, etcd-client; installed if missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
make_work_dir raftkv-long-run
MINUTES=${1:-10}
KEYS=${2:-1000000}
shift $(($# < 2 ? $# : 2))
SYSTEMS=("$@")
[ "${#SYSTEMS[@]}" -gt 0 ] || SYSTEMS=(raftkv etcd)
read -r -a MODES <<<"${MODES:-none periodic}"
QUOTA=$((8 * 1024 * 1024 * 1024))
# Both read etcd's variable (raftkv-server, like etcd, refuses a flag that shadows it).
export ETCD_QUOTA_BACKEND_BYTES=$QUOTA

install_missing etcd:etcd-server etcdctl:etcd-client
build_release
# RAFTKV_SERVER=/path/to/raftkv-server runs that build instead (an older one, to compare).
SERVER=${RAFTKV_SERVER:-$SERVER}

stop_members() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
}

revision() { # endpoints (host:port,...)
  ETCDCTL_API=3 etcdctl --endpoints="$1" endpoint status -w json 2>/dev/null |
    python3 -c "import json,sys; print(max(s['Status']['header']['revision'] for s in json.load(sys.stdin)))"
}

# Every 60 s: compact to the revision read 60 s earlier. Runs until killed.
compact_periodically() { # endpoints (host:port,...)
  local previous current
  previous=$(revision "$1")
  while sleep 60; do
    current=$(revision "$1") || continue
    ETCDCTL_API=3 etcdctl --endpoints="$1" compact "$previous" >/dev/null 2>&1 ||
      echo "compaction to $previous failed" >&2
    previous=$current
  done
}

rss_mib() { # pids...
  local total=0 p kib
  for p in "$@"; do
    kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + kib))
  done
  echo $((total / 1024))
}

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

RESULTS=()
for system in "${SYSTEMS[@]}"; do
  for mode in "${MODES[@]}"; do
    dir="$WORK/$system-$mode"
    mkdir -p "$dir"
    case $system in
      raftkv)
        start_raftkv_cluster "$dir"
        ep=$RK_ENDPOINTS
        ;;
      etcd)
        start_etcd_cluster "$dir"
        ep=$ET_EP
        ;;
    esac
    members=("${PIDS[@]}")
    wait_until_writable "$ep" "$dir/*.log"
    bare=${ep//http:\/\//}
    compactor=""
    if [ "$mode" = periodic ]; then
      compact_periodically "$bare" 2>>"$dir/compactions.log" &
      compactor=$!
    fi
    line="$system $mode |"
    for m in $(seq 1 "$MINUTES"); do
      "$BENCH" put --clients 64 --conns 8 --value-size 256 --key-space "$KEYS" \
        --endpoints "$ep" --duration 60s --json "$dir/minute-$m.json" >/dev/null 2>"$dir/minute-$m.err"
      line+=" $(printf '%.0f' "$(field "$dir/minute-$m.json" throughput)")/$(printf '%.1f' "$(field "$dir/minute-$m.json" p99_ms)")"
    done
    if [ -n "$compactor" ]; then kill "$compactor" 2>/dev/null || true; wait "$compactor" 2>/dev/null || true; fi
    second=$(field "$dir/minute-2.json" throughput)
    last=$(field "$dir/minute-$MINUTES.json" throughput)
    ratio=$(python3 -c "print(f'{$last / $second:.2f}')")
    disk=$(du -sm "$dir" | cut -f1)
    line+=" | last/second $ratio | RSS $(rss_mib "${members[@]}") MiB | disk $disk MiB"
    echo "$line"
    RESULTS+=("$line")
    if [ -n "${KEEP_LOGS:-}" ]; then
      mkdir -p "$KEEP_LOGS/$system-$mode" && cp "$dir"/*.log "$dir"/*.json "$KEEP_LOGS/$system-$mode/" 2>/dev/null || true
    fi
    stop_members
  done
done

echo
echo "$MINUTES minutes of puts, 64 clients, $KEYS random keys, 256 B values; per minute: ops/s / p99 ms"
printf '%s\n' "${RESULTS[@]}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), fs $(df -T "$WORK" | awk 'NR==2 {print $2}'), $(git rev-parse --short HEAD)"
