//! Unit tests without root: [`describe`] on `kernel::FakeNetlink`, and the namespace rule on
//! paths any user can open (this process's own namespace stands for the host's).

use std::path::Path;

use cni::error::codes;
use cni::skel::{CmdArgs, Command, Plugin};
use kernel::netlink::{FakeNetlink, NetlinkOps};
use serde_json::json;

use super::{describe, Host};

fn args(command: Command, netns: Option<&str>) -> CmdArgs {
    let conf = json!({"cniVersion": "1.1.0", "name": "host", "type": "host"});
    let stdin = serde_json::to_vec(&conf).unwrap();
    CmdArgs::new(command, "cid", netns.map(Path::new), "eth0", stdin).unwrap()
}

#[test]
fn describe_reports_every_link_in_index_order_with_its_addresses() {
    let mut nl = FakeNetlink::new();
    let eth = nl.add_link("eth0", None);
    let br = nl.add_link("docker0", Some("bridge"));
    nl.edit(|ns| {
        // Dumps need not come in index order.
        ns.links.reverse();
        ns.links.iter_mut().for_each(|l| l.mtu = 1400 + l.index);
    });
    for (index, a) in [
        (eth, "192.168.1.5/24"),
        (eth, "fe80::1/64"),
        (eth, "2001:db8::5/64"),
        (br, "172.17.0.1/16"),
        (1, "127.0.0.1/8"),
    ] {
        nl.addr_add(index, a.parse().unwrap()).unwrap();
    }
    let r = describe(&mut nl, "/proc/1/ns/net", "1.1.0").unwrap();

    assert_eq!(r.cni_version, "1.1.0");
    let names: Vec<&str> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["lo", "eth0", "docker0"]);
    assert!(r.interfaces.iter().all(|i| i.sandbox == "/proc/1/ns/net"));
    assert_eq!(r.interfaces[1].mtu, Some(1400 + eth));
    assert_eq!(
        r.interfaces[1].mac,
        kernel::mac::format_mac(&nl.state().link("eth0").unwrap().mac.unwrap())
    );
    // Link-local IPv6 is no identity of the sandbox; the rest point at their interface.
    let ips: Vec<(String, Option<usize>)> = r
        .ips
        .iter()
        .map(|ip| (ip.address.to_string(), ip.interface))
        .collect();
    assert_eq!(
        ips,
        [
            ("127.0.0.1/8".to_string(), Some(0)),
            ("192.168.1.5/24".to_string(), Some(1)),
            ("2001:db8::5/64".to_string(), Some(1)),
            ("172.17.0.1/16".to_string(), Some(2)),
        ]
    );
    assert!(r.ips.iter().all(|ip| ip.gateway.is_none()));
    assert!(r.routes.is_empty());
}

#[test]
fn describe_names_the_failed_dump() {
    let mut nl = FakeNetlink::new();
    nl.fail_next("addrs", 1);
    let e = describe(&mut nl, "/x", "1.0.0").unwrap_err();
    assert_eq!(e.code, codes::INTERNAL);
    assert!(e.msg.starts_with("failed to list addresses: "), "{}", e.msg);
}

#[test]
fn check_accepts_the_plugins_own_namespace() {
    Host.check(&args(Command::Check, Some("/proc/self/ns/net")))
        .unwrap();
}

#[test]
fn unusable_namespaces_are_code_8_and_del_never_fails() {
    for path in ["/proc/self/ns/gone", "/proc/self/status"] {
        let e = Host.check(&args(Command::Check, Some(path))).unwrap_err();
        assert_eq!(e.code, codes::INVALID_NETNS, "{path}: {}", e.msg);
        let e = Host.add(&args(Command::Add, Some(path))).unwrap_err();
        assert_eq!(e.code, codes::INVALID_NETNS, "{path}: {}", e.msg);
        // Nothing was created, so DEL has nothing to do, whatever the path.
        Host.del(&args(Command::Del, Some(path))).unwrap();
    }
    let e = Host.check(&args(Command::Check, None)).unwrap_err();
    assert_eq!(e.code, codes::INVALID_ENV);
    Host.del(&args(Command::Del, None)).unwrap();
}
