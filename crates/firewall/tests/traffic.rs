//! Real traffic through masquerade, both backends. The test thread's own (private) namespace is
//! the router; netns `a` holds the client 10.22.0.5/24 behind it, netns `b` the server
//! 192.168.77.2 with NO route back to 10.22.0.0/24, so a ping from a to b only succeeds when the
//! router masquerades the client's address. The same holds for the IPv6 twin (fd00:22::5 behind
//! the router, server fd00:77::2).

// Test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use firewall::{firewall, Backend};

fn topology() {
    run("ip", &["netns", "add", "a"]);
    run("ip", &["netns", "add", "b"]);
    run(
        "ip",
        &[
            "link", "add", "va", "type", "veth", "peer", "name", "eth0", "netns", "a",
        ],
    );
    run(
        "ip",
        &[
            "link", "add", "vb", "type", "veth", "peer", "name", "eth0", "netns", "b",
        ],
    );
    run("ip", &["addr", "add", "10.22.0.1/24", "dev", "va"]);
    run("ip", &["addr", "add", "192.168.77.1/24", "dev", "vb"]);
    run("ip", &["link", "set", "va", "up"]);
    run("ip", &["link", "set", "vb", "up"]);
    for (ns, addr) in [("a", "10.22.0.5/24"), ("b", "192.168.77.2/24")] {
        run("ip", &["-n", ns, "addr", "add", addr, "dev", "eth0"]);
        run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        run("ip", &["-n", ns, "link", "set", "lo", "up"]);
    }
    run(
        "ip",
        &["-n", "a", "route", "add", "default", "via", "10.22.0.1"],
    );
    // The IPv6 twin: same shape, `nodad` so the addresses are usable at once.
    for (dev, addr) in [("va", "fd00:22::1/64"), ("vb", "fd00:77::1/64")] {
        run("ip", &["addr", "add", addr, "dev", dev, "nodad"]);
    }
    for (ns, addr) in [("a", "fd00:22::5/64"), ("b", "fd00:77::2/64")] {
        run(
            "ip",
            &["-n", ns, "addr", "add", addr, "dev", "eth0", "nodad"],
        );
    }
    run(
        "ip",
        &[
            "-n",
            "a",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:22::1",
        ],
    );
    // The router is this thread's private namespace (checked by in_netns); /proc/sys/net
    // resolves to the opener's namespace.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").unwrap();
    assert!(run("ip", &["-n", "b", "route"])
        .lines()
        .all(|l| !l.starts_with("default")));
    assert!(run("ip", &["-n", "b", "-6", "route"])
        .lines()
        .all(|l| !l.starts_with("default")));
}

/// The server address and the client's own address (with prefix) of one family.
fn addrs(v6: bool) -> (&'static str, &'static str) {
    if v6 {
        ("fd00:77::2", "fd00:22::5/64")
    } else {
        ("192.168.77.2", "10.22.0.5/24")
    }
}

fn ping(server: &str) -> bool {
    // Fresh conntrack state so a NAT binding from an earlier ping cannot help or hurt.
    let _ = cmd("conntrack", &["-F"]);
    let _ = cmd("conntrack", &["-F", "-f", "ipv6"]);
    cmd("ip", &["netns", "exec", "a", "ping", "-c1", "-W1", server]).0
}

/// A positive check gets three tries: under parallel tests the first IPv6 exchange can lose its
/// echo to neighbour discovery. A negative check stays a single try (a retry cannot make it
/// pass wrongly, only slower).
fn reachable(server: &str) -> bool {
    (0..3).any(|_| ping(server))
}

fn masquerade_makes_traffic_flow(backend: Backend, v6: bool) {
    in_netns(move || {
        topology();
        let (server, client) = addrs(v6);
        let fw = firewall(backend);
        assert!(
            !ping(server),
            "server reachable without masquerade: test proves nothing"
        );
        let rules = [rule("tnet", "client", "eth0", client)];
        fw.add_masquerade(&rules).unwrap();
        assert!(
            reachable(server),
            "{backend:?}: masquerade did not make {server} reachable"
        );
        fw.del_masquerade("tnet", "client", "eth0").unwrap();
        assert!(
            !ping(server),
            "{backend:?}: {server} still reachable after DEL"
        );
    });
}

#[test]
fn nftables_masquerade_carries_ipv4_traffic() {
    masquerade_makes_traffic_flow(Backend::Nftables, false);
}

#[test]
fn iptables_masquerade_carries_ipv4_traffic() {
    masquerade_makes_traffic_flow(Backend::Iptables, false);
}

#[test]
fn nftables_masquerade_carries_ipv6_traffic() {
    masquerade_makes_traffic_flow(Backend::Nftables, true);
}

#[test]
fn iptables_masquerade_carries_ipv6_traffic() {
    masquerade_makes_traffic_flow(Backend::Iptables, true);
}
