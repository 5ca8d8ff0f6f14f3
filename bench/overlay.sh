#!/usr/bin/env bash
# Overlay scale benchmark (issue 16), by hand, as root:
#
#   cargo build --bins && bench/overlay.sh [NODES] [SANDBOXES_PER_NODE]     # default 10 2
#
# Simulates NODES nodes on this machine, each a network namespace on one underlay bridge plus a
# mount namespace with its own /run, running its own sandboxd (debug build from target/debug,
# or $RCNI_BIN_DIR) against one etcd (Debian etcd-server) started here. Every node creates
# SANDBOXES_PER_NODE sandboxes on one overlay network. Then one more node joins and creates a
# sandbox; the script prints:
#   - for every other node, the time from the new node's lease being written (its "claiming a
#     slice" log line, just before its creating transaction is sent) to that node having
#     programmed it (its "peer programmed" log line): p50 and max;
#   - etcd requests caused by the join (unary RPCs by method, from etcd's /metrics) and watch
#     messages sent (the fan-out);
#   - sandboxd RSS per node (mean, max).
# Everything runs in a private network + mount namespace created by the script and vanishes
# with it; every process is stopped by PID.
set -euo pipefail

NODES=${1:-10}
PER=${2:-2}
BIN=${RCNI_BIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/debug}

if [ -z "${OVB_INNER:-}" ]; then
  for b in etcd etcdctl unshare nsenter curl ip; do
    command -v "$b" >/dev/null || { echo "overlay.sh: $b is needed (apt-get install etcd-server etcd-client util-linux curl iproute2)" >&2; exit 1; }
  done
  [ -x "$BIN/sandboxd" ] && [ -x "$BIN/overlay" ] || { echo "overlay.sh: build first: cargo build --bins" >&2; exit 1; }
  exec unshare --net --mount --propagation private env OVB_INNER=1 RCNI_BIN_DIR="$BIN" "$0" "$@"
fi

mount -t tmpfs tmpfs /run
mkdir -p /run/netns
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /mnt
ROOT=/mnt
ip link set lo up
# A fixed address: a bridge takes its lowest port's MAC otherwise, and each node added
# would change the MAC the earlier nodes resolved for etcd (their packets then go unanswered).
ip link add ul0 address 02:77:00:00:00:fe type bridge
ip addr add 10.255.255.254/16 dev ul0
ip link set ul0 up
ETCD=10.255.255.254:2379

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

mkdir -p $ROOT/etcd
etcd --name b --data-dir $ROOT/etcd/data --listen-client-urls http://$ETCD --advertise-client-urls http://$ETCD \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster b=http://127.0.0.1:2380 >$ROOT/etcd/log 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints=http://$ETCD endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done

node_ip() { echo "10.255.$(( $1 / 250 )).$(( $1 % 250 + 1 ))"; }
declare -A HOLDER DAEMON

start_node() {
  local i=$1 ip
  ip=$(node_ip "$i")
  ip netns add n$i
  ip link add u$i type veth peer name eth0 netns n$i
  ip link set u$i master ul0 up
  ip -n n$i addr add "$ip/16" dev eth0
  ip -n n$i link set eth0 up
  ip -n n$i link set lo up
  mkdir -p $ROOT/n$i
  ip netns exec n$i unshare -m --propagation private sh -c \
    'mount -t tmpfs tmpfs /run && mkdir -p /run/netns && touch /run/ready && exec sleep 100000' &
  HOLDER[$i]=$!
  PIDS+=(${HOLDER[$i]})
  while [ ! -e /proc/${HOLDER[$i]}/root/run/ready ]; do sleep 0.02; done
  SANDBOXD_LOG=info,sandboxd::overlay=debug nsenter -t ${HOLDER[$i]} -m -n -- "$BIN/sandboxd" \
    --socket $ROOT/n$i/sock --data-dir $ROOT/n$i/data --cni-path "$BIN" --conf-dir $ROOT/n$i \
    --cluster-store etcd://$ETCD --advertise-addr "$ip" --node-name n$i --lease-ttl 30 \
    >/dev/null 2>$ROOT/n$i/log &
  DAEMON[$i]=$!
  PIDS+=(${DAEMON[$i]})
}

wait_ready() {
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --unix-socket $ROOT/n$1/sock http://l/v1/_ping)" = 200 ] && return 0
    sleep 0.05
  done
  echo "node $1 did not start" >&2; cat $ROOT/n$1/log >&2; exit 1
}

api() { curl -s -m 30 --unix-socket $ROOT/n$1/sock -X "$2" -H 'Content-Type: application/json' ${4:+-d "$4"} "http://l$3"; }

routes() { ip -n n$1 -4 route show dev ovx.1 2>/dev/null | grep -c via || true; }

