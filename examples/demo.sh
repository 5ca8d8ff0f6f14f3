#!/usr/bin/env bash
# Demo, the main job: sandboxd attaches sandboxes in every Docker network mode through our
# plugins, traffic flows, a published port answers, and everything survives a daemon restart
# (SIGTERM, then kill -9). The `netns` CLI is the client. Everything happens inside a private
# network + mount namespace made for this run: the machine's own interfaces, routes and firewall
# are untouched, and all of it disappears when the script exits.
#
# Usage: examples/demo.sh <directory with the built binaries>   (./suite.sh demo)
set -euo pipefail
[ -n "${RCNI_DEMO_TRACE:-}" ] && set -x

if [ -z "${RCNI_DEMO_INSIDE:-}" ]; then
  bin=$(realpath "${1:-target/release}")
  for b in sandboxd netns bridge host-local portmap firewall host none container loopback; do
    [ -x "$bin/$b" ] || { echo "demo: $bin/$b missing (build the workspace first)" >&2; exit 1; }
  done
  exec unshare --net --mount --propagation private env RCNI_DEMO_INSIDE=1 bash "$0" "$bin"
fi

bin=$1
# The private world: our own /run (netns pins, the daemon's socket), sysfs and CNI directories.
mount -t tmpfs tmpfs /run
mkdir -p /run/netns /run/demo/net.d
mount -t sysfs sysfs /sys
mkdir -p /var/lib/cni && mount -t tmpfs tmpfs /var/lib/cni
ip link set lo up

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '   \033[32mok\033[0m  %s\n' "$*"; }
fail() { printf '   \033[31mFAIL\033[0m %s\n' "$*"; exit 1; }
run() { printf '   $ %s\n' "$*"; "$@" | sed 's/^/     /'; }

export SANDBOXD_SOCKET=/run/demo/sandboxd.sock
netns() { "$bin/netns" "$@"; }
daemon_pid=
start_daemon() {
  # Names: each sandbox's resolv.conf and hosts go to /run/demo/etc-netns/<name>/ (what
  # `netns exec` mounts over /etc); an empty host resolv.conf: nothing is forwarded out of the demo.
  : > /run/demo/resolv.conf
  "$bin/sandboxd" --socket "$SANDBOXD_SOCKET" --data-dir /run/demo/data --cni-path "$bin" \
    --conf-dir /run/demo/net.d --etc-netns /run/demo/etc-netns --resolv-conf /run/demo/resolv.conf \
    2>>/run/demo/sandboxd.log &
  daemon_pid=$!
  for _ in $(seq 1 100); do
    netns network ls >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat /run/demo/sandboxd.log >&2
  fail "sandboxd did not answer on $SANDBOXD_SOCKET"
}
stop_daemon() { # stop_daemon SIGNAL
  kill "-$1" "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=
}
servers=()
cleanup() {
  for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$daemon_pid" ]; then stop_daemon TERM; fi
}
trap cleanup EXIT

