#!/bin/sh
# sandboxd figures (issue 13): connect latency through the daemon vs the same chain exec'd
# directly (`netns attach`), daemon RSS with N sandboxes, `GET /v1/sandboxes` and `netns sandbox ls`
# times, restart time
# (SIGTERM, start, start-up reconcile of every sandbox, socket answering).
# Runs in a private network + mount namespace it makes itself:
#   unshare -n -m sh bench/sandboxd.sh [BIN_DIR] [N]      (default target/debug, 1000)
set -eu
BIN=$(realpath "${1:-target/debug}")
N=${2:-1000}
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
mount -t sysfs sysfs /sys
ip link set lo up
W=/run/bench; mkdir -p "$W/conf"
S="$W/sandboxd.sock"
C="curl -s --unix-socket $S"
start() {
  "$BIN/sandboxd" --socket "$S" --data-dir "$W/data" --cni-path "$BIN" --conf-dir "$W/conf" 2>>"$W/log" &
  PID=$!
  until $C -o /dev/null http://x/v1/_ping; do sleep 0.01; done
}
ms() { python3 -c "import sys; v=sorted(float(x) for x in sys.stdin.read().split()); print('p50 %.2f ms, p90 %.2f ms (n=%d)' % (v[len(v)//2]*1000, v[int(len(v)*0.9)]*1000, len(v)))"; }

start
$C -o /dev/null -X POST -d '{"name":"bench","subnets":[{"subnet":"10.200.0.0/16"}]}' http://x/v1/networks
$C -o /dev/null -X POST -d '{"name":"lat"}' http://x/v1/sandboxes

# Connect through the daemon (curl's own start-up included, as `netns attach` includes its own).
: > "$W/daemon.t"
for i in $(seq 40); do
  $C -o /dev/null -w '%{time_total}\n' -X POST -d '{"network":"bench"}' http://x/v1/sandboxes/lat/endpoints >> "$W/daemon.t"
  $C -o /dev/null -X DELETE http://x/v1/sandboxes/lat/endpoints/bench
done

# The same chain the daemon generates, exec'd directly by the netns CLI.
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
conf = {"cniVersion": "1.1.0", "name": "direct", "plugins": [
  {"type": "bridge", "bridge": "sbr-direct", "isGateway": True, "isDefaultGateway": True, "ipMasq": True,
   "hairpinMode": True, "capabilities": {"ips": True, "mac": True},
   "ipam": {"type": "host-local", "dataDir": w + "/ipam-direct", "ranges": [[{"subnet": "10.201.0.0/16"}]]}},
  {"type": "firewall"}]}
open(w + "/conf/direct.conflist", "w").write(json.dumps(conf))
PY
ip netns add direct
: > "$W/direct.t"
for i in $(seq 40); do
  t0=$(date +%s.%N)
  CNI_PATH="$BIN" "$BIN/netns" attach --conf-dir "$W/conf" direct direct >/dev/null
  t1=$(date +%s.%N)
  python3 -c "print(round($t1 - $t0, 3))" >> "$W/direct.t"
  CNI_PATH="$BIN" "$BIN/netns" detach --conf-dir "$W/conf" direct direct >/dev/null
done
echo "connect through sandboxd:        $(ms < "$W/daemon.t")"
echo "same chain via netns attach:     $(ms < "$W/direct.t")"

t0=$(date +%s.%N)
seq "$N" | xargs -P 8 -I{} $C -o /dev/null -X POST -d '{"name":"s{}","network":"bench"}' http://x/v1/sandboxes
t1=$(date +%s.%N)
echo "created $($C http://x/v1/sandboxes | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') sandboxes in $(python3 -c "print(round($t1 - $t0, 3))") s"
echo "daemon RSS with them: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
: > "$W/ls.t"
for i in $(seq 20); do $C -o /dev/null -w '%{time_total}\n' http://x/v1/sandboxes >> "$W/ls.t"; done
echo "GET /v1/sandboxes ($N): $(ms < "$W/ls.t")"
# The same through the client, table rendering and process start-up included.
: > "$W/netns-ls.t"
for i in $(seq 20); do
  a=$(date +%s.%N); "$BIN/netns" --daemon "$S" sandbox ls > /dev/null; b=$(date +%s.%N)
  python3 -c "print($b - $a)" >> "$W/netns-ls.t"
done
echo "netns sandbox ls ($N): $(ms < "$W/netns-ls.t")"
kill -TERM $PID; wait $PID || true
t0=$(date +%s.%N); start; t1=$(date +%s.%N)
echo "restart (SIGTERM, start, start-up reconcile, until the socket answers): $(python3 -c "print(round($t1 - $t0, 3))") s"
until [ "$(grep -c 'start-up checks finished' "$W/log")" -ge 1 ]; do sleep 0.05; done
t2=$(date +%s.%N)
echo "background CHECK of every endpoint after that restart finished after: $(python3 -c "print(round($t2 - $t0, 3))") s"
kill -TERM $PID; wait $PID || true
