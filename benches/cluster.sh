# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run): free loopback ports, a three-node
# raftkv cluster on 127.0.0.1, and a bounded wait until a cluster takes writes.
# Needs SERVER and BENCH (the raftkv-server and raftkv-bench binaries) and a PIDS array.

# A free TCP port on 127.0.0.1 (bound and released: another process could take it
# before the server binds it, which then fails to start and is reported).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Start three raftkv members with data under DIR (production durability, warnings
# logged to DIR/raftkv-<i>.log); sets RK_ENDPOINTS (client URLs, comma-separated) and
# RK_EP1 (member 1's) and appends the members to PIDS.
start_raftkv_cluster() {
  local dir=$1 cluster="" i c p
  local -a args
  mkdir -p "$dir"
  RK_ENDPOINTS=""; RK_EP1=""
  for i in 1 2 3; do
    c=$(free_port); p=$(free_port)
    cluster+="${cluster:+,}$i=http://127.0.0.1:$p"
    RK_ENDPOINTS+="${RK_ENDPOINTS:+,}http://127.0.0.1:$c"
    if [ "$i" = 1 ]; then RK_EP1="http://127.0.0.1:$c"; fi
    args[$i]="--id $i --data-dir $dir/raftkv-$i --listen-client 127.0.0.1:$c --listen-peer 127.0.0.1:$p"
  done
  for i in 1 2 3; do
    # shellcheck disable=SC2086
    "$SERVER" ${args[$i]} --initial-cluster "$cluster" --log warn >"$dir/raftkv-$i.out" 2>"$dir/raftkv-$i.log" &
    PIDS+=($!); disown
  done
}

# Wait (at most 30 s) until the cluster at ENDPOINTS answers a write; exit with its
# logs (files matching LOGS, a glob) otherwise.
wait_until_writable() {
  local endpoints=$1 logs=${2:-}
  for _ in $(seq 1 60); do
    if "$BENCH" put --endpoints "$endpoints" --clients 1 --conns 1 --total 5 --duration 2s >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  echo "cluster at $endpoints did not come up" >&2
  # shellcheck disable=SC2086
  if [ -n "$logs" ]; then tail -n 20 $logs >&2; fi
  exit 1
}
