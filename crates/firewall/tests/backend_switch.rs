//! DEL and GC clean what ADD made when the host's backend changed in between: entries written
//! through one backend are removed by a DEL (or GC) that detected the other one. Each test first
//! proves the entries were there, then that nothing of the owner is left in either backend.

// Test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use firewall::forward::{forward_firewall, ForwardAttachment, DEFAULT_ADMIN_CHAIN};
use firewall::names::iptables_masq_chain;
use firewall::portmap::{port_forwarder, PortMap, PortmapSpec};
use firewall::{firewall, Backend};

fn save(prog: &str, table: &str) -> String {
    run(prog, &["-t", table])
}

fn pm_spec(cid: &str) -> PortmapSpec {
    let mut s = PortmapSpec::new("swnet", cid, "eth0");
    s.v4 = Some("10.55.0.2/24".parse().unwrap());
    s.mappings = vec![PortMap::from_raw(8085, 80, "tcp", "").unwrap()];
    s
}

#[test]
fn masquerade_added_with_iptables_is_removed_by_an_nftables_del_and_gc() {
    in_netns(|| {
        let ipt = firewall(Backend::Iptables);
        let nft = firewall(Backend::Nftables);
        ipt.add_masquerade(&[rule("swnet", "c1", "eth0", "10.55.0.5/24")])
            .unwrap();
        ipt.add_masquerade(&[rule("swnet", "c2", "eth0", "10.55.0.6/24")])
            .unwrap();
        let ch1 = iptables_masq_chain("swnet", "c1");
        let ch2 = iptables_masq_chain("swnet", "c2");
        let before = save("iptables-save", "nat");
        assert!(before.contains(&format!("-j {ch1}")), "{before}");
        assert!(before.contains(&format!("-j {ch2}")), "{before}");

        nft.del_masquerade("swnet", "c1", "eth0").unwrap();
        let after = save("iptables-save", "nat");
        assert!(
            !after.contains(&ch1),
            "DEL through nftables left {ch1}: {after}"
        );
        assert!(after.contains(&format!("-j {ch2}")), "{after}");

        nft.gc_masquerade("swnet", &[]).unwrap();
        let after = save("iptables-save", "nat");
        assert!(
            !after.contains(&ch2),
            "GC through nftables left {ch2}: {after}"
        );
        assert!(nft_elems().is_empty());
    });
}

#[test]
fn masquerade_added_with_nftables_is_removed_by_an_iptables_del() {
    in_netns(|| {
        let nft = firewall(Backend::Nftables);
        let ipt = firewall(Backend::Iptables);
        nft.add_masquerade(&[rule("swnet", "c1", "eth0", "10.55.0.5/24")])
            .unwrap();
        assert_eq!(nft_elems().len(), 1);
        ipt.del_masquerade("swnet", "c1", "eth0").unwrap();
        assert!(
            nft_elems().is_empty(),
            "DEL through iptables left {:?}",
            nft_elems()
        );
        assert!(!save("iptables-save", "nat").contains(&iptables_masq_chain("swnet", "c1")));
    });
}

#[test]
fn portmap_added_with_iptables_is_removed_by_an_nftables_del() {
    in_netns(|| {
        let ipt = port_forwarder(Backend::Iptables);
        let nft = port_forwarder(Backend::Nftables);
        ipt.add_portmap(&pm_spec("c1")).unwrap();
        let before = save("iptables-save", "nat");
        assert!(before.contains("--dport 8085"), "{before}");
        nft.del_portmap("swnet", "c1", "eth0").unwrap();
        let after = save("iptables-save", "nat");
        assert!(
            !after.contains("--dport 8085"),
            "DEL through nftables left: {after}"
        );
        assert!(!after.contains("id: \\\"c1\\\""), "{after}");
    });
}

#[test]
fn portmap_added_with_nftables_is_removed_by_an_iptables_del() {
    in_netns(|| {
        let nft = port_forwarder(Backend::Nftables);
        let ipt = port_forwarder(Backend::Iptables);
        nft.add_portmap(&pm_spec("c1")).unwrap();
        let has = || run("nft", &["list", "table", "inet", "rcni"]).contains("tcp . 8085 comment");
        assert!(has(), "the nftables ADD wrote no element");
        ipt.del_portmap("swnet", "c1", "eth0").unwrap();
        assert!(!has(), "DEL through iptables left the nftables element");
    });
}

fn fwd_att(cid: &str) -> ForwardAttachment {
    ForwardAttachment {
        network: "swnet".into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
        ips: vec!["10.55.0.7".parse().unwrap()],
    }
}

#[test]
fn forward_accepts_added_with_iptables_are_removed_by_an_nftables_del() {
    in_netns(|| {
        let ipt = forward_firewall(Backend::Iptables, DEFAULT_ADMIN_CHAIN).unwrap();
        let nft = forward_firewall(Backend::Nftables, DEFAULT_ADMIN_CHAIN).unwrap();
        ipt.add_forward(&fwd_att("c1")).unwrap();
        assert!(save("iptables-save", "filter").contains("10.55.0.7/32"));
        nft.del_forward("swnet", "c1", "eth0", &[]).unwrap();
        let after = save("iptables-save", "filter");
        assert!(
            !after.contains("10.55.0.7"),
            "DEL through nftables left: {after}"
        );
    });
}

#[test]
fn forward_accepts_added_with_nftables_are_removed_by_an_iptables_del() {
    in_netns(|| {
        let nft = forward_firewall(Backend::Nftables, DEFAULT_ADMIN_CHAIN).unwrap();
        let ipt = forward_firewall(Backend::Iptables, DEFAULT_ADMIN_CHAIN).unwrap();
        nft.add_forward(&fwd_att("c1")).unwrap();
        assert!(nft_elems().iter().any(|(_, ip, _)| ip == "10.55.0.7"));
        ipt.del_forward("swnet", "c1", "eth0", &[]).unwrap();
        assert!(
            nft_elems().is_empty(),
            "DEL through iptables left {:?}",
            nft_elems()
        );
    });
}
