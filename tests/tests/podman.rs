//! Podman 4.3 (Debian's `podman`, `crun`, `conmon`) with `network_backend = "cni"` driving OUR
//! plugins: Podman writes its own conflists (bridge + host-local, portmap, firewall, tuning at
//! cniVersion 0.4.0) and calls every verb through libcni. Each test asserts real traffic and, at
//! the end, that nothing is left: veths, leases, libcni cache files, our nftables entries.
//!
//! Setup: every place Podman reads or writes is private to the test's
//! mount namespace. `/etc/containers` is a tmpfs holding our containers.conf, storage.conf and
//! policy.json (conmon's exit command `podman container cleanup` reads the default config path,
//! so it must be ours too), `/var/lib` is an overlay whose upper layer lives in the test's tmpfs
//! (`/var/lib/cni`, `/var/lib/containers`), `/var/tmp` and `/dev/shm` (Podman's lock segment) are
//! tmpfs, and so is `/sys/fs/cgroup`: the sandbox's fresh sysfs hides the machine's hybrid
//! cgroup hierarchy (which crun 1.8 refuses), and on a bare sysfs directory crun fails with
//! "invalid file system type on '/sys/fs/cgroup'"; Podman runs with cgroups disabled. Storage is vfs under the test's `/run`. The CNI plugin directory
//! holds symlinks to our binaries only. The image is a busybox rootfs built from
//! `busybox-static` and `podman import`ed: no registry.
//!
//! `published_port_on_two_networks`: Podman passes a container's port mappings to every network
//! it joins, so portmap sees the same host port on a second attachment of the same container;
//! it stands by and takes over when the first network is disconnected.
//!
//! Podman starts conmon as a daemon outside the test thread's control; the [`Podman`] guard
//! removes every container when dropped (also when a test panics) and kills what survives by PID.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use integration_tests::{busybox_image_tar, lease_files, plugin_bin, sandbox, CniState, Sandbox};
use serde_json::Value;

/// Our binaries, the only ones in Podman's CNI plugin directory.
const PLUGINS: &[&str] = &[
    "bridge",
    "host-local",
    "portmap",
    "firewall",
    "tuning",
    "loopback",
];

/// The imported busybox image.
const IMAGE: &str = "localhost/rcni-busybox:latest";

/// Podman inside one test's sandbox.
struct Podman<'a> {
    sb: &'a Sandbox,
    root: PathBuf,
    runroot: PathBuf,
    conf: PathBuf,
    storage_conf: PathBuf,
}

/// Where a request comes from.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// The sandbox's host namespace.
    Host,
    /// A named network namespace of the sandbox.
    Netns(&'a str),
    /// Inside a container (`podman exec`).
    Ctr(&'a str),
}

/// A test's Podman: private config, storage and state, our plugins, the busybox image imported.
fn podman(sb: &Sandbox) -> Podman<'_> {
    testbox::require_tool("podman");
    testbox::require_tool("crun");
    testbox::require_tool("conmon");

    let upper = sb.dir("varlib/upper");
    let work = sb.dir("varlib/work");
    sb.sh(&format!(
        "mount -t overlay overlay -o lowerdir=/var/lib,upperdir={},workdir={} /var/lib",
        upper.display(),
        work.display()
    ));
    for dir in ["/var/tmp", "/dev/shm", "/etc/containers", "/sys/fs/cgroup"] {
        sb.sh(&format!("mount -t tmpfs tmpfs {dir}"));
    }

    let cni_bin = sb.dir("podman-cni-bin");
    for p in PLUGINS {
        std::os::unix::fs::symlink(plugin_bin(p), cni_bin.join(p)).unwrap();
    }
    let net_d = sb.dir("podman-net.d");
    let tmp = sb.dir("podman-tmp");
    let root = sb.dir("podman-root");
    let runroot = sb.dir("podman-runroot");
    let conf = PathBuf::from("/etc/containers/containers.conf");
    let storage_conf = PathBuf::from("/etc/containers/storage.conf");
    // The ulimits: crun cannot raise RLIMIT_NOFILE/NPROC to Podman's 1048576 defaults here
    // (no CAP_SYS_RESOURCE in this machine's bounding set), so ask for less.
    std::fs::write(
        &conf,
        format!(
            r#"[containers]
cgroups = "disabled"
log_driver = "k8s-file"
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{}"]
network_config_dir = "{}"
default_network = "podman"
default_subnet = "10.88.0.0/16"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
tmp_dir = "{}"
"#,
            cni_bin.display(),
            net_d.display(),
            tmp.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &storage_conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            root.display(),
            runroot.display()
        ),
    )
    .unwrap();
    std::fs::write(
        "/etc/containers/policy.json",
        r#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
    )
    .unwrap();

    // The image: busybox and its applets as symlinks, a web root.
    let tar = busybox_image_tar(sb, "podman-rootfs");
    let p = Podman {
        sb,
        root,
        runroot,
        conf,
        storage_conf,
    };
    p.ok(&["import", tar.to_str().unwrap(), IMAGE]);
    p
}

