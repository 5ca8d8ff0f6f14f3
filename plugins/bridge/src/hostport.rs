//! Host-side ports: the bridge plugin's bridge, veth and masquerade steps for a caller that
//! hands the other end of the veth to someone else instead of naming a container namespace.
//!
//! Docker's remote network driver protocol is such a caller: at `Join` the
//! driver returns the name of a link in its own namespace (`SrcName`) and libnetwork moves it
//! into the container, renames it and applies the address, MAC and routes itself. The driver
//! must not open the container namespace (it may not exist yet). So a host-side port is:
//! the bridge (created or reused, gateway addresses, forwarding, pinned MAC), a veth pair whose
//! host end is enslaved and up and whose peer stays in the current namespace untouched, and the
//! masquerade entries of the addresses the caller will give the peer. Every step is the one
//! [`crate::Bridge`]'s ADD runs (same functions, same firewall owner tags), so the behaviour and
//! the firewall layout exist once. Each call has an `_on` form taking the plugin's [`Deps`]
//! (the unit tests below run it on fakes); the plain form runs on [`Deps::SYSTEM`].

use ipnet::IpNet;

use cni::error::{CniError, Context};
use firewall::MasqRule;
use kernel::mac::format_mac;
use kernel::netlink::{Link, NetlinkOps, VethSpec};
use kernel::netns::NetNs;

use crate::config::BridgeConf;
use crate::seams::Deps;
use crate::{choose_firewall, ensure_bridge, ensure_gateway};

/// The bridge a host-side port hangs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Owner tag of the firewall entries (the CNI network name for the plugin).
    pub network: String,
    /// Bridge device name.
    pub bridge: String,
    /// MTU of a new bridge and of both veth ends.
    pub mtu: Option<u32>,
    /// Gateway addresses (with the subnet's prefix) put on the bridge.
    pub gateways: Vec<IpNet>,
    /// Masquerade traffic of the port's addresses leaving their subnet.
    pub ip_masq: bool,
}

/// One host-side port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Owner of the entries (the CNI container id for the plugin).
    pub owner: String,
    /// Owner's interface tag (CNI_IFNAME for the plugin; at most 15 bytes).
    pub ifname: String,
    /// Name of the end enslaved to the bridge.
    pub host_name: String,
    /// Name of the end left in the current namespace for the caller.
    pub peer_name: String,
    /// MAC of the peer end; the kernel picks one when `None`.
    pub peer_mac: Option<[u8; 6]>,
    /// Addresses the peer will carry (masqueraded when the bridge asks for it).
    pub addresses: Vec<IpNet>,
}

/// What [`add_host_port`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host end (on the bridge).
    pub host_veth: String,
    /// Peer end (in the current namespace, down, no addresses).
    pub peer: String,
    /// The peer's MAC as the kernel holds it.
    pub peer_mac: String,
}

fn conf_of(b: &BridgeSpec) -> BridgeConf {
    BridgeConf::host_port(&b.network, &b.bridge, b.mtu, b.ip_masq, true)
}

/// Create (or reuse) the bridge with its gateway addresses, forwarding on and its MAC pinned,
/// exactly as the plugin's ADD does for an `isGateway` network.
pub fn ensure_gateway_bridge(b: &BridgeSpec) -> Result<(), CniError> {
    ensure_gateway_bridge_on(&Deps::SYSTEM, b)
}

/// [`ensure_gateway_bridge`] on the given side effects.
pub fn ensure_gateway_bridge_on(deps: &Deps, b: &BridgeSpec) -> Result<(), CniError> {
    let mut host = deps.kernel.host_netlink().context("netlink")?;
    gateway_bridge(host.as_mut(), deps, &conf_of(b), &b.gateways).map(|_| ())
}

fn gateway_bridge(
    host: &mut dyn NetlinkOps,
    deps: &Deps,
    conf: &BridgeConf,
    gateways: &[IpNet],
) -> Result<Link, CniError> {
    let bridge = ensure_bridge(host, deps.kernel, conf)?;
    ensure_gateway(host, deps.kernel, &bridge, gateways, conf.force_address)?;
    Ok(bridge)
}

/// Create a host-side port: bridge (as [`ensure_gateway_bridge`]), the veth pair with both ends
/// in the current namespace, the host end enslaved (hairpin on) and up, and the masquerade
/// entries. On failure everything this call created is removed again.
pub fn add_host_port(b: &BridgeSpec, p: &PortSpec) -> Result<HostPort, CniError> {
    add_host_port_on(&Deps::SYSTEM, b, p)
}

