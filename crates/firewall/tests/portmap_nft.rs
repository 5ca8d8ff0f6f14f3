//! Root integration tests of the nftables port-forwarding layout against the real kernel (each
//! in private namespaces): the table as `nft` prints it, ownership, conflicts, DEL, GC, CHECK.

// Test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use firewall::portmap::{port_forwarder, PortMap, PortmapSpec};
use firewall::Backend;

fn spec(cid: &str, v4: &str, v6: Option<&str>, maps: &[(i64, i64, &str, &str)]) -> PortmapSpec {
    let mut s = PortmapSpec::new("pnet", cid, "eth0");
    s.v4 = Some(v4.parse().unwrap());
    s.v6 = v6.map(|a| a.parse().unwrap());
    s.mappings = maps
        .iter()
        .map(|(h, c, p, ip)| PortMap::from_raw(*h, *c, p, ip).unwrap())
        .collect();
    s
}

fn table() -> String {
    run("nft", &["list", "table", "inet", "rcni"])
}

#[test]
fn nft_portmap_add_list_conflict_del_gc_check() {
    in_netns(|| {
        let fw = port_forwarder(Backend::Nftables);
        fw.del_portmap("pnet", "c1", "eth0").unwrap();
        fw.gc_portmap("pnet", &[]).unwrap();
        let c1 = spec(
            "c1",
            "10.22.0.2/24",
            Some("fd00:22::2/64"),
            &[(8080, 80, "tcp", ""), (5353, 53, "udp", "127.0.0.1")],
        );
        let c2 = spec("c2", "10.22.0.3/24", None, &[(8081, 80, "tcp", "")]);
        fw.add_portmap(&c1).unwrap();
        fw.add_portmap(&c2).unwrap();
        let t = table();
        println!("{t}");
        // nft prints `key comment "…" : data`.
        let has = |key: &str, cid: &str, data: &str| {
            t.contains(&format!(
                "{key} comment \"{}\" : {data}",
                firewall::portmap::nft::pm_comment("pnet", cid, "eth0")
            ))
        };
        assert!(has("tcp . 8080", "c1", "10.22.0.2 . 80"), "{t}");
        assert!(has("127.0.0.1 . udp . 5353", "c1", "10.22.0.2 . 53"), "{t}");
        assert!(has("tcp . 8080", "c1", "fd00:22::2 . 80"), "{t}");
        assert!(has("tcp . 8081", "c2", "10.22.0.3 . 80"), "{t}");
        assert!(
            t.contains("dnat ip to meta l4proto . th dport map @hostports4"),
            "{t}"
        );
        assert!(
            t.contains("dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostips6"),
            "{t}"
        );
        assert!(t.contains("fib daddr type local"), "{t}");
        assert!(
            t.contains("ip saddr 10.22.0.0/24 ip daddr 10.22.0.0/24"),
            "{t}"
        );
        fw.check_portmap(&c1).unwrap();
        fw.check_portmap(&c2).unwrap();

        // Idempotent ADD.
        fw.add_portmap(&c1).unwrap();
        assert_eq!(table(), t);

        // Another attachment on c1's port: refused, nothing written.
        let thief = spec("c3", "10.22.0.4/24", None, &[(8080, 80, "tcp", "")]);
        let err = fw.add_portmap(&thief).unwrap_err().to_string();
        assert!(err.contains("id: c1"), "{err}");
        assert_eq!(table(), t);

        fw.del_portmap("pnet", "c1", "eth0").unwrap();
        let t = table();
        assert!(!t.contains("10.22.0.2"), "{t}");
        assert!(
            !t.contains("fd00:22::/64"),
            "v6 hairpin rule should go with its last element: {t}"
        );
        assert!(t.contains("ip saddr 10.22.0.0/24"), "{t}");
        fw.del_portmap("pnet", "c1", "eth0").unwrap();
        assert!(fw.check_portmap(&c1).is_err());
        // Now the port is free.
        fw.add_portmap(&thief).unwrap();

        // GC keeps only c2.
        fw.gc_portmap("pnet", &[("c2".into(), "eth0".into())])
            .unwrap();
        let t = table();
        assert!(!t.contains("10.22.0.4"), "{t}");
        assert!(t.contains("10.22.0.3"), "{t}");
        fw.check_portmap(&c2).unwrap();
    });
}

#[test]
fn nft_portmap_masq_all_and_no_snat() {
    in_netns(|| {
        let fw = port_forwarder(Backend::Nftables);
        let mut all = spec(
            "c1",
            "10.22.0.2/24",
            Some("fd00:22::2/64"),
            &[(8080, 80, "tcp", "")],
        );
        all.masq_all = true;
        fw.add_portmap(&all).unwrap();
        let t = table();
        let set4 = t.split("set hostport-masqall4").nth(1).unwrap();
        assert!(
            set4.split('}')
                .next()
                .unwrap()
                .contains("10.22.0.2 comment"),
            "{t}"
        );
        assert!(t.contains("fd00:22::2 comment"), "{t}");
        fw.check_portmap(&all).unwrap();
        // snat off: no hairpin rule for its subnet.
        let mut plain = spec("c2", "10.33.0.2/24", None, &[(8081, 80, "tcp", "")]);
        plain.snat = false;
        fw.add_portmap(&plain).unwrap();
        assert!(!table().contains("10.33.0.0/24"));
        fw.del_portmap("pnet", "c1", "eth0").unwrap();
        let t = table();
        assert!(!t.contains("10.22.0.2"), "{t}");
        assert!(t.contains("10.33.0.2 . 80"), "{t}");
    });
}

