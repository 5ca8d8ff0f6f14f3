//! `bridge` + `host-local` against the real kernel and real traffic, each test in its own
//! private namespace. Every test that tears down ends with [`assert_nothing_left`]. The
//! behaviours covered are listed in docs/scenarios.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use integration_tests::{lease_files, sandbox, CniCall, CniOutput, Sandbox};
use serde_json::{json, Value};

const NET: &str = "brnet";

fn ipam(sb: &Sandbox, subnet: &str) -> Value {
    json!({"type": "host-local", "subnet": subnet, "dataDir": sb.dir("ipam")})
}

fn conf(sb: &Sandbox, extra: &Value) -> Value {
    let mut c = json!({"cniVersion": "1.1.0", "name": NET, "type": "bridge", "bridge": "cni0",
                       "isGateway": true, "ipam": ipam(sb, "10.22.0.0/24")});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn call(verb: &str, cid: &str, ns: &Path, c: &Value) -> CniOutput {
    CniCall::new("bridge", verb)
        .attachment(cid, ns, "eth0")
        .conf(c)
        .run()
}

fn with_prev(c: &Value, prev: &Value) -> Value {
    let mut c = c.clone();
    c["prevResult"] = prev.clone();
    c
}

fn leases(sb: &Sandbox) -> Vec<String> {
    lease_files(&sb.scratch().join("ipam").join(NET))
}

/// The shared "nothing left" check for network `network` (host-local data under the sandbox's
/// `ipam` directory).
fn assert_nothing_left_on(sb: &Sandbox, network: &str) {
    sb.assert_nothing_left(network, &sb.scratch().join("ipam"));
}

/// [`assert_nothing_left_on`] the test network.
fn assert_nothing_left(sb: &Sandbox) {
    assert_nothing_left_on(sb, NET);
}

fn host_veths(sb: &Sandbox) -> Vec<String> {
    sb.link_names(None)
        .into_iter()
        .filter(|n| n.starts_with("veth"))
        .collect()
}

/// A sysctl's value in the host or a named namespace; the read must succeed.
fn sysctl_in(sb: &Sandbox, ns: Option<&str>, key: &str) -> String {
    let cmd = format!("cat /proc/sys/{key}");
    let out = match ns {
        Some(ns) => sb.exec_in(ns, &cmd),
        None => sb.try_sh(&cmd),
    };
    assert!(
        out.status.success(),
        "cannot read {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether our nftables table mentions `addr` (a table that does not exist mentions nothing;
/// an `nft` that fails otherwise fails the test).
fn nft_masq_present(sb: &Sandbox, addr: &str) -> bool {
    sb.nft_table().contains(addr)
}

#[test]
fn add_builds_bridge_veth_addresses_and_sysctls() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let r = call("ADD", "cid1", &ns, &conf(sb, &json!({}))).ok();
        let ifaces = r["interfaces"].as_array().unwrap();
        assert_eq!(ifaces.len(), 3, "{r}");
        assert_eq!(ifaces[0]["name"], "cni0");
        let host_veth = ifaces[1]["name"].as_str().unwrap().to_string();
        assert!(
            host_veth.starts_with("veth") && host_veth.len() == 12,
            "{host_veth}"
        );
        assert_eq!(ifaces[2]["name"], "eth0");
        assert_eq!(ifaces[2]["sandbox"], ns.to_str().unwrap());
        assert_eq!(r["ips"][0]["address"], "10.22.0.2/24");
        assert_eq!(r["ips"][0]["gateway"], "10.22.0.1");
        assert_eq!(r["ips"][0]["interface"], 2);

        // Kernel: bridge up with the gateway, host veth enslaved, container end addressed.
        let br = sb.link(None, "cni0").unwrap();
        assert_eq!(br["linkinfo"]["info_kind"], "bridge");
        assert!(br["flags"].as_array().unwrap().contains(&json!("UP")));
        assert_eq!(sb.global_addrs(None, "cni0"), vec!["10.22.0.1/24"]);
        let hv = sb.link(None, &host_veth).unwrap();
        assert_eq!(hv["master"], "cni0");
        assert_eq!(hv["operstate"], "UP");
        assert!(sb
            .addrs(Some("c1"), "eth0")
            .contains(&"10.22.0.2/24".to_string()));
        let c_eth0 = sb.link(Some("c1"), "eth0").unwrap();
        assert_eq!(c_eth0["address"], ifaces[2]["mac"]);
        assert_eq!(br["address"], ifaces[0]["mac"]);
        // Bridge MAC pinned (addr_assign_type 3 = set by user space), forwarding on.
        let aat = std::fs::read_to_string("/sys/class/net/cni0/addr_assign_type").unwrap();
        assert_eq!(aat.trim(), "3");
        assert_eq!(sysctl_in(sb, None, "net/ipv4/ip_forward"), "1");
        // Sysctls of the reference.
        assert_eq!(sysctl_in(sb, None, "net/ipv6/conf/cni0/accept_ra"), "0");
        assert_eq!(
            sysctl_in(sb, None, &format!("net/ipv6/conf/{host_veth}/accept_ra")),
            "0"
        );
        assert_eq!(
            sysctl_in(sb, Some("c1"), "net/ipv6/conf/eth0/accept_dad"),
            "0"
        );
        assert_eq!(
            sysctl_in(sb, Some("c1"), "net/ipv4/conf/eth0/arp_notify"),
            "1"
        );
        assert_eq!(leases(sb), vec!["10.22.0.2"]);
        call("DEL", "cid1", &ns, &conf(sb, &json!({}))).ok();
        assert!(sb.link(Some("c1"), "eth0").is_none());
        assert_nothing_left(sb);
    });
}

