//! sandboxd end to end: the daemon (target/<profile>/sandboxd) runs as a child inside each test's
//! private network + mount namespace with its own data directory and socket, and is driven with
//! `curl --unix-socket` (a client that shares no code with it). Kernel state is checked with
//! iproute2 and nft, traffic with ping and socat. Every test removes what it created and then
//! checks that nothing is left: veths, leases, cached results, firewall entries, pinned namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use integration_tests::daemon::Sandboxd;
use integration_tests::{bin_dir, plugin_bin, sandbox, Sandbox};
use serde_json::{json, Value};

/// The test's sandboxd (the harness's [`Sandboxd`]) with its conf dir and the requests of this
/// suite.
struct Daemon {
    d: Sandboxd,
    conf: PathBuf,
}

integration_tests::wraps_sandboxd!(Daemon);

impl Daemon {
    /// Not started: for clients on other threads, and for a daemon started another way.
    fn client(sock: PathBuf, data: &Path, conf: PathBuf) -> Daemon {
        let d = Sandboxd::new(sock, data)
            .arg("--cni-path")
            .arg(format!(
                "{}:{}",
                bin_dir().display(),
                data.join("extra-plugins").display()
            ))
            .arg("--conf-dir")
            .arg(&conf)
            .arg("--etc-netns")
            .arg(data.join("etc-netns"));
        Daemon { d, conf }
    }

    fn new(sb: &Sandbox) -> Daemon {
        let mut d = Daemon::client(
            sb.scratch().join("sandboxd/sandboxd.sock"),
            &sb.dir("sandboxd-data"),
            sb.dir("net.d"),
        );
        d.start();
        d
    }

    /// An API call that must answer `want`.
    fn api(&self, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
        let b = body.map(|b| b.to_string());
        let (code, v) = self.try_api(method, path, b.as_deref());
        assert_eq!(
            code,
            want,
            "{method} {path} {b:?} -> {code} {v}\nlog:\n{}",
            self.log()
        );
        if want >= 400 {
            let msg = v["message"].as_str().unwrap_or_default();
            assert!(
                !msg.is_empty(),
                "{method} {path}: error without message: {v}"
            );
        }
        v
    }

    fn create_sandbox(&self, body: Value) -> Value {
        self.api("POST", "/v1/sandboxes", Some(body), 201)
    }

    fn remove_sandbox(&self, name: &str) {
        self.api("DELETE", &format!("/v1/sandboxes/{name}"), None, 204);
    }

    fn sandboxes(&self) -> Vec<Value> {
        self.api("GET", "/v1/sandboxes", None, 200)
            .as_array()
            .unwrap()
            .clone()
    }

    fn networks(&self) -> Vec<Value> {
        self.api("GET", "/v1/networks", None, 200)
            .as_array()
            .unwrap()
            .clone()
    }

    /// Remove every sandbox and every user network.
    fn remove_all(&self) {
        let mut sbs = self.sandboxes();
        // Joiners first: their owner cannot go while they share its namespace.
        sbs.sort_by_key(|s| s["mode"] != "container");
        for s in sbs {
            self.remove_sandbox(s["name"].as_str().unwrap());
        }
        for n in self.networks() {
            if n["builtin"] == false {
                self.api(
                    "DELETE",
                    &format!("/v1/networks/{}", n["name"].as_str().unwrap()),
                    None,
                    204,
                );
            }
        }
    }

    fn lease_files(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for net in std::fs::read_dir(self.data_dir.join("ipam"))
            .into_iter()
            .flatten()
        {
            let net = net.unwrap();
            for f in std::fs::read_dir(net.path()).unwrap() {
                let f = f.unwrap().file_name().into_string().unwrap();
                // Skip the lock, the allocation cursor and host-local's owner index (a dot file).
                if f != "lock" && !f.starts_with("last_reserved_ip") && !f.starts_with('.') {
                    out.insert(format!("{}/{f}", net.file_name().to_string_lossy()));
                }
            }
        }
        out
    }

    fn cache_files(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.data_dir.join("cni-cache/results"))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }
}

