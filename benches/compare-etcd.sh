#!/usr/bin/env bash
# Side by side: a three-node raftkv cluster and a three-member etcd 3.4 cluster on
# 127.0.0.1, data on the same filesystem, production durability for both (raftkv syncs
# its log before acknowledging; etcd fsyncs its WAL, the default). The same raftkv-bench
# workloads run against each, alternating, and one table is printed, with the physical
# floor (fdatasync of 4 KiB on the data filesystem, loopback round trip), and for the
# put workloads the CPU seconds all three members of each system spent per 1,000
# acknowledged writes (user + system, from /proc). put-c1 writes through the first
# member (leader or follower, as the election fell), put-c1-leader through the leader.
#
# Usage: benches/compare-etcd.sh [DURATION]   (default 20s per workload and system)
#        BASELINE_SERVER=/path/to/older/raftkv-server benches/compare-etcd.sh [DURATION]
#        also runs a third cluster of that build, for a before/after in the same run.
# Needs: etcd (Debian etcd-server; installed if missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/cluster.sh
source benches/cluster.sh
make_work_dir raftkv-compare
DURATION="${1:-20s}"

install_missing etcd:etcd-server etcdctl:etcd-client
build_release

# raftkv
start_raftkv_cluster "$WORK"
RK_EP=$RK_ENDPOINTS
RK_PIDS="${PIDS[*]:0:3}"

# An older build, if given
SYSTEMS="raftkv etcd"
if [ -n "${BASELINE_SERVER:-}" ]; then
  NEW_SERVER=$SERVER SERVER=$BASELINE_SERVER
  start_raftkv_cluster "$WORK/base"
  BASE_EP=$RK_ENDPOINTS SERVER=$NEW_SERVER
  BASE_PIDS="${PIDS[*]:3:3}"
  SYSTEMS="raftkv etcd base"
fi

# etcd
start_etcd_cluster "$WORK"
ET_PIDS="${PIDS[*]: -3}"

wait_until_writable "$RK_EP" "$WORK/raftkv-*.log"
wait_until_writable "$ET_EP" "$WORK/etcd-*.log"
if [ -n "${BASE_EP:-}" ]; then wait_until_writable "$BASE_EP" "$WORK/base/raftkv-*.log"; fi

run() { # system endpoints pids label args...
  local system=$1 ep=$2 pids=$3 label=$4 before after; shift 4
  # shellcheck disable=SC2086
  before=$(cpu_seconds $pids)
  $BENCH "$@" --endpoints "$ep" --duration "$DURATION" --json "$WORK/$label-$system.json" >/dev/null 2>"$WORK/$label-$system.err"
  # shellcheck disable=SC2086
  after=$(cpu_seconds $pids)
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{($after - $before) * 1000 / max(r[\"ops\"], 1):.3f}')" \
    "$WORK/$label-$system.json" >"$WORK/$label-$system.cpu"
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

WORKLOADS=(
  "put-c1|put --clients 1 --conns 1 --value-size 256 --key-space 100000"
  "put-c1-leader|put --clients 1 --conns 1 --value-size 256 --key-space 100000"
  "put-c16|put --clients 16 --conns 8 --value-size 256 --key-space 100000"
  "put-c64|put --clients 64 --conns 8 --value-size 256 --key-space 100000"
  "get-lin-c64|get --clients 64 --conns 8 --consistency l --key-space 10000 --prefill"
  "get-ser-c64|get --clients 64 --conns 8 --consistency s --key-space 10000"
)
n=0
for w in "${WORKLOADS[@]}"; do
  label=${w%%|*}; args=${w#*|}
  # Rotate which system goes first, so none always runs on a warmer machine.
  read -r -a order <<<"$SYSTEMS"
  order=("${order[@]:$((n % ${#order[@]}))}" "${order[@]:0:$((n % ${#order[@]}))}")
  for system in "${order[@]}"; do
    case $system in
      raftkv) ep=$RK_EP pids=$RK_PIDS ;;
      etcd) ep=$ET_EP pids=$ET_PIDS ;;
      base) ep=$BASE_EP pids=$BASE_PIDS ;;
    esac
    # put-c1 talks to the first member, the leader or a follower as the election fell;
    # put-c1-leader to the leader alone (a follower adds a forward hop to every write).
    case $label in *-leader) ep=$(leader_endpoint "$ep") ;; esac
    # shellcheck disable=SC2086
    run "$system" "$ep" "$pids" "$label" $args
  done
  n=$((n + 1))
done

$BENCH floor --dir "$WORK" --count 2000 --json "$WORK/floor.json" >/dev/null

echo "raftkv vs etcd 3.4 ($(etcd --version | head -1 | awk '{print $3}')), 3 members each on 127.0.0.1, ${DURATION} per run"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), fs $(df -T "$WORK" | awk 'NR==2 {print $2}')"
printf '%-12s | %12s %9s %9s | %12s %9s %9s | %8s %8s\n' workload "raftkv op/s" "p50 ms" "p99 ms" "etcd op/s" "p50 ms" "p99 ms" "thr x" "p99 x"
for w in "${WORKLOADS[@]}"; do
  label=${w%%|*}
  r=$WORK/$label-raftkv.json; e=$WORK/$label-etcd.json
  rt=$(field "$r" throughput); rp50=$(field "$r" p50_ms); rp99=$(field "$r" p99_ms)
  et=$(field "$e" throughput); ep50=$(field "$e" p50_ms); ep99=$(field "$e" p99_ms)
  ratio=$(python3 -c "print(f'{$rt/$et:.2f}' if $et > 0 else 'n/a')")
  pratio=$(python3 -c "print(f'{$rp99/$ep99:.2f}' if $ep99 > 0 else 'n/a')")
  printf '%-12s | %12.0f %9.3f %9.3f | %12.0f %9.3f %9.3f | %8s %8s\n' "$label" "$rt" "$rp50" "$rp99" "$et" "$ep50" "$ep99" "$ratio" "$pratio"
