//! Unit tests of the bridge plugin on fakes, without root: `kernel::FakeNetlink` for both
//! namespaces, and fakes of the firewall, anti-spoofing and IPAM seams that record into the same
//! journal. Each ADD step is failed in turn and the test asserts what the rollback undid, in
//! which order, and that nothing is left; DEL is run twice, without a namespace and with failing
//! steps.
//!
//! The container namespace is `/proc/self/ns/net`: `NetNs::open` accepts it without privileges
//! and nothing enters it (the fake kernel applies the container sysctls in memory).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cni::error::CniError;
use cni::result::{CniResult, IpConfig, Route};
use cni::skel::{CmdArgs, Command, Plugin};
use firewall::macspoof::SpoofEntry;
use firewall::{Firewall, MasqRule};
use kernel::netlink::{
    Call, Event, FakeNetlink, Link, NetlinkOps, RouteSpec, HOST_NS, IFA_F_DADFAILED,
    IFA_F_TENTATIVE,
};
use kernel::netns::NetNs;
use serde_json::json;

use crate::seams::{AntiSpoof, Ipam, Kernel, Masquerade, SysctlWrite};
use crate::{BridgeOn, Deps};

const NETNS: &str = "/proc/self/ns/net";
const BRIDGE: &str = "rcnitest0";

/// What the fake firewall and IPAM hold.
#[derive(Debug, Default)]
struct Entries {
    masq: Vec<MasqRule>,
    spoof: Vec<SpoofEntry>,
    /// (container id, ifname) of each lease.
    leases: Vec<(String, String)>,
    /// Container sysctls applied.
    sysctls: Vec<SysctlWrite>,
    /// Every wait of the polling loops.
    sleeps: Vec<Duration>,
}

struct Shared {
    net: FakeNetlink,
    entries: Mutex<Entries>,
    /// Seam steps that fail (see [`Fakes::fail`]).
    failing: Mutex<HashSet<&'static str>>,
}

/// One fake world: the kernel (both namespaces), the firewall and the IPAM plugin.
#[derive(Clone)]
struct Fakes(Arc<Shared>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fw_err(what: &str) -> firewall::Error {
    firewall::Error::UnknownBackend(format!("injected {what} failure"))
}

impl Fakes {
    /// A host with the bridge already there and up (so the host's only `link_set_up` is the
    /// veth's), or without it.
    fn new(with_bridge: bool) -> Fakes {
        let net = FakeNetlink::new();
        if with_bridge {
            let index = net.add_link(BRIDGE, Some("bridge"));
            net.edit(|ns| {
                if let Some(l) = ns.links.iter_mut().find(|l| l.index == index) {
                    l.up = true;
                    l.oper_up = true;
                }
            });
        }
        Fakes(Arc::new(Shared {
            net,
            entries: Mutex::default(),
            failing: Mutex::default(),
        }))
    }

    fn deps(&self) -> Deps<'_> {
        Deps {
            kernel: self,
            masquerade: self,
            spoof: self,
            ipam: self,
        }
    }

    fn plugin(&self) -> BridgeOn<'_> {
        BridgeOn(self.deps())
    }

    fn host(&self) -> FakeNetlink {
        self.0.net.clone()
    }

    fn cont(&self) -> FakeNetlink {
        self.0.net.netns(NETNS)
    }

    /// Make a seam step fail from now on: "container sysctls", "forwarding", "backend",
    /// "masq add", "masq del", "spoof add", "spoof del", "ipam add", "ipam del", "ipam empty"
    /// (IPAM answers without addresses), "port down" (the host veth never forwards). Not
    /// failures: "dual stack" (IPAM adds an IPv6 address), "dad settles" (tentative addresses
    /// become valid at the first wait).
    fn fail(&self, step: &'static str) {
        lock(&self.0.failing).insert(step);
    }

    fn failing(&self, step: &str) -> bool {
        lock(&self.0.failing).contains(step)
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        lock(&self.0.entries)
    }

    /// Journal a firewall/IPAM step, failing it when asked to.
    fn step(&self, step: &'static str) -> Result<(), firewall::Error> {
        self.0.net.note(step);
        if self.failing(step) {
            return Err(fw_err(step));
        }
        Ok(())
    }

    /// The side effects so far, in order: netlink calls that change something, and the notes
    /// of the other fakes.
    fn effects(&self) -> Vec<String> {
        self.0
            .net
            .journal()
            .into_iter()
            .filter_map(|e| match e {
                Event::Note(n) => Some(n),
                Event::Call { ns, call } => {
                    let side = if ns.as_os_str() == HOST_NS {
                        "host"
                    } else {
                        "cont"
                    };
                    let name = match call {
                        Call::BridgeAdd { .. } => "bridge_add",
                        Call::VethAdd { .. } => "veth_add",
                        Call::LinkSetUp(_) => "link_set_up",
                        Call::LinkSetMaster { .. } => "link_set_master",
                        Call::LinkSetMac { .. } => "link_set_mac",
                        Call::LinkSetPromisc { .. } => "link_set_promisc",
                        Call::BrportSet { .. } => "brport_set",
                        Call::LinkDel(_) => "link_del",
                        Call::AddrAdd { .. } => "addr_add",
                        Call::AddrDel { .. } => "addr_del",
                        Call::RouteAdd(_) => "route_add",
                        Call::RouteDel(_) => "route_del",
                        _ => return None,
                    };
                    Some(format!("{side} {name}"))
                }
            })
            .collect()
    }

    /// The undo steps in the journal, in order.
    fn undone(&self) -> Vec<String> {
        self.effects()
            .into_iter()
            .filter(|e| e.ends_with(" del") || e.ends_with("link_del"))
            .collect()
    }

    /// Nothing of the attachment is left: no veth on either side, no firewall entry, no lease.
    fn assert_nothing_left(&self) {
        let host = self.host().state().link_names();
        assert!(
            host.iter().all(|n| n == "lo" || n == BRIDGE),
            "host links left: {host:?}"
        );
        assert_eq!(self.cont().state().link_names(), ["lo"], "container links");
        let e = self.entries();
        assert!(e.masq.is_empty(), "masquerade left: {:?}", e.masq);
        assert!(e.spoof.is_empty(), "macspoofchk left: {:?}", e.spoof);
        assert!(e.leases.is_empty(), "leases left: {:?}", e.leases);
    }
}

