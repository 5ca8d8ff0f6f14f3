//! The one test sandbox of the workspace, and its one policy: **a missing precondition fails the
//! test with the reason**. Not root, a tool that is not installed, a kernel that lacks a feature:
//! each is a panic that says what is missing and how to get it, never a "skipped" line and a
//! pass. A test that could not run must not count as a test that passed.
//!
//! [`isolated`] runs a test body on a fresh thread that unshares a network and a mount namespace,
//! makes `/` recursively private (nothing mounted here propagates back to the machine), and
//! mounts a tmpfs on `/run` (so `/run/netns`, lock files and the xtables lock are private) and a
//! fresh sysfs on `/sys` (so `/sys/class/net` lists the sandbox's links). Namespaces belong to
//! the calling thread, and every process it spawns inherits them; when the thread ends, the
//! namespaces and everything in them go away.
//!
//! The inspection helpers ([`tool`], [`nft_table`], [`iptables_save`]) are the other half of the
//! policy: a check that something is *absent* must fail when it could not look. `nft list table`
//! exiting non-zero means "no table" only when it says so ("No such file or directory"); any
//! other failure is a failed test, not an empty table.
//!
//! crates/firewall's tests include this file with `#[path]` (that crate's manifest is not ours
//! to edit); everything else uses it as the `testbox` dev-dependency.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::ffi::CString;
use std::path::Path;
use std::process::{Command, Output};

/// Debian packages that provide the tools tests run, for the failure message.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("bridge", "iproute2"),
    ("nft", "nftables"),
    ("iptables", "iptables"),
    ("iptables-save", "iptables"),
    ("ip6tables", "iptables"),
    ("ip6tables-save", "iptables"),
    ("ping", "iputils-ping"),
    ("socat", "socat"),
    ("conntrack", "conntrack"),
    ("curl", "curl"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("dnsmasq", "dnsmasq-base"),
    ("docker", "docker.io"),
    ("dockerd", "docker.io"),
    ("podman", "podman"),
    ("crun", "crun"),
    ("conmon", "conmon"),
];

/// Fail the test unless it runs as root (namespaces, veths and firewall rules need it).
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root ({why}); run it as root: it does not skip"
    );
}

/// Where `name` is found on PATH (plus the sbin directories root's PATH has), if anywhere.
pub fn find_tool(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Fail the test unless `name` is installed, naming the package that provides it; its path.
pub fn require_tool(name: &str) -> std::path::PathBuf {
    find_tool(name).unwrap_or_else(|| {
        let pkg = PACKAGES
            .iter()
            .find(|(t, _)| *t == name)
            .map_or(String::new(), |(_, p)| format!(" (apt-get install {p})"));
        panic!("required tool `{name}` is not installed{pkg}: ./suite.sh install_deps installs every tool the tests use")
    })
}

/// A [`Command`] for a tool the test requires (by the path found, so a PATH without the sbin
/// directories still works): fails the test when the tool is missing.
pub fn tool(name: &str) -> Command {
    Command::new(require_tool(name))
}

/// Run a required tool; the raw output (the caller judges the status).
pub fn output(name: &str, args: &[&str]) -> Output {
    tool(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// Run a required tool that must succeed; its stdout.
pub fn run(name: &str, args: &[&str]) -> String {
    let out = output(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check(rc: libc::c_int, what: &str) {
    assert!(rc == 0, "{what}: {}", std::io::Error::last_os_error());
}

/// mount(2) with no data argument, failing the test on error.
pub fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong) {
    let c = |s: &str| CString::new(s).unwrap();
    let (s, t, f) = (c(src), c(target), c(fstype));
    // SAFETY: valid NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, std::ptr::null()) };
    check(rc, &format!("mount {target}"));
}

/// Move the calling thread into fresh network and mount namespaces with a private `/run`
/// (holding an empty `/run/netns`) and `/sys`. Only ever call this on a thread of its own
/// ([`isolated`] does): the thread can never come back to the machine's namespaces.
pub fn enter_private_namespaces() {
    let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    // SAFETY: unshare only changes this thread's namespaces; no memory is involved.
    check(
        unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) },
        "unshare(CLONE_NEWNET|CLONE_NEWNS)",
    );
    // Stop our mounts from propagating back to the machine's mount namespace.
    mount("none", "/", "none", libc::MS_REC | libc::MS_PRIVATE);
    mount("tmpfs", "/run", "tmpfs", 0);
    std::fs::create_dir_all("/run/netns").unwrap();
    mount("sysfs", "/sys", "sysfs", 0);
    let after = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    assert_ne!(before, after, "not in a private network namespace");
}

/// Run `body` in a private network + mount namespace (see the crate docs) and return what it
/// returns; a panic in `body` fails the test. Fails first, with the reason, when not root.
pub fn isolated<R: Send, F: FnOnce() -> R + Send>(body: F) -> R {
    require_root("network namespaces, veths, firewall rules");
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            enter_private_namespaces();
            body()
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// `nft -j list table <family> <name>` parsed, or `None` when the table does not exist. Any
/// other failure (nft missing, no permission, unparsable output) fails the test: an absence
/// check must not pass because it could not look.
pub fn nft_table(family: &str, name: &str) -> Option<serde_json::Value> {
    let out = output("nft", &["-j", "list", "table", family, name]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No such file or directory"),
            "nft list table {family} {name} failed: {err}"
        );
        return None;
    }
    Some(
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("nft -j list table {family} {name}: bad JSON: {e}")),
    )
}

/// `nft list table <family> <name>` as text ("" when the table does not exist; other failures
/// fail the test, as in [`nft_table`]).
pub fn nft_table_text(family: &str, name: &str) -> String {
    let out = output("nft", &["list", "table", family, name]);
    if out.status.success() {
        return String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No such file or directory"),
        "nft list table {family} {name} failed: {err}"
    );
    String::new()
}

/// `iptables-save` / `ip6tables-save` of one table (`nat`, `filter`…); must succeed.
pub fn iptables_save(v6: bool, table: &str) -> String {
    run(
        if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        },
        &["-t", table],
    )
}
