//! The listing API reads back every entry of ours from the real kernel and iptables, in every
//! table (`inet rcni`, `bridge rcni`, iptables `nat` and `filter`), and attributes each to its
//! owner; after DEL the owner has nothing left.

// Test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use firewall::forward::{forward_firewall, ForwardAttachment, DEFAULT_ADMIN_CHAIN};
use firewall::list::{list, list_all};
use firewall::macspoof::{mac_spoof_check, SpoofEntry};
use firewall::portmap::{port_forwarder, PortMap, PortmapSpec};
use firewall::{firewall, Backend};

#[test]
fn every_table_of_ours_is_listed_by_owner() {
    in_netns(|| {
        assert!(
            list_all().unwrap().is_empty(),
            "a fresh namespace has entries"
        );
        firewall(Backend::Nftables)
            .add_masquerade(&[rule("ln", "c1", "eth0", "10.66.0.5/24")])
            .unwrap();
        let mut pm = PortmapSpec::new("ln", "c1", "eth0");
        pm.v4 = Some("10.66.0.5/24".parse().unwrap());
        pm.mappings = vec![PortMap::from_raw(8090, 80, "tcp", "").unwrap()];
        port_forwarder(Backend::Nftables).add_portmap(&pm).unwrap();
        mac_spoof_check()
            .add_macspoofchk(&SpoofEntry {
                network: "ln".into(),
                container_id: "c1".into(),
                ifname: "eth0".into(),
                host_veth: "vethln1".into(),
                mac: [2, 0x42, 0, 0, 0, 5],
            })
            .unwrap();
        let ipt_fwd = forward_firewall(Backend::Iptables, DEFAULT_ADMIN_CHAIN).unwrap();
        let att = ForwardAttachment {
            network: "ln".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            ips: vec!["10.66.0.5".parse().unwrap()],
        };
        ipt_fwd.add_forward(&att).unwrap();
        firewall(Backend::Iptables)
            .add_masquerade(&[rule("ln", "c2", "eth0", "10.66.0.6/24")])
            .unwrap();

        let mine = list("ln", "c1", "eth0").unwrap();
        println!("{mine:#?}");
        let has = |backend: &str, object: &str, entry: &str| {
            mine.iter()
                .any(|e| e.backend == backend && e.object == object && e.entry.contains(entry))
        };
        assert!(has("nftables", "inet rcni set masq4", "10.66.0.5"));
        assert!(has(
            "nftables",
            "inet rcni set hostports4",
            "tcp . 8090 : 10.66.0.5 . 80"
        ));
        assert!(has(
            "nftables",
            "bridge rcni set spoofchk_ports",
            "\"vethln1\""
        ));
        assert!(has(
            "nftables",
            "bridge rcni set spoofchk_allowed",
            "\"vethln1\" . 02:42:00:00:00:05"
        ));
        assert!(has("iptables", "filter chain CNI-FORWARD", "10.66.0.5/32"));
        // c2's iptables masquerade is listed, but not as c1's
        assert!(
            !mine.iter().any(|e| e.entry.contains("10.66.0.6")),
            "{mine:#?}"
        );
        let c2 = list("ln", "c2", "eth0").unwrap();
        assert!(
            c2.iter()
                .any(|e| e.object == "nat chain POSTROUTING" && e.entry.contains("10.66.0.6")),
            "{c2:#?}"
        );
        // fixed rules are ours but nobody's in particular
        let all = list_all().unwrap();
        assert!(
            all.iter()
                .any(|e| e.object == "inet rcni chain postrouting"
                    && e.comment == "rcni: masquerade4")
        );
        assert!(all.iter().any(
            |e| e.object == "bridge rcni chain prerouting" && e.comment == "rcni: macspoofchk"
        ));

        firewall(Backend::Nftables)
            .del_masquerade("ln", "c1", "eth0")
            .unwrap();
        port_forwarder(Backend::Nftables)
            .del_portmap("ln", "c1", "eth0")
            .unwrap();
        mac_spoof_check()
            .del_macspoofchk("ln", "c1", "eth0")
            .unwrap();
        ipt_fwd.del_forward("ln", "c1", "eth0", &[]).unwrap();
        firewall(Backend::Iptables)
            .del_masquerade("ln", "c2", "eth0")
            .unwrap();
        let left = list("ln", "c1", "eth0").unwrap();
        assert!(left.is_empty(), "{left:#?}");
        assert!(list("ln", "c2", "eth0").unwrap().is_empty());
    });
}
