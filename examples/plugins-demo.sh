#!/usr/bin/env bash
# Demo: attach containers with our plugins and show traffic flowing, for Docker's four network
# modes (bridge, none, host, container). Everything happens inside a private network + mount
# namespace made for this run: the machine's own interfaces, routes and firewall are untouched,
# and all of it disappears when the script exits.
#
# Usage: examples/plugins-demo.sh <directory with the built plugins>
set -euo pipefail
[ -n "${RCNI_DEMO_TRACE:-}" ] && set -x

if [ -z "${RCNI_DEMO_INSIDE:-}" ]; then
  bin=$(realpath "${1:-target/release}")
  [ -x "$bin/bridge" ] || { echo "demo: no plugins in $bin (build them first)" >&2; exit 1; }
  exec unshare --net --mount --propagation private env RCNI_DEMO_INSIDE=1 bash "$0" "$bin"
fi

bin=$1
# The private world: our own /run (netns pins, locks), sysfs and CNI data directory.
mount -t tmpfs tmpfs /run
mkdir -p /run/netns /run/demo
mount -t sysfs sysfs /sys
mkdir -p /var/lib/cni && mount -t tmpfs tmpfs /var/lib/cni
ip link set lo up

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '   \033[32mok\033[0m  %s\n' "$*"; }
fail() { printf '   \033[31mFAIL\033[0m %s\n' "$*"; exit 1; }

# A minimal runtime: exec a plugin the way containerd does (env + config on stdin).
cni() { # cni VERB PLUGIN CONTAINER_ID NETNS IFNAME CONFIG_JSON
  printf '%s' "$6" | env -i PATH="$PATH" CNI_COMMAND="$1" CNI_CONTAINERID="$3" CNI_NETNS="$4" \
    CNI_IFNAME="$5" CNI_PATH="$bin" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo" "$bin/$2"
}
ms() { date +%s%N; }

