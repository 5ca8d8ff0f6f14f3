//! Root integration tests against the real kernel, each inside its own throwaway network and
//! mount namespace (see common::sandbox). `ip` (iproute2) is the independent oracle.

// Test code: a failed unwrap is a failed test (the workspace lints deny these for library code).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::path::Path;

use common::{ip, ip_json, ip_link, sandbox};
use ipnet::IpNet;
use kernel::netlink::RT_TABLE_MAIN;
use kernel::netns::{create_pinned, delete_pinned, list_pinned};
use kernel::{sysctl, BridgeVlan, Error, Family, NetNs, Netlink, NetlinkOps, RouteSpec, VethSpec};

const RUN_NETNS: &str = "/run/netns";

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ipa(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn bridge_add_kind_and_eexist() {
    sandbox(|| {
        let mut nl = Netlink::open().unwrap();
        nl.bridge_add("br0", Some(1400)).unwrap();
        let br = nl.link_by_name("br0").unwrap().expect("br0 exists");
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert_eq!(br.mtu, 1400);
        assert!(!br.up);
        let again = nl.bridge_add("br0", None).unwrap_err();
        assert!(again.is_exists(), "{again}");
        assert!(matches!(
            again,
            Error::Netlink {
                op: "bridge_add",
                ..
            }
        ));
        assert_eq!(nl.link_by_index(br.index).unwrap().unwrap().name, "br0");
        assert!(nl.link_by_name("nosuchlink").unwrap().is_none());
        let long = nl.bridge_add("name-longer-than-15", None).unwrap_err();
        assert!(matches!(long, Error::Invalid { .. }), "{long}");
        // A kernel refusal carries op, target and errno (lo cannot be its own master).
        let e = nl.link_set_master(1, 1).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Netlink {
                    op: "link_set_master",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.errno().is_some_and(|n| n > 0));
        assert!(e.to_string().contains("ifindex 1"), "{e}");
        assert!(nl.link_by_index(99999).unwrap().is_none());
        let names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
        assert!(
            names.contains(&"lo".to_string()) && names.contains(&"br0".to_string()),
            "{names:?}"
        );
        let oracle = ip_link(None, "br0").expect("ip sees br0");
        assert_eq!(oracle["linkinfo"]["info_kind"], "bridge");
        // Promiscuous mode round trip.
        nl.link_set_promisc(br.index, true).unwrap();
        assert!(nl.link_by_index(br.index).unwrap().unwrap().promisc);
        nl.link_set_promisc(br.index, false).unwrap();
        assert!(!nl.link_by_index(br.index).unwrap().unwrap().promisc);
        nl.link_del(br.index).unwrap();
        assert!(nl.link_by_name("br0").unwrap().is_none());
        assert!(nl.link_del(br.index).unwrap_err().is_not_found());
    });
}

#[test]
fn veth_into_pinned_netns_and_port_settings() {
    sandbox(|| {
        let dir = Path::new(RUN_NETNS);
        let pin = create_pinned(dir, "c1").unwrap();
        assert_eq!(pin, dir.join("c1"));
        assert_eq!(list_pinned(dir).unwrap(), vec!["c1".to_string()]);
        let ns = NetNs::open(&pin).unwrap();

        let mut nl = Netlink::open().unwrap();
        nl.bridge_add("br0", None).unwrap();
        let br = nl.link_by_name("br0").unwrap().unwrap();
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
        nl.veth_add(&VethSpec {
            host_name: "vethtest0",
            peer_name: "eth0",
            peer_netns: &ns,
            mtu: Some(1450),
            peer_mac: Some(mac),
        })
        .unwrap();

        // Independent oracle: the peer sits in c1 under its final name, with MTU and MAC.
        let peer = ip_link(Some("c1"), "eth0").expect("eth0 in c1");
        assert_eq!(peer["address"], "02:42:ac:11:00:02");
        assert_eq!(peer["mtu"], 1450);
        assert_eq!(peer["linkinfo"]["info_kind"], "veth");
        assert!(
            ip_link(None, "eth0").is_none(),
            "peer must not be in the host namespace"
        );

        let host = nl.link_by_name("vethtest0").unwrap().expect("host end");
        assert_eq!(host.kind.as_deref(), Some("veth"));
        assert_eq!(host.mtu, 1450);
        assert!(host.peer_index.is_some());
        assert!(host.link_netnsid.is_some());

        // The same peer seen through a socket opened inside c1.
        let mut cnl = Netlink::open_in(&ns).unwrap();
        let eth0 = cnl.link_by_name("eth0").unwrap().expect("eth0 via open_in");
        assert_eq!(eth0.mac, Some(mac));
        assert_eq!(Some(eth0.index), host.peer_index);
        assert!(cnl.link_by_name("vethtest0").unwrap().is_none());

        nl.link_set_master(host.index, br.index).unwrap();
        nl.link_set_up(host.index).unwrap();
        nl.link_set_up(br.index).unwrap();
        cnl.link_set_up(eth0.index).unwrap();
        nl.link_set_mtu(host.index, 1300).unwrap();
        let new_mac = [0x02, 0, 0, 0, 0, 0x99];
        nl.link_set_mac(host.index, new_mac).unwrap();
        let host = nl.link_by_index(host.index).unwrap().unwrap();
        assert_eq!(host.master, Some(br.index));
        assert!(host.up);
        assert_eq!(host.mtu, 1300);
        assert_eq!(host.mac, Some(new_mac));
        let oracle = ip_link(None, "vethtest0").unwrap();
        assert_eq!(oracle["master"], "br0");
        assert_eq!(oracle["address"], "02:00:00:00:00:99");
        assert!(oracle["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"));

        // Bridge port flags, checked through the fresh sysfs of this namespace.
        let brport = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/vethtest0/brport/{f}"))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(brport("hairpin_mode"), "0");
        nl.brport_set(host.index, Some(true), Some(true)).unwrap();
        assert_eq!(brport("hairpin_mode"), "1");
        assert_eq!(brport("isolated"), "1");
        nl.brport_set(host.index, Some(false), None).unwrap();
        assert_eq!(brport("hairpin_mode"), "0");
        assert_eq!(brport("isolated"), "1");

        // VLANs (the bridge plugin's vlan/vlanTrunk). Both outcomes are checked against the
        // kernel: a kernel built without CONFIG_BRIDGE_VLAN_FILTERING must refuse us with
        // EOPNOTSUPP and refuse iproute2 too (so the refusal is the kernel's, not ours);
        // otherwise the VLAN programming itself is checked.
        match nl.bridge_set_vlan_filtering(br.index, true) {
            Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
                let out = ip(&[
                    "link",
                    "set",
                    "br0",
                    "type",
                    "bridge",
                    "vlan_filtering",
                    "1",
                ]);
                assert!(
                    !out.status.success(),
                    "ip could enable vlan_filtering but we could not: {e}"
                );
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("Operation not supported"), "{err}");
            }
            other => {
                other.unwrap();
                vlan_checks(&mut nl, host.index);
            }
        }

        // Releasing from the bridge.
        nl.link_set_master(host.index, 0).unwrap();
        assert_eq!(nl.link_by_index(host.index).unwrap().unwrap().master, None);
        nl.link_set_down(host.index).unwrap();
        assert!(!nl.link_by_index(host.index).unwrap().unwrap().up);

        // A second veth with the same host name is EEXIST.
        let dup = nl
            .veth_add(&VethSpec {
                host_name: "vethtest0",
                peer_name: "eth1",
                peer_netns: &ns,
                mtu: None,
                peer_mac: None,
            })
            .unwrap_err();
        assert!(dup.is_exists(), "{dup}");

        // Deleting the host end removes the peer too.
        nl.link_del(host.index).unwrap();
        assert!(nl.link_by_name("vethtest0").unwrap().is_none());
        assert!(cnl.link_by_name("eth0").unwrap().is_none());
        assert!(ip_link(Some("c1"), "eth0").is_none());

        drop(cnl);
        drop(ns);
        delete_pinned(dir, "c1").unwrap();
        delete_pinned(dir, "c1").unwrap();
        assert!(list_pinned(dir).unwrap().is_empty());
        assert!(!pin.exists());
    });
}

