//! Multi-host overlay networks (issue 16, docs/overlay.md) end to end, on one machine.
//!
//! Each test builds a small cluster inside its private sandbox: the test's own namespace is the
//! underlay "switch" (bridge `ul0`, 192.168.77.254/24) and runs etcd (Debian `etcd-server`) on
//! that address with its own data directory; each node is a network namespace joined to `ul0` by
//! a veth (192.168.77.N), plus a mount namespace held by a `sleep` process with its own /run (so
//! sandbox pins, lease files and firewall locks are per node), running its own sandboxd with its
//! own data directory. Every process is stopped by PID. Traffic is checked with ping and socat
//! between sandboxes of different nodes; the kernel state with iproute2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::daemon::Sandboxd;
use integration_tests::{bin_dir, plugin_bin, sandbox, Sandbox};
use serde_json::Value;

// Short enough for the tests to watch leases expire, long enough (keepalive every TTL/3) that a
// loaded CI machine does not expire one by accident.
const TTL: u32 = 5;
const ETCD: &str = "192.168.77.254:2379";

fn kill(c: &mut Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the PID of our own child, not reaped yet.
    unsafe { libc::kill(c.id() as i32, sig) };
    let _ = c.wait();
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
}

impl Etcd {
    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("log")).unwrap();
        let c = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &format!("http://{ETCD}"),
                "--advertise-client-urls",
                &format!("http://{ETCD}"),
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "t=http://127.0.0.1:2380",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(c);
        wait_for("etcd", 20, || self.ctl("endpoint health").status.success());
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c, libc::SIGTERM);
        }
    }
    /// SIGSTOP/SIGCONT: an etcd that hangs (connections accepted, nothing answered).
    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("etcd runs").id();
        // SAFETY: kill(2) on the PID of our own child, not reaped yet.
        assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
    }
    fn ctl(&self, args: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ETCDCTL_API=3 etcdctl --endpoints=http://{ETCD} --dial-timeout=1s --command-timeout=2s {args}"
            ))
            .output()
            .unwrap()
    }
    fn keys(&self, prefix: &str) -> Vec<String> {
        let o = self.ctl(&format!("get --prefix --keys-only {prefix}"));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One node: a namespace pinned by the hub, a holder process owning its mount namespace, and
/// its sandboxd.
struct Node {
    n: u8,
    holder: Child,
    daemon: Sandboxd,
    dir: PathBuf,
}

impl Node {
    fn name(&self) -> String {
        format!("node{}", self.n)
    }
    fn ip(&self) -> String {
        format!("192.168.77.{}", self.n)
    }
    fn sock(&self) -> PathBuf {
        self.dir.join("sandboxd.sock")
    }
    fn log(&self) -> String {
        self.daemon.log()
    }
    fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// Run a shell command inside the node (its network and mount namespaces).
    fn sh(&self, cmd: &str) -> Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.pid().to_string(),
                "-m",
                "-n",
                "--",
                "sh",
                "-c",
                cmd,
            ])
            .output()
            .unwrap()
    }
    fn ok(&self, cmd: &str) -> String {
        let o = self.sh(cmd);
        assert!(
            o.status.success(),
            "{}: `{cmd}` failed: {}{}",
            self.name(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// What `getent hosts NAME` gives inside sandbox `sb` (glibc, through the resolv.conf
    /// sandboxd wrote for it): the address, or None.
    fn resolve(&self, sb: &str, name: &str) -> Option<String> {
        let o = self.sh(&format!(
            "NETNS_ETC_DIR={} {} exec {sb} getent hosts {name}",
            self.dir.join("etc").display(),
            plugin_bin("netns").display()
        ));
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .map(str::to_string)
    }

    /// Run a command in one of the node's sandboxes.
    fn in_sb(&self, sb: &str, cmd: &str) -> Output {
        self.sh(&format!("ip netns exec {sb} sh -c '{cmd}'"))
    }
    /// One echo answered within three tries (the first may wait for ARP on a busy machine).
    fn ping(&self, sb: &str, ip: &str) -> bool {
        (0..3).any(|_| {
            self.in_sb(sb, &format!("ping -c1 -W1 {ip} >/dev/null 2>&1"))
                .status
                .success()
        })
    }

    /// The node's sandboxd, run inside its namespaces, joined to the test's etcd.
    fn daemon(n: u8, holder: u32, dir: &Path) -> Sandboxd {
        // Names: /etc files per sandbox under the node's directory, no upstream resolvers.
        std::fs::write(dir.join("resolv.conf"), "").unwrap();
        Sandboxd::new(dir.join("sandboxd.sock"), dir.join("data"))
            .arg("--etc-netns")
            .arg(dir.join("etc"))
            .arg("--resolv-conf")
            .arg(dir.join("resolv.conf"))
            .under(["nsenter", "-t", &holder.to_string(), "-m", "-n", "--"])
            .log_to(dir.join("log"))
            .arg("--conf-dir")
            .arg(dir.join("net.d"))
            .args(["--cluster-store", &format!("etcd://{ETCD}")])
            .args(["--advertise-addr", &format!("192.168.77.{n}")])
            .args(["--node-name", &format!("node{n}")])
            .args(["--lease-ttl", &TTL.to_string()])
            .env("SANDBOXD_LOG", "info,sandboxd::overlay=debug")
    }

    fn start(&mut self) {
        self.daemon.start();
    }

    /// SIGTERM by PID; the exit must be clean.
    fn stop(&mut self) {
        if self.daemon.running() {
            self.daemon.stop();
        }
    }

    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.daemon.try_api(method, path, body)
    }

    /// The netns CLI against this node's daemon.
    fn cli(&self, args: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} --daemon {} {args}",
                plugin_bin("netns").display(),
                self.sock().display()
            ))
            .output()
            .unwrap()
    }

    fn networks(&self) -> Vec<String> {
        let o = self.cli("network ls --json");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Create a sandbox; returns its address on its first endpoint.
    fn sandbox(&self, name: &str, net: &str, ports: &str) -> String {
        let body = format!(r#"{{"name":"{name}","network":"{net}","ports":[{ports}]}}"#);
        let (code, v) = self.api("POST", "/v1/sandboxes", Some(&body));
        assert_eq!(
            code,
            201,
            "{}: creating {name}: {v}\n{}",
            self.name(),
            self.log()
        );
        let a = v["endpoints"][0]["addresses"][0].as_str().unwrap();
        a.split('/').next().unwrap().to_string()
    }

    fn rm_sandbox(&self, name: &str) {
        let (code, v) = self.api("DELETE", &format!("/v1/sandboxes/{name}"), None);
        assert!(
            code == 204 || code == 200,
            "{}: removing {name}: {code} {v}",
            self.name()
        );
    }

    /// Routes through the overlay device (`dst` list).
    fn overlay_routes(&self, vni: u32) -> Vec<String> {
        let o = self.sh(&format!("ip -4 route show dev ovx.{vni} 2>/dev/null"));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains(" via "))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    }

    fn links(&self) -> Vec<String> {
        let o = self.ok("ip -o link show | awk -F': ' '{print $2}'");
        o.lines()
            .map(|l| l.split('@').next().unwrap().to_string())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A failing test kills the daemon in its own drop; a passing one stops it cleanly here.
        if !std::thread::panicking() {
            self.stop();
        }
        kill(&mut self.holder, libc::SIGKILL);
    }
}