#[test]
fn is_default_gateway_installs_the_default_route() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let r = call(
            "ADD",
            "cid1",
            &ns,
            &conf(sb, &json!({"isDefaultGateway": true})),
        )
        .ok();
        assert!(
            r["routes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|rt| rt["dst"] == "0.0.0.0/0" && rt["gw"] == "10.22.0.1"),
            "{r}"
        );
        let routes = sb.sh("ip -n c1 route show default");
        assert!(
            routes.contains("default via 10.22.0.1 dev eth0"),
            "{routes}"
        );
    });
}

#[test]
fn hairpin_and_mtu_apply_and_hairpin_excludes_promisc() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let r = call(
            "ADD",
            "cid1",
            &ns,
            &conf(sb, &json!({"hairpinMode": true, "mtu": 1400})),
        )
        .ok();
        let hv = r["interfaces"][1]["name"].as_str().unwrap();
        let hv_link = sb.link(None, hv).unwrap();
        assert_eq!(
            hv_link["linkinfo"]["info_slave_data"]["hairpin"], true,
            "{hv_link}"
        );
        assert_eq!(hv_link["mtu"], 1400);
        assert_eq!(sb.link(None, "cni0").unwrap()["mtu"], 1400);
        assert_eq!(sb.link(Some("c1"), "eth0").unwrap()["mtu"], 1400);

        let ns2 = sb.netns("c2");
        let (_, msg) = call(
            "ADD",
            "cid2",
            &ns2,
            &conf(sb, &json!({"hairpinMode": true, "promiscMode": true})),
        )
        .err();
        assert!(
            msg.contains("hairpin") && msg.contains("promiscuous"),
            "{msg}"
        );
    });
}

#[test]
fn existing_bridge_with_another_address_or_a_non_bridge_is_refused() {
    sandbox(|sb| {
        sb.sh("ip link add cni0 type bridge && ip addr add 10.99.0.1/24 dev cni0");
        let ns = sb.netns("c1");
        let (_, msg) = call("ADD", "cid1", &ns, &conf(sb, &json!({}))).err();
        assert!(
            msg.contains("already has an IP address different from 10.22.0.1/24"),
            "{msg}"
        );
        // The failed ADD left nothing: no veth, no lease, no firewall entry.
        assert_nothing_left(sb);
        assert!(sb.link(Some("c1"), "eth0").is_none());
        call(
            "ADD",
            "cid1",
            &ns,
            &conf(sb, &json!({"forceAddress": true})),
        )
        .ok();
        assert_eq!(sb.global_addrs(None, "cni0"), vec!["10.22.0.1/24"]);

        sb.sh("ip link add notbr type veth peer name notbr1");
        let ns2 = sb.netns("c2");
        let (_, msg) = call("ADD", "cid2", &ns2, &conf(sb, &json!({"bridge": "notbr"}))).err();
        assert!(msg.contains("already exists but is not a bridge"), "{msg}");
    });
}

#[test]
fn second_add_with_the_same_ifname_fails_and_keeps_the_first() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        call("ADD", "cid1", &ns, &conf(sb, &json!({}))).ok();
        let (_, msg) = call("ADD", "cid1", &ns, &conf(sb, &json!({}))).err();
        assert!(msg.contains("already exists"), "{msg}");
        assert!(sb
            .addrs(Some("c1"), "eth0")
            .contains(&"10.22.0.2/24".to_string()));
        assert_eq!(leases(sb), vec!["10.22.0.2"]);
        assert_eq!(host_veths(sb).len(), 1);
    });
}