impl Kernel for Fakes {
    fn host_netlink(&self) -> kernel::Result<Box<dyn NetlinkOps>> {
        Ok(Box::new(self.host()))
    }

    fn netlink_in(&self, ns: &NetNs) -> kernel::Result<Box<dyn NetlinkOps>> {
        Ok(Box::new(self.0.net.netns(ns.path())))
    }

    fn sysctl_write(&self, _key: &str, _value: &str) -> kernel::Result<()> {
        Ok(())
    }

    fn sysctl_write_if_different(&self, key: &str, _value: &str) -> kernel::Result<bool> {
        if self.failing("forwarding") {
            return Err(kernel::Error::io(
                format!("failed to write sysctl {key}"),
                std::io::ErrorKind::ReadOnlyFilesystem.into(),
            ));
        }
        Ok(true)
    }

    fn container_sysctls(
        &self,
        _ns: &NetNs,
        writes: &[SysctlWrite],
    ) -> kernel::Result<Result<(), String>> {
        if self.failing("container sysctls") {
            return Ok(Err("injected sysctl failure".into()));
        }
        self.entries().sysctls.extend_from_slice(writes);
        Ok(Ok(()))
    }

    fn bridge_mac_pinned(&self, _name: &str, _index: u32, _mac: &[u8; 6]) -> bool {
        false
    }

    /// No real waiting; with "port down" the host veths lose their carrier at every poll.
    fn sleep(&self, d: Duration) {
        self.entries().sleeps.push(d);
        if self.failing("dad settles") {
            self.cont().edit(|ns| {
                for a in &mut ns.addrs {
                    a.flags &= !IFA_F_TENTATIVE;
                }
            });
        }
        if self.failing("port down") {
            self.0.net.edit(|ns| {
                for l in &mut ns.links {
                    if l.kind.as_deref() == Some("veth") {
                        l.oper_up = false;
                    }
                }
            });
        }
    }
}

/// The firewall a fake [`Masquerade`] hands out.
struct FakeFirewall(Fakes);

impl Firewall for FakeFirewall {
    fn add_masquerade(&self, rules: &[MasqRule]) -> Result<(), firewall::Error> {
        self.0.step("masq add")?;
        self.0.entries().masq.extend_from_slice(rules);
        Ok(())
    }

