//! The CNI protocol and plugin skeleton rules against a real plugin binary (listed in
//! docs/scenarios.md).
//! `loopback` is the subject: the smallest plugin, so failures point at the skeleton.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use integration_tests::{sandbox, CniCall};
use serde_json::{json, Value};

const ALL: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "proto", "type": "loopback"})
}

fn lo_is_up(sb: &integration_tests::Sandbox, ns: &str) -> bool {
    sb.link(Some(ns), "lo").unwrap()["flags"]
        .as_array()
        .unwrap()
        .contains(&json!("UP"))
}

#[test]
fn version_ignores_stdin_and_lists_all_versions() {
    sandbox(|_| {
        let v = CniCall::new("loopback", "VERSION")
            .stdin("{not json")
            .run()
            .ok();
        assert_eq!(v["supportedVersions"], json!(ALL));
        assert!(v["cniVersion"].is_string());
        // The spec asks VERSION to echo a supported input version.
        let v = CniCall::new("loopback", "VERSION")
            .conf(&conf("0.4.0"))
            .run()
            .ok();
        assert_eq!(v["cniVersion"], "0.4.0");
    });
}

#[test]
fn no_command_prints_about_on_stderr_only() {
    sandbox(|_| {
        let out = CniCall::new("loopback", "ADD").unset("CNI_COMMAND").run();
        assert_eq!(out.code, 0);
        assert!(
            out.stdout.is_empty(),
            "stdout must stay empty: {}",
            out.stdout
        );
        assert!(out.stderr.contains("1.1.0"), "{}", out.stderr);
    });
}

#[test]
fn unknown_command_is_refused() {
    sandbox(|_| {
        let (code, msg) = CniCall::new("loopback", "FOO")
            .conf(&conf("1.1.0"))
            .run()
            .err();
        assert_eq!(code, 4);
        assert!(msg.contains("unknown CNI_COMMAND: FOO"), "{msg}");
    });
}

#[test]
fn missing_env_is_named_and_nothing_changes() {
    sandbox(|sb| {
        let ns = sb.netns("c");
        sb.sh("ip -n c link set lo down");
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            let (code, msg) = CniCall::new("loopback", "ADD")
                .attachment("c1", &ns, "eth0")
                .unset(var)
                .conf(&conf("1.1.0"))
                .run()
                .err();
            assert_eq!(code, 4, "{var}: {msg}");
            assert!(msg.contains(var), "{var} not named: {msg}");
            // An empty value counts as missing.
            let (code, _) = CniCall::new("loopback", "ADD")
                .attachment("c1", &ns, "eth0")
                .env(var, "")
                .conf(&conf("1.1.0"))
                .run()
                .err();
            assert_eq!(code, 4);
        }
        // All missing ones are named in one error.
        let (_, msg) = CniCall::new("loopback", "ADD")
            .unset("CNI_PATH")
            .conf(&conf("1.1.0"))
            .run()
            .err();
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            assert!(msg.contains(var), "{var} not named: {msg}");
        }
        assert!(!lo_is_up(sb, "c"), "a rejected call changed the namespace");
    });
}

#[test]
fn del_without_netns_succeeds() {
    sandbox(|_| {
        CniCall::new("loopback", "DEL")
            .env("CNI_CONTAINERID", "c1")
            .env("CNI_IFNAME", "eth0")
            .conf(&conf("1.1.0"))
            .run()
            .ok();
    });
}

#[test]
fn ifname_and_container_id_rules() {
    sandbox(|sb| {
        let ns = sb.netns("c");
        for bad in ["abcdefghijklmnop", "a/b", ".", "..", "a:b", "a b", "a\tb"] {
            let (code, msg) = CniCall::new("loopback", "ADD")
                .attachment("c1", &ns, bad)
                .conf(&conf("1.1.0"))
                .run()
                .err();
            assert_eq!(code, 4, "ifname {bad:?}: {msg}");
        }
        let (_, msg) = CniCall::new("loopback", "ADD")
            .attachment("c1", &ns, "abcdefghijklmnop")
            .conf(&conf("1.1.0"))
            .run()
            .err();
        assert!(msg.contains("interface name is too long"), "{msg}");
        // 15 bytes is the kernel's limit and is fine.
        CniCall::new("loopback", "ADD")
            .attachment("c1", &ns, "abcdefghijklmno")
            .conf(&conf("1.1.0"))
            .run()
            .ok();
        for bad in ["-bad", "bad id", "a/b", "_x"] {
            let (code, msg) = CniCall::new("loopback", "ADD")
                .attachment(bad, &ns, "eth0")
                .conf(&conf("1.1.0"))
                .run()
                .err();
            assert_eq!(code, 4, "cid {bad:?}: {msg}");
            assert!(msg.contains("invalid characters in containerID"), "{msg}");
        }
    });
}

