//! host-local's behaviours (listed in docs/scenarios.md), plus STATUS, each exec'ing the built
//! binary like a runtime inside a private sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use integration_tests::sandbox;
use serde_json::json;

fn dual() -> serde_json::Value {
    json!({"ranges": [[{"subnet": "10.99.0.0/24"}], [{"subnet": "fd00:7::/64"}]]})
}

#[test]
fn lease_files_layout_matches_the_reference() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf("1.0.0", &dd, dual());
        let r = add(&ns, &c, "ctr1", "eth0").ok();
        assert_eq!(addrs(&r), ["10.99.0.2/24", "fd00:7::2/64"]);
        assert_eq!(r["ips"][0]["gateway"], "10.99.0.1");
        assert_eq!(r["ips"][1]["gateway"], "fd00:7::1");
        assert!(r["ips"][0].get("interface").is_none());
        assert!(r.get("interfaces").is_none());
        assert_eq!(
            files(&dd),
            [
                "10.99.0.2",
                "fd00:7::2",
                "last_reserved_ip.0",
                "last_reserved_ip.1",
                "lock"
            ]
        );
        assert_eq!(content(&dd, "10.99.0.2"), "ctr1\r\neth0");
        assert_eq!(content(&dd, "fd00:7::2"), "ctr1\r\neth0");
        assert_eq!(content(&dd, "last_reserved_ip.0"), "10.99.0.2");
        assert_eq!(content(&dd, "last_reserved_ip.1"), "fd00:7::2");
        let mode = std::fs::metadata(net_dir(&dd).join("10.99.0.2"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    });
}

#[test]
fn slash30_has_one_address() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf("1.0.0", &dd, json!({"subnet": "10.2.0.0/30"}));
        assert_eq!(addrs(&add(&ns, &c, "a", "eth0").ok()), ["10.2.0.2/30"]);
        let (code, msg) = add(&ns, &c, "b", "eth0").err();
        assert_eq!(code, 999);
        assert!(
            msg.contains("no IP addresses available in range set: 10.2.0.1-10.2.0.2"),
            "{msg}"
        );
        assert_eq!(leases(&dd), ["10.2.0.2"]);
    });
}

#[test]
fn bad_configs_write_nothing() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let cases = [
            ("1.0.0", json!({"subnet": "10.4.0.0/31"}), "Network 10.4.0.0/31 too small to allocate from"),
            ("1.0.0", json!({"subnet": "fd00::/127"}), "Network fd00::/127 too small to allocate from"),
            ("1.0.0", json!({"subnet": "10.4.0.0/33"}), "invalid CIDR address: 10.4.0.0/33"),
            ("1.0.0", json!({"subnet": "10.4.0.5/24"}), "Network has host bits set. For a subnet mask of length 24 the network address is 10.4.0.0"),
            ("1.0.0", json!({"subnet": "10.5.0.0/24", "rangeStart": "10.6.0.1"}), "RangeStart 10.6.0.1 not in network 10.5.0.0/24"),
            ("1.0.0", json!({"subnet": "10.5.0.0/24", "rangeEnd": "10.6.0.1"}), "RangeEnd 10.6.0.1 not in network 10.5.0.0/24"),
            ("1.0.0", json!({}), "no IP ranges specified"),
            ("1.0.0", json!({"ranges": [[{"subnet": "10.5.0.0/24"}], [{"subnet": "10.5.0.0/16"}]]}), "range set 0 overlaps with 1"),
            ("1.0.0", json!({"ranges": [[{"subnet": "10.5.0.0/24"}, {"subnet": "fd00::/64"}]]}), "invalid range set 0: mixed address families"),
            ("1.0.0", json!({"ranges": [[{"subnet": "10.5.0.0/24"}, {"subnet": "10.5.0.0/25"}]]}), "overlap"),
            ("0.2.0", json!({"ranges": [[{"subnet": "10.5.0.0/24"}], [{"subnet": "10.6.0.0/24"}]]}), "CNI version 0.2.0 does not support more than 1 address per family"),
            ("1.0.0", json!({"subnet": "10.5.0.0/24", "routes": [{"dst": "bogus"}]}), "invalid routes"),
            ("1.0.0", json!({"subnet": "10.5.0.0/24", "resolvConf": "/nonexistent/resolv.conf"}), "/nonexistent/resolv.conf"),
        ];
        for (ver, ipam, want) in cases {
            let c = conf(ver, &dd, ipam.clone());
            let (code, msg) = add(&ns, &c, "a", "eth0").err();
            assert!(msg.contains(want), "{ipam}: got {msg:?}, want {want:?}");
            assert_eq!(code, 7, "{ipam}: config errors are code 7");
            assert!(files(&dd).is_empty(), "{ipam}: wrote {:?}", files(&dd));
        }
        let mut c = conf("1.0.0", &dd, json!({}));
        c.as_object_mut().unwrap().remove("ipam");
        let (_, msg) = add(&ns, &c, "a", "eth0").err();
        assert_eq!(msg, "IPAM config missing 'ipam' key");
    });
}

