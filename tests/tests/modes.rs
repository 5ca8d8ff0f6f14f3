//! Docker's other network modes as plugins: `none`/`loopback`, `host`, `container`.
//! Every verb against the real kernel in a private namespace; kernel state compared before and
//! after for the namespaces these plugins must never modify.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{sandbox, CniCall, Sandbox};
use serde_json::{json, Value};

fn conf(plugin: &str, version: &str) -> Value {
    json!({"cniVersion": version, "name": "modes", "type": plugin})
}

/// Links, addresses, routes and policy rules of a namespace, as iproute2 prints them.
fn kernel_state(sb: &Sandbox, ns: Option<&str>) -> String {
    let n = ns.map(|n| format!("-n {n} ")).unwrap_or_default();
    sb.sh(&format!(
        "ip {n}-d link show; ip {n}addr show; ip {n}route show table all; ip {n}-6 route show table all; ip {n}rule show"
    ))
}

#[test]
fn loopback_and_none_bring_lo_up_and_report_it() {
    sandbox(|sb| {
        for plugin in ["none", "loopback"] {
            let ns = sb.netns(&format!("{plugin}1"));
            let nsname = format!("{plugin}1");
            sb.sh(&format!("ip -n {nsname} link set lo down"));
            // CNI_IFNAME is ignored: loopback is always lo.
            let add = CniCall::new(plugin, "ADD")
                .attachment("c1", &ns, "eth0")
                .conf(&conf(plugin, "1.1.0"))
                .run()
                .ok();
            let lo = sb.link(Some(&nsname), "lo").unwrap();
            assert!(
                lo["flags"].as_array().unwrap().contains(&json!("UP")),
                "{lo}"
            );
            assert_eq!(add["interfaces"][0]["name"], "lo");
            assert_eq!(add["interfaces"][0]["mac"], "00:00:00:00:00:00");
            assert_eq!(add["interfaces"][0]["sandbox"], ns.to_str().unwrap());
            let ips: Vec<&str> = add["ips"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["address"].as_str().unwrap())
                .collect();
            assert_eq!(ips, vec!["127.0.0.1/8", "::1/128"]);
            assert_eq!(add["ips"][0]["interface"], 0);
            // 1.x results carry no ips[].version.
            assert!(add["ips"][0].get("version").is_none());

            let mut check_conf = conf(plugin, "1.1.0");
            check_conf["prevResult"] = add.clone();
            CniCall::new(plugin, "CHECK")
                .attachment("c1", &ns, "eth0")
                .conf(&check_conf)
                .run()
                .ok();

            CniCall::new(plugin, "DEL")
                .attachment("c1", &ns, "eth0")
                .conf(&conf(plugin, "1.1.0"))
                .run()
                .ok();
            let lo = sb.link(Some(&nsname), "lo").unwrap();
            assert!(!lo["flags"].as_array().unwrap().contains(&json!("UP")));

            // CHECK when lo is down names the problem.
            let (_, msg) = CniCall::new(plugin, "CHECK")
                .attachment("c1", &ns, "eth0")
                .conf(&check_conf)
                .run()
                .err();
            assert!(msg.contains("loopback interface is down"), "{msg}");

            // DEL with an empty or vanished namespace succeeds.
            CniCall::new(plugin, "DEL")
                .attachment("c1", &ns, "eth0")
                .env("CNI_NETNS", "")
                .conf(&conf(plugin, "1.1.0"))
                .run()
                .ok();
            sb.sh(&format!("ip netns del {nsname}"));
            CniCall::new(plugin, "DEL")
                .attachment("c1", &ns, "eth0")
                .conf(&conf(plugin, "1.1.0"))
                .run()
                .ok();
        }
    });
}

#[test]
fn loopback_results_in_every_version() {
    sandbox(|sb| {
        let ns = sb.netns("v");
        for version in [
            "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
        ] {
            let r = CniCall::new("loopback", "ADD")
                .attachment("c1", &ns, "lo")
                .conf(&conf("loopback", version))
                .run()
                .ok();
            assert_eq!(r["cniVersion"], version);
            match version {
                "0.1.0" | "0.2.0" => {
                    assert_eq!(r["ip4"]["ip"], "127.0.0.1/8", "{r}");
                    assert_eq!(r["ip6"]["ip"], "::1/128", "{r}");
                    assert!(r.get("interfaces").is_none());
                }
                "0.3.0" | "0.3.1" | "0.4.0" => assert_eq!(r["ips"][0]["version"], "4", "{r}"),
                _ => assert!(r["ips"][0].get("version").is_none(), "{r}"),
            }
        }
        // A config without cniVersion is 0.1.0: 0.2.0-shaped result.
        let r = CniCall::new("loopback", "ADD")
            .attachment("c1", &ns, "lo")
            .conf(&json!({"name": "modes", "type": "loopback"}))
            .run()
            .ok();
        assert_eq!(r["ip4"]["ip"], "127.0.0.1/8", "{r}");
    });
}

