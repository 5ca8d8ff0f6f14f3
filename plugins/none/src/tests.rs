//! Unit tests without root: the verbs on `kernel::FakeNetlink` standing for the sandbox, and the
//! namespace handling on paths any user can open.

use std::path::Path;

use cni::error::codes;
use cni::skel::{CmdArgs, Command, Plugin};
use kernel::netlink::{Addr, Call, FakeNetlink, NetlinkOps, IFA_F_PERMANENT};
use serde_json::json;

use super::{add_on, check_on, del_on, Loopback};

const SANDBOX: &str = "/run/netns/sb";

fn args(command: Command, netns: Option<&str>, conf: &serde_json::Value) -> CmdArgs {
    let stdin = serde_json::to_vec(conf).unwrap();
    CmdArgs::new(command, "cid", netns.map(Path::new), "eth0", stdin).unwrap()
}

fn conf() -> serde_json::Value {
    json!({"cniVersion": "1.0.0", "name": "none", "type": "loopback"})
}

/// A fresh namespace: `lo` down, with the addresses the kernel gives it.
fn sandbox() -> FakeNetlink {
    let nl = FakeNetlink::new();
    nl.edit(|ns| {
        let lo = &mut ns.links[0];
        lo.up = false;
        for a in ["::1/128", "127.0.0.1/8"] {
            ns.addrs.push(Addr {
                index: 1,
                addr: a.parse().unwrap(),
                scope: kernel::netlink::RT_SCOPE_HOST,
                flags: IFA_F_PERMANENT,
            });
        }
    });
    nl
}

#[test]
fn add_brings_lo_up_and_reports_it_ipv4_first() {
    let mut nl = sandbox();
    let r = add_on(
        &mut nl,
        SANDBOX,
        &args(Command::Add, Some(SANDBOX), &conf()),
    )
    .unwrap();
    assert!(nl.state().link("lo").unwrap().up);
    assert!(nl.calls().contains(&Call::LinkSetUp(1)));
    assert_eq!(r.cni_version, "1.0.0");
    assert_eq!(r.interfaces.len(), 1);
    assert_eq!(r.interfaces[0].name, "lo");
    assert_eq!(r.interfaces[0].sandbox, SANDBOX);
    let ips: Vec<String> = r.ips.iter().map(|ip| ip.address.to_string()).collect();
    assert_eq!(ips, ["127.0.0.1/8", "::1/128"]);
    assert!(r
        .ips
        .iter()
        .all(|ip| ip.interface == Some(0) && ip.gateway.is_none()));
}

#[test]
fn add_passes_a_prev_result_through_unchanged() {
    let mut nl = sandbox();
    let mut c = conf();
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": SANDBOX}],
        "ips": [{"address": "10.1.0.2/24", "interface": 0}]
    });
    c["prevResult"] = prev;
    let a = args(Command::Add, Some(SANDBOX), &c);
    let r = add_on(&mut nl, SANDBOX, &a).unwrap();
    assert_eq!(r, a.prev_result().unwrap().unwrap());
    assert!(nl.state().link("lo").unwrap().up, "lo still brought up");
}

#[test]
fn add_refuses_a_non_loopback_address_on_lo() {
    let mut nl = sandbox();
    nl.addr_add(1, "10.0.0.1/8".parse().unwrap()).unwrap();
    let e = add_on(
        &mut nl,
        SANDBOX,
        &args(Command::Add, Some(SANDBOX), &conf()),
    )
    .unwrap_err();
    assert!(
        e.msg.contains("non-loopback address 10.0.0.1/8"),
        "{}",
        e.msg
    );
}

#[test]
fn netlink_failures_are_internal_errors_naming_the_step() {
    let mut nl = sandbox();
    nl.fail_next("link_set_up", 1);
    let e = add_on(
        &mut nl,
        SANDBOX,
        &args(Command::Add, Some(SANDBOX), &conf()),
    )
    .unwrap_err();
    assert_eq!(e.code, codes::INTERNAL);
    assert!(
        e.msg
            .starts_with("failed to set lo up: netlink link_set_up"),
        "{}",
        e.msg
    );
    let mut empty = FakeNetlink::new();
    empty.edit(|ns| ns.links.clear());
    let e = del_on(&mut empty).unwrap_err();
    assert!(e.msg.contains("no lo interface"), "{}", e.msg);
}

#[test]
fn check_follows_lo_and_del_sets_it_down() {
    let mut nl = sandbox();
    let e = check_on(&mut nl).unwrap_err();
    assert!(e.msg.contains("loopback interface is down"), "{}", e.msg);
    add_on(
        &mut nl,
        SANDBOX,
        &args(Command::Add, Some(SANDBOX), &conf()),
    )
    .unwrap();
    check_on(&mut nl).unwrap();
    del_on(&mut nl).unwrap();
    assert!(!nl.state().link("lo").unwrap().up);
    // A second DEL finds lo down already and still succeeds.
    del_on(&mut nl).unwrap();
}

#[test]
fn del_succeeds_when_the_namespace_is_gone_or_unset() {
    for netns in [Some("/proc/self/ns/gone"), None] {
        Loopback
            .del(&args(Command::Del, netns, &conf()))
            .unwrap_or_else(|e| panic!("{netns:?}: {e}"));
    }
}

#[test]
fn add_and_check_need_a_usable_namespace() {
    for (verb, command) in [("ADD", Command::Add), ("CHECK", Command::Check)] {
        for path in ["/proc/self/ns/gone", "/proc/self/status"] {
            let a = args(command, Some(path), &conf());
            let e = match command {
                Command::Add => Loopback.add(&a).map(|_| ()).unwrap_err(),
                _ => Loopback.check(&a).unwrap_err(),
            };
            assert_eq!(e.code, codes::INVALID_NETNS, "{verb} {path}: {}", e.msg);
            assert!(e.msg.contains(path), "{verb}: {}", e.msg);
        }
    }
    // A file that is no namespace is named as such.
    let e = Loopback
        .del(&args(Command::Del, Some("/proc/self/status"), &conf()))
        .unwrap_err();
    assert!(e.msg.contains("unknown FS magic"), "{}", e.msg);
}
