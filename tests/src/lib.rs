//! Integration-test harness: every test runs against the real kernel, but inside a private world.
//!
//! [`sandbox`] runs a test body on a fresh thread that first unshares a network and a mount
//! namespace. Namespaces belong to the calling thread (task), and every process that thread spawns
//! inherits them, so the plugins a test executes see only the sandbox: their own loopback, a tmpfs
//! on `/run` (so `/run/netns`, lock files and the xtables lock are private), a fresh sysfs (so
//! `/sys/class/net` lists the sandbox's links) and a tmpfs over `/var/lib/cni`. When the thread
//! ends, the namespaces and everything in them disappear: a test cannot leak into this machine.
//!
//! Kernel state is inspected with iproute2 (`ip -j`), `nft` and `iptables-save`, independent
//! oracles that do not share code with the plugins under test.
//!
//! The sandbox and its policy come from the workspace's one test sandbox, `testbox`: not root,
//! or a tool missing, fails the test with the reason. Inspections follow the same rule: an
//! absence check fails when its tool could not look ([`Sandbox::ip_json`],
//! [`Sandbox::nft_entries`]), and every test that tears down ends with
//! [`Sandbox::assert_no_cni_leftovers`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod daemon;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Lease files in a host-local network directory: the files whose name parses as an address,
/// the reference's own definition (`lock`, `last_reserved_ip.*` and our owner index are not
/// leases). Sorted; empty when the directory was never created.
pub fn lease_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    v.sort();
    v
}

/// The sandbox of one test: a private "host" network namespace plus helpers.
pub struct Sandbox {
    scratch: PathBuf,
}

/// Tools every harness test runs (the sandbox's own setup and its inspections).
const REQUIRED_TOOLS: &[&str] = &["ip", "nft", "iptables-save", "ip6tables-save"];

/// Run `body` in a private network + mount namespace (`testbox::isolated`), with a tmpfs over
/// `/var/lib/cni` too. Panics inside `body` fail the test.
///
/// Integration tests need root (namespaces, veths, firewall rules) and the tools above. Without
/// them the test fails with that reason rather than passing silently: a skipped case must never
/// count as passed.
pub fn sandbox<F>(body: F)
where
    F: FnOnce(&Sandbox) + Send,
{
    testbox::require_root("network namespaces, veths, firewall rules");
    for t in REQUIRED_TOOLS {
        testbox::require_tool(t);
    }
    testbox::isolated(|| {
        // The default data and cache directory of CNI: make sure nothing a test runs can write
        // to the machine's copy, even when a config forgets its dataDir.
        if !Path::new("/var/lib/cni").exists() {
            std::fs::create_dir_all("/var/lib/cni").unwrap();
        }
        testbox::mount("tmpfs", "/var/lib/cni", "tmpfs", 0);
        let sb = Sandbox {
            scratch: PathBuf::from("/run/rcni-test"),
        };
        std::fs::create_dir_all(&sb.scratch).unwrap();
        sb.sh("ip link set lo up");
        body(&sb);
    });
}

/// Directory holding the workspace's built binaries (target/<profile>).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RCNI_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test executables live in target/<profile>/deps, other binaries in target/<profile>.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of one of our plugin binaries; fails with the command to run when it is not built.
pub fn plugin_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Directory of the reference Go plugins (Debian package containernetworking-plugins), if present.
pub fn reference_dir() -> Option<PathBuf> {
    let dir = PathBuf::from("/usr/lib/cni");
    dir.join("bridge").exists().then_some(dir)
}

/// Directory of the reference plugins, for a differential test: fails the test when they are
/// not installed (a differential test without its oracle must not pass).
pub fn require_reference_dir() -> PathBuf {
    reference_dir().expect(
        "the reference plugins are not installed: apt-get install containernetworking-plugins \
         (./suite.sh install_deps installs them)",
    )
}

