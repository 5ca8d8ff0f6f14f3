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
    // The router is this thread's private namespace (checked by in_netns); /proc/sys/net
    // resolves to the opener's namespace.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    assert!(run("ip", &["-n", "b", "route"])
        .lines()
        .all(|l| !l.starts_with("default")));
}

fn ping() -> bool {
    // Fresh conntrack state so a NAT binding from an earlier ping cannot help or hurt.
    let _ = cmd("conntrack", &["-F"]);
    cmd(
        "ip",
        &["netns", "exec", "a", "ping", "-c1", "-W1", "192.168.77.2"],
    )
    .0
}

fn masquerade_makes_traffic_flow(backend: Backend) {
    in_netns(move || {
        topology();
        let fw = firewall(backend);
        assert!(
            !ping(),
            "server reachable without masquerade: test proves nothing"
        );
        let rules = [rule("tnet", "client", "eth0", "10.22.0.5/24")];
        fw.add_masquerade(&rules).unwrap();
        assert!(
            ping(),
            "{backend:?}: masquerade did not make the server reachable"
        );
        fw.del_masquerade("tnet", "client", "eth0").unwrap();
        assert!(!ping(), "{backend:?}: still reachable after DEL");
    });
}

#[test]
fn traffic_nftables() {
    masquerade_makes_traffic_flow(Backend::Nftables);
}

#[test]
fn traffic_iptables() {
    masquerade_makes_traffic_flow(Backend::Iptables);
}