#[test]
fn vlan_config_is_validated_and_follows_kernel_support() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let (code, msg) = call("ADD", "cid1", &ns, &conf(sb, &json!({"vlan": 5000}))).err();
        assert_eq!(code, 7);
        assert!(msg.contains("invalid VLAN ID"), "{msg}");
        let (_, msg) = call(
            "ADD",
            "cid1",
            &ns,
            &conf(sb, &json!({"vlanTrunk": [{"minID": 10, "maxID": 5}]})),
        )
        .err();
        assert!(msg.contains("minID"), "{msg}");
        let (_, msg) = call(
            "ADD",
            "cid1",
            &ns,
            &conf(sb, &json!({"vlanTrunk": [{"minID": 10}]})),
        )
        .err();
        assert!(msg.contains("vlanTrunk"), "{msg}");
        // A valid VLAN needs bridge VLAN filtering; iproute2 tells whether this kernel has it.
        let kernel_has_vlans = sb
            .try_sh("ip link add vlanprobe type bridge vlan_filtering 1")
            .status
            .success();
        let out = call("ADD", "cid1", &ns, &conf(sb, &json!({"vlan": 5})));
        if kernel_has_vlans {
            sb.sh("ip link del vlanprobe");
            out.ok();
            let vlans = sb.sh("bridge -j vlan show");
            assert!(vlans.contains("\"vlan\":5"), "{vlans}");
        } else {
            // Refused by name, before anything was created.
            let (code, msg) = out.err();
            assert_eq!(code, 2);
            assert!(msg.contains("VLAN filtering"), "{msg}");
            assert!(host_veths(sb).is_empty());
        }
        // The runtime's DEL succeeds either way and leaves nothing.
        call("DEL", "cid1", &ns, &conf(sb, &json!({"vlan": 5}))).ok();
        assert_nothing_left(sb);
    });
}

#[test]
fn ip_masq_nftables_entry_added_and_removed() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let c = conf(sb, &json!({"ipMasq": true}));
        call("ADD", "cid1", &ns, &c).ok();
        assert!(
            nft_masq_present(sb, "10.22.0.2"),
            "{}",
            sb.sh("nft list ruleset")
        );
        call("DEL", "cid1", &ns, &c).ok();
        assert!(
            !nft_masq_present(sb, "10.22.0.2"),
            "{}",
            sb.sh("nft list ruleset")
        );
        assert!(sb.link(Some("c1"), "eth0").is_none());
        assert_nothing_left(sb);
        // DEL is idempotent.
        call("DEL", "cid1", &ns, &c).ok();
        assert_nothing_left(sb);
        // The bridge stays.
        assert!(sb.link(None, "cni0").is_some());
    });
}

#[test]
fn ip_masq_iptables_rules_added_and_removed() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let c = conf(sb, &json!({"ipMasq": true, "ipMasqBackend": "iptables"}));
        call("ADD", "cid1", &ns, &c).ok();
        let save = sb.sh("iptables-save -t nat");
        assert!(save.contains("-A POSTROUTING -s 10.22.0.2"), "{save}");
        assert!(
            save.contains(&format!("name: \\\"{NET}\\\" id: \\\"cid1\\\"")),
            "{save}"
        );
        assert_eq!(sb.iptables_entries(NET), 3, "{save}");
        let chain = save
            .lines()
            .find_map(|l| {
                l.strip_prefix(":CNI-")
                    .map(|c| c.split(' ').next().unwrap().to_string())
            })
            .expect("per-container chain");
        call("DEL", "cid1", &ns, &c).ok();
        let save = sb.sh("iptables-save -t nat");
        assert!(!save.contains("10.22.0.2"), "{save}");
        assert!(
            !save.contains(&format!("CNI-{chain}")),
            "chain left: {save}"
        );
        assert_nothing_left(sb);
    });
}

#[test]
fn del_without_namespace_releases_everything() {
    sandbox(|sb| {
        let c = conf(sb, &json!({"ipMasq": true}));
        // Namespace deleted before DEL.
        let ns = sb.netns("c1");
        call("ADD", "cid1", &ns, &c).ok();
        assert!(nft_masq_present(sb, "10.22.0.2"));
        sb.sh("ip netns del c1");
        call("DEL", "cid1", &ns, &c).ok();
        // Empty CNI_NETNS (containerd on every later Stop/Remove).
        let ns2 = sb.netns("c2");
        call("ADD", "cid2", &ns2, &c).ok();
        assert!(nft_masq_present(sb, "10.22.0.3"));
        CniCall::new("bridge", "DEL")
            .attachment("cid2", &ns2, "eth0")
            .env("CNI_NETNS", "")
            .conf(&c)
            .run()
            .ok();
        assert!(leases(sb).is_empty(), "{:?}", leases(sb));
        // Unlike the reference (plugins#810), the masquerade entries went too.
        assert!(!nft_masq_present(sb, "10.22.0.2"));
        assert!(!nft_masq_present(sb, "10.22.0.3"));
        // c2's namespace still holds its eth0 (DEL could not enter it): removing the
        // namespace takes the veth pair with it.
        sb.sh("ip netns del c2");
        assert_nothing_left(sb);
    });
}

