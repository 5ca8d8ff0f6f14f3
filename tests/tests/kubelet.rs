//! Kubelet-style suite: pods driven through whole conflists exactly as containerd's CRI
//! plugin does it, through our libcni-compatible runtime side (`cni::runtime`).
//!
//! Per pod: a loopback network (cniVersion 0.3.1) and the pod network (bridge + host-local +
//! portmap), CNI_ARGS with `IgnoreUnknown=1;K8S_POD_*` in varying key order.
//! Lifecycle: ADD -> CHECK -> DEL (with netns and cached prevResult) -> DEL again with an empty
//! CNI_NETNS and no cache (containerd does this on every later Stop/Remove) -> nothing left.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use cni::config::NetConfList;
use cni::runtime::{CniConfig, RuntimeConf};
use cni::skel::Attachment;
use integration_tests::{bin_dir, sandbox, Background, CniState, Sandbox};
use serde_json::json;

struct Cluster {
    cfg: CniConfig,
    loopback: NetConfList,
    pod_net: NetConfList,
    data: PathBuf,
    cache: PathBuf,
}

fn cluster(sb: &Sandbox, version: &str, extra_plugins: &[serde_json::Value]) -> Cluster {
    let data = sb.dir(&format!("ipam-{version}"));
    let cache = sb.dir(&format!("cache-{version}"));
    let mut plugins = vec![
        json!({"type": "bridge", "bridge": "cni0", "isGateway": true,
        "isDefaultGateway": true, "ipMasq": true, "hairpinMode": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/16"}]], "dataDir": data}}),
    ];
    plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    plugins.extend_from_slice(extra_plugins);
    let pod = json!({"cniVersion": version, "name": "k8s-pod-network", "plugins": plugins});
    let lo =
        json!({"cniVersion": "0.3.1", "name": "cni-loopback", "plugins": [{"type": "loopback"}]});
    Cluster {
        cfg: CniConfig::new(vec![bin_dir()], cache.clone()),
        loopback: NetConfList::parse(&serde_json::to_vec(&lo).unwrap()).unwrap(),
        pod_net: NetConfList::parse(&serde_json::to_vec(&pod).unwrap()).unwrap(),
        data,
        cache,
    }
}

/// CNI_ARGS the way kubelet's runtimes build them; the key order varies with `seed`.
fn k8s_args(pod: &str, seed: usize) -> Vec<(String, String)> {
    let mut kv = vec![
        ("K8S_POD_NAMESPACE".to_string(), "default".to_string()),
        ("K8S_POD_NAME".to_string(), pod.to_string()),
        (
            "K8S_POD_INFRA_CONTAINER_ID".to_string(),
            format!("{pod}-sandbox"),
        ),
        ("K8S_POD_UID".to_string(), format!("uid-{pod}")),
    ];
    kv.rotate_left(seed % 4);
    kv.insert(seed % 3, ("IgnoreUnknown".to_string(), "1".to_string()));
    kv
}

fn rt(pod: &str, netns: &str, ifname: &str, seed: usize) -> RuntimeConf {
    let mut caps = serde_json::Map::new();
    // containerd sends Go-style keys.
    caps.insert(
        "portMappings".into(),
        json!([{"HostPort": 18000 + seed, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
               {"HostPort": 28000 + seed, "ContainerPort": 53, "Protocol": "udp", "HostIP": ""}]),
    );
    RuntimeConf {
        container_id: format!("{pod}-sandbox"),
        netns: netns.to_string(),
        ifname: ifname.to_string(),
        args: k8s_args(pod, seed),
        capability_args: caps,
    }
}

impl Cluster {
    /// RunPodSandbox: netns, loopback network, pod network. Returns the pod IP.
    fn run_pod(&self, sb: &Sandbox, pod: &str, seed: usize) -> String {
        let ns = sb.netns(pod);
        let ns = ns.to_str().unwrap();
        self.cfg
            .add_network_list(&self.loopback, &rt(pod, ns, "lo", seed))
            .unwrap();
        let r = self
            .cfg
            .add_network_list(&self.pod_net, &rt(pod, ns, "eth0", seed))
            .unwrap_or_else(|e| panic!("ADD {pod}: {e}"));
        r.ips[0].address.addr().to_string()
    }

    fn check_pod(&self, pod: &str, seed: usize) {
        let ns = format!("/run/netns/{pod}");
        self.cfg
            .check_network_list(&self.pod_net, &rt(pod, &ns, "eth0", seed))
            .unwrap_or_else(|e| panic!("CHECK {pod}: {e}"));
    }

    /// StopPodSandbox then RemovePodSandbox: DEL with the netns, the netns goes, DEL again
    /// with an empty CNI_NETNS (no cache left, so no prevResult).
    fn stop_and_remove_pod(&self, sb: &Sandbox, pod: &str, seed: usize) {
        let ns = format!("/run/netns/{pod}");
        self.cfg
            .del_network_list(&self.pod_net, &rt(pod, &ns, "eth0", seed))
            .unwrap_or_else(|e| panic!("DEL {pod}: {e}"));
        self.cfg
            .del_network_list(&self.loopback, &rt(pod, &ns, "lo", seed))
            .unwrap();
        sb.sh(&format!("ip netns del {pod}"));
        self.cfg
            .del_network_list(&self.pod_net, &rt(pod, "", "eth0", seed))
            .unwrap_or_else(|e| panic!("second DEL {pod}: {e}"));
        self.cfg
            .del_network_list(&self.loopback, &rt(pod, "", "lo", seed))
            .unwrap();
    }

    /// Where this cluster's pod network keeps its state.
    fn state(&self) -> CniState<'_> {
        CniState {
            data_dir: &self.data,
            cache_dir: &self.cache,
            network: "k8s-pod-network",
        }
    }

    /// Everything an attachment can leave behind, as (what, count), veths given time to settle.
    fn leftovers_settled(&self, sb: &Sandbox, expect_veths: usize) -> Vec<(&'static str, usize)> {
        sb.cni_leftovers_settled(&self.state(), expect_veths)
    }

    /// Everything an attachment can leave behind, as (what, count).
    fn leftovers(&self, sb: &Sandbox) -> Vec<(&'static str, usize)> {
        sb.cni_leftovers(&self.state())
    }

    fn assert_clean(&self, sb: &Sandbox) {
        sb.assert_no_cni_leftovers(&self.state());
    }
}

#[test]
fn pod_lifecycle_at_every_runtime_version() {
    sandbox(|sb| {
        for version in ["1.0.0", "1.1.0", "0.4.0"] {
            let c = cluster(sb, version, &[]);
            let ip1 = c.run_pod(sb, "web", 0);
            let ip2 = c.run_pod(sb, "db", 1);
            assert_ne!(ip1, ip2);
            c.check_pod("web", 0);
            c.check_pod("db", 1);
            // The cache holds the final result in libcni's format.
            let cached = c.cache.join("results/k8s-pod-network-web-sandbox-eth0");
            let entry: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&cached).unwrap()).unwrap();
            assert_eq!(entry["kind"], "cniCacheV1");
            assert!(sb.ping("web", &ip2), "pod to pod at {version}");
            c.stop_and_remove_pod(sb, "web", 0);
            c.stop_and_remove_pod(sb, "db", 1);
            c.assert_clean(sb);
        }
    });
}