/// Start time of a process (field 22 of /proc/<pid>/stat), to never kill a recycled PID.
fn start_time(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count from its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        // conmon and the containers' processes live outside the test thread: remember them,
        // let Podman remove everything, then kill by PID whatever is still the same process.
        let mut pids = Vec::new();
        let ids = self.run(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let out = self.run(&[
                "inspect",
                "--format",
                "{{.State.Pid}} {{.State.ConmonPid}}",
                id,
            ]);
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    if pid > 0 {
                        pids.push((pid, start_time(pid)));
                    }
                }
            }
        }
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        for (pid, started) in pids {
            if started.is_some() && start_time(pid) == started {
                // SAFETY: kill has no memory preconditions; the PID was checked to be the same
                // process (same start time) that Podman reported for one of our containers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Podman<'_> {
    /// `podman <args>` with our private root, state and config.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .output()
            .unwrap()
    }

    /// `podman <args>`, which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`podman {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A container that serves its own name over HTTP on ports 80 and 81 (busybox httpd).
    fn web(&self, name: &str, networks: &str, extra: &[&str]) -> String {
        let script = format!(
            "echo {name} > /www/index.html && httpd -p 81 -h /www && exec httpd -f -p 80 -h /www"
        );
        let mut args = vec!["run", "-d", "--name", name, "--network", networks];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sh", "-c", &script]);
        self.ok(&args)
    }

    /// `podman network create <name>` and the subnet Podman chose for it.
    fn network(&self, name: &str) -> Network {
        self.network_with(name, &[])
    }

    /// `podman network create <opts> <name>` and the subnets Podman chose for it.
    fn network_with(&self, name: &str, opts: &[&str]) -> Network {
        let mut args = vec!["network", "create"];
        args.extend_from_slice(opts);
        args.push(name);
        self.ok(&args);
        let v: Value = serde_json::from_str(&self.ok(&["network", "inspect", name])).unwrap();
        let subnets = v[0]["subnets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let (net, len) = s["subnet"].as_str().unwrap().split_once('/').unwrap();
                Subnet {
                    net: net.parse().unwrap(),
                    len: len.parse().unwrap(),
                    gateway: s["gateway"].as_str().map(|g| g.parse().unwrap()),
                }
            })
            .collect();
        Network { subnets }
    }

    /// The container's full id.
    fn id(&self, ctr: &str) -> String {
        self.ok(&["inspect", "--format", "{{.Id}}", ctr])
    }

    /// Podman's view of a container's attachments: network -> {IPAddress, MacAddress, ...}.
    fn attachments(&self, ctr: &str) -> serde_json::Map<String, Value> {
        let out = self.ok(&[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            ctr,
        ]);
        match serde_json::from_str(&out).unwrap() {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// The container's address on `net`, as Podman reports it.
    fn ip(&self, ctr: &str, net: &str) -> String {
        let a = self.attachments(ctr);
        let ip = a
            .get(net)
            .and_then(|n| n["IPAddress"].as_str())
            .unwrap_or_else(|| panic!("{ctr} has no address on {net}: {a:?}"));
        ip.to_string()
    }

    /// The container's global IPv6 address on `net`, as Podman reports it.
    fn ip6(&self, ctr: &str, net: &str) -> String {
        let a = self.attachments(ctr);
        let ip = a
            .get(net)
            .and_then(|n| n["GlobalIPv6Address"].as_str())
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| panic!("{ctr} has no IPv6 address on {net}: {a:?}"));
        ip.to_string()
    }

    /// `sh -c <cmd>` inside a container.
    fn exec(&self, ctr: &str, cmd: &str) -> Output {
        self.run(&["exec", ctr, "sh", "-c", cmd])
    }

    /// The container's IPv4 interfaces as (ifname, address/prefix), loopback excluded, read in
    /// the container itself.
    fn interfaces(&self, ctr: &str) -> Vec<(String, String)> {
        let out = self.exec(ctr, "ip -o -4 addr show");
        assert!(out.status.success(), "ip addr in {ctr}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 3 && f[1] != "lo").then(|| (f[1].to_string(), f[3].to_string()))
            })
            .collect()
    }

    /// The container interface holding `ip`, if any.
    fn ifname_with(&self, ctr: &str, ip: &str) -> Option<String> {
        self.interfaces(ctr)
            .into_iter()
            .find(|(_, a)| a.split('/').next() == Some(ip))
            .map(|(n, _)| n)
    }

    /// One HTTP GET (busybox wget, 3 s timeout): the body, or None.
    fn get(&self, from: Origin, url: &str) -> Option<String> {
        // No `-q`: busybox 1.35's wget crashes with it; the progress goes to stderr.
        let cmd = format!("timeout 3 wget -O - {url} 2>/dev/null");
        let out = match from {
            Origin::Host => self.sb.try_sh(&format!("busybox {cmd}")),
            Origin::Netns(ns) => self.sb.exec_in(ns, &format!("busybox {cmd}")),
            Origin::Ctr(c) => self.exec(c, &cmd),
        };
        let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !body.is_empty()).then_some(body)
    }

    /// GET until `expect` comes back (a server may still be starting), for up to 10 s: the
    /// machine may be busy with other builds.
    fn expect_get(&self, from: Origin, url: &str, expect: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.get(from, url);
            if got.as_deref() == Some(expect) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "GET {url} from {}: {got:?}, expected {expect:?}",
                    from.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ping -c1` from a container or the host.
    fn ping(&self, from: Origin, ip: &str) -> bool {
        let cmd = format!("ping -c1 -W1 {ip} >/dev/null 2>&1");
        match from {
            Origin::Host => self.sb.try_sh(&cmd).status.success(),
            Origin::Netns(ns) => self.sb.exec_in(ns, &cmd).status.success(),
            Origin::Ctr(c) => self.exec(c, &cmd).status.success(),
        }
    }

    /// What one container left on one network: leases holding its id, libcni cache files, our
    /// nftables entries owned by it.
    fn traces(&self, cid: &str, net: &str) -> Vec<(&'static str, usize)> {
        // A lease file holds the owner's container id, then its ifname.
        let dir = Path::new("/var/lib/cni/networks").join(net);
        let leases = lease_files(&dir)
            .iter()
            .filter(|ip| std::fs::read_to_string(dir.join(ip)).is_ok_and(|s| s.starts_with(cid)))
            .count();
        let prefix = format!("{net}-{cid}-");
        let cache = match std::fs::read_dir("/var/lib/cni/results") {
            Ok(d) => d
                .map(|e| e.unwrap())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => panic!("cannot list /var/lib/cni/results: {e}"),
        };
        let nft = self.sb.nft_entries(&format!("net: {net}, id: {cid}"));
        vec![
            ("leases", leases),
            ("cache files", cache),
            ("nftables entries", nft),
        ]
    }

    /// Assert one container left nothing on `net`.
    fn assert_no_traces(&self, cid: &str, net: &str) {
        for (what, n) in self.traces(cid, net) {
            assert_eq!(n, 0, "{n} {what} of {cid} left on {net}");
        }
    }

    /// Assert one container is attached to `net` (lease, cache file, firewall entries).
    fn assert_traces(&self, cid: &str, net: &str) {
        for (what, n) in self.traces(cid, net) {
            assert!(n > 0, "no {what} of {cid} on {net}");
        }
    }

    /// Remove every container, then check that nothing is left on any of `nets`.
    fn rm_all_and_assert_clean(&self, nets: &[&str]) {
        self.ok(&["rm", "-af", "-t", "0"]);
        for net in nets {
            self.sb.assert_no_cni_leftovers(&CniState {
                data_dir: Path::new("/var/lib/cni/networks"),
                cache_dir: Path::new("/var/lib/cni"),
                network: net,
            });
        }
        // Nothing in Podman's state either, and its netns files are gone.
        assert_eq!(self.ok(&["ps", "-aq"]), "");
        let netns: Vec<_> = std::fs::read_dir("/run/netns")
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("netns-") || n.starts_with("cni-"))
            .collect();
        assert!(netns.is_empty(), "netns left: {netns:?}");
    }

    /// Wait until the host holds `n` veths (a removed container's veth goes with its netns,
    /// asynchronously).
    fn assert_host_veths(&self, n: usize) {
        for _ in 0..100 {
            if self.sb.host_veths() == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(self.sb.host_veths(), n, "host veths");
    }
}

impl Origin<'_> {
    fn describe(&self) -> String {
        match self {
            Origin::Host => "the host".into(),
            Origin::Netns(n) => format!("netns {n}"),
            Origin::Ctr(c) => format!("container {c}"),
        }
    }
}

/// A network as `podman network inspect` reports it.
struct Network {
    subnets: Vec<Subnet>,
}

/// One subnet of a network and its gateway (none on an `--internal` network).
struct Subnet {
    net: IpAddr,
    len: u32,
    gateway: Option<IpAddr>,
}

impl Network {
    /// Whether `ip` (with or without a prefix length) is in one of this network's subnets.
    fn holds(&self, ip: &str) -> bool {
        let ip: IpAddr = ip.split('/').next().unwrap().parse().unwrap();
        self.subnets.iter().any(|s| match (s.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - s.len).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - s.len).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    /// The `n`th address of the first IPv4 subnet.
    fn nth_host(&self, n: u32) -> String {
        let net = self
            .subnets
            .iter()
            .find_map(|s| match s.net {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .expect("no IPv4 subnet");
        std::net::Ipv4Addr::from(u32::from(net) + n).to_string()
    }

    /// The IPv4 gateway.
    fn gateway(&self) -> String {
        self.gateway_of(true)
    }

    /// The IPv6 gateway.
    fn gateway6(&self) -> String {
        self.gateway_of(false)
    }

    fn gateway_of(&self, v4: bool) -> String {
        self.subnets
            .iter()
            .filter_map(|s| s.gateway)
            .find(|g| g.is_ipv4() == v4)
            .expect("network without such a gateway")
            .to_string()
    }
}

/// A container on two networks at once reaches a container on each.
#[test]
fn container_on_two_networks_reaches_both() {
    sandbox(|sb| {
        let p = podman(sb);
        let a = p.network("a");
        let b = p.network("b");
        // The conflist Podman wrote: the chain we claim to run, at 0.4.0.
        let conflist: Value = serde_json::from_slice(
            &std::fs::read(sb.scratch().join("podman-net.d/a.conflist")).unwrap(),
        )
        .unwrap();
        assert_eq!(conflist["cniVersion"], "0.4.0");
        let types: Vec<&str> = conflist["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "firewall", "tuning"]);

        p.web("sa", "a", &[]);
        p.web("sb", "b", &[]);
        p.web("both", "a,b", &[]);
        let (sa, sb_ip) = (p.ip("sa", "a"), p.ip("sb", "b"));
        let (both_a, both_b) = (p.ip("both", "a"), p.ip("both", "b"));
        assert!(a.holds(&both_a) && b.holds(&both_b), "{both_a} {both_b}");
        // Both addresses are on interfaces of the container, one per network.
        let if_a = p
            .ifname_with("both", &both_a)
            .expect("no interface with the a address");
        let if_b = p
            .ifname_with("both", &both_b)
            .expect("no interface with the b address");
        assert_ne!(if_a, if_b);
        assert_eq!(p.interfaces("both").len(), 2, "{:?}", p.interfaces("both"));

        // Each neighbour is reached directly on its own network's interface.
        p.expect_get(Origin::Ctr("both"), &format!("http://{sa}/"), "sa");
        p.expect_get(Origin::Ctr("both"), &format!("http://{sb_ip}/"), "sb");
        let route = p.exec("both", &format!("ip route get {sb_ip}"));
        assert!(
            String::from_utf8_lossy(&route.stdout).contains(&format!("dev {if_b}")),
            "{route:?}"
        );
        // And they reach it back on each of its addresses.
        p.expect_get(Origin::Ctr("sa"), &format!("http://{both_a}/"), "both");
        p.expect_get(Origin::Ctr("sb"), &format!("http://{both_b}/"), "both");
        assert!(p.ping(Origin::Host, &both_a) && p.ping(Origin::Host, &both_b));
        assert!(p.ping(Origin::Host, &a.gateway()) && p.ping(Origin::Ctr("both"), &b.gateway()));

        let both = p.id("both");
        p.assert_traces(&both, "a");
        p.assert_traces(&both, "b");
        p.assert_host_veths(4);
        p.rm_all_and_assert_clean(&["a", "b"]);
    });
}

/// `podman network connect` / `disconnect` of a running container.
#[test]
fn connect_and_disconnect_a_running_container() {
    sandbox(|sb| {
        let p = podman(sb);
        p.network("a");
        let b = p.network("b");
        p.web("c", "a", &[]);
        p.web("sb", "b", &[]);
        let (c, sb_ip) = (p.id("c"), p.ip("sb", "b"));
        p.assert_no_traces(&c, "b");

        for round in 0..2 {
            // The second time with a static address (the `ips` capability).
            let static_ip = b.nth_host(77);
            if round == 0 {
                p.ok(&["network", "connect", "b", "c"]);
            } else {
                p.ok(&["network", "connect", "--ip", &static_ip, "b", "c"]);
            }
            let c_b = p.ip("c", "b");
            assert!(b.holds(&c_b), "round {round}: {c_b}");
            if round == 1 {
                assert_eq!(c_b, static_ip);
            }
            let if_b = p
                .ifname_with("c", &c_b)
                .unwrap_or_else(|| panic!("round {round}: no interface with {c_b}"));
            p.expect_get(Origin::Ctr("sb"), &format!("http://{c_b}/"), "c");
            p.expect_get(Origin::Ctr("c"), &format!("http://{sb_ip}/"), "sb");
            let route = p.exec("c", &format!("ip route get {sb_ip}"));
            assert!(
                String::from_utf8_lossy(&route.stdout).contains(&format!("dev {if_b}")),
                "round {round}: {route:?}"
            );
            p.assert_traces(&c, "b");
            p.assert_host_veths(3);

            p.ok(&["network", "disconnect", "b", "c"]);
            assert!(!p.attachments("c").contains_key("b"));
            let ifs = p.interfaces("c");
            assert_eq!(ifs.len(), 1, "round {round}: {ifs:?}");
            assert!(
                p.exec("c", &format!("ip link show {if_b}")).status.code() != Some(0),
                "round {round}: {if_b} still in the container"
            );
            assert!(
                !p.ping(Origin::Ctr("sb"), &c_b),
                "round {round}: {c_b} still answers"
            );
            assert_eq!(p.get(Origin::Ctr("sb"), &format!("http://{c_b}/")), None);
            p.assert_no_traces(&c, "b");
            p.assert_host_veths(2);
            // The first network is untouched.
            p.assert_traces(&c, "a");
            assert!(p.ping(Origin::Host, &p.ip("c", "a")));
        }
        p.rm_all_and_assert_clean(&["a", "b"]);
    });
}

/// `podman network reload` re-runs the chain; addresses, MACs and traffic survive,
/// and nothing is duplicated.
#[test]
fn network_reload_keeps_addresses_and_traffic() {
    sandbox(|sb| {
        let p = podman(sb);
        let a = p.network("a");
        p.network("b");
        p.web("s", "a", &["-p", "8082:80"]);
        p.web("c", "a,b", &[]);
        p.web("t", "b", &[]);
        let c_before = p.attachments("c");
        let s = p.id("s");
        let before = p.attachments("s");
        let s_ip = p.ip("s", "a");
        let entries = p.traces(&s, "a");
        p.expect_get(Origin::Host, &format!("http://{}:8082/", a.gateway()), "s");

        p.ok(&["network", "reload", "s"]);
        p.ok(&["network", "reload", "--all"]);
        let after = p.attachments("s");
        assert_eq!(before["a"]["IPAddress"], after["a"]["IPAddress"]);
        assert_eq!(before["a"]["MacAddress"], after["a"]["MacAddress"]);
        let mac = p.exec("s", "cat /sys/class/net/eth0/address");
        assert_eq!(
            String::from_utf8_lossy(&mac.stdout).trim(),
            after["a"]["MacAddress"].as_str().unwrap()
        );
        assert_eq!(p.traces(&s, "a"), entries, "reload changed what s owns");
        // Every network of a container is re-added, with the same addresses and MACs.
        let c_after = p.attachments("c");
        for net in ["a", "b"] {
            for key in ["IPAddress", "MacAddress"] {
                assert_eq!(c_before[net][key], c_after[net][key], "c {net} {key}");
            }
        }
        assert_eq!(p.interfaces("c").len(), 2, "{:?}", p.interfaces("c"));
        p.assert_host_veths(4);
        p.expect_get(
            Origin::Ctr("t"),
            &format!("http://{}/", p.ip("c", "b")),
            "c",
        );

        p.expect_get(Origin::Ctr("c"), &format!("http://{s_ip}/"), "s");
        p.expect_get(Origin::Host, &format!("http://{s_ip}/"), "s");
        p.expect_get(Origin::Host, &format!("http://{}:8082/", a.gateway()), "s");
        p.expect_get(
            Origin::Ctr("c"),
            &format!("http://{}:8082/", a.gateway()),
            "s",
        );
        p.rm_all_and_assert_clean(&["a", "b"]);
    });
}

/// `-p 8080:80` reaches busybox httpd from outside, from the host (its own
/// addresses and 127.0.0.1), from a neighbour and from the container itself.
#[test]
fn published_port_is_reachable() {
    sandbox(|sb| {
        let p = podman(sb);
        let a = p.network("a");
        // An outside client behind the host's uplink (198.51.100.1).
        sb.netns("outside");
        sb.sh(
            "ip link add uplink type veth peer name ext netns outside && \
             ip addr add 198.51.100.1/24 dev uplink && ip link set uplink up && \
             ip -n outside addr add 198.51.100.2/24 dev ext && ip -n outside link set ext up",
        );
        p.web("s", "a", &["-p", "8080:80"]);
        p.web("c", "a", &[]);
        assert!(p.ok(&["port", "s"]).contains("80/tcp -> 0.0.0.0:8080"));
        // A mapping bound to one host address and a range.
        p.web(
            "r",
            "a",
            &["-p", "127.0.0.1:8086:80", "-p", "9000-9001:80-81"],
        );
        p.expect_get(Origin::Host, "http://127.0.0.1:8086/", "r");
        assert_eq!(
            p.get(Origin::Netns("outside"), "http://198.51.100.1:8086/"),
            None
        );
        assert_eq!(
            p.get(Origin::Host, &format!("http://{}:8086/", a.gateway())),
            None
        );
        p.expect_get(Origin::Netns("outside"), "http://198.51.100.1:9000/", "r");
        p.expect_get(Origin::Netns("outside"), "http://198.51.100.1:9001/", "r");

        let up = "http://198.51.100.1:8080/";
        p.expect_get(Origin::Netns("outside"), up, "s");
        p.expect_get(Origin::Host, up, "s");
        p.expect_get(Origin::Host, &format!("http://{}:8080/", a.gateway()), "s");
        p.expect_get(Origin::Host, "http://127.0.0.1:8080/", "s");
        p.expect_get(Origin::Ctr("c"), up, "s");
        p.expect_get(Origin::Ctr("s"), up, "s");
        // (Podman's conmon holds a listening socket on 8080 in the host namespace, only to
        // reserve the port: the answers above come from the container, through our DNAT.)

        p.ok(&["rm", "-f", "-t", "0", "s"]);
        assert_eq!(p.get(Origin::Netns("outside"), up), None);
        assert_eq!(p.get(Origin::Host, "http://127.0.0.1:8080/"), None);
        p.rm_all_and_assert_clean(&["a"]);
    });
}

/// Stop, start again, rm, and `run --rm`: each step leaves exactly what it should.
#[test]
fn stop_start_rm_leave_nothing() {
    sandbox(|sb| {
        let p = podman(sb);
        let a = p.network("a");
        p.web("s", "a", &["-p", "8083:80"]);
        p.web("c", "a", &[]);
        let (s, c) = (p.id("s"), p.id("c"));
        let port = format!("http://{}:8083/", a.gateway());
        p.expect_get(Origin::Host, &port, "s");
        p.assert_traces(&s, "a");
        p.assert_host_veths(2);

        p.ok(&["stop", "-t", "0", "s"]);
        p.assert_no_traces(&s, "a");
        p.assert_host_veths(1);
        assert_eq!(p.get(Origin::Host, &port), None);
        p.assert_traces(&c, "a");
        assert!(p.ping(Origin::Host, &p.ip("c", "a")));

        p.ok(&["start", "s"]);
        p.assert_traces(&s, "a");
        p.assert_host_veths(2);
        p.expect_get(Origin::Host, &port, "s");
        p.expect_get(
            Origin::Ctr("c"),
            &format!("http://{}/", p.ip("s", "a")),
            "s",
        );

        // A short-lived client: Podman tears its network down when it exits.
        let c_ip = p.ip("c", "a");
        let out = p.ok(&[
            "run",
            "--rm",
            "--network",
            "a",
            IMAGE,
            "wget",
            "-O",
            "-",
            &format!("http://{c_ip}/"),
        ]);
        assert_eq!(out, "c");
        p.assert_host_veths(2);
        let leases = sb.cni_leftovers(&CniState {
            data_dir: Path::new("/var/lib/cni/networks"),
            cache_dir: Path::new("/var/lib/cni"),
            network: "a",
        });
        assert_eq!(leases[0], ("leases", 2), "{leases:?}");

        // A detached container that exits on its own: conmon's exit command (`podman container
        // cleanup`, reading the default config path) tears its network down.
        p.ok(&[
            "run",
            "-d",
            "--name",
            "short",
            "--network",
            "a",
            IMAGE,
            "sleep",
            "1",
        ]);
        let short = p.id("short");
        p.assert_traces(&short, "a");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.traces(&short, "a").iter().all(|(_, n)| *n == 0) {
            assert!(
                Instant::now() < deadline,
                "exited container still attached: {:?}",
                p.traces(&short, "a")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            p.ok(&["inspect", "--format", "{{.State.Status}}", "short"]),
            "exited"
        );
        p.assert_host_veths(2);

        p.rm_all_and_assert_clean(&["a"]);
        p.ok(&["network", "rm", "a"]);
    });
}