fn pins() -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn host_veths(sb: &Sandbox) -> Vec<String> {
    sb.ip_json(None, "link show type veth")
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// Firewall entries owned by an attachment carry "id: <container id>" in their comment.
fn owned_fw_entries(sb: &Sandbox) -> usize {
    sb.sh("nft list ruleset").matches(", id: ").count()
}

/// Nothing of any sandbox is left in the kernel or on disk.
fn assert_no_leftovers(sb: &Sandbox, d: &Daemon) {
    assert!(d.sandboxes().is_empty());
    assert_eq!(host_veths(sb), Vec::<String>::new(), "veths left");
    assert_eq!(pins(), BTreeSet::new(), "pinned namespaces left");
    assert_eq!(d.lease_files(), BTreeSet::new(), "leases left");
    assert_eq!(d.cache_files(), BTreeSet::new(), "cached results left");
    let etc: Vec<_> = std::fs::read_dir(d.data_dir.join("etc-netns"))
        .into_iter()
        .flatten()
        .collect();
    assert!(etc.is_empty(), "per-sandbox /etc files left: {etc:?}");
    let written: Vec<_> = std::fs::read_dir(d.data_dir.join("etc-written"))
        .into_iter()
        .flatten()
        .collect();
    assert!(written.is_empty(), "etc markers left: {written:?}");
    assert_eq!(
        owned_fw_entries(sb),
        0,
        "firewall entries left:\n{}",
        sb.sh("nft list ruleset")
    );
    sb.assert_nothing_left_anywhere(&d.data_dir.join("ipam"), &d.data_dir.join("cni-cache"));
}

/// Every sandbox the daemon reports exists in the kernel exactly as reported, and nothing else
/// does (interfaces, addresses, pins, leases, cache files, host veths, firewall entries).
fn assert_state_matches_kernel(sb: &Sandbox, d: &Daemon) {
    let sbs = d.sandboxes();
    let mut want_pins = BTreeSet::new();
    let mut want_leases = BTreeSet::new();
    let mut want_cache = BTreeSet::new();
    let mut veths = 0;
    let mut ports = 0;
    for s in &sbs {
        let name = s["name"].as_str().unwrap();
        let id = s["id"].as_str().unwrap();
        let mode = s["mode"].as_str().unwrap();
        if mode == "network" || mode == "none" {
            want_pins.insert(name.to_string());
        }
        let mut want_ifs = BTreeSet::new();
        for e in s["endpoints"].as_array().unwrap() {
            let ifname = e["ifname"].as_str().unwrap();
            let net = e["network"].as_str().unwrap();
            let cache_net = if mode == "container" {
                "container"
            } else {
                net
            };
            want_cache.insert(format!("{cache_net}-{id}-{ifname}"));
            if mode != "network" {
                continue;
            }
            veths += 1;
            ports += e["ports"].as_array().unwrap().len();
            want_ifs.insert(ifname.to_string());
            let got = sb.global_addrs(Some(name), ifname);
            for a in e["addresses"].as_array().unwrap() {
                let a = a.as_str().unwrap();
                assert!(
                    got.contains(&a.to_string()),
                    "{name}/{ifname}: {a} not in {got:?}"
                );
                want_leases.insert(format!("{net}/{}", a.split('/').next().unwrap()));
            }
        }
        if mode == "network" {
            let have: BTreeSet<String> = sb
                .link_names(Some(name))
                .into_iter()
                .filter(|l| l != "lo")
                .collect();
            assert_eq!(have, want_ifs, "interfaces of {name}");
            // Exactly one default route, through the gateway endpoint (none without one).
            let routes = sb.ip_json(Some(name), "route show default");
            let devs: Vec<&str> = routes
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["dev"].as_str().unwrap())
                .collect();
            let gw_if: Vec<&str> = s["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| Some(&e["id"]) == s.get("gateway_endpoint"))
                .map(|e| e["ifname"].as_str().unwrap())
                .collect();
            assert_eq!(devs, gw_if, "default route of {name}: {s}");
        }
    }
    assert_eq!(pins(), want_pins, "pins");
    assert_eq!(d.lease_files(), want_leases, "leases");
    assert_eq!(d.cache_files(), want_cache, "cache files");
    assert_eq!(host_veths(sb).len(), veths, "host veths");
    // Each endpoint of a sandboxd bridge network owns one masquerade and one forward entry, plus
    // one port-map entry per published IPv4 port.
    assert_eq!(
        owned_fw_entries(sb),
        2 * veths + ports,
        "firewall entries for {veths} endpoints and {ports} ports:\n{}",
        sb.sh("nft list ruleset")
    );
}

fn addr_of(s: &Value, ifname: &str) -> String {
    let e = s["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ifname"] == ifname)
        .unwrap_or_else(|| panic!("no {ifname} in {s}"));
    e["addresses"][0]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// A TCP server answering `tag` on port 80 inside `ns`, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(sb: &Sandbox, ns: &str, tag: &str) -> Server {
    let c = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "socat",
            "TCP-LISTEN:80,fork,reuseaddr",
            &format!("SYSTEM:echo {tag}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sb.wait_listening(ns, "tcp", 80);
    Server(c)
}

/// What a TCP connection from the test's host namespace to addr:port reads back.
fn tcp(sb: &Sandbox, addr: &str, port: u16) -> String {
    let out = sb.try_sh(&format!(
        "socat -t 2 -T 2 STDIO TCP:{addr}:{port},connect-timeout=2 </dev/null 2>/dev/null"
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn gateway(d: &Daemon, net: &str) -> String {
    d.api("GET", &format!("/v1/networks/{net}"), None, 200)["subnets"][0]["gateway"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_mode_with_traffic_ports_and_a_second_network() {
    sandbox(|sb| {
        let d = Daemon::new(sb);
        let mode = std::fs::metadata(&d.socket).unwrap();
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        assert!(mode.file_type().is_socket());
        assert_eq!(mode.permissions().mode() & 0o777, 0o600, "socket mode");
        let nets = d.networks();
        let names: Vec<&str> = nets.iter().map(|n| n["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["bridge", "host", "none"]);
        assert_eq!(nets[0]["bridge"], "sbr0");
        assert_eq!(nets[0]["subnets"][0]["subnet"], "172.17.0.0/16");

        // Default bridge: two sandboxes reach each other; a published port answers from the
        // host namespace (gateway address) and from 127.0.0.1.
        let a = d.create_sandbox(json!({"name": "a"}));
        let b = d.create_sandbox(json!({"name": "b", "network": "bridge",
            "ports": [{"host_port": 8080, "container_port": 80}]}));
        assert_eq!(a["mode"], "network");
        assert_eq!(a["netns"], "/run/netns/a");
        assert_eq!(a["endpoints"][0]["ifname"], "eth0");
        assert_eq!(a["gateway_endpoint"], a["endpoints"][0]["id"]);
        let (ia, ib) = (addr_of(&a, "eth0"), addr_of(&b, "eth0"));
        assert_ne!(ia, ib);
        assert!(sb.ping("a", &ib) && sb.ping("b", &ia));
        let _srv = serve(sb, "b", "hello-b");
        assert_eq!(tcp(sb, &gateway(&d, "bridge"), 8080), "hello-b");
        assert_eq!(tcp(sb, "127.0.0.1", 8080), "hello-b");
        // Default route through the gateway.
        let routes = sb.ip_json(Some("a"), "route show default");
        assert_eq!(routes[0]["gateway"], "172.17.0.1", "{routes}");

        // host: the daemon's own namespace, reported, nothing created.
        let h = d.create_sandbox(json!({"name": "h", "network": "host"}));
        assert_eq!(h["mode"], "host");
        assert_eq!(h["netns"], format!("/proc/{}/ns/net", d.pid()));
        let haddrs: Vec<&str> = h["endpoints"][0]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(haddrs.contains(&"127.0.0.1/8"), "{h}");
        assert!(!pins().contains("h"));

        // none: its own namespace with only lo, up.
        let n = d.create_sandbox(json!({"name": "n", "network": "none"}));
        assert_eq!(n["mode"], "none");
        assert_eq!(sb.link_names(Some("n")), ["lo"]);
        assert!(sb.exec_in("n", "ping -c1 -W1 127.0.0.1").status.success());

        // container:a shares a's namespace and addresses.
        let c = d.create_sandbox(json!({"name": "c", "network": "container:a"}));
        assert_eq!(c["mode"], "container");
        assert_eq!(c["container_of"], "a");
        assert_eq!(c["netns"], "/run/netns/a");
        let caddrs = c["endpoints"][0]["addresses"].to_string();
        assert!(caddrs.contains(&format!("{ia}/16")), "{c}");
        // The owner cannot go while a joiner shares its namespace.
        let e = d.api("DELETE", "/v1/sandboxes/a", None, 409);
        assert!(e["message"].as_str().unwrap().contains('c'), "{e}");

        // A second network: connect a and b (eth1), traffic on both, gone after disconnect.
        let net2 = d.api(
            "POST",
            "/v1/networks",
            Some(
                json!({"name": "net2", "subnets": [{"subnet": "10.98.0.0/24"}],
                        "labels": {"k": "v"}}),
            ),
            201,
        );
        assert_eq!(net2["subnets"][0]["gateway"], "10.98.0.1");
        let ea = d.api(
            "POST",
            "/v1/sandboxes/a/endpoints",
            Some(json!({"network": "net2", "ip": "10.98.0.10"})),
            201,
        );
        assert_eq!(ea["ifname"], "eth1");
        assert_eq!(ea["addresses"][0], "10.98.0.10/24");
        let eb = d.api(
            "POST",
            "/v1/sandboxes/b/endpoints",
            Some(json!({"network": "net2"})),
            201,
        );
        let ib2 = eb["addresses"][0]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert!(sb.ping("a", &ib2) && sb.ping("b", "10.98.0.10"));
        assert!(sb.ping("a", &ib), "first network still works");
        // Only the first network gives the default route.
        assert_eq!(
            sb.ip_json(Some("a"), "route show default")
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let n2 = d.api("GET", "/v1/networks/net2", None, 200);
        assert_eq!(n2["endpoints"].as_array().unwrap().len(), 2);
        // By id prefix too.
        let id12 = &n2["id"].as_str().unwrap()[..12];
        assert_eq!(
            d.api("GET", &format!("/v1/networks/{id12}"), None, 200)["name"],
            "net2"
        );
        d.api("DELETE", "/v1/sandboxes/b/endpoints/net2", None, 204);
        assert!(sb.link(Some("b"), "eth1").is_none());
        assert!(!sb.ping("a", &ib2));
        assert!(sb.ping("a", &ib));
        let a_now = d.api("GET", "/v1/sandboxes/a", None, 200);
        assert_eq!(a_now["endpoints"].as_array().unwrap().len(), 2);
        assert_state_matches_kernel(sb, &d);

        // The gateway endpoint leaves: the default route moves to the next endpoint (eth1 on
        // net2), which keeps its address.
        d.api("DELETE", "/v1/sandboxes/a/endpoints/bridge", None, 204);
        let a_now = d.api("GET", "/v1/sandboxes/a", None, 200);
        assert_eq!(a_now["endpoints"].as_array().unwrap().len(), 1);
        assert_eq!(a_now["endpoints"][0]["addresses"][0], "10.98.0.10/24");
        assert_eq!(
            a_now["gateway_endpoint"], a_now["endpoints"][0]["id"],
            "{a_now}"
        );
        let routes = sb.ip_json(Some("a"), "route show default");
        assert_eq!(routes[0]["gateway"], "10.98.0.1", "{routes}");
        assert_eq!(routes[0]["dev"], "eth1", "{routes}");
        assert!(sb.link(Some("a"), "eth0").is_none());
        assert!(sb.ping("a", "10.98.0.1"));
        assert_state_matches_kernel(sb, &d);

        // hosts / resolv.conf / hostname for `ip netns exec` (--etc-netns).
        let etc = d.data_dir.join("etc-netns/a");
        let hosts = std::fs::read_to_string(etc.join("hosts")).unwrap();
        assert!(hosts.contains("10.98.0.10\t"), "{hosts}");
        assert!(
            !hosts.contains(&format!("{ia}\t")),
            "eth0 left but is in hosts: {hosts}"
        );
        assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");
        let resolv = std::fs::read_to_string(etc.join("resolv.conf")).unwrap();
        assert!(resolv.contains("nameserver"), "{resolv}");
        assert!(!resolv.contains("nameserver 127."), "{resolv}");
        assert_eq!(
            std::fs::read_to_string(etc.join("hostname"))
                .unwrap()
                .trim(),
            a["hostname"].as_str().unwrap()
        );
        assert!(d.data_dir.join("etc-netns/n/hosts").exists());
        // Only what `ip netns exec` should mount over /etc: no marker or temporary file.
        let entries: BTreeSet<String> = std::fs::read_dir(&etc)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            entries,
            BTreeSet::from(["hostname".into(), "hosts".into(), "resolv.conf".into()])
        );
        assert!(
            !d.data_dir.join("etc-netns/c").exists(),
            "container mode uses its owner's files"
        );
        assert!(
            !d.data_dir.join("etc-netns/h").exists(),
            "host mode uses the host's files"
        );

        // Network in use: 409 naming the sandbox.
        let e = d.api("DELETE", "/v1/networks/net2", None, 409);
        assert!(e["message"].as_str().unwrap().contains("a"), "{e}");
        drop(_srv);
        d.remove_all();
        assert_no_leftovers(sb, &d);
        let left: Vec<String> = sb
            .link_names(None)
            .into_iter()
            .filter(|l| l.starts_with("sbr-"))
            .collect();
        assert!(
            left.is_empty(),
            "bridge of a removed network left: {left:?}"
        );
    });
}

#[test]
fn cni_driver_openapi_events_and_routes() {
    sandbox(|sb| {
        let mut d = Daemon::new(sb);
        // The served OpenAPI document is the one kept in docs/.
        let served = d.api("GET", "/v1/openapi.json", None, 200);
        let kept: Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sandboxd-openapi.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(served, kept);
        assert_eq!(
            served["openapi"].as_str().unwrap().chars().next(),
            Some('3')
        );
        assert_eq!(d.try_api("GET", "/v1/_ping", None).1, "OK");
        d.api("GET", "/v2/nothing", None, 404);
        d.api("PUT", "/v1/networks", Some(json!({})), 405);

        // Events: a stream of JSON lines, one per change.
        let ev_out = d.data_dir.join("events");
        let mut ev = Command::new("curl")
            .args(["-sN", "--unix-socket"])
            .arg(&d.socket)
            .arg("http://localhost/v1/events")
            .stdout(std::fs::File::create(&ev_out).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));

        // driver "cni": a user conflist used as is.
        let conf = json!({"cniVersion": "1.1.0", "name": "usernet", "plugins": [
            {"type": "bridge", "bridge": "ubr0", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "subnet": "10.66.0.0/24",
                      "dataDir": d.data_dir.join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        std::fs::write(d.conf.join("50-user.conflist"), conf.to_string()).unwrap();
        let n = d.api(
            "POST",
            "/v1/networks",
            Some(json!({"name": "usernet", "driver": "cni", "options": {"conflist": "usernet"}})),
            201,
        );
        assert_eq!(n["driver"], "cni");
        assert_eq!(n["subnets"][0]["subnet"], "10.66.0.0/24");
        let u1 = d.create_sandbox(json!({"name": "u1", "network": "usernet"}));
        let u2 = d.create_sandbox(json!({"name": "u2", "network": "usernet",
            "ports": [{"host_port": 9090, "container_port": 80}]}));
        assert!(sb.ping("u1", &addr_of(&u2, "eth0")));
        let _srv = serve(sb, "u2", "user-net");
        assert_eq!(tcp(sb, "10.66.0.1", 9090), "user-net");
        assert!(sb.link(None, "ubr0").is_some());
        // Another runtime uses the same conflist (here the netns CLI, with its own cache):
        // sandboxd's GC of the network must leave that attachment alone.
        sb.netns("foreign");
        let netns_cli = |args: &[&str]| {
            let out = Command::new(plugin_bin("netns"))
                .args(args)
                .arg("--conf-dir")
                .arg(&d.conf)
                .env("CNI_PATH", bin_dir())
                .output()
                .unwrap();
            assert!(out.status.success(), "netns {args:?}: {out:?}");
        };
        netns_cli(&["attach", "foreign", "usernet"]);
        let foreign_leases = d.lease_files().len();
        let fw = owned_fw_entries(sb);
        d.api("POST", "/v1/_repair", None, 200);
        assert_eq!(
            d.lease_files().len(),
            foreign_leases,
            "GC took another runtime's lease"
        );
        assert_eq!(
            owned_fw_entries(sb),
            fw,
            "GC took another runtime's firewall entry"
        );
        assert!(sb.ping("foreign", &addr_of(&u1, "eth0")));
        netns_cli(&["detach", "foreign", "usernet"]);
        sb.sh("ip netns del foreign");
        // Survives a restart too.
        d.stop();
        d.start();
        assert!(sb.ping("u2", &addr_of(&u1, "eth0")));
        drop(_srv);
        d.remove_all();
        std::thread::sleep(Duration::from_millis(200));
        let _ = ev.kill();
        let _ = ev.wait();
        let lines: Vec<Value> = std::fs::read_to_string(&ev_out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seen: Vec<(String, String, String)> = lines
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["action"].as_str().unwrap().to_string(),
                    e["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(
            seen.contains(&("network".into(), "create".into(), "usernet".into())),
            "{seen:?}"
        );
        assert!(
            seen.contains(&("sandbox".into(), "create".into(), "u1".into())),
            "{seen:?}"
        );
        assert!(lines
            .iter()
            .all(|e| e["time"].as_str().unwrap().ends_with('Z')));
        assert_no_leftovers(sb, &d);
    });
}

#[test]
fn restart_after_sigterm_and_kill9_keeps_sandboxes_and_traffic() {
    sandbox(|sb| {
        let mut d = Daemon::new(sb);
        d.api(
            "POST",
            "/v1/networks",
            Some(json!({"name": "app", "subnets": [{"subnet": "10.44.0.0/24"}]})),
            201,
        );
        let a = d.create_sandbox(json!({"name": "a", "network": "app"}));
        let b = d.create_sandbox(json!({"name": "b", "network": "app",
            "ports": [{"host_port": 8081, "container_port": 80}]}));
        d.create_sandbox(json!({"name": "n", "network": "none"}));
        d.create_sandbox(json!({"name": "h", "network": "host"}));
        d.create_sandbox(json!({"name": "c", "network": "container:b"}));
        d.api(
            "POST",
            "/v1/sandboxes/a/endpoints",
            Some(json!({"network": "bridge"})),
            201,
        );
        let ib = addr_of(&b, "eth0");
        let _srv = serve(sb, "b", "still-here");
        let before = (d.sandboxes(), d.networks());
        let check = |d: &Daemon| {
            assert!(sb.ping("a", &ib));
            assert_eq!(tcp(sb, "127.0.0.1", 8081), "still-here");
            assert_eq!(tcp(sb, "10.44.0.1", 8081), "still-here");
            let _ = d;
        };
        check(&d);
        // SIGTERM: the daemon goes, the sandboxes keep working.
        d.stop();
        check(&d);
        assert!(sb.ping("b", &addr_of(&a, "eth0")));
        d.start();
        let mut after = (d.sandboxes(), d.networks());
        // The host sandbox's namespace path names the new daemon process.
        for s in after.0.iter_mut() {
            if s["name"] == "h" {
                assert_eq!(s["netns"], format!("/proc/{}/ns/net", d.pid()));
            }
        }
        let strip = |v: &[Value]| -> Vec<Value> {
            v.iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.as_object_mut().unwrap().remove("netns");
                    s
                })
                .collect()
        };
        assert_eq!(strip(&before.0), strip(&after.0));
        assert_eq!(before.1, after.1);
        check(&d);
        // kill -9: same.
        d.kill9();
        check(&d);
        d.start();
        assert_eq!(strip(&before.0), strip(&d.sandboxes()));
        check(&d);
        assert_state_matches_kernel(sb, &d);
        // And it still works after the restarts.
        d.create_sandbox(json!({"name": "z", "network": "app"}));
        assert!(sb.ping("z", &ib));
        drop(_srv);
        d.remove_all();
        assert_no_leftovers(sb, &d);
    });
}

#[test]
fn namespace_deleted_behind_the_daemons_back_is_cleaned_at_restart_and_by_repair() {
    sandbox(|sb| {
        let mut d = Daemon::new(sb);
        d.create_sandbox(
            json!({"name": "a", "ports": [{"host_port": 8082, "container_port": 80}]}),
        );
        d.create_sandbox(json!({"name": "b"}));
        let keep = d.create_sandbox(json!({"name": "keep"}));
        let fw_before = owned_fw_entries(sb);
        // SIGINT (Ctrl-C in a foreground run) stops as cleanly as SIGTERM.
        d.stop_with(libc::SIGINT);
        assert!(d.log().contains("SIGINT"), "{}", d.log());
        sb.sh("ip netns del a");
        d.start();
        let names: Vec<String> = d
            .sandboxes()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["b", "keep"]);
        assert!(owned_fw_entries(sb) < fw_before);
        assert_state_matches_kernel(sb, &d);
        // The port is free again.
        d.create_sandbox(
            json!({"name": "a2", "ports": [{"host_port": 8082, "container_port": 80}]}),
        );

        // At run time: /v1/_repair.
        sb.sh("ip netns del b");
        let r = d.api("POST", "/v1/_repair", None, 200);
        let actions = r["actions"].to_string();
        assert!(actions.contains("sandbox b"), "{r}");
        d.api("GET", "/v1/sandboxes/b", None, 404);
        assert_state_matches_kernel(sb, &d);
        // Nothing to do the second time.
        let r = d.api("POST", "/v1/_repair", None, 200);
        assert_eq!(r["actions"], json!([]), "{r}");
        assert!(sb.ping("keep", &gateway(&d, "bridge")));
        let _ = keep;
        d.remove_all();
        assert_no_leftovers(sb, &d);
    });
}

#[test]
fn flushed_firewall_and_deleted_bridge_are_repaired_at_run_time_and_at_start() {
    sandbox(|sb| {
        let mut d = Daemon::new(sb);
        let a = d.create_sandbox(
            json!({"name": "a", "ports": [{"host_port": 8083, "container_port": 80}]}),
        );
        d.create_sandbox(json!({"name": "b"}));
        let _srv = serve(sb, "a", "fw-ok");
        let ia = addr_of(&a, "eth0");
        assert_eq!(tcp(sb, "127.0.0.1", 8083), "fw-ok");
        let fw = owned_fw_entries(sb);
        sb.sh("nft flush ruleset");
        assert_eq!(
            tcp(sb, "127.0.0.1", 8083),
            "",
            "the port must be gone after the flush"
        );
        let r = d.api("POST", "/v1/_repair", None, 200);
        assert!(r["actions"].as_array().unwrap().len() >= 2, "{r}");
        assert_eq!(tcp(sb, "127.0.0.1", 8083), "fw-ok");
        assert_eq!(owned_fw_entries(sb), fw);
        // Same addresses after the repair.
        assert_eq!(
            addr_of(&d.api("GET", "/v1/sandboxes/a", None, 200), "eth0"),
            ia
        );
        assert_state_matches_kernel(sb, &d);

        // The bridge deleted behind our back.
        sb.sh("ip link del sbr0");
        assert!(!sb.ping("b", &ia));
        let r = d.api("POST", "/v1/_repair", None, 200);
        assert!(!r["actions"].as_array().unwrap().is_empty(), "{r}");
        assert!(sb.link(None, "sbr0").is_some());
        assert!(sb.ping("b", &ia));
        assert_eq!(tcp(sb, "127.0.0.1", 8083), "fw-ok");
        assert_state_matches_kernel(sb, &d);

        // Flushed while the daemon is down: the start-up CHECK (in the background, once the
        // socket answers) re-applies it.
        d.stop();
        sb.sh("nft flush ruleset");
        assert_eq!(tcp(sb, "127.0.0.1", 8083), "");
        d.start();
        let t = Instant::now();
        while owned_fw_entries(sb) != fw {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "start-up check did not repair:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(tcp(sb, "127.0.0.1", 8083), "fw-ok");
        assert!(d.log().contains("start-up check"), "{}", d.log());
        drop(_srv);
        d.remove_all();
        assert_no_leftovers(sb, &d);
    });
}

#[test]
fn fifty_concurrent_clients_lose_and_duplicate_nothing() {
    sandbox(|sb| {
        let d = Daemon::new(sb);
        let results: Vec<(u16, Value)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..50)
                .map(|i| {
                    let d = &d;
                    s.spawn(move || {
                        d.try_api(
                            "POST",
                            "/v1/sandboxes",
                            Some(&json!({"name": format!("s{i}")}).to_string()),
                        )
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (code, v) in &results {
            assert_eq!(*code, 201, "{v}\n{}", d.log());
        }
        let sbs = d.sandboxes();
        assert_eq!(sbs.len(), 50);
        let ips: BTreeSet<String> = sbs.iter().map(|s| addr_of(s, "eth0")).collect();
        assert_eq!(ips.len(), 50, "duplicate addresses");
        let ids: BTreeSet<&str> = sbs.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 50);
        assert_state_matches_kernel(sb, &d);

        // Same name from 8 clients at once: exactly one wins, the others get 409.
        let codes: Vec<u16> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let d = &d;
                    s.spawn(move || {
                        d.try_api("POST", "/v1/sandboxes", Some(r#"{"name":"dup"}"#))
                            .0
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");
        assert_eq!(codes.iter().filter(|c| **c == 409).count(), 7, "{codes:?}");

        // Remove them all concurrently (plus racing duplicate removals of the same one).
        let codes: Vec<u16> = std::thread::scope(|s| {
            let mut hs: Vec<_> = (0..50)
                .map(|i| {
                    let d = &d;
                    s.spawn(move || d.try_api("DELETE", &format!("/v1/sandboxes/s{i}"), None).0)
                })
                .collect();
            for _ in 0..3 {
                let d = &d;
                hs.push(s.spawn(move || d.try_api("DELETE", "/v1/sandboxes/dup", None).0));
            }
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(codes[..50].iter().all(|c| *c == 204), "{codes:?}");
        let dup: Vec<u16> = codes[50..].to_vec();
        assert_eq!(dup.iter().filter(|c| **c == 204).count(), 1, "{dup:?}");
        assert!(dup.iter().all(|c| [204, 404, 409].contains(c)), "{dup:?}");
        assert_no_leftovers(sb, &d);
    });
}

/// A small deterministic generator (the seed is printed so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn kill9_at_random_instants_of_50_connects_and_disconnects_leaks_nothing() {
    sandbox(|sb| {
        let mut d = Daemon::new(sb);
        d.api(
            "POST",
            "/v1/networks",
            Some(json!({"name": "side", "subnets": [{"subnet": "10.55.0.0/24"}]})),
            201,
        );
        for i in 0..5 {
            d.create_sandbox(json!({"name": format!("x{i}")}));
        }
        let seed = std::env::var("SANDBOXD_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill -9 test seed: {seed} (SANDBOXD_TEST_SEED)");
        let mut rng = Lcg(seed);
        let finished = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let sock = d.socket.clone();
        let mut kills = 0;
        let mut interrupted = 0;
        let mut answered = BTreeMap::<u16, usize>::new();
        std::thread::scope(|s| {
            let client = s.spawn(|| {
                let c = Daemon::client(sock.clone(), Path::new(""), PathBuf::new());
                let mut codes = Vec::new();
                // Requests the daemon accepted and died holding (curl: empty reply or reset).
                let mut interrupted = 0usize;
                for i in 0..50 {
                    let name = format!("x{}", i % 5);
                    // Per sandbox: connect side, disconnect bridge (the default route moves to
                    // side), connect bridge, disconnect side (it moves back), and again.
                    let (connect, net) = match (i / 5) % 4 {
                        0 => (true, "side"),
                        1 => (false, "bridge"),
                        2 => (true, "bridge"),
                        _ => (false, "side"),
                    };
                    loop {
                        let (code, _body, curl) = if connect {
                            c.try_api_exit(
                                "POST",
                                &format!("/v1/sandboxes/{name}/endpoints"),
                                Some(&json!({"network": net}).to_string()),
                            )
                        } else {
                            c.try_api_exit(
                                "DELETE",
                                &format!("/v1/sandboxes/{name}/endpoints/{net}"),
                                None,
                            )
                        };
                        if code == 0 && (curl == 52 || curl == 56) {
                            interrupted += 1;
                        }
                        if code != 0 {
                            if std::env::var("SANDBOXD_TEST_VERBOSE").is_ok() {
                                eprintln!("op {i} {name} connect={connect} {net}: {code} {_body}");
                            }
                            codes.push(code);
                            break;
                        }
                        // Bounded, so a panic of the killing thread (daemon that does not come
                        // back) ends the test instead of leaving this loop spinning.
                        if stop.load(Ordering::SeqCst) {
                            return (codes, interrupted);
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                finished.store(true, Ordering::SeqCst);
                (codes, interrupted)
            });
            while !finished.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20 + rng.next(120)));
                if finished.load(Ordering::SeqCst) {
                    break;
                }
                let restarted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    d.kill9();
                    kills += 1;
                    // Now and then also kill the next daemon during its start-up reconcile.
                    if rng.next(4) == 0 {
                        d.spawn();
                        std::thread::sleep(Duration::from_millis(rng.next(30)));
                        d.kill9();
                        kills += 1;
                    }
                    d.start();
                }));
                if let Err(p) = restarted {
                    stop.store(true, Ordering::SeqCst);
                    std::panic::resume_unwind(p);
                }
            }
            let (codes, n) = client.join().unwrap();
            interrupted = n;
            for c in codes {
                *answered.entry(c).or_default() += 1;
            }
        });
        eprintln!(
            "kills: {kills}, requests interrupted mid-way: {interrupted}, answers: {answered:?}"
        );
        if std::env::var("SANDBOXD_TEST_VERBOSE").is_ok() {
            eprintln!("{}", d.log());
        }
        assert!(kills >= 2, "too few kills ({kills}) to mean anything");
        assert!(
            interrupted >= 1,
            "no kill landed while the daemon held a request, so recovery from a half-done \
             operation was not exercised ({kills} kills)"
        );
        // Only documented outcomes: done, or refused because of the state an earlier op left.
        for code in answered.keys() {
            assert!(
                [201, 204, 404, 409].contains(code),
                "{answered:?}\n{}",
                d.log()
            );
        }
        // One more kill at a random instant of a last connect, then the restart reconciles.
        let pending = {
            let sock = d.socket.clone();
            std::thread::spawn(move || {
                let c = Daemon::client(sock, Path::new(""), PathBuf::new());
                c.try_api(
                    "POST",
                    "/v1/sandboxes/x0/endpoints",
                    Some(r#"{"network":"bridge"}"#),
                );
            })
        };
        std::thread::sleep(Duration::from_millis(rng.next(40)));
        d.kill9();
        pending.join().unwrap();
        d.start();
        assert_state_matches_kernel(sb, &d);
        // Traffic still flows on whatever is connected.
        for s in d.sandboxes() {
            for e in s["endpoints"].as_array().unwrap() {
                let gw = e["gateway"][0].as_str().unwrap();
                assert!(sb.ping(s["name"].as_str().unwrap(), gw), "{s}");
            }
        }
        d.remove_all();
        assert_no_leftovers(sb, &d);
    });
}

#[test]
fn bad_input_is_refused_with_a_message_and_changes_nothing() {
    sandbox(|sb| {
        let d = Daemon::new(sb);
        d.api(
            "POST",
            "/v1/networks",
            Some(json!({"name": "n1", "subnets": [{"subnet": "10.33.0.0/24", "ip_range": "10.33.0.128/25"}]})),
            201,
        );
        d.create_sandbox(json!({"name": "a", "network": "n1", "ports": [{"host_port": 8084, "container_port": 80}]}));
        d.create_sandbox(json!({"name": "h", "network": "host"}));
        d.create_sandbox(json!({"name": "nn", "network": "none"}));
        d.create_sandbox(json!({"name": "c", "network": "container:a"}));
        // A cni network whose second plugin is missing: bridge's ADD succeeds, then the chain
        // fails, and everything must be rolled back (500 naming the plugin, nothing left).
        std::fs::write(
            d.conf.join("broken.conflist"),
            json!({"cniVersion": "1.1.0", "name": "broken", "plugins": [
                {"type": "bridge", "bridge": "brk0", "isGateway": true,
                 "ipam": {"type": "host-local", "subnet": "10.77.0.0/24",
                          "dataDir": d.data_dir.join("ipam")}},
                {"type": "absentplug"}]})
            .to_string(),
        )
        .unwrap();
        d.api(
            "POST",
            "/v1/networks",
            Some(json!({"name": "broken", "driver": "cni"})),
            201,
        );
        // A namespace someone else pinned under the name.
        sb.netns("taken");
        let snapshot = |d: &Daemon| {
            (
                d.networks(),
                d.sandboxes(),
                pins(),
                host_veths(sb),
                d.lease_files(),
                d.cache_files(),
            )
        };
        let before = snapshot(&d);
        let long = "x".repeat(65);
        let cases: Vec<(&str, String, Option<String>, u16)> = vec![
            // networks
            ("POST", "/v1/networks".into(), Some("{not json".into()), 400),
            ("POST", "/v1/networks".into(), Some("".into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name": 5}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"n1"}"#.into()), 409),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"bridge"}"#.into()), 409),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"a/b"}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":".."}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(json!({"name": long}).to_string()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","subnets":[{"subnet":"10.1.2.0/33"}]}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","subnets":[{"subnet":"banana"}]}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","subnets":[{"subnet":"10.33.0.0/16"}]}"#.into()), 409),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","subnets":[{"subnet":"10.34.0.0/24","gateway":"10.35.0.1"}]}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","driver":"macvlan"}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","driver":"cni","options":{"conflist":"absent"}}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","options":{"mtu":"9"}}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","options":{"bridge_name":"waytoolongbridgename"}}"#.into()), 400),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","options":{"bridge_name":"sbr0"}}"#.into()), 409),
            ("POST", "/v1/networks".into(), Some(r#"{"name":"x","ipv6":true}"#.into()), 400),
            ("GET", "/v1/networks/nosuch".into(), None, 404),
            ("DELETE", "/v1/networks/nosuch".into(), None, 404),
            ("DELETE", "/v1/networks/n1".into(), None, 409),
            ("DELETE", "/v1/networks/bridge".into(), None, 409),
            ("DELETE", "/v1/networks/host".into(), None, 409),
            // sandboxes
            ("POST", "/v1/sandboxes".into(), Some("[1,2".into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"a"}"#.into()), 409),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"../etc"}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x/y"}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(json!({"name": long}).to_string()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","network":"nosuch"}"#.into()), 404),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","network":"container:nosuch"}"#.into()), 404),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","network":"n1","ip":"10.99.0.5"}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","network":"n1","ip":"10.33.0.5"}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","network":"n1","ip":"not-an-ip"}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","ip":"172.17.0.50"}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","ports":[{"host_port":0,"container_port":80}]}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","ports":[{"host_port":70000,"container_port":80}]}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","ports":[{"host_port":80,"container_port":80,"protocol":"icmp"}]}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","ports":[{"host_port":8084,"container_port":80}]}"#.into()), 409),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","network":"host","ports":[{"host_port":81,"container_port":80}]}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","hostname":"bad host"}"#.into()), 400),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"taken"}"#.into()), 409),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"taken","network":"none"}"#.into()), 409),
            ("GET", "/v1/sandboxes/nosuch".into(), None, 404),
            ("POST", "/v1/sandboxes".into(), Some(r#"{"name":"x","network":"broken"}"#.into()), 500),
            ("POST", "/v1/sandboxes/a/endpoints".into(), Some(r#"{"network":"broken"}"#.into()), 500),
            ("DELETE", "/v1/sandboxes/nosuch".into(), None, 404),
            ("DELETE", "/v1/sandboxes/a".into(), None, 409),
            // endpoints
            ("POST", "/v1/sandboxes/a/endpoints".into(), Some("{".into()), 400),
            ("POST", "/v1/sandboxes/a/endpoints".into(), Some(r#"{"network":"nosuch"}"#.into()), 404),
            ("POST", "/v1/sandboxes/nosuch/endpoints".into(), Some(r#"{"network":"bridge"}"#.into()), 404),
            ("POST", "/v1/sandboxes/a/endpoints".into(), Some(r#"{"network":"n1"}"#.into()), 409),
            ("POST", "/v1/sandboxes/a/endpoints".into(), Some(r#"{"network":"host"}"#.into()), 400),
            ("POST", "/v1/sandboxes/a/endpoints".into(), Some(r#"{"network":"none"}"#.into()), 400),
            ("POST", "/v1/sandboxes/a/endpoints".into(), Some(r#"{"network":"bridge","ports":[{"host_port":1,"container_port":65536}]}"#.into()), 400),
            ("POST", "/v1/sandboxes/a/endpoints".into(), Some(r#"{"network":"bridge","ports":[{"host_port":8084,"container_port":80,"protocol":"tcp"}]}"#.into()), 409),
            ("POST", "/v1/sandboxes/c/endpoints".into(), Some(r#"{"network":"bridge"}"#.into()), 400),
            ("POST", "/v1/sandboxes/h/endpoints".into(), Some(r#"{"network":"bridge"}"#.into()), 400),
            ("POST", "/v1/sandboxes/nn/endpoints".into(), Some(r#"{"network":"bridge"}"#.into()), 400),
            ("DELETE", "/v1/sandboxes/a/endpoints/bridge".into(), None, 404),
            ("DELETE", "/v1/sandboxes/a/endpoints/nosuch".into(), None, 404),
            ("DELETE", "/v1/sandboxes/h/endpoints/host".into(), None, 400),
            ("DELETE", "/v1/sandboxes/nn/endpoints/none".into(), None, 400),
            ("DELETE", "/v1/sandboxes/c/endpoints/container:a".into(), None, 400),
        ];
        for (method, path, body, want) in &cases {
            let (code, v) = d.try_api(method, path, body.as_deref());
            assert_eq!(code, *want, "{method} {path} {body:?} -> {v}");
            let msg = v["message"].as_str().unwrap_or_default();
            assert!(
                !msg.is_empty() && !msg.contains('\n'),
                "{method} {path}: {v}"
            );
        }
        // Messages name the problem.
        let (_, v) = d.try_api(
            "POST",
            "/v1/sandboxes",
            Some(r#"{"name":"x","network":"broken"}"#),
        );
        assert!(v["message"].as_str().unwrap().contains("absentplug"), "{v}");
        let (_, v) = d.try_api("DELETE", "/v1/networks/n1", None);
        assert!(v["message"].as_str().unwrap().contains("a"), "{v}");
        let (_, v) = d.try_api(
            "POST",
            "/v1/sandboxes",
            Some(r#"{"name":"x","network":"n1","ip":"10.99.0.5"}"#),
        );
        assert!(v["message"].as_str().unwrap().contains("10.99.0.5"), "{v}");
        assert_eq!(snapshot(&d), before, "a refused request changed something");
        sb.sh("ip netns del taken");
        d.remove_all();
        assert_no_leftovers(sb, &d);
    });
}

#[test]
fn default_subnets_skip_prefixes_already_in_use() {
    sandbox(|sb| {
        // An address in 172.17.0.0/16 and a route into 172.18.0.0/16 exist before the first start.
        sb.sh("ip link add dummy0 type veth peer name dummy1 && ip link set dummy0 up");
        sb.sh("ip addr add 172.17.5.1/24 dev dummy0 && ip route add 172.18.9.0/24 dev dummy0");
        let d = Daemon::new(sb);
        let bridge = d.api("GET", "/v1/networks/bridge", None, 200);
        assert_eq!(bridge["subnets"][0]["subnet"], "172.19.0.0/16", "{bridge}");
        d.api(
            "POST",
            "/v1/networks",
            Some(json!({"name": "taken", "subnets": [{"subnet": "172.20.0.0/16"}]})),
            201,
        );
        let auto = d.api(
            "POST",
            "/v1/networks",
            Some(json!({"name": "auto", "internal": true})),
            201,
        );
        assert_eq!(auto["subnets"][0]["subnet"], "172.21.0.0/16", "{auto}");
        // Internal: reachable inside, no default route out.
        let a = d.create_sandbox(json!({"name": "a", "network": "auto"}));
        let b = d.create_sandbox(json!({"name": "b", "network": "auto"}));
        assert!(sb.ping("a", &addr_of(&b, "eth0")));
        assert!(sb
            .ip_json(Some("a"), "route show default")
            .as_array()
            .unwrap()
            .is_empty());
        assert!(a.get("gateway_endpoint").is_none(), "{a}");
        d.remove_all();
        sb.sh("ip link del dummy0");
        assert_no_leftovers(sb, &d);
    });
}

#[test]
fn socket_activation_uses_the_listener_on_fd_3() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    sandbox(|sb| {
        // What systemd does: bind the socket, then start the daemon with it as fd 3 and
        // LISTEN_PID/LISTEN_FDS naming it.
        let sock = sb.scratch().join("activated.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let data = sb.dir("act-data");
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" --socket /nonexistent/unused.sock --data-dir \"$1\" --cni-path \"$2\"")
            .arg(plugin_bin("sandboxd"))
            .arg(&data)
            .arg(bin_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: dup2 and fcntl are async-signal-safe; fd stays open in the parent until
        // after spawn.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself keeps FD_CLOEXEC, so clear it explicitly.
                if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(listener);
        let mut d = Daemon::client(sock.clone(), &data, sb.dir("act-conf"));
        d.adopt(child);
        let t = Instant::now();
        while d.try_api("GET", "/v1/_ping", None).0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no answer on the activated socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!Path::new("/nonexistent/unused.sock").exists());
        d.create_sandbox(json!({"name": "act"}));
        // SIGTERM: systemd owns the socket file, so the daemon leaves it in place.
        let mut c = d.take_child();
        // SAFETY: kill(2) on our own child's PID.
        assert_eq!(unsafe { libc::kill(c.id() as i32, libc::SIGTERM) }, 0);
        assert!(c.wait().unwrap().success());
        assert!(sock.exists());
        std::fs::remove_file(&sock).unwrap();
        d.start();
        d.remove_sandbox("act");
        assert_no_leftovers(sb, &d);
    });
}

#[test]
fn one_operation_per_sandbox_and_the_owner_never_waits_for_a_plugin() {
    use std::os::unix::fs::PermissionsExt;
    sandbox(|sb| {
        let d = Daemon::new(sb);
        // A plugin whose ADD takes 1.5 s, on a cni network.
        let dir = d.data_dir.join("extra-plugins");
        std::fs::create_dir_all(&dir).unwrap();
        let slow = dir.join("slowplug");
        std::fs::write(
            &slow,
            "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then sleep 1.5; echo '{\"cniVersion\":\"1.0.0\"}'; fi\nexit 0\n",
        )
        .unwrap();
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            d.conf.join("slow.conflist"),
            json!({"cniVersion": "1.0.0", "name": "slow", "plugins": [{"type": "slowplug"}]})
                .to_string(),
        )
        .unwrap();
        d.api(
            "POST",
            "/v1/networks",
            Some(json!({"name": "slow", "driver": "cni"})),
            201,
        );
        d.create_sandbox(json!({"name": "s"}));
        std::thread::scope(|scope| {
            let d = &d;
            let connect = scope.spawn(move || {
                d.try_api(
                    "POST",
                    "/v1/sandboxes/s/endpoints",
                    Some(r#"{"network":"slow"}"#),
                )
            });
            std::thread::sleep(Duration::from_millis(300));
            // While s's plugin runs: reads answer at once, other sandboxes proceed in parallel,
            // and conflicting operations on s are refused with 409.
            let t = Instant::now();
            let s_now = d.api("GET", "/v1/sandboxes/s", None, 200);
            assert_eq!(s_now["endpoints"].as_array().unwrap().len(), 2, "{s_now}");
            d.create_sandbox(json!({"name": "other"}));
            d.remove_sandbox("other");
            assert!(
                t.elapsed() < Duration::from_millis(1000),
                "{:?}",
                t.elapsed()
            );
            let e = d.api("DELETE", "/v1/sandboxes/s", None, 409);
            assert!(
                e["message"].as_str().unwrap().contains("in progress"),
                "{e}"
            );
            d.api(
                "POST",
                "/v1/sandboxes/s/endpoints",
                Some(json!({"network": "bridge"})),
                409,
            );
            d.api("DELETE", "/v1/sandboxes/s/endpoints/bridge", None, 409);
            let (code, ep) = connect.join().unwrap();
            assert_eq!(code, 201, "{ep}");
            assert_eq!(ep["ifname"], "eth1");
        });
        d.api("DELETE", "/v1/sandboxes/s/endpoints/slow", None, 204);
        d.remove_all();
        assert_no_leftovers(sb, &d);
    });
}

#[test]
fn dual_stack_network_with_a_static_ipv6_address() {
    sandbox(|sb| {
        let d = Daemon::new(sb);
        let n = d.api(
            "POST",
            "/v1/networks",
            Some(json!({"name": "v6", "ipv6": true,
                        "subnets": [{"subnet": "10.61.0.0/24"}, {"subnet": "fd00:61::/64"}]})),
            201,
        );
        assert_eq!(n["subnets"][1]["gateway"], "fd00:61::1");
        let a = d.create_sandbox(json!({"name": "a", "network": "v6"}));
        let b = d.create_sandbox(json!({"name": "b", "network": "v6", "ip": "fd00:61::99"}));
        let addrs = b["endpoints"][0]["addresses"].to_string();
        assert!(
            addrs.contains("fd00:61::99/64") && addrs.contains("10.61.0."),
            "{b}"
        );
        assert_eq!(
            a["endpoints"][0]["addresses"].as_array().unwrap().len(),
            2,
            "{a}"
        );
        // IPv6 may need a moment (DAD on the bridge side); retry briefly.
        let t = Instant::now();
        while !sb.ping("a", "fd00:61::99") {
            assert!(t.elapsed() < Duration::from_secs(5), "no IPv6 traffic");
        }
        assert!(sb.ping("b", &addr_of(&a, "eth0")));
        let r6 = sb.ip_json(Some("a"), "-6 route show default");
        assert_eq!(r6[0]["gateway"], "fd00:61::1", "{r6}");
        d.api(
            "POST",
            "/v1/sandboxes",
            Some(json!({"name": "c", "network": "v6", "ip": "fd00:62::1"})),
            400,
        );
        d.remove_all();
        assert_no_leftovers(sb, &d);
    });
}

/// Docker's isolation: sandboxes on different networks cannot reach each other (here through the
/// host, which masquerade would otherwise allow), while the host reaches every sandbox and a
/// sandbox connected to both networks reaches both. `icc=false` also drops traffic between
/// sandboxes of the same network. Each blocked path is paired with a working control.
#[test]
fn networks_are_isolated_from_each_other_and_icc_false_isolates_within() {
    sandbox(|sb| {
        let d = Daemon::new(sb);
        for (name, subnet, icc) in [
            ("neta", "10.81.0.0/24", "true"),
            ("netb", "10.82.0.0/24", "true"),
            ("quiet", "10.83.0.0/24", "false"),
        ] {
            d.api(
                "POST",
                "/v1/networks",
                Some(json!({"name": name, "subnets": [{"subnet": subnet}],
                            "options": {"icc": icc}})),
                201,
            );
        }
        let a1 = d.create_sandbox(json!({"name": "a1", "network": "neta"}));
        let a2 = d.create_sandbox(json!({"name": "a2", "network": "neta"}));
        let b1 = d.create_sandbox(json!({"name": "b1", "network": "netb"}));
        let q1 = d.create_sandbox(json!({"name": "q1", "network": "quiet"}));
        let q2 = d.create_sandbox(json!({"name": "q2", "network": "quiet"}));
        let (a1_ip, a2_ip, b1_ip) = (
            addr_of(&a1, "eth0"),
            addr_of(&a2, "eth0"),
            addr_of(&b1, "eth0"),
        );
        let (q1_ip, q2_ip) = (addr_of(&q1, "eth0"), addr_of(&q2, "eth0"));

        // Same network: open. Other network: dropped, both ways. The host: open.
        assert!(sb.ping("a1", &a2_ip), "a1 -> a2 on neta");
        assert!(
            !sb.ping("a1", &b1_ip),
            "a1 -> b1 across networks must be dropped"
        );
        assert!(
            !sb.ping("b1", &a1_ip),
            "b1 -> a1 across networks must be dropped"
        );
        for ip in [&a1_ip, &b1_ip, &q1_ip] {
            assert!(
                sb.try_sh(&format!("ping -c1 -W2 {ip}")).status.success(),
                "host -> {ip}"
            );
        }
        // icc=false: the sandboxes of `quiet` cannot talk to each other; the host still can.
        assert!(
            !sb.ping("q1", &q2_ip),
            "q1 -> q2 with icc=false must be dropped"
        );
        assert!(sb.try_sh(&format!("ping -c1 -W2 {q2_ip}")).status.success());

        // Connected to netb as well, a1 reaches b1 over its netb interface.
        d.api(
            "POST",
            "/v1/sandboxes/a1/endpoints",
            Some(json!({"network": "netb"})),
            201,
        );
        assert!(sb
            .exec_in("a1", &format!("ping -c1 -W2 -I eth1 {b1_ip}"))
            .status
            .success());
        d.remove_all();
        assert_no_leftovers(sb, &d);
        // The isolation rules go with their networks (the plugin keeps them; the daemon owns
        // the bridges' whole life).
        let table = sb.sh("nft list table inet rcni");
        assert!(
            !table.contains("rcni-iso") && !table.contains("rcni-isolated"),
            "isolation rules left: {table}"
        );
    });
}