#[test]
fn pod_churn_leaves_nothing() {
    sandbox(|sb| {
        let c = cluster(sb, "1.0.0", &[]);
        for i in 0..200 {
            let pod = format!("churn{i}");
            c.run_pod(sb, &pod, i);
            c.stop_and_remove_pod(sb, &pod, i);
        }
        c.assert_clean(sb);
    });
}

#[test]
fn fifty_pods_in_parallel() {
    sandbox(|sb| {
        let c = cluster(sb, "1.1.0", &[]);
        let pods: Vec<String> = (0..50).map(|i| format!("par{i}")).collect();
        for p in &pods {
            sb.netns(p);
        }
        let ips: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let c = &c;
                    s.spawn(move || {
                        let ns = format!("/run/netns/{p}");
                        c.cfg
                            .add_network_list(&c.pod_net, &rt(p, &ns, "eth0", i))
                            .unwrap_or_else(|e| panic!("parallel ADD {p}: {e}"))
                            .ips[0]
                            .address
                            .addr()
                            .to_string()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut unique = ips.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 50, "duplicate pod IPs: {ips:?}");
        assert!(sb.ping("par0", &ips[49]));
        std::thread::scope(|s| {
            for (i, p) in pods.iter().enumerate() {
                let c = &c;
                s.spawn(move || {
                    let ns = format!("/run/netns/{p}");
                    c.cfg
                        .del_network_list(&c.pod_net, &rt(p, &ns, "eth0", i))
                        .unwrap_or_else(|e| panic!("parallel DEL {p}: {e}"));
                });
            }
        });
        c.assert_clean(sb);
    });
}

#[test]
fn chain_failing_midway_then_runtime_del_leaves_nothing() {
    sandbox(|sb| {
        let c = cluster(sb, "1.0.0", &[json!({"type": "not-installed"})]);
        let ns = sb.netns("broken");
        let rt1 = rt("broken", ns.to_str().unwrap(), "eth0", 0);
        let err = c.cfg.add_network_list(&c.pod_net, &rt1).unwrap_err();
        assert!(err.msg.contains("not-installed"), "{}", err.msg);
        // bridge ran before the failure: its veth and lease exist until the runtime DELs.
        assert_eq!(c.leftovers(sb)[0], ("leases", 1));
        // containerd DELs after every failed ADD; the missing plugin's DEL fails, bridge's
        // still runs.
        let err = c.cfg.del_network_list(&c.pod_net, &rt1).unwrap_err();
        assert!(err.msg.contains("not-installed"), "{}", err.msg);
        c.assert_clean(sb);
    });
}

#[test]
fn gc_after_lost_dels_removes_only_stale_pods() {
    sandbox(|sb| {
        let c = cluster(sb, "1.1.0", &[]);
        c.run_pod(sb, "a", 0);
        c.run_pod(sb, "b", 1);
        let ip_c = c.run_pod(sb, "c", 2);
        // The kubelet restarted: a and b were removed without DEL.
        sb.sh("ip netns del a && ip netns del b");
        let valid = vec![Attachment {
            container_id: "c-sandbox".into(),
            ifname: "eth0".into(),
        }];
        c.cfg.gc_network_list(&c.pod_net, &valid).unwrap();
        let left = c.leftovers_settled(sb, 1);
        assert_eq!(left[0], ("leases", 1), "{left:?}");
        assert_eq!(left[1], ("cache files", 1), "{left:?}");
        assert_eq!(left[2], ("veths", 1), "{left:?}");
        // The survivor's masquerade address and its two published ports (tcp, udp).
        assert_eq!(left[3], ("nftables entries", 3), "{left:?}");
        // The surviving pod still works.
        c.run_pod(sb, "d", 3);
        assert!(sb.ping("d", &ip_c));
        // STATUS of the whole list (1.1.0) is fine.
        c.cfg.status_network_list(&c.pod_net).unwrap();
    });
}

/// Start a TCP (port 80) and a UDP (port 53) responder in a pod, ready when this returns.
fn responders(sb: &Sandbox, pod: &str) -> Vec<Background> {
    let tcp_reply = format!("SYSTEM:echo tcp-{pod}");
    let udp_reply = format!("SYSTEM:echo udp-{pod}");
    let v = vec![
        sb.spawn_in(pod, &["socat", "TCP-LISTEN:80,fork,reuseaddr", &tcp_reply]),
        sb.spawn_in(pod, &["socat", "UDP-LISTEN:53,fork,reuseaddr", &udp_reply]),
    ];
    sb.wait_listening(pod, "tcp", 80);
    sb.wait_listening(pod, "udp", 53);
    v
}

/// One request/response through `addr:port`, tried up to three times. UDP may lose a datagram
/// when the test machine is saturated by the parallel churn tests. TCP too came back empty now
/// and then on such a machine (socat: connected, then EOF from the responder, exit 0), and a
/// verbose retry right after got the reply (observed 2026-12-04; cause not traced). A port that
/// never answers still fails, and checks that a port is closed get three chances to see it open.
fn fetch(sb: &Sandbox, from: Option<&str>, proto: &str, addr: &str, port: usize) -> String {
    // -t: after our stdin's EOF socat waits only 0.5 s for the reply by default, less than a
    // forked responder takes on a machine saturated by the parallel churn tests.
    let cmd = format!("echo ping | socat -t5 -T5 - {proto}:{addr}:{port}");
    let attempts = 3;
    let mut reply = String::new();
    for _ in 0..attempts {
        let out = match from {
            Some(ns) => sb.exec_in(ns, &cmd),
            None => sb.try_sh(&cmd),
        };
        reply = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !reply.is_empty() {
            break;
        }
    }
    reply
}

#[test]
fn host_ports_reach_pods_from_host_pods_and_themselves() {
    sandbox(|sb| {
        let c = cluster(sb, "1.0.0", &[]);
        c.run_pod(sb, "web", 0);
        c.run_pod(sb, "client", 1);
        let _responders = responders(sb, "web");
        // Host to hostPort (the node's address on the pod bridge, and localhost).
        assert_eq!(fetch(sb, None, "TCP", "10.244.0.1", 18000), "tcp-web");
        assert_eq!(fetch(sb, None, "TCP", "127.0.0.1", 18000), "tcp-web");
        // UDP hostPort.
        assert_eq!(fetch(sb, None, "UDP", "10.244.0.1", 28000), "udp-web");
        // Another pod to web's hostPort, and web to its own hostPort (hairpin).
        assert_eq!(
            fetch(sb, Some("client"), "TCP", "10.244.0.1", 18000),
            "tcp-web"
        );
        assert_eq!(
            fetch(sb, Some("web"), "TCP", "10.244.0.1", 18000),
            "tcp-web"
        );
        c.check_pod("web", 0);
        c.stop_and_remove_pod(sb, "web", 0);
        assert_ne!(fetch(sb, None, "TCP", "10.244.0.1", 18000), "tcp-web");
        c.stop_and_remove_pod(sb, "client", 1);
        c.assert_clean(sb);
    });
}
