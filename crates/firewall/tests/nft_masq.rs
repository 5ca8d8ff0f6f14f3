//! Root integration tests of the nftables backend against the real kernel, each in private
//! namespaces (see common/mod.rs).

// Test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use firewall::{firewall, Backend};

#[test]
fn nft_add_list_del_gc_check() {
    in_netns(|| {
        let fw = firewall(Backend::Nftables);
        // DEL and GC before anything exists: nothing to do, Ok.
        fw.del_masquerade("n1", "c1", "eth0").unwrap();
        fw.gc_masquerade("n1", &[]).unwrap();

        let c1 = [
            rule("n1", "c1", "eth0", "10.22.0.5/24"),
            rule("n1", "c1", "eth0", "fd00:22::5/64"),
        ];
        let c2 = [rule("n1", "c2", "eth0", "10.22.0.6/24")];
        fw.add_masquerade(&c1).unwrap();
        fw.add_masquerade(&c2).unwrap();
        println!("{}", run("nft", &["list", "table", "inet", "rcni"]));
        let elems = nft_elems();
        assert_eq!(elems.len(), 3, "{elems:?}");
        let find = |ip: &str| elems.iter().find(|e| e.1 == ip).cloned().unwrap();
        let e5 = find("10.22.0.5");
        assert_eq!(e5.0, "masq4");
        assert!(e5.2.contains("id: c1, if: eth0"), "{e5:?}");
        assert_eq!(find("fd00:22::5").0, "masq6");
        assert!(find("10.22.0.6").2.contains("id: c2"));
        let h = firewall::names::network_hash("n1");
        let comments = nft_rule_comments();
        assert_eq!(
            comments,
            vec![
                "rcni: multicast4".to_string(),
                "rcni: multicast6".into(),
                format!("{h}:10.22.0.0/24 net: n1"),
                format!("{h}:fd00:22::/64 net: n1"),
                "rcni: masquerade4".into(),
                "rcni: masquerade6".into(),
            ]
        );
        fw.check_masquerade(&c1).unwrap();
        fw.check_masquerade(&c2).unwrap();

        // Idempotent: the same ADD again changes nothing.
        let listing = run("nft", &["list", "table", "inet", "rcni"]);
        fw.add_masquerade(&c1).unwrap();
        assert_eq!(run("nft", &["list", "table", "inet", "rcni"]), listing);

        // A second network's subnet is inserted before the masquerade rules.
        fw.add_masquerade(&[rule("n2", "c9", "eth0", "10.33.0.9/24")])
            .unwrap();
        let comments = nft_rule_comments();
        assert_eq!(comments.len(), 7);
        assert!(comments[2].contains("10.33.0.0/24"), "{comments:?}");
        assert_eq!(comments[6], "rcni: masquerade6");

        // DEL needs no address and removes only c1; the v6 subnet rule goes with its last
        // address, the v4 one stays for c2.
        fw.del_masquerade("n1", "c1", "eth0").unwrap();
        let ips: Vec<String> = nft_elems().into_iter().map(|e| e.1).collect();
        assert_eq!(ips, vec!["10.22.0.6", "10.33.0.9"]);
        let comments = nft_rule_comments();
        assert!(comments.iter().any(|c| c.contains("10.22.0.0/24")));
        assert!(
            !comments.iter().any(|c| c.contains("fd00:22::/64")),
            "{comments:?}"
        );
        fw.del_masquerade("n1", "c1", "eth0").unwrap();

        // CHECK names what is missing.
        let err = fw.check_masquerade(&c1).unwrap_err().to_string();
        assert!(err.contains("10.22.0.5"), "{err}");

        // GC keeps only listed attachments of its own network.
        fw.add_masquerade(&[rule("n1", "c3", "eth0", "10.22.0.7/24")])
            .unwrap();
        fw.gc_masquerade("n1", &[("c2".into(), "eth0".into())])
            .unwrap();
        let mut ips: Vec<String> = nft_elems().into_iter().map(|e| e.1).collect();
        ips.sort();
        assert_eq!(ips, vec!["10.22.0.6", "10.33.0.9"]);
        fw.gc_masquerade("n1", &[]).unwrap();
        assert_eq!(nft_elems().len(), 1);
        let comments = nft_rule_comments();
        assert!(
            !comments.iter().any(|c| c.contains("10.22.0.0/24")),
            "{comments:?}"
        );
        assert_eq!(comments.len(), 5);
        fw.check_masquerade(&[rule("n2", "c9", "eth0", "10.33.0.9/24")])
            .unwrap();
    });
}

