//! `tuning` and `firewall` meta plugins against the real kernel (loopback is covered in
//! modes.rs; the behaviours are listed in docs/scenarios.md), and Podman's default chain
//! `bridge → portmap → firewall → tuning` through the libcni-style runtime. Every test runs in
//! its own private network + mount namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use cni::config::NetConfList;
use cni::runtime::{CniConfig, RuntimeConf};
use integration_tests::{bin_dir, sandbox, CniCall, CniOutput, CniState, Sandbox};
use serde_json::{json, Value};

fn call(plugin: &str, verb: &str, cid: &str, ns: &Path, conf: &Value) -> CniOutput {
    CniCall::new(plugin, verb)
        .attachment(cid, ns, "eth0")
        .conf(conf)
        .run()
}

fn with_prev(c: &Value, prev: &Value) -> Value {
    let mut c = c.clone();
    c["prevResult"] = prev.clone();
    c
}

fn link(sb: &Sandbox, ns: &str, dev: &str) -> Value {
    sb.link(Some(ns), dev)
        .unwrap_or_else(|| panic!("{dev} missing in {ns}"))
}

fn has_flag(l: &Value, flag: &str) -> bool {
    l["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f.as_str() == Some(flag))
}

/// A sysctl's value inside `ns`; the read must succeed.
fn sysctl_in(sb: &Sandbox, ns: &str, key: &str) -> String {
    let out = sb.exec_in(ns, &format!("cat /proc/sys/{key}"));
    assert!(
        out.status.success(),
        "cannot read {key} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// tuning

/// A container namespace `ns` holding `eth0` (veth peer of host `vh-<ns>`), as bridge leaves it.
fn veth_container(sb: &Sandbox, ns: &str) -> (std::path::PathBuf, Value) {
    let path = sb.netns(ns);
    sb.sh(&format!(
        "ip link add vh-{ns} type veth peer name eth0 netns {ns} && ip link set vh-{ns} up && ip -n {ns} link set eth0 up"
    ));
    let mac = link(sb, ns, "eth0")["address"]
        .as_str()
        .unwrap()
        .to_string();
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "br0", "mac": "02:00:00:00:00:01"},
                       {"name": "eth0", "mac": mac, "sandbox": path.to_str().unwrap()}],
        "ips": [{"interface": 1, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}]});
    (path, prev)
}

#[test]
fn tuning_applies_backs_up_and_restores() {
    sandbox(|sb| {
        let (ns, prev) = veth_container(sb, "t1");
        let before = link(sb, "t1", "eth0");
        let data = sb.dir("tuning");
        let conf = json!({"cniVersion": "1.0.0", "name": "tnet", "type": "tuning",
            "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net.ipv4.conf.all.arp_announce": "2"},
            "mac": "c2:11:22:33:44:55", "mtu": 1400, "promisc": true, "allmulti": true,
            "txQLen": 500, "dataDir": data});
        let res = call("tuning", "ADD", "cid1", &ns, &with_prev(&conf, &prev)).ok();
        // result MAC rewritten in the matching interface only
        assert_eq!(res["interfaces"][1]["mac"], "c2:11:22:33:44:55");
        assert_eq!(res["interfaces"][0]["mac"], "02:00:00:00:00:01");
        let l = link(sb, "t1", "eth0");
        assert_eq!(l["address"], "c2:11:22:33:44:55");
        assert_eq!(l["mtu"], 1400);
        assert!(has_flag(&l, "PROMISC"), "{l}");
        assert!(has_flag(&l, "ALLMULTI"), "{l}");
        assert_eq!(l["txqlen"], 500);
        assert_eq!(
            sysctl_in(sb, "t1", "net/ipv4/conf/eth0/arp_filter"),
            "1",
            "IFNAME substituted"
        );
        assert_eq!(sysctl_in(sb, "t1", "net/ipv4/conf/all/arp_announce"), "2");
        // the host namespace is untouched
        assert_eq!(
            String::from_utf8_lossy(
                &sb.try_sh("cat /proc/sys/net/ipv4/conf/all/arp_announce")
                    .stdout
            )
            .trim(),
            "0"
        );
        let backup = data.join("cid1_eth0.json");
        let saved: Value = serde_json::from_slice(&std::fs::read(&backup).unwrap()).unwrap();
        assert_eq!(saved["mac"], before["address"]);
        assert_eq!(saved["mtu"], before["mtu"]);
        assert_eq!(saved["promisc"], false);
        assert_eq!(saved["allmulti"], false);
        assert_eq!(saved["txqlen"], before["txqlen"]);

        call("tuning", "CHECK", "cid1", &ns, &with_prev(&conf, &res)).ok();
        sb.sh("ip -n t1 link set eth0 txqueuelen 700");
        let (_, msg) = call("tuning", "CHECK", "cid1", &ns, &with_prev(&conf, &res)).err();
        assert!(msg.contains("tx queue length"), "{msg}");
        sb.sh("ip -n t1 link set eth0 txqueuelen 500");
        sb.sh("ip netns exec t1 sh -c 'echo 0 > /proc/sys/net/ipv4/conf/eth0/arp_filter'");
        let (_, msg) = call("tuning", "CHECK", "cid1", &ns, &with_prev(&conf, &res)).err();
        assert!(msg.contains("arp_filter"), "{msg}");
        sb.sh("ip netns exec t1 sh -c 'echo 1 > /proc/sys/net/ipv4/conf/eth0/arp_filter'");

        // DEL restores mac/mtu/promisc/allmulti/txqlen, not sysctls; twice is fine
        call("tuning", "DEL", "cid1", &ns, &with_prev(&conf, &res)).ok();
        let l = link(sb, "t1", "eth0");
        assert_eq!(l["address"], before["address"]);
        assert_eq!(l["mtu"], before["mtu"]);
        assert!(!has_flag(&l, "PROMISC"));
        assert!(!has_flag(&l, "ALLMULTI"));
        assert_eq!(l["txqlen"], before["txqlen"]);
        assert_eq!(sysctl_in(sb, "t1", "net/ipv4/conf/eth0/arp_filter"), "1");
        assert!(!backup.exists());
        call("tuning", "DEL", "cid1", &ns, &conf).ok();
        // DEL with the netns gone still succeeds
        sb.sh("ip netns del t1");
        CniCall::new("tuning", "DEL")
            .attachment("cid1", Path::new(""), "eth0")
            .unset("CNI_NETNS")
            .conf(&conf)
            .run()
            .ok();
    });
}