done
if [ -n "${BASE_EP:-}" ]; then
  echo "the same workloads on the baseline build ($BASELINE_SERVER):"
  printf '%-12s | %12s %9s %9s | %10s %10s\n' workload "base op/s" "p50 ms" "p99 ms" "p50 x base" "thr x base"
  for w in "${WORKLOADS[@]}"; do
    label=${w%%|*}
    r=$WORK/$label-raftkv.json; b=$WORK/$label-base.json
    bt=$(field "$b" throughput); bp50=$(field "$b" p50_ms); bp99=$(field "$b" p99_ms)
    rt=$(field "$r" throughput); rp50=$(field "$r" p50_ms)
    printf '%-12s | %12.0f %9.3f %9.3f | %10s %10s\n' "$label" "$bt" "$bp50" "$bp99" \
      "$(python3 -c "print(f'{$rp50/$bp50:.2f}' if $bp50 > 0 else 'n/a')")" \
      "$(python3 -c "print(f'{$rt/$bt:.2f}' if $bt > 0 else 'n/a')")"
  done
fi
echo "CPU seconds per 1,000 acknowledged writes (all three members, user + system):"
for w in "${WORKLOADS[@]}"; do
  label=${w%%|*}
  case $label in put-*) ;; *) continue ;; esac
  line="  $label: raftkv $(cat "$WORK/$label-raftkv.cpu"), etcd $(cat "$WORK/$label-etcd.cpu")"
  if [ -n "${BASE_EP:-}" ]; then line+=", baseline $(cat "$WORK/$label-base.cpu")"; fi
  echo "$line (raftkv/etcd $(python3 -c "print(f'{$(cat "$WORK/$label-raftkv.cpu")/max($(cat "$WORK/$label-etcd.cpu"), 1e-9):.2f}')"))"
done
echo "floor: fdatasync 4KiB p50 $(field "$WORK/floor.json" fdatasync_4k_p50_ms) ms p99 $(field "$WORK/floor.json" fdatasync_4k_p99_ms) ms; loopback rtt p50 $(field "$WORK/floor.json" loopback_rtt_p50_ms) ms p99 $(field "$WORK/floor.json" loopback_rtt_p99_ms) ms"
echo "floor of one put at c=1 on three nodes (openraft 0.10: the leader's own sync runs beside replication): 1 fsync + 2 round trips + apply"