/// `podman network create --ipv6`: dual-stack containers talk over IPv6, and a published port
/// answers on the host's IPv6 address on the bridge.
#[test]
fn dual_stack_network() {
    sandbox(|sb| {
        let p = podman(sb);
        let n = p.network_with("v6", &["--ipv6"]);
        p.web("s", "v6", &["-p", "8084:80"]);
        p.web("c", "v6", &[]);
        let (s4, s6) = (p.ip("s", "v6"), p.ip6("s", "v6"));
        assert!(n.holds(&s4) && n.holds(&s6), "{s4} {s6}");
        let inside = p.exec("s", "ip -o -6 addr show dev eth0 scope global");
        assert!(
            String::from_utf8_lossy(&inside.stdout).contains(&format!("{s6}/")),
            "{inside:?}"
        );
        assert!(p.ping(Origin::Ctr("c"), &s6));
        p.expect_get(Origin::Ctr("c"), &format!("http://[{s6}]/"), "s");
        p.expect_get(Origin::Ctr("c"), &format!("http://{s4}/"), "s");
        p.expect_get(Origin::Host, &format!("http://[{s6}]/"), "s");
        p.expect_get(
            Origin::Host,
            &format!("http://[{}]:8084/", n.gateway6()),
            "s",
        );
        p.expect_get(Origin::Host, &format!("http://{}:8084/", n.gateway()), "s");
        p.rm_all_and_assert_clean(&["v6"]);
    });
}