impl Sandbox {
    /// Scratch directory private to this sandbox (tmpfs).
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// A fresh directory under the scratch directory.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.scratch.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Run a shell command in the sandbox's host namespace; panics when it fails.
    pub fn sh(&self, cmd: &str) -> String {
        let out = self.try_sh(cmd);
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run a shell command in the sandbox's host namespace and return its output.
    pub fn try_sh(&self, cmd: &str) -> Output {
        Command::new("sh").arg("-c").arg(cmd).output().unwrap()
    }

    /// Create a named network namespace (`/run/netns/<name>`) with loopback up.
    pub fn netns(&self, name: &str) -> PathBuf {
        self.sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        PathBuf::from(format!("/run/netns/{name}"))
    }

    /// Run a command inside a named namespace.
    pub fn exec_in(&self, ns: &str, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", cmd])
            .output()
            .unwrap()
    }

    /// `ip -j [-n ns] <args>` parsed as JSON; an empty array when `ip` says the object does not
    /// exist (or prints nothing, as it does for an empty listing). Any other failure fails the
    /// test: "not there" must mean `ip` looked and found nothing.
    pub fn ip_json(&self, ns: Option<&str>, args: &str) -> Value {
        let mut cmd = testbox::tool("ip");
        cmd.arg("-j").arg("-d");
        if let Some(ns) = ns {
            cmd.args(["-n", ns]);
        }
        cmd.args(args.split_whitespace());
        let out = cmd.output().unwrap();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("does not exist"),
                "ip -j -d {} {args} failed: {err}",
                ns.map(|n| format!("-n {n}")).unwrap_or_default()
            );
            return Value::Array(vec![]);
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Value::Array(vec![]);
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ip -j {args}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// One link's `ip -j -d link show` object, if it exists.
    pub fn link(&self, ns: Option<&str>, name: &str) -> Option<Value> {
        self.ip_json(ns, &format!("link show dev {name}"))
            .as_array()
            .and_then(|a| a.first().cloned())
    }

    /// Names of all links in a namespace.
    pub fn link_names(&self, ns: Option<&str>) -> Vec<String> {
        self.ip_json(ns, "link show")
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// Addresses (as "addr/prefix") of an interface.
    pub fn addrs(&self, ns: Option<&str>, dev: &str) -> Vec<String> {
        let v = self.ip_json(ns, &format!("addr show dev {dev}"));
        let mut out = Vec::new();
        for link in v.as_array().unwrap() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                out.push(format!(
                    "{}/{}",
                    a["local"].as_str().unwrap(),
                    a["prefixlen"].as_u64().unwrap()
                ));
            }
        }
        out
    }

    /// Wait (up to 5 s) until a link's operstate is UP: the kernel's linkwatch updates it
    /// asynchronously, up to a second after the carrier appears.
    pub fn wait_oper_up(&self, ns: Option<&str>, dev: &str) {
        for _ in 0..100 {
            if self.link(ns, dev).is_some_and(|l| l["operstate"] == "UP") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{dev} did not come up");
    }

    /// Addresses of an interface without IPv6 link-local ones (which the kernel adds itself).
    pub fn global_addrs(&self, ns: Option<&str>, dev: &str) -> Vec<String> {
        self.addrs(ns, dev)
            .into_iter()
            .filter(|a| !a.starts_with("fe80:"))
            .collect()
    }

    /// Start `argv` inside a named namespace, in the background.
    pub fn spawn_in(&self, ns: &str, argv: &[&str]) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Background(child)
    }

    /// Wait (up to 5 s) until something listens on `port` (`tcp` or `udp`) inside `ns`.
    pub fn wait_listening(&self, ns: &str, proto: &str, port: u16) {
        let flag = if proto == "udp" { "-Hlun" } else { "-Hltn" };
        for _ in 0..200 {
            let out = self.exec_in(ns, &format!("ss {flag} 'sport = :{port}'"));
            if !out.stdout.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("nothing listens on {proto} port {port} in {ns}");
    }

    /// `ping -c1` from a namespace; true when a reply came back.
    pub fn ping(&self, ns: &str, addr: &str) -> bool {
        self.exec_in(ns, &format!("ping -c1 -W2 {addr} >/dev/null 2>&1"))
            .status
            .success()
    }
}

/// The static busybox of `busybox-static`: the test images' only binary, so it must not need a
/// libc.
pub fn static_busybox() -> PathBuf {
    let path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox is missing: install the Debian package `busybox-static`");
    let ldd = Command::new("ldd").arg(&path).output().unwrap();
    let text =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        text.contains("not a dynamic executable") || text.contains("statically linked"),
        "{} is dynamically linked: install the Debian package `busybox-static`",
        path.display()
    );
    path
}

/// A container image without a registry: a rootfs of busybox and its applets as symlinks (plus
/// `/etc`, `/tmp` and a web root `/www`), tarred to `<scratch>/<name>.tar` for `podman import`
/// or `docker import`. Returns the tarball's path.
pub fn busybox_image_tar(sb: &Sandbox, name: &str) -> PathBuf {
    let busybox = static_busybox();
    let rootfs = sb.dir(name);
    for d in ["bin", "etc", "tmp", "www"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    let applets = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
    let tar = sb.scratch().join(format!("{name}.tar"));
    sb.sh(&format!(
        "tar -C {} -cf {} .",
        rootfs.display(),
        tar.display()
    ));
    tar
}

/// Where a runtime keeps the state of one CNI network: the host-local data directory (leases under
/// `<data_dir>/<network>/`) and libcni's cache directory (results under `<cache_dir>/results/`,
/// named `<network>-<container id>-<ifname>`).
pub struct CniState<'a> {
    /// host-local's `dataDir`.
    pub data_dir: &'a Path,
    /// libcni's cache directory.
    pub cache_dir: &'a Path,
    /// The network name.
    pub network: &'a str,
}