#[test]
fn check_passes_on_the_add_result_and_names_a_missing_address() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let c = conf(sb, &json!({"isDefaultGateway": true, "ipMasq": true}));
        let r = call("ADD", "cid1", &ns, &c).ok();
        let out = call("CHECK", "cid1", &ns, &with_prev(&c, &r));
        out.ok();
        assert!(out.stdout.is_empty());
        let (_, msg) = call("CHECK", "cid1", &ns, &c).err();
        assert!(msg.contains("prevResult"), "{msg}");
        sb.sh("ip -n c1 addr del 10.22.0.2/24 dev eth0");
        let (_, msg) = call("CHECK", "cid1", &ns, &with_prev(&c, &r)).err();
        assert!(
            msg.contains("Failed to match addr 10.22.0.2/24 on interface eth0"),
            "{msg}"
        );
        call("DEL", "cid1", &ns, &with_prev(&c, &r)).ok();
        assert_nothing_left(sb);
    });
}

#[test]
fn l2_only_bridge_without_ipam_attaches_checks_and_detaches() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let c = conf(sb, &json!({"ipam": null, "isGateway": false}));
        let r = call("ADD", "cid1", &ns, &c).ok();
        assert!(
            r.get("ips").is_none() || r["ips"].as_array().unwrap().is_empty(),
            "{r}"
        );
        let l = sb.link(Some("c1"), "eth0").unwrap();
        assert!(l["flags"].as_array().unwrap().contains(&json!("UP")));
        call("CHECK", "cid1", &ns, &with_prev(&c, &r)).ok();
        call("DEL", "cid1", &ns, &c).ok();
        assert!(sb.link(Some("c1"), "eth0").is_none());
        assert_nothing_left(sb);
    });
}

#[test]
fn missing_ipam_plugin_fails_and_leaves_nothing() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let c = conf(sb, &json!({"ipam": {"type": "no-such-ipam"}}));
        let (_, msg) = call("ADD", "cid1", &ns, &c).err();
        assert!(msg.contains("no-such-ipam"), "{msg}");
        // The reference leaves a DOWN veth in the container here; we leave nothing.
        assert!(sb.link(Some("c1"), "eth0").is_none());
        assert_nothing_left(sb);
    });
}

#[test]
fn static_mac_from_runtime_config_or_cni_args_and_dns_in_the_result() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let c = conf(
            sb,
            &json!({"runtimeConfig": {"mac": "c2:11:22:33:44:55"},
                   "dns": {"nameservers": ["10.22.0.53"], "search": ["svc.local"]}}),
        );
        let r = call("ADD", "cid1", &ns, &c).ok();
        assert_eq!(
            sb.link(Some("c1"), "eth0").unwrap()["address"],
            "c2:11:22:33:44:55"
        );
        assert_eq!(r["interfaces"][2]["mac"], "c2:11:22:33:44:55");
        assert_eq!(r["dns"]["nameservers"], json!(["10.22.0.53"]));
        let ns2 = sb.netns("c2");
        let (_, msg) = call(
            "ADD",
            "cid2",
            &ns2,
            &conf(sb, &json!({"runtimeConfig": {"mac": "zz"}})),
        )
        .err();
        assert!(msg.contains("zz"), "{msg}");
        // CNI_ARGS MAC works too (Podman passes static MACs only this way).
        let ns3 = sb.netns("c3");
        CniCall::new("bridge", "ADD")
            .attachment("cid3", &ns3, "eth0")
            .env("CNI_ARGS", "IgnoreUnknown=1;MAC=c2:00:00:00:00:03")
            .conf(&conf(sb, &json!({})))
            .run()
            .ok();
        assert_eq!(
            sb.link(Some("c3"), "eth0").unwrap()["address"],
            "c2:00:00:00:00:03"
        );
        call("DEL", "cid1", &ns, &c).ok();
        call("DEL", "cid3", &ns3, &conf(sb, &json!({}))).ok();
        assert_nothing_left(sb);
    });
}

