//! Differential and cross-compatibility tests against the reference Go host-local (v1.1.1,
//! spec ≤1.0.0, so configs here use 1.0.0): the same call sequence on two data directories must
//! give the same addresses, file names and file contents; and each binary must keep working on a
//! directory the other wrote (users swap binaries on live nodes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use integration_tests::{sandbox, CniOutput};
use serde_json::{json, Value};

/// A step of a call sequence.
struct Step {
    cmd: &'static str,
    cid: &'static str,
    ifname: &'static str,
    cni_args: Option<&'static str>,
}

const fn s(cmd: &'static str, cid: &'static str, ifname: &'static str) -> Step {
    Step {
        cmd,
        cid,
        ifname,
        cni_args: None,
    }
}

fn run(bin: &Path, step: &Step, netns: &Path, conf: &Value) -> CniOutput {
    let mut c = call(bin, step.cmd, step.cid, step.ifname, netns, conf);
    if let Some(a) = step.cni_args {
        c = c.env("CNI_ARGS", a);
    }
    c.run()
}

/// What must agree between the two implementations for one step.
fn observable(out: &CniOutput) -> Value {
    if out.code != 0 {
        // Messages agree word for word; codes may not (ours use 7 for config errors).
        return json!({"error": out.json()["msg"]});
    }
    if out.stdout.trim().is_empty() {
        return Value::Null;
    }
    let mut v = out.json();
    // v1.1.1 prints an empty "dns": {}; newer versions and ours omit it.
    if v["dns"] == json!({}) {
        v.as_object_mut().unwrap().remove("dns");
    }
    v
}

#[test]
fn same_sequence_same_addresses_and_files() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let ipam = json!({
            "ranges": [
                [{"subnet": "10.30.0.0/24", "rangeStart": "10.30.0.10", "rangeEnd": "10.30.0.14", "gateway": "10.30.0.12"}],
                [{"subnet": "fd00:30::/120", "rangeStart": "fd00:30::fd"}, {"subnet": "fd00:31::/120"}]
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:30::1"}]
        });
        let steps = [
            s("ADD", "c1", "eth0"),
            s("ADD", "c2", "eth0"),
            s("ADD", "c3", "eth0"),
            s("ADD", "c3", "eth0"), // duplicate
            s("DEL", "c2", "eth0"),
            s("ADD", "c4", "eth0"),
            s("ADD", "c1", "eth1"),
            s("ADD", "c5", "eth0"), // exhausts the v4 set
            s("CHECK", "c1", "eth1"),
            s("CHECK", "nope", "eth0"),
            s("DEL", "c1", "eth0"),
            s("DEL", "c1", "eth0"),
            Step {
                cni_args: Some("IP=10.30.0.10"),
                ..s("ADD", "c6", "eth0")
            },
            Step {
                cni_args: Some("IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.30.0.13"),
                ..s("ADD", "c7", "eth0")
            },
            s("DEL", "c3", "eth0"),
            s("DEL", "unknown", "eth0"),
            s("ADD", "c8", "eth0"),
            s("DEL", "c1", "eth1"),
            s("ADD", "c9", "eth0"),
        ];
        let dd_ref = sb.dir("ref");
        let dd_ours = sb.dir("ours");
        let c_ref = conf("1.0.0", &dd_ref, ipam.clone());
        let c_ours = conf("1.0.0", &dd_ours, ipam);
        let reference = reference();
        let (mut errors, mut results) = (0, 0);
        for (i, step) in steps.iter().enumerate() {
            let mut cr = c_ref.clone();
            let mut co = c_ours.clone();
            if step.cmd == "CHECK" {
                cr["prevResult"] = json!({"cniVersion": "1.0.0"});
                co["prevResult"] = json!({"cniVersion": "1.0.0"});
            }
            let r = observable(&run(&reference, step, &ns, &cr));
            let o = observable(&run(&ours(), step, &ns, &co));
            assert_eq!(
                o, r,
                "step {i} ({} {} {}) differs",
                step.cmd, step.cid, step.ifname
            );
            if r.get("error").is_some() {
                errors += 1;
            } else if r.get("ips").is_some() {
                results += 1;
            }
            assert_eq!(
                snapshot(&dd_ours),
                snapshot(&dd_ref),
                "step {i}: data directories differ"
            );
        }
        // duplicate, exhausted, CHECK of unknown, taken requested IP; and 8 successful ADDs.
        assert_eq!((errors, results), (4, 8));
        assert!(!leases(&dd_ref).is_empty());
    });
}