/// Number of entries in `dir` whose name `keep` accepts (0 when `dir` does not exist; any other
/// error fails the test).
fn count_entries(dir: &Path, keep: &dyn Fn(&str) -> bool) -> usize {
    match std::fs::read_dir(dir) {
        Ok(d) => d
            .map(|e| e.unwrap())
            .filter(|e| keep(&e.file_name().to_string_lossy()))
            .count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    }
}

impl Sandbox {
    /// Everything attachments to one network can leave behind, as (what, count): leases, cache
    /// files, veths on the host side (all networks: veth names do not tell the network), our
    /// nftables entries owned by an attachment of this network (tables `inet rcni` and
    /// `bridge rcni`) and iptables/ip6tables rules commented with this network (masquerade and
    /// port forwarding, the reference's comment format).
    pub fn cni_leftovers(&self, st: &CniState) -> Vec<(&'static str, usize)> {
        let leases = lease_files(&st.data_dir.join(st.network)).len();
        let prefix = format!("{}-", st.network);
        let cache = count_entries(&st.cache_dir.join("results"), &|n| n.starts_with(&prefix));
        vec![
            ("leases", leases),
            ("cache files", cache),
            ("veths", self.host_veths()),
            (
                "nftables entries",
                self.nft_entries(&format!("net: {}, id: ", st.network)),
            ),
            ("iptables rules", self.iptables_entries(st.network)),
        ]
    }

