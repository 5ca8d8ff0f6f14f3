//! Differential check: the same bridge + host-local config through our plugins and through the
//! reference Go plugins (Debian package containernetworking-plugins, v1.1.1, spec ≤ 1.0.0), in
//! one sandbox on separate bridges and subnets. Results and kernel state must agree except
//! where docs/decisions.md records a deliberate difference.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use integration_tests::{bin_dir, require_reference_dir, sandbox, CniCall, Sandbox};
use serde_json::{json, Value};

struct Side {
    dir: PathBuf,
    bridge: &'static str,
    prefix: &'static str,
    ns: &'static str,
}

fn conf(sb: &Sandbox, side: &Side) -> Value {
    json!({"cniVersion": "1.0.0", "name": format!("diff-{}", side.bridge), "type": "bridge",
           "bridge": side.bridge, "isGateway": true, "isDefaultGateway": true, "mtu": 1400,
           "hairpinMode": true,
           "ipam": {"type": "host-local", "subnet": format!("{}.0/24", side.prefix),
                    "dataDir": sb.dir(&format!("data-{}", side.bridge))}})
}

fn call(side: &Side, verb: &str, netns: &Path, c: &Value) -> Value {
    CniCall::with_bin(side.dir.join("bridge"), verb)
        .env("CNI_PATH", side.dir.to_str().unwrap())
        .attachment("diffcid", netns, "eth0")
        .conf(c)
        .run()
        .ok()
}

fn sysctl(sb: &Sandbox, ns: Option<&str>, key: &str) -> String {
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

/// What a side's ADD produced, with the subnet prefix and names abstracted away.
fn observe(sb: &Sandbox, side: &Side, r: &Value) -> Value {
    let p = side.prefix;
    let norm = |s: &str| s.replace(p, "P");
    let host_veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let hv = sb.link(None, &host_veth).unwrap();
    let br = sb.link(None, side.bridge).unwrap();
    let c = sb.link(Some(side.ns), "eth0").unwrap();
    let routes: Vec<String> = sb
        .sh(&format!("ip -n {} -4 route show", side.ns))
        .lines()
        .map(|l| norm(l.trim()))
        .collect();
    json!({
        "result": {
            "interface_names": [
                r["interfaces"][0]["name"] == side.bridge,
                host_veth.starts_with("veth") && host_veth.len() == 12,
                r["interfaces"][2]["name"],
            ],
            "sandbox_only_on_container": [
                r["interfaces"][0].get("sandbox").and_then(Value::as_str).unwrap_or("").is_empty(),
                r["interfaces"][1].get("sandbox").and_then(Value::as_str).unwrap_or("").is_empty(),
                r["interfaces"][2]["sandbox"] == format!("/run/netns/{}", side.ns),
            ],
            "macs_match_kernel": [
                r["interfaces"][0]["mac"] == br["address"],
                r["interfaces"][1]["mac"] == hv["address"],
                r["interfaces"][2]["mac"] == c["address"],
            ],
            "ips": r["ips"].as_array().unwrap().iter().map(|ip| json!({
                "address": norm(ip["address"].as_str().unwrap()),
                "gateway": norm(ip["gateway"].as_str().unwrap_or("")),
                "interface": ip["interface"],
            })).collect::<Vec<_>>(),
            "routes": r["routes"].as_array().map(|rs| rs.iter().map(|rt| json!({
                "dst": rt["dst"], "gw": norm(rt["gw"].as_str().unwrap_or(""))
            })).collect::<Vec<_>>()).unwrap_or_default(),
        },
        "kernel": {
            "bridge_up": br["flags"].as_array().unwrap().contains(&json!("UP")),
            "bridge_addrs": sb.global_addrs(None, side.bridge).iter().map(|a| norm(a)).collect::<Vec<_>>(),
            "bridge_mac_pinned": std::fs::read_to_string(format!("/sys/class/net/{}/addr_assign_type", side.bridge)).unwrap().trim().to_string(),
            "mtu": [br["mtu"].clone(), hv["mtu"].clone(), c["mtu"].clone()],
            "host_veth_master": hv["master"] == side.bridge,
            "hairpin": hv["linkinfo"]["info_slave_data"]["hairpin"],
            "container_addrs": sb.global_addrs(Some(side.ns), "eth0").iter().map(|a| norm(a)).collect::<Vec<_>>(),
            "container_routes": routes,
            "ip_forward": sysctl(sb, None, "net/ipv4/ip_forward"),
            "bridge_accept_ra": sysctl(sb, None, &format!("net/ipv6/conf/{}/accept_ra", side.bridge)),
            "host_veth_accept_ra": sysctl(sb, None, &format!("net/ipv6/conf/{host_veth}/accept_ra")),
            "container_accept_dad": sysctl(sb, Some(side.ns), "net/ipv6/conf/eth0/accept_dad"),
            "container_arp_notify": sysctl(sb, Some(side.ns), "net/ipv4/conf/eth0/arp_notify"),
        }
    })
}

fn veths_on(sb: &Sandbox, bridge: &str) -> usize {
    sb.ip_json(None, &format!("link show master {bridge}"))
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn bridge_matches_the_reference_plugin() {
    let reference = require_reference_dir();
    sandbox(|sb| {
        let ours = Side {
            dir: bin_dir(),
            bridge: "br-ours",
            prefix: "10.30.0",
            ns: "ours",
        };
        let theirs = Side {
            dir: reference,
            bridge: "br-ref",
            prefix: "10.31.0",
            ns: "ref",
        };
        let mut seen = Vec::new();
        for side in [&ours, &theirs] {
            let ns = sb.netns(side.ns);
            let c = conf(sb, side);
            let r = call(side, "ADD", &ns, &c);
            sb.wait_oper_up(Some(side.ns), "eth0");
            seen.push(observe(sb, side, &r));
            // CHECK with the ADD result passes on both.
            let mut check = c.clone();
            check["prevResult"] = r.clone();
            call(side, "CHECK", &ns, &check);
        }
        assert_eq!(
            seen[0],
            seen[1],
            "ours (left) and the reference (right) differ:\n{}\n{}",
            serde_json::to_string_pretty(&seen[0]).unwrap(),
            serde_json::to_string_pretty(&seen[1]).unwrap()
        );
        // DEL on both: veth and lease gone, bridge kept; DEL again succeeds.
        for side in [&ours, &theirs] {
            let ns = PathBuf::from(format!("/run/netns/{}", side.ns));
            let c = conf(sb, side);
            call(side, "DEL", &ns, &c);
            call(side, "DEL", &ns, &c);
            assert_eq!(veths_on(sb, side.bridge), 0, "{}", side.bridge);
            assert!(sb.link(None, side.bridge).is_some());
            let leases = std::fs::read_dir(
                sb.scratch()
                    .join(format!("data-{}", side.bridge))
                    .join(format!("diff-{}", side.bridge)),
            )
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(side.prefix))
            .count();
            assert_eq!(leases, 0, "{} kept a lease", side.bridge);
        }
        for side in [&ours, &theirs] {
            sb.assert_nothing_left(
                &format!("diff-{}", side.bridge),
                &sb.scratch().join(format!("data-{}", side.bridge)),
            );
        }
    });
}
