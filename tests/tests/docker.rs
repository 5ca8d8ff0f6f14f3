//! Stock dockerd (Debian's `docker.io`, 20.10) using sandboxd as its remote network driver and
//! remote IPAM driver (`sandboxd --docker-plugin rcni`), end to end.
//!
//! Each test runs in the harness's private network + mount namespace: sandboxd is started
//! first (its plugin socket appears at `/run/docker/plugins/rcni.sock` on the sandbox's `/run`
//! tmpfs), then dockerd with its own data root, exec root, pid file and API socket, a tmpfs on
//! `/etc/docker` (daemon.json, key.json), `--storage-driver vfs` and the cgroupfs driver under a
//! cgroup parent of the test's own (removed at the end). The image is a busybox rootfs from
//! `busybox-static`, `docker import`ed: no registry. dockerd sets the iptables FORWARD policy to
//! DROP inside the sandbox, so every traffic check also checks that our firewall entries keep
//! the bridge working. Only the docker CLI drives dockerd; the kernel state is checked with
//! iproute2, nft and iptables, sandboxd's view with `netns`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{busybox_image_tar, lease_files, sandbox, Sandbox};
use serde_json::Value;

const IMAGE: &str = "rcni-busybox:latest";
const PLUGIN: &str = "rcni";

/// `docker network create` with our network and IPAM driver.
const CREATE_NET: [&str; 6] = ["network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN];

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn errtext(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// The harness's sandboxd with the Docker plugin face.
struct Sandboxd {
    d: integration_tests::daemon::Sandboxd,
}

integration_tests::wraps_sandboxd!(Sandboxd);

impl Sandboxd {
    fn start(sb: &Sandbox) -> Sandboxd {
        let mut d = Sandboxd {
            d: integration_tests::daemon::Sandboxd::new(
                sb.scratch().join("sandboxd/sandboxd.sock"),
                sb.dir("sandboxd-data"),
            )
            .args(["--docker-plugin", PLUGIN])
            .env("SANDBOXD_LOG", "info,sandboxd::docker=debug"),
        };
        d.spawn();
        d
    }

    fn plugin_sock() -> PathBuf {
        PathBuf::from(format!("/run/docker/plugins/{PLUGIN}.sock"))
    }

    /// Start, and wait until both the API and the plugin socket answer (connect, not just
    /// exist: after a kill -9 the old socket files are still there).
    fn spawn(&mut self) {
        self.d.start();
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(Self::plugin_sock()).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no Docker plugin socket: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM by PID: a clean exit that removes the plugin socket too.
    fn stop(&mut self) {
        self.d.stop();
        assert!(
            !Self::plugin_sock().exists(),
            "plugin socket left behind after SIGTERM"
        );
    }

    fn kill9(&mut self) {
        self.d.kill9();
    }

    /// `netns --daemon <sock> <args>`: stdout.
    fn netns(&self, args: &[&str]) -> String {
        self.cli_ok(args).trim().to_string()
    }

    /// The Docker face's persisted state.
    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.data("docker/state.json")).unwrap()).unwrap()
    }

    /// Lease files of a Docker pool (host-local layout).
    fn leases(&self, pool: &str) -> Vec<String> {
        let dir = format!("docker-{}", pool.replace('/', "_"));
        lease_files(&self.data("ipam").join(dir))
    }
}

/// Mount the cgroup hierarchies on the sandbox's fresh sysfs as the machine has them (v1
/// controllers when any is in use, else the unified hierarchy): runc needs them.
fn mount_cgroups(sb: &Sandbox) {
    sb.sh("mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup");
    let cgroups = std::fs::read_to_string("/proc/cgroups").unwrap();
    let v1: Vec<&str> = cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[1] != "0" && f[3] == "1").then_some(f[0])
        })
        .collect();
    if v1.is_empty() {
        sb.sh("umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup");
        return;
    }
    // Controllers sharing a hierarchy (cpu,cpuacct on some machines) must be mounted together.
    let mut by_hier: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for l in cgroups.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 4 && f[1] != "0" && f[3] == "1" {
            by_hier.entry(f[1].to_string()).or_default().push(f[0]);
        }
    }
    for ctrls in by_hier.values() {
        let opts = ctrls.join(",");
        sb.sh(&format!(
            "mkdir -p /sys/fs/cgroup/{opts} && mount -t cgroup -o {opts} cgroup /sys/fs/cgroup/{opts}"
        ));
    }
    sb.sh("mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd");
}