    /// [`Sandbox::cni_leftovers`], giving the host ends of veths up to 5 s to settle at
    /// `expect_veths`: veths in a namespace deleted with `ip netns del` (or by a runtime that
    /// unmounted its namespace) vanish asynchronously, in the kernel's netns cleanup work.
    pub fn cni_leftovers_settled(
        &self,
        st: &CniState,
        expect_veths: usize,
    ) -> Vec<(&'static str, usize)> {
        for _ in 0..100 {
            if self.host_veths() <= expect_veths {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.cni_leftovers(st)
    }

    /// Assert that no attachment to this network left anything behind.
    pub fn assert_no_cni_leftovers(&self, st: &CniState) {
        for (what, n) in self.cni_leftovers_settled(st, 0) {
            assert_eq!(n, 0, "{n} {what} left behind on network {}", st.network);
        }
    }

    /// Everything attachments to ANY network can leave behind, as (what, count): leases in
    /// every network directory under `data_dir`, every cache file under `cache_dir/results`,
    /// host veths, owned nftables entries and commented iptables rules. For a daemon whose
    /// networks come and go during a test.
    pub fn all_cni_leftovers(
        &self,
        data_dir: &Path,
        cache_dir: &Path,
    ) -> Vec<(&'static str, usize)> {
        let leases = match std::fs::read_dir(data_dir) {
            Ok(d) => d
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_dir())
                .map(|p| lease_files(&p).len())
                .sum(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => panic!("cannot list {}: {e}", data_dir.display()),
        };
        let cache = count_entries(&cache_dir.join("results"), &|_| true);
        let iptables: usize = [false, true]
            .iter()
            .map(|&v6| {
                let out = testbox::run(
                    if v6 {
                        "ip6tables-save"
                    } else {
                        "iptables-save"
                    },
                    &[],
                );
                out.lines().filter(|l| l.contains("name: \\\"")).count()
            })
            .sum();
        vec![
            ("leases", leases),
            ("cache files", cache),
            ("veths", self.host_veths()),
            ("nftables entries", self.nft_entries(", id: ")),
            ("iptables rules", iptables),
        ]
    }

    /// Assert that no attachment to any network under `data_dir`/`cache_dir` left anything
    /// behind (veths given 5 s to settle, as in [`Sandbox::cni_leftovers_settled`]).
    pub fn assert_nothing_left_anywhere(&self, data_dir: &Path, cache_dir: &Path) {
        for _ in 0..100 {
            if self.host_veths() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for (what, n) in self.all_cni_leftovers(data_dir, cache_dir) {
            assert_eq!(n, 0, "{n} {what} left behind");
        }
    }

    /// [`Sandbox::assert_no_cni_leftovers`] for plugins called directly (no runtime, so no
    /// result cache): host-local data under `data_dir`, network `network`.
    pub fn assert_nothing_left(&self, network: &str, data_dir: &Path) {
        let no_cache = self.scratch.join("no-result-cache");
        self.assert_no_cni_leftovers(&CniState {
            data_dir,
            cache_dir: &no_cache,
            network,
        });
    }

    /// Number of veths in the sandbox's host namespace (the host ends of attachments).
    pub fn host_veths(&self) -> usize {
        self.link_names(None)
            .iter()
            .filter(|n| n.starts_with("veth"))
            .count()
    }

    /// Occurrences of `needle` in our nftables tables `inet rcni` and `bridge rcni`. Every set
    /// or map element we add is commented with its owner (`net: <network>, id: <container id>,
    /// if: <ifname>`), so this counts an attachment's masquerade, forward, port and
    /// anti-spoofing entries. A table that does not exist holds nothing; any other `nft`
    /// failure fails the test.
    pub fn nft_entries(&self, needle: &str) -> usize {
        ["inet", "bridge"]
            .iter()
            .map(|family| {
                testbox::nft_table_text(family, "rcni")
                    .matches(needle)
                    .count()
            })
            .sum()
    }

    /// Our nftables table `inet rcni` as `nft list` prints it ("" when it does not exist; any
    /// other failure fails the test).
    pub fn nft_table(&self) -> String {
        testbox::nft_table_text("inet", "rcni")
    }

    /// iptables and ip6tables rules (every table) whose comment names `network` the way the
    /// masquerade and port-forwarding rules do (`name: "<network>" id: "<container id>"`).
    /// `iptables-save` must succeed.
    pub fn iptables_entries(&self, network: &str) -> usize {
        let needle = format!("name: \\\"{network}\\\" id: ");
        [false, true]
            .iter()
            .map(|&v6| {
                let out = testbox::run(
                    if v6 {
                        "ip6tables-save"
                    } else {
                        "iptables-save"
                    },
                    &[],
                );
                out.lines().filter(|l| l.contains(&needle)).count()
            })
            .sum()
    }
}

/// A process started inside a sandbox namespace; killed and reaped when dropped, also when the
/// test panics, so no listener outlives its test.
pub struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One CNI plugin invocation, built the way a runtime builds it.
#[derive(Clone)]
pub struct CniCall {
    bin: PathBuf,
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
}

/// The result of a plugin invocation.
#[derive(Debug)]
pub struct CniOutput {
    /// Exit code.
    pub code: i32,
    /// Everything the plugin wrote on stdout.
    pub stdout: String,
    /// Everything the plugin wrote on stderr.
    pub stderr: String,
}

impl CniCall {
    /// A call of one of our plugins with CNI_PATH set to our binaries.
    pub fn new(plugin: &str, command: &str) -> CniCall {
        CniCall::with_bin(plugin_bin(plugin), command).env("CNI_PATH", bin_dir().to_str().unwrap())
    }

    /// A call of any plugin binary (e.g. a reference plugin).
    pub fn with_bin(bin: PathBuf, command: &str) -> CniCall {
        CniCall {
            bin,
            env: vec![("CNI_COMMAND".into(), command.into())],
            stdin: Vec::new(),
        }
    }

    /// Set (or replace) an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> CniCall {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    /// Remove an environment variable.
    pub fn unset(mut self, k: &str) -> CniCall {
        self.env.retain(|(key, _)| key != k);
        self
    }

    /// Container ID, netns and ifname in one go.
    pub fn attachment(self, cid: &str, netns: &Path, ifname: &str) -> CniCall {
        self.env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns.to_str().unwrap())
            .env("CNI_IFNAME", ifname)
    }

    /// Change the verb.
    pub fn command(self, command: &str) -> CniCall {
        self.env("CNI_COMMAND", command)
    }

    /// Configuration on stdin.
    pub fn stdin(mut self, conf: impl Into<Vec<u8>>) -> CniCall {
        self.stdin = conf.into();
        self
    }

    /// JSON configuration on stdin.
    pub fn conf(self, conf: &Value) -> CniCall {
        self.stdin(serde_json::to_vec(conf).unwrap())
    }

    /// Execute the plugin with exactly this environment (plus PATH for the tools it execs).
    pub fn run(&self) -> CniOutput {
        let mut child = Command::new(&self.bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("exec {}: {e}", self.bin.display()));
        // A plugin may exit before reading stdin (VERSION): ignore EPIPE.
        let _ = child.stdin.take().unwrap().write_all(&self.stdin);
        let out = child.wait_with_output().unwrap();
        CniOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl CniOutput {
    /// stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} stderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Assert success and return the parsed result (Null for empty stdout).
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "plugin failed: stdout {} stderr {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Assert a CNI error and return (code, msg).
    pub fn err(&self) -> (u64, String) {
        assert_ne!(
            self.code, 0,
            "plugin unexpectedly succeeded: {}",
            self.stdout
        );
        let v = self.json();
        let code = v["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error JSON without numeric code: {v}"));
        let msg = v["msg"].as_str().unwrap_or_default().to_string();
        (code, msg)
    }
}
