//! Shared helpers of the root integration tests. Every test body runs in the workspace's one
//! test sandbox (the `testbox` dev crate): its own network and mount namespace with a private /run (lock files, the xtables lock and
//! `ip netns` mounts), so nothing touches the machine's firewall. A test that cannot run (not
//! root, a tool missing) fails with the reason; it never prints "skipping" and passes.
#![allow(dead_code)]

pub use testbox;

use std::process::Command;

use firewall::MasqRule;

/// Runs `body` on a thread inside new network + mount namespaces; panics propagate. Fails the
/// test when not root or when `ip` is missing.
pub fn in_netns<F: FnOnce() + Send + 'static>(body: F) {
    testbox::require_tool("ip");
    testbox::isolated(|| {
        assert_ne!(
            std::fs::read_link("/proc/self/ns/net").ok(),
            std::fs::read_link("/proc/thread-self/ns/net").ok(),
            "main thread must stay in its namespace"
        );
        run("ip", &["link", "set", "lo", "up"]);
        body();
    });
}

/// Runs a command (only ever from a namespaced thread); returns (success, stdout, stderr).
/// A missing tool fails the test with its package name.
pub fn cmd(prog: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(testbox::require_tool(prog))
        .args(args)
        .output()
        .unwrap();
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

/// Comments of the rules of our base chain, in order (empty when the chain does not exist).
pub fn nft_rule_comments() -> Vec<String> {
    let (ok, out, err) = cmd(
        "nft",
        &["-j", "list", "chain", "inet", "rcni", "postrouting"],
    );
    if !ok {
        // Only "no such table/chain" means "no rules"; any other failure could not look.
        assert!(err.contains("No such file"), "nft list chain failed: {err}");
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
