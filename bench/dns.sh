#!/bin/sh
# sandboxd's name service (issue 15) beside dnsmasq, in one run: one network with N sandboxes
# (N names), sandboxd answering them on the gateway (port 53), and dnsmasq serving the same N
# names from a hosts file on the same address (port 5353). The load generator (bench/dns_load.rs)
# runs inside the first sandbox, so both servers are reached over the same veth and bridge; it
# asks A queries round-robin over the N names and checks every answer. Rounds alternate between
# the servers. Latency is read at 1 client (one query in flight), throughput at 16 clients.
# Runs in a private network + mount namespace it makes itself:
#   unshare -n -m sh bench/dns.sh [BIN_DIR] [N] [SECS]   (default target/release, 1000, 5)
# BIN_DIR must hold sandboxd, bridge, host-local, firewall and dns-load:
#   cargo build --release -p sandboxd -p bridge -p host-local -p firewall-plugin -p rcni-bench
set -eu
BIN=$(realpath "${1:-target/release}")
N=${2:-1000}
SECS=${3:-5}
DNSMASQ=/usr/sbin/dnsmasq
[ -x "$DNSMASQ" ] || { echo "dns.sh: dnsmasq is needed (apt-get install dnsmasq-base)" >&2; exit 1; }
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
mount -t sysfs sysfs /sys
ip link set lo up
W=/run/bench-dns; mkdir -p "$W/conf"
: > "$W/resolv.conf"   # no upstream: nothing leaves the namespace
S="$W/sandboxd.sock"
C="curl -s --unix-socket $S"
"$BIN/sandboxd" --socket "$S" --data-dir "$W/data" --cni-path "$BIN" --conf-dir "$W/conf" \
  --resolv-conf "$W/resolv.conf" 2>>"$W/log" &
PID=$!
until $C -o /dev/null http://x/v1/_ping; do sleep 0.01; done
$C -o /dev/null -X POST -d '{"name":"dnsb","subnets":[{"subnet":"10.210.0.0/16"}]}' http://x/v1/networks
t0=$(date +%s.%N)
seq "$N" | xargs -P 8 -I{} $C -o /dev/null -X POST -d '{"name":"s{}","network":"dnsb"}' http://x/v1/sandboxes
t1=$(date +%s.%N)
echo "created $N sandboxes on one network in $(python3 -c "print(round($t1 - $t0, 1))") s"
$C http://x/v1/sandboxes | python3 -c '
import json, sys
w = sys.argv[1]
sbs = json.load(sys.stdin)
with open(w + "/hosts", "w") as h, open(w + "/names", "w") as n:
    for s in sbs:
        a = s["endpoints"][0]["addresses"][0].split("/")[0]
        h.write("%s %s\n" % (a, s["name"]))
        n.write(s["name"] + "\n")
print("names: %d" % len(sbs))
' "$W"
"$DNSMASQ" --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --addn-hosts="$W/hosts" --bind-interfaces --listen-address=10.210.0.1 --port=5353 \
  --user=root --pid-file= 2>>"$W/dnsmasq.log" &
DPID=$!
until ss -Hlnu 'sport = :5353' | grep -q 10.210.0.1; do sleep 0.05; done
echo "daemon RSS with $N names: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status); dnsmasq RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$DPID/status)"
run() { ip netns exec s1 "$BIN/dns-load" "$1" "$W/names" --clients "$2" --secs "$SECS"; }
for round in 1 2; do
  echo "round $round"
  run 10.210.0.1:53 1;   run 10.210.0.1:5353 1
  run 10.210.0.1:53 16;  run 10.210.0.1:5353 16
done
# Restart: SIGTERM, start again, until a query for the last name is answered (from the first
# query sent after the new process was started).
kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
t0=$(date +%s.%N)
"$BIN/sandboxd" --socket "$S" --data-dir "$W/data" --cni-path "$BIN" --conf-dir "$W/conf" \
  --resolv-conf "$W/resolv.conf" 2>>"$W/log" &
PID=$!
until ip netns exec s1 "$BIN/dns-load" 10.210.0.1:53 --once "s$N"; do sleep 0.01; done
t1=$(date +%s.%N)
echo "restart with $N sandboxes: names answered $(python3 -c "print(round($t1 - $t0, 3))") s after the new daemon was started"
kill -TERM "$DPID" "$PID"; wait "$DPID" "$PID" 2>/dev/null || true
