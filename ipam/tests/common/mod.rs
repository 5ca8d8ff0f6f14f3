//! Shared helpers for host-local integration tests: every call execs a binary exactly as a
//! runtime does (env vars + stdin) inside the private sandbox of `integration_tests::sandbox`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use integration_tests::{CniCall, CniOutput};
use serde_json::{json, Value};

/// Network name used by every test config.
pub const NET: &str = "net1";

/// Our binary.
pub fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_host-local"))
}

/// The reference Go plugin (Debian containernetworking-plugins, v1.1.1); suite.sh installs it.
pub fn reference() -> PathBuf {
    let p = PathBuf::from("/usr/lib/cni/host-local");
    assert!(
        p.exists(),
        "/usr/lib/cni/host-local missing: install the Debian package containernetworking-plugins"
    );
    p
}

/// A plugin config around `ipam` (type and dataDir filled in).
pub fn conf(version: &str, data_dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data_dir.to_str().unwrap());
    let mut c = json!({"name": NET, "ipam": ipam});
    if !version.is_empty() {
        c["cniVersion"] = json!(version);
    }
    c
}

/// A runtime-style call of `bin` for one attachment.
pub fn call(bin: &Path, cmd: &str, cid: &str, ifname: &str, netns: &Path, conf: &Value) -> CniCall {
    CniCall::with_bin(bin.to_path_buf(), cmd)
        .env("CNI_PATH", "/usr/lib/cni")
        .attachment(cid, netns, ifname)
        .conf(conf)
}

/// Run ADD with our binary.
pub fn add(netns: &Path, conf: &Value, cid: &str, ifname: &str) -> CniOutput {
    call(&ours(), "ADD", cid, ifname, netns, conf).run()
}

/// Run DEL with our binary.
pub fn del(netns: &Path, conf: &Value, cid: &str, ifname: &str) -> CniOutput {
    call(&ours(), "DEL", cid, ifname, netns, conf).run()
}

/// A GC or STATUS call (no attachment variables).
pub fn verb(bin: &Path, cmd: &str, conf: &Value) -> CniOutput {
    CniCall::with_bin(bin.to_path_buf(), cmd)
        .env("CNI_PATH", "/usr/lib/cni")
        .conf(conf)
        .run()
}

/// Addresses of a result (`ips[].address`).
pub fn addrs(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|ip| ip["address"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The network directory.
pub fn net_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(NET)
}

/// Sorted file names of the network directory (empty when it does not exist), without our
/// owner index `.rcni-owners`: a cache that the reference ignores, so on-disk layout
/// comparisons with the reference leave it out (its own tests are in `index.rs` and
/// `owner_index.rs`).
pub fn files(data_dir: &Path) -> Vec<String> {
    let rd = match std::fs::read_dir(net_dir(data_dir)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot list {}: {e}", net_dir(data_dir).display()),
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != host_local::index::INDEX_FILE)
        .collect();
    v.sort();
    v
}

/// Sorted lease file names (files named by an address).
pub fn leases(data_dir: &Path) -> Vec<String> {
    files(data_dir)
        .into_iter()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

/// Content of a file of the network directory.
pub fn content(data_dir: &Path, name: &str) -> String {
    std::fs::read_to_string(net_dir(data_dir).join(name)).unwrap()
}

/// Names and contents of every file but `lock` (whose mode/emptiness differ by design).
pub fn snapshot(data_dir: &Path) -> Vec<(String, String)> {
    files(data_dir)
        .into_iter()
        .filter(|n| n != "lock")
        .map(|n| {
            let c = content(data_dir, &n);
            (n, c)
        })
        .collect()
}