#[test]
fn dual_stack_with_traffic_over_ipv6() {
    sandbox(|sb| {
        let dual = json!({"type": "host-local", "dataDir": sb.dir("ipam"),
            "ranges": [[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd00:22::/64"}]]});
        let c = conf(
            sb,
            &json!({"ipam": dual, "isDefaultGateway": true, "ipMasq": true}),
        );
        let ns1 = sb.netns("c1");
        let ns2 = sb.netns("c2");
        let r = call("ADD", "cid1", &ns1, &c).ok();
        call("ADD", "cid2", &ns2, &c).ok();
        let ips: Vec<&str> = r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap())
            .collect();
        assert_eq!(ips, vec!["10.22.0.2/24", "fd00:22::2/64"]);
        let br = sb.global_addrs(None, "cni0");
        assert!(
            br.contains(&"10.22.0.1/24".to_string()) && br.contains(&"fd00:22::1/64".to_string()),
            "{br:?}"
        );
        assert_eq!(sysctl_in(sb, None, "net/ipv6/conf/all/forwarding"), "1");
        assert!(sb
            .sh("ip -n c1 -6 route show default")
            .contains("via fd00:22::1"));
        assert!(sb.ping("c1", "fd00:22::3"), "IPv6 pod to pod");
        assert!(sb.ping("c1", "10.22.0.3"), "IPv4 pod to pod");
        assert!(nft_masq_present(sb, "fd00:22::2"));
        call("DEL", "cid1", &ns1, &c).ok();
        call("DEL", "cid2", &ns2, &c).ok();
        assert!(!nft_masq_present(sb, "fd00:22::2"));
        assert_nothing_left(sb);
    });
}

#[test]
fn status_is_delegated_to_ipam() {
    sandbox(|sb| {
        CniCall::new("bridge", "STATUS")
            .conf(&conf(sb, &json!({})))
            .run()
            .ok();
        // A /30 has one address: after one ADD the IPAM reports exhaustion (code 50).
        let small = conf(sb, &json!({"ipam": ipam(sb, "10.23.0.0/30")}));
        let ns = sb.netns("c1");
        call("ADD", "cid1", &ns, &small).ok();
        let (code, _) = CniCall::new("bridge", "STATUS").conf(&small).run().err();
        assert_eq!(code, 50);
        CniCall::new("bridge", "STATUS")
            .conf(&conf(sb, &json!({"ipam": null})))
            .run()
            .ok();
        call("DEL", "cid1", &ns, &small).ok();
        CniCall::new("bridge", "STATUS").conf(&small).run().ok();
        assert_nothing_left(sb);
    });
}

#[test]
fn traffic_pod_to_pod_and_out_through_masquerade() {
    sandbox(|sb| {
        // A "remote" host that knows no route back to the pod subnet: only masquerade works.
        sb.netns("remote");
        sb.sh("ip link add up0 type veth peer name up1 netns remote");
        sb.sh("ip addr add 203.0.113.1/24 dev up0 && ip link set up0 up");
        sb.sh("ip -n remote addr add 203.0.113.2/24 dev up1 && ip -n remote link set up1 up");
        let c = conf(sb, &json!({"isDefaultGateway": true, "ipMasq": true}));
        let ns1 = sb.netns("c1");
        let ns2 = sb.netns("c2");
        call("ADD", "cid1", &ns1, &c).ok();
        call("ADD", "cid2", &ns2, &c).ok();
        assert!(sb.ping("c1", "10.22.0.3"), "pod to pod");
        assert!(sb.ping("c2", "10.22.0.2"), "pod to pod, reverse");
        assert!(
            sb.ping("c1", "203.0.113.2"),
            "pod to remote through masquerade"
        );
        // Without masquerade the same packet has no way back.
        let plain = conf(
            sb,
            &json!({"isDefaultGateway": true, "ipam": ipam(sb, "10.24.0.0/24"), "bridge": "cni1"}),
        );
        let ns3 = sb.netns("c3");
        call("ADD", "cid3", &ns3, &plain).ok();
        assert!(
            !sb.ping("c3", "203.0.113.2"),
            "reached remote without masquerade?"
        );
        assert!(nft_masq_present(sb, "10.22.0.2"));
        call("DEL", "cid1", &ns1, &c).ok();
        assert!(!nft_masq_present(sb, "10.22.0.2"));
        assert!(!sb.ping("c1", "203.0.113.2"));
        call("DEL", "cid2", &ns2, &c).ok();
        call("DEL", "cid3", &ns3, &plain).ok();
        assert_nothing_left(sb);
    });
}

#[test]
fn gc_removes_stale_attachments_only() {
    sandbox(|sb| {
        let c = conf(sb, &json!({"ipMasq": true}));
        let ns1 = sb.netns("c1");
        let ns2 = sb.netns("c2");
        call("ADD", "cid1", &ns1, &c).ok();
        call("ADD", "cid2", &ns2, &c).ok();
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "cid2", "ifname": "eth0"}]);
        CniCall::new("bridge", "GC").conf(&gc).run().ok();
        assert_eq!(leases(sb), vec!["10.22.0.3"]);
        assert!(!nft_masq_present(sb, "10.22.0.2"));
        assert!(nft_masq_present(sb, "10.22.0.3"));
        // GC released cid1's address and masquerade; DEL still removes its interface.
        call("DEL", "cid1", &ns1, &c).ok();
        call("DEL", "cid2", &ns2, &c).ok();
        assert_nothing_left(sb);
    });
}