#[test]
fn veth_created_from_container_side() {
    // The reference bridge plugin's direction: the socket lives in the
    // container, the peer is created directly in the host namespace under a random name.
    sandbox(|| {
        let dir = Path::new(RUN_NETNS);
        let ns = NetNs::open(&create_pinned(dir, "c2").unwrap()).unwrap();
        let host_ns = NetNs::current().unwrap();
        let hostname = kernel::mac::random_veth_name();
        let mut cnl = Netlink::open_in(&ns).unwrap();
        cnl.veth_add(&VethSpec {
            host_name: "eth0",
            peer_name: &hostname,
            peer_netns: &host_ns,
            mtu: None,
            peer_mac: None,
        })
        .unwrap();
        assert!(ip_link(Some("c2"), "eth0").is_some());
        let mut nl = Netlink::open().unwrap();
        let h = nl
            .link_by_name(&hostname)
            .unwrap()
            .expect("host end in host ns");
        assert_eq!(h.kind.as_deref(), Some("veth"));
        let c = cnl.link_by_name("eth0").unwrap().unwrap();
        cnl.link_del(c.index).unwrap();
        assert!(nl.link_by_name(&hostname).unwrap().is_none());
    });
}

/// With filtering on, a new port has the default PVID 1; program vlan 100 as PVID+untagged and a
/// tagged 200, drop 1, and read back (oracle: `bridge -j vlan show`).
fn vlan_checks(nl: &mut Netlink, port: u32) {
    let dev = ip_link(None, "br0").unwrap();
    assert_eq!(dev["linkinfo"]["info_data"]["vlan_filtering"], 1);
    let vlan = |vid, pvid, untagged| BridgeVlan {
        vid,
        pvid,
        untagged,
    };
    nl.bridge_vlan_add(port, vlan(100, true, true)).unwrap();
    nl.bridge_vlan_add(port, vlan(200, false, false)).unwrap();
    nl.bridge_vlan_del(port, 1).unwrap();
    let vlans = nl.bridge_vlans(port).unwrap();
    assert_eq!(vlans, vec![vlan(100, true, true), vlan(200, false, false)]);
    let out = std::process::Command::new("bridge")
        .args(["-j", "vlan", "show", "dev", "vethtest0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"vlan\":100") && text.contains("\"vlan\":200"),
        "{text}"
    );
    assert!(!text.contains("\"vlan\":1,"), "{text}");
    assert!(nl.bridge_vlan_add(port, vlan(4095, false, false)).is_err());
}

