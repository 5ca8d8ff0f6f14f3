//! `netns` as the client of sandboxd, end to end: each test starts `target/debug/sandboxd` inside
//! its private network + mount namespace (own socket, data dir and conf dir, our plugins from
//! target/debug), drives it only through `netns network …` / `netns sandbox …`, checks the
//! kernel with iproute2 and real traffic, removes everything it created and verifies nothing is
//! left (pins, veths, the daemon's CNI cache), then stops the daemon by its PID.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use integration_tests::daemon::Sandboxd;
use integration_tests::{plugin_bin, sandbox, Sandbox};
use serde_json::Value;

/// The test's sandboxd (the harness's [`Sandboxd`]), driven only through the `netns` CLI.
struct Daemon {
    d: Sandboxd,
    conf_dir: PathBuf,
}

integration_tests::wraps_sandboxd!(Daemon);

impl Daemon {
    fn start(sb: &Sandbox) -> Daemon {
        let conf_dir = sb.dir("sandboxd-net.d");
        let mut d = Sandboxd::new(
            sb.scratch().join("sandboxd/sandboxd.sock"),
            sb.dir("sandboxd-data"),
        )
        .arg("--conf-dir")
        .arg(&conf_dir)
        .log_to(sb.scratch().join("sandboxd.log"));
        d.start();
        Daemon { d, conf_dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cli(args)
    }

    /// Run; assert success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.cli_ok(args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("netns {args:?} --json: {e}: {s}"))
    }