    fn del_masquerade(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<(), firewall::Error> {
        self.0.step("masq del")?;
        self.0.entries().masq.retain(|r| {
            !(r.network == network && r.container_id == container_id && r.ifname == ifname)
        });
        Ok(())
    }

    fn check_masquerade(&self, rules: &[MasqRule]) -> Result<(), firewall::Error> {
        let held = &self.0.entries().masq;
        match rules.iter().find(|r| !held.contains(r)) {
            Some(r) => Err(fw_err(&format!("masquerade of {}", r.addr))),
            None => Ok(()),
        }
    }

    fn gc_masquerade(
        &self,
        network: &str,
        keep: &[(String, String)],
    ) -> Result<(), firewall::Error> {
        self.0.step("masq gc")?;
        self.0.entries().masq.retain(|r| {
            r.network != network || keep.contains(&(r.container_id.clone(), r.ifname.clone()))
        });
        Ok(())
    }
}

impl Masquerade for Fakes {
    fn firewall(&self, _backend: Option<&str>) -> Result<Box<dyn Firewall>, firewall::Error> {
        if self.failing("backend") {
            return Err(fw_err("backend"));
        }
        Ok(Box::new(FakeFirewall(self.clone())))
    }
}

impl AntiSpoof for Fakes {
    fn add(&self, entry: &SpoofEntry) -> Result<(), firewall::Error> {
        self.step("spoof add")?;
        self.entries().spoof.push(entry.clone());
        Ok(())
    }

    fn del(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), firewall::Error> {
        self.step("spoof del")?;
        self.entries().spoof.retain(|e| {
            !(e.network == network && e.container_id == container_id && e.ifname == ifname)
        });
        Ok(())
    }

    fn check(&self, entry: &SpoofEntry) -> Result<(), firewall::Error> {
        if self.entries().spoof.contains(entry) {
            Ok(())
        } else {
            Err(fw_err("macspoofchk check"))
        }
    }

    fn gc(&self, network: &str, keep: &[(String, String)]) -> Result<(), firewall::Error> {
        self.step("spoof gc")?;
        self.entries().spoof.retain(|e| {
            e.network != network || keep.contains(&(e.container_id.clone(), e.ifname.clone()))
        });
        Ok(())
    }
}

impl Ipam for Fakes {
    fn add(&self, _plugin: &str, args: &CmdArgs) -> Result<CniResult, CniError> {
        self.0.net.note("ipam add");
        if self.failing("ipam add") {
            return Err(CniError::internal("injected ipam add failure"));
        }
        self.entries()
            .leases
            .push((args.container_id.clone(), args.ifname.clone()));
        let mut r = CniResult::default();
        if !self.failing("ipam empty") {
            r.ips.push(IpConfig {
                interface: None,
                address: "10.88.0.5/16".parse().unwrap(),
                gateway: None,
            });
            r.routes
                .push(Route::new("0.0.0.0/0".parse().unwrap(), None));
        }
        if self.failing("dual stack") {
            r.ips.push(IpConfig {
                interface: None,
                address: "fd00::5/64".parse().unwrap(),
                gateway: None,
            });
        }
        Ok(r)
    }

    fn del(&self, _plugin: &str, args: &CmdArgs) -> Result<(), CniError> {
        self.0.net.note("ipam del");
        if self.failing("ipam del") {
            return Err(CniError::internal("injected ipam del failure"));
        }
        let key = (args.container_id.clone(), args.ifname.clone());
        self.entries().leases.retain(|l| *l != key);
        Ok(())
    }

    fn check(&self, _plugin: &str, args: &CmdArgs) -> Result<(), CniError> {
        let key = (args.container_id.clone(), args.ifname.clone());
        if self.entries().leases.contains(&key) {
            Ok(())
        } else {
            Err(CniError::internal("no lease"))
        }
    }

    fn gc(&self, _plugin: &str, _args: &CmdArgs) -> Result<(), CniError> {
        self.0.net.note("ipam gc");
        Ok(())
    }

    fn status(&self, _plugin: &str, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }
}

fn conf_json() -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "testnet",
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "macspoofchk": true,
        "ipam": {"type": "host-local", "subnet": "10.88.0.0/16"}
    })
}

