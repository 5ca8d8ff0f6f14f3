//! Root integration tests of macspoofchk (table `bridge rcni`) against the real kernel, each in
//! private namespaces (see common/mod.rs).

// Test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use firewall::macspoof::{mac_spoof_check, SpoofEntry};

fn entry(net: &str, cid: &str, veth: &str, last: u8) -> SpoofEntry {
    SpoofEntry {
        network: net.into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
        host_veth: veth.into(),
        mac: [0x02, 0x42, 0, 0, 0, last],
    }
}

/// (set, value, comment) of every element of `bridge rcni`; a concatenation is joined with
/// " . " as nft writes it.
fn spoof_elems() -> Vec<(String, String, String)> {
    let (ok, out, err) = cmd("nft", &["-j", "list", "table", "bridge", "rcni"]);
    if !ok {
        assert!(err.contains("No such file"), "nft list failed: {err}");
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut res = Vec::new();
    for item in v["nftables"].as_array().unwrap() {
        let Some(set) = item.get("set") else { continue };
        let name = set["name"].as_str().unwrap().to_string();
        for e in set["elem"].as_array().cloned().unwrap_or_default() {
            let el = &e["elem"];
            let val = match &el["val"] {
                serde_json::Value::String(s) => s.clone(),
                other => other["concat"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(" . "),
            };
            res.push((
                name.clone(),
                val,
                el["comment"].as_str().unwrap().to_string(),
            ));
        }
    }
    res.sort();
    res
}

fn values(set: &str) -> Vec<String> {
    spoof_elems()
        .into_iter()
        .filter(|e| e.0 == set)
        .map(|e| e.1)
        .collect()
}

#[test]
fn macspoof_add_list_del_gc_check() {
    in_netns(|| {
        // DEL and GC before anything exists: nothing to do, Ok.
        mac_spoof_check()
            .del_macspoofchk("n1", "c1", "eth0")
            .unwrap();
        mac_spoof_check().gc_macspoofchk("n1", &[]).unwrap();

        let e1 = entry("n1", "c1", "vetha1", 1);
        let e2 = entry("n1", "c2", "vetha2", 2);
        mac_spoof_check().add_macspoofchk(&e1).unwrap();
        mac_spoof_check().add_macspoofchk(&e2).unwrap();
        let listing = run("nft", &["list", "table", "bridge", "rcni"]);
        println!("{listing}");
        assert!(
            listing.contains(
                "iifname @spoofchk_ports iifname . ether saddr != @spoofchk_allowed drop comment \"rcni: macspoofchk\""
            ),
            "{listing}"
        );
        assert!(listing.contains("type ifname . ether_addr"), "{listing}");
        assert!(
            listing.contains("type filter hook prerouting priority dstnat; policy accept;"),
            "{listing}"
        );
        assert_eq!(listing.matches("drop").count(), 1, "{listing}");
        // The reference's table is never created or touched.
        let tables = run("nft", &["list", "tables"]);
        assert_eq!(tables.trim(), "table bridge rcni", "{tables}");

        assert_eq!(values("spoofchk_ports"), vec!["vetha1", "vetha2"]);
        assert_eq!(
            values("spoofchk_allowed"),
            vec!["vetha1 . 02:42:00:00:00:01", "vetha2 . 02:42:00:00:00:02"]
        );
        for (_, val, comment) in spoof_elems() {
            let cid = if val.starts_with("vetha1") {
                "c1"
            } else {
                "c2"
            };
            assert!(
                comment.starts_with(&firewall::names::owner_tag("n1", cid, "eth0")),
                "{val}: {comment}"
            );
            assert!(
                comment.contains(&format!("id: {cid}, if: eth0")),
                "{comment}"
            );
        }
        mac_spoof_check().check_macspoofchk(&e1).unwrap();
        mac_spoof_check().check_macspoofchk(&e2).unwrap();
        let mut wrong_mac = e1.clone();
        wrong_mac.mac[5] = 9;
        let err = mac_spoof_check()
            .check_macspoofchk(&wrong_mac)
            .unwrap_err()
            .to_string();
        assert!(err.contains("02:42:00:00:00:09"), "{err}");

        // Idempotent: the same ADD again changes nothing.
        mac_spoof_check().add_macspoofchk(&e1).unwrap();
        assert_eq!(run("nft", &["list", "table", "bridge", "rcni"]), listing);

        // Another network.
        let e3 = entry("n2", "c3", "vetha3", 3);
        mac_spoof_check().add_macspoofchk(&e3).unwrap();

        // DEL needs neither veth nor MAC and removes only c1; a second DEL is fine.
        mac_spoof_check()
            .del_macspoofchk("n1", "c1", "eth0")
            .unwrap();
        assert_eq!(values("spoofchk_ports"), vec!["vetha2", "vetha3"]);
        assert_eq!(
            values("spoofchk_allowed"),
            vec!["vetha2 . 02:42:00:00:00:02", "vetha3 . 02:42:00:00:00:03"]
        );
        mac_spoof_check()
            .del_macspoofchk("n1", "c1", "eth0")
            .unwrap();
        let err = mac_spoof_check()
            .check_macspoofchk(&e1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vetha1"), "{err}");
        // The rule stays (the reference keeps its base chain too).
        assert!(run("nft", &["list", "table", "bridge", "rcni"]).contains("rcni: macspoofchk"));

        // CHECK notices an element someone removed.
        run(
            "nft",
            &["delete element bridge rcni spoofchk_allowed { \"vetha2\" . 02:42:00:00:00:02 }"],
        );
        let err = mac_spoof_check()
            .check_macspoofchk(&e2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("macspoofchk check failed") && err.contains("spoofchk_allowed"),
            "{err}"
        );
        // ...and ADD repairs it.
        mac_spoof_check().add_macspoofchk(&e2).unwrap();
        mac_spoof_check().check_macspoofchk(&e2).unwrap();

        // GC only touches its own network and keeps what is valid.
        let e4 = entry("n1", "c4", "vetha4", 4);
        mac_spoof_check().add_macspoofchk(&e4).unwrap();
        mac_spoof_check()
            .gc_macspoofchk("n1", &[("c4".to_string(), "eth0".to_string())])
            .unwrap();
        assert_eq!(values("spoofchk_ports"), vec!["vetha3", "vetha4"]);
        mac_spoof_check().gc_macspoofchk("n1", &[]).unwrap();
        assert_eq!(values("spoofchk_ports"), vec!["vetha3"]);
        assert_eq!(
            values("spoofchk_allowed"),
            vec!["vetha3 . 02:42:00:00:00:03"]
        );
        mac_spoof_check().check_macspoofchk(&e3).unwrap();
    });
}

#[test]
fn macspoof_rule_is_rebuilt_and_stale_owner_taken_over() {
    in_netns(|| {
        let e1 = entry("n1", "c1", "vethb1", 1);
        mac_spoof_check().add_macspoofchk(&e1).unwrap();
        run("nft", &["flush chain bridge rcni prerouting"]);
        let err = mac_spoof_check()
            .check_macspoofchk(&e1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("rcni: macspoofchk"), "{err}");
        mac_spoof_check().add_macspoofchk(&e1).unwrap();
        mac_spoof_check().check_macspoofchk(&e1).unwrap();
        let listing = run("nft", &["list", "table", "bridge", "rcni"]);
        assert_eq!(listing.matches("drop").count(), 1, "{listing}");

        // The same veth name reused by another attachment (its old owner missed DEL).
        let e2 = entry("n1", "c2", "vethb1", 1);
        mac_spoof_check().add_macspoofchk(&e2).unwrap();
        mac_spoof_check().check_macspoofchk(&e2).unwrap();
        assert!(mac_spoof_check().check_macspoofchk(&e1).is_err());
        mac_spoof_check()
            .del_macspoofchk("n1", "c1", "eth0")
            .unwrap();
        mac_spoof_check().check_macspoofchk(&e2).unwrap();

        // Invalid input is refused before any change.
        let mut bad = entry("n1", "c3", "", 3);
        assert!(mac_spoof_check().add_macspoofchk(&bad).is_err());
        bad.host_veth = "x".repeat(16);
        assert!(mac_spoof_check().add_macspoofchk(&bad).is_err());
    });
}
