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
                firewall::nft::hostport::pm_comment("pnet", cid, "eth0")
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

/// Prints (never asserts) the cost of one ADD and one DEL as the number of published
/// containers grows: with data-carrying map elements it should stay flat.
#[test]
fn nft_portmap_scaling_figure() {
    in_netns(|| {
        let fw = port_forwarder(Backend::Nftables);
        let n = 1000u32;
        let mut adds = Vec::new();
        for i in 0..n {
            let ip = format!("10.40.{}.{}/16", i / 250, i % 250 + 1);
            let s = spec(
                &format!("c{i}"),
                &ip,
                None,
                &[(20000 + i as i64, 80, "tcp", "")],
            );
            let t = std::time::Instant::now();
            fw.add_portmap(&s).unwrap();
            adds.push(t.elapsed());
        }
        let p50 = |w: &[std::time::Duration]| {
            let mut v = w.to_vec();
            v.sort();
            v[v.len() / 2]
        };
        for at in [10usize, 100, 500, 1000] {
            println!("ADD p50 around n={at}: {:?}", p50(&adds[at - 10..at]));
        }
        let t = std::time::Instant::now();
        fw.del_portmap("pnet", "c500", "eth0").unwrap();
        println!("DEL at n={n}: {:?}", t.elapsed());
        assert!(!table().contains("id: c500,"));
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
