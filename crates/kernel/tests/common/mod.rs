//! The kernel crate's root tests run in the workspace's one test sandbox (`testbox`): a fresh
//! network and mount namespace per test, and a test that cannot run (not root, `ip` missing)
//! fails with the reason instead of passing. `ip` (iproute2) is the independent oracle.

#![allow(dead_code)]

use std::process::Output;

/// Run `body` in a private net+mount namespace (see `testbox::isolated`).
pub fn sandbox<F: FnOnce() + Send>(body: F) {
    testbox::require_tool("ip");
    testbox::isolated(body);
}

/// Run `ip` (from a sandboxed thread only).
pub fn ip(args: &[&str]) -> Output {
    testbox::output("ip", args)
}

/// `ip [-n ns] -j link show dev`: the link as JSON, or None when `ip` says it does not exist.
/// Any other failure of `ip` fails the test (an absence check must have looked).
pub fn ip_link(ns: Option<&str>, dev: &str) -> Option<serde_json::Value> {
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "-d", "link", "show", "dev", dev]);
    let out = ip(&args);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("does not exist"), "ip {args:?} failed: {err}");
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip json");
    v.as_array().and_then(|a| a.first().cloned())
}

/// `ip [-n ns] -j <args>` as JSON, asserting success.
pub fn ip_json(ns: Option<&str>, args: &[&str]) -> serde_json::Value {
    let mut all = Vec::new();
    if let Some(ns) = ns {
        all.extend(["-n", ns]);
    }
    all.push("-j");
    all.extend(args);
    let out = ip(&all);
    assert!(
        out.status.success(),
        "ip {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ip json")
}