#[test]
fn range_bounds_gateway_round_robin_and_wrap() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf(
            "1.0.0",
            &dd,
            json!({"ranges": [
                [{"subnet": "10.3.0.0/24", "rangeStart": "10.3.0.10", "rangeEnd": "10.3.0.12"}],
                [{"subnet": "fd00:3::/64", "rangeStart": "fd00:3::2"}]]}),
        );
        let got: Vec<Vec<String>> = ["c1", "c2", "c3"]
            .iter()
            .map(|cid| addrs(&add(&ns, &c, cid, "eth0").ok()))
            .collect();
        assert_eq!(got[0], ["10.3.0.10/24", "fd00:3::2/64"]);
        assert_eq!(got[1], ["10.3.0.11/24", "fd00:3::3/64"]);
        assert_eq!(got[2], ["10.3.0.12/24", "fd00:3::4/64"]);
        del(&ns, &c, "c1", "eth0").ok();
        assert_eq!(
            addrs(&add(&ns, &c, "c4", "eth0").ok()),
            ["10.3.0.10/24", "fd00:3::5/64"]
        );

        // A gateway inside the range is skipped.
        let dd2 = sb.dir("data2");
        let c = conf(
            "1.0.0",
            &dd2,
            json!({"subnet": "10.3.0.0/24", "rangeStart": "10.3.0.10", "rangeEnd": "10.3.0.12", "gateway": "10.3.0.11"}),
        );
        let a = add(&ns, &c, "g1", "eth0").ok();
        assert_eq!(addrs(&a), ["10.3.0.10/24"]);
        assert_eq!(a["ips"][0]["gateway"], "10.3.0.11");
        assert_eq!(addrs(&add(&ns, &c, "g2", "eth0").ok()), ["10.3.0.12/24"]);
        assert!(add(&ns, &c, "g3", "eth0")
            .err()
            .1
            .contains("no IP addresses available"));
    });
}

#[test]
fn resolv_conf_becomes_the_result_dns() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let rc = sb.scratch().join("resolv.conf");
        std::fs::write(
            &rc,
            "# generated\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.org\nsearch a.example b.example\noptions ndots:2 edns0\n",
        )
        .unwrap();
        let c = conf(
            "1.0.0",
            &dd,
            json!({"subnet": "10.5.0.0/24", "resolvConf": rc.to_str().unwrap(),
                   "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.5.0.254"}]}),
        );
        let r = add(&ns, &c, "a", "eth0").ok();
        assert_eq!(
            r["dns"],
            json!({"nameservers": ["10.0.0.53", "fd00::53"], "domain": "example.org",
                   "search": ["a.example", "b.example"], "options": ["ndots:2", "edns0"]})
        );
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.5.0.254"}])
        );
    });
}

#[test]
fn requested_ip_via_cni_args() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf("1.0.0", &dd, json!({"subnet": "10.6.0.0/24"}));
        let req = |cid: &str, ip: &str| {
            call(&ours(), "ADD", cid, "eth0", &ns, &c)
                .env(
                    "CNI_ARGS",
                    &format!("IgnoreUnknown=1;K8S_POD_NAME=x;IP={ip}"),
                )
                .run()
        };
        assert_eq!(addrs(&req("a", "10.6.0.77").ok()), ["10.6.0.77/24"]);
        assert_eq!(content(&dd, "last_reserved_ip.0"), "10.6.0.77");
        let (code, msg) = req("b", "10.6.0.77").err();
        assert_eq!(code, 999);
        assert_eq!(
            msg,
            "failed to allocate for range 0: requested IP address 10.6.0.77 is not available in range set 10.6.0.1-10.6.0.254"
        );
        let (_, msg) = req("b", "10.6.0.1").err();
        assert_eq!(
            msg,
            "failed to allocate for range 0: requested ip 10.6.0.1 is subnet's gateway"
        );
        let (_, msg) = req("b", "10.7.0.1").err();
        assert_eq!(msg, "failed to allocate all requested IPs: 10.7.0.1");
        let (code, msg) = req("b", "bogus").err();
        assert_eq!(code, 4);
        assert!(msg.contains("invalid IP address bogus"), "{msg}");
        // Without IgnoreUnknown, K8S_* keys are rejected by the skeleton.
        let out = call(&ours(), "ADD", "b", "eth0", &ns, &c)
            .env("CNI_ARGS", "K8S_POD_NAME=x")
            .run();
        assert!(out.err().1.contains("ARGS: unknown args"));
        assert_eq!(leases(&dd), ["10.6.0.77"]);
    });
}