#[test]
fn tuning_rejects_bad_input_and_takes_the_mac_from_cni_args() {
    sandbox(|sb| {
        let (ns, prev) = veth_container(sb, "t2");
        let data = sb.dir("tuning2");
        let base =
            json!({"cniVersion": "1.0.0", "name": "tnet", "type": "tuning", "dataDir": data});
        let mut bad = base.clone();
        bad["sysctl"] = json!({"kernel.hostname": "evil"});
        let (code, msg) = call("tuning", "ADD", "c", &ns, &with_prev(&bad, &prev)).err();
        assert!(msg.contains("invalid net sysctl key"), "{code} {msg}");
        assert_ne!(sysctl_in(sb, "t2", "kernel/hostname"), "evil");
        let mut up = base.clone();
        up["sysctl"] = json!({"net.ipv4.conf.IFNAME.../../../kernel/hostname": "x"});
        let (_, msg) = call("tuning", "ADD", "c", &ns, &with_prev(&up, &prev)).err();
        assert!(msg.contains("invalid net sysctl key"), "{msg}");
        // no prevResult
        let (_, msg) = call("tuning", "ADD", "c", &ns, &base).err();
        assert!(msg.contains("prevResult"), "{msg}");
        // duplicated keys (a JSON map would silently keep the last one)
        let dup = format!(
            r#"{{"cniVersion":"1.0.0","name":"tnet","type":"tuning","dataDir":"{}","sysctl":{{"net.ipv4.ip_forward":"1","net.ipv4.ip_forward":"0"}},"prevResult":{}}}"#,
            data.display(),
            prev
        );
        let out = CniCall::new("tuning", "ADD")
            .attachment("c", &ns, "eth0")
            .stdin(dup)
            .run();
        let (_, msg) = out.err();
        assert!(msg.contains("duplicated sysctl key"), "{msg}");
        assert!(
            std::fs::read_dir(&data).unwrap().next().is_none(),
            "no backup after rejections"
        );

        // Podman passes the static MAC through CNI_ARGS; runtimeConfig.mac wins over it.
        let out = CniCall::new("tuning", "ADD")
            .attachment("c", &ns, "eth0")
            .env(
                "CNI_ARGS",
                "IgnoreUnknown=1;IP=10.1.0.5;MAC=c2:00:00:00:00:07",
            )
            .conf(&with_prev(&base, &prev))
            .run();
        let res = out.ok();
        assert_eq!(res["interfaces"][1]["mac"], "c2:00:00:00:00:07");
        assert_eq!(link(sb, "t2", "eth0")["address"], "c2:00:00:00:00:07");
        let mut rc = with_prev(&base, &prev);
        rc["runtimeConfig"] = json!({"mac": "c2:00:00:00:00:08"});
        let out = CniCall::new("tuning", "ADD")
            .attachment("c", &ns, "eth0")
            .env("CNI_ARGS", "MAC=c2:00:00:00:00:07")
            .conf(&rc)
            .run();
        assert_eq!(out.ok()["interfaces"][1]["mac"], "c2:00:00:00:00:08");
        // the backup still holds the original MAC (kept across the repeated ADD)
        call("tuning", "DEL", "c", &ns, &base).ok();
        assert_eq!(
            link(sb, "t2", "eth0")["address"],
            prev["interfaces"][1]["mac"]
        );
    });
}