echo "overlay benchmark: $NODES nodes x $PER sandboxes, then one node joins"
t0=$(date +%s.%N)
for i in $(seq 1 "$NODES"); do start_node "$i"; done
for i in $(seq 1 "$NODES"); do wait_ready "$i"; done
api 1 POST /v1/networks '{"name":"ov","driver":"overlay","subnets":[{"subnet":"10.64.0.0/12"}],"options":{"vni":"1","subnet_len":"24"}}' >/dev/null
for i in $(seq 1 "$NODES"); do
  for _ in $(seq 100); do api "$i" GET /v1/networks/ov | grep -q '"overlay"' && break; sleep 0.05; done
done
# A few nodes at a time: the machine has few cores.
JOBS=()
for i in $(seq 1 "$NODES"); do
  ( for s in $(seq 1 "$PER"); do api "$i" POST /v1/sandboxes "{\"name\":\"s$s\",\"network\":\"ov\"}" >/dev/null; done ) &
  JOBS+=($!)
  if (( i % 4 == 0 )); then wait "${JOBS[@]}"; JOBS=(); fi
done
if (( ${#JOBS[@]} )); then wait "${JOBS[@]}"; fi
for i in $(seq 1 "$NODES"); do
  for _ in $(seq 600); do [ "$(routes "$i")" -ge $(( NODES - 1 )) ] && break; sleep 0.1; done
done
made=0
for i in $(seq 1 "$NODES"); do made=$(( made + $(api "$i" GET /v1/sandboxes | grep -o '"mode"' | wc -l) )); done
[ "$made" -eq $(( NODES * PER )) ] || { echo "only $made of $(( NODES * PER )) sandboxes were created" >&2; exit 1; }
printf 'cluster up (%d nodes, %d sandboxes) in %.1f s\n' "$NODES" "$made" "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN {print a - b}')"

metrics() { curl -s http://$ETCD/metrics; }
unary() { # method count of OK unary calls
  metrics | awk '/^grpc_server_handled_total/ && /grpc_type="unary"/ {
      match($0, /grpc_method="[^"]*"/); m=substr($0, RSTART+13, RLENGTH-14); c[m]+=$NF }
    END { for (m in c) print m, c[m] }' | sort
}
watch_sent() { metrics | awk '/^grpc_server_msg_sent_total/ && /grpc_method="Watch"/ {s+=$NF} END {print s+0}'; }

before=$(unary); wbefore=$(watch_sent)
J=$(( NODES + 1 ))
start_node "$J"
wait_ready "$J"
api "$J" POST /v1/sandboxes '{"name":"s1","network":"ov"}' >/dev/null
for i in $(seq 1 "$NODES"); do
  for _ in $(seq 600); do [ "$(routes "$i")" -ge "$NODES" ] && break; sleep 0.05; done
done
sleep 0.5
after=$(unary); wafter=$(watch_sent)

ts() { date -d "$1" +%s.%N; }
# The moment the new node sent its slice transaction (the key is written within that round trip).
lease_line=$(grep -m1 'claiming a slice' $ROOT/n$J/log)
tl=$(ts "$(echo "$lease_line" | awk '{print $1}')")
delays=()
for i in $(seq 1 "$NODES"); do
  l=$(grep 'peer programmed' $ROOT/n$i/log | grep "node=n$J" | head -1 || true)
  [ -n "$l" ] || { echo "node $i never programmed the new node" >&2; continue; }
  tp=$(ts "$(echo "$l" | awk '{print $1}')")
  delays+=("$(awk -v a="$tp" -v b="$tl" 'BEGIN {printf "%.3f", (a - b) * 1000}')")
done
sorted=$(printf '%s\n' "${delays[@]}" | sort -g)
n=${#delays[@]}
p50=$(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p")
max=$(echo "$sorted" | tail -1)
printf 'join: all %d nodes programmed the new node: p50 %.1f ms, max %.1f ms after its lease was written\n' "$n" "$p50" "$max"
echo "join: etcd unary requests (method: count), all nodes together:"
join -a2 -e0 -o 2.1,1.2,2.2 <(echo "$before") <(echo "$after") | awk '{d=$3-$2; if (d>0) {printf "  %s: %d\n", $1, d; t+=d}} END {printf "  total: %d\n", t}'
echo "join: watch messages sent by etcd: $(( wafter - wbefore )) (fan-out to $NODES watchers + the new node)"
rss=()
for i in $(seq 1 "$J"); do rss+=("$(awk '/VmRSS/ {print $2}' /proc/${DAEMON[$i]}/status 2>/dev/null || echo 0)"); done
printf 'sandboxd RSS per node: mean %d KiB, max %d KiB (debug build)\n' \
  "$(( ( $(printf '%s+' "${rss[@]}")0 ) / ${#rss[@]} ))" "$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)"
echo "etcd RSS: $(awk '/VmRSS/ {print $2}' /proc/${PIDS[0]}/status) KiB"