#[test]
fn runtime_config_and_args_ips_and_ip_ranges() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let mut c = conf("1.0.0", &dd, dual());
        c["runtimeConfig"] = json!({"ips": ["10.99.0.50/24"]});
        c["args"] = json!({"cni": {"ips": ["fd00:7::50"]}});
        assert_eq!(
            addrs(&add(&ns, &c, "a", "eth0").ok()),
            ["10.99.0.50/24", "fd00:7::50/64"]
        );
        let mut c = conf("1.0.0", &dd, json!({"subnet": "10.99.0.0/24"}));
        c["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.98.0.0/24"}]]});
        // ipRanges is prepended to the configured ranges, not a replacement.
        assert_eq!(
            addrs(&add(&ns, &c, "b", "eth0").ok()),
            ["10.98.0.2/24", "10.99.0.2/24"]
        );
    });
}

#[test]
fn duplicate_attachment_is_refused() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf("1.0.0", &dd, json!({"subnet": "10.8.0.0/24"}));
        add(&ns, &c, "a", "eth0").ok();
        let (code, msg) = add(&ns, &c, "a", "eth0").err();
        assert_eq!(code, 999);
        assert_eq!(
            msg,
            "failed to allocate for range 0: 10.8.0.2 has been allocated to a, duplicate allocation is not allowed"
        );
        assert_eq!(addrs(&add(&ns, &c, "a", "eth1").ok()), ["10.8.0.3/24"]);
    });
}

#[test]
fn del_releases_by_owner_and_is_idempotent() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf("1.0.0", &dd, json!({"subnet": "10.9.0.0/24"}));
        add(&ns, &c, "a", "eth0").ok();
        add(&ns, &c, "a", "eth1").ok();
        // Other ifname of the same container is kept.
        del(&ns, &c, "a", "eth1").ok();
        assert_eq!(leases(&dd), ["10.9.0.2"]);
        // Unknown container, repeated DEL, DEL without CNI_NETNS: all rc 0.
        del(&ns, &c, "nobody", "eth0").ok();
        del(&ns, &c, "a", "eth1").ok();
        // Legacy id-only lease is released.
        std::fs::write(net_dir(&dd).join("10.9.0.40"), "legacy").unwrap();
        del(&ns, &c, "legacy", "eth0").ok();
        assert_eq!(leases(&dd), ["10.9.0.2"]);
        // A DEL config with other ranges still releases (no netns either).
        let other = conf("1.0.0", &dd, json!({"subnet": "172.16.0.0/16"}));
        call(&ours(), "DEL", "a", "eth0", &ns, &other)
            .unset("CNI_NETNS")
            .run()
            .ok();
        assert!(leases(&dd).is_empty());
        assert_eq!(files(&dd), ["last_reserved_ip.0", "lock"]);
        // DEL on a network that never existed creates nothing.
        let fresh = sb.dir("fresh");
        del(
            &ns,
            &conf("1.0.0", &fresh, json!({"subnet": "10.9.0.0/24"})),
            "a",
            "eth0",
        )
        .ok();
        assert!(files(&fresh).is_empty());
    });
}

#[test]
fn check_verifies_the_attachment_holds_its_leases() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf("1.0.0", &dd, json!({"subnet": "10.10.0.0/24"}));
        let r = add(&ns, &c, "a", "eth0").ok();
        let mut cc = c.clone();
        cc["prevResult"] = r;
        call(&ours(), "CHECK", "a", "eth0", &ns, &cc).run().ok();
        let (code, msg) = call(&ours(), "CHECK", "zz", "eth0", &ns, &cc).run().err();
        assert_eq!(code, 999);
        assert_eq!(
            msg,
            "host-local: Failed to find address added by container zz"
        );
        // Legacy lease satisfies CHECK too.
        std::fs::write(net_dir(&dd).join("10.10.0.99"), "old").unwrap();
        call(&ours(), "CHECK", "old", "eth0", &ns, &cc).run().ok();
    });
}