// ---------------------------------------------------------------------------------------------
// firewall

fn fw_conf(version: &str, extra: &Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": "fwnet", "type": "firewall"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn fw_prev(bridge: &str, ips: &[&str]) -> Value {
    let ips: Vec<Value> = ips
        .iter()
        .map(|a| json!({"interface": 1, "address": a}))
        .collect();
    json!({"cniVersion": "1.0.0",
           "interfaces": [{"name": bridge, "mac": "02:00:00:00:00:01"},
                          {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"}],
           "ips": ips})
}

/// `<prog> -t filter` (iptables-save or ip6tables-save); must succeed.
fn save(_sb: &Sandbox, prog: &str) -> String {
    testbox::run(prog, &["-t", "filter"])
}

/// Our table as `nft list` prints it; "" when it does not exist (any other failure fails).
fn nft_table(sb: &Sandbox) -> String {
    sb.nft_table()
}

#[test]
fn firewall_iptables_reference_layout() {
    sandbox(|sb| {
        let ns = sb.netns("f1");
        let conf = fw_conf("1.0.0", &json!({"backend": "iptables"}));
        let prev = fw_prev("cni-podman0", &["10.88.0.5/16", "fd00:88::5/64"]);
        let res = call("firewall", "ADD", "c1", &ns, &with_prev(&conf, &prev)).ok();
        assert_eq!(
            res["ips"].as_array().unwrap().len(),
            2,
            "prevResult passed through"
        );
        let v4 = save(sb, "iptables-save");
        for line in [
            "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD",
            "-A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN",
            "-A CNI-FORWARD -d 10.88.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT",
            ":CNI-ADMIN - [0:0]",
        ] {
            assert!(v4.contains(line), "missing {line:?} in\n{v4}");
        }
        // the admin jump comes first in CNI-FORWARD, the FORWARD jump first in FORWARD
        let fwd: Vec<&str> = v4
            .lines()
            .filter(|l| l.starts_with("-A CNI-FORWARD"))
            .collect();
        assert!(fwd[0].contains("CNI-ADMIN"), "{fwd:?}");
        let v6 = save(sb, "ip6tables-save");
        assert!(
            v6.contains("-A CNI-FORWARD -s fd00:88::5/128 -j ACCEPT"),
            "{v6}"
        );
        assert!(v6.contains(
            "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"
        ));

        call("firewall", "CHECK", "c1", &ns, &with_prev(&conf, &res)).ok();
        // a second container, then GC keeping only it
        let prev2 = fw_prev("cni-podman0", &["10.88.0.6/16"]);
        call("firewall", "ADD", "c2", &ns, &with_prev(&conf, &prev2)).ok();
        let v4 = save(sb, "iptables-save");
        assert!(
            v4.contains("-s 10.88.0.6/32"),
            "c2's rules are there before GC: {v4}"
        );
        let gc = json!({"cniVersion": "1.1.0", "name": "fwnet", "type": "firewall", "backend": "iptables",
                        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]});
        CniCall::new("firewall", "GC").conf(&gc).run().ok();
        let v4 = save(sb, "iptables-save");
        assert!(!v4.contains("10.88.0.6"), "{v4}");
        assert!(v4.contains("-s 10.88.0.5/32"), "{v4}");

        // DEL without prevResult removes only the per-IP rules; chains and jumps stay
        call("firewall", "DEL", "c1", &ns, &conf).ok();
        let v4 = save(sb, "iptables-save");
        assert!(!v4.contains("10.88.0.5"), "{v4}");
        assert!(
            v4.contains("-j CNI-FORWARD") && v4.contains("-j CNI-ADMIN"),
            "{v4}"
        );
        assert!(!save(sb, "ip6tables-save").contains("fd00:88::5"));
        let (_, msg) = call("firewall", "CHECK", "c1", &ns, &with_prev(&conf, &res)).err();
        assert!(msg.contains("10.88.0.5"), "{msg}");
        call("firewall", "DEL", "c1", &ns, &conf).ok();

        // spec versions below 0.4.0 are refused, VERSION lists 0.4.0+
        let old = fw_conf("0.3.1", &json!({"backend": "iptables"}));
        let (code, _) = call("firewall", "ADD", "c3", &ns, &with_prev(&old, &prev)).err();
        assert_eq!(code, 1);
        let v = CniCall::new("firewall", "VERSION").run().ok();
        assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
        // no prevResult on ADD
        let (_, msg) = call("firewall", "ADD", "c3", &ns, &conf).err();
        assert!(msg.contains("prevResult"), "{msg}");
        // firewalld: clear error (no D-Bus in the sandbox)
        let fd = fw_conf("1.0.0", &json!({"backend": "firewalld"}));
        let (_, msg) = call("firewall", "ADD", "c3", &ns, &with_prev(&fd, &prev)).err();
        assert_eq!(
            msg,
            "firewalld backend requested but firewalld is not running"
        );
    });
}

#[test]
fn firewall_nftables_table_del_without_prev_and_gc() {
    sandbox(|sb| {
        let ns = sb.netns("f2");
        let conf = fw_conf("1.1.0", &json!({}));
        let prev = fw_prev("cni-podman0", &["10.88.0.5/16", "fd00:88::5/64"]);
        let res = call("firewall", "ADD", "c1", &ns, &with_prev(&conf, &prev)).ok();
        let t = nft_table(sb);
        assert!(t.contains("chain forward"), "{t}");
        assert!(
            t.contains("type filter hook forward priority filter; policy accept;"),
            "{t}"
        );
        assert!(
            t.contains("ip daddr @fwd4 ct state established,related accept"),
            "{t}"
        );
        assert!(t.contains("ip saddr @fwd4 accept"), "{t}");
        assert!(t.contains("10.88.0.5 comment"), "{t}");
        assert!(t.contains("fd00:88::5 comment"), "{t}");
        assert!(t.contains("id: c1, if: eth0"), "{t}");
        // default backend is nftables: no iptables rules (FORWARD policy is ACCEPT here)
        assert!(!save(sb, "iptables-save").contains("CNI-FORWARD"));
        call("firewall", "CHECK", "c1", &ns, &with_prev(&conf, &res)).ok();
        // repeated ADD is idempotent
        call("firewall", "ADD", "c1", &ns, &with_prev(&conf, &prev)).ok();
        let prev2 = fw_prev("cni-podman0", &["10.88.0.6/16"]);
        call("firewall", "ADD", "c2", &ns, &with_prev(&conf, &prev2)).ok();
        let prev3 = fw_prev("cni-podman0", &["10.88.0.7/16"]);
        call("firewall", "ADD", "c3", &ns, &with_prev(&conf, &prev3)).ok();
        let t = nft_table(sb);
        assert!(
            t.contains("10.88.0.7 comment"),
            "c3's element is there before GC: {t}"
        );

        // DEL without prevResult finds c1's addresses by owner
        call("firewall", "DEL", "c1", &ns, &conf).ok();
        let t = nft_table(sb);
        assert!(!t.contains("10.88.0.5") && !t.contains("fd00:88::5"), "{t}");
        assert!(t.contains("10.88.0.6"), "{t}");
        let (_, msg) = call("firewall", "CHECK", "c1", &ns, &with_prev(&conf, &res)).err();
        assert!(msg.contains("10.88.0.5"), "{msg}");
        call("firewall", "DEL", "c1", &ns, &conf).ok();

        // GC keeps c2 only; another network's element is not touched
        let other = json!({"cniVersion": "1.1.0", "name": "othernet", "type": "firewall"});
        let prev9 = fw_prev("br9", &["10.99.0.9/24"]);
        call("firewall", "ADD", "c9", &ns, &with_prev(&other, &prev9)).ok();
        let mut gc = conf.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "c2", "ifname": "eth0"}]);
        CniCall::new("firewall", "GC").conf(&gc).run().ok();
        let t = nft_table(sb);
        assert!(t.contains("10.88.0.6"), "{t}");
        assert!(!t.contains("10.88.0.7"), "{t}");
        assert!(t.contains("10.99.0.9"), "{t}");
        CniCall::new("firewall", "STATUS").conf(&conf).run().ok();
        // Teardown: the remaining attachments' DELs leave no element of either network.
        call("firewall", "DEL", "c2", &ns, &conf).ok();
        call("firewall", "DEL", "c9", &ns, &other).ok();
        assert_eq!(sb.nft_entries(", id: "), 0, "{}", nft_table(sb));
    });
}