# A server inside a sandbox: answers every TCP connection on :80 with one line.
serve() { # serve SANDBOX TEXT
  ip netns exec "$1" socat TCP-LISTEN:80,fork,reuseaddr "SYSTEM:echo $2" &
  servers+=($!)
  for _ in $(seq 1 50); do ip netns exec "$1" ss -ltn | grep -q ':80 ' && return 0; sleep 0.1; done
  fail "server in $1 did not start"
}
fetch() { # fetch [NETNS] ADDR PORT -> the line the server sent, or nothing
  local in=()
  [ $# -eq 3 ] && { in=(ip netns exec "$1"); shift; }
  "${in[@]}" socat -t5 -T5 - "TCP:$1:$2" </dev/null 2>/dev/null || true
}
addr_of() { # addr_of SANDBOX NETWORK -> IPv4 address of that endpoint
  netns sandbox inspect "$1" --json | python3 -c '
import json, sys
sb = json.load(sys.stdin)
for ep in sb["endpoints"]:
    if ep["network"] == sys.argv[1]:
        print(next(a.split("/")[0] for a in ep["addresses"] if ":" not in a)); break' "$2"
}

say "A 'remote' host on an uplink that knows no route back to the sandboxes"
ip netns add remote
ip link add uplink type veth peer name eth0 netns remote
ip addr add 203.0.113.1/24 dev uplink && ip link set uplink up
ip -n remote addr add 203.0.113.2/24 dev eth0 && ip -n remote link set eth0 up
ok "remote is 203.0.113.2; only masquerade brings replies back"

say "Start sandboxd (its own socket and data directory; plugins from $bin)"
start_daemon
ok "sandboxd is up (pid $daemon_pid)"
run netns network ls

say "A user network, and sandboxes in every mode"
run netns network create app --subnet 10.50.0.0/24
netns sandbox create web --network app -p 8080:80 --hostname web >/dev/null
netns sandbox create db --network app >/dev/null
netns sandbox create plain >/dev/null                       # the default bridge network
netns sandbox create side --network container:web >/dev/null
netns sandbox create lo-only --network none >/dev/null
netns sandbox create hostnet --network host >/dev/null
run netns sandbox ls

web=$(addr_of web app); db=$(addr_of db app); plain=$(addr_of plain bridge)
say "Traffic"
ip netns exec db ping -c1 -W2 "$web" >/dev/null && ok "db -> web ($web) on app" || fail "db cannot reach web"
ip netns exec web ping -c1 -W2 203.0.113.2 >/dev/null && ok "web -> remote (masqueraded)" || fail "web cannot reach remote"
ip netns exec plain ping -c1 -W2 203.0.113.2 >/dev/null && ok "plain ($plain, default bridge) -> remote" || fail "plain cannot reach remote"
ip netns exec plain ping -c1 -W1 "$web" >/dev/null 2>&1 && fail "plain (bridge) reached web (app)" ||
  ok "plain (bridge) cannot reach web (app): networks are isolated, as Docker's are"
for name in web web.app; do
  got=$(NETNS_ETC_DIR=/run/demo/etc-netns netns exec db getent hosts "$name" | awk '{print $1}')
  [ "$got" = "$web" ] && ok "db resolves $name -> $got (sandboxd's name service on app's gateway)" ||
    fail "db resolved $name to '$got', not $web"
done
NETNS_ETC_DIR=/run/demo/etc-netns netns exec plain getent hosts web >/dev/null &&
  fail "plain (bridge) resolved web (app)" || ok "plain (bridge) cannot resolve web: names stay on their network"
serve web "hello from web"
[ "$(fetch 127.0.0.1 8080)" = "hello from web" ] && ok "published port: host 127.0.0.1:8080 -> web:80" || fail "127.0.0.1:8080"
[ "$(fetch remote 203.0.113.1 8080)" = "hello from web" ] && ok "published port: remote -> 203.0.113.1:8080 -> web:80" || fail "remote -> 8080"
side_ns=$(netns sandbox inspect side --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["netns"])')
[ "$(ip netns exec web ip -4 -o addr show dev eth0 | awk '{print $4}')" = "$(nsenter --net="$side_ns" ip -4 -o addr show dev eth0 | awk '{print $4}')" ] &&
  ok "container:web -> side ($side_ns) sees web's eth0 ($web)" || fail "side does not share web's namespace"
[ "$(ip netns exec lo-only ip -o link | wc -l)" = 1 ] && ok "none -> lo-only has loopback only" || fail "lo-only has more than lo"
[ "$(netns sandbox inspect hostnet --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["mode"])')" = host ] &&
  ok "host -> hostnet uses the host namespace" || fail "hostnet mode"

say "connect / disconnect a running sandbox"
run netns network connect app plain
plain_app=$(addr_of plain app)
ip netns exec plain ping -c1 -W2 -I eth1 "$web" >/dev/null && ok "plain eth1 ($plain_app) -> web on app" || fail "plain on app"
run netns network disconnect app plain
ip netns exec plain ip link show eth1 >/dev/null 2>&1 && fail "eth1 still there" || ok "eth1 gone after disconnect"

say "Restart the daemon: SIGTERM (sandboxes keep working while it is down), then kill -9"
stop_daemon TERM
ip netns exec db ping -c1 -W2 "$web" >/dev/null && ok "daemon down: db -> web still flows" || fail "traffic stopped with the daemon"
start_daemon
[ "$(netns sandbox ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 6 ] &&
  ok "after SIGTERM + start: 6 sandboxes" || fail "sandboxes lost"
stop_daemon KILL
start_daemon
run netns sandbox ls
[ "$(fetch 127.0.0.1 8080)" = "hello from web" ] && ok "after kill -9 + start: published port still answers" || fail "port after restart"
ip netns exec db ping -c1 -W2 "$web" >/dev/null && ok "after kill -9 + start: db -> web" || fail "traffic after restart"

say "Someone flushes the firewall; netns repair puts our entries back"
nft flush ruleset
[ -z "$(fetch 127.0.0.1 8080)" ] && ok "port dead after nft flush ruleset" || fail "port still open after flush?"
run netns repair
[ "$(fetch 127.0.0.1 8080)" = "hello from web" ] && ok "port answers again after repair" || fail "repair"

say "Teardown"
for s in side web db plain lo-only hostnet; do netns sandbox rm "$s" >/dev/null; done
run netns network rm app
left_veths=$(ip -o link show type veth | grep -vc uplink || true)
left_pins=$(ls /run/netns | grep -vc '^remote$' || true)
left_fw=$(nft list table inet rcni 2>/dev/null | grep -c 'id: ' || true)  # owner-tagged elements
left_leases=$(find /var/lib/cni/networks -type f 2>/dev/null | grep -cE '/[0-9a-fA-F:.]+$' || true)
[ "$left_veths$left_pins$left_fw$left_leases" = "0000" ] &&
  ok "nothing left: 0 veths, 0 pinned namespaces, 0 firewall entries, 0 leases" ||
  fail "left behind: $left_veths veths, $left_pins pins, $left_fw firewall entries, $left_leases leases"
stop_daemon TERM
ok "sandboxd stopped"