/// [`add_host_port`] on the given side effects.
pub fn add_host_port_on(deps: &Deps, b: &BridgeSpec, p: &PortSpec) -> Result<HostPort, CniError> {
    let conf = conf_of(b);
    let mut host = deps.kernel.host_netlink().context("netlink")?;
    let bridge = gateway_bridge(host.as_mut(), deps, &conf, &b.gateways)?;
    let here = NetNs::current().context("open current netns")?;
    host.veth_add(&VethSpec {
        host_name: &p.host_name,
        peer_name: &p.peer_name,
        peer_netns: &here,
        mtu: conf.mtu,
        peer_mac: p.peer_mac,
    })
    .context(format!(
        "failed to create veth pair {}/{}",
        p.host_name, p.peer_name
    ))?;
    let outcome = enslave_and_masquerade(host.as_mut(), deps, &conf, &bridge, p);
    if outcome.is_err() {
        if let Ok(Some(l)) = host.link_by_name(&p.host_name) {
            let _ = host.link_del(l.index);
        }
        if conf.ip_masq {
            if let Ok(fw) = choose_firewall(deps, &conf) {
                let _ = fw.del_masquerade(&conf.network, &p.owner, &p.ifname);
            }
        }
    }
    outcome
}

fn enslave_and_masquerade(
    host: &mut dyn NetlinkOps,
    deps: &Deps,
    conf: &BridgeConf,
    bridge: &Link,
    p: &PortSpec,
) -> Result<HostPort, CniError> {
    let host_veth = host
        .link_by_name(&p.host_name)
        .context("lookup host veth")?
        .ok_or_else(|| CniError::internal(format!("host veth {} vanished", p.host_name)))?;
    host.link_set_master(host_veth.index, bridge.index)
        .context("attach host veth to bridge")?;
    if conf.hairpin_mode {
        host.brport_set(host_veth.index, Some(true), None)
            .context("set bridge port flags")?;
    }
    let _ = deps
        .kernel
        .sysctl_write(&format!("net/ipv6/conf/{}/accept_ra", p.host_name), "0");
    host.link_set_up(host_veth.index)
        .context("set host veth up")?;
    if conf.ip_masq && !p.addresses.is_empty() {
        choose_firewall(deps, conf)?
            .add_masquerade(&masq_rules(conf, p))
            .context("ipMasq")?;
    }
    let peer_mac = host
        .link_by_name(&p.peer_name)
        .context("lookup peer veth")?
        .and_then(|l| l.mac)
        .map(|m| format_mac(&m))
        .unwrap_or_default();
    Ok(HostPort {
        host_veth: p.host_name.clone(),
        peer: p.peer_name.clone(),
        peer_mac,
    })
}

fn masq_rules(conf: &BridgeConf, p: &PortSpec) -> Vec<MasqRule> {
    p.addresses
        .iter()
        .map(|a| MasqRule {
            network: conf.network.clone(),
            container_id: p.owner.clone(),
            ifname: p.ifname.clone(),
            addr: *a,
        })
        .collect()
}

/// Put back a host-side port's masquerade entries when they are missing (a flushed ruleset):
/// true when they were re-added. Nothing to do when the bridge does not masquerade.
pub fn ensure_masquerade(b: &BridgeSpec, p: &PortSpec) -> Result<bool, CniError> {
    ensure_masquerade_on(&Deps::SYSTEM, b, p)
}

/// [`ensure_masquerade`] on the given side effects.
pub fn ensure_masquerade_on(deps: &Deps, b: &BridgeSpec, p: &PortSpec) -> Result<bool, CniError> {
    let conf = conf_of(b);
    if !conf.ip_masq || p.addresses.is_empty() {
        return Ok(false);
    }
    let fw = choose_firewall(deps, &conf)?;
    let rules = masq_rules(&conf, p);
    if fw.check_masquerade(&rules).is_ok() {
        return Ok(false);
    }
    fw.add_masquerade(&rules).context("ipMasq")?;
    Ok(true)
}

/// Remove a host-side port: the veth pair (through whichever end is still in this namespace;
/// none left is fine: the container's namespace took it away) and the masquerade entries, found
/// by owner. Every step runs; the errors are reported together.
pub fn del_host_port(b: &BridgeSpec, p: &PortSpec) -> Result<(), CniError> {
    del_host_port_on(&Deps::SYSTEM, b, p)
}