# The pod network: Podman's default chain, every plugin ours.
mkdir -p /run/demo/net.d
cat > /run/demo/net.d/10-demo.conflist <<'JSON'
{"cniVersion": "1.0.0", "name": "demo", "plugins": [
  {"type": "bridge", "bridge": "demo0", "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}], [{"subnet": "fd00:88::/64"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "firewall"},
  {"type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}}]}
JSON
export NETCONFPATH=/run/demo/net.d CNI_PATH="$bin"
netns() { "$bin/netns" "$@"; }
say "A 'remote' host on an uplink that knows no route back to the pod subnet"
ip netns add remote
ip link add uplink type veth peer name eth0 netns remote
ip addr add 203.0.113.1/24 dev uplink && ip link set uplink up
ip -n remote addr add 203.0.113.2/24 dev eth0 && ip -n remote link set eth0 up && ip -n remote link set lo up
ok "remote is 203.0.113.2; only masquerade can bring replies back"

say "bridge mode: two containers through bridge -> portmap -> firewall -> tuning (the netns CLI plays the runtime)"
netns networks
for c in web db; do
  netns add "$c"
  port=(); [ "$c" = web ] && port=(--port 8080:80)
  t0=$(ms); netns attach "$c" demo "${port[@]}" >/dev/null; t1=$(ms)
  ok "$c attached in $(( (t1 - t0) / 1000000 )) ms"
done
netns show web | sed 's/^/   /'

say "traffic"
netns exec web -- ping -c1 -W2 10.88.0.3 >/dev/null && ok "web -> db over IPv4 (10.88.0.3)" || fail "web -> db"
netns exec db -- ping -c1 -W2 fd00:88::2 >/dev/null && ok "db -> web over IPv6 (fd00:88::2)" || fail "db -> web v6"
netns exec web -- ping -c1 -W2 203.0.113.2 >/dev/null && ok "web -> remote 203.0.113.2 through masquerade" || fail "web -> remote"
ip netns exec web socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo hello from web' & listener=$!
trap 'kill "$listener" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do ip netns exec web ss -Hltn 'sport = :80' | grep -q . && break; sleep 0.05; done
reply=$(ip netns exec remote socat -T2 - TCP:203.0.113.1:8080 </dev/null || true)
[ "$reply" = "hello from web" ] && ok "remote -> 203.0.113.1:8080 published port reaches web:80" || fail "published port from remote: '$reply'"
reply=$(socat -T2 - TCP:127.0.0.1:8080 </dev/null || true)
[ "$reply" = "hello from web" ] && ok "host -> 127.0.0.1:8080 reaches web:80" || fail "published port from localhost: '$reply'"
reply=$(ip netns exec db socat -T2 - TCP:10.88.0.1:8080 </dev/null || true)
[ "$reply" = "hello from web" ] && ok "db -> gateway:8080 hairpins to web:80" || fail "hairpin: '$reply'"
kill "$listener" 2>/dev/null; wait "$listener" 2>/dev/null || true

say "our nftables table (one set element per container address or port, whatever the count)"
nft list table inet rcni | sed 's/^/   /'

say "none mode: loopback only"
ip netns add sealed
cni ADD none sealed-id /run/netns/sealed eth0 '{"cniVersion":"1.1.0","name":"none","type":"none"}' >/dev/null
ip -n sealed -br link | sed 's/^/   sealed: /'
ip netns exec sealed ping -c1 -W1 127.0.0.1 >/dev/null && ok "sealed reaches its own loopback"
ip netns exec sealed ping -c1 -W1 10.88.0.2 >/dev/null 2>&1 && fail "sealed reached web" || ok "sealed reaches nothing else"

say "container mode: a sidecar joins web's namespace"
cni ADD container sidecar-id /run/netns/web eth0 \
  '{"cniVersion":"1.1.0","name":"joined","type":"container","target":"/run/netns/web"}' |
  grep -o '"address": *"[^"]*"' | sed 's/"address": *//; s/^/   sidecar sees /'
cni DEL container sidecar-id /run/netns/web eth0 \
  '{"cniVersion":"1.1.0","name":"joined","type":"container","target":"/run/netns/web"}'
ip netns exec web ping -c1 -W2 10.88.0.3 >/dev/null && ok "web still works after the sidecar left"

say "host mode: the sandbox shares the host namespace (reported, never changed)"
cni ADD host hostnet-id /proc/self/ns/net eth0 '{"cniVersion":"1.1.0","name":"host","type":"host"}' |
  grep -o '"name": *"[^"]*"' | sed 's/"name": *//' | tr '\n' ' ' | sed 's/^/   host interfaces: /'; echo
out=$(cni ADD host x /run/netns/db eth0 '{"cniVersion":"1.1.0","name":"host","type":"host"}' || true)
ok "a private namespace is refused: $(printf '%s' "$out" | grep -o '"msg": *"[^"]*"' | cut -c1-70)..."

say "teardown: detach (db after its namespace is already gone, like a crashed runtime)"
t0=$(ms); netns detach web demo; t1=$(ms)
ok "web detached in $(( (t1 - t0) / 1000000 )) ms"
ip netns del db
netns detach db demo && ok "db detached without its namespace"
cni DEL bridge db /run/netns/db eth0 \
  '{"cniVersion":"1.0.0","name":"demo","type":"bridge","bridge":"demo0","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.88.0.0/24"}}' &&
  ok "bridge DEL again, without namespace or cache: still fine (idempotent)"
left_veths=$(ip -br link | grep -c '^veth' || true)
# A lease is a file named by an address (lock, last_reserved_ip.* and our .rcni-owners index are not).
left_leases=$(ls -A /var/lib/cni/networks/demo 2>/dev/null | grep -cE '^[0-9a-fA-F:.]+$' || true)
left_fw=$(nft list table inet rcni | grep -cE '10\.88\.0\.[0-9]+ comment|fd00:88::[0-9]+ comment|: 10\.88' || true)
left_cache=$(find /var/lib/cni/results -type f 2>/dev/null | wc -l)
[ "$left_veths$left_leases$left_fw$left_cache" = "0000" ] && ok "nothing left: 0 veths, 0 leases, 0 firewall entries, 0 cache files" ||
  fail "left behind: $left_veths veths, $left_leases leases, $left_fw firewall entries, $left_cache cache files"
printf '\nDemo done; its namespaces vanish with this process.\n'