/// (set, value, comment) of every element of table `bridge rcni` (macspoofchk), via `nft -j`.
/// Empty when the table does not exist; any other `nft` failure fails the test.
fn spoof_elems(_sb: &Sandbox) -> Vec<(String, String, String)> {
    let Some(v) = testbox::nft_table("bridge", "rcni") else {
        return Vec::new();
    };
    let mut res = Vec::new();
    for item in v["nftables"].as_array().unwrap() {
        let Some(set) = item.get("set") else { continue };
        for e in set["elem"].as_array().cloned().unwrap_or_default() {
            let el = &e["elem"];
            let val = match &el["val"] {
                Value::String(s) => s.clone(),
                other => other["concat"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(" . "),
            };
            res.push((
                set["name"].as_str().unwrap().to_string(),
                val,
                el["comment"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    res
}

#[test]
fn macspoofchk_drops_spoofed_frames() {
    sandbox(|sb| {
        let c = conf(sb, &json!({"macspoofchk": true}));
        let ns1 = sb.netns("c1");
        let ns2 = sb.netns("c2");
        let r1 = call("ADD", "cid1", &ns1, &c).ok();
        let r2 = call("ADD", "cid2", &ns2, &c).ok();
        let veth1 = r1["interfaces"][1]["name"].as_str().unwrap().to_string();
        let veth2 = r2["interfaces"][1]["name"].as_str().unwrap().to_string();
        let mac1 = r1["interfaces"][2]["mac"].as_str().unwrap().to_string();
        let listing = sb.sh("nft list table bridge rcni");
        assert!(
            listing.contains(
                "iifname @spoofchk_ports iifname . ether saddr != @spoofchk_allowed drop"
            ),
            "{listing}"
        );
        let elems = spoof_elems(sb);
        assert!(
            elems.iter().any(|e| e.0 == "spoofchk_allowed"
                && e.1 == format!("{veth1} . {mac1}")
                && e.2.contains("id: cid1, if: eth0")),
            "{elems:?}"
        );
        assert!(elems
            .iter()
            .any(|e| e.0 == "spoofchk_ports" && e.1 == veth2));
        // The reference's table is not ours to create.
        assert!(!sb.sh("nft list tables").contains("bridge nat"));
        call("CHECK", "cid1", &ns1, &with_prev(&c, &r1)).ok();

        assert!(sb.ping("c1", "10.22.0.3"), "c1 to c2 with its own MAC");
        // Spoof c1's MAC: its frames no longer pass the bridge.
        sb.sh("ip -n c1 link set eth0 address 02:00:00:00:00:99");
        sb.sh("ip -n c2 neigh flush all");
        sb.sh("ip -n c1 neigh flush all");
        assert!(!sb.ping("c1", "10.22.0.3"), "spoofed frames were forwarded");
        assert!(
            !sb.ping("c2", "10.22.0.2"),
            "replies with a spoofed MAC were forwarded"
        );
        // CHECK notices the interface no longer has the MAC of the ADD, and says so.
        let (code, msg) = call("CHECK", "cid1", &ns1, &with_prev(&c, &r1)).err();
        assert_eq!(code, 999, "{msg}");
        assert!(
            msg.contains(&format!(
                "interface eth0 MAC 02:00:00:00:00:99 does not match {mac1} from prevResult"
            )),
            "{msg}"
        );
        // Control: the original MAC passes again, so the drop above was the spoof check.
        sb.sh(&format!("ip -n c1 link set eth0 address {mac1}"));
        sb.sh("ip -n c2 neigh flush all");
        assert!(sb.ping("c1", "10.22.0.3"), "original MAC must pass again");

        // A network without macspoofchk on another bridge is unaffected.
        let plain = conf(
            sb,
            &json!({"bridge": "cni1", "ipam": ipam(sb, "10.24.0.0/24")}),
        );
        let ns3 = sb.netns("c3");
        let ns4 = sb.netns("c4");
        let r3 = CniCall::new("bridge", "ADD")
            .attachment("cid3", &ns3, "eth0")
            .conf(&plain)
            .run()
            .ok();
        CniCall::new("bridge", "ADD")
            .attachment("cid4", &ns4, "eth0")
            .conf(&plain)
            .run()
            .ok();
        let veth3 = r3["interfaces"][1]["name"].as_str().unwrap().to_string();
        assert!(!spoof_elems(sb).iter().any(|e| e.1.starts_with(&veth3)));
        sb.sh("ip -n c3 link set eth0 address 02:00:00:00:00:98");
        assert!(sb.ping("c3", "10.24.0.3"), "no macspoofchk on cni1");

        // DEL removes c1's entries only; the rule stays for c2.
        call("DEL", "cid1", &ns1, &c).ok();
        let elems = spoof_elems(sb);
        assert!(
            !elems
                .iter()
                .any(|e| e.1.starts_with(&veth1) || e.2.contains("id: cid1,")),
            "{elems:?}"
        );
        assert_eq!(elems.len(), 2, "{elems:?}");
        call("CHECK", "cid2", &ns2, &with_prev(&c, &r2)).ok();
        call("DEL", "cid1", &ns1, &c).ok();
        // DEL with an empty CNI_NETNS still finds c2's entries by owner.
        CniCall::new("bridge", "DEL")
            .attachment("cid2", &ns2, "eth0")
            .env("CNI_NETNS", "")
            .conf(&c)
            .run()
            .ok();
        assert!(spoof_elems(sb).is_empty(), "{:?}", spoof_elems(sb));
        sb.sh("ip netns del c2");
        for (cid, ns) in [("cid3", &ns3), ("cid4", &ns4)] {
            CniCall::new("bridge", "DEL")
                .attachment(cid, ns, "eth0")
                .conf(&plain)
                .run()
                .ok();
        }
        assert_nothing_left(sb);
    });
}

#[test]
fn macspoofchk_rollback_and_gc() {
    sandbox(|sb| {
        // An ADD failing after the entry was added (IPAM missing) leaves no element behind.
        let bad = conf(
            sb,
            &json!({"macspoofchk": true, "ipam": {"type": "no-such-ipam"}}),
        );
        let ns1 = sb.netns("c1");
        call("ADD", "cid1", &ns1, &bad).err();
        assert!(spoof_elems(sb).is_empty(), "{:?}", spoof_elems(sb));
        assert_nothing_left(sb);
        // GC keeps only the valid attachments.
        let c = conf(sb, &json!({"macspoofchk": true}));
        let ns2 = sb.netns("c2");
        call("ADD", "cid1", &ns1, &c).ok();
        call("ADD", "cid2", &ns2, &c).ok();
        assert_eq!(spoof_elems(sb).len(), 4);
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "cid2", "ifname": "eth0"}]);
        CniCall::new("bridge", "GC").conf(&gc).run().ok();
        let elems = spoof_elems(sb);
        assert_eq!(elems.len(), 2, "{elems:?}");
        assert!(elems.iter().all(|e| e.2.contains("id: cid2,")), "{elems:?}");
        call("DEL", "cid1", &ns1, &c).ok();
        call("DEL", "cid2", &ns2, &c).ok();
        assert!(spoof_elems(sb).is_empty(), "{:?}", spoof_elems(sb));
        assert_nothing_left(sb);
    });
}

/// A container joins a second bridge network (`podman network connect`, Multus): the second
/// ADD must not fail on the default route the first network installed. As the reference does,
/// the route that exists wins; the second network's own routes and addresses are installed,
/// CHECK passes for both, and DEL of the second network leaves the first one's route alone.
#[test]
fn second_network_keeps_the_first_default_route() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let net_a = conf(sb, &json!({"isDefaultGateway": true}));
        let mut net_b = conf(
            sb,
            &json!({"isDefaultGateway": true, "bridge": "cni1",
                    "ipam": ipam(sb, "10.23.0.0/24")}),
        );
        net_b["name"] = json!("brnet2");
        let ra = call("ADD", "cid1", &ns, &net_a).ok();
        let rb = CniCall::new("bridge", "ADD")
            .attachment("cid1", &ns, "eth1")
            .conf(&net_b)
            .run()
            .ok();
        assert_eq!(rb["ips"][0]["address"], "10.23.0.2/24", "{rb}");
        assert!(sb
            .addrs(Some("c1"), "eth1")
            .contains(&"10.23.0.2/24".to_string()));
        let default = sb.sh("ip -n c1 route show default");
        assert_eq!(
            default.trim(),
            "default via 10.22.0.1 dev eth0",
            "{default}"
        );
        // Both networks carry traffic: each gateway answers on its own interface.
        assert!(sb.ping("c1", "10.22.0.1"));
        assert!(sb.ping("c1", "10.23.0.1"));

        for (prev, ifname, c) in [(&ra, "eth0", &net_a), (&rb, "eth1", &net_b)] {
            CniCall::new("bridge", "CHECK")
                .attachment("cid1", &ns, ifname)
                .conf(&with_prev(c, prev))
                .run()
                .ok();
        }
        CniCall::new("bridge", "DEL")
            .attachment("cid1", &ns, "eth1")
            .conf(&with_prev(&net_b, &rb))
            .run()
            .ok();
        assert!(sb.link(Some("c1"), "eth1").is_none());
        let default = sb.sh("ip -n c1 route show default");
        assert_eq!(
            default.trim(),
            "default via 10.22.0.1 dev eth0",
            "{default}"
        );
        call("DEL", "cid1", &ns, &with_prev(&net_a, &ra)).ok();
        assert_nothing_left(sb);
        assert_nothing_left_on(sb, "brnet2");
    });
}