// ---------------------------------------------------------------------------------------------
// traffic between two bridges routed by the sandbox host

struct TwoNets {
    ns_a: std::path::PathBuf,
    ns_b: std::path::PathBuf,
    res_a: Value,
    res_b: Value,
}

fn bridge_conf(sb: &Sandbox, name: &str, br: &str, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": br,
           "isGateway": true, "ipam": {"type": "host-local", "subnet": subnet,
           "routes": [{"dst": "0.0.0.0/0"}], "dataDir": sb.dir("ipam")}})
}

/// Containers `a` (bridge rbr1, 10.31.0.0/24) and `b` (rbr2, 10.32.0.0/24).
fn two_nets(sb: &Sandbox) -> TwoNets {
    let ns_a = sb.netns("a");
    let ns_b = sb.netns("b");
    let res_a = call(
        "bridge",
        "ADD",
        "ca",
        &ns_a,
        &bridge_conf(sb, "net1", "rbr1", "10.31.0.0/24"),
    )
    .ok();
    let res_b = call(
        "bridge",
        "ADD",
        "cb",
        &ns_b,
        &bridge_conf(sb, "net2", "rbr2", "10.32.0.0/24"),
    )
    .ok();
    sb.sh("echo 1 > /proc/sys/net/ipv4/ip_forward");
    TwoNets {
        ns_a,
        ns_b,
        res_a,
        res_b,
    }
}