#[test]
fn nft_damaged_chain_is_repaired_and_check_notices() {
    in_netns(|| {
        let fw = firewall(Backend::Nftables);
        let c1 = [rule("n1", "c1", "eth0", "10.22.0.5/24")];
        fw.add_masquerade(&c1).unwrap();
        // one fixed rule removed behind our back
        let listing = run(
            "nft",
            &["-a", "list", "chain", "inet", "rcni", "postrouting"],
        );
        let line = listing
            .lines()
            .find(|l| l.contains("rcni: multicast4"))
            .unwrap();
        let handle = line.rsplit(' ').next().unwrap();
        run(
            "nft",
            &[
                "delete",
                "rule",
                "inet",
                "rcni",
                "postrouting",
                "handle",
                handle,
            ],
        );
        let err = fw.check_masquerade(&c1).unwrap_err().to_string();
        assert!(err.contains("rcni: multicast4"), "{err}");
        // the next ADD rebuilds the chain, keeping the existing subnet rule
        fw.add_masquerade(&[rule("n1", "c2", "eth0", "10.22.0.6/24")])
            .unwrap();
        fw.check_masquerade(&c1).unwrap();
        assert_eq!(nft_rule_comments().len(), 5);
        // everything flushed: reported as missing, then recreated
        run("nft", &["flush chain inet rcni postrouting"]);
        let err = fw.check_masquerade(&c1).unwrap_err().to_string();
        assert!(err.contains("postrouting"), "{err}");
        fw.add_masquerade(&c1).unwrap();
        fw.check_masquerade(&c1).unwrap();
        assert_eq!(nft_rule_comments().len(), 5);
    });
}

#[test]
fn nft_address_takeover_and_check_detects_foreign_owner() {
    in_netns(|| {
        let fw = firewall(Backend::Nftables);
        let old = [rule("n1", "old", "eth0", "10.22.0.5/24")];
        let new = [rule("n1", "new", "eth0", "10.22.0.5/24")];
        fw.add_masquerade(&old).unwrap();
        // a missed DEL left `old`; the address is reused: the new owner takes it over
        fw.add_masquerade(&new).unwrap();
        let elems = nft_elems();
        assert_eq!(elems.len(), 1);
        assert!(elems[0].2.contains("id: new"), "{elems:?}");
        let err = fw.check_masquerade(&old).unwrap_err().to_string();
        assert!(err.contains("belongs to"), "{err}");
        // the old owner's DEL must not remove the new owner's element
        fw.del_masquerade("n1", "old", "eth0").unwrap();
        fw.check_masquerade(&new).unwrap();
    });
}

#[test]
fn nft_auto_backend_in_netns() {
    in_netns(|| {
        assert!(firewall::nft_available());
        assert_eq!(firewall::choose_backend(None).unwrap(), Backend::Nftables);
        // the probe creates nothing
        assert!(!run("nft", &["list", "ruleset"]).contains("rcni"));
    });
}

#[test]
fn nft_failed_add_names_the_op_and_leaves_nothing() {
    in_netns(|| {
        // A foreign definition under our map name makes the kernel reject the transaction.
        run("nft", &["add table inet rcni"]);
        run(
            "nft",
            &["add map inet rcni masq4 { type ipv4_addr : ipv4_addr; }"],
        );
        let fw = firewall(Backend::Nftables);
        let err = fw
            .add_masquerade(&[rule("n1", "c1", "eth0", "10.22.0.5/24")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("add set inet rcni masq4"), "{err}");
        // the transaction is atomic: no chain of ours appeared
        assert!(nft_rule_comments().is_empty());
    });
}

#[test]
fn nft_parallel_adds_and_dels_stay_consistent() {
    in_netns(|| {
        // Threads spawned here share this thread's namespaces; each one is a concurrent
        // plugin call (separate lock fd, separate netlink socket).
        let n = 24;
        let spawn = |del: bool| {
            (0..n)
                .map(|i| {
                    std::thread::spawn(move || {
                        let fw = firewall(Backend::Nftables);
                        let cid = format!("c{i}");
                        if del {
                            fw.del_masquerade("pn", &cid, "eth0").unwrap();
                        } else {
                            let addr = format!("10.44.0.{}/24", i + 2);
                            fw.add_masquerade(&[rule("pn", &cid, "eth0", &addr)])
                                .unwrap();
                        }
                    })
                })
                .collect::<Vec<_>>()
        };
        for h in spawn(false) {
            h.join().unwrap();
        }
        assert_eq!(nft_elems().len(), n);
        for h in spawn(true) {
            h.join().unwrap();
        }
        assert!(nft_elems().is_empty());
        // the fixed rules stay; the subnet rule left with its last address
        assert_eq!(nft_rule_comments().len(), 4);
    });
}