#[test]
fn loopback_passes_prev_result_through() {
    sandbox(|sb| {
        let ns = sb.netns("p");
        let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": ns}],
                          "ips": [{"interface": 0, "address": "10.9.0.2/24", "gateway": "10.9.0.1"}]});
        let mut c = conf("loopback", "1.0.0");
        c["prevResult"] = prev;
        let r = CniCall::new("loopback", "ADD")
            .attachment("c1", &ns, "lo")
            .conf(&c)
            .run()
            .ok();
        assert_eq!(r["ips"][0]["address"], "10.9.0.2/24");
        assert_eq!(r["interfaces"][0]["name"], "eth0");
    });
}

#[test]
fn loopback_refuses_the_plugins_own_namespace() {
    // plugins#714: a stale /proc/<pid>/ns/net that points at the runtime's own namespace must
    // never let loopback down the host's lo.
    sandbox(|sb| {
        let own = std::path::PathBuf::from("/proc/self/ns/net");
        let before = kernel_state(sb, None);
        for verb in ["ADD", "DEL"] {
            let (code, msg) = CniCall::new("loopback", verb)
                .attachment("c1", &own, "lo")
                .conf(&conf("loopback", "1.1.0"))
                .run()
                .err();
            assert_eq!(code, 8, "{msg}");
        }
        assert_eq!(before, kernel_state(sb, None));
        assert!(sb.link(None, "lo").unwrap()["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("UP")));
    });
}

#[test]
fn host_reports_the_host_namespace_and_changes_nothing() {
    sandbox(|sb| {
        sb.sh("ip link add hv0 type veth peer name hv1 && ip addr add 192.0.2.10/24 dev hv0 && ip link set hv0 up && ip link set hv1 up");
        let before = kernel_state(sb, None);
        let own = std::path::PathBuf::from("/proc/self/ns/net");
        let r = CniCall::new("host", "ADD")
            .attachment("c1", &own, "eth0")
            .conf(&conf("host", "1.1.0"))
            .run()
            .ok();
        let names: Vec<&str> = r["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"lo") && names.contains(&"hv0"), "{r}");
        let hv0 = names.iter().position(|n| *n == "hv0").unwrap();
        assert!(
            r["ips"]
                .as_array()
                .unwrap()
                .iter()
                .any(|ip| ip["address"] == "192.0.2.10/24" && ip["interface"] == hv0),
            "{r}"
        );
        let mut c = conf("host", "1.1.0");
        c["prevResult"] = r;
        CniCall::new("host", "CHECK")
            .attachment("c1", &own, "eth0")
            .conf(&c)
            .run()
            .ok();
        for _ in 0..2 {
            CniCall::new("host", "DEL")
                .attachment("c1", &own, "eth0")
                .conf(&conf("host", "1.1.0"))
                .run()
                .ok();
        }
        assert_eq!(
            before,
            kernel_state(sb, None),
            "host plugin changed the host"
        );

        // Any other namespace is refused, for ADD and CHECK, and nothing changes there either.
        let other = sb.netns("priv");
        let before_priv = kernel_state(sb, Some("priv"));
        let (code, msg) = CniCall::new("host", "ADD")
            .attachment("c1", &other, "eth0")
            .conf(&conf("host", "1.1.0"))
            .run()
            .err();
        assert_eq!(code, 8);
        assert!(msg.contains("is not the host network namespace"), "{msg}");
        let (code, _) = CniCall::new("host", "CHECK")
            .attachment("c1", &other, "eth0")
            .conf(&c)
            .run()
            .err();
        assert_eq!(code, 8);
        assert_eq!(before_priv, kernel_state(sb, Some("priv")));
        // DEL of a namespace that no longer exists still succeeds.
        CniCall::new("host", "DEL")
            .attachment("c1", std::path::Path::new("/run/netns/gone"), "eth0")
            .conf(&conf("host", "1.1.0"))
            .run()
            .ok();
    });
}

fn container_conf(target: &str) -> Value {
    json!({"cniVersion": "1.1.0", "name": "joined", "type": "container", "target": target})
}

#[test]
fn container_joins_the_owner_and_never_touches_it() {
    sandbox(|sb| {
        let owner = sb.netns("owner");
        sb.sh("ip link add ov0 type veth peer name ov1 netns owner && ip addr add 198.51.100.1/24 dev ov0 && ip link set ov0 up");
        sb.sh("ip -n owner link set ov1 addrgenmode none");
        sb.sh("ip -n owner addr add 198.51.100.2/24 dev ov1 && ip -n owner link set ov1 up");
        // Let the link settle (carrier) before taking the snapshot the plugin must not change.
        sb.wait_oper_up(Some("owner"), "ov1");
        let before = kernel_state(sb, Some("owner"));
        // The runtime gives every joiner the owner's namespace.
        let r = CniCall::new("container", "ADD")
            .attachment("joiner1", &owner, "eth0")
            .conf(&container_conf(owner.to_str().unwrap()))
            .run()
            .ok();
        let ifaces = r["interfaces"].as_array().unwrap();
        let ov1 = ifaces
            .iter()
            .position(|i| i["name"] == "ov1")
            .expect("owner's link reported");
        assert_eq!(ifaces[ov1]["sandbox"], owner.to_str().unwrap());
        assert!(r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .any(|ip| ip["address"] == "198.51.100.2/24" && ip["interface"] == ov1));
        let mut c = container_conf(owner.to_str().unwrap());
        c["prevResult"] = r;
        CniCall::new("container", "CHECK")
            .attachment("joiner1", &owner, "eth0")
            .conf(&c)
            .run()
            .ok();
        for _ in 0..2 {
            CniCall::new("container", "DEL")
                .attachment("joiner1", &owner, "eth0")
                .conf(&container_conf(owner.to_str().unwrap()))
                .run()
                .ok();
        }
        assert_eq!(
            before,
            kernel_state(sb, Some("owner")),
            "joiner changed the owner"
        );
        // The owner still works after the joiner left.
        assert!(sb.ping("owner", "198.51.100.1"));
    });
}

#[test]
fn container_bad_inputs_name_the_problem() {
    sandbox(|sb| {
        let owner = sb.netns("owner");
        let other = sb.netns("other");
        // Target missing: retryable (11), not "container unknown" (3).
        let (code, msg) = CniCall::new("container", "ADD")
            .attachment("j", &owner, "eth0")
            .conf(&container_conf("/run/netns/absent"))
            .run()
            .err();
        assert_eq!(code, 11, "{msg}");
        assert!(
            msg.contains("/run/netns/absent") && msg.contains("does not exist"),
            "{msg}"
        );
        // Target and CNI_NETNS differ.
        let (code, msg) = CniCall::new("container", "ADD")
            .attachment("j", &other, "eth0")
            .conf(&container_conf(owner.to_str().unwrap()))
            .run()
            .err();
        assert_eq!(code, 8, "{msg}");
        assert!(msg.contains("is not the target namespace"), "{msg}");
        // Target is not a namespace.
        std::fs::write("/run/rcni-test/plain", b"x").unwrap();
        let (code, msg) = CniCall::new("container", "ADD")
            .attachment("j", &owner, "eth0")
            .conf(&container_conf("/run/rcni-test/plain"))
            .run()
            .err();
        assert_eq!(code, 7, "{msg}");
        // No target at all.
        let (code, msg) = CniCall::new("container", "ADD")
            .attachment("j", &owner, "eth0")
            .conf(&json!({"cniVersion": "1.1.0", "name": "joined", "type": "container"}))
            .run()
            .err();
        assert_eq!(code, 7);
        assert!(msg.contains("target"), "{msg}");
        let _ = sb;
    });
}

#[test]
fn mode_plugins_answer_version_gc_and_status() {
    sandbox(|sb| {
        let _ = sb;
        for plugin in ["none", "loopback", "host", "container"] {
            let v = CniCall::new(plugin, "VERSION").stdin("garbage").run().ok();
            assert_eq!(
                v["supportedVersions"],
                json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
            );
            for verb in ["GC", "STATUS"] {
                let mut c = conf(plugin, "1.1.0");
                c["cni.dev/valid-attachments"] = json!([]);
                CniCall::new(plugin, verb).conf(&c).run().ok();
            }
        }
    });
}