/// A dockerd of the test.
struct Dockerd<'a> {
    sb: &'a Sandbox,
    child: Option<Child>,
    dir: PathBuf,
    sock: PathBuf,
    cgroup_parent: String,
}

impl<'a> Dockerd<'a> {
    /// Prepare the private directories, cgroups and `/etc/docker`; import the image on first
    /// start.
    fn new(sb: &'a Sandbox, tag: &str) -> Dockerd<'a> {
        testbox::require_tool("dockerd");
        testbox::require_tool("docker");
        mount_cgroups(sb);
        sb.sh("mkdir -p /etc/docker && mount -t tmpfs tmpfs /etc/docker");
        let dir = sb.dir(&format!("docker-{tag}"));
        for d in ["root", "exec", "tmp", "config"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        Dockerd {
            sb,
            child: None,
            sock: dir.join("docker.sock"),
            dir,
            cgroup_parent: format!("/rcni-test-docker-{}-{tag}", std::process::id()),
        }
    }

    fn start(&mut self, live_restore: bool) {
        assert!(self.child.is_none());
        std::fs::write(
            "/etc/docker/daemon.json",
            format!("{{\"live-restore\": {live_restore}}}"),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(self.dir.join("root"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("pid"))
            .args(["--config-file", "/etc/docker/daemon.json"])
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(["--storage-driver", "vfs"])
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .args(["--cgroup-parent", &self.cgroup_parent])
            .env("DOCKER_TMPDIR", self.dir.join("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if self
                .run(&["info", "--format", "{{.ServerVersion}}"])
                .status
                .success()
            {
                break;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("dockerd exited with {st}: {}", self.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "dockerd did not become ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM by PID and wait (dockerd stops its containerd first).
    fn stop(&mut self) {
        let mut c = self.child.take().unwrap();
        // SAFETY: kill(2) on the PID of our own child, not reaped yet.
        assert_eq!(unsafe { libc::kill(c.id() as i32, libc::SIGTERM) }, 0);
        let t = Instant::now();
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            if t.elapsed() > Duration::from_secs(40) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("dockerd did not stop within 40 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("config"))
            .output()
            .unwrap()
    }

    /// `docker <args>`, which must succeed: stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`docker {}` failed: {}\n--- dockerd log:\n{}",
            args.join(" "),
            errtext(&out),
            self.log()
        );
        text(&out)
    }

    /// `docker network create -d rcni --ipam-driver rcni ARGS…`: stdout, must succeed.
    fn create_net(&self, args: &[&str]) -> String {
        self.ok(&[&CREATE_NET[..], args].concat())
    }

    /// The same, refused: its stderr.
    fn create_net_fails(&self, args: &[&str]) -> String {
        self.fails(&[&CREATE_NET[..], args].concat())
    }

    /// `docker <args>`, which must fail: stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "`docker {}` succeeded: {}",
            args.join(" "),
            text(&out)
        );
        errtext(&out)
    }

    fn import_image(&self) {
        let tar = busybox_image_tar(self.sb, "docker-rootfs");
        self.ok(&["import", tar.to_str().unwrap(), IMAGE]);
    }

    /// A container serving its own name over HTTP on port 80.
    fn web(&self, name: &str, extra: &[&str]) -> String {
        let script = format!("echo {name} > /www/index.html && exec httpd -f -p 80 -h /www");
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sh", "-c", &script]);
        self.ok(&args)
    }

    /// A container that just sleeps.
    fn idle(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "3600"]);
        self.ok(&args)
    }

    fn inspect(&self, what: &str, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&[what, "inspect", name])).unwrap();
        v[0].clone()
    }

    /// The address of `ctr` on docker network `net`.
    fn ip(&self, ctr: &str, net: &str) -> String {
        let v = self.inspect("container", ctr);
        v["NetworkSettings"]["Networks"][net]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `ping` from inside a container (a few tries: the first ARP exchange may lose one).
    fn ping(&self, from: &str, to: &str) -> bool {
        (0..3).any(|_| {
            self.run(&["exec", from, "ping", "-c1", "-W2", to])
                .status
                .success()
        })
    }

    /// `ping` that must fail: one echo, one second (each call is paired with a working
    /// control over the same path, so a lost packet cannot hide a broken check for long).
    fn no_ping(&self, from: &str, to: &str) -> bool {
        !self
            .run(&["exec", from, "ping", "-c1", "-W1", to])
            .status
            .success()
    }

    /// Wait until `ctr` runs.
    fn wait_running(&self, ctr: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            let out = self.run(&["inspect", "--format", "{{.State.Running}}", ctr]);
            if text(&out) == "true" {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{ctr} is not running: {}", self.log());
    }

    /// PID of a container's process.
    fn pid(&self, ctr: &str) -> String {
        self.ok(&["inspect", "--format", "{{.State.Pid}}", ctr])
    }
}

impl Drop for Dockerd<'_> {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.run(&["ps", "-aq"]);
            for id in text(&ids).split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
            if let Some(mut c) = self.child.take() {
                // SAFETY: kill(2) on the PID of our own child, not reaped yet.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let _ = c.wait();
            }
        }
        // Container cgroups are gone with the containers; remove our parents.
        let _ = self.sb.try_sh(&format!(
            "for d in /sys/fs/cgroup/*{p} /sys/fs/cgroup/*/{p}; do [ -d \"$d\" ] && rmdir \"$d\"; done",
            p = self.cgroup_parent.trim_start_matches('/')
        ));
    }
}

/// One HTTP GET from the sandbox's host namespace (busybox wget; no `-q`, it crashes): the
/// body, retried for a few seconds while the server starts.
fn http_get(sb: &Sandbox, url: &str) -> Option<String> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        let out = sb.try_sh(&format!("timeout 4 busybox wget -O- {url} 2>/dev/null"));
        if out.status.success() {
            return Some(text(&out));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// One HTTP GET attempt (for checking that something does *not* answer).
fn http_get_once(sb: &Sandbox, url: &str) -> Option<String> {
    let out = sb.try_sh(&format!("timeout 2 busybox wget -O- {url} 2>/dev/null"));
    out.status.success().then(|| text(&out))
}

/// Links of our Docker endpoints and bridges in the sandbox's host namespace.
fn our_links(sb: &Sandbox) -> Vec<String> {
    sb.link_names(None)
        .into_iter()
        .filter(|n| {
            n.starts_with("rcv")
                || n.starts_with("rcp")
                || n.starts_with("rc-")
                || n.starts_with("rcbr")
        })
        .collect()
}

/// Our firewall entries for Docker networks: nftables elements (owner comments) and the
/// iptables accept rules the forward code adds when FORWARD's policy is DROP.
fn fw_entries(sb: &Sandbox, subnet_prefix: &str) -> (usize, usize) {
    let nft = sb.nft_entries("docker-");
    // `sh` fails the test when iptables cannot list: an empty answer must mean "no rules".
    let ipt = sb.sh("iptables -S && iptables -t nat -S");
    let ipt = ipt.lines().filter(|l| l.contains(subnet_prefix)).count();
    (nft, ipt)
}

fn assert_state_empty(d: &Sandboxd) {
    let st = d.state();
    for k in ["networks", "endpoints", "pools"] {
        assert!(
            st[k].as_object().unwrap().is_empty(),
            "{k} left in the Docker state: {st}"
        );
    }
}

/// Networks with remote and built-in IPAM, traffic by IP and by name, a published port,
/// connect/disconnect (also of a container on Docker's own bridge), `network rm` while in use,
/// sandboxd's view, and nothing left at the end.
#[test]
fn networks_traffic_ports_and_connect() {
    sandbox(|sb| {
        let sd = Sandboxd::start(sb);
        let mut dk = Dockerd::new(sb, "a");
        dk.start(false);
        dk.import_image();
        assert_eq!(
            sb.sh("iptables -S FORWARD | head -1").trim(),
            "-P FORWARD DROP",
            "dockerd should have set FORWARD to DROP"
        );

        // Remote IPAM, with driver options.
        dk.create_net(&[
            "--subnet",
            "10.77.0.0/24",
            "--gateway",
            "10.77.0.1",
            "--ip-range",
            "10.77.0.128/25",
            "-o",
            "com.docker.network.bridge.name=rcbr77",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "net1",
        ]);
        let n1 = dk.inspect("network", "net1");
        assert_eq!(n1["Driver"], PLUGIN);
        assert_eq!(n1["IPAM"]["Driver"], PLUGIN);
        assert_eq!(n1["IPAM"]["Config"][0]["Subnet"], "10.77.0.0/24");
        let br = sb.link(None, "rcbr77").expect("bridge rcbr77 missing");
        assert_eq!(br["mtu"], 1400);
        assert_eq!(sb.global_addrs(None, "rcbr77"), vec!["10.77.0.1/24"]);

        // Docker's built-in IPAM with our driver; the default bridge name.
        dk.ok(&[
            "network",
            "create",
            "-d",
            PLUGIN,
            "--subnet",
            "10.78.0.0/24",
            "net2",
        ]);
        let n2 = dk.inspect("network", "net2");
        assert_eq!(n2["IPAM"]["Driver"], "default");
        let n2_id = n2["Id"].as_str().unwrap().to_string();
        let br2 = format!("rc-{}", &n2_id[..11]);
        assert_eq!(sb.global_addrs(None, &br2), vec!["10.78.0.1/24"]);

        // An internal network: no default route, no docker_gwbridge, no masquerade.
        dk.create_net(&["--internal", "--subnet", "10.79.0.0/24", "net3"]);
        let routes = dk.ok(&["run", "--rm", "--network", "net3", IMAGE, "ip", "route"]);
        assert!(!routes.contains("default"), "{routes}");
        let links = dk.ok(&[
            "run",
            "--rm",
            "--network",
            "net3",
            IMAGE,
            "ip",
            "-o",
            "link",
        ]);
        assert!(!links.contains("eth1"), "{links}");
        dk.ok(&["network", "rm", "net3"]);

        // A driver option we do not know is refused, and dockerd's pool goes back.
        let e = dk.create_net_fails(&["--subnet", "10.80.0.0/24", "-o", "frobnicate=1", "bad"]);
        assert!(e.contains("unknown option"), "{e}");
        // Docker's own bridge is never adopted (network rm would delete it).
        let e = dk.create_net_fails(&[
            "--subnet",
            "10.80.0.0/24",
            "-o",
            "com.docker.network.bridge.name=docker0",
            "bad",
        ]);
        assert!(e.contains("already exists"), "{e}");

        // IPAM errors come back to the user: an overlapping pool is refused.
        let e = dk.create_net_fails(&["--subnet", "10.77.0.0/16", "overlap"]);
        assert!(e.contains("overlaps pool 10.77.0.0/24"), "{e}");

        // No subnet: our IPAM picks a free default pool (docker0 has 172.17.0.0/16).
        dk.create_net(&["auto"]);
        let auto = dk.inspect("network", "auto");
        let subnet = auto["IPAM"]["Config"][0]["Subnet"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            subnet.starts_with("172.") || subnet.starts_with("192.168."),
            "{subnet}"
        );
        assert_ne!(subnet, "172.17.0.0/16");
        dk.ok(&["network", "rm", "auto"]);

        // Dual stack with our IPAM.
        dk.create_net(&[
            "--ipv6",
            "--subnet",
            "10.76.0.0/24",
            "--subnet",
            "fd00:76::/64",
            "net6",
        ]);
        dk.idle("six", &["--network", "net6"]);
        let a6 = dk.ok(&["exec", "six", "ip", "-o", "-6", "addr", "show", "eth0"]);
        assert!(a6.contains("fd00:76::"), "{a6}");
        assert!(
            (0..3).any(|_| dk
                .run(&["exec", "six", "ping", "-6", "-c1", "-W2", "fd00:76::1"])
                .status
                .success()),
            "ping6 the gateway"
        );
        dk.ok(&["rm", "-f", "six"]);
        dk.ok(&["network", "rm", "net6"]);

        // Two containers: static address and MAC, published port, names.
        dk.web(
            "web1",
            &["--network", "net1", "--ip", "10.77.0.10", "-p", "8080:80"],
        );
        dk.idle("cli1", &["--network", "net1"]);
        assert_eq!(dk.ip("web1", "net1"), "10.77.0.10");
        let cli_ip = dk.ip("cli1", "net1");
        let last: u8 = cli_ip.strip_prefix("10.77.0.").unwrap().parse().unwrap();
        assert!(last >= 128, "dynamic address {cli_ip} outside --ip-range");
        let eth0 = dk.ok(&["exec", "web1", "ip", "-o", "link", "show", "eth0"]);
        assert!(eth0.contains("02:42:0a:4d:00:0a"), "{eth0}");
        assert!(eth0.contains("mtu 1400"), "{eth0}");
        let route = dk.ok(&["exec", "cli1", "ip", "route"]);
        assert!(route.contains("default via 10.77.0.1"), "{route}");
        assert_eq!(
            sd.leases("10.77.0.0/24"),
            {
                let mut v = vec!["10.77.0.10".to_string(), cli_ip.clone()];
                v.sort();
                v
            },
            "leases in host-local's layout"
        );
        assert!(dk.ping("cli1", "10.77.0.10"), "ping by address");
        assert!(
            dk.ping("cli1", "web1"),
            "ping by name (Docker's embedded DNS)"
        );
        assert!(dk.ping("web1", "cli1"), "ping back by name");
        assert!(dk.ping("cli1", "10.77.0.1"), "ping the gateway");

        // The published port answers from the sandbox's host, on the bridge address and
        // on localhost.
        assert_eq!(
            http_get(sb, "http://10.77.0.1:8080/").as_deref(),
            Some("web1")
        );
        assert_eq!(
            http_get(sb, "http://127.0.0.1:8080/").as_deref(),
            Some("web1")
        );

        // Our entries exist while the endpoints do: masquerade, forward and port elements in
        // nftables, and the iptables accepts that get past dockerd's FORWARD DROP.
        let (nft, ipt) = fw_entries(sb, "10.77.0.");
        assert!(
            nft > 0 && ipt > 0,
            "firewall entries missing: nft {nft}, iptables {ipt}"
        );

        // A port without a host port cannot be published by this driver: the run fails with
        // our message and dockerd undoes the endpoint (checked by the leftover checks below).
        let e = dk.fails(&[
            "run",
            "--rm",
            "--network",
            "net1",
            "-p",
            "80",
            IMAGE,
            "true",
        ]);
        assert!(e.contains("a host port is required"), "{e}");

        // sandboxd's view.
        let nets = sd.netns(&["network", "ls"]);
        let n1_id = n1["Id"].as_str().unwrap();
        assert!(nets.contains(&format!("docker-{}", &n1_id[..12])), "{nets}");
        assert!(nets.contains(&format!("docker-{}", &n2_id[..12])), "{nets}");
        let sbs = sd.netns(&["sandbox", "ls"]);
        assert!(sbs.contains("10.77.0.10"), "{sbs}");
        assert!(sbs.contains(&cli_ip), "{sbs}");

        // Connect and disconnect running containers: one on Docker's own bridge first.
        dk.idle("bridged", &[]);
        assert!(dk.ip("bridged", "bridge").starts_with("172.17."));
        dk.ok(&["network", "connect", "net1", "bridged"]);
        let b_ip = dk.ip("bridged", "net1");
        assert!(b_ip.starts_with("10.77.0."), "{b_ip}");
        let addrs = dk.ok(&["exec", "bridged", "ip", "-o", "-4", "addr"]);
        assert!(addrs.contains(&b_ip), "{addrs}");
        assert!(
            dk.ping("bridged", "web1"),
            "connected container reaches web1 by name"
        );
        assert!(
            dk.ping("web1", &b_ip),
            "web1 reaches the connected container"
        );
        dk.ok(&["network", "connect", "net2", "cli1"]);
        let c2_ip = dk.ip("cli1", "net2");
        assert!(c2_ip.starts_with("10.78.0."), "{c2_ip}");
        dk.idle("cli2", &["--network", "net2"]);
        assert!(dk.ping("cli2", "cli1"), "second network by name");

        // Isolation between networks, as Docker's bridge driver has it: cli2 (net2 only) and
        // web1 (net1 only) cannot reach each other through the host, while cli1, on both,
        // reaches both, and the host reaches every container (the published port above).
        let cli2_ip = dk.ip("cli2", "net2");
        assert!(
            dk.no_ping("cli2", "10.77.0.10"),
            "net2 -> net1 must be dropped"
        );
        assert!(dk.no_ping("web1", &cli2_ip), "net1 -> net2 must be dropped");
        assert!(dk.ping("cli1", &cli2_ip), "control: cli1 -> cli2 on net2");
        assert!(
            dk.ping("cli1", "10.77.0.10"),
            "control: cli1 -> web1 on net1"
        );
        // The isolation rules are the `firewall` plugin's (ingressPolicy same-bridge).
        let iso = sb.sh("nft list chain inet rcni isolation1");
        assert!(iso.contains("rcni-iso1: rcbr77"), "{iso}");
        assert!(iso.contains(&format!("rcni-iso1: {br2}")), "{iso}");

        // Docker's default bridge and ours are isolated too, as between Docker's own networks.
        // libnetwork's DOCKER-ISOLATION chains list only Docker's own bridges (without our
        // entries both directions get through); our isolation chains list docker0 as well.
        dk.idle("plain", &[]);
        let plain_ip = dk.ip("plain", "bridge");
        assert!(
            dk.ping("plain", "172.17.0.1"),
            "control: docker0 container up"
        );
        assert!(dk.ping("cli2", "10.78.0.1"), "control: net2 container up");
        assert!(
            dk.no_ping("cli2", &plain_ip),
            "our network -> docker0 must be dropped"
        );
        assert!(
            dk.no_ping("plain", &cli2_ip),
            "docker0 -> our network must be dropped"
        );
        assert!(iso.contains("rcni-iso1: docker0"), "{iso}");

        // enable_icc=false: the network's containers cannot reach each other; the gateway (the
        // host) still answers.
        dk.create_net(&[
            "--subnet",
            "10.75.0.0/24",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "-o",
            "com.docker.network.bridge.name=rcbr75",
            "quiet",
        ]);
        dk.idle("q1", &["--network", "quiet"]);
        dk.idle("q2", &["--network", "quiet"]);
        let q2_ip = dk.ip("q2", "quiet");
        assert!(dk.ping("q1", "10.75.0.1"), "control: q1 -> its gateway");
        assert!(
            dk.no_ping("q1", &q2_ip),
            "q1 -> q2 with enable_icc=false must be dropped"
        );
        assert!(
            sb.try_sh(&format!("ping -c1 -W2 {q2_ip}")).status.success(),
            "control: the host reaches q2"
        );
        let iso = sb.sh("nft list chain inet rcni isolation1");
        assert!(iso.contains("rcni-isolated: rcbr75"), "{iso}");
        for c in ["q1", "q2", "plain"] {
            dk.ok(&["rm", "-f", c]);
        }
        dk.ok(&["network", "rm", "quiet"]);
        let iso = sb.sh("nft list table inet rcni");
        assert!(!iso.contains("rcbr75"), "isolation rules left: {iso}");
        let ports_before = sb.link_names(None).len();
        dk.ok(&["network", "disconnect", "net1", "bridged"]);
        dk.ok(&["network", "disconnect", "net2", "cli1"]);
        let addrs = dk.ok(&["exec", "bridged", "ip", "-o", "-4", "addr"]);
        assert!(!addrs.contains(&b_ip), "{addrs}");
        assert_eq!(
            sb.link_names(None).len(),
            ports_before - 2,
            "veths of disconnected endpoints removed"
        );
        assert!(!sd.leases("10.77.0.0/24").contains(&b_ip), "lease released");
        assert!(dk.ping("cli1", "web1"), "remaining endpoint unaffected");

        // network rm while in use is refused, then works.
        let e = dk.fails(&["network", "rm", "net1"]);
        assert!(e.contains("active endpoints"), "{e}");
        for c in ["web1", "cli1", "cli2", "bridged"] {
            dk.ok(&["rm", "-f", c]);
        }
        dk.ok(&["network", "rm", "net1", "net2"]);
        assert!(sb.link(None, "rcbr77").is_none(), "bridge removed");
        assert!(sb.link(None, &br2).is_none(), "bridge removed");
        let table = sb.sh("nft list table inet rcni");
        assert!(
            !table.contains("rcbr77") && !table.contains(&br2) && !table.contains("docker0"),
            "isolation rules left: {table}"
        );

        // Nothing left.
        assert_eq!(our_links(sb), Vec::<String>::new());
        assert_eq!(sb.host_veths(), 0, "veths left: {:?}", sb.link_names(None));
        assert!(sd.leases("10.77.0.0/24").is_empty());
        assert_eq!(
            fw_entries(sb, "10.77.0."),
            (0, 0),
            "firewall entries left (nft, iptables)"
        );
        assert_eq!(fw_entries(sb, "10.78.0.").1, 0);
        assert_state_empty(&sd);
        assert!(http_get(sb, "http://10.77.0.1:8080/").is_none());
        dk.stop();
        drop(dk);
        drop(sd);
    });
}

/// dockerd restarts (plain, then with --live-restore) and a sandboxd restart with running
/// containers: `--restart always` containers come back with traffic, new containers work, the
/// endpoints created before a live restore are removed cleanly later, nothing is left.
#[test]
fn dockerd_and_sandboxd_restarts() {
    sandbox(|sb| {
        let mut sd = Sandboxd::start(sb);
        let mut dk = Dockerd::new(sb, "b");
        dk.start(false);
        dk.import_image();
        dk.create_net(&["--subnet", "10.81.0.0/24", "rnet"]);
        let always = ["--network", "rnet", "--restart", "always"];
        let mut with_port = always.to_vec();
        with_port.extend_from_slice(&["-p", "8081:80"]);
        dk.web("rweb", &with_port);
        dk.idle("rcli", &always);
        assert!(dk.ping("rcli", "rweb"));
        assert_eq!(
            http_get(sb, "http://10.81.0.1:8081/").as_deref(),
            Some("rweb")
        );

        // Plain restart: dockerd tears the endpoints down and creates new ones at start.
        dk.stop();
        dk.start(false);
        dk.wait_running("rweb");
        dk.wait_running("rcli");
        assert!(dk.ping("rcli", "rweb"), "traffic after a dockerd restart");
        assert_eq!(
            http_get(sb, "http://10.81.0.1:8081/").as_deref(),
            Some("rweb")
        );
        let out = dk.ok(&[
            "run",
            "--rm",
            "--network",
            "rnet",
            IMAGE,
            "ping",
            "-c1",
            "-W2",
            "rweb",
        ]);
        assert!(out.contains("1 packets received"), "{out}");
        assert_eq!(sd.state()["endpoints"].as_object().unwrap().len(), 2);
        assert_eq!(
            sd.leases("10.81.0.0/24").len(),
            2,
            "one lease per container"
        );

        // sandboxd restart with everything running: state reloaded, new work accepted.
        sd.stop();
        sd.spawn();
        assert!(dk.ping("rcli", "rweb"), "traffic while sandboxd restarted");
        dk.idle("late", &["--network", "rnet"]);
        assert!(
            dk.ping("late", "rweb"),
            "new container after a sandboxd restart"
        );
        dk.ok(&["rm", "-f", "late"]);
        // kill -9: the stale socket is replaced, the state is whole.
        sd.kill9();
        sd.spawn();
        assert!(dk.ping("rcli", "rweb"), "traffic after sandboxd was killed");
        dk.idle("late2", &["--network", "rnet"]);
        assert!(dk.ping("late2", "rweb"), "new container after a kill -9");
        dk.ok(&["rm", "-f", "late2"]);

        // Switch to live-restore (this restart still stops the containers), then restart
        // with live-restore on: the containers keep running, nothing is called.
        dk.stop();
        dk.start(true);
        dk.wait_running("rweb");
        dk.wait_running("rcli");
        let pid = dk.pid("rweb");
        let web_ip = dk.ip("rweb", "rnet");
        let state_before = sd.state();
        dk.stop();
        assert!(
            sb.try_sh(&format!("ping -c1 -W2 {web_ip}"))
                .status
                .success(),
            "the container still answers while dockerd is down"
        );
        dk.start(true);
        assert_eq!(dk.pid("rweb"), pid, "live-restore kept the container");
        assert_eq!(sd.state()["endpoints"], state_before["endpoints"]);
        assert!(
            dk.ping("rcli", "rweb"),
            "traffic after a live-restore restart"
        );
        assert_eq!(
            http_get(sb, "http://10.81.0.1:8081/").as_deref(),
            Some("rweb")
        );

        // A flushed ruleset (a firewall reload): the published port stops answering; the
        // repair puts back every firewall entry of the Docker endpoints and the network's
        // isolation rules, and traffic and the port come back.
        sb.sh("nft flush ruleset");
        assert!(
            http_get_once(sb, "http://10.81.0.1:8081/").is_none(),
            "the published port should be gone with the ruleset"
        );
        let report = sd.netns(&["repair"]);
        for want in [
            "published ports re-added",
            "forward entries re-added",
            "masquerade entries re-added",
            "isolation rules re-added",
        ] {
            assert!(
                report.contains(want),
                "repair report lacks {want:?}: {report}"
            );
        }
        assert_eq!(
            http_get(sb, "http://10.81.0.1:8081/").as_deref(),
            Some("rweb"),
            "published port after the repair"
        );
        assert!(dk.ping("rcli", "rweb"), "traffic after the repair");
        assert_eq!(
            sd.netns(&["repair"]),
            "nothing to repair",
            "a second repair finds everything in place"
        );

        // Endpoints created before the restarts are removed by their old ids.
        dk.ok(&["rm", "-f", "rweb", "rcli"]);
        dk.ok(&["network", "rm", "rnet"]);
        assert_eq!(our_links(sb), Vec::<String>::new());
        let table = sb.sh("nft list table inet rcni");
        assert!(!table.contains("rcni-iso"), "isolation rules left: {table}");
        assert!(sd.leases("10.81.0.0/24").is_empty());
        assert_eq!(
            fw_entries(sb, "10.81.0."),
            (0, 0),
            "firewall entries left (nft, iptables)"
        );
        assert_state_empty(&sd);
        dk.stop();
        drop(dk);
        drop(sd);
    });
}