/// bridge links our host-local and runs it in its own process, but only when the `host-local`
/// CNI_PATH names is ours: a user's own binary in front of it, or one that replaces ours in
/// place, is exec'd as always. Proven with a wrapper script that logs every call it gets.
#[test]
fn in_process_ipam_only_when_cni_path_names_our_host_local() {
    use std::os::unix::fs::PermissionsExt;
    sandbox(|sb| {
        let ours = integration_tests::bin_dir().join("host-local");
        let user_dir = sb.dir("user-bin");
        let log = sb.scratch().join("user-host-local.log");
        let wrapper = format!(
            "#!/bin/sh\necho \"$CNI_COMMAND $CNI_CONTAINERID\" >> {}\nexec {} \"$@\"\n",
            log.display(),
            ours.display()
        );
        let install_user_binary = |dir: &Path| {
            let p = dir.join("host-local");
            let tmp = dir.join(".host-local.new");
            std::fs::write(&tmp, &wrapper).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &p).unwrap();
        };
        install_user_binary(&user_dir);
        let path = |first: &Path| {
            format!(
                "{}:{}",
                first.display(),
                integration_tests::bin_dir().display()
            )
        };
        let logged = || std::fs::read_to_string(&log).unwrap_or_default();

        // 1. The user's host-local comes first in CNI_PATH: it runs for ADD and DEL.
        let ns = sb.netns("c1");
        let c = conf(sb, &json!({}));
        let r = call_with_path("ADD", "cid1", &ns, &c, &path(&user_dir)).ok();
        assert_eq!(r["ips"][0]["address"], "10.22.0.2/24");
        call_with_path("DEL", "cid1", &ns, &with_prev(&c, &r), &path(&user_dir)).ok();
        assert_eq!(logged(), "ADD cid1\nDEL cid1\n");

        // 2. Ours comes first (a copy, as an install would make): no exec, same outcome.
        let mine = sb.dir("our-bin");
        std::fs::copy(&ours, mine.join("host-local")).unwrap();
        let ns2 = sb.netns("c2");
        let r = call_with_path("ADD", "cid2", &ns2, &c, &path(&mine)).ok();
        // Round robin goes on from the first ADD's lease, as the exec'd binary would.
        assert_eq!(r["ips"][0]["address"], "10.22.0.3/24");
        assert_eq!(leases(sb), ["10.22.0.3"]);
        assert!(
            Path::new("/run/rcni/builtin-host-local").exists(),
            "verdict cached"
        );
        call_with_path("DEL", "cid2", &ns2, &with_prev(&c, &r), &path(&mine)).ok();
        assert!(leases(sb).is_empty());
        assert_eq!(
            logged(),
            "ADD cid1\nDEL cid1\n",
            "the wrapper was not involved"
        );

        // 3. The user replaces our copy in place: the cached verdict no longer applies.
        install_user_binary(&mine);
        let ns3 = sb.netns("c3");
        let r = call_with_path("ADD", "cid3", &ns3, &c, &path(&mine)).ok();
        call_with_path("DEL", "cid3", &ns3, &with_prev(&c, &r), &path(&mine)).ok();
        assert_eq!(logged(), "ADD cid1\nDEL cid1\nADD cid3\nDEL cid3\n");
        assert_nothing_left(sb);
    });
}

fn call_with_path(verb: &str, cid: &str, ns: &Path, c: &Value, cni_path: &str) -> CniOutput {
    CniCall::new("bridge", verb)
        .env("CNI_PATH", cni_path)
        .attachment(cid, ns, "eth0")
        .conf(c)
        .run()
}