fn cmd_args(command: Command, netns: Option<&str>, conf: &serde_json::Value) -> CmdArgs {
    let stdin = serde_json::to_vec(conf).unwrap();
    CmdArgs::new(command, "c0ffee", netns.map(Path::new), "eth0", stdin).unwrap()
}

fn add(f: &Fakes) -> Result<CniResult, CniError> {
    add_with(f, &conf_json())
}

fn add_with(f: &Fakes, conf: &serde_json::Value) -> Result<CniResult, CniError> {
    f.plugin().add(&cmd_args(Command::Add, Some(NETNS), conf))
}

fn del(f: &Fakes, netns: Option<&str>) -> Result<(), CniError> {
    f.plugin().del(&cmd_args(Command::Del, netns, &conf_json()))
}

fn host_veth(f: &Fakes) -> Link {
    f.host()
        .state()
        .links
        .into_iter()
        .find(|l| l.kind.as_deref() == Some("veth"))
        .expect("a host veth")
}

#[test]
fn add_creates_everything_in_order_and_reports_it() {
    let f = Fakes::new(false);
    let r = add(&f).unwrap();

    assert_eq!(
        f.effects(),
        [
            "host bridge_add",
            "host link_set_up",
            "host veth_add",
            "host link_set_master",
            "host brport_set",
            "host link_set_up",
            "spoof add",
            "ipam add",
            "cont addr_add",
            "cont link_set_up",
            "cont route_add",
            "host addr_add",
            "host link_set_mac",
            "masq add",
        ]
    );
    let host = f.host().state();
    let bridge = host.link(BRIDGE).unwrap().clone();
    let veth = host_veth(&f);
    let cont = f.cont().state();
    let eth0 = cont.link("eth0").unwrap();
    assert_eq!(veth.master, Some(bridge.index));
    assert_eq!(veth.peer_index, Some(eth0.index));
    assert!(veth.up && eth0.up && bridge.up);
    assert!(host.brport[&veth.index].hairpin);
    let gw: ipnet::IpNet = "10.88.0.1/16".parse().unwrap();
    assert!(host
        .addrs
        .iter()
        .any(|a| a.index == bridge.index && a.addr == gw));
    assert!(cont
        .addrs
        .iter()
        .any(|a| a.index == eth0.index && a.addr.to_string() == "10.88.0.5/16"));
    let default = RouteSpec {
        gw: Some("10.88.0.1".parse().unwrap()),
        oif: Some(eth0.index),
        ..RouteSpec::new("0.0.0.0/0".parse().unwrap())
    };
    assert!(f.cont().calls().contains(&Call::RouteAdd(default)));

    let e = f.entries();
    assert_eq!(e.masq.len(), 1);
    assert_eq!(e.masq[0].addr.to_string(), "10.88.0.5/16");
    assert_eq!(e.spoof[0].host_veth, veth.name);
    assert_eq!(Some(e.spoof[0].mac), eth0.mac, "the MAC the kernel holds");
    assert_eq!(e.leases, [("c0ffee".to_string(), "eth0".to_string())]);
    // IPv4 only: arp_notify, and accept_dad best effort.
    let keys: Vec<&str> = e.sysctls.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "net/ipv4/conf/eth0/arp_notify",
            "net/ipv6/conf/eth0/accept_dad"
        ]
    );

    assert_eq!(r.ips.len(), 1);
    assert_eq!(r.ips[0].interface, Some(2));
    assert_eq!(r.ips[0].gateway, Some("10.88.0.1".parse().unwrap()));
    let names: Vec<&str> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, [BRIDGE, veth.name.as_str(), "eth0"]);
    assert_eq!(r.interfaces[2].sandbox, NETNS);
    assert_eq!(
        r.interfaces[0].mac,
        kernel::mac::format_mac(&bridge.mac.unwrap())
    );
}

/// One ADD step made to fail, what the error must say, and what the rollback must undo.
struct Case {
    step: &'static str,
    with_bridge: bool,
    inject: fn(&Fakes),
    msg: &'static str,
    undone: &'static [&'static str],
}

const NOTHING: &[&str] = &[];
const VETH: &[&str] = &["host link_del"];
const SPOOF: &[&str] = &["spoof del", "host link_del"];
const LEASE: &[&str] = &["ipam del", "spoof del", "host link_del"];
const MASQ: &[&str] = &["masq del", "ipam del", "spoof del", "host link_del"];