/// [`del_host_port`] on the given side effects.
pub fn del_host_port_on(deps: &Deps, b: &BridgeSpec, p: &PortSpec) -> Result<(), CniError> {
    let conf = conf_of(b);
    let mut errors = Vec::new();
    match deps.kernel.host_netlink() {
        Ok(mut host) => {
            for name in [&p.host_name, &p.peer_name] {
                match host.link_by_name(name) {
                    Ok(Some(l)) => {
                        match host.link_del(l.index) {
                            Ok(()) => {}
                            Err(e) if e.is_not_found() => {}
                            Err(e) => {
                                errors.push(CniError::from(e).context(format!("delete {name}")))
                            }
                        }
                        // Deleting one end deletes the pair.
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(CniError::from(e).context(format!("lookup {name}"))),
                }
            }
        }
        Err(e) => errors.push(CniError::from(e).context("netlink")),
    }
    if conf.ip_masq {
        let outcome = choose_firewall(deps, &conf).and_then(|fw| {
            fw.del_masquerade(&conf.network, &p.owner, &p.ifname)
                .context("remove ipMasq")
        });
        if let Err(e) = outcome {
            errors.push(e);
        }
    }
    cni::error::combine(errors)
}

/// Delete a bridge created for host-side ports (absent is fine; something else of that name is
/// left alone).
pub fn delete_bridge(name: &str) -> Result<(), CniError> {
    delete_bridge_on(&Deps::SYSTEM, name)
}

/// [`delete_bridge`] on the given side effects.
pub fn delete_bridge_on(deps: &Deps, name: &str) -> Result<(), CniError> {
    let mut host = deps.kernel.host_netlink().context("netlink")?;
    if let Some(l) = host.link_by_name(name).context("lookup bridge")? {
        if l.kind.as_deref() == Some("bridge") {
            match host.link_del(l.index) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(CniError::from(e).context(format!("delete bridge {name}"))),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The host-side port on fakes (no root): what it creates, and that a failing step leaves
    //! nothing behind.
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use cni::result::CniResult;
    use cni::skel::CmdArgs;
    use firewall::macspoof::SpoofEntry;
    use firewall::Firewall;
    use kernel::netlink::{FakeNetlink, NetlinkOps};

    use super::*;
    use crate::seams::{AntiSpoof, Ipam, Kernel, Masquerade, SysctlWrite};

    /// The peer's namespace as `add_host_port_on` names it (the calling thread's).
    const HERE: &str = "/proc/thread-self/ns/net";

    #[derive(Clone, Default)]
    struct World {
        net: FakeNetlink,
        masq: Arc<Mutex<Vec<MasqRule>>>,
        masq_fails: bool,
    }

    impl Kernel for World {
        fn host_netlink(&self) -> kernel::Result<Box<dyn NetlinkOps>> {
            Ok(Box::new(self.net.clone()))
        }
        fn netlink_in(&self, ns: &NetNs) -> kernel::Result<Box<dyn NetlinkOps>> {
            Ok(Box::new(self.net.netns(ns.path())))
        }
        fn sysctl_write(&self, _: &str, _: &str) -> kernel::Result<()> {
            Ok(())
        }
        fn sysctl_write_if_different(&self, _: &str, _: &str) -> kernel::Result<bool> {
            Ok(true)
        }
        fn container_sysctls(
            &self,
            _: &NetNs,
            _: &[SysctlWrite],
        ) -> kernel::Result<Result<(), String>> {
            Ok(Ok(()))
        }
        fn bridge_mac_pinned(&self, _: &str, _: u32, _: &[u8; 6]) -> bool {
            true
        }
        fn sleep(&self, _: Duration) {}
    }

    struct Fw(World);

    impl Firewall for Fw {
        fn add_masquerade(&self, rules: &[MasqRule]) -> Result<(), firewall::Error> {
            if self.0.masq_fails {
                return Err(firewall::Error::Missing("injected".into()));
            }
            self.0.masq.lock().unwrap().extend_from_slice(rules);
            Ok(())
        }
        fn del_masquerade(
            &self,
            network: &str,
            cid: &str,
            ifname: &str,
        ) -> Result<(), firewall::Error> {
            self.0
                .masq
                .lock()
                .unwrap()
                .retain(|r| !(r.network == network && r.container_id == cid && r.ifname == ifname));
            Ok(())
        }
        fn check_masquerade(&self, rules: &[MasqRule]) -> Result<(), firewall::Error> {
            let have = self.0.masq.lock().unwrap();
            match rules.iter().all(|r| have.contains(r)) {
                true => Ok(()),
                false => Err(firewall::Error::Missing("masquerade".into())),
            }
        }
        fn gc_masquerade(&self, _: &str, _: &[(String, String)]) -> Result<(), firewall::Error> {
            Ok(())
        }
    }

    impl Masquerade for World {
        fn firewall(&self, _: Option<&str>) -> Result<Box<dyn Firewall>, firewall::Error> {
            Ok(Box::new(Fw(self.clone())))
        }
    }

    impl AntiSpoof for World {
        fn add(&self, _: &SpoofEntry) -> Result<(), firewall::Error> {
            Ok(())
        }
        fn del(&self, _: &str, _: &str, _: &str) -> Result<(), firewall::Error> {
            Ok(())
        }
        fn check(&self, _: &SpoofEntry) -> Result<(), firewall::Error> {
            Ok(())
        }
        fn gc(&self, _: &str, _: &[(String, String)]) -> Result<(), firewall::Error> {
            Ok(())
        }
    }

    impl Ipam for World {
        fn add(&self, _: &str, _: &CmdArgs) -> Result<CniResult, CniError> {
            Err(CniError::internal("no IPAM in a host-side port"))
        }
        fn del(&self, _: &str, _: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &str, _: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
        fn gc(&self, _: &str, _: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
        fn status(&self, _: &str, _: &CmdArgs) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn deps(w: &World) -> Deps<'_> {
        Deps {
            kernel: w,
            masquerade: w,
            spoof: w,
            ipam: w,
        }
    }

    fn specs() -> (BridgeSpec, PortSpec) {
        (
            BridgeSpec {
                network: "docker-0123456789ab".into(),
                bridge: "rcbr-test".into(),
                mtu: Some(1400),
                gateways: vec!["10.77.0.1/24".parse().unwrap()],
                ip_masq: true,
            },
            PortSpec {
                owner: "e".repeat(64),
                ifname: "eth0".into(),
                host_name: "rcveeeeeeeeeeee".into(),
                peer_name: "rcpeeeeeeeeeeee".into(),
                peer_mac: Some([2, 0x42, 10, 77, 0, 2]),
                addresses: vec!["10.77.0.2/24".parse().unwrap()],
            },
        )
    }

    #[test]
    fn creates_bridge_port_and_masquerade_then_removes_them() {
        let w = World::default();
        let (b, p) = specs();
        let hp = add_host_port_on(&deps(&w), &b, &p).unwrap();
        assert_eq!(hp.host_veth, p.host_name);
        let host = w.net.state();
        let br = host.link("rcbr-test").unwrap().clone();
        assert!(br.up);
        assert!(host
            .addrs
            .iter()
            .any(|a| a.index == br.index && a.addr == b.gateways[0]));
        let port = host.link(&p.host_name).unwrap();
        assert_eq!(port.master, Some(br.index));
        assert!(port.up);
        assert!(host.brport[&port.index].hairpin);
        // The peer is left alone: down, no address, in the caller's namespace.
        let here = w.net.netns(HERE).state();
        let peer = here.link(&p.peer_name).unwrap();
        assert!(!peer.up);
        assert_eq!(peer.mac, p.peer_mac);
        assert!(!here.addrs.iter().any(|a| a.index == peer.index));
        assert_eq!(w.masq.lock().unwrap().len(), 1);

        // A flushed ruleset: the masquerade entries come back once, then nothing is to do.
        assert!(!ensure_masquerade_on(&deps(&w), &b, &p).unwrap());
        w.masq.lock().unwrap().clear();
        assert!(ensure_masquerade_on(&deps(&w), &b, &p).unwrap());
        assert_eq!(w.masq.lock().unwrap().len(), 1);
        assert!(!ensure_masquerade_on(&deps(&w), &b, &p).unwrap());

        del_host_port_on(&deps(&w), &b, &p).unwrap();
        assert!(w.net.state().link(&p.host_name).is_none());
        assert!(w.net.netns(HERE).state().link(&p.peer_name).is_none());
        assert!(w.masq.lock().unwrap().is_empty());
        // Twice is fine; the bridge stays until asked.
        del_host_port_on(&deps(&w), &b, &p).unwrap();
        assert!(w.net.state().link("rcbr-test").is_some());
        delete_bridge_on(&deps(&w), "rcbr-test").unwrap();
        assert!(w.net.state().link("rcbr-test").is_none());
    }

    #[test]
    fn a_failing_step_leaves_nothing() {
        let (b, p) = specs();
        let w = World {
            masq_fails: true,
            ..World::default()
        };
        let e = add_host_port_on(&deps(&w), &b, &p).unwrap_err();
        assert!(e.msg.contains("ipMasq"), "{}", e.msg);
        assert!(w.net.state().link(&p.host_name).is_none());
        assert!(w.net.netns(HERE).state().link(&p.peer_name).is_none());

        let w = World::default();
        w.net.fail_next("link_set_master", 16); // EBUSY
        assert!(add_host_port_on(&deps(&w), &b, &p).is_err());
        assert!(w.net.state().link(&p.host_name).is_none());
        assert!(w.masq.lock().unwrap().is_empty());
    }
}