struct Cluster {
    etcd: Etcd,
    nodes: Vec<Node>,
}

impl Cluster {
    fn new(sb: &Sandbox, count: u8) -> Cluster {
        for b in ["etcd", "etcdctl", "nsenter", "unshare", "socat", "curl"] {
            testbox::require_tool(b);
        }
        // A fixed address: a bridge without one takes its lowest port's, so each node added
        // would change the MAC the earlier nodes resolved for etcd.
        sb.sh("ip link add ul0 address 02:77:00:00:00:fe type bridge && ip addr add 192.168.77.254/24 dev ul0 && ip link set ul0 up");
        let root = PathBuf::from("/var/lib/cni/overlay-test");
        std::fs::create_dir_all(&root).unwrap();
        let mut etcd = Etcd {
            child: None,
            dir: root.join("etcd"),
        };
        std::fs::create_dir_all(&etcd.dir).unwrap();
        etcd.start();
        let mut nodes = Vec::new();
        for n in 1..=count {
            let name = format!("node{n}");
            sb.netns(&name);
            sb.sh(&format!(
                "ip link add ul{n} type veth peer name eth0 netns {name} && ip link set ul{n} master ul0 up && \
                 ip -n {name} addr add 192.168.77.{n}/24 dev eth0 && ip -n {name} link set eth0 up"
            ));
            let dir = root.join(&name);
            std::fs::create_dir_all(dir.join("net.d")).unwrap();
            let holder = Command::new("ip")
                .args(["netns", "exec", &name, "unshare", "-m", "--propagation", "private", "sh", "-c"])
                .arg("mount -t tmpfs tmpfs /run && mkdir -p /run/netns && touch /run/ready && exec sleep 100000")
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            let ready = PathBuf::from(format!("/proc/{}/root/run/ready", holder.id()));
            wait_for("node mount namespace", 10, || ready.exists());
            let daemon = Node::daemon(n, holder.id(), &dir);
            let mut node = Node {
                n,
                holder,
                daemon,
                dir,
            };
            node.start();
            wait_for("the node's cluster store session", 20, || {
                node.log().contains("cluster store session up")
            });
            nodes.push(node);
        }
        Cluster { etcd, nodes }
    }