fn ip_of(res: &Value) -> String {
    res["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

fn fw_net(name: &str, extra: &Value) -> Value {
    let mut c = fw_conf("1.0.0", extra);
    c["name"] = name.into();
    c
}

#[test]
fn forward_policy_drop_host_traffic_flows_after_firewall_add() {
    sandbox(|sb| {
        let n = two_nets(sb);
        let (a, b) = (ip_of(&n.res_a), ip_of(&n.res_b));
        assert!(
            sb.ping("a", &b),
            "baseline: routed traffic flows before DROP"
        );
        // Docker's setting: FORWARD policy DROP (table ip filter, another base chain on the hook)
        sb.sh("iptables -P FORWARD DROP");
        assert!(
            !sb.ping("a", &b),
            "DROP policy must block the routed traffic"
        );

        let c1 = fw_net("net1", &json!({}));
        let c2 = fw_net("net2", &json!({}));
        let out = call("firewall", "ADD", "ca", &n.ns_a, &with_prev(&c1, &n.res_a));
        out.ok();
        assert!(
            out.stderr.contains("FORWARD policy is DROP"),
            "logged: {}",
            out.stderr
        );
        call("firewall", "ADD", "cb", &n.ns_b, &with_prev(&c2, &n.res_b)).ok();
        // our nft accept alone would not do: the iptables accept rules were added too
        let v4 = save(sb, "iptables-save");
        assert!(v4.contains(&format!("-s {a}/32 -j ACCEPT")), "{v4}");
        assert!(nft_table(sb).contains(&a));
        assert!(
            sb.ping("a", &b),
            "traffic flows after the firewall plugin's ADD"
        );
        assert!(sb.ping("b", &a));
        call(
            "firewall",
            "CHECK",
            "ca",
            &n.ns_a,
            &with_prev(&c1, &n.res_a),
        )
        .ok();

        // DEL (no prevResult) removes both the nft element and the fallback iptables rules
        call("firewall", "DEL", "ca", &n.ns_a, &c1).ok();
        let v4 = save(sb, "iptables-save");
        assert!(!v4.contains(&format!("{a}/32")), "{v4}");
        assert!(!nft_table(sb).contains(&a));
        assert!(!sb.ping("a", &b), "blocked again after DEL");

        // A drop policy in another nftables table cannot be overridden by anyone's accept: the
        // plugin names it on stderr (read-only inspection) and touches nothing there.
        sb.sh("nft add table inet userfw && nft add chain inet userfw gate '{ type filter hook forward priority 0; policy drop; }'");
        let out = call("firewall", "ADD", "ca", &n.ns_a, &with_prev(&c1, &n.res_a));
        out.ok();
        assert!(
            out.stderr.contains("nftables chain inet userfw gate"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("ip filter FORWARD"), "{}", out.stderr);
        let user =
            String::from_utf8_lossy(&sb.try_sh("nft list table inet userfw").stdout).into_owned();
        assert!(user.contains("policy drop") && !user.contains(&a), "{user}");
    });
}

#[test]
fn ingress_policy_same_bridge_nft_and_isolated_iptables() {
    sandbox(|sb| {
        let n = two_nets(sb);
        let (a, b) = (ip_of(&n.res_a), ip_of(&n.res_b));
        assert!(sb.ping("a", &b));
        // only one bridge isolated: stage 2 drops towards isolated bridges only, so a -> b flows
        let c1 = fw_net("net1", &json!({"ingressPolicy": "same-bridge"}));
        call("firewall", "ADD", "ca", &n.ns_a, &with_prev(&c1, &n.res_a)).ok();
        assert!(sb.ping("a", &b));
        let c2 = fw_net("net2", &json!({"ingressPolicy": "same-bridge"}));
        call("firewall", "ADD", "cb", &n.ns_b, &with_prev(&c2, &n.res_b)).ok();
        assert!(
            !sb.ping("a", &b),
            "same-bridge: traffic between isolated bridges dropped"
        );
        assert!(!sb.ping("b", &a));
        assert!(sb.ping("a", "10.31.0.1"), "own gateway still reachable");
        let t = nft_table(sb);
        assert!(
            t.contains("iifname \"rbr1\" oifname != \"rbr1\" jump isolation2"),
            "{t}"
        );
        assert!(t.contains("oifname \"rbr2\" drop"), "{t}");
        call(
            "firewall",
            "CHECK",
            "ca",
            &n.ns_a,
            &with_prev(&c1, &n.res_a),
        )
        .ok();
        // isolation rules stay after DEL (reference)
        call("firewall", "DEL", "ca", &n.ns_a, &c1).ok();
        assert!(nft_table(sb).contains("rcni-iso1: rbr1"));
        assert!(!sb.ping("a", &b));
        // back to open: flush our table, traffic flows again
        sb.sh("nft delete table inet rcni");
        assert!(sb.ping("a", &b));

        // iptables backend, isolated
        let i1 = fw_net(
            "net1",
            &json!({"backend": "iptables", "ingressPolicy": "isolated"}),
        );
        let i2 = fw_net(
            "net2",
            &json!({"backend": "iptables", "ingressPolicy": "isolated"}),
        );
        call("firewall", "ADD", "ca", &n.ns_a, &with_prev(&i1, &n.res_a)).ok();
        call("firewall", "ADD", "cb", &n.ns_b, &with_prev(&i2, &n.res_b)).ok();
        let v4 = save(sb, "iptables-save");
        for line in [
            "-A CNI-ISOLATION-STAGE-1 -i rbr1 ! -o rbr1 -j CNI-ISOLATION-STAGE-2",
            "-A CNI-ISOLATION-STAGE-1 -i rbr1 -o rbr1 -j DROP",
            "-A CNI-ISOLATION-STAGE-2 -o rbr2 -j DROP",
            "-A CNI-ISOLATION-STAGE-1 -j RETURN",
        ] {
            assert!(v4.contains(line), "missing {line:?} in\n{v4}");
        }
        let fwd: Vec<&str> = v4.lines().filter(|l| l.starts_with("-A FORWARD")).collect();
        assert!(
            fwd[0].contains("CNI-ISOLATION-STAGE-1"),
            "isolation before accepts: {fwd:?}"
        );
        assert!(!sb.ping("a", &b));
        assert!(!sb.ping("b", &a));
        call(
            "firewall",
            "CHECK",
            "cb",
            &n.ns_b,
            &with_prev(&i2, &n.res_b),
        )
        .ok();
    });
}

// ---------------------------------------------------------------------------------------------
// Podman's default chain through the runtime

/// Podman's default chain: bridge → portmap → firewall → `tuning`.
fn podman_list(sb: &Sandbox, tuning: Value) -> NetConfList {
    let mut plugins = vec![
        json!({"type": "bridge", "bridge": "cni-podman0", "isGateway": true,
        "ipMasq": true, "hairpinMode": true,
        "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                 "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                 "dataDir": sb.dir("podman-ipam")}}),
    ];
    plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    plugins.push(json!({"type": "firewall"}));
    plugins.push(tuning);
    let list = json!({"cniVersion": "0.4.0", "name": "podman", "plugins": plugins});
    NetConfList::parse(&serde_json::to_vec(&list).unwrap()).unwrap()
}

fn podman_rt(ns: &Path, cid: &str, ip: &str, mac: &str) -> RuntimeConf {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]),
    );
    RuntimeConf {
        container_id: cid.into(),
        netns: ns.to_str().unwrap().into(),
        ifname: "eth0".into(),
        // Podman: static IP and MAC only through CNI_ARGS.
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), "podman".into()),
            ("IP".into(), ip.into()),
            ("MAC".into(), mac.into()),
        ],
        capability_args: caps,
    }
}

