#!/usr/bin/env bash
# Does our group commit (the proposer, crates/raftkv-core/src/proposer.rs) earn its
# place over openraft 0.10's own merging of concurrent writes? Two fresh three-member
# raftkv clusters side by side on 127.0.0.1, one with the default `--proposer
# group-commit`, one with `--proposer direct` (each request its own log entry, straight to
# openraft's client_write). Puts of 256 B at 1, 16 and 64 clients, ROUNDS rounds, the
# two variants alternating which goes first; per workload and variant the median of the
# rounds' throughput and p50/p99 latency.
#
# Usage: benches/proposer-ablation.sh [DURATION] [ROUNDS]   (default 15s, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
make_work_dir raftkv-proposer-ablation
DURATION="${1:-15s}"
ROUNDS="${2:-3}"

build_release
RK_EXTRA_FLAGS="--proposer group-commit" start_raftkv_cluster "$WORK/group-commit"
EP_group_commit=$RK_ENDPOINTS
RK_EXTRA_FLAGS="--proposer direct" start_raftkv_cluster "$WORK/direct"
EP_direct=$RK_ENDPOINTS
wait_until_writable "$EP_group_commit" "$WORK/group-commit/raftkv-*.log"
wait_until_writable "$EP_direct" "$WORK/direct/raftkv-*.log"

WORKLOADS=("c1|--clients 1 --conns 1" "c16|--clients 16 --conns 8" "c64|--clients 64 --conns 8")
for round in $(seq 1 "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    label=${w%%|*}; args=${w#*|}
    order=(group_commit direct)
    if [ $((round % 2)) = 0 ]; then order=(direct group_commit); fi
    for variant in "${order[@]}"; do
      ep_var="EP_$variant"
      # shellcheck disable=SC2086
      "$BENCH" put $args --value-size 256 --key-space 100000 --endpoints "${!ep_var}" \
        --duration "$DURATION" --json "$WORK/$label-$variant-$round.json" >/dev/null 2>"$WORK/$label-$variant-$round.err"
    done
  done
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
print(f"proposer ablation: put 256 B, median of {rounds} rounds per cell")
print(f"{'workload':9} | {'group-commit op/s':>17} {'p50 ms':>7} {'p99 ms':>7} | {'direct op/s':>11} {'p50 ms':>7} {'p99 ms':>7} | {'thr group/direct':>16}")
for label in ["c1", "c16", "c64"]:
    cells = {}
    for variant in ["group_commit", "direct"]:
        runs = [json.load(open(f"{work}/{label}-{variant}-{r}.json")) for r in range(1, rounds + 1)]
        cells[variant] = {k: statistics.median(run[k] for run in runs) for k in ["throughput", "p50_ms", "p99_ms"]}
    g, d = cells["group_commit"], cells["direct"]
    print(f"{label:9} | {g['throughput']:17.0f} {g['p50_ms']:7.3f} {g['p99_ms']:7.3f} | {d['throughput']:11.0f} {d['p50_ms']:7.3f} {d['p99_ms']:7.3f} | {g['throughput'] / d['throughput']:16.2f}")
PY
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F); commit $(git rev-parse --short HEAD)"
