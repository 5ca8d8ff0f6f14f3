//! Concurrency and crash safety: parallel ADD/DEL on one network, and `kill -9` at arbitrary
//! instants during ADD followed by GC/DEL (scenario 57, DESIGN "Concurrency").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use integration_tests::sandbox;
use serde_json::{json, Value};

/// Start one plugin process without waiting for it (stdin written and closed).
fn spawn(bin: &Path, cmd: &str, cid: &str, netns: &Path, conf: &Value) -> Child {
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The config is far below the pipe buffer, so this never blocks; a killed child gives EPIPE.
    let _ = stdin.write_all(&serde_json::to_vec(conf).unwrap());
    drop(stdin);
    child
}

/// Every file is allocator state or a complete lease; returns the leases' owners.
fn assert_consistent(dd: &Path) -> Vec<(String, String)> {
    let mut owners = Vec::new();
    for name in files(dd) {
        // A writer killed while replacing last_reserved_ip leaves its temp file; it is never a
        // lease (the name is not an address) and the next locked ADD/DEL/GC sweeps it.
        if name == "lock" || name.starts_with(".host-local-tmp.") {
            continue;
        }
        let c = content(dd, &name);
        if name.starts_with("last_reserved_ip.") {
            assert!(
                c.is_empty() || c.parse::<std::net::IpAddr>().is_ok(),
                "{name}: {c:?}"
            );
            continue;
        }
        assert!(
            name.parse::<std::net::IpAddr>().is_ok(),
            "unexpected file {name} (content {c:?})"
        );
        let (cid, ifname) = c
            .split_once("\r\n")
            .unwrap_or_else(|| panic!("partial lease {name}: {c:?}"));
        assert!(cid.starts_with('k') && ifname == "eth0", "{name}: {c:?}");
        owners.push((name, cid.to_string()));
    }
    owners
}

#[test]
fn hundred_parallel_adds_then_dels() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf("1.0.0", &dd, json!({"subnet": "10.20.0.0/24"}));
        let bin = ours();
        let children: Vec<Child> = (0..100)
            .map(|i| spawn(&bin, "ADD", &format!("p{i}"), &ns, &c))
            .collect();
        let mut seen = HashSet::new();
        for ch in children {
            let out = ch.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "ADD failed: {stdout}");
            let v: Value = serde_json::from_str(&stdout).unwrap();
            assert!(seen.insert(addrs(&v)[0].clone()), "address given twice");
        }
        assert_eq!(seen.len(), 100);
        assert_eq!(leases(&dd).len(), 100);
        for l in leases(&dd) {
            assert!(content(&dd, &l).starts_with('p'));
        }

        let children: Vec<Child> = (0..100)
            .map(|i| spawn(&bin, "DEL", &format!("p{i}"), &ns, &c))
            .collect();
        for ch in children {
            let out = ch.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "DEL failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        assert_eq!(files(&dd), ["last_reserved_ip.0", "lock"]);
    });
}

#[test]
fn kill_9_during_adds_leaves_a_recoverable_directory() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf(
            "1.1.0",
            &dd,
            json!({"ranges": [[{"subnet": "10.21.0.0/22"}], [{"subnet": "fd00:21::/64"}]]}),
        );
        let bin = ours();
        let mut finished = Vec::new();
        // Kill at staggered instants (0–2.9 ms after exec) so some die before, during and
        // after their lease writes; a few run in parallel to contend on the lock.
        for round in 0..40u64 {
            let batch: Vec<(String, Child)> = (0..3)
                .map(|j| {
                    let cid = format!("k{round}x{j}");
                    let ch = spawn(&bin, "ADD", &cid, &ns, &c);
                    (cid, ch)
                })
                .collect();
            std::thread::sleep(std::time::Duration::from_micros((round * 73) % 3000));
            for (cid, mut ch) in batch {
                let _ = ch.kill();
                let out = ch.wait_with_output().unwrap();
                if out.status.success() {
                    finished.push(cid);
                }
            }
            assert_consistent(&dd);
        }
        let owners = assert_consistent(&dd);
        eprintln!(
            "kill loop: {} of 120 ADDs completed, {} leases on disk",
            finished.len(),
            owners.len()
        );
        // Every ADD that reported success holds both of its leases.
        for cid in &finished {
            assert_eq!(
                owners.iter().filter(|(_, o)| o == cid).count(),
                2,
                "{cid} succeeded but lacks a lease"
            );
        }
        // The next ADD works and does not collide with anything that survived.
        let r = add(&ns, &c, "kfresh", "eth0").ok();
        for a in addrs(&r) {
            let ip = a.split('/').next().unwrap().to_string();
            assert!(owners.iter().all(|(n, _)| *n != ip), "{ip} reused");
        }
        // GC with only the fresh attachment valid clears every crash leftover.
        let mut g = c.clone();
        g["cni.dev/valid-attachments"] = json!([{"containerID": "kfresh", "ifname": "eth0"}]);
        verb(&ours(), "GC", &g).ok();
        let left = assert_consistent(&dd);
        assert_eq!(left.len(), 2);
        assert!(left.iter().all(|(_, o)| o == "kfresh"));
        assert!(!files(&dd).iter().any(|f| f.starts_with('.')));
        del(&ns, &c, "kfresh", "eth0").ok();
        assert!(leases(&dd).is_empty());
    });
}

#[test]
fn kill_9_then_del_releases_partial_dual_stack_adds() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf(
            "1.0.0",
            &dd,
            json!({"ranges": [[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd00:22::/64"}]]}),
        );
        let bin = ours();
        let mut cids = Vec::new();
        for round in 0..30u64 {
            let cid = format!("k{round}");
            let mut ch = spawn(&bin, "ADD", &cid, &ns, &c);
            std::thread::sleep(std::time::Duration::from_micros((round * 97) % 2500));
            let _ = ch.kill();
            let _ = ch.wait();
            cids.push(cid);
        }
        assert_consistent(&dd);
        // The runtime DELs every ADD, failed or not: that alone must empty the directory.
        for cid in &cids {
            del(&ns, &c, cid, "eth0").ok();
        }
        assert!(leases(&dd).is_empty(), "{:?}", files(&dd));
        assert!(!files(&dd).iter().any(|f| f.starts_with('.')));
    });
}