fn veth_pair_up(nl: &mut Netlink, ns: &NetNs) -> (u32, Netlink, u32) {
    nl.veth_add(&VethSpec {
        host_name: "vh0",
        peer_name: "eth0",
        peer_netns: ns,
        mtu: None,
        peer_mac: None,
    })
    .unwrap();
    let h = nl.link_by_name("vh0").unwrap().unwrap();
    nl.link_set_up(h.index).unwrap();
    let mut cnl = Netlink::open_in(ns).unwrap();
    let c = cnl.link_by_name("eth0").unwrap().unwrap();
    cnl.link_set_up(c.index).unwrap();
    (h.index, cnl, c.index)
}

#[test]
fn addresses_add_list_delete() {
    sandbox(|| {
        let ns = NetNs::open(&create_pinned(Path::new(RUN_NETNS), "a1").unwrap()).unwrap();
        let mut nl = Netlink::open().unwrap();
        let (hidx, _cnl, _) = veth_pair_up(&mut nl, &ns);
        // lo of a fresh namespace is down and has no addresses until it is set up.
        assert!(nl.addrs(Some(1)).unwrap().is_empty());
        nl.link_set_up(1).unwrap();
        let lo = nl.addrs(Some(1)).unwrap();
        assert!(
            lo.iter()
                .any(|a| a.addr == net("127.0.0.1/8") && a.scope == 254),
            "{lo:?}"
        );
        let v4 = net("10.99.0.1/24");
        let v6 = net("fd00:99::1/64");
        nl.addr_add(hidx, v4).unwrap();
        nl.addr_add(hidx, v6).unwrap();
        let e = nl.addr_add(hidx, v4).unwrap_err();
        assert!(e.is_exists(), "{e}");

        let mine = nl.addrs(Some(hidx)).unwrap();
        assert!(mine.iter().all(|a| a.index == hidx));
        let a4 = mine.iter().find(|a| a.addr == v4).expect("v4 listed");
        assert_eq!(a4.scope, 0);
        assert!(a4.flags & kernel::netlink::IFA_F_PERMANENT != 0);
        assert!(mine.iter().any(|a| a.addr == v6), "{mine:?}");
        let all = nl.addrs(None).unwrap();
        assert!(all.iter().any(|a| a.addr == v4 && a.index == hidx));
        assert!(
            all.iter().any(|a| a.index == 1),
            "lo addresses in full dump"
        );

        let oracle = ip_json(None, &["addr", "show", "dev", "vh0"]);
        let infos = oracle[0]["addr_info"].as_array().unwrap();
        let o4 = infos
            .iter()
            .find(|i| i["local"] == "10.99.0.1")
            .expect("ip sees v4");
        assert_eq!(o4["prefixlen"], 24);
        assert_eq!(o4["broadcast"], "10.99.0.255");

        nl.addr_del(hidx, v4).unwrap();
        assert!(!nl.addrs(Some(hidx)).unwrap().iter().any(|a| a.addr == v4));
        let e = nl.addr_del(hidx, v4).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    });
}