/// Options of `podman network create` that reach our plugins: `--internal` (no gateway, no
/// masquerade), `--opt isolate=true` (firewall `ingressPolicy: same-bridge`), `--opt mtu`,
/// `--subnet/--gateway/--ip-range`, and per-container `--ip` / `--mac-address` (the `ips`
/// capability and `MAC` in CNI_ARGS), kept across a restart.
#[test]
fn network_create_options() {
    sandbox(|sb| {
        let p = podman(sb);
        p.network("a");
        p.network_with("int", &["--internal"]);
        p.network_with("iso1", &["--opt", "isolate=true", "--opt", "mtu=1400"]);
        p.network_with("iso2", &["--opt", "isolate=true"]);
        let custom = p.network_with(
            "custom",
            &[
                "--subnet",
                "10.77.0.0/24",
                "--gateway",
                "10.77.0.254",
                "--ip-range",
                "10.77.0.128/25",
            ],
        );
        p.web("ca", "a", &[]);
        p.web("n1", "int", &[]);
        p.web("n2", "int", &[]);
        p.web("i1", "iso1", &[]);
        p.web("i1b", "iso1", &[]);
        p.web("i2", "iso2", &[]);
        let ip = |c: &str, n: &str| p.ip(c, n);
        let (ca, n1, i1, i2) = (
            ip("ca", "a"),
            ip("n1", "int"),
            ip("i1", "iso1"),
            ip("i2", "iso2"),
        );

        // --internal: neighbours only, no way out and no way in from other networks.
        p.expect_get(Origin::Ctr("n2"), &format!("http://{n1}/"), "n1");
        let routes = p.exec("n1", "ip route");
        assert!(
            !String::from_utf8_lossy(&routes.stdout).contains("default"),
            "{routes:?}"
        );
        assert_eq!(p.get(Origin::Ctr("n1"), &format!("http://{ca}/")), None);
        assert_eq!(p.get(Origin::Ctr("ca"), &format!("http://{n1}/")), None);

        // isolate=true blocks traffic between the networks that have it (Podman's definition,
        // the reference firewall's same-bridge policy): not from a plain network, not from
        // the host.
        p.expect_get(Origin::Ctr("i1b"), &format!("http://{i1}/"), "i1");
        p.expect_get(Origin::Ctr("ca"), &format!("http://{i1}/"), "i1");
        assert_eq!(p.get(Origin::Ctr("i2"), &format!("http://{i1}/")), None);
        assert_eq!(p.get(Origin::Ctr("i1"), &format!("http://{i2}/")), None);
        p.expect_get(Origin::Host, &format!("http://{i1}/"), "i1");
        p.expect_get(Origin::Host, &format!("http://{i2}/"), "i2");
        // mtu=1400 on the container's interface.
        let mtu = p.exec("i1", "cat /sys/class/net/eth0/mtu");
        assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1400");

        // Static address and MAC, a dynamic address from the range, the custom gateway.
        let mac = "02:11:22:33:44:55";
        p.web(
            "st",
            "custom",
            &["--ip", "10.77.0.200", "--mac-address", mac],
        );
        p.web("dyn", "custom", &[]);
        let d = ip("dyn", "custom");
        let last: u8 = d.rsplit('.').next().unwrap().parse().unwrap();
        assert!(custom.holds(&d) && last > 128, "{d} outside the range");
        let routes = p.exec("dyn", "ip route");
        assert!(
            String::from_utf8_lossy(&routes.stdout).contains("default via 10.77.0.254"),
            "{routes:?}"
        );
        for round in ["run", "restart"] {
            if round == "restart" {
                p.ok(&["restart", "-t", "0", "st"]);
            }
            assert_eq!(ip("st", "custom"), "10.77.0.200", "after {round}");
            let inside = p.exec(
                "st",
                "cat /sys/class/net/eth0/address; ip -o -4 addr show eth0",
            );
            let inside = String::from_utf8_lossy(&inside.stdout).to_string();
            assert!(
                inside.starts_with(mac) && inside.contains("10.77.0.200/24"),
                "after {round}: {inside}"
            );
            p.expect_get(Origin::Ctr("dyn"), "http://10.77.0.200/", "st");
        }
        p.rm_all_and_assert_clean(&["a", "int", "iso1", "iso2", "custom"]);
    });
}