fn leftovers(sb: &Sandbox, ip: &str, cid: &str) -> Vec<String> {
    let mut left = Vec::new();
    for l in sb.link_names(None) {
        if l.starts_with("veth") {
            left.push(format!("host link {l}"));
        }
    }
    let t = nft_table(sb);
    if t.contains(&format!("{ip} ")) || t.contains(&format!("id: {cid},")) {
        left.push(format!("nft entries of {ip}/{cid}:\n{t}"));
    }
    let ipt = save(sb, "iptables-save") + &sb.sh("iptables-save -t nat");
    if ipt.contains(ip) {
        left.push(format!("iptables rules of {ip}:\n{ipt}"));
    }
    let lease_dir = sb.scratch().join("podman-ipam").join("podman");
    if lease_dir.join(ip).exists() {
        left.push(format!("lease {ip}"));
    }
    if Path::new("/run/cni/tuning")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        left.push("tuning backup".into());
    }
    left
}

/// The shared "nothing left" check for the Podman network of these tests.
fn assert_podman_nothing_left(sb: &Sandbox) {
    let data_dir = sb.scratch().join("podman-ipam");
    let cache_dir = sb.scratch().join("podman-cache");
    sb.assert_no_cni_leftovers(&CniState {
        data_dir: &data_dir,
        cache_dir: &cache_dir,
        network: "podman",
    });
}