/// The errno injected into netlink calls.
const EPERM: i32 = 1;

fn cases() -> Vec<Case> {
    vec![
        Case {
            step: "bridge lookup",
            with_bridge: true,
            inject: |f| f.host().fail_next("link_by_name", EPERM),
            msg: "lookup bridge",
            undone: NOTHING,
        },
        Case {
            step: "bridge creation",
            with_bridge: false,
            inject: |f| f.host().fail_next("bridge_add", EPERM),
            msg: "failed to create bridge",
            undone: NOTHING,
        },
        Case {
            step: "veth creation",
            with_bridge: true,
            inject: |f| f.host().fail_next("veth_add", EPERM),
            msg: "failed to create veth pair",
            undone: NOTHING,
        },
        Case {
            step: "enslaving the host veth",
            with_bridge: true,
            inject: |f| f.host().fail_next("link_set_master", EPERM),
            msg: "attach host veth to bridge",
            undone: VETH,
        },
        Case {
            step: "bridge port flags",
            with_bridge: true,
            inject: |f| f.host().fail_next("brport_set", EPERM),
            msg: "set bridge port flags",
            undone: VETH,
        },
        Case {
            step: "host veth up",
            with_bridge: true,
            inject: |f| f.host().fail_next("link_set_up", EPERM),
            msg: "set host veth up",
            undone: VETH,
        },
        Case {
            step: "macspoofchk",
            with_bridge: true,
            inject: |f| f.fail("spoof add"),
            msg: "macspoofchk",
            undone: VETH,
        },
        Case {
            step: "IPAM",
            with_bridge: true,
            inject: |f| f.fail("ipam add"),
            msg: "injected ipam add failure",
            undone: SPOOF,
        },
        Case {
            step: "IPAM without addresses",
            with_bridge: true,
            inject: |f| f.fail("ipam empty"),
            msg: "IPAM plugin returned missing IP config",
            undone: LEASE,
        },
        Case {
            step: "container sysctls",
            with_bridge: true,
            inject: |f| f.fail("container sysctls"),
            msg: "container sysctl",
            undone: LEASE,
        },
        Case {
            step: "container address",
            with_bridge: true,
            inject: |f| f.cont().fail_next("addr_add", EPERM),
            msg: "add 10.88.0.5/16 to eth0",
            undone: LEASE,
        },
        Case {
            step: "container veth up",
            with_bridge: true,
            inject: |f| f.cont().fail_next("link_set_up", EPERM),
            msg: "set container veth up",
            undone: LEASE,
        },
        Case {
            step: "container route",
            with_bridge: true,
            inject: |f| f.cont().fail_next("route_add", EPERM),
            msg: "add route 0.0.0.0/0 in container",
            undone: LEASE,
        },
        Case {
            step: "gateway address",
            with_bridge: true,
            inject: |f| f.host().fail_next("addr_add", EPERM),
            msg: "add 10.88.0.1/16 to bridge",
            undone: LEASE,
        },
        Case {
            step: "forwarding sysctl",
            with_bridge: true,
            inject: |f| f.fail("forwarding"),
            msg: "enable net/ipv4/ip_forward",
            undone: LEASE,
        },
        Case {
            step: "bridge MAC pinning",
            with_bridge: true,
            inject: |f| f.host().fail_next("link_set_mac", EPERM),
            msg: "pin bridge MAC",
            undone: LEASE,
        },
        Case {
            step: "firewall backend",
            with_bridge: true,
            inject: |f| f.fail("backend"),
            msg: "choose firewall backend",
            undone: LEASE,
        },
        Case {
            step: "masquerade",
            with_bridge: true,
            inject: |f| f.fail("masq add"),
            msg: "ipMasq",
            undone: LEASE,
        },
        Case {
            step: "bridge port forwarding",
            with_bridge: true,
            inject: |f| f.fail("port down"),
            msg: "bridge port in error state: down",
            undone: MASQ,
        },
        Case {
            step: "final MAC read",
            with_bridge: true,
            inject: |f| f.cont().fail_next("link_by_index", EPERM),
            msg: "lookup container veth",
            undone: MASQ,
        },
    ]
}

