#!/usr/bin/env bash
# One entry point for people and CI:
#   ./suite.sh demo   build everything, start sandboxd and attach sandboxes in every mode, with traffic
#   ./suite.sh test   formatting, lints, then every unit and integration test
#   ./suite.sh bench  the benchmarks (release build, figures and ratios against the reference)
#   ./suite.sh fuzz   a smoke run of every fuzz target (FUZZ_SECONDS each, default 10; fuzz/README.md)
# Each command first installs what a fresh Debian machine lacks (needs root, like the plugins).
set -euo pipefail
cd "$(dirname "$0")"

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "suite.sh: run as root (the plugins and tests create namespaces, veths and firewall rules)" >&2
    exit 1
  fi
}

install_deps() {
  # iproute2/iputils-ping/conntrack/socat: test oracles and traffic; curl: the independent sandboxd API client
  # of the tests; iptables/nftables: firewall oracles;
  # libnftnl-dev/libmnl-dev/pkg-config: the nftables backend links libnftnl;
  # containernetworking-plugins: the reference plugins for differential tests and benchmarks;
  # podman/crun/conmon/busybox-static: the Podman suite (tests/tests/podman.rs) runs Podman's CNI
  # backend on our plugins, with an image built from the static busybox; python3: the demo reads
  # sandboxd's JSON, and plots; gcc/libc6-dev: rcni-bench builds a static no-op for its floor;
  # docker.io: stock dockerd driving sandboxd as its remote network and IPAM driver; etcd-server/etcd-client:
  # the cluster store of overlay networks; dnsmasq-base: the upstream resolver and the peer in DNS tests and
  # benchmarks; protobuf-compiler/libprotobuf-dev: the etcd v3 client's gRPC code is generated at build time
  # (libprotobuf-dev carries the well-known .proto files its protos import).
  local pkgs=(iproute2 iputils-ping conntrack socat curl iptables nftables libnftnl-dev libmnl-dev pkg-config
              containernetworking-plugins podman crun conmon busybox-static python3 gcc libc6-dev
              docker.io etcd-server etcd-client dnsmasq-base protobuf-compiler libprotobuf-dev)
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "suite.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null || { echo "suite.sh: cargo (Rust toolchain) is required" >&2; exit 1; }
}

cmd=${1:-}
case "$cmd" in
  test)
    need_root; install_deps
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo build --workspace --bins
    cargo test --workspace
    ;;
  demo)
    need_root; install_deps
    cargo build --release --workspace --bins
    exec bash examples/demo.sh target/release
    ;;
  bench)
    # The runs behind docs/benchmarks.md; the scale runs take several minutes each.
    need_root; install_deps
    cargo build --release --workspace --bins
    cargo bench -p host-local
    for chain in bridge portmap; do
      flags=(--n 100 --parallel 100 --scale 1000)
      [ "$chain" = portmap ] && flags+=(--portmap)
      target/release/rcni-bench "${flags[@]}" | tee "target/bench-$chain.txt"
      python3 bench/plot_scale.py "target/bench-$chain.txt" "target/scale-$chain.svg" &&
        echo "plot: target/scale-$chain.svg"
    done
    unshare -n -m sh bench/sandboxd.sh target/release 1000
    ;;
  fuzz)
    # Each parser target for a few seconds, from the kept corpus: a panic or a hang (one input
    # over 10 s) fails the run. Long runs are by hand (fuzz/README.md). Needs no root; installs
    # the nightly toolchain and cargo-fuzz when they are missing.
    command -v rustup >/dev/null || { echo "suite.sh: rustup is required for the nightly toolchain" >&2; exit 1; }
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    secs=${FUZZ_SECONDS:-10}
    cd fuzz
    cargo +nightly fuzz build
    for t in $(cargo +nightly fuzz list); do
      work=$(mktemp -d)
      if ! cargo +nightly fuzz run "$t" "$work" "corpus/$t" -- -max_total_time="$secs" -timeout=10 >"$work.log" 2>&1; then
        tail -n 40 "$work.log" >&2
        echo "suite.sh: fuzz target $t failed; the input is in fuzz/artifacts/$t" >&2
        exit 1
      fi
      echo "$t: $(grep -E '^Done' "$work.log")"
      rm -rf "$work" "$work.log"
    done
    ;;
  *)
    echo "usage: ./suite.sh demo|test|bench|fuzz" >&2
    exit 2
    ;;
esac