#[test]
fn bad_json_is_a_decode_error_for_add_and_del() {
    sandbox(|sb| {
        let ns = sb.netns("c");
        for verb in ["ADD", "DEL"] {
            for stdin in ["", "{", "[1,2", "null"] {
                let (code, msg) = CniCall::new("loopback", verb)
                    .attachment("c1", &ns, "eth0")
                    .stdin(stdin)
                    .run()
                    .err();
                assert_eq!(code, 6, "{verb} {stdin:?}: {msg}");
            }
        }
    });
}

#[test]
fn network_name_rules() {
    sandbox(|sb| {
        let ns = sb.netns("c");
        let (code, msg) = CniCall::new("loopback", "ADD")
            .attachment("c1", &ns, "eth0")
            .conf(&json!({"cniVersion": "1.1.0", "type": "loopback"}))
            .run()
            .err();
        assert_eq!(code, 7);
        assert!(msg.contains("missing network name"), "{msg}");
        for bad in ["a/b", "a b", "../x"] {
            let (code, msg) = CniCall::new("loopback", "ADD")
                .attachment("c1", &ns, "eth0")
                .conf(&json!({"cniVersion": "1.1.0", "name": bad, "type": "loopback"}))
                .run()
                .err();
            assert_eq!(code, 7, "{bad:?}: {msg}");
        }
    });
}

#[test]
fn unsupported_version_lists_supported_ones() {
    sandbox(|sb| {
        let ns = sb.netns("c");
        for verb in ["ADD", "DEL"] {
            let out = CniCall::new("loopback", verb)
                .attachment("c1", &ns, "eth0")
                .conf(&conf("9.9.9"))
                .run();
            let (code, _) = out.err();
            assert_eq!(code, 1);
            let details = out.json()["details"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                details.contains("1.1.0") && details.contains("0.1.0"),
                "{details}"
            );
        }
        // cniVersions negotiation: the highest supported entry wins, unknown higher ones drop.
        let r = CniCall::new("loopback", "ADD")
            .attachment("c1", &ns, "eth0")
            .conf(&json!({"cniVersion": "0.4.0", "cniVersions": ["0.4.0", "1.0.0", "9.0.0"], "name": "proto", "type": "loopback"}))
            .run()
            .ok();
        assert_eq!(r["cniVersion"], "1.0.0");
    });
}

#[test]
fn check_gc_status_need_recent_versions() {
    sandbox(|sb| {
        let ns = sb.netns("c");
        let (code, msg) = CniCall::new("loopback", "CHECK")
            .attachment("c1", &ns, "eth0")
            .conf(&conf("0.3.1"))
            .run()
            .err();
        assert_eq!(code, 1);
        assert!(msg.contains("config version does not allow CHECK"), "{msg}");
        for verb in ["GC", "STATUS"] {
            let (code, _) = CniCall::new("loopback", verb)
                .conf(&conf("1.0.0"))
                .run()
                .err();
            assert_eq!(code, 1, "{verb}");
        }
    });
}

#[test]
fn prev_result_must_match_the_config_version_family() {
    sandbox(|sb| {
        let ns = sb.netns("c");
        let prev = |v: Option<&str>| {
            let mut p = json!({"interfaces": [{"name": "eth0", "sandbox": ns}],
                               "ips": [{"version": "4", "interface": 0, "address": "10.1.0.2/24"}]});
            if let Some(v) = v {
                p["cniVersion"] = json!(v);
            }
            p
        };
        let mut c = conf("1.0.0");
        c["prevResult"] = prev(Some("0.4.0"));
        let out = CniCall::new("loopback", "ADD")
            .attachment("c1", &ns, "eth0")
            .conf(&c)
            .run();
        assert_ne!(
            out.code, 0,
            "a 0.4.0 prevResult under a 1.0.0 config must fail"
        );
        out.err();
        c["prevResult"] = prev(None);
        let r = CniCall::new("loopback", "ADD")
            .attachment("c1", &ns, "eth0")
            .conf(&c)
            .run()
            .ok();
        assert_eq!(r["ips"][0]["address"], "10.1.0.2/24");
    });
}

