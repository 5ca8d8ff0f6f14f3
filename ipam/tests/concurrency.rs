//! Concurrency and crash safety: parallel ADD/DEL on one network, and `kill -9` at arbitrary
//! instants during ADD followed by GC/DEL. The kill tests count where their kills landed and
//! require some in the middle of an ADD (after its first lease write, before its result), so
//! they cannot pass by killing only processes that had not started or had already finished.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// How long one uninterrupted ADD (and its DEL) takes on this machine now: kill instants are
/// spread over this span so that some land mid-ADD whatever the machine's speed.
fn add_duration(bin: &Path, ns: &Path, c: &Value) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..3 {
        let cid = format!("kcal{i}");
        let t = Instant::now();
        let out = spawn(bin, "ADD", &cid, ns, c).wait_with_output().unwrap();
        slowest = slowest.max(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        del(ns, c, &cid, "eth0").ok();
    }
    slowest
}

/// Chooses kill instants: starts spread over 0–1.2× an ADD's duration and narrows onto the
/// window between "killed before writing" and "finished" (where the mid-ADD kills are), which
/// is a small part of an ADD on a fast machine (exec and startup take most of it).
struct Aim {
    /// Latest delay (µs) seen to kill before the first write.
    lo: u64,
    /// Earliest delay (µs) seen to let the ADD finish.
    hi: u64,
    /// LCG state: deterministic spread inside the window.
    seed: u64,
}

impl Aim {
    fn new(span: Duration) -> Aim {
        Aim {
            lo: 0,
            hi: span.as_micros() as u64 * 6 / 5,
            seed: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// The next delay between spawn and SIGKILL.
    fn next(&mut self) -> Duration {
        self.seed = self
            .seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let width = self.hi.saturating_sub(self.lo).max(1);
        Duration::from_micros(self.lo + (self.seed >> 33) % width)
    }

    /// Learn from where a kill after `delay` landed (timing is noisy: the window only shrinks
    /// while it stays open, and reopens otherwise).
    fn landed(&mut self, delay: Duration, before_write: bool, finished: bool) {
        let d = delay.as_micros() as u64;
        if before_write && d > self.lo && d < self.hi {
            self.lo = d;
        }
        if finished && d < self.hi && d > self.lo {
            self.hi = d;
        }
        if self.hi <= self.lo + 20 {
            self.lo = self.lo * 4 / 5;
            self.hi = self.hi * 6 / 5 + 50;
        }
    }
}

/// Where the kills of a loop landed.
#[derive(Debug, Default)]
struct Kills {
    /// The ADD finished (success) before the signal.
    finished: Vec<String>,
    /// SIGKILL ended it and it left no lease: before its first write (or before exec).
    before_write: usize,
    /// SIGKILL ended it after it wrote at least one lease: mid-ADD.
    mid_add: Vec<String>,
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
        let mut aim = Aim::new(add_duration(&bin, &ns, &c));
        let mut kills = Kills::default();
        // Kill at instants aimed around the ADDs' lease writes, so some die before, during
        // and after them; three run in parallel to contend on the lock. At least 40 rounds,
        // then on until three kills landed mid-ADD (at most 300 rounds).
        for round in 0..300u64 {
            if round >= 40 && kills.mid_add.len() >= 3 {
                break;
            }
            let batch: Vec<(String, Child)> = (0..3)
                .map(|j| {
                    let cid = format!("k{round}x{j}");
                    let ch = spawn(&bin, "ADD", &cid, &ns, &c);
                    (cid, ch)
                })
                .collect();
            let delay = aim.next();
            std::thread::sleep(delay);
            for (_, ch) in &batch {
                // SAFETY: kill(2) on our own unreaped child (a zombie at worst, never a
                // recycled PID); no memory is involved.
                unsafe { libc::kill(ch.id() as libc::pid_t, libc::SIGKILL) };
            }
            let owners = assert_consistent(&dd);
            for (cid, ch) in batch {
                let out = ch.wait_with_output().unwrap();
                let held = owners.iter().any(|(_, o)| *o == cid);
                aim.landed(delay, !held && !out.status.success(), out.status.success());
                if out.status.success() {
                    kills.finished.push(cid);
                } else {
                    assert_eq!(
                        out.status.signal(),
                        Some(libc::SIGKILL),
                        "{cid}: {:?}",
                        out.status
                    );
                    if held {
                        kills.mid_add.push(cid);
                    } else {
                        kills.before_write += 1;
                    }
                }
            }
        }
        let owners = assert_consistent(&dd);
        eprintln!(
            "kill loop (window {}–{} µs): {} finished, {} killed before writing, {} killed mid-ADD; {} leases on disk",
            aim.lo,
            aim.hi,
            kills.finished.len(),
            kills.before_write,
            kills.mid_add.len(),
            owners.len()
        );
        assert!(
            !kills.mid_add.is_empty(),
            "no kill landed mid-ADD, so crash recovery was not exercised: {kills:?}"
        );
        // Every ADD that reported success holds both of its leases.
        for cid in &kills.finished {
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
        // GC with only the fresh attachment valid clears every crash leftover, including the
        // leases of the ADDs killed mid-way.
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
        let mut aim = Aim::new(add_duration(&bin, &ns, &c));
        let mut cids = Vec::new();
        let mut kills = Kills::default();
        // At least 30 rounds, then on until three kills landed mid-ADD (at most 300).
        for round in 0..300u64 {
            if round >= 30 && kills.mid_add.len() >= 3 {
                break;
            }
            let cid = format!("k{round}");
            let ch = spawn(&bin, "ADD", &cid, &ns, &c);
            let delay = aim.next();
            std::thread::sleep(delay);
            // SAFETY: kill(2) on our own unreaped child; no memory is involved.
            unsafe { libc::kill(ch.id() as libc::pid_t, libc::SIGKILL) };
            let out = ch.wait_with_output().unwrap();
            let held = assert_consistent(&dd)
                .iter()
                .filter(|(_, o)| *o == cid)
                .count();
            aim.landed(
                delay,
                held == 0 && !out.status.success(),
                out.status.success(),
            );
            if out.status.success() {
                kills.finished.push(cid.clone());
            } else if held > 0 {
                kills.mid_add.push(cid.clone());
            } else {
                kills.before_write += 1;
            }
            cids.push(cid);
        }
        eprintln!(
            "kill loop (window {}–{} µs): {} finished, {} killed before writing, {} killed mid-ADD",
            aim.lo,
            aim.hi,
            kills.finished.len(),
            kills.before_write,
            kills.mid_add.len()
        );
        assert!(
            !kills.mid_add.is_empty(),
            "no kill landed mid-ADD, so partial ADDs were not exercised: {kills:?}"
        );
        // The runtime DELs every ADD, failed or not: that alone must empty the directory.
        for cid in &cids {
            del(&ns, &c, cid, "eth0").ok();
        }
        assert!(leases(&dd).is_empty(), "{:?}", files(&dd));
        assert!(!files(&dd).iter().any(|f| f.starts_with('.')));
    });
}
