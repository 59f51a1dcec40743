#!/usr/bin/env bash
# A/B of two raftkv-server builds on one machine: one three-member cluster each, both up
# at once, runs alternating (A first in odd rounds, B first in even ones, so neither
# build always gets the machine's better moment). Per run: put throughput, p50/p99 (ms)
# and the members' CPU seconds per 1,000 writes.
#
# Usage: A=/path/to/raftkv-server B=/path/to/raftkv-server [ROUNDS=6] [DUR=10] \
#          [WORKLOADS="c64-all"] [A_PEER_TLS=1] [B_PEER_TLS=1] benches/ab-servers.sh
# X_PEER_TLS=1: that cluster's members talk mutual TLS (https:// peer URLs, a CA and a
# certificate made for the run); clients stay plaintext.
# Workloads: c64-all, c16-all (64 or 16 clients over all members), c1-leader, c1-follower (one client,
# one connection, to the leader or to a follower) put 256-byte values; get-lin, get-ser: 64
# clients reading 10,000 prefilled keys over all members, linearizable or serializable
# (CPU per 1,000 reads then). Either build may predate etcd's flags
# (cluster.sh starts each with the flags it speaks).
set -uo pipefail
cd "$(dirname "$0")/.."
source benches/cluster.sh
install_missing etcdctl:etcd-client python3:python3 openssl:openssl
make_work_dir ab
build_release
declare -A EPS PID LEAD FOL
# cluster.sh's clean-up kills "${PIDS[@]}" on exit: it must name both clusters' members
# (reset per cluster, it named B's alone and left A's running after every run).
ALL_PIDS=()
for sys in A B; do
  mkdir -p "$WORK/$sys"; PIDS=("${ALL_PIDS[@]}")
  tls_var=${sys}_PEER_TLS; peer_tls=""
  if [ -n "${!tls_var:-}" ]; then peer_tls="$WORK/$sys-pki"; make_peer_certs "$peer_tls"; fi
  SERVER=${!sys} RK_PEER_TLS=$peer_tls start_raftkv_cluster "$WORK/$sys"
  wait_until_writable "$RK_ENDPOINTS" "$WORK/$sys/*.log"
  new_pids=("${PIDS[@]:${#ALL_PIDS[@]}}")
  ALL_PIDS=("${PIDS[@]}")
  EPS[$sys]=$RK_ENDPOINTS; PID[$sys]="${new_pids[*]}"
  # The leader and a follower, once every member names the same leader (a member that
  # has not heard from one yet leaves the field out).
  l=""
  for _ in $(seq 1 50); do
    if read -r l f < <(etcdctl --endpoints="${RK_ENDPOINTS//http:\/\//}" endpoint status -w json | python3 -c '
import json,sys
s=json.load(sys.stdin); leaders={e["Status"].get("leader") for e in s}
assert len(leaders)==1 and None not in leaders
l=[e["Endpoint"] for e in s if e["Status"]["header"]["member_id"]==e["Status"]["leader"]][0]
f=[e["Endpoint"] for e in s if e["Endpoint"]!=l][0]; print(l,f)' 2>/dev/null) && [ -n "$l" ]; then break; fi
    sleep 0.2
  done
  if [ -z "$l" ]; then echo "no agreed leader among ${RK_ENDPOINTS}" >&2; exit 1; fi
  LEAD[$sys]=http://$l; FOL[$sys]=http://$f
  case " ${WORKLOADS:-c64-all} " in
    *" get-"*) "$BENCH" get --endpoints "${EPS[$sys]}" --clients 16 --key-space 10000 --prefill \
                 --duration 1s > /dev/null 2>&1;;
  esac
done
for round in $(seq "${ROUNDS:-6}"); do
  for w in ${WORKLOADS:-c64-all}; do
    order="A B"; if [ $((round % 2)) = 0 ]; then order="B A"; fi
    for sys in $order; do
      put="put --value-size 256 --key-space 100000"
      case $w in
        c1-follower) ep=${FOL[$sys]}; args="$put --clients 1 --conns 1";;
        c1-leader) ep=${LEAD[$sys]}; args="$put --clients 1 --conns 1";;
        c16-all) ep=${EPS[$sys]}; args="$put --clients 16 --conns 4";;
        c64-all) ep=${EPS[$sys]}; args="$put --clients 64 --conns 8";;
        get-lin) ep=${EPS[$sys]}; args="get --consistency l --key-space 10000 --clients 64 --conns 8";;
        get-ser) ep=${EPS[$sys]}; args="get --consistency s --key-space 10000 --clients 64 --conns 8";;
        *) echo "unknown workload $w" >&2; exit 2;;
      esac
      # shellcheck disable=SC2086
      c0=$(cpu_seconds ${PID[$sys]})
      # shellcheck disable=SC2086
      out=$("$BENCH" $args --endpoints "$ep" --duration "${DUR:-10}s" 2>&1)
      # shellcheck disable=SC2086
      c1=$(cpu_seconds ${PID[$sys]})
      thr=$(echo "$out" | grep -oP 'throughput:\s+\K[0-9,.]+' | tr -d ,)
      p50=$(echo "$out" | grep -oP 'p50 \K[0-9.]+'); p99=$(echo "$out" | grep -oP 'p99 \K[0-9.]+')
      python3 -c "import sys; thr=float(sys.argv[1]); cpu=float(sys.argv[3])-float(sys.argv[2]); print(f'round $round %-12s $sys {thr:8.0f} ops/s p50 {sys.argv[4]} p99 {sys.argv[5]} cpu/1000 {cpu/(thr*${DUR:-10})*1000:.3f}' % '$w')" "$thr" "$c0" "$c1" "$p50" "$p99"
    done
  done
done