#[test]
fn add_failing_at_each_step_undoes_what_it_did_in_reverse_order() {
    for case in cases() {
        let f = Fakes::new(case.with_bridge);
        (case.inject)(&f);
        let err = add(&f).expect_err(case.step);
        assert!(
            err.msg.contains(case.msg),
            "{}: error {:?} should contain {:?}",
            case.step,
            err.msg,
            case.msg
        );
        assert_eq!(f.undone(), case.undone, "{}: rollback", case.step);
        f.assert_nothing_left();
        // The bridge is shared by every attachment: never removed, even when this ADD made it.
        assert_eq!(
            f.host().state().link(BRIDGE).is_some(),
            case.with_bridge || case.step != "bridge creation",
            "{}",
            case.step
        );
    }
}

#[test]
fn add_refuses_an_existing_container_interface_before_any_change() {
    let f = Fakes::new(true);
    f.cont().add_link("eth0", Some("dummy"));
    let err = add(&f).unwrap_err();
    assert!(err.msg.contains("already exists"), "{}", err.msg);
    assert!(f.effects().is_empty(), "{:?}", f.effects());
}

#[test]
fn add_keeps_a_route_the_container_already_has() {
    // Joining a second network: the first network's default route wins, the ADD succeeds.
    let f = Fakes::new(true);
    let other = f.cont().add_link("eth1", Some("veth"));
    let route = RouteSpec {
        gw: Some("192.168.0.1".parse().unwrap()),
        oif: Some(other),
        ..RouteSpec::new("0.0.0.0/0".parse().unwrap())
    };
    f.cont().route_add(&route).unwrap();
    add(&f).unwrap();
    let routes = f.cont().state().routes;
    let defaults: Vec<_> = routes.iter().filter(|r| r.dst.prefix_len() == 0).collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0].oif, Some(other));
}

#[test]
fn del_removes_everything_and_a_second_del_succeeds() {
    let f = Fakes::new(true);
    add(&f).unwrap();
    f.0.net.clear_journal();
    del(&f, Some(NETNS)).unwrap();
    f.assert_nothing_left();
    let effects = f.effects();
    for step in ["cont link_del", "ipam del", "masq del", "spoof del"] {
        assert!(effects.iter().any(|e| e == step), "{step} in {effects:?}");
    }
    // Nothing there any more: every step finds nothing and succeeds.
    del(&f, Some(NETNS)).unwrap();
    f.assert_nothing_left();
}

#[test]
fn del_without_or_with_a_vanished_netns_still_removes_firewall_entries_and_lease() {
    for netns in [None, Some("/proc/self/ns/does-not-exist")] {
        let f = Fakes::new(true);
        add(&f).unwrap();
        del(&f, netns).unwrap();
        let e = f.entries();
        assert!(
            e.masq.is_empty() && e.spoof.is_empty() && e.leases.is_empty(),
            "{netns:?}"
        );
    }
}

#[test]
fn del_runs_every_step_and_reports_every_error() {
    let f = Fakes::new(true);
    add(&f).unwrap();
    f.fail("spoof del");
    f.fail("ipam del");
    let err = del(&f, Some(NETNS)).unwrap_err();
    assert!(err.msg.contains("remove macspoofchk"), "{}", err.msg);
    assert!(err.msg.contains("injected ipam del failure"), "{}", err.msg);
    // The steps that could run did.
    assert_eq!(f.cont().state().link_names(), ["lo"]);
    assert!(f.entries().masq.is_empty());
}

#[test]
fn del_tolerates_a_container_interface_already_gone() {
    let f = Fakes::new(true);
    add(&f).unwrap();
    let peer = f.cont().state().link("eth0").unwrap().index;
    f.cont().link_del(peer).unwrap();
    f.cont().fail_next("link_by_name", 19); // ENODEV: gone between lookups
    del(&f, Some(NETNS)).unwrap();
    f.assert_nothing_left();
}

#[test]
fn check_passes_after_add_and_names_what_went_missing() {
    let f = Fakes::new(true);
    let r = add(&f).unwrap();
    let mut conf = conf_json();
    conf["prevResult"] = r.to_value("1.0.0").unwrap();
    let check = || {
        f.plugin()
            .check(&cmd_args(Command::Check, Some(NETNS), &conf))
    };
    check().unwrap();

    let eth0 = f.cont().state().link("eth0").unwrap().index;
    f.cont()
        .addr_del(eth0, "10.88.0.5/16".parse().unwrap())
        .unwrap();
    let err = check().unwrap_err();
    assert!(
        err.msg.contains("Failed to match addr 10.88.0.5/16"),
        "{}",
        err.msg
    );
}

