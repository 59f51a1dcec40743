#!/usr/bin/env bash
# The flake budget: run test files N times in a row and print how many runs passed.
#
# Usage: ./scripts/stress.sh [-n RUNS] [TEST ...]
#   TEST: a test file's module in the `behaviour` test binary (tests/<TEST>.rs), e.g.
#   t05_quorum_loss. Without any, the process-cluster set: t04 t05 t07 t13-t18 t21-t25.
#   RUNS: runs per file (default 3).
#
# Builds once (the same features as ./scripts/test.sh), then runs each file's tests RUNS
# times back to back with CI=true. The output of a failed run is kept in
# target/stress/<TEST>-<run>.log. Exits non-zero when any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3
if [ "${1:-}" = "-n" ]; then
  runs=$2
  shift 2
fi
if [ "$#" -gt 0 ]; then
  tests=("$@")
else
  tests=(t04_leader_failover t05_quorum_loss t07_membership t13_leader_kill9_under_load
    t14_leader_paused t15_partitions t16_message_loss t17_disk_faults t18_full_restart
    t21_watch t22_lease t23_lock_election t24_lock_fencing_under_faults
    t25_read_after_leader_restart)
fi

cargo test --locked --features failpoints --no-run --test behaviour 2>&1 | tail -n 3

logs="${CARGO_TARGET_DIR:-target}/stress"
mkdir -p "$logs"
declare -A passed
failed_any=0
start=$(date +%s)
for t in "${tests[@]}"; do
  passed[$t]=0
  for i in $(seq 1 "$runs"); do
    log="$logs/$t-$i.log"
    t0=$(date +%s)
    if CI=true cargo test --locked --features failpoints --test behaviour "$t::" >"$log" 2>&1; then
      passed[$t]=$((passed[$t] + 1))
      rm -f "$log"
      echo "$t run $i/$runs: ok ($(($(date +%s) - t0)) s)"
    else
      failed_any=1
      echo "$t run $i/$runs: FAILED ($(($(date +%s) - t0)) s), output in $log"
    fi
  done
done

echo "== stress: passes per test file ($runs runs each, $(($(date +%s) - start)) s in all, $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
for t in "${tests[@]}"; do
  printf '%-36s %d/%d\n' "$t" "${passed[$t]}" "$runs"
done
exit "$failed_any"
