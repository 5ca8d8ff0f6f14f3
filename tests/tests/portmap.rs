//! `bridge` + `host-local` -> `portmap` chained against the real kernel, each test in its own
//! private namespaces: the portmap behaviours of docs/scenarios.md and REAL traffic for every path
//! (outside client, the host to its own address and to 127.0.0.1, hairpin to the container's
//! own and to a neighbour's port, TCP and UDP, IPv6), conflicts, DEL without prevResult, GC,
//! UDP conntrack cleanup, and both firewall backends.
//!
//! Topology: the test's private namespace is the "host"; `client` is another namespace on a veth
//! (203.0.113.2 / fd00:77::2) whose only route is the host's uplink address (203.0.113.1 /
//! fd00:77::1). Containers sit on bridge cni0 (10.22.0.0/24, fd00:22::/64) and run socat
//! listeners (TCP echo on 80, UDP echo on 53) started as child processes and killed by PID.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use integration_tests::{sandbox, CniCall, CniOutput, Sandbox};
use serde_json::{json, Value};

const NET: &str = "pmnet";

/// Listener processes, killed by PID when dropped.
struct Listeners(Vec<Child>);

impl Drop for Listeners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bridge_conf(sb: &Sandbox, dual: bool) -> Value {
    let ranges = if dual {
        json!([[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd00:22::/64"}]])
    } else {
        json!([[{"subnet": "10.22.0.0/24"}]])
    };
    json!({"cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "cni0",
           "isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
           "ipam": {"type": "host-local", "ranges": ranges, "dataDir": sb.dir("ipam")}})
}

fn pm_conf(extra: &Value, prev: Option<&Value>, maps: &Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap",
                       "capabilities": {"portMappings": true},
                       "runtimeConfig": {"portMappings": maps}});
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn pm(verb: &str, cid: &str, ns: &Path, conf: &Value) -> CniOutput {
    CniCall::new("portmap", verb)
        .attachment(cid, ns, "eth0")
        .conf(conf)
        .run()
}

/// A container: netns `name`, bridge ADD; returns (netns path, bridge result).
fn container(sb: &Sandbox, name: &str, dual: bool) -> (PathBuf, Value) {
    let ns = sb.netns(name);
    let r = CniCall::new("bridge", "ADD")
        .attachment(&format!("cid-{name}"), &ns, "eth0")
        .conf(&bridge_conf(sb, dual))
        .run()
        .ok();
    (ns, r)
}

/// bridge ADD then portmap ADD with its result as prevResult; returns the netns path.
fn published(sb: &Sandbox, name: &str, dual: bool, extra: &Value, maps: &Value) -> PathBuf {
    let (ns, prev) = container(sb, name, dual);
    let out = pm(
        "ADD",
        &format!("cid-{name}"),
        &ns,
        &pm_conf(extra, Some(&prev), maps),
    )
    .ok();
    assert_eq!(
        out["ips"], prev["ips"],
        "portmap must pass prevResult through"
    );
    ns
}

fn client(sb: &Sandbox) {
    // With br_netfilter, bridged replies pass conntrack and hairpin works even unmasqueraded;
    // turn it off in this (private) namespace so the hairpin checks prove the masquerade.
    // Without the br_netfilter module the files do not exist, which means "off" already.
    for fam in ["iptables", "ip6tables"] {
        match std::fs::write(format!("/proc/sys/net/bridge/bridge-nf-call-{fam}"), "0") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot turn bridge-nf-call-{fam} off: {e}"),
        }
    }
    sb.netns("client");
    sb.sh("ip link add up0 type veth peer name up1 netns client");
    sb.sh("ip addr add 203.0.113.1/24 dev up0 && ip addr add fd00:77::1/64 dev up0 nodad && ip link set up0 up");
    sb.sh("ip -n client addr add 203.0.113.2/24 dev up1 && ip -n client addr add fd00:77::2/64 dev up1 nodad");
    sb.sh("ip -n client link set up1 up");
}

/// TCP echo (port 80) and UDP echo (port 53) servers answering `tag`, inside `ns`.
fn listen(sb: &Sandbox, ns: &str, tag: &str) -> Listeners {
    let spawn = |addr: &str, reply: String| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "socat",
                addr,
                &format!("SYSTEM:{reply}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // The UDP reply waits until the request is read: with a bare `echo`, socat's child
    // sometimes sees the command's EOF before it has read the datagram and never answers
    // (about 1 in 15 first datagrams after start, measured with a fresh listener per try;
    // 0 in 60 with the `read`).
    let l = Listeners(vec![
        spawn(
            "TCP6-LISTEN:80,fork,reuseaddr,ipv6only=0",
            format!("echo {tag}"),
        ),
        spawn(
            "UDP6-RECVFROM:53,fork,ipv6only=0",
            format!("read request; echo udp-{tag}"),
        ),
    ]);
    for _ in 0..200 {
        let tcp = sb.exec_in(ns, "ss -Hltn 'sport = :80'");
        let udp = sb.exec_in(ns, "ss -Hlun 'sport = :53'");
        if !tcp.stdout.is_empty() && !udp.stdout.is_empty() {
            return l;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("listeners in {ns} did not start");
}

fn bracket(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

/// What a TCP connection from `from` (None = the host) to addr:port reads back.
fn tcp(sb: &Sandbox, from: Option<&str>, addr: &str, port: u16) -> String {
    let cmd = format!(
        "socat -t 3 -T 3 STDIO TCP:{}:{port},connect-timeout=3 </dev/null 2>/dev/null",
        bracket(addr)
    );
    let out = match from {
        Some(ns) => sb.exec_in(ns, &cmd),
        None => sb.try_sh(&cmd),
    };
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What a UDP datagram from `from` to addr:port gets as reply.
fn udp(sb: &Sandbox, from: Option<&str>, addr: &str, port: u16) -> String {
    let cmd = format!(
        "echo ping | socat -t 4 -T 4 STDIO UDP:{}:{port} 2>/dev/null",
        bracket(addr)
    );
    let out = match from {
        Some(ns) => sb.exec_in(ns, &cmd),
        None => sb.try_sh(&cmd),
    };
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Our table as `nft list` prints it; "" when it does not exist (any other failure fails).
fn nft_table(sb: &Sandbox) -> String {
    sb.nft_table()
}

/// Tear every container down as a runtime would (portmap DEL without prevResult, then bridge
/// DEL), then the shared "nothing left" check.
fn teardown(sb: &Sandbox, containers: &[&str], extra: &Value) {
    for name in containers {
        let ns = PathBuf::from(format!("/run/netns/{name}"));
        let mut bare = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap"});
        for (k, v) in extra.as_object().unwrap() {
            bare[k] = v.clone();
        }
        pm("DEL", &format!("cid-{name}"), &ns, &bare).ok();
        CniCall::new("bridge", "DEL")
            .attachment(&format!("cid-{name}"), &ns, "eth0")
            .conf(&bridge_conf(sb, false))
            .run()
            .ok();
    }
    sb.assert_nothing_left(NET, &sb.scratch().join("ipam"));
}

fn maps(v: &[(u16, u16, &str, &str)]) -> Value {
    Value::Array(
        v.iter()
            .map(|(h, c, p, ip)| json!({"hostPort": h, "containerPort": c, "protocol": p, "hostIP": ip}))
            .collect(),
    )
}

#[test]
fn traffic_every_path_tcp_udp_ipv6_nftables() {
    sandbox(|sb| {
        client(sb);
        let web = maps(&[(8080, 80, "tcp", ""), (5353, 53, "udp", "")]);
        published(sb, "c1", true, &json!({}), &web);
        published(sb, "c2", true, &json!({}), &maps(&[(8081, 80, "tcp", "")]));
        let _l1 = listen(sb, "c1", "c1");
        let _l2 = listen(sb, "c2", "c2");
        println!("{}", nft_table(sb));

        // From outside.
        assert_eq!(tcp(sb, Some("client"), "203.0.113.1", 8080), "c1");
        assert_eq!(tcp(sb, Some("client"), "203.0.113.1", 8081), "c2");
        assert_eq!(udp(sb, Some("client"), "203.0.113.1", 5353), "udp-c1");
        assert_eq!(tcp(sb, Some("client"), "fd00:77::1", 8080), "c1", "IPv6");
        assert_eq!(
            udp(sb, Some("client"), "fd00:77::1", 5353),
            "udp-c1",
            "IPv6 UDP"
        );
        // An unpublished port stays closed.
        assert_eq!(tcp(sb, Some("client"), "203.0.113.1", 8090), "");

        // From the host itself: its own addresses and localhost (route_localnet).
        assert_eq!(tcp(sb, None, "203.0.113.1", 8080), "c1");
        assert_eq!(tcp(sb, None, "10.22.0.1", 8081), "c2");
        assert_eq!(tcp(sb, None, "127.0.0.1", 8080), "c1", "localhost");
        assert_eq!(udp(sb, None, "127.0.0.1", 5353), "udp-c1", "localhost UDP");
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/cni0/route_localnet")
                .unwrap()
                .trim(),
            "1"
        );

        // Hairpin: a container to its own and to its neighbour's published port.
        assert_eq!(tcp(sb, Some("c1"), "203.0.113.1", 8080), "c1", "own port");
        assert_eq!(tcp(sb, Some("c2"), "203.0.113.1", 8080), "c1", "neighbour");
        assert_eq!(udp(sb, Some("c2"), "203.0.113.1", 5353), "udp-c1");
        assert_eq!(
            tcp(sb, Some("c1"), "fd00:77::1", 8081),
            "c2",
            "IPv6 hairpin"
        );

        // Controls: the paths above depend on what portmap set up. Without the hairpin
        // masquerade the neighbour's reply bypasses the DNAT; without route_localnet the kernel
        // drops 127.0.0.1 on cni0.
        let listing = sb.sh("nft -a list chain inet rcni hostport-postrouting");
        let handle = listing
            .lines()
            .find(|l| l.contains("ip saddr 10.22.0.0/24"))
            .and_then(|l| l.rsplit("handle ").next())
            .unwrap()
            .trim()
            .to_string();
        sb.sh(&format!(
            "nft delete rule inet rcni hostport-postrouting handle {handle}"
        ));
        sb.sh("conntrack -F");
        assert_eq!(
            tcp(sb, Some("c2"), "203.0.113.1", 8080),
            "",
            "hairpin works unmasqueraded?"
        );
        std::fs::write("/proc/sys/net/ipv4/conf/cni0/route_localnet", "0").unwrap();
        assert_eq!(
            tcp(sb, None, "127.0.0.1", 8080),
            "",
            "localhost without route_localnet?"
        );
    });
}

#[test]
fn refuses_unchained_and_adds_nothing_without_mappings_or_address() {
    sandbox(|sb| {
        let (ns, prev) = container(sb, "c1", false);
        let (code, msg) = pm(
            "ADD",
            "cid-c1",
            &ns,
            &pm_conf(&json!({}), None, &maps(&[(8080, 80, "tcp", "")])),
        )
        .err();
        assert!(
            msg.contains("must be called as chained plugin"),
            "{code} {msg}"
        );
        // No mappings: prevResult echoed, nothing created (not even our table).
        let out = pm(
            "ADD",
            "cid-c1",
            &ns,
            &pm_conf(&json!({}), Some(&prev), &json!([])),
        )
        .ok();
        assert_eq!(out["ips"], prev["ips"]);
        assert_eq!(out["interfaces"], prev["interfaces"]);
        let no_rc =
            json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap", "prevResult": prev});
        pm("ADD", "cid-c1", &ns, &no_rc).ok();
        assert_eq!(nft_table(sb), "", "table created without mappings");
        // No address on CNI_IFNAME: success, no rules.
        let mut other = prev.clone();
        other["interfaces"][2]["name"] = json!("eth9");
        pm(
            "ADD",
            "cid-c1",
            &ns,
            &pm_conf(&json!({}), Some(&other), &maps(&[(8080, 80, "tcp", "")])),
        )
        .ok();
        assert_eq!(nft_table(sb), "");
    });
}

#[test]
fn invalid_mappings_are_rejected_before_any_change() {
    sandbox(|sb| {
        let (ns, prev) = container(sb, "c1", false);
        for (bad, needle) in [
            (
                json!([{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]),
                "hostPort: 0",
            ),
            (
                json!([{"hostPort": 70000, "containerPort": 80, "protocol": "tcp"}]),
                "70000",
            ),
            (
                json!([{"hostPort": 80, "containerPort": 80, "protocol": "bogus"}]),
                "bogus",
            ),
            (
                json!([{"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "nope"}]),
                "nope",
            ),
            // The good one first: it must not be written either.
            (
                json!([{"hostPort": 81, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 81, "containerPort": 90, "protocol": "TCP"}]),
                "duplicate",
            ),
        ] {
            let (code, msg) = pm(
                "ADD",
                "cid-c1",
                &ns,
                &pm_conf(&json!({}), Some(&prev), &bad),
            )
            .err();
            assert_eq!(code, 7, "{msg}");
            assert!(msg.contains(needle), "{msg}");
            assert_eq!(nft_table(sb), "", "{bad}: something was written");
        }
        // Same with the iptables backend: no chain appears.
        let bad = json!([{"hostPort": 80, "containerPort": 80, "protocol": "bogus"}]);
        let (code, msg) = pm(
            "ADD",
            "cid-c1",
            &ns,
            &pm_conf(&json!({"backend": "iptables"}), Some(&prev), &bad),
        )
        .err();
        assert_eq!(code, 7, "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
        assert!(!sb.sh("iptables-save -t nat").contains("CNI-"));
        // iptables-only key with nftables, and a bad mark bit.
        for extra in [
            json!({"externalSetMarkChain": "KUBE-MARK-MASQ"}),
            json!({"markMasqBit": 32}),
        ] {
            let (code, msg) = pm(
                "ADD",
                "cid-c1",
                &ns,
                &pm_conf(&extra, Some(&prev), &maps(&[(8080, 80, "tcp", "")])),
            )
            .err();
            assert_eq!(code, 7, "{msg}");
        }
        let (_, msg) = pm(
            "ADD",
            "cid-c1",
            &ns,
            &pm_conf(
                &json!({"externalSetMarkChain": "KUBE-MARK-MASQ"}),
                Some(&prev),
                &maps(&[(8080, 80, "tcp", "")]),
            ),
        )
        .err();
        assert!(msg.contains("externalSetMarkChain"), "{msg}");
    });
}

#[test]
fn nftables_layout_conflicts_check_and_del_without_prev_result() {
    sandbox(|sb| {
        client(sb);
        let m1 = maps(&[(8080, 80, "tcp", ""), (9090, 80, "tcp", "127.0.0.1")]);
        let ns1 = published(sb, "c1", false, &json!({}), &m1);
        let (ns2, prev2) = container(sb, "c2", false);
        let _l1 = listen(sb, "c1", "c1");
        let _l2 = listen(sb, "c2", "c2");
        let t = nft_table(sb);
        assert!(t.contains("id: cid-c1, if: eth0\" : 10.22.0.2 . 80"), "{t}");
        assert!(t.contains("127.0.0.1 . tcp . 9090"), "hostIP map: {t}");
        assert!(t.contains("chain hostport-prerouting"), "{t}");
        assert_eq!(tcp(sb, None, "127.0.0.1", 9090), "c1");
        // hostIP 127.0.0.1 only: not reachable on another address.
        assert_eq!(tcp(sb, Some("client"), "203.0.113.1", 9090), "");

        // The same host port twice in one call, and across containers: refused; c1 unharmed.
        let (_, msg) = pm(
            "ADD",
            "cid-c2",
            &ns2,
            &pm_conf(
                &json!({}),
                Some(&prev2),
                &maps(&[(8082, 80, "tcp", ""), (8082, 80, "tcp", "")]),
            ),
        )
        .err();
        assert!(msg.contains("duplicate"), "{msg}");
        let (_, msg) = pm(
            "ADD",
            "cid-c2",
            &ns2,
            &pm_conf(
                &json!({}),
                Some(&prev2),
                &maps(&[(8083, 80, "tcp", ""), (8080, 80, "tcp", "")]),
            ),
        )
        .err();
        assert!(
            msg.contains("already published") && msg.contains("cid-c1"),
            "{msg}"
        );
        assert!(
            !nft_table(sb).contains("8083"),
            "partial write of a refused ADD"
        );
        assert_eq!(tcp(sb, Some("client"), "203.0.113.1", 8080), "c1");
        // The same mapping on a specific address is another key: allowed, and it wins there.
        published(
            sb,
            "c3",
            false,
            &json!({}),
            &maps(&[(8080, 80, "tcp", "203.0.113.1")]),
        );

        // CHECK after ADD; after removing an element it names what is missing.
        let c1_prev = pm_conf(&json!({}), Some(&container_prev(sb, &ns1)), &m1);
        pm("CHECK", "cid-c1", &ns1, &c1_prev).ok();
        sb.sh("nft delete element inet rcni hostports4 '{ tcp . 8080 }'");
        let (_, msg) = pm("CHECK", "cid-c1", &ns1, &c1_prev).err();
        assert!(msg.contains("tcp . 8080"), "{msg}");
        pm("ADD", "cid-c1", &ns1, &c1_prev).ok();
        pm("CHECK", "cid-c1", &ns1, &c1_prev).ok();

        // DEL without prevResult and without mappings removes only c1's entries; twice is fine.
        let bare = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap"});
        pm("DEL", "cid-c1", Path::new(""), &bare).ok();
        let t = nft_table(sb);
        assert!(!t.contains("cid-c1"), "{t}");
        assert!(t.contains("cid-c3"), "{t}");
        assert!(t.contains("chain hostport-output"), "top-level chains stay");
        pm("DEL", "cid-c1", Path::new(""), &bare).ok();
        assert_eq!(tcp(sb, Some("client"), "fd00:77::1", 8080), "");
        assert_eq!(tcp(sb, None, "127.0.0.1", 9090), "");
        // Now the port is free for c2.
        pm(
            "ADD",
            "cid-c2",
            &ns2,
            &pm_conf(&json!({}), Some(&prev2), &maps(&[(8080, 80, "tcp", "")])),
        )
        .ok();
        assert_eq!(tcp(sb, None, "10.22.0.1", 8080), "c2");
        teardown(sb, &["c1", "c2", "c3"], &json!({}));
    });
}

/// The bridge part of a container's result, rebuilt from the kernel (enough for CHECK).
fn container_prev(sb: &Sandbox, ns: &Path) -> Value {
    let name = ns.file_name().unwrap().to_str().unwrap();
    let addr = sb
        .global_addrs(Some(name), "eth0")
        .into_iter()
        .find(|a| !a.contains(':'))
        .unwrap();
    json!({"cniVersion": "1.0.0",
           "interfaces": [{"name": "eth0", "sandbox": ns.to_str().unwrap()}],
           "ips": [{"interface": 0, "address": addr}]})
}

#[test]
fn gc_after_lost_dels_removes_only_stale_mappings() {
    sandbox(|sb| {
        client(sb);
        published(sb, "c1", false, &json!({}), &maps(&[(8080, 80, "tcp", "")]));
        published(sb, "c2", false, &json!({}), &maps(&[(8081, 80, "tcp", "")]));
        let _l2 = listen(sb, "c2", "c2");
        // c1 vanished without DEL; a GC with only c2 valid removes c1's mapping.
        sb.sh("ip netns del c1");
        let mut gc = json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap"});
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "cid-c2", "ifname": "eth0"}]);
        CniCall::new("portmap", "GC").conf(&gc).run().ok();
        let t = nft_table(sb);
        assert!(!t.contains("cid-c1"), "{t}");
        assert!(t.contains("cid-c2"), "{t}");
        assert!(
            t.contains("ip saddr 10.22.0.0/24"),
            "hairpin rule kept for c2: {t}"
        );
        assert_eq!(tcp(sb, Some("client"), "203.0.113.1", 8081), "c2");
        // The freed port can be published by a new container.
        published(sb, "c4", false, &json!({}), &maps(&[(8080, 80, "tcp", "")]));
        // STATUS is fine.
        CniCall::new("portmap", "STATUS").conf(&gc).run().ok();
        teardown(sb, &["c1", "c2", "c4"], &json!({}));
    });
}

/// UDP flows to `port` in the conntrack table; `conntrack -L` must succeed.
fn conntrack_udp(sb: &Sandbox, port: u16) -> usize {
    testbox::require_tool("conntrack");
    sb.sh(&format!("conntrack -L -p udp --dport {port}"))
        .lines()
        .filter(|l| l.contains("udp"))
        .count()
}

#[test]
fn udp_conntrack_flushed_on_add_and_del() {
    sandbox(|sb| {
        client(sb);
        let seed = "conntrack -I -p udp -s 203.0.113.2 -d 203.0.113.1 --sport 40000 --dport 5353 -t 120 -u SEEN_REPLY";
        sb.sh(seed);
        sb.sh("conntrack -I -p udp -s 203.0.113.2 -d 203.0.113.1 --sport 40000 --dport 5354 -t 120 -u SEEN_REPLY");
        assert_eq!(
            conntrack_udp(sb, 5353),
            1,
            "seeding failed: test proves nothing"
        );
        let m = maps(&[(5353, 53, "udp", "")]);
        let (ns, prev) = container(sb, "c1", false);
        pm("ADD", "cid-c1", &ns, &pm_conf(&json!({}), Some(&prev), &m)).ok();
        assert_eq!(
            conntrack_udp(sb, 5353),
            0,
            "stale flow to the mapped port survived ADD"
        );
        assert_eq!(conntrack_udp(sb, 5354), 1, "an unrelated flow was deleted");
        // And the published port now answers through the DNAT.
        let _l = listen(sb, "c1", "c1");
        assert_eq!(udp(sb, Some("client"), "203.0.113.1", 5353), "udp-c1");
        sb.sh(seed.replace("40000", "40001").as_str());
        pm("DEL", "cid-c1", &ns, &pm_conf(&json!({}), Some(&prev), &m)).ok();
        assert_eq!(conntrack_udp(sb, 5353), 0, "DEL left the flow");
        assert_eq!(conntrack_udp(sb, 5354), 1);
        teardown(sb, &["c1"], &json!({}));
    });
}

#[test]
fn iptables_backend_layout_traffic_and_del() {
    sandbox(|sb| {
        client(sb);
        let ipt = json!({"backend": "iptables"});
        let m = maps(&[
            (8080, 80, "tcp", ""),
            (5353, 53, "udp", ""),
            (9090, 80, "tcp", "127.0.0.1"),
        ]);
        let ns1 = published(sb, "c1", true, &ipt, &m);
        published(sb, "c2", false, &ipt, &maps(&[(8081, 80, "tcp", "")]));
        let _l1 = listen(sb, "c1", "c1");
        let _l2 = listen(sb, "c2", "c2");
        let v4 = sb.sh("iptables-save -t nat");
        println!("{v4}");
        // CNI-DN- + 21 hex of sha512(network + container id), computed independently.
        let hash = sb.sh(&format!("printf '%s' '{NET}cid-c1' | sha512sum"));
        let chain = format!("CNI-DN-{}", &hash[..21]);
        for needle in [
            "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string(),
            "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string(),
            "-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ".to_string(),
            "-j MARK --set-xmark 0x2000/0x2000".to_string(),
            "--mark 0x2000/0x2000 -j MASQUERADE".to_string(),
            format!("-A {chain} -s 10.22.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
            format!("-A {chain} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
            format!("-A {chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.22.0.2:80"),
            format!("-A {chain} -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.22.0.2:80"),
            "--comment \"dnat name: \\\"pmnet\\\" id: \\\"cid-c1\\\"\" -m multiport --dports 8080,9090".to_string(),
        ] {
            assert!(v4.contains(&needle), "missing {needle}");
        }
        let v6 = sb.sh("ip6tables-save -t nat");
        assert!(v6.contains("--to-destination [fd00:22::2]:80"), "{v6}");
        assert!(
            !v6.contains("9090"),
            "v4 hostIP leaked into ip6tables: {v6}"
        );
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/cni0/route_localnet")
                .unwrap()
                .trim(),
            "1"
        );
        assert_eq!(tcp(sb, Some("client"), "203.0.113.1", 8080), "c1");
        assert_eq!(udp(sb, Some("client"), "203.0.113.1", 5353), "udp-c1");
        assert_eq!(tcp(sb, Some("client"), "fd00:77::1", 8080), "c1");
        assert_eq!(tcp(sb, None, "127.0.0.1", 8080), "c1");
        assert_eq!(tcp(sb, Some("c2"), "203.0.113.1", 8080), "c1", "hairpin");
        // CHECK, DEL without prevResult (the chain is found by name), DEL twice.
        let prev = container_prev(sb, &ns1);
        pm("CHECK", "cid-c1", &ns1, &pm_conf(&ipt, Some(&prev), &m)).ok();
        pm("DEL", "cid-c1", Path::new(""), &pm_conf(&ipt, None, &m)).ok();
        let v4 = sb.sh("iptables-save -t nat");
        assert!(!v4.contains(&chain), "{v4}");
        assert!(v4.contains(":CNI-HOSTPORT-DNAT"), "top-level chains stay");
        assert!(!sb.sh("ip6tables-save -t nat").contains(&chain));
        pm("DEL", "cid-c1", Path::new(""), &pm_conf(&ipt, None, &m)).ok();
        assert_eq!(tcp(sb, Some("client"), "203.0.113.1", 8080), "");
        assert_eq!(tcp(sb, Some("client"), "203.0.113.1", 8081), "c2");
        // GC removes c2's chain (not in the valid list).
        let mut gc =
            json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap", "backend": "iptables"});
        gc["cni.dev/valid-attachments"] = json!([]);
        CniCall::new("portmap", "GC").conf(&gc).run().ok();
        assert!(!sb.sh("iptables-save -t nat").contains("CNI-DN-"));
        teardown(sb, &["c1", "c2"], &ipt);
    });
}

/// nat rules as `iptables-save` prints them, without counters and comments-lines.
fn nat_rules(sb: &Sandbox, prog: &str) -> Vec<String> {
    let mut v: Vec<String> = sb
        .sh(&format!("{prog}-save -t nat"))
        .lines()
        .filter(|l| l.starts_with("-A") || l.starts_with(':'))
        .map(|l| l.split(" [").next().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Differential: the reference portmap (iptables) and ours with
/// `backend: iptables` write the same nat rules for the same input, and each one's DEL leaves
/// the same top-level chains.
#[test]
fn differential_iptables_layout_matches_reference() {
    // A differential test without its oracle must fail, not pass.
    let refdir = integration_tests::require_reference_dir();
    sandbox(|sb| {
        let ns = sb.netns("c1");
        // A host-side interface routing to the container address (route_localnet target).
        sb.sh("ip link add cni0 type bridge && ip addr add 10.22.0.1/24 dev cni0 && ip link set cni0 up");
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": ns.to_str().unwrap()}],
            "ips": [{"interface": 1, "address": "10.22.0.5/24", "gateway": "10.22.0.1"}]});
        let m = maps(&[
            (8080, 80, "tcp", ""),
            (8443, 443, "tcp", ""),
            (5353, 53, "udp", "127.0.0.1"),
        ]);
        let conf = pm_conf(&json!({"backend": "iptables"}), Some(&prev), &m);
        let run = |bin: PathBuf, verb: &str| {
            CniCall::with_bin(bin, verb)
                .env("CNI_PATH", refdir.to_str().unwrap())
                .attachment("cid1", &ns, "eth0")
                .conf(&conf)
                .run()
                .ok()
        };
        run(refdir.join("portmap"), "ADD");
        let theirs = nat_rules(sb, "iptables");
        run(refdir.join("portmap"), "DEL");
        let theirs_after_del = nat_rules(sb, "iptables");
        sb.sh("iptables -t nat -F && iptables -t nat -X");
        run(integration_tests::plugin_bin("portmap"), "ADD");
        let ours = nat_rules(sb, "iptables");
        run(integration_tests::plugin_bin("portmap"), "DEL");
        let ours_after_del = nat_rules(sb, "iptables");
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter().filter(|l| !b.contains(l)).cloned().collect()
        };
        assert_eq!(
            (only(&theirs, &ours), only(&ours, &theirs)),
            (vec![], vec![]),
            "(reference only, ours only)"
        );
        assert_eq!(theirs_after_del, ours_after_del);
        // Drop-in: our DEL cleans what the reference's ADD wrote.
        run(refdir.join("portmap"), "ADD");
        // One entry rule per protocol (tcp, udp), commented with the network and container.
        assert_eq!(
            sb.iptables_entries(NET),
            2,
            "the reference's ADD wrote its entry rules"
        );
        run(integration_tests::plugin_bin("portmap"), "DEL");
        assert_eq!(nat_rules(sb, "iptables"), ours_after_del);
        sb.assert_nothing_left(NET, &sb.scratch().join("ipam"));
    });
}

/// One attachment of a container on network `net` (bridge `br`, `subnet`), the way Podman's
/// CNI backend runs a network: bridge ADD, then portmap ADD with the container's port
/// mappings (Podman passes them to every network the container joins).
struct Attachment {
    net: &'static str,
    br: &'static str,
    subnet: &'static str,
    ifname: &'static str,
}

impl Attachment {
    fn bridge(&self, sb: &Sandbox, default_gw: bool) -> Value {
        json!({"cniVersion": "1.0.0", "name": self.net, "type": "bridge", "bridge": self.br,
               "isGateway": true, "isDefaultGateway": default_gw, "hairpinMode": true,
               "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet}]],
                        "dataDir": sb.dir("ipam")}})
    }
    fn portmap(&self, backend: &str, prev: Option<&Value>, m: &Value) -> Value {
        let mut c = pm_conf(&json!({"backend": backend}), prev, m);
        c["name"] = json!(self.net);
        c
    }
    fn call(&self, plugin: &str, verb: &str, cid: &str, ns: &Path, conf: &Value) -> CniOutput {
        CniCall::new(plugin, verb)
            .attachment(cid, ns, self.ifname)
            .conf(conf)
            .run()
    }
    /// bridge ADD; returns its result.
    fn attach(&self, sb: &Sandbox, cid: &str, ns: &Path, default_gw: bool) -> Value {
        self.call("bridge", "ADD", cid, ns, &self.bridge(sb, default_gw))
            .ok()
    }
    /// portmap DEL then bridge DEL (`podman network disconnect`).
    fn detach(&self, sb: &Sandbox, backend: &str, cid: &str, ns: &Path, m: &Value) {
        self.call("portmap", "DEL", cid, ns, &self.portmap(backend, None, m))
            .ok();
        self.call("bridge", "DEL", cid, ns, &self.bridge(sb, false))
            .ok();
    }
}

/// Every firewall entry mentioning host port `port`, read with the backend's own listing
/// tools; panics when the listing fails, so an empty answer really means "none".
fn port_entries(sb: &Sandbox, backend: &str, port: u16) -> Vec<String> {
    let needle = port.to_string();
    if backend == "iptables" {
        let mut out = Vec::new();
        for prog in ["iptables-save", "ip6tables-save"] {
            out.extend(
                sb.sh(&format!("{prog} -t nat"))
                    .lines()
                    .filter(|l| l.starts_with("-A") && l.contains(&needle))
                    .map(|l| format!("{prog}: {l}")),
            );
        }
        return out;
    }
    let j: Value = serde_json::from_str(&sb.sh("nft -j list table inet rcni")).unwrap();
    let mut out = Vec::new();
    for item in j["nftables"].as_array().unwrap() {
        let Some(m) = item.get("map").or_else(|| item.get("set")) else {
            continue;
        };
        for e in m["elem"].as_array().into_iter().flatten() {
            let s = e.to_string();
            if s.contains(&needle) {
                out.push(format!("{}: {s}", m["name"]));
            }
        }
    }
    out
}

/// The nat state a refused ADD must leave untouched.
fn fw_state(sb: &Sandbox, backend: &str) -> Vec<String> {
    if backend == "iptables" {
        let mut v = nat_rules(sb, "iptables");
        v.extend(nat_rules(sb, "ip6tables"));
        v
    } else {
        vec![sb.sh("nft list table inet rcni")]
    }
}

/// Podman's `--network a,b -p 8087:80` and `network connect` (tests/tests/podman.rs
/// `published_port_on_two_networks`): one container publishes the same host port on two
/// networks. Both ADDs succeed; the port answers; DEL of the first attachment leaves it
/// answering through the second; DEL of the second closes it and leaves no entry; another
/// container asking for the port is refused and changes nothing.
fn same_container_on_two_networks(backend: &str) {
    sandbox(|sb| {
        let a = Attachment {
            net: "pma",
            br: "cnia",
            subnet: "10.22.0.0/24",
            ifname: "eth0",
        };
        let b = Attachment {
            net: "pmb",
            br: "cnib",
            subnet: "10.33.0.0/24",
            ifname: "eth1",
        };
        let m = maps(&[(8087, 80, "tcp", ""), (5353, 53, "udp", "")]);
        let ns = sb.netns("c");
        let cid = "cid-c";
        let prev_a = a.attach(sb, cid, &ns, true);
        a.call(
            "portmap",
            "ADD",
            cid,
            &ns,
            &a.portmap(backend, Some(&prev_a), &m),
        )
        .ok();
        let prev_b = b.attach(sb, cid, &ns, false);
        b.call(
            "portmap",
            "ADD",
            cid,
            &ns,
            &b.portmap(backend, Some(&prev_b), &m),
        )
        .ok();
        let _l = listen(sb, "c", "c");
        println!("{}", fw_state(sb, backend).join("\n"));
        assert_eq!(tcp(sb, None, "127.0.0.1", 8087), "c", "localhost");
        assert_eq!(tcp(sb, None, "10.22.0.1", 8087), "c", "bridge address of a");
        assert_eq!(udp(sb, None, "127.0.0.1", 5353), "udp-c");
        // Both attachments pass CHECK.
        a.call(
            "portmap",
            "CHECK",
            cid,
            &ns,
            &a.portmap(backend, Some(&prev_a), &m),
        )
        .ok();
        b.call(
            "portmap",
            "CHECK",
            cid,
            &ns,
            &b.portmap(backend, Some(&prev_b), &m),
        )
        .ok();

        // Another container on network b asking for the port: refused, nothing changes.
        let ns_d = sb.netns("d");
        let prev_d = b.attach(sb, "cid-d", &ns_d, false);
        let before = fw_state(sb, backend);
        let (_, msg) = b
            .call(
                "portmap",
                "ADD",
                "cid-d",
                &ns_d,
                &b.portmap(
                    backend,
                    Some(&prev_d),
                    &maps(&[(8088, 80, "tcp", ""), (8087, 80, "tcp", "")]),
                ),
            )
            .err();
        assert!(
            msg.contains("already published") && msg.contains("cid-c"),
            "{msg}"
        );
        assert_eq!(
            fw_state(sb, backend),
            before,
            "a refused ADD changed the firewall"
        );
        assert_eq!(tcp(sb, None, "127.0.0.1", 8087), "c");
        b.call("bridge", "DEL", "cid-d", &ns_d, &b.bridge(sb, false))
            .ok();

        // The first network goes: the port keeps answering through the second.
        a.detach(sb, backend, cid, &ns, &m);
        println!("{}", fw_state(sb, backend).join("\n"));
        assert_eq!(tcp(sb, None, "127.0.0.1", 8087), "c", "after DEL of a");
        assert_eq!(tcp(sb, None, "10.33.0.1", 8087), "c", "bridge address of b");
        assert_eq!(udp(sb, None, "127.0.0.1", 5353), "udp-c");
        b.call(
            "portmap",
            "CHECK",
            cid,
            &ns,
            &b.portmap(backend, Some(&prev_b), &m),
        )
        .ok();
        let left = port_entries(sb, backend, 8087);
        assert!(!left.is_empty(), "the checker sees b's entries");
        assert!(left.iter().all(|e| !e.contains("10.22.0.")), "{left:?}");

        // The second goes: closed, nothing left.
        b.detach(sb, backend, cid, &ns, &m);
        assert_eq!(
            tcp(sb, None, "127.0.0.1", 8087),
            "",
            "closed after both DELs"
        );
        assert_eq!(port_entries(sb, backend, 8087), Vec::<String>::new());
        assert_eq!(port_entries(sb, backend, 5353), Vec::<String>::new());
        if backend == "iptables" {
            assert!(!sb.sh("iptables-save -t nat").contains("CNI-DN-"));
            assert!(!sb.sh("ip6tables-save -t nat").contains("CNI-DN-"));
        } else {
            let t = sb.sh("nft list table inet rcni");
            assert!(!t.contains("cid-c"), "{t}");
            assert!(!t.contains("ctr:"), "{t}");
        }
        for net in [a.net, b.net] {
            sb.assert_nothing_left(net, &sb.scratch().join("ipam"));
        }
        // The port is free for another container now.
        let prev_d = b.attach(sb, "cid-d", &ns_d, false);
        b.call(
            "portmap",
            "ADD",
            "cid-d",
            &ns_d,
            &b.portmap(backend, Some(&prev_d), &maps(&[(8087, 80, "tcp", "")])),
        )
        .ok();
        let _ld = listen(sb, "d", "d");
        assert_eq!(tcp(sb, None, "127.0.0.1", 8087), "d");
        b.detach(sb, backend, "cid-d", &ns_d, &maps(&[(8087, 80, "tcp", "")]));
        for net in [a.net, b.net] {
            sb.assert_nothing_left(net, &sb.scratch().join("ipam"));
        }
    });
}

#[test]
fn same_container_on_two_networks_shares_the_port_nftables() {
    same_container_on_two_networks("nftables");
}

#[test]
fn same_container_on_two_networks_shares_the_port_iptables() {
    same_container_on_two_networks("iptables");
}