/// Elements of one of our maps as `nft -j` prints them: (key, comment). Panics when the table
/// cannot be listed, so an absence below is a real absence.
fn elems(map: &str) -> Vec<(String, String)> {
    let j: serde_json::Value =
        serde_json::from_str(&run("nft", &["-j", "list", "table", "inet", "rcni"])).unwrap();
    let mut out = Vec::new();
    let mut seen = false;
    for item in j["nftables"].as_array().unwrap() {
        let Some(m) = item.get("map") else { continue };
        if m["name"] != map {
            continue;
        }
        seen = true;
        for e in m["elem"].as_array().into_iter().flatten() {
            let key = &e[0]["elem"];
            out.push((key["val"].to_string(), key["comment"].to_string()));
        }
    }
    assert!(seen, "map {map} not listed");
    out
}

/// One container on two networks publishing the same host port (Podman): the second
/// attachment stands by, DEL of the first promotes it, another container is still refused.
#[test]
fn nft_portmap_same_container_on_two_networks() {
    in_netns(|| {
        let fw = port_forwarder(Backend::Nftables);
        let m = [(8087, 80, "tcp", ""), (9000, 90, "udp", "127.0.0.1")];
        let mut a = spec("ctr", "10.22.0.2/24", Some("fd00:22::2/64"), &m);
        a.network = "a".into();
        let mut b = spec("ctr", "10.33.0.2/24", Some("fd00:33::2/64"), &m);
        b.network = "b".into();
        fw.add_portmap(&a).unwrap();
        fw.add_portmap(&b).unwrap();
        let t = table();
        println!("{t}");
        assert!(t.contains("map hostport-standby4 {"), "{t}");
        assert!(
            t.contains(
                "type ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service"
            ),
            "{t}"
        );
        let active = elems("hostports4");
        assert_eq!(active.len(), 1, "{active:?}");
        assert!(active[0].1.contains("net: a, id: ctr"), "{active:?}");
        assert_eq!(elems("hostport-standby4").len(), 2);
        assert_eq!(elems("hostport-standby6").len(), 1);
        assert!(t.contains(": 10.33.0.2 . 80"), "b's target is stored: {t}");
        fw.check_portmap(&a).unwrap();
        fw.check_portmap(&b).unwrap();
        // Idempotent ADD of the standby.
        fw.add_portmap(&b).unwrap();
        assert_eq!(table(), t);
        // Another container: refused, nothing changes.
        let mut other = spec("intruder", "10.33.0.9/24", None, &[(8087, 80, "tcp", "")]);
        other.network = "b".into();
        let err = fw.add_portmap(&other).unwrap_err().to_string();
        assert!(
            err.contains("already published") && err.contains("id: ctr"),
            "{err}"
        );
        assert_eq!(table(), t);
        // DEL of a: b's targets become active in the same transaction.
        fw.del_portmap("a", "ctr", "eth0").unwrap();
        let t = table();
        println!("{t}");
        let active = elems("hostports4");
        assert_eq!(active.len(), 1, "{t}");
        assert!(active[0].1.contains("net: b, id: ctr"), "{t}");
        assert!(t.contains(": 10.33.0.2 . 80"), "{t}");
        assert!(t.contains(": fd00:33::2 . 80"), "{t}");
        assert!(t.contains("127.0.0.1 . udp . 9000"), "{t}");
        assert!(!t.contains("10.22.0"), "{t}");
        assert!(elems("hostport-standby4").is_empty(), "{t}");
        assert!(elems("hostport-standby6").is_empty(), "{t}");
        fw.check_portmap(&b).unwrap();
        assert!(fw.check_portmap(&a).is_err());
        // DEL of b: nothing left, and the other container may now publish the port.
        fw.del_portmap("b", "ctr", "eth0").unwrap();
        for map in [
            "hostports4",
            "hostips4",
            "hostports6",
            "hostport-standby4",
            "hostport-standby6",
        ] {
            assert!(elems(map).is_empty(), "{map}: {}", table());
        }
        fw.add_portmap(&other).unwrap();

        // GC of a network whose active owner is stale promotes the standby too; DEL of a
        // standby leaves the active alone.
        fw.del_portmap("b", "intruder", "eth0").unwrap();
        fw.add_portmap(&a).unwrap();
        fw.add_portmap(&b).unwrap();
        fw.gc_portmap("a", &[]).unwrap();
        let active = elems("hostports4");
        assert!(
            active.len() == 1 && active[0].1.contains("net: b"),
            "{}",
            table()
        );
        fw.add_portmap(&a).unwrap();
        assert_eq!(elems("hostport-standby4").len(), 2, "{}", table());
        fw.del_portmap("a", "ctr", "eth0").unwrap();
        let active = elems("hostports4");
        assert!(
            active.len() == 1 && active[0].1.contains("net: b"),
            "{}",
            table()
        );
        assert!(elems("hostport-standby4").is_empty());
        fw.del_portmap("b", "ctr", "eth0").unwrap();
        assert!(elems("hostports4").is_empty());
    });
}