#[test]
fn gc_keeps_valid_attachments_and_state_files() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf("1.1.0", &dd, dual());
        for cid in ["keep", "drop"] {
            add(&ns, &c, cid, "eth0").ok();
        }
        add(&ns, &c, "keep", "eth1").ok();
        std::fs::write(net_dir(&dd).join("10.99.0.200"), "keep").unwrap();
        std::fs::write(net_dir(&dd).join("10.99.0.201"), "gone").unwrap();
        std::fs::write(net_dir(&dd).join("10.99.0.202"), "").unwrap();
        std::fs::write(net_dir(&dd).join(".host-local-tmp.1.1"), "x\r\neth0").unwrap();
        let mut g = c.clone();
        g["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
        verb(&ours(), "GC", &g).ok();
        assert_eq!(
            files(&dd),
            [
                "10.99.0.2",
                "10.99.0.200",
                "fd00:7::2",
                "last_reserved_ip.0",
                "last_reserved_ip.1",
                "lock"
            ]
        );
        // Empty list releases everything, state files stay.
        g["cni.dev/valid-attachments"] = json!([]);
        verb(&ours(), "GC", &g).ok();
        assert_eq!(
            files(&dd),
            ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
        );
        // GC below 1.1.0 is refused by the skeleton.
        let mut old = conf("1.0.0", &dd, dual());
        old["cni.dev/valid-attachments"] = json!([]);
        assert_eq!(verb(&ours(), "GC", &old).err().0, 1);
    });
}

#[test]
fn status_reports_exhaustion_with_code_50() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf(
            "1.1.0",
            &dd,
            json!({"ranges": [[{"subnet": "10.11.0.0/24"}], [{"subnet": "10.12.0.0/30"}]]}),
        );
        verb(&ours(), "STATUS", &c).ok();
        add(&ns, &c, "a", "eth0").ok();
        let (code, msg) = verb(&ours(), "STATUS", &c).err();
        assert_eq!(code, 50);
        assert_eq!(
            msg,
            "no IP addresses available in range set: 10.12.0.1-10.12.0.2"
        );
        del(&ns, &c, "a", "eth0").ok();
        verb(&ours(), "STATUS", &c).ok();
    });
}

#[test]
fn result_shape_follows_config_version() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let r = add(&ns, &conf("0.2.0", &dd, dual()), "a", "eth0").ok();
        assert_eq!(r["ip4"]["ip"], "10.99.0.2/24");
        assert_eq!(r["ip6"]["ip"], "fd00:7::2/64");
        let r = add(&ns, &conf("", &dd, dual()), "b", "eth0").ok();
        assert_eq!(r["ip4"]["ip"], "10.99.0.3/24");
        let r = add(&ns, &conf("0.4.0", &dd, dual()), "c", "eth0").ok();
        assert_eq!(r["ips"][0]["version"], "4");
        let r = add(&ns, &conf("1.1.0", &dd, dual()), "d", "eth0").ok();
        assert_eq!(r["cniVersion"], "1.1.0");
        assert!(r["ips"][0].get("version").is_none());
    });
}

#[test]
fn case_insensitive_keys_like_go() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = json!({"cniVersion": "1.0.0", "name": NET,
            "ipam": {"type": "host-local", "DataDir": dd.to_str().unwrap(), "Subnet": "10.13.0.0/24",
                     "RangeStart": "10.13.0.100"}});
        assert_eq!(addrs(&add(&ns, &c, "a", "eth0").ok()), ["10.13.0.100/24"]);
        assert_eq!(leases(&dd), ["10.13.0.100"]);
    });
}

/// host-local never enters CNI_NETNS, so, like the reference, it accepts any value: a VM
/// runtime's own path, a regular file, a path that does not exist, the plugin's own namespace.
/// Each ADD gets its lease and each DEL releases it.
#[test]
fn any_netns_value_is_accepted_because_ipam_never_enters_it() {
    sandbox(|sb| {
        let dd = sb.dir("data");
        let c = conf("1.0.0", &dd, json!({"subnet": "10.98.0.0/24"}));
        let file = sb.scratch().join("not-a-namespace");
        std::fs::write(&file, b"").unwrap();
        let paths = [
            file,
            sb.scratch().join("missing"),
            std::path::PathBuf::from("/proc/thread-self/ns/net"),
            std::path::PathBuf::from("/var/run/vm-123"),
        ];
        for (i, p) in paths.iter().enumerate() {
            let cid = format!("vm{i}");
            let r = add(p, &c, &cid, "eth0").ok();
            assert_eq!(
                addrs(&r),
                [format!("10.98.0.{}/24", i + 2)],
                "{}",
                p.display()
            );
        }
        for (i, p) in paths.iter().enumerate() {
            del(p, &c, &format!("vm{i}"), "eth0").ok();
        }
        assert_eq!(files(&dd), ["last_reserved_ip.0", "lock"]);
    });
}