#[test]
fn podman_chain_add_check_del_and_failed_add_cleanup() {
    sandbox(|sb| {
        // Podman runs VERSION on every plugin and drops the network unless 0.4.0 is listed.
        for t in ["bridge", "host-local", "portmap", "firewall", "tuning"] {
            let out = CniCall::new(t, "VERSION")
                .stdin(r#"{"cniVersion":"0.4.0"}"#)
                .run();
            let v = out.ok();
            assert!(
                v["supportedVersions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == "0.4.0"),
                "{t}: {v}"
            );
        }
        let cfg = CniConfig::new(vec![bin_dir()], sb.dir("podman-cache"));
        let list = podman_list(sb, json!({"type": "tuning"}));
        let ns = sb.netns("pod1");
        let rt = podman_rt(&ns, "pod1cid", "10.88.0.50", "c2:aa:bb:cc:dd:01");
        let res = cfg
            .add_network_list(&list, &rt)
            .unwrap_or_else(|e| panic!("ADD: {e}"));
        assert_eq!(res.ips[0].address.to_string(), "10.88.0.50/16");
        let eth0 = res.interfaces.iter().find(|i| i.name == "eth0").unwrap();
        assert_eq!(eth0.mac, "c2:aa:bb:cc:dd:01");
        assert_eq!(link(sb, "pod1", "eth0")["address"], "c2:aa:bb:cc:dd:01");
        assert!(
            nft_table(sb).contains("10.88.0.50 comment"),
            "firewall element present"
        );
        assert!(sb.ping("pod1", "10.88.0.1"));
        cfg.check_network_list(&list, &rt)
            .unwrap_or_else(|e| panic!("CHECK: {e}"));
        cfg.del_network_list(&list, &rt)
            .unwrap_or_else(|e| panic!("DEL: {e}"));
        let left = leftovers(sb, "10.88.0.50", "pod1cid");
        assert!(left.is_empty(), "after DEL: {left:?}");
        assert_podman_nothing_left(sb);

        // A failing ADD (tuning rejects its sysctl after bridge, portmap and firewall acted),
        // then Podman's full DEL chain without prevResult must leave nothing.
        let bad = podman_list(
            sb,
            json!({"type": "tuning", "sysctl": {"kernel.hostname": "x"}}),
        );
        let ns2 = sb.netns("pod2");
        let rt2 = podman_rt(&ns2, "pod2cid", "10.88.0.51", "c2:aa:bb:cc:dd:02");
        let err = cfg.add_network_list(&bad, &rt2).unwrap_err();
        assert!(err.msg.contains("invalid net sysctl key"), "{err}");
        assert!(
            nft_table(sb).contains("10.88.0.51 comment"),
            "the firewall plugin ran before the failure"
        );
        assert!(
            cfg.cached_result(&bad, &rt2).is_none(),
            "no cache after a failed ADD"
        );
        cfg.del_network_list(&bad, &rt2)
            .unwrap_or_else(|e| panic!("DEL after failed ADD: {e}"));
        let left = leftovers(sb, "10.88.0.51", "pod2cid");
        assert!(left.is_empty(), "after failed ADD + DEL: {left:?}");
        cfg.del_network_list(&bad, &rt2)
            .unwrap_or_else(|e| panic!("second DEL: {e}"));
        assert_podman_nothing_left(sb);
    });
}

// ---------------------------------------------------------------------------------------------
// differential / cross-compatibility with the reference plugins (Debian v1.1.1), when installed

/// A differential test never passes silently without its oracle (same rule as
/// bridge_differential.rs).
fn require_reference() {
    integration_tests::require_reference_dir();
}

fn reference(plugin: &str, verb: &str, cid: &str, ns: &Path, conf: &Value) -> Option<CniOutput> {
    let dir = integration_tests::reference_dir()?;
    Some(
        CniCall::with_bin(dir.join(plugin), verb)
            .env("CNI_PATH", dir.to_str().unwrap())
            .attachment(cid, ns, "eth0")
            .conf(conf)
            .run(),
    )
}

#[test]
fn differential_firewall_iptables_layout_and_cross_cleanup() {
    require_reference();
    sandbox(|sb| {
        let ns = sb.netns("d1");
        let conf = fw_conf("1.0.0", &json!({"backend": "iptables"}));
        let prev = fw_prev("cni-podman0", &["10.88.0.5/16", "fd00:88::5/64"]);
        let dump = |sb: &Sandbox| -> String {
            let mut s = String::new();
            for p in ["iptables-save", "ip6tables-save"] {
                s += &save(sb, p)
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>();
            }
            s
        };
        let theirs_out = reference("firewall", "ADD", "c1", &ns, &with_prev(&conf, &prev)).unwrap();
        theirs_out.ok();
        let theirs = dump(sb);
        // our DEL (with prevResult) removes the reference plugin's per-IP rules
        call("firewall", "DEL", "c1", &ns, &with_prev(&conf, &prev)).ok();
        let after_del = dump(sb);
        assert!(
            !after_del.contains("10.88.0.5") && !after_del.contains("fd00:88::5"),
            "{after_del}"
        );
        let ours_res = call("firewall", "ADD", "c1", &ns, &with_prev(&conf, &prev)).ok();
        let ours = dump(sb);
        assert_eq!(ours, theirs, "same iptables state as the reference plugin");
        // the reference CHECK accepts our rules, and its DEL removes them
        reference("firewall", "CHECK", "c1", &ns, &with_prev(&conf, &ours_res))
            .unwrap()
            .ok();
        reference("firewall", "DEL", "c1", &ns, &with_prev(&conf, &ours_res))
            .unwrap()
            .ok();
        assert!(!dump(sb).contains("10.88.0.5"));
        // our owner record is gone with the rules on our next DEL, which still succeeds
        call("firewall", "DEL", "c1", &ns, &conf).ok();
    });
}

#[test]
fn differential_tuning_backup_is_interchangeable() {
    require_reference();
    sandbox(|sb| {
        let (ns, prev) = veth_container(sb, "d2");
        let before = link(sb, "d2", "eth0");
        let data = sb.dir("tuning-diff");
        let conf = json!({"cniVersion": "1.0.0", "name": "tnet", "type": "tuning",
            "mac": "c2:11:22:33:44:55", "mtu": 1400, "promisc": true, "allmulti": true,
            "dataDir": data});
        // reference ADD, our DEL restores from the reference backup
        let theirs = reference("tuning", "ADD", "c", &ns, &with_prev(&conf, &prev))
            .unwrap()
            .ok();
        let ref_backup: Value =
            serde_json::from_slice(&std::fs::read(data.join("c_eth0.json")).unwrap()).unwrap();
        call("tuning", "DEL", "c", &ns, &with_prev(&conf, &theirs)).ok();
        let l = link(sb, "d2", "eth0");
        assert_eq!(l["address"], before["address"]);
        assert_eq!(l["mtu"], before["mtu"]);
        assert!(!has_flag(&l, "PROMISC") && !has_flag(&l, "ALLMULTI"), "{l}");
        // our ADD writes the same backup keys and result; the reference DEL restores from it
        let ours = call("tuning", "ADD", "c", &ns, &with_prev(&conf, &prev)).ok();
        assert_eq!(ours["interfaces"], theirs["interfaces"]);
        let our_backup: Value =
            serde_json::from_slice(&std::fs::read(data.join("c_eth0.json")).unwrap()).unwrap();
        assert_eq!(our_backup, ref_backup);
        reference("tuning", "CHECK", "c", &ns, &with_prev(&conf, &ours))
            .unwrap()
            .ok();
        reference("tuning", "DEL", "c", &ns, &with_prev(&conf, &ours))
            .unwrap()
            .ok();
        let l = link(sb, "d2", "eth0");
        assert_eq!(l["address"], before["address"]);
        assert_eq!(l["mtu"], before["mtu"]);
    });
}

#[test]
fn firewall_parallel_add_del_under_the_lock() {
    sandbox(|sb| {
        let ns = sb.netns("p");
        for backend in ["nftables", "iptables"] {
            let conf = fw_conf("1.0.0", &json!({"backend": backend}));
            // threads spawned here inherit the sandbox's namespaces (copied at clone time)
            std::thread::scope(|s| {
                for i in 0..12 {
                    let (ns, conf) = (&ns, &conf);
                    s.spawn(move || {
                        let prev = fw_prev("cni-podman0", &[&format!("10.77.0.{}/16", i + 10)]);
                        call(
                            "firewall",
                            "ADD",
                            &format!("pc{i}"),
                            ns,
                            &with_prev(conf, &prev),
                        )
                        .ok();
                    });
                }
            });
            // Every address is in the backend this run selected, and none in the other one
            // (the sandbox's iptables FORWARD policy is ACCEPT: no fallback rules).
            let (nft, ipt) = (nft_table(sb), save(sb, "iptables-save"));
            let (chosen, other, entry): (_, _, fn(usize) -> String) = if backend == "nftables" {
                (&nft, &ipt, |i| format!("10.77.0.{} ", i + 10))
            } else {
                (&ipt, &nft, |i| format!("10.77.0.{}/32", i + 10))
            };
            for i in 0..12 {
                assert!(
                    chosen.contains(&entry(i)),
                    "{backend}: 10.77.0.{} missing:\n{chosen}",
                    i + 10
                );
            }
            assert!(
                !other.contains("10.77.0."),
                "{backend}: entries in the other backend:\n{other}"
            );
            std::thread::scope(|s| {
                for i in 0..12 {
                    let (ns, conf) = (&ns, &conf);
                    s.spawn(move || {
                        call("firewall", "DEL", &format!("pc{i}"), ns, conf).ok();
                    });
                }
            });
            let state = nft_table(sb) + &save(sb, "iptables-save");
            assert!(
                !state.contains("10.77.0."),
                "{backend}: leftovers:\n{state}"
            );
        }
    });
}