#[test]
fn gc_forwards_the_valid_attachments_to_every_owner() {
    let f = Fakes::new(true);
    add(&f).unwrap();
    let mut conf = conf_json();
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([]);
    f.plugin().gc(&cmd_args(Command::Gc, None, &conf)).unwrap();
    let e = f.entries();
    assert!(e.masq.is_empty() && e.spoof.is_empty());
    drop(e);
    let effects = f.effects();
    for step in ["spoof gc", "masq gc", "ipam gc"] {
        assert!(effects.iter().any(|e| e == step), "{step} in {effects:?}");
    }
}

#[test]
fn container_sysctls_for_dual_stack_with_dad() {
    let mut conf: crate::BridgeConf =
        crate::BridgeConf::load(&cmd_args(Command::Add, Some(NETNS), &conf_json())).unwrap();
    conf.enabledad = true;
    let writes = crate::container_sysctl_writes("eth0", &conf, true);
    let got: Vec<(&str, &str, bool)> = writes
        .iter()
        .map(|w| (w.key.as_str(), w.value, w.required))
        .collect();
    assert_eq!(
        got,
        [
            ("net/ipv4/conf/eth0/arp_notify", "1", true),
            ("net/ipv6/conf/lo/disable_ipv6", "0", true),
            ("net/ipv6/conf/eth0/disable_ipv6", "0", true),
            ("net/ipv6/conf/eth0/keep_addr_on_down", "1", true),
            ("net/ipv6/conf/eth0/accept_dad", "1", true),
            ("net/ipv6/conf/eth0/enhanced_dad", "1", false),
        ]
    );
}

#[test]
fn add_with_enabledad_waits_for_dad_and_rolls_back_on_a_duplicate() {
    let mut conf = conf_json();
    conf["enabledad"] = json!(true);
    let dual = |flags: u32, settles: bool| {
        let f = Fakes::new(true);
        f.fail("dual stack");
        if settles {
            f.fail("dad settles");
        }
        f.cont().edit(|ns| ns.new_addr_flags = flags);
        f
    };

    // The kernel settles DAD after one poll: ADD succeeds after one wait (then the port wait).
    let f = dual(IFA_F_TENTATIVE, true);
    let r = add_with(&f, &conf).unwrap();
    assert_eq!(r.ips.len(), 2);
    assert_eq!(f.entries().sleeps[0], Duration::from_millis(50));
    let keys: Vec<String> = f.entries().sysctls.iter().map(|w| w.key.clone()).collect();
    assert!(
        keys.contains(&"net/ipv6/conf/eth0/enhanced_dad".to_string()),
        "{keys:?}"
    );

    // A duplicate: the error names the address and everything is undone.
    let f = dual(IFA_F_TENTATIVE | IFA_F_DADFAILED, false);
    let e = add_with(&f, &conf).unwrap_err();
    assert!(
        e.msg.contains("failed duplicate address detection"),
        "{}",
        e.msg
    );
    assert_eq!(f.undone(), LEASE);
    f.assert_nothing_left();

    // Never settling: 100 polls of 50 ms, then an error, and everything is undone.
    let f = dual(IFA_F_TENTATIVE, false);
    let e = add_with(&f, &conf).unwrap_err();
    assert!(e.msg.contains("still tentative after 5 s"), "{}", e.msg);
    assert_eq!(f.entries().sleeps, vec![Duration::from_millis(50); 100]);
    assert_eq!(f.undone(), LEASE);
    f.assert_nothing_left();
}

#[test]
fn a_failing_rollback_step_does_not_stop_the_others_nor_hide_the_error() {
    let f = Fakes::new(true);
    f.fail("masq add");
    f.fail("ipam del");
    let e = add(&f).unwrap_err();
    assert!(
        e.msg.starts_with("ipMasq: "),
        "the ADD's own error: {}",
        e.msg
    );
    assert_eq!(f.undone(), LEASE, "every undo step still ran");
    assert_eq!(f.entries().leases.len(), 1, "the one that failed is left");
    assert!(f.entries().spoof.is_empty());
    assert_eq!(f.cont().state().link_names(), ["lo"]);
}