/// A plugin that reads CNI_ARGS (host-local here, bridge and tuning too) refuses unknown keys
/// unless IgnoreUnknown is set, and malformed pairs; one that never reads it (loopback, portmap,
/// firewall) accepts anything, exactly as the reference's do (checked side by side with
/// /usr/lib/cni 1.1.1: their loopback, portmap and firewall succeed with `FOO=bar`).
#[test]
fn cni_args_are_parsed_and_unknown_keys_refused() {
    sandbox(|sb| {
        let ns = sb.netns("c");
        let ipam = json!({"cniVersion": "1.1.0", "name": "proto",
                          "ipam": {"type": "host-local", "subnet": "10.3.0.0/24",
                                   "dataDir": sb.dir("ipam")}});
        let call = |plugin: &str, c: &Value, args: &str| {
            CniCall::new(plugin, "ADD")
                .attachment("c1", &ns, "eth0")
                .env("CNI_ARGS", args)
                .conf(c)
                .run()
        };
        let (_, msg) = call("host-local", &ipam, "K8S_POD_NAME=x;IP=10.3.0.9").err();
        assert!(msg.contains("unknown args"), "{msg}");
        let r = call(
            "host-local",
            &ipam,
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=x;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u;IP=10.3.0.9",
        )
        .ok();
        assert_eq!(r["ips"][0]["address"], "10.3.0.9/24");
        let (_, msg) = call("host-local", &ipam, "badpair").err();
        assert!(msg.contains("invalid pair"), "{msg}");
        let (_, msg) = call("host-local", &ipam, "IgnoreUnknown=1;A=b=c").err();
        assert!(msg.contains("invalid pair"), "{msg}");
        for args in [
            "K8S_POD_NAME=x;IP=10.0.0.2",
            "K8S_POD_UID=u;IgnoreUnknown=true;K8S_POD_NAME=x",
            "badpair",
        ] {
            call("loopback", &conf("1.1.0"), args).ok();
        }
        assert!(lo_is_up(sb, "c"));
    });
}

#[test]
fn netns_path_problems_are_named() {
    sandbox(|sb| {
        let missing = std::path::Path::new("/run/netns/absent");
        let (_, msg) = CniCall::new("loopback", "ADD")
            .attachment("c1", missing, "eth0")
            .conf(&conf("1.1.0"))
            .run()
            .err();
        assert!(msg.contains("/run/netns/absent"), "{msg}");
        let plain = sb.dir("x").join("plain");
        std::fs::write(&plain, b"").unwrap();
        let (_, msg) = CniCall::new("loopback", "ADD")
            .attachment("c1", &plain, "eth0")
            .conf(&conf("1.1.0"))
            .run()
            .err();
        assert!(msg.contains("unknown FS magic"), "{msg}");
    });
}

/// portmap and firewall program the host only: like the reference's, they accept a CNI_NETNS
/// that is not a namespace (a VM runtime's path) and CNI_ARGS they do not read, and still add
/// and remove their entries.
#[test]
fn host_only_plugins_accept_any_netns_and_unread_args() {
    sandbox(|sb| {
        // The "VM" is reached through a host link (portmap needs a route to the address).
        sb.sh("ip link add vm42 type veth peer name vm42-peer && ip addr add 10.4.0.1/24 dev vm42 && ip link set vm42 up");
        let not_ns = sb.scratch().join("vm-42");
        std::fs::write(&not_ns, b"").unwrap();
        let prev = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": not_ns.to_str().unwrap()}],
            "ips": [{"address": "10.4.0.2/24", "interface": 0}]});
        let portmap = json!({"cniVersion": "1.0.0", "name": "hostonly", "type": "portmap",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [
                {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": prev});
        let firewall = json!({"cniVersion": "1.0.0", "name": "hostonly", "type": "firewall",
                              "prevResult": prev});
        let call = |plugin: &str, verb: &str, c: &Value| {
            CniCall::new(plugin, verb)
                .attachment("vm42", &not_ns, "eth0")
                .env("CNI_ARGS", "VM_ID=42;badpair")
                .conf(c)
                .run()
        };
        let owner = "net: hostonly, id: vm42";
        call("portmap", "ADD", &portmap).ok();
        call("firewall", "ADD", &firewall).ok();
        assert!(sb.nft_entries(owner) >= 2, "both plugins added entries");
        call("firewall", "DEL", &firewall).ok();
        call("portmap", "DEL", &portmap).ok();
        assert_eq!(sb.nft_entries(owner), 0);
    });
}
