//! Shared helpers of the root integration tests: every test body runs on a fresh thread that
//! first moves into its own network and mount namespace (tmpfs on /run so lock files, the
//! xtables lock and `ip netns` mounts are private), so nothing touches the host's firewall.
#![allow(dead_code)]

use std::process::Command;

use firewall::MasqRule;

/// True when we may create namespaces (root); the tests skip loudly otherwise.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `body` on a thread inside new network + mount namespaces; panics propagate.
pub fn in_netns<F: FnOnce() + Send + 'static>(body: F) {
    if !is_root() {
        eprintln!("skipping: needs root for namespaces");
        return;
    }
    let h = std::thread::spawn(move || {
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        // SAFETY: plain syscalls on this thread only; results are checked.
        unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS), 0);
            assert_eq!(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                0
            );
            assert_eq!(
                libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/run".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ),
                0
            );
        }
        let after = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_ne!(before, after, "not in a private network namespace");
        assert_ne!(
            std::fs::read_link("/proc/self/ns/net").ok(),
            Some(after),
            "main thread must stay in its namespace"
        );
        run("ip", &["link", "set", "lo", "up"]);
        body();
    });
    if let Err(p) = h.join() {
        std::panic::resume_unwind(p);
    }
}

/// Runs a command (only ever from a namespaced thread); returns (success, stdout, stderr).
pub fn cmd(prog: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(prog).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Like [`cmd`] but must succeed.
pub fn run(prog: &str, args: &[&str]) -> String {
    let (ok, out, err) = cmd(prog, args);
    assert!(ok, "{prog} {args:?} failed: {err}");
    out
}

pub fn rule(net: &str, cid: &str, ifname: &str, addr: &str) -> MasqRule {
    MasqRule {
        network: net.into(),
        container_id: cid.into(),
        ifname: ifname.into(),
        addr: addr.parse().unwrap(),
    }
}

/// (set, address, comment) of every element in our table, via `nft -j`.
pub fn nft_elems() -> Vec<(String, String, String)> {
    let (ok, out, err) = cmd("nft", &["-j", "list", "table", "inet", "rcni"]);
    if !ok {
        assert!(err.contains("No such file"), "nft list failed: {err}");
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut res = Vec::new();
    for item in v["nftables"].as_array().unwrap() {
        let Some(set) = item.get("set") else { continue };
        let name = set["name"].as_str().unwrap().to_string();
        for e in set["elem"].as_array().cloned().unwrap_or_default() {
            // {"elem": {"val": "10.22.0.5", "comment": "…"}} or a bare "10.22.0.5"
            let (val, comment) = match e.get("elem") {
                Some(el) => (
                    el["val"].as_str().unwrap().to_string(),
                    el["comment"].as_str().unwrap_or("").to_string(),
                ),
                None => (e.as_str().unwrap().to_string(), String::new()),
            };
            res.push((name.clone(), val, comment));
        }
    }
    res
}

/// Comments of the rules of our base chain, in order.
pub fn nft_rule_comments() -> Vec<String> {
    let (ok, out, _) = cmd(
        "nft",
        &["-j", "list", "chain", "inet", "rcni", "postrouting"],
    );
    if !ok {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| {
            i.get("rule")
                .map(|r| r["comment"].as_str().unwrap_or("").to_string())
        })
        .collect()
}
