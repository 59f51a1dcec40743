#!/usr/bin/env bash
# What watchers cost: a three-node raftkv cluster on 127.0.0.1 (as compare-etcd.sh starts
# it: free ports, a temp dir, production durability) runs `put` at full speed against all
# three endpoints in three variants, twice: in this order, then in reverse. Every run gets
# a fresh cluster (new data dirs and ports): nothing compacts the database during a run,
# and one cluster kept across runs grows and slows down, which would favour whichever
# variant runs first. The mirrored order spreads what noise remains alike:
#   none         no watchers
#   idle-1000    1,000 watchers on node 1, each on a key the load never writes
#   written-100  100 watchers on node 1, each on the whole key prefix (every watcher
#                receives every event of the load)
# and one table is printed: throughput, p50, p99, events received and watch errors of
# each run, then each variant's mean throughput as a ratio of the no-watcher mean.
# raftkv-bench reads the watchers' responses on the same machine as the servers (count-only:
# events are skipped and counted, not decoded), so the written variant also takes some
# client CPU from the cluster.
#
# Usage: benches/watch-overhead.sh [DURATION]   (default 20s per run)
# SERVER=... BENCH=... run given binaries instead of building them (to compare builds);
# otherwise they are built in $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
make_work_dir raftkv-watch-overhead
DURATION="${1:-20s}"
ROUNDS=2

if [ -z "${SERVER:-}" ] || [ -z "${BENCH:-}" ]; then
  build_release
fi

# A fresh three-node cluster in $WORK/run-$1, taking writes; sets ENDPOINTS, EP1 and the
# PIDS of its members.
start_cluster() {
  PIDS=()
  start_raftkv_cluster "$WORK/run-$1"
  ENDPOINTS=$RK_ENDPOINTS; EP1=$RK_EP1
  wait_until_writable "$ENDPOINTS" "$WORK/run-$1/raftkv-*.log"
}

# Stop the cluster of the last run and remove its data.
stop_cluster() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  PIDS=()
  rm -rf "$WORK/run-$1"
}

# The watchers' endpoint (node 1 of each run's cluster) is added per run.
VARIANTS=(
  "none|"
  "idle-1000|--watchers 1000 --watch-mode idle"
  "written-100|--watchers 100 --watch-mode written"
)
LOAD="put --clients 64 --conns 8 --value-size 256 --key-space 100000"
for round in $(seq 1 "$ROUNDS"); do
  ORDER=("${VARIANTS[@]}")
  if [ $((round % 2)) -eq 0 ]; then
    ORDER=(); for ((k=${#VARIANTS[@]}-1; k>=0; k--)); do ORDER+=("${VARIANTS[$k]}"); done
  fi
  for v in "${ORDER[@]}"; do
    label=${v%%|*}; args=${v#*|}
    echo "round $round: $label" >&2
    start_cluster "$label-$round"
    if [ -n "$args" ]; then args+=" --watch-endpoint $EP1"; fi
    # shellcheck disable=SC2086
    if ! $BENCH $LOAD $args --endpoints "$ENDPOINTS" --duration "$DURATION" \
        --json "$WORK/$label-$round.json" >"$WORK/$label-$round.out" 2>"$WORK/$label-$round.err"; then
      echo "raftkv-bench failed for $label, round $round:" >&2; cat "$WORK/$label-$round.err" >&2; exit 1
    fi
    stop_cluster "$label-$round"
  done
done

echo "watch overhead: raftkv, 3 nodes on 127.0.0.1, put at 64 clients over all endpoints, ${DURATION} per run, watchers on node 1"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), fs $(df -T "$WORK" | awk 'NR==2 {print $2}')"
python3 - "$WORK" "$ROUNDS" "${VARIANTS[@]}" <<'EOF'
import json, sys
work, rounds, variants = sys.argv[1], int(sys.argv[2]), [v.split("|", 1)[0] for v in sys.argv[3:]]
runs = {(v, r): json.load(open(f"{work}/{v}-{r}.json")) for v in variants for r in range(1, rounds + 1)}
print(f"{'variant':<12} {'round':>5} | {'ops/s':>10} {'p50 ms':>8} {'p99 ms':>8} | {'events':>12} {'watch err':>9} {'put err':>7}")
for r in range(1, rounds + 1):
    for v in variants:
        j = runs[(v, r)]
        print(f"{v:<12} {r:>5} | {j['throughput']:>10.0f} {j['p50_ms']:>8.3f} {j['p99_ms']:>8.3f} | "
              f"{j['watch_events']:>12,} {j['watch_errors']:>9} {j['errors']:>7}")
mean = {v: sum(runs[(v, r)]["throughput"] for r in range(1, rounds + 1)) / rounds for v in variants}
base = mean[variants[0]]
print()
print(f"{'variant':<12} | {'mean ops/s':>10} | {'vs ' + variants[0]:>8}")
for v in variants:
    ratio = f"{mean[v] / base:.3f}" if base > 0 else "n/a"
    print(f"{v:<12} | {mean[v]:>10.0f} | {ratio:>8}")
bad = [f"{v} round {r}: {runs[(v, r)]['watch_errors']} watch errors"
       for (v, r) in runs if runs[(v, r)]["watch_errors"] > 0]
created_short = [f"{v} round {r}: {runs[(v, r)]['watch_created']} of {runs[(v, r)]['watchers']} watchers created"
                 for (v, r) in runs if runs[(v, r)]["watch_created"] < runs[(v, r)]["watchers"]]
for line in bad + created_short:
    print("warning:", line)
EOF
