#!/usr/bin/env bash
# Does the leader hold under full-speed writes? A fresh three-member raftkv cluster on
# 127.0.0.1 with the default timers takes puts from CLIENTS clients for MINUTES minutes
# (one `raftkv-bench put` per minute, back to back, so each minute's throughput and
# latency show). The script counts what a busy machine must not cause: leader changes
# (every real election, won or not, raises the Raft term, read with `etcdctl endpoint
# status` after every minute; a pre-vote that fails does not, and harms nothing) and
# writes a leader refused because its lease lapsed (its warning, counted in the members'
# logs over the measured minutes). The quota is raised so that the history of a long run
# fits (no compaction runs).
#
# Usage: benches/steady-leader.sh [MINUTES] [CLIENTS]   (default 10, 64)
#        SERVER_FLAGS="--snapshot-count 100000" benches/steady-leader.sh   (extra flags
#        for every member)
# Output, with the members' logs: target/steady-leader/ (OUT= to change).
# Exit status 0 when both counts are 0, 1 when either is not, 2 when the cluster or the
# load tool failed.
# Needs: etcdctl (Debian etcd-client; installed if missing and run as root), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
make_work_dir raftkv-steady-leader
MINUTES="${1:-10}"
CLIENTS="${2:-64}"
OUT="${OUT:-target/steady-leader}"
rm -rf "$OUT" && mkdir -p "$OUT"

install_missing etcdctl:etcd-client
build_release
RK_EXTRA_FLAGS="--quota-backend-bytes $((12 * 1024 * 1024 * 1024)) ${SERVER_FLAGS:-}"
start_raftkv_cluster "$WORK"
wait_until_writable "$RK_ENDPOINTS" "$WORK/raftkv-*.log"

# "term leaders members" as the members report them (the highest term any member saw).
# etcdctl 3.4 gets the endpoints as host:port (with http:// its status call fails
# against raftkv: the open :authority gap of the etcd compatibility issue).
status() {
  ETCDCTL_API=3 etcdctl --endpoints "${RK_ENDPOINTS//http:\/\//}" endpoint status -w json 2>/dev/null |
    python3 -c '
import json, sys
members = json.load(sys.stdin)
terms = [m["Status"]["raftTerm"] for m in members]
leaders = sorted({m["Status"]["leader"] for m in members})
print(max(terms), ",".join(str(l) for l in leaders), len(members))'
}
refusals() { cat "$WORK"/raftkv-*.log | grep -c "write refused by this leader" || true; }
# The members' logs go to OUT however the script ends (the work dir is removed on exit).
keep_logs() { cp "$WORK"/raftkv-*.log "$OUT/" 2>/dev/null || true; cleanup_work_dir; }
trap keep_logs EXIT
# Every status read must hear from all three members.
checked_status() {
  local line
  line=$(status) || { echo "status call failed" >&2; exit 2; }
  read -r term leaders seen <<<"$line"
  if [ "${seen:-0}" != 3 ]; then echo "not every member answered the status call" >&2; exit 2; fi
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

checked_status
term_before=$term
refused_before=$(refusals)
echo "start: term $term_before, leader $leaders; put at $CLIENTS clients, 256 B values, 100,000 keys"
printf '%-6s %10s %10s %9s %9s %9s %8s %6s %s\n' minute ops op/s p50_ms p99_ms max_ms errors term leader
for minute in $(seq 1 "$MINUTES"); do
  json="$OUT/minute-$minute.json"
  if ! "$BENCH" put --endpoints "$RK_ENDPOINTS" --clients "$CLIENTS" --conns 8 --value-size 256 \
    --key-space 100000 --duration 60s --json "$json" >"$OUT/minute-$minute.out" 2>&1; then
    echo "raftkv-bench failed in minute $minute:" >&2; tail -n 5 "$OUT/minute-$minute.out" >&2; exit 2
  fi
  checked_status
  printf '%-6s %10s %10s %9s %9s %9s %8s %6s %s\n' "$minute" "$(field "$json" ops)" "$(field "$json" throughput)" \
    "$(field "$json" p50_ms)" "$(field "$json" p99_ms)" "$(field "$json" max_ms)" "$(field "$json" errors)" "$term" "$leaders"
done
changes=$((term - term_before))
refused=$(($(refusals) - refused_before))
du -sh "$WORK"/raftkv-? | sed 's/^/data dir: /'
echo "leader changes (term rises): $changes; writes refused for a lapsed lease: $refused"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
[ "$changes" -eq 0 ] && [ "$refused" -eq 0 ]
