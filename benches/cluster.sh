# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run): the tools and release binaries they
# need, reserved loopback ports, three-member raftkv and etcd clusters on 127.0.0.1, and a
# bounded wait until a cluster takes writes. The cluster functions need SERVER and BENCH
# (set by build_release) and a PIDS array.

# A scratch directory for this run (WORK) and the list of servers started (PIDS); both
# go when the script exits, however it exits.
make_work_dir() {
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
  PIDS=()
  trap cleanup_work_dir EXIT
}
cleanup_work_dir() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}

# Install the Debian packages of the commands that are missing (as root); each argument
# is COMMAND:PACKAGE.
install_missing() {
  local want missing=()
  for want in "$@"; do
    command -v "${want%%:*}" >/dev/null 2>&1 || missing+=("${want#*:}")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
      echo "missing ${missing[*]}: apt-get install ${missing[*]}" >&2; exit 1
    fi
  fi
}

# Build raftkv-server and raftkv-bench (release, in $CARGO_TARGET_DIR, default target/);
# sets SERVER and BENCH.
build_release() {
  cargo build --release --locked --bin raftkv-server -p raftkv -q
  cargo build --release --locked -p raftkv-bench -q
  SERVER="${CARGO_TARGET_DIR:-target}/release/raftkv-server"
  BENCH="${CARGO_TARGET_DIR:-target}/release/raftkv-bench"
}

# Reserve a TCP port on 127.0.0.1 for the rest of this script; sets RESERVED_PORT.
# The same rule as the tests' ReservedPort (tests/support/ports.rs): a port outside the
# kernel's ephemeral range (no outgoing connection is given it) whose lock file under
# ${TMPDIR:-/tmp}/raftkv-ports/ this shell holds with flock (no other harness that
# follows the rule picks it). So nothing takes it between here and the server binding
# it. The lock descriptors stay open (the servers inherit them too).
reserve_port() {
  local dir="${TMPDIR:-/tmp}/raftkv-ports" low high lo hi span start port fd i
  mkdir -p "$dir"
  read -r low high </proc/sys/net/ipv4/ip_local_port_range
  if [ "$low" -ge 12000 ]; then lo=10000; hi=$low; else lo=$((high + 1)); hi=65535; fi
  span=$((hi - lo)); start=$(((RANDOM * 32768 + RANDOM + $$) % span))
  for ((i = 0; i < span; i++)); do
    port=$((lo + (start + i) % span))
    exec {fd}>"$dir/$port.lock"
    # Skip ports a service outside these rules already uses (the probe's release is
    # safe: nothing that follows the rules takes a locked port outside the range).
    if flock -n "$fd" && python3 -c 'import socket,sys; socket.socket().bind(("127.0.0.1",int(sys.argv[1])))' "$port" 2>/dev/null; then
      RESERVED_PORT=$port
      return 0
    fi
    exec {fd}>&-
  done
  echo "no free port in $lo-$hi" >&2
  return 1
}