#[test]
fn routes_add_list_delete() {
    sandbox(|| {
        let ns = NetNs::open(&create_pinned(Path::new(RUN_NETNS), "r1").unwrap()).unwrap();
        let mut nl = Netlink::open().unwrap();
        let (hidx, _cnl, _) = veth_pair_up(&mut nl, &ns);
        nl.addr_add(hidx, net("10.99.0.1/24")).unwrap();
        nl.addr_add(hidx, net("fd00:99::1/64")).unwrap();

        let r = RouteSpec {
            gw: Some(ipa("10.99.0.2")),
            priority: Some(50),
            mtu: Some(1400),
            ..RouteSpec::new(net("10.100.0.0/16"))
        };
        nl.route_add(&r).unwrap();
        assert!(nl.route_add(&r).unwrap_err().is_exists());
        let dflt = RouteSpec {
            gw: Some(ipa("10.99.0.2")),
            ..RouteSpec::new(net("0.0.0.0/0"))
        };
        nl.route_add(&dflt).unwrap();
        let link_route = RouteSpec {
            oif: Some(hidx),
            ..RouteSpec::new(net("10.101.0.0/24"))
        };
        nl.route_add(&link_route).unwrap();

        let v4 = nl.routes(Family::V4).unwrap();
        let got = v4.iter().find(|x| x.dst == r.dst).expect("route listed");
        assert_eq!(got.gw, r.gw);
        assert_eq!(got.oif, Some(hidx));
        assert_eq!(got.priority, Some(50));
        assert_eq!(got.mtu, Some(1400));
        assert_eq!(got.table, Some(RT_TABLE_MAIN));
        assert_eq!(got.scope, Some(0));
        assert!(v4.iter().any(|x| x.dst == dflt.dst && x.gw == dflt.gw));
        let lr = v4.iter().find(|x| x.dst == link_route.dst).unwrap();
        assert_eq!(lr.scope, Some(kernel::netlink::RT_SCOPE_LINK));
        // The kernel's prefix route of the address.
        assert!(v4
            .iter()
            .any(|x| x.dst == net("10.99.0.0/24") && x.gw.is_none()));
        assert!(v4.iter().all(|x| x.dst.addr().is_ipv4()));

        let oracle = ip_json(None, &["route", "show", "10.100.0.0/16"]);
        assert_eq!(oracle[0]["gateway"], "10.99.0.2");
        assert_eq!(oracle[0]["dev"], "vh0");
        assert_eq!(oracle[0]["metric"], 50);

        let r6 = RouteSpec {
            gw: Some(ipa("fd00:99::2")),
            ..RouteSpec::new(net("fd01::/64"))
        };
        nl.route_add(&r6).unwrap();
        let v6 = nl.routes(Family::V6).unwrap();
        assert!(
            v6.iter().any(|x| x.dst == r6.dst && x.gw == r6.gw),
            "{v6:?}"
        );
        assert!(v6.iter().all(|x| x.dst.addr().is_ipv6()));

        nl.route_del(&r).unwrap();
        nl.route_del(&r6).unwrap();
        nl.route_del(&dflt).unwrap();
        let v4 = nl.routes(Family::V4).unwrap();
        assert!(!v4.iter().any(|x| x.dst == r.dst || x.dst == dflt.dst));
        assert!(!nl
            .routes(Family::V6)
            .unwrap()
            .iter()
            .any(|x| x.dst == r6.dst));
        let e = nl.route_del(&r).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let out = ip(&["route", "show", "10.100.0.0/16"]);
        assert!(out.stdout.is_empty());
    });
}