#[test]
fn ours_continues_a_reference_directory() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf(
            "1.0.0",
            &dd,
            json!({"ranges": [[{"subnet": "10.31.0.0/24"}], [{"subnet": "fd00:31::/64"}]]}),
        );
        let reference = reference();
        for cid in ["r1", "r2", "r3"] {
            call(&reference, "ADD", cid, "eth0", &ns, &c).run().ok();
        }
        call(&reference, "DEL", "r2", "eth0", &ns, &c).run().ok();
        // A legacy (pre-ifname) lease as an old reference version wrote it.
        std::fs::write(net_dir(&dd).join("10.31.0.100"), "legacy").unwrap();

        // Round robin continues after the reference's last reservation.
        assert_eq!(
            addrs(&add(&ns, &c, "o1", "eth0").ok()),
            ["10.31.0.5/24", "fd00:31::5/64"]
        );
        // The reference's leases count for duplicates and CHECK, and our DEL releases them.
        assert!(add(&ns, &c, "r1", "eth0")
            .err()
            .1
            .contains("duplicate allocation"));
        assert!(add(&ns, &c, "legacy", "eth1")
            .err()
            .1
            .contains("10.31.0.100 has been allocated to legacy"));
        let mut chk = c.clone();
        chk["prevResult"] = json!({"cniVersion": "1.0.0"});
        call(&ours(), "CHECK", "r3", "eth0", &ns, &chk).run().ok();
        del(&ns, &c, "r1", "eth0").ok();
        del(&ns, &c, "legacy", "eth0").ok();
        assert_eq!(
            leases(&dd),
            ["10.31.0.4", "10.31.0.5", "fd00:31::4", "fd00:31::5"]
        );
        // And the reference keeps working after us.
        let r = call(&reference, "ADD", "r4", "eth0", &ns, &c).run().ok();
        assert_eq!(addrs(&r), ["10.31.0.6/24", "fd00:31::6/64"]);
    });
}

#[test]
fn reference_continues_our_directory() {
    sandbox(|sb| {
        let ns = sb.netns("c1");
        let dd = sb.dir("data");
        let c = conf(
            "1.0.0",
            &dd,
            json!({"ranges": [[{"subnet": "10.32.0.0/24"}], [{"subnet": "fd00:32::/64"}]]}),
        );
        let reference = reference();
        for cid in ["o1", "o2", "o3"] {
            add(&ns, &c, cid, "eth0").ok();
        }
        del(&ns, &c, "o2", "eth0").ok();
        let r = call(&reference, "ADD", "r1", "eth0", &ns, &c).run().ok();
        assert_eq!(addrs(&r), ["10.32.0.5/24", "fd00:32::5/64"]);
        // The reference sees our leases: duplicate detection, CHECK, DEL.
        let out = call(&reference, "ADD", "o1", "eth0", &ns, &c).run();
        assert!(out.err().1.contains("duplicate allocation"));
        let mut chk = c.clone();
        chk["prevResult"] = json!({"cniVersion": "1.0.0"});
        call(&reference, "CHECK", "o3", "eth0", &ns, &chk)
            .run()
            .ok();
        call(&reference, "DEL", "o1", "eth0", &ns, &c).run().ok();
        assert_eq!(
            leases(&dd),
            ["10.32.0.4", "10.32.0.5", "fd00:32::4", "fd00:32::5"]
        );
        // Requested address already leased by us is refused by the reference.
        let out = call(&reference, "ADD", "r2", "eth0", &ns, &c)
            .env("CNI_ARGS", "IP=10.32.0.4")
            .run();
        assert!(out
            .err()
            .1
            .contains("requested IP address 10.32.0.4 is not available"));
        // Our GC cleans up after both.
        let mut g = conf(
            "1.1.0",
            &dd,
            json!({"ranges": [[{"subnet": "10.32.0.0/24"}], [{"subnet": "fd00:32::/64"}]]}),
        );
        g["cni.dev/valid-attachments"] = json!([{"containerID": "r1", "ifname": "eth0"}]);
        verb(&ours(), "GC", &g).ok();
        assert_eq!(leases(&dd), ["10.32.0.5", "fd00:32::5"]);
    });
}