    /// Run; assert exit `code`, nothing on stdout and exactly one line on stderr starting with
    /// "netns: "; return that line.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "netns {args:?}: stdout {} stderr {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.stdout.is_empty(),
            "netns {args:?} printed {:?}",
            out.stdout
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "netns {args:?} must print one line: {stderr:?}"
        );
        assert!(stderr.starts_with("netns: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr.trim_end().to_string()
    }

    /// Names in `network ls --json` / `sandbox ls --json`.
    fn names(&self, group: &str) -> Vec<String> {
        self.json(&[group, "ls"])
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Pins under /run/netns.
fn pins() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// veth devices in the test's host namespace.
fn veths(sb: &Sandbox) -> Vec<String> {
    sb.ip_json(None, "link show type veth")
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect()
}

/// Files anywhere under `dir` whose path contains `/results/` (a libcni result cache).
fn cache_results(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains("/results/") {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Everything a test created is gone: no sandbox, no pin, no veth, no cached result, only the
/// built-in networks.
fn assert_clean(sb: &Sandbox, d: &Daemon) {
    assert_eq!(d.names("sandbox"), Vec::<String>::new());
    assert_eq!(d.names("network"), ["bridge", "host", "none"]);
    assert_eq!(pins(), Vec::<String>::new(), "pins left");
    assert_eq!(veths(sb), Vec::<String>::new(), "veths left");
    assert_eq!(
        cache_results(&d.data_dir),
        Vec::<String>::new(),
        "CNI cache entries left"
    );
    assert_eq!(
        cache_results(Path::new("/var/lib/cni")),
        Vec::<String>::new(),
        "CNI cache entries left"
    );
    sb.assert_nothing_left_anywhere(&d.data_dir.join("ipam"), &d.data_dir.join("cni-cache"));
}

/// The first address (without prefix) of endpoint `ifname` in `sandbox inspect --json`.
fn addr_of(sbx: &Value, ifname: &str) -> String {
    sbx["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ifname"] == ifname)
        .and_then(|e| e["addresses"][0].as_str())
        .unwrap_or_else(|| panic!("no address on {ifname}: {sbx}"))
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// Networks and sandboxes in every mode through the CLI: create/ls/inspect/rm of a network,
/// sandboxes on a user network (they ping each other), on the default `bridge`, `host`, `none`
/// and `container:`; removing a network in use is refused naming its sandboxes.
#[test]
fn networks_and_sandboxes_in_every_mode() {
    sandbox(|sb| {
        let d = Daemon::start(sb);
        let ls = d.ok(&["network", "ls"]);
        assert!(ls.starts_with("NAME "), "{ls}");
        for n in ["bridge", "host", "none"] {
            assert!(ls.lines().any(|l| l.starts_with(&format!("{n} "))), "{ls}");
        }

        let created = d.ok(&[
            "network",
            "create",
            "web",
            "--subnet",
            "10.90.0.0/24",
            "--gateway",
            "10.90.0.1",
            "-o",
            "mtu=1400",
            "--label",
            "team=a",
        ]);
        assert!(
            created.contains("web") && created.contains("10.90.0.0/24"),
            "{created}"
        );
        let web = d.json(&["network", "inspect", "web"]);
        assert_eq!(web["name"], "web");
        assert_eq!(web["driver"], "bridge");
        assert_eq!(web["subnets"][0]["subnet"], "10.90.0.0/24");
        assert_eq!(web["subnets"][0]["gateway"], "10.90.0.1");
        assert_eq!(web["labels"]["team"], "a");
        assert_eq!(web["options"]["mtu"], "1400");
        assert_eq!(web["id"].as_str().unwrap().len(), 64);
        let human = d.ok(&["network", "inspect", "web"]);
        assert!(
            human.contains("Name:") && human.contains("10.90.0.1"),
            "{human}"
        );
        // By id prefix too.
        let prefix = &web["id"].as_str().unwrap()[..12];
        assert_eq!(d.json(&["network", "inspect", prefix])["name"], "web");
        assert_eq!(d.names("network"), ["bridge", "host", "none", "web"]);

        // Two sandboxes on `web` ping each other.
        let a = d.ok(&[
            "sandbox",
            "create",
            "a",
            "--network",
            "web",
            "--ip",
            "10.90.0.10",
        ]);
        assert!(a.contains("10.90.0.10/24"), "{a}");
        d.ok(&[
            "sandbox",
            "create",
            "b",
            "--network",
            "web",
            "--hostname",
            "bee",
        ]);
        let b = d.json(&["sandbox", "inspect", "b"]);
        assert_eq!(b["mode"], "network");
        assert_eq!(b["hostname"], "bee");
        assert_eq!(b["netns"], "/run/netns/b");
        let b_ip = addr_of(&b, "eth0");
        assert!(b_ip.starts_with("10.90.0."), "{b}");
        assert_eq!(sb.global_addrs(Some("a"), "eth0"), ["10.90.0.10/24"]);
        assert!(sb.ping("a", &b_ip), "a cannot reach b");
        assert!(sb.ping("b", "10.90.0.10"), "b cannot reach a");
        assert!(sb.ping("a", "10.90.0.1"), "a cannot reach its gateway");

        // The default network.
        d.ok(&["sandbox", "create", "dflt"]);
        let dflt = d.json(&["sandbox", "inspect", "dflt"]);
        assert_eq!(dflt["endpoints"][0]["network"], "bridge");
        let dflt_ip = addr_of(&dflt, "eth0");
        let bridge = d.json(&["network", "inspect", "bridge"]);
        let gw = bridge["subnets"][0]["gateway"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(sb.ping("dflt", &gw), "dflt ({dflt_ip}) cannot reach {gw}");

        // host, none and container modes.
        let links_before = sb.link_names(None);
        d.ok(&["sandbox", "create", "h", "--network", "host"]);
        let h = d.json(&["sandbox", "inspect", "h"]);
        assert_eq!(h["mode"], "host");
        // The daemon's own namespace (the test's "host"), not the machine's.
        assert_eq!(h["netns"], format!("/proc/{}/ns/net", d.pid()));
        assert_eq!(
            sb.link_names(None),
            links_before,
            "host mode changed the host"
        );
        d.ok(&["sandbox", "create", "n", "--network", "none"]);
        let n = d.json(&["sandbox", "inspect", "n"]);
        assert_eq!(n["mode"], "none");
        assert_eq!(sb.link_names(Some("n")), ["lo"]);
        d.ok(&["sandbox", "create", "c", "--network", "container:a"]);
        let c = d.json(&["sandbox", "inspect", "c"]);
        assert_eq!(c["mode"], "container");
        assert_eq!(c["container_of"], "a");
        assert_eq!(c["netns"], "/run/netns/a");

        // A `cni` network: the user's conflist from sandboxd's --conf-dir, used as is.
        let conf = serde_json::json!({"cniVersion": "1.1.0", "name": "mine", "plugins": [
            {"type": "bridge", "bridge": "br-mine", "isGateway": true,
             "ipam": {"type": "host-local", "subnet": "10.97.0.0/24",
                      "dataDir": sb.scratch().join("mine-ipam")}}]});
        std::fs::write(d.conf_dir.join("10-mine.conflist"), conf.to_string()).unwrap();
        d.ok(&[
            "network",
            "create",
            "mine",
            "--driver",
            "cni",
            "-o",
            "conflist=mine",
        ]);
        assert_eq!(d.json(&["network", "inspect", "mine"])["driver"], "cni");
        d.ok(&["sandbox", "create", "k", "--network", "mine"]);
        let k_ip = addr_of(&d.json(&["sandbox", "inspect", "k"]), "eth0");
        assert!(k_ip.starts_with("10.97.0."), "{k_ip}");
        assert!(sb.ping("k", "10.97.0.1"), "k cannot reach its bridge");

        let table = d.ok(&["sandbox", "ls"]);
        for (name, mode) in [
            ("a", "network"),
            ("b", "network"),
            ("c", "container:a"),
            ("dflt", "network"),
            ("h", "host"),
            ("k", "network"),
            ("n", "none"),
        ] {
            let line = table
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing: {table}"));
            assert!(line.contains(mode), "{line}");
        }
        assert_eq!(d.names("sandbox"), ["a", "b", "c", "dflt", "h", "k", "n"]);

        // A network in use cannot be removed; the message names its sandboxes.
        let e = d.fails(&["network", "rm", "web"], 1);
        assert!(e.contains('a') && e.contains('b'), "{e}");
        assert!(d.names("network").contains(&"web".to_string()));
        // Built-ins cannot be removed.
        d.fails(&["network", "rm", "bridge"], 1);

        for s in ["c", "a", "b", "dflt", "h", "k", "n"] {
            assert_eq!(
                d.ok(&["sandbox", "rm", s]),
                format!("removed sandbox {s}\n")
            );
        }
        assert_eq!(d.ok(&["network", "rm", "web"]), "removed network web\n");
        d.ok(&["network", "rm", "mine"]);
        let dir = sb.scratch().join("mine-ipam/mine");
        assert!(dir.is_dir(), "the cni network's lease directory exists");
        let leases = integration_tests::lease_files(&dir);
        assert_eq!(
            leases,
            Vec::<String>::new(),
            "leases left on the cni network"
        );
        d.fails(&["network", "inspect", "web"], 3);
        assert_clean(sb, &d);
    });
}

/// A published port answers from the host namespace (bridge address and 127.0.0.1) and stops
/// with the sandbox; connect/disconnect of a running sandbox to a second network: traffic on
/// the new interface, gone after disconnect.
#[test]
fn published_port_and_connect_disconnect() {
    sandbox(|sb| {
        let d = Daemon::start(sb);
        d.ok(&["network", "create", "front", "--subnet", "10.91.0.0/24"]);
        d.ok(&[
            "network",
            "create",
            "back",
            "--subnet",
            "10.92.0.0/24",
            "--internal",
        ]);
        let out = d.ok(&[
            "sandbox",
            "create",
            "web",
            "--network",
            "front",
            "-p",
            "8080:80",
        ]);
        assert!(out.contains("8080->80/tcp"), "{out}");
        let web = d.json(&["sandbox", "inspect", "web"]);
        assert_eq!(web["endpoints"][0]["ports"][0]["host_port"], 8080);

        let listener = sb.spawn_in(
            "web",
            &[
                "socat",
                "TCP-LISTEN:80,fork,reuseaddr",
                "SYSTEM:echo published",
            ],
        );
        sb.wait_listening("web", "tcp", 80);
        let fetch = |addr: &str| {
            let out = sb.try_sh(&format!("socat -T2 - TCP:{addr}:8080 </dev/null"));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(fetch("10.91.0.1"), "published");
        assert_eq!(fetch("127.0.0.1"), "published");

        // Connect web to `back`, where db lives.
        d.ok(&["sandbox", "create", "db", "--network", "back"]);
        let db_ip = addr_of(&d.json(&["sandbox", "inspect", "db"]), "eth0");
        // Before the connect, web can only route to db through its gateway (eth0). (sandboxd
        // does not isolate bridge networks from each other as Docker's DOCKER-ISOLATION chains
        // do, so no "unreachable" is asserted here.)
        let dev_to_db = || sb.sh(&format!("ip -n web -j route get {db_ip}"));
        assert!(dev_to_db().contains("\"dev\":\"eth0\""), "{}", dev_to_db());
        let ep = d.json(&["network", "connect", "back", "web", "--alias", "www"]);
        assert_eq!(ep["ifname"], "eth1");
        assert_eq!(ep["network"], "back");
        assert_eq!(ep["aliases"][0], "www");
        assert!(sb.link_names(Some("web")).contains(&"eth1".to_string()));
        assert!(dev_to_db().contains("\"dev\":\"eth1\""), "{}", dev_to_db());
        let ping_eth1 = || {
            sb.exec_in(
                "web",
                &format!("ping -c1 -W2 -I eth1 {db_ip} >/dev/null 2>&1"),
            )
            .status
            .success()
        };
        assert!(ping_eth1(), "web cannot reach db over eth1 after connect");
        let table = d.ok(&["sandbox", "inspect", "web"]);
        assert!(table.contains("eth1") && table.contains("back"), "{table}");
        // Still reachable on the first network.
        assert_eq!(fetch("10.91.0.1"), "published");

        assert_eq!(
            d.ok(&["network", "disconnect", "back", "web"]),
            "disconnected sandbox web from network back\n"
        );
        assert!(!sb.link_names(Some("web")).contains(&"eth1".to_string()));
        assert!(dev_to_db().contains("\"dev\":\"eth0\""), "{}", dev_to_db());
        assert!(
            !ping_eth1(),
            "web still reaches db over eth1 after disconnect"
        );
        d.fails(&["network", "disconnect", "back", "web"], 3);

        drop(listener);
        d.ok(&["sandbox", "rm", "web"]);
        assert_ne!(fetch("10.91.0.1"), "published", "port answers after rm");
        d.ok(&["sandbox", "rm", "db"]);
        d.ok(&["network", "rm", "front"]);
        d.ok(&["network", "rm", "back"]);
        let nft = sb.sh("nft list ruleset");
        assert!(!nft.contains("8080"), "port mapping left: {nft}");
        assert_clean(sb, &d);
    });
}

/// Every bad flag, and every refusal of the daemon, is one line on stderr with the documented
/// exit code, and nothing changes (networks, sandboxes, links, pins).
#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    sandbox(|sb| {
        let d = Daemon::start(sb);
        d.ok(&["network", "create", "net1", "--subnet", "10.93.0.0/24"]);
        d.ok(&[
            "sandbox",
            "create",
            "s1",
            "--network",
            "net1",
            "-p",
            "9090:90",
        ]);
        let snapshot = || {
            (
                d.json(&["network", "ls"]),
                d.json(&["sandbox", "ls"]),
                sb.link_names(None),
                pins(),
            )
        };
        let before = snapshot();

        // Rejected by the client (exit 2), never sent.
        let usage: &[(&[&str], &str)] = &[
            (&["network", "create", "a/b"], "invalid network name"),
            (&["network", "create", &"x".repeat(65)], "at most 64"),
            (
                &["network", "create", "..", "--subnet", "10.94.0.0/24"],
                "invalid network name",
            ),
            (
                &["network", "create", "n2", "--subnet", "10.94.0.1/24"],
                "did you mean 10.94.0.0/24",
            ),
            (
                &["network", "create", "n2", "--subnet", "10.94.0.0/33"],
                "invalid --subnet",
            ),
            (
                &["network", "create", "n2", "--subnet", "banana"],
                "invalid --subnet",
            ),
            (
                &[
                    "network",
                    "create",
                    "n2",
                    "--subnet",
                    "10.94.0.0/24",
                    "--gateway",
                    "10.95.0.1",
                ],
                "not in any --subnet",
            ),
            (
                &[
                    "network",
                    "create",
                    "n2",
                    "--subnet",
                    "10.94.0.0/24",
                    "--ip-range",
                    "10.95.0.0/25",
                ],
                "not inside any --subnet",
            ),
            (&["network", "create", "n2", "-o", "mtu=10"], "68 to 65535"),
            (
                &["network", "create", "n2", "-o", "novalue"],
                "expected KEY=VALUE",
            ),
            (
                &["network", "create", "n2", "-o", "colour=red"],
                "unknown option",
            ),
            (&["network", "create", "n2", "--label", "=x"], "empty key"),
            (
                &["network", "create", "n2", "--driver", "vxlan"],
                "invalid value 'vxlan'",
            ),
            (
                &["network", "create", "n2", "--subnet", "fd00:1::/64"],
                "add --ipv6",
            ),
            (
                &["network", "create", "n2", "--ipv6"],
                "needs an IPv6 --subnet",
            ),
            (
                &["network", "create", "n2", "--bogus"],
                "unexpected argument",
            ),
            (
                &["sandbox", "create", "s2", "-p", "0:80"],
                "out of range 1-65535",
            ),
            (
                &["sandbox", "create", "s2", "-p", "80:65536"],
                "out of range 1-65535",
            ),
            (
                &["sandbox", "create", "s2", "-p", "80"],
                "expected [HOSTIP:]HOST:CONTAINER",
            ),
            (
                &["sandbox", "create", "s2", "-p", "80:80/icmp"],
                "not supported",
            ),
            (
                &["sandbox", "create", "s2", "-p", "81:80", "-p", "81:82"],
                "already published",
            ),
            (
                &["sandbox", "create", "s2", "--ip", "10.93.0.5/24"],
                "without prefix",
            ),
            (
                &[
                    "sandbox",
                    "create",
                    "s2",
                    "--network",
                    "host",
                    "-p",
                    "80:80",
                ],
                "needs a network",
            ),
            (
                &[
                    "sandbox",
                    "create",
                    "s2",
                    "--network",
                    "none",
                    "--ip",
                    "10.93.0.5",
                ],
                "needs a network",
            ),
            (
                &["sandbox", "create", "s2", "--network", "container:s2"],
                "own namespace",
            ),
            (
                &["sandbox", "create", "s2", "--hostname", "bad_host"],
                "invalid --hostname",
            ),
            (&["sandbox", "create", "s2/x"], "invalid sandbox name"),
            (&["sandbox", "inspect", "../etc"], "invalid sandbox name"),
            (&["network", "connect", "host", "s1"], "sandbox mode"),
            (
                &["network", "connect", "net1", "s1", "-p", "1:2:3:4"],
                "expected",
            ),
            (&["network"], "subcommand is missing"),
        ];
        for (args, want) in usage {
            let e = d.fails(args, 2);
            assert!(e.contains(want), "netns {args:?}: {e:?} lacks {want:?}");
        }
        // Refused by the daemon: its message, with the exit class of its status.
        let refused: &[(&[&str], i32, &str)] = &[
            (&["network", "create", "net1"], 1, "net1"),
            (
                &["network", "create", "n3", "--subnet", "10.93.0.0/25"],
                1,
                "10.93.0.0",
            ),
            (&["network", "inspect", "nope"], 3, "nope"),
            (&["network", "rm", "nope"], 3, "nope"),
            (&["network", "rm", "host"], 1, "host"),
            (&["network", "create", "n2", "--driver", "cni"], 2, "n2"),
            (&["sandbox", "create", "s1"], 1, "s1"),
            (&["sandbox", "create", "s2", "--network", "nope"], 3, "nope"),
            (
                &["sandbox", "create", "s2", "--network", "container:nope"],
                3,
                "nope",
            ),
            (
                &[
                    "sandbox",
                    "create",
                    "s2",
                    "--network",
                    "net1",
                    "--ip",
                    "10.99.0.5",
                ],
                2,
                "10.99.0.5",
            ),
            (
                &[
                    "sandbox",
                    "create",
                    "s2",
                    "--network",
                    "net1",
                    "-p",
                    "9090:90",
                ],
                1,
                "9090",
            ),
            (&["sandbox", "inspect", "nope"], 3, "nope"),
            (&["sandbox", "rm", "nope"], 3, "nope"),
            (&["network", "connect", "net1", "nope"], 3, "nope"),
            (&["network", "connect", "nope", "s1"], 3, "nope"),
            (&["network", "disconnect", "bridge", "s1"], 3, ""),
        ];
        for (args, code, want) in refused {
            let e = d.fails(args, *code);
            assert!(e.contains(want), "netns {args:?}: {e:?} lacks {want:?}");
        }
        assert_eq!(snapshot(), before, "a refused command changed something");

        // No daemon at the given socket.
        let out = Command::new(plugin_bin("netns"))
            .args(["--daemon", "/run/nothing-here.sock", "network", "ls"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "netns: cannot reach sandboxd at /run/nothing-here.sock: No such file or directory (os error 2)\n"
        );
        // SANDBOXD_SOCKET is used without --daemon.
        let out = Command::new(plugin_bin("netns"))
            .args(["sandbox", "ls", "--json"])
            .env("SANDBOXD_SOCKET", &d.socket)
            .output()
            .unwrap();
        assert!(out.status.success());
        let via_env: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(via_env, before.1);

        d.ok(&["sandbox", "rm", "s1"]);
        d.ok(&["network", "rm", "net1"]);
        assert_clean(sb, &d);
    });
}

/// `netns repair` reports what it re-applied after the firewall was flushed, and `netns events`
/// streams one line per change.
#[test]
fn repair_and_events() {
    sandbox(|sb| {
        let d = Daemon::start(sb);
        let events = Command::new(plugin_bin("netns"))
            .arg("--daemon")
            .arg(&d.socket)
            .args(["events", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Let the stream subscribe before the changes happen.
        std::thread::sleep(Duration::from_millis(300));
        d.ok(&["network", "create", "ev", "--subnet", "10.96.0.0/24"]);
        d.ok(&[
            "sandbox",
            "create",
            "e1",
            "--network",
            "ev",
            "-p",
            "7070:70",
        ]);
        let listener = sb.spawn_in(
            "e1",
            &["socat", "TCP-LISTEN:70,fork,reuseaddr", "SYSTEM:echo up"],
        );
        sb.wait_listening("e1", "tcp", 70);
        let fetch = || {
            let out = sb.try_sh("socat -T2 - TCP:10.96.0.1:7070 </dev/null");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(fetch(), "up");
        sb.sh("nft flush ruleset");
        assert_ne!(fetch(), "up", "flush did not break the published port");
        let report = d.ok(&["repair"]);
        assert!(!report.trim().is_empty(), "{report}");
        assert_ne!(
            report.trim(),
            "nothing to repair",
            "repair found nothing after a flush"
        );
        assert_eq!(fetch(), "up", "repair did not restore the published port");
        assert_eq!(d.ok(&["repair"]).trim(), "nothing to repair");
        drop(listener);
        d.ok(&["sandbox", "rm", "e1"]);
        d.ok(&["network", "rm", "ev"]);

        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(events.id() as libc::pid_t, libc::SIGTERM) };
        let out = events.wait_with_output().unwrap();
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
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
        for want in [
            ("network", "create", "ev"),
            ("sandbox", "create", "e1"),
            ("sandbox", "remove", "e1"),
            ("network", "remove", "ev"),
        ] {
            assert!(
                seen.iter()
                    .any(|(k, a, n)| (k.as_str(), a.as_str(), n.as_str()) == want),
                "{want:?} not in {seen:?}"
            );
        }
        assert_clean(sb, &d);
    });
}