    /// Create an overlay network on node 1 with the CLI; every node lists it within 2 s.
    fn network(&self, name: &str, subnet: &str, vni: u32) {
        let o = self.nodes[0].cli(&format!(
            "network create {name} --driver overlay --subnet {subnet} -o subnet_len=24 -o vni={vni}"
        ));
        assert!(
            o.status.success(),
            "network create: {}{}\n{}\n--- etcd:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.nodes[0].log(),
            std::fs::read_to_string(self.etcd.dir.join("log")).unwrap_or_default()
        );
        for n in &self.nodes {
            let took = wait_for(&format!("{name} on {}", n.name()), 10, || {
                n.networks().contains(&name.to_string())
            });
            assert!(
                took < Duration::from_secs(2),
                "{} listed {name} only after {took:?}",
                n.name()
            );
        }
    }

    /// Remove the network (retrying while idle slices are released) and check every node is clean.
    fn remove_network(&self, name: &str, vni: u32, prefix: &str) {
        let n1 = &self.nodes[0];
        let bridge = n1.api("GET", &format!("/v1/networks/{name}"), None).1["bridge"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(bridge.starts_with("ovb-"), "{bridge}");
        // Other nodes release their idle slices up to 10 s after their last attachment.
        wait_for("network removal", 30, || {
            let o = n1.cli(&format!("network rm {name}"));
            o.status.success()
        });
        for n in &self.nodes {
            wait_for(&format!("{name} gone on {}", n.name()), 10, || {
                !n.networks().contains(&name.to_string())
                    && !n
                        .links()
                        .iter()
                        .any(|l| *l == bridge || *l == format!("ovx.{vni}"))
            });
            let leftovers = n.sh(&format!(
                "ls /run/rcni/overlay/{name}.json {d}/data/ipam/{name} 2>/dev/null; ls {d}/data/overlay-cni 2>/dev/null | grep '^{name}-'; \
                 ls {d}/data/cni-cache/results 2>/dev/null | grep '^{name}-'; {veths} \
                 ip -4 route | grep '{prefix}'; nft list ruleset 2>/dev/null | grep -e '{prefix}' -e '{bridge}'; true",
                d = n.dir.display(),
                // Veths are checked once the node has no sandbox left at all.
                veths = if n.api("GET", "/v1/sandboxes", None).1.as_array().is_some_and(|a| a.is_empty()) {
                    "ip -o link show type veth | grep -v ' eth0@';"
                } else {
                    ""
                }
            ));
            let text = String::from_utf8_lossy(&leftovers.stdout)
                .trim()
                .to_string();
            assert!(
                text.is_empty(),
                "{} has leftovers after removing {name}: {text}",
                n.name()
            );
        }
        // Exact keys: another network's name may start with this one's.
        let ours = [
            format!("/rcni.io/overlay/networks/{name}"),
            format!("/rcni.io/overlay/vnis/{vni}"),
        ];
        let left: Vec<String> = self
            .etcd
            .keys("/rcni.io/overlay/")
            .into_iter()
            .filter(|k| {
                ours.contains(k) || k.starts_with(&format!("/rcni.io/overlay/subnets/{name}/"))
            })
            .collect();
        assert!(
            left.is_empty(),
            "keys left in etcd after removing {name}: {left:?}"
        );
    }
}

/// A TCP echo of the peer address on `port` inside a sandbox of `node`.
fn serve_peer_addr(node: &Node, sb: &str, port: u16) -> Child {
    let c = Command::new("nsenter")
        .args([
            "-t",
            &node.pid().to_string(),
            "-m",
            "-n",
            "--",
            "ip",
            "netns",
            "exec",
            sb,
        ])
        .args([
            "socat",
            &format!("TCP-LISTEN:{port},fork,reuseaddr"),
            "SYSTEM:'echo $SOCAT_PEERADDR'",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("listener", 10, || {
        node.in_sb(sb, &format!("ss -Hltn sport = :{port} | grep -q LISTEN"))
            .status
            .success()
    });
    c
}

fn tcp_from(node: &Node, sb: Option<&str>, addr: &str, port: u16) -> String {
    let cmd = format!("socat -T2 - TCP:{addr}:{port},connect-timeout=2 </dev/null");
    let o = match sb {
        Some(sb) => node.in_sb(sb, &cmd),
        None => node.sh(&cmd),
    };
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn three_nodes_traffic_published_ports_node_restart_and_cleanup() {
    sandbox(|sb| {
        let c = Cluster::new(sb, 3);
        c.network("ov1", "10.77.0.0/16", 42);
        let [n1, n2, n3] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
        let a = n1.sandbox("a", "ov1", "");
        let b = n2.sandbox("b", "ov1", "");
        let cc = n3.sandbox("c", "ov1", r#"{"host_port":8080,"container_port":80}"#);
        // Three different slices of the overlay.
        let slice = |ip: &str| ip.rsplit_once('.').unwrap().0.to_string();
        assert!(slice(&a) != slice(&b) && slice(&b) != slice(&cc) && slice(&a) != slice(&cc));
        // Each node programs the two others: VXLAN device, neighbour, FDB, onlink route.
        for n in [n1, n2, n3] {
            wait_for(&format!("routes on {}", n.name()), 10, || {
                n.overlay_routes(42).len() == 2
            });
            let d = n.ok("ip -d link show ovx.42");
            assert!(
                d.contains("vxlan id 42") && d.contains("dstport 8472") && d.contains("nolearning"),
                "{d}"
            );
            assert!(d.contains("mtu 1450"), "MTU = uplink - 50: {d}");
            let fdb = n.ok("bridge fdb show dev ovx.42");
            assert_eq!(
                fdb.lines()
                    .filter(|l| l.contains("dst 192.168.77."))
                    .count(),
                2,
                "{fdb}"
            );
            let neigh = n.ok("ip neigh show dev ovx.42");
            assert_eq!(
                neigh.lines().filter(|l| l.contains("PERMANENT")).count(),
                2,
                "{neigh}"
            );
            let r = n.ok("ip route show dev ovx.42");
            assert!(r.contains("onlink"), "{r}");
        }
        // The sandboxes' MTU leaves room for the VXLAN header.
        assert!(
            String::from_utf8_lossy(&n1.in_sb("a", "ip link show eth0").stdout)
                .contains("mtu 1450")
        );
        // A second network with the same VNI is refused (the VNI is claimed in etcd).
        let o = n2.cli("network create dup --driver overlay --subnet 10.90.0.0/16 -o vni=42");
        assert!(!o.status.success(), "duplicate vni accepted");
        // Names across nodes: each node publishes its endpoints in etcd, every node's name
        // service answers them (by name, name.network, alias-free short forms as locally).
        for (n, sbx, name, want) in [
            (n1, "a", "b", &b),
            (n1, "a", "c.ov1", &cc),
            (n2, "b", "a", &a),
            (n3, "c", "b.ov1", &b),
            (n1, "a", "a", &a),
        ] {
            wait_for(
                &format!("{sbx} on {} resolves {name}", n.name()),
                10,
                || n.resolve(sbx, name).as_deref() == Some(want.as_str()),
            );
        }
        // Traffic between nodes, both ways.
        assert!(n1.ping("a", &b), "a -> b");
        assert!(n2.ping("b", &cc), "b -> c");
        assert!(n3.ping("c", &a), "c -> a");
        // TCP between slices keeps the source address (no masquerade inside the overlay).
        let mut srv = serve_peer_addr(n2, "b", 7000);
        assert_eq!(
            tcp_from(n1, Some("a"), &b, 7000),
            a,
            "peer address seen by b"
        );
        assert_eq!(tcp_from(n3, Some("c"), &b, 7000), cc);
        kill(&mut srv, libc::SIGKILL);
        // A published port of node 3 answers from another node (its underlay address).
        let mut web = serve_peer_addr(n3, "c", 80);
        let got = tcp_from(n1, None, &n3.ip(), 8080);
        assert!(
            !got.is_empty(),
            "published port 8080 of node3 did not answer from node1"
        );
        let got = tcp_from(n2, Some("b"), &n3.ip(), 8080);
        assert!(
            !got.is_empty(),
            "published port 8080 of node3 did not answer from sandbox b"
        );
        kill(&mut web, libc::SIGKILL);
        // Traffic leaving the overlay is masqueraded: a reaches node 2's underlay address
        // with node 1's underlay address as source.
        let mut und = Command::new("nsenter")
            .args([
                "-t",
                &n2.pid().to_string(),
                "-n",
                "--",
                "socat",
                "TCP-LISTEN:7100,reuseaddr",
                "SYSTEM:'echo $SOCAT_PEERADDR'",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("underlay listener", 10, || {
            n2.sh("ss -Hltn sport = :7100 | grep -q LISTEN")
                .status
                .success()
        });
        assert_eq!(tcp_from(n1, Some("a"), &n2.ip(), 7100), n1.ip());
        kill(&mut und, libc::SIGKILL);

        // Node 2 stops: after its lease expires, the others drop its route.
        let b_slice = format!("{}.0/24", slice(&b));
        let mut c2 = c.nodes.into_iter();
        let (n1, mut n2, n3) = (c2.next().unwrap(), c2.next().unwrap(), c2.next().unwrap());
        n2.stop();
        assert!(
            n1.ping("a", &b),
            "traffic keeps flowing while the daemon is down (lease alive)"
        );
        for n in [&n1, &n3] {
            wait_for(&format!("{} drops node2's route", n.name()), 15, || {
                !n.overlay_routes(42).contains(&b_slice)
            });
        }
        // Its names went with its lease.
        wait_for("node1 no longer resolves b", 10, || {
            n1.resolve("a", "b").is_none()
        });
        // It comes back with the same slice; the others program it again.
        n2.start();
        for n in [&n1, &n3] {
            wait_for(&format!("{} re-adds node2", n.name()), 15, || {
                n.overlay_routes(42).contains(&b_slice)
            });
        }
        assert!(n1.ping("a", &b), "a -> b after node2 came back");
        wait_for("node1 resolves b again", 10, || {
            n1.resolve("a", "b").as_deref() == Some(b.as_str())
        });
        // The restart's reconcile (GC, background CHECK through the overlay plugin) found
        // nothing to repair.
        std::thread::sleep(Duration::from_millis(500));
        let log = n2.log();
        assert!(
            !log.contains("start-up check action")
                && !log.contains("GC failed")
                && !log.contains("reconcile action"),
            "{log}"
        );
        assert_eq!(
            n2.api("GET", "/v1/sandboxes/b", None).1["endpoints"][0]["addresses"][0]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap(),
            b
        );

        n3.rm_sandbox("c");
        wait_for("c's name gone from node1", 10, || {
            n1.resolve("a", "c").is_none()
        });
        for (n, s) in [(&n1, "a"), (&n2, "b")] {
            n.rm_sandbox(s);
        }
        let c = Cluster {
            etcd: c.etcd,
            nodes: vec![n1, n2, n3],
        };
        c.remove_network("ov1", 42, "10.77.");
    });
}

#[test]
fn etcd_restart_partition_and_compaction() {
    sandbox(|sb| {
        let mut c = Cluster::new(sb, 3);
        c.network("ov2", "10.78.0.0/16", 43);
        let a = c.nodes[0].sandbox("a", "ov2", "");
        let b = c.nodes[1].sandbox("b", "ov2", "");
        let cc = c.nodes[2].sandbox("c", "ov2", "");
        for n in &c.nodes {
            wait_for("routes", 10, || n.overlay_routes(43).len() == 2);
        }
        // etcd goes away: traffic keeps flowing, new attachments fail clearly.
        c.etcd.stop();
        assert!(c.nodes[0].ping("a", &b) && c.nodes[1].ping("b", &cc));
        std::thread::sleep(Duration::from_secs(1));
        let t = Instant::now();
        let (code, v) = c.nodes[0].api(
            "POST",
            "/v1/sandboxes",
            Some(r#"{"name":"a2","network":"ov2"}"#),
        );
        assert_eq!(code, 503, "{v}");
        assert!(v.to_string().contains("cluster store"), "{v}");
        assert!(t.elapsed() < Duration::from_secs(8), "bounded wait");
        let o = c.nodes[0].cli("network create ov9 --driver overlay --subnet 10.99.0.0/16");
        assert!(!o.status.success());
        assert!(
            c.nodes[2].networks().contains(&"ov2".to_string()),
            "known networks stay listed"
        );
        // etcd returns: nodes re-sync and converge; attachments work again.
        c.etcd.start();
        wait_for("re-sync", 20, || {
            c.nodes[0]
                .api(
                    "POST",
                    "/v1/sandboxes",
                    Some(r#"{"name":"a2","network":"ov2"}"#),
                )
                .0
                == 201
        });
        let a2 = c.nodes[0].api("GET", "/v1/sandboxes/a2", None).1["endpoints"][0]["addresses"][0]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert!(c.nodes[2].ping("c", &a2), "c -> a2 after etcd restart");
        for n in &c.nodes {
            wait_for("routes after etcd restart", 15, || {
                n.overlay_routes(43).len() == 2
            });
        }

        // Partition node 3 for longer than its lease: the others drop it; meanwhile the
        // history is compacted, so node 3 must re-list when it heals.
        let c_slice = format!("{}.0/24", cc.rsplit_once('.').unwrap().0);
        let ended = |n: &Node| n.log().matches("cluster store session ended").count();
        let before = ended(&c.nodes[2]);
        sb.sh("ip link set ul3 down");
        for n in &c.nodes[..2] {
            wait_for("partitioned node dropped", 20, || {
                !n.overlay_routes(43).contains(&c_slice)
            });
        }
        // Node 3 notices too (gRPC keepalive) before the history it missed is compacted.
        wait_for("node3 loses its session", 20, || {
            ended(&c.nodes[2]) > before
        });
        let b2 = c.nodes[1].sandbox("b2", "ov2", "");
        c.nodes[1].rm_sandbox("b2");
        // Revisions node 3 never saw (outside the overlay prefix), then compact them away.
        for i in 0..3 {
            assert!(c
                .etcd
                .ctl(&format!("put /elsewhere/k{i} v"))
                .status
                .success());
        }
        let rev =
            String::from_utf8_lossy(&c.etcd.ctl("endpoint status -w json").stdout).to_string();
        let rev: Value = serde_json::from_str(&rev).unwrap();
        let rev = rev[0]["Status"]["header"]["revision"].as_i64().unwrap();
        assert!(c.etcd.ctl(&format!("compact {rev}")).status.success());
        sb.sh("ip link set ul3 up");
        for n in &c.nodes {
            wait_for(
                &format!("{} converges after the partition", n.name()),
                30,
                || n.overlay_routes(43).len() == 2,
            );
        }
        // The compaction notice comes on node 3's resumed watch (etcd checks unsynced watchers
        // every 100 ms), possibly after the others have converged.
        wait_for("node3 re-lists after the compaction", 10, || {
            c.nodes[2].log().contains("compacted")
        });
        assert!(c.nodes[0].ping("a", &cc), "a -> c after heal");
        assert!(c.nodes[2].ping("c", &b), "c -> b after heal");

        // A hung etcd (SIGSTOP): an attachment that needs a new slice, and a network create,
        // wait for the agent's bounded etcd calls in their own jobs, not in the owner, so
        // another request is answered meanwhile; both then fail with 503. What etcd received
        // while hung may commit when it resumes: a slice claim node 1 never learnt of must not
        // stay, and the network may appear after all (a 503 on create is "not known").
        c.network("hung", "10.81.0.0/16", 45);
        c.etcd.signal(libc::SIGSTOP);
        let n1 = &c.nodes[0];
        let (attach, create, listed) = std::thread::scope(|s| {
            let timed = |method: &'static str, path: &'static str, body: &'static str| {
                s.spawn(move || (n1.api(method, path, Some(body)), Instant::now()))
            };
            let attach = timed("POST", "/v1/sandboxes", r#"{"name":"h1","network":"hung"}"#);
            let create = timed(
                "POST",
                "/v1/networks",
                r#"{"name":"late","driver":"overlay","subnets":[{"subnet":"10.82.0.0/16"}],"options":{"vni":"46"}}"#,
            );
            std::thread::sleep(Duration::from_millis(300));
            let (ls, _) = n1.api("GET", "/v1/sandboxes", None);
            let listed = Instant::now();
            assert_eq!(ls, 200);
            (attach.join().unwrap(), create.join().unwrap(), listed)
        });
        c.etcd.signal(libc::SIGCONT);
        for (what, ((code, v), ended)) in [("attachment", attach), ("network create", create)] {
            assert_eq!(code, 503, "{what}: {v}");
            assert!(
                ended > listed + Duration::from_secs(1),
                "GET /v1/sandboxes waited for the overlay {what} ({:?} before its end)",
                ended.saturating_duration_since(listed)
            );
        }
        wait_for("no slice of hung left in etcd", 30, || {
            let o = c
                .etcd
                .ctl("get --prefix --keys-only /rcni.io/overlay/subnets/hung/");
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim().is_empty()
        });
        for n in &c.nodes {
            wait_for("routes after the hang", 30, || {
                n.overlay_routes(43).len() == 2
            });
        }
        let _ = b2;
        let _ = a;
        for (i, s) in [(0, "a"), (0, "a2"), (1, "b"), (2, "c")] {
            c.nodes[i].rm_sandbox(s);
        }
        c.remove_network("ov2", 43, "10.78.");
        c.remove_network("hung", 45, "10.81.");
        // late's create may have committed once etcd resumed: then it is a network like any
        // other, on every node, and goes the same way.
        if !c.etcd.keys("/rcni.io/overlay/networks/late").is_empty() {
            for n in &c.nodes {
                wait_for("late learnt", 10, || {
                    n.networks().contains(&"late".to_string())
                });
            }
            c.remove_network("late", 46, "10.82.");
        }
        c.etcd.stop();
        c.nodes.clear();
    });
}

#[test]
fn overlay_cni_plugin_joins_the_same_overlay() {
    sandbox(|sb| {
        let c = Cluster::new(sb, 2);
        c.network("ov3", "10.79.0.0/16", 44);
        let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
        let a = n1.sandbox("a", "ov3", "");
        let b = n2.sandbox("b", "ov3", "");
        // A pod started by another runtime on node 1, through the overlay plugin.
        let conf = r#"{"cniVersion":"1.0.0","name":"ov3","type":"overlay"}"#;
        n1.ok("ip netns add pod1 && ip -n pod1 link set lo up");
        let env = format!(
            "CNI_CONTAINERID=pod1 CNI_NETNS=/run/netns/pod1 CNI_IFNAME=eth0 CNI_PATH={}",
            bin_dir().display()
        );
        let bin = plugin_bin("overlay");
        let out = n1.ok(&format!(
            "echo '{conf}' | env CNI_COMMAND=ADD {env} {}",
            bin.display()
        ));
        let r: Value = serde_json::from_str(&out).unwrap();
        let pod = r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(
            pod.rsplit_once('.').unwrap().0,
            a.rsplit_once('.').unwrap().0,
            "the pod gets an address in the node's slice"
        );
        assert_ne!(pod, a);
        assert!(
            n1.sh(&format!("ip netns exec pod1 ping -c1 -W1 {b}"))
                .status
                .success(),
            "pod -> b"
        );
        assert!(n2.ping("b", &pod), "b -> pod");
        assert!(n1.ping("a", &pod), "a -> pod (same bridge)");
        // sandboxd's repair (its GC) leaves the other runtime's pod alone.
        assert_eq!(n1.api("POST", "/v1/_repair", None).0, 200);
        assert!(n2.ping("b", &pod), "b -> pod after sandboxd's repair");
        // A second overlay network beside the first: its own VXLAN device on the same port.
        c.network("ov4", "10.80.0.0/16", 45);
        let a4 = n1.sandbox("a4", "ov4", "");
        let b4 = n2.sandbox("b4", "ov4", "");
        assert!(
            n1.ping("a4", &b4) && n2.ping("b4", &a4),
            "second overlay network"
        );
        assert!(n1.ping("a", &b), "first overlay network still works");
        n1.rm_sandbox("a4");
        n2.rm_sandbox("b4");
        c.remove_network("ov4", 45, "10.80.");
        n1.ok(&format!(
            "echo '{conf}' | env CNI_COMMAND=DEL {env} {}",
            bin.display()
        ));
        n1.ok(&format!(
            "echo '{conf}' | env CNI_COMMAND=DEL {env} {}",
            bin.display()
        ));
        n1.ok("ip netns del pod1");
        n1.rm_sandbox("a");
        n2.rm_sandbox("b");
        c.remove_network("ov3", 44, "10.79.");
    });
}