#[test]
fn netns_open_identity_and_run() {
    sandbox(|| {
        let dir = Path::new(RUN_NETNS);
        let pin = create_pinned(dir, "n1").unwrap();
        let e = create_pinned(dir, "n1").unwrap_err();
        assert!(e.is_exists(), "{e}");

        std::fs::write("/run/plainfile", b"x").unwrap();
        let e = NetNs::open(Path::new("/run/plainfile")).unwrap_err();
        assert!(matches!(e, Error::NotNetns { .. }), "{e}");
        assert!(e.to_string().contains("unknown FS magic"), "{e}");
        let e = NetNs::open(Path::new("/run/netns/missing")).unwrap_err();
        assert!(e.is_not_found());
        assert!(e.to_string().contains("/run/netns/missing"));

        let a = NetNs::open(&pin).unwrap();
        let b = NetNs::open(&pin).unwrap();
        let me = NetNs::current().unwrap();
        assert!(a.same_as(&b).unwrap());
        assert!(!a.same_as(&me).unwrap());
        let inside = a.run(|| NetNs::current().unwrap()).unwrap();
        assert!(inside.same_as(&a).unwrap());
        // The caller's thread never moved.
        assert!(NetNs::current().unwrap().same_as(&me).unwrap());

        // A sysctl written inside n1 is visible only there.
        assert_eq!(sysctl::read("net.ipv4.ip_forward").unwrap(), "0");
        let wrote = a
            .run(|| sysctl::write_if_different("net/ipv4/ip_forward", "1"))
            .unwrap()
            .unwrap();
        assert!(wrote);
        assert_eq!(
            a.run(|| sysctl::read("net.ipv4.ip_forward"))
                .unwrap()
                .unwrap(),
            "1"
        );
        assert!(!a
            .run(|| sysctl::write_if_different("net.ipv4.ip_forward", "1"))
            .unwrap()
            .unwrap());
        assert_eq!(sysctl::read("net.ipv4.ip_forward").unwrap(), "0");
        let out = ip(&[
            "netns",
            "exec",
            "n1",
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

        // `ip netns` sees our pin as a namespace, and ours sees its pins.
        assert!(ip(&["netns", "add", "fromip"]).status.success());
        assert_eq!(
            list_pinned(dir).unwrap(),
            vec!["fromip".to_string(), "n1".to_string()]
        );
        assert!(NetNs::open(&dir.join("fromip")).is_ok());
        drop((a, b, inside));
        delete_pinned(dir, "n1").unwrap();
        delete_pinned(dir, "fromip").unwrap();
        assert!(list_pinned(dir).unwrap().is_empty());
    });
}