/// Podman hands a container's port mappings to EVERY network it attaches (CNI backend), as the
/// reference portmap expects: each attachment gets its own DNAT chain and the first one
/// matches. `-p` on a container with two networks, or `network connect` of a container that
/// publishes ports, must therefore work, and the port must keep answering while any attachment
/// remains.
#[test]
fn published_port_on_two_networks() {
    sandbox(|sb| {
        let p = podman(sb);
        let a = p.network("a");
        p.network("b");
        // Attached to both at start.
        p.web("s", "a,b", &["-p", "8087:80"]);
        let port = format!("http://{}:8087/", a.gateway());
        p.expect_get(Origin::Host, &port, "s");
        p.expect_get(Origin::Host, "http://127.0.0.1:8087/", "s");
        // Connected later, then the first network goes: the port still reaches it through b.
        p.web("t", "a", &["-p", "8088:80"]);
        p.ok(&["network", "connect", "b", "t"]);
        p.expect_get(Origin::Host, "http://127.0.0.1:8088/", "t");
        p.ok(&["network", "disconnect", "a", "t"]);
        p.expect_get(Origin::Host, "http://127.0.0.1:8088/", "t");
        p.ok(&["network", "disconnect", "b", "t"]);
        assert_eq!(p.get(Origin::Host, "http://127.0.0.1:8088/"), None);
        p.rm_all_and_assert_clean(&["a", "b"]);
    });
}