# Start three raftkv members with data under DIR (production durability, warnings
# logged to DIR/raftkv-<i>.log, RK_EXTRA_FLAGS added to each); sets RK_ENDPOINTS (client URLs, comma-separated) and
# RK_EP1 (member 1's) and appends the members to PIDS.
start_raftkv_cluster() {
  local dir=$1 cluster="" i c p scheme=http
  local -a args
  if [ -n "${RK_PEER_TLS:-}" ]; then scheme=https; fi
  mkdir -p "$dir"
  RK_ENDPOINTS=""; RK_EP1=""
  for i in 1 2 3; do
    reserve_port; c=$RESERVED_PORT
    reserve_port; p=$RESERVED_PORT
    cluster+="${cluster:+,}$i=$scheme://127.0.0.1:$p"
    RK_ENDPOINTS+="${RK_ENDPOINTS:+,}http://127.0.0.1:$c"
    if [ "$i" = 1 ]; then RK_EP1="http://127.0.0.1:$c"; fi
    # Member names 1, 2, 3 are their ids. Builds before etcd's flags (BASELINE_SERVER)
    # took --id and bare listen addresses.
    # Not `grep -q`: it stops reading early, and under pipefail the --help that gets
    # SIGPIPE would make a new build look like an old one.
    if "$SERVER" --help 2>/dev/null | grep -- --listen-client-urls >/dev/null; then
      args[$i]="--name $i --data-dir $dir/raftkv-$i --listen-client-urls http://127.0.0.1:$c --listen-peer-urls $scheme://127.0.0.1:$p"
      if [ -n "${RK_PEER_TLS:-}" ]; then
        args[$i]+=" --peer-cert-file $RK_PEER_TLS/peer.crt --peer-key-file $RK_PEER_TLS/peer.key"
        args[$i]+=" --peer-trusted-ca-file $RK_PEER_TLS/ca.crt --peer-client-cert-auth=true"
      fi
    else
      args[$i]="--id $i --data-dir $dir/raftkv-$i --listen-client 127.0.0.1:$c --listen-peer 127.0.0.1:$p"
    fi
  done
  for i in 1 2 3; do
    # shellcheck disable=SC2086
    "$SERVER" ${args[$i]} --initial-cluster "$cluster" --log "${RK_LOG:-warn}" ${RK_EXTRA_FLAGS:-} >"$dir/raftkv-$i.out" 2>"$dir/raftkv-$i.log" &
    PIDS+=($!); disown
  done
}

# A CA and a peer certificate for 127.0.0.1 (server and client use) in DIR, for
# RK_PEER_TLS=DIR: start_raftkv_cluster then uses https:// peer URLs with mutual TLS.
make_peer_certs() {
  local dir=$1
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=member" \
    -keyout "$dir/peer.key" -out "$dir/peer.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/peer.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 1 -extfile "$dir/ext.cnf" -out "$dir/peer.crt" 2>/dev/null
}

# Start three etcd members with data under DIR (etcd's default durability, errors logged
# to DIR/etcd-<i>.log); sets ET_EP (client URLs, comma-separated) and appends the members
# to PIDS.
start_etcd_cluster() {
  local dir=$1 cluster="" i
  local -a client peer
  ET_EP=""
  for i in 1 2 3; do
    reserve_port; client[$i]=$RESERVED_PORT
    reserve_port; peer[$i]=$RESERVED_PORT
    cluster+="${cluster:+,}e$i=http://127.0.0.1:${peer[$i]}"
    ET_EP+="${ET_EP:+,}http://127.0.0.1:${client[$i]}"
  done
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$dir/etcd-$i" \
      --listen-client-urls "http://127.0.0.1:${client[$i]}" --advertise-client-urls "http://127.0.0.1:${client[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${peer[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peer[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-state new --log-level error >"$dir/etcd-$i.log" 2>&1 &
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

# The position (0-based) of the leader among ENDPOINTS (comma-separated URLs), by etcd's
# Status (both systems speak it).
leader_position() {
  # host:port, not http://host:port: raftkv refuses etcdctl's :authority for the latter
  # on this call (noted in the etcd compatibility issue).
  local endpoints=${1//http:\/\//}
  ETCDCTL_API=3 etcdctl --endpoints="$endpoints" endpoint status -w json | python3 -c '
import json, sys
st = json.load(sys.stdin)
leader = st[0]["Status"]["leader"]
print([s["Status"]["header"]["member_id"] for s in st].index(leader))'
}

# The leader's URL among ENDPOINTS (comma-separated URLs).
leader_endpoint() {
  local -a urls
  IFS=, read -r -a urls <<<"$1"
  echo "${urls[$(leader_position "$1")]}"
}

# CPU seconds (user + system) of the given pids so far.
cpu_seconds() {
  python3 - "$@" <<'EOF'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in sys.argv[1:]:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    total += int(fields[11]) + int(fields[12])  # utime, stime
print(total / tick)
EOF
}
