//! `bridge`: a docker0-style bridge, one veth pair per attachment, delegated IPAM, gateway,
//! masquerade. Behaviour follows the reference plugin (containernetworking/plugins v1.x) with three
//! deliberate differences, each a bug users hit with the reference:
//! - any ADD failure after the first change rolls back everything this call created (veth,
//!   lease, masquerade entries) in LIFO order; the reference leaves a DOWN veth when IPAM fails;
//! - DEL with an empty or vanished CNI_NETNS still removes the masquerade entries, which the
//!   firewall finds by owner (network, container, ifname) rather than by IP (plugins#810);
//! - CHECK of an L2-only bridge (no IPAM) succeeds instead of failing on a missing IPAM type.
//!
//! `macspoofchk` lives in our own table `bridge rcni` (one fixed rule over two sets, see
//! `firewall::macspoof::nft`) instead of the reference's per-container chains in `bridge nat`;
//! like masquerade it is found by owner, so DEL without a namespace removes it too.
//!
//! The bridge itself, its gateway addresses and the host sysctls are shared by every attachment
//! of the network and are never removed, as with the reference.
//!
//! Every side effect (netlink in both namespaces, sysctls, the firewall, anti-spoofing, IPAM)
//! goes through the traits of [`seams`]: the binary runs [`Bridge`] on [`Deps::SYSTEM`], and the
//! unit tests (`src/tests.rs`) run [`BridgeOn`] on fakes that fail any step and record what the
//! rollback undid, in which order.

mod config;
pub mod hostport;
pub mod seams;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use cni::error::{codes, CniError, Context};
use cni::result::{CniResult, Interface, IpConfig, Route};
use cni::skel::{CmdArgs, Plugin};
use cni::trace;
pub use config::BridgeConf;
use firewall::macspoof::SpoofEntry;
use firewall::{Firewall, MasqRule};
use ipnet::IpNet;
use kernel::cni_error::open_netns;
use kernel::mac::{format_mac, random_veth_name};
use kernel::netlink::{Link, NetlinkOps, RouteSpec, VethSpec, IFA_F_DADFAILED, IFA_F_TENTATIVE};
use kernel::netns::NetNs;
pub use seams::Deps;
use seams::{Kernel, SysctlWrite};

/// The bridge plugin, on the real kernel, firewall and IPAM plugin ([`Deps::SYSTEM`]).
pub struct Bridge;

/// The bridge plugin on the given side effects (unit tests use fakes, see [`seams`]).
pub struct BridgeOn<'a>(pub Deps<'a>);

/// What an ADD has created so far, undone in reverse order when a later step fails.
enum Undo {
    HostVeth(u32),
    Lease(String),
    Masquerade(Box<dyn Firewall>),
    MacSpoof,
}

struct Attachment<'a> {
    args: &'a CmdArgs,
    conf: BridgeConf,
    deps: Deps<'a>,
    host: Box<dyn NetlinkOps>,
}

impl Attachment<'_> {
    fn rollback(&mut self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            let outcome = match step {
                Undo::Masquerade(fw) => fw
                    .del_masquerade(
                        &self.conf.network,
                        &self.args.container_id,
                        &self.args.ifname,
                    )
                    .map_err(|e| e.to_string()),
                Undo::MacSpoof => self
                    .deps
                    .spoof
                    .del(
                        &self.conf.network,
                        &self.args.container_id,
                        &self.args.ifname,
                    )
                    .map_err(|e| e.to_string()),
                Undo::Lease(ipam_type) => {
                    self.deps.ipam.del(&ipam_type, self.args).map_err(|e| e.msg)
                }
                Undo::HostVeth(index) => self.host.link_del(index).map_err(|e| e.to_string()),
            };
            if let Err(e) = outcome {
                eprintln!("bridge: rollback step failed: {e}");
            }
        }
    }
}

/// Create the bridge or reuse it; it must really be a bridge.
fn ensure_bridge(
    host: &mut dyn NetlinkOps,
    kernel: &dyn Kernel,
    conf: &BridgeConf,
) -> Result<Link, CniError> {
    let existing = host.link_by_name(&conf.bridge).context("lookup bridge")?;
    let link = match existing {
        Some(l) => l,
        None => {
            match host.bridge_add(&conf.bridge, conf.mtu) {
                Ok(()) => {}
                // Another ADD created it between our lookup and our request: fine.
                Err(e) if e.is_exists() => {}
                Err(e) => {
                    return Err(CniError::from(e)
                        .context(format!("failed to create bridge {:?}", conf.bridge)))
                }
            }
            host.link_by_name(&conf.bridge)
                .context("lookup bridge")?
                .ok_or_else(|| CniError::internal(format!("bridge {:?} vanished", conf.bridge)))?
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(CniError::internal(format!(
            "{:?} already exists but is not a bridge",
            conf.bridge
        )));
    }
    if conf.promisc_mode && !link.promisc {
        host.link_set_promisc(link.index, true)
            .context("set bridge promiscuous")?;
    }
    // Router advertisements on the bridge would give the host addresses in container subnets.
    let _ = kernel.sysctl_write(&format!("net/ipv6/conf/{}/accept_ra", conf.bridge), "0");
    if !link.up {
        host.link_set_up(link.index).context("set bridge up")?;
    }
    Ok(link)
}

/// The masquerade entries of this attachment's addresses, owned by (network, container, ifname).
fn masq_rules<'a>(
    conf: &BridgeConf,
    args: &CmdArgs,
    ips: impl Iterator<Item = &'a IpConfig>,
) -> Vec<MasqRule> {
    ips.map(|ip| MasqRule {
        network: conf.network.clone(),
        container_id: args.container_id.clone(),
        ifname: args.ifname.clone(),
        addr: ip.address,
    })
    .collect()
}

/// The anti-spoofing entry of this attachment: only `mac` may leave `host_veth`.
fn spoof_entry(conf: &BridgeConf, args: &CmdArgs, host_veth: String, mac: [u8; 6]) -> SpoofEntry {
    SpoofEntry {
        network: conf.network.clone(),
        container_id: args.container_id.clone(),
        ifname: args.ifname.clone(),
        host_veth,
        mac,
    }
}

/// The first usable address of a subnet (network + 1), the reference's default gateway.
fn default_gateway(net: &IpNet) -> Option<IpAddr> {
    match net.trunc() {
        IpNet::V4(n) => {
            let v = u32::from(n.network()).checked_add(1)?;
            Some(IpAddr::V4(v.into()))
        }
        IpNet::V6(n) => {
            let v = u128::from(n.network()).checked_add(1)?;
            Some(IpAddr::V6(v.into()))
        }
    }
}

fn is_default(net: &IpNet) -> bool {
    net.prefix_len() == 0
}

fn choose_firewall(deps: &Deps, conf: &BridgeConf) -> Result<Box<dyn Firewall>, CniError> {
    deps.masquerade
        .firewall(conf.ip_masq_backend.as_deref())
        .context("choose firewall backend")
}

/// Put `gw` (with the container subnet's prefix) on the bridge, honouring forceAddress.
fn ensure_bridge_addr(
    host: &mut dyn NetlinkOps,
    bridge: &Link,
    gw: IpNet,
    force: bool,
) -> Result<(), CniError> {
    let addrs = host
        .addrs(Some(bridge.index))
        .context("list bridge addresses")?;
    for a in &addrs {
        if a.addr == gw {
            return Ok(());
        }
        let conflicts = match (a.addr, gw) {
            // IPv4: a bridge has one gateway address (reference behaviour).
            (IpNet::V4(_), IpNet::V4(_)) => true,
            // IPv6: only overlapping prefixes conflict (link-local and other subnets coexist).
            (IpNet::V6(old), IpNet::V6(new)) => {
                old.trunc().contains(&new.addr()) || new.trunc().contains(&old.addr())
            }
            _ => false,
        };
        if conflicts {
            if !force {
                return Err(CniError::internal(format!(
                    "{:?} already has an IP address different from {gw}",
                    bridge.name
                )));
            }
            host.addr_del(bridge.index, a.addr)
                .context(format!("remove {} from bridge", a.addr))?;
        }
    }
    match host.addr_add(bridge.index, gw) {
        Ok(()) => Ok(()),
        Err(e) if e.is_exists() => Ok(()),
        Err(e) => Err(CniError::from(e).context(format!("add {gw} to bridge"))),
    }
}

/// The gateway side of a bridge, shared by ADD (`isGateway`) and [`hostport`]: each gateway
/// address (with its subnet's prefix) on the bridge, forwarding on for its family, and the
/// bridge MAC pinned.
fn ensure_gateway(
    host: &mut dyn NetlinkOps,
    kernel: &dyn Kernel,
    bridge: &Link,
    gateways: &[IpNet],
    force: bool,
) -> Result<(), CniError> {
    for gw in gateways {
        ensure_bridge_addr(host, bridge, *gw, force)?;
        let key = if gw.addr().is_ipv4() {
            "net/ipv4/ip_forward"
        } else {
            "net/ipv6/conf/all/forwarding"
        };
        kernel
            .sysctl_write_if_different(key, "1")
            .context(format!("enable {key}"))?;
    }
    // Pin the bridge MAC: a bridge otherwise takes the lowest MAC of its ports, and every
    // change breaks neighbours' ARP caches and conntrack (cni#285, plugins#60).
    let fresh = host.link_by_index(bridge.index).context("lookup bridge")?;
    if let Some(mac) = fresh.and_then(|l| l.mac) {
        if !kernel.bridge_mac_pinned(&bridge.name, bridge.index, &mac) {
            host.link_set_mac(bridge.index, mac)
                .context("pin bridge MAC")?;
        }
    }
    Ok(())
}

/// Sysctls of the container end, written inside the container's namespace.
fn container_sysctl_writes(ifname: &str, conf: &BridgeConf, has_v6: bool) -> Vec<SysctlWrite> {
    let w = |key: String, value, required| SysctlWrite {
        key,
        value,
        required,
    };
    // Gratuitous ARP on address changes so neighbours learn the new MAC at once.
    let mut writes = vec![w(format!("net/ipv4/conf/{ifname}/arp_notify"), "1", true)];
    if has_v6 {
        for dev in ["lo", ifname] {
            writes.push(w(format!("net/ipv6/conf/{dev}/disable_ipv6"), "0", true));
        }
        writes.push(w(
            format!("net/ipv6/conf/{ifname}/keep_addr_on_down"),
            "1",
            true,
        ));
        // DAD adds ~2 s to every ADD (plugins#680); opt in with enabledad.
        let dad = if conf.enabledad { "1" } else { "0" };
        writes.push(w(format!("net/ipv6/conf/{ifname}/accept_dad"), dad, true));
        if conf.enabledad {
            writes.push(w(
                format!("net/ipv6/conf/{ifname}/enhanced_dad"),
                "1",
                false,
            ));
        }
    } else {
        writes.push(w(format!("net/ipv6/conf/{ifname}/accept_dad"), "0", false));
    }
    writes
}

/// Wait until no IPv6 address of the link is tentative; a failed DAD is an error.
fn wait_for_dad(
    cont: &mut dyn NetlinkOps,
    kernel: &dyn Kernel,
    index: u32,
) -> Result<(), CniError> {
    for _ in 0..100 {
        let addrs = cont
            .addrs(Some(index))
            .context("list container addresses")?;
        if let Some(bad) = addrs.iter().find(|a| a.flags & IFA_F_DADFAILED != 0) {
            return Err(CniError::internal(format!(
                "IPv6 address {} failed duplicate address detection",
                bad.addr
            )));
        }
        if !addrs
            .iter()
            .any(|a| a.addr.addr().is_ipv6() && a.flags & IFA_F_TENTATIVE != 0)
        {
            return Ok(());
        }
        kernel.sleep(Duration::from_millis(50));
    }
    Err(CniError::internal(
        "IPv6 addresses still tentative after 5 s",
    ))
}

/// Wait for the host end to forward (operstate UP), with the reference's back-off (plugins#463).
fn wait_for_port(
    host: &mut dyn NetlinkOps,
    kernel: &dyn Kernel,
    index: u32,
) -> Result<(), CniError> {
    let mut state = String::from("unknown");
    for delay in [0u64, 50, 500, 1000, 1000] {
        kernel.sleep(Duration::from_millis(delay));
        match host.link_by_index(index).context("lookup host veth")? {
            Some(l) if l.oper_up => return Ok(()),
            Some(_) => state = "down".into(),
            None => state = "missing".into(),
        }
    }
    Err(CniError::internal(format!(
        "bridge port in error state: {state}"
    )))
}

fn netns_path(args: &CmdArgs) -> Result<&Path, CniError> {
    args.netns.as_deref().ok_or_else(|| {
        CniError::new(
            codes::INVALID_ENV,
            "required env variables [CNI_NETNS] missing",
        )
    })
}

impl Attachment<'_> {
    fn add(
        &mut self,
        ns: &NetNs,
        cont: &mut dyn NetlinkOps,
        undo: &mut Vec<Undo>,
    ) -> Result<CniResult, CniError> {
        let args = self.args;
        let conf = self.conf.clone();
        let deps = self.deps;
        let bridge = ensure_bridge(self.host.as_mut(), deps.kernel, &conf)?;
        trace::phase("bridge");

        // One NEWLINK: the container end is born in CNI_NETNS under its final name.
        let mut host_name = String::new();
        for attempt in 0..10 {
            let name = random_veth_name();
            let spec = VethSpec {
                host_name: &name,
                peer_name: &args.ifname,
                peer_netns: ns,
                mtu: conf.mtu,
                peer_mac: conf.mac,
            };
            match self.host.veth_add(&spec) {
                Ok(()) => {
                    host_name = name;
                    break;
                }
                Err(e) if e.is_exists() && attempt < 9 => {
                    // A random host name clashed, or the container end appeared meanwhile.
                    if cont.link_by_name(&args.ifname).context("lookup")?.is_some() {
                        return Err(CniError::internal(format!(
                            "container veth name {:?} already exists",
                            args.ifname
                        )));
                    }
                }
                Err(e) => return Err(CniError::from(e).context("failed to create veth pair")),
            }
        }
        let host_veth = self
            .host
            .link_by_name(&host_name)
            .context("lookup host veth")?
            .ok_or_else(|| CniError::internal(format!("host veth {host_name} vanished")))?;
        undo.push(Undo::HostVeth(host_veth.index));
        trace::phase("veth");

        self.host
            .link_set_master(host_veth.index, bridge.index)
            .context("attach host veth to bridge")?;
        trace::phase("enslave");
        if conf.hairpin_mode || conf.port_isolation {
            self.host
                .brport_set(
                    host_veth.index,
                    conf.hairpin_mode.then_some(true),
                    conf.port_isolation.then_some(true),
                )
                .context("set bridge port flags")?;
        }
        let _ = deps
            .kernel
            .sysctl_write(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0");
        trace::phase("host-sysctl");
        self.host
            .link_set_up(host_veth.index)
            .context("set host veth up")?;
        trace::phase("host-up");

        if conf.macspoofchk {
            // The MAC the kernel holds, i.e. after any configured MAC was applied.
            let mac = cont
                .link_by_name(&args.ifname)
                .context("lookup container veth")?
                .and_then(|l| l.mac)
                .ok_or_else(|| {
                    CniError::internal(format!("container veth {} has no MAC", args.ifname))
                })?;
            deps.spoof
                .add(&spoof_entry(&conf, args, host_name.clone(), mac))
                .context("macspoofchk")?;
            undo.push(Undo::MacSpoof);
        }

        let mut result = match &conf.ipam_type {
            Some(ipam_type) => {
                let r = deps.ipam.add(ipam_type, args)?;
                undo.push(Undo::Lease(ipam_type.clone()));
                if r.ips.is_empty() {
                    return Err(CniError::internal("IPAM plugin returned missing IP config"));
                }
                r
            }
            None => CniResult::default(),
        };
        trace::phase("ipam");
        result.cni_version = args.version.as_str().to_string();

        // Gateways per family: the IPAM's, or network+1 when we are the gateway.
        let mut gw4: Option<(IpAddr, IpNet)> = None;
        let mut gw6: Option<(IpAddr, IpNet)> = None;
        for ip in &mut result.ips {
            ip.interface = Some(2);
            if conf.is_gateway && ip.gateway.is_none() {
                ip.gateway = default_gateway(&ip.address);
            }
            if let Some(gw) = ip.gateway {
                let slot = if gw.is_ipv4() { &mut gw4 } else { &mut gw6 };
                if slot.is_none() {
                    *slot = Some((gw, ip.address));
                }
            }
        }
        if conf.is_default_gateway {
            for (gw, _) in [gw4, gw6].into_iter().flatten() {
                let has_default = result.routes.iter().any(|r| {
                    is_default(&r.dst) && r.dst.addr().is_ipv4() == gw.is_ipv4() && r.gw.is_some()
                });
                if !has_default {
                    let dst = if gw.is_ipv4() {
                        IpNet::V4(Default::default())
                    } else {
                        IpNet::V6(Default::default())
                    };
                    result.routes.push(Route::new(dst, Some(gw)));
                }
            }
        }

        let cont_link = cont
            .link_by_name(&args.ifname)
            .context("lookup container veth")?
            .ok_or_else(|| {
                CniError::internal(format!("container veth {} vanished", args.ifname))
            })?;
        if !conf.disable_container_interface {
            let has_v6 = result.ips.iter().any(|ip| ip.address.addr().is_ipv6());
            let writes = container_sysctl_writes(&args.ifname, &conf, has_v6);
            deps.kernel
                .container_sysctls(ns, &writes)
                .context("enter container netns")?
                .map_err(|e| CniError::internal(format!("container sysctl: {e}")))?;
            trace::phase("container-sysctls");
            for ip in &result.ips {
                cont.addr_add(cont_link.index, ip.address)
                    .context(format!("add {} to {}", ip.address, args.ifname))?;
            }
            trace::phase("container-addrs");
            cont.link_set_up(cont_link.index)
                .context("set container veth up")?;
            trace::phase("container-up");
            if has_v6 && conf.enabledad {
                wait_for_dad(cont, deps.kernel, cont_link.index)?;
            }
            for r in &result.routes {
                let family_gw = if r.dst.addr().is_ipv4() { gw4 } else { gw6 };
                let spec = RouteSpec {
                    dst: r.dst,
                    gw: r.gw.or(family_gw.map(|(g, _)| g)),
                    oif: Some(cont_link.index),
                    table: r.table,
                    priority: r.priority,
                    scope: r.scope,
                    mtu: None,
                };
                match cont.route_add(&spec) {
                    Ok(()) => {}
                    // The container already routes this destination, typically the default
                    // route of its first network when it joins a second one (podman network
                    // connect, Multus). The reference skips it: the first one wins. Our routes
                    // hang on our veth and go with it, so rollback and DEL never touch the
                    // other interface's route.
                    Err(e) if e.is_exists() => {}
                    Err(e) => {
                        return Err(
                            CniError::from(e).context(format!("add route {} in container", r.dst))
                        )
                    }
                }
            }
        }

        trace::phase("container-routes");
        if conf.is_gateway {
            let mut gateways = Vec::new();
            for (gw, subnet) in [gw4, gw6].into_iter().flatten() {
                gateways.push(
                    IpNet::new(gw, subnet.prefix_len())
                        .map_err(|e| CniError::internal(format!("gateway {gw}: {e}")))?,
                );
            }
            ensure_gateway(
                self.host.as_mut(),
                deps.kernel,
                &bridge,
                &gateways,
                conf.force_address,
            )?;
        }

        trace::phase("gateway");
        if conf.ip_masq && !result.ips.is_empty() {
            let fw = choose_firewall(&deps, &conf)?;
            let rules = masq_rules(&conf, args, result.ips.iter());
            fw.add_masquerade(&rules).context("ipMasq")?;
            undo.push(Undo::Masquerade(fw));
        }

        trace::phase("masquerade");
        if !conf.disable_container_interface {
            wait_for_port(self.host.as_mut(), deps.kernel, host_veth.index)?;
        }
        trace::phase("wait-port");

        // Re-read MACs: enslaving and pinning may have changed them (plugins PR #809).
        let bridge_now = self
            .host
            .link_by_index(bridge.index)
            .context("lookup bridge")?;
        let host_now = self
            .host
            .link_by_index(host_veth.index)
            .context("lookup host veth")?;
        let cont_now = cont
            .link_by_index(cont_link.index)
            .context("lookup container veth")?;
        let mac_of = |l: Option<Link>| {
            l.and_then(|l| l.mac)
                .map(|m| format_mac(&m))
                .unwrap_or_default()
        };
        result.interfaces = vec![
            Interface {
                name: conf.bridge.clone(),
                mac: mac_of(bridge_now),
                ..Default::default()
            },
            Interface {
                name: host_name,
                mac: mac_of(host_now),
                ..Default::default()
            },
            Interface {
                name: args.ifname.clone(),
                mac: mac_of(cont_now),
                sandbox: netns_path(args)?.display().to_string(),
                ..Default::default()
            },
        ];
        if let Some(dns) = &conf.dns {
            result.dns = dns.clone();
        }
        Ok(result)
    }
}

/// DEL, kernel part: delete the container end (its host peer goes with it). A namespace that is
/// already gone took the veth with it.
fn del_container_veth(kernel: &dyn Kernel, args: &CmdArgs) -> Vec<CniError> {
    let Some(path) = args.netns.as_deref() else {
        return Vec::new();
    };
    match NetNs::open(path) {
        Ok(ns) => {
            let outcome = kernel.netlink_in(&ns).and_then(|mut cont| {
                match cont.link_by_name(&args.ifname)? {
                    Some(link) => cont.link_del(link.index),
                    None => Ok(()),
                }
            });
            match outcome {
                Err(e) if !e.is_not_found() => {
                    vec![CniError::from(e).context(format!("delete {}", args.ifname))]
                }
                _ => Vec::new(),
            }
        }
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => {
            eprintln!(
                "bridge: DEL: ignoring unusable netns {}: {e}",
                path.display()
            );
            Vec::new()
        }
    }
}

/// DEL, firewall part: our entries are found by owner, so this needs neither the namespace nor
/// the IPs nor the MAC (plugins#810).
fn del_firewall_entries(deps: &Deps, conf: &BridgeConf, args: &CmdArgs) -> Vec<CniError> {
    let mut errors = Vec::new();
    if conf.macspoofchk {
        if let Err(e) = deps
            .spoof
            .del(&conf.network, &args.container_id, &args.ifname)
        {
            errors.push(CniError::from(e).context("remove macspoofchk"));
        }
    }
    if conf.ip_masq {
        let outcome = choose_firewall(deps, conf).and_then(|fw| {
            fw.del_masquerade(&conf.network, &args.container_id, &args.ifname)
                .context("remove ipMasq")
        });
        if let Err(e) = outcome {
            errors.push(e);
        }
    }
    errors
}

/// CNI_ARGS keys the bridge accepts: IP is for the IPAM delegate (Podman passes static IPs only
/// this way).
const KNOWN_ARGS: &[&str] = &["IP", "MAC"];

impl Plugin for Bridge {
    fn known_args(&self) -> &'static [&'static str] {
        KNOWN_ARGS
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        BridgeOn(Deps::SYSTEM).add(args)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        BridgeOn(Deps::SYSTEM).del(args)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        BridgeOn(Deps::SYSTEM).check(args)
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        BridgeOn(Deps::SYSTEM).gc(args)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        BridgeOn(Deps::SYSTEM).status(args)
    }
}

impl Plugin for BridgeOn<'_> {
    fn known_args(&self) -> &'static [&'static str] {
        KNOWN_ARGS
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = BridgeConf::load(args)?;
        conf.refuse_unsupported()?;
        let ns = open_netns(args.netns.as_deref())?;
        let deps = self.0;
        let mut cont = deps
            .kernel
            .netlink_in(&ns)
            .context("netlink in container netns")?;
        // The spec requires an error when the interface exists; check before creating anything.
        if cont.link_by_name(&args.ifname).context("lookup")?.is_some() {
            return Err(CniError::internal(format!(
                "container veth name {:?} already exists",
                args.ifname
            )));
        }
        let host = deps.kernel.host_netlink().context("netlink")?;
        trace::phase("netns+sockets");
        let mut attachment = Attachment {
            args,
            conf,
            deps,
            host,
        };
        let mut undo = Vec::new();
        match attachment.add(&ns, cont.as_mut(), &mut undo) {
            Ok(result) => Ok(result),
            Err(e) => {
                attachment.rollback(undo);
                Err(e)
            }
        }
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::load(args)?;
        // DEL is best effort: every step runs, the errors are reported together at the end.
        // The three steps are independent, and two of them are dominated by kernel RCU grace
        // periods (deleting a netdev; closing an nf_tables socket after deleting elements), so
        // they run concurrently: DEL then costs about one veth deletion instead of the sum.
        let deps = self.0;
        let (veth, firewall, ipam) = std::thread::scope(|s| {
            let veth = s.spawn(|| del_container_veth(deps.kernel, args));
            let firewall = s.spawn(|| del_firewall_entries(&deps, &conf, args));
            let ipam = match &conf.ipam_type {
                Some(ipam_type) => deps.ipam.del(ipam_type, args).err(),
                None => None,
            };
            let join = |h: std::thread::ScopedJoinHandle<'_, Vec<CniError>>| {
                h.join()
                    .unwrap_or_else(|_| vec![CniError::internal("DEL step panicked")])
            };
            (join(veth), join(firewall), ipam)
        });
        let mut errors = veth;
        errors.extend(ipam);
        errors.extend(firewall);
        cni::error::combine(errors)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::load(args)?;
        let prev = args
            .prev_result()?
            .ok_or_else(|| CniError::new(codes::INVALID_CONFIG, "Required prevResult missing"))?;
        // An L2-only bridge has no IPAM to ask (the reference wrongly fails here).
        let deps = self.0;
        if let Some(ipam_type) = &conf.ipam_type {
            deps.ipam.check(ipam_type, args)?;
        }
        let path = netns_path(args)?;
        let ns = open_netns(Some(path))?;
        let mut host = deps.kernel.host_netlink().context("netlink")?;
        let mut cont = deps
            .kernel
            .netlink_in(&ns)
            .context("netlink in container netns")?;

        let br_iface = prev
            .interfaces
            .iter()
            .find(|i| i.name == conf.bridge && i.sandbox.is_empty())
            .ok_or_else(|| {
                CniError::internal(format!("bridge {} not found in prevResult", conf.bridge))
            })?;
        let br = host
            .link_by_name(&conf.bridge)
            .context("lookup bridge")?
            .ok_or_else(|| CniError::internal(format!("bridge {} does not exist", conf.bridge)))?;
        if br.kind.as_deref() != Some("bridge") {
            return Err(CniError::internal(format!(
                "{} is not a bridge",
                conf.bridge
            )));
        }
        let br_mac = br.mac.map(|m| format_mac(&m)).unwrap_or_default();
        if !br_iface.mac.is_empty() && !br_iface.mac.eq_ignore_ascii_case(&br_mac) {
            return Err(CniError::internal(format!(
                "bridge {} MAC {br_mac} does not match {} from prevResult",
                conf.bridge, br_iface.mac
            )));
        }
        if br.promisc != conf.promisc_mode {
            return Err(CniError::internal(format!(
                "bridge {} promiscuous mode is {}, config says {}",
                conf.bridge, br.promisc, conf.promisc_mode
            )));
        }

        let sandbox = path.display().to_string();
        let (pos, cont_iface) = prev
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == args.ifname && i.sandbox == sandbox)
            .ok_or_else(|| {
                CniError::internal(format!("interface {} not found in prevResult", args.ifname))
            })?;
        let link = cont
            .link_by_name(&args.ifname)
            .context("lookup container veth")?
            .ok_or_else(|| {
                CniError::internal(format!("interface {} does not exist", args.ifname))
            })?;
        if link.kind.as_deref() != Some("veth") {
            return Err(CniError::internal(format!("{} is not a veth", args.ifname)));
        }
        let mac = link.mac.map(|m| format_mac(&m)).unwrap_or_default();
        if !cont_iface.mac.is_empty() && !cont_iface.mac.eq_ignore_ascii_case(&mac) {
            return Err(CniError::internal(format!(
                "interface {} MAC {mac} does not match {} from prevResult",
                args.ifname, cont_iface.mac
            )));
        }
        let peer = link
            .peer_index
            .map(|i| host.link_by_index(i))
            .transpose()
            .context("lookup host veth")?
            .flatten();
        let host_veth = match peer {
            Some(p) if p.master == Some(br.index) => p,
            _ => {
                return Err(CniError::internal(format!(
                    "the host end of {} is not attached to bridge {}",
                    args.ifname, conf.bridge
                )))
            }
        };

        if !conf.disable_container_interface {
            let addrs = cont.addrs(Some(link.index)).context("list addresses")?;
            for ip in prev.ips.iter().filter(|ip| ip.interface == Some(pos)) {
                if !addrs.iter().any(|a| a.addr == ip.address) {
                    return Err(CniError::internal(format!(
                        "Failed to match addr {} on interface {}",
                        ip.address, args.ifname
                    )));
                }
            }
            for r in &prev.routes {
                let family = if r.dst.addr().is_ipv4() {
                    kernel::netlink::Family::V4
                } else {
                    kernel::netlink::Family::V6
                };
                let routes = cont.routes(family).context("list routes")?;
                // Ours (dst and gateway match), or the same destination owned by another
                // interface: ADD skipped it then ("the first one wins").
                let found = routes.iter().any(|k| {
                    k.dst == r.dst.trunc()
                        && (r.gw.is_none() || k.gw == r.gw || k.oif != Some(link.index))
                });
                if !found {
                    let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                    return Err(CniError::internal(format!(
                        "Failed to match route {}{via} in the container",
                        r.dst
                    )));
                }
            }
        }

        if conf.ip_masq {
            let ours = prev.ips.iter().filter(|ip| ip.interface == Some(pos));
            let rules = masq_rules(&conf, args, ours);
            choose_firewall(&deps, &conf)?
                .check_masquerade(&rules)
                .context("ipMasq")?;
        }
        if conf.macspoofchk {
            let mac = link.mac.ok_or_else(|| {
                CniError::internal(format!("interface {} has no MAC", args.ifname))
            })?;
            deps.spoof
                .check(&spoof_entry(&conf, args, host_veth.name, mac))
                .context("macspoofchk")?;
        }
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::load(args)?;
        let deps = self.0;
        let valid = args.valid_attachments()?;
        let mut errors: Vec<CniError> = Vec::new();
        let keep: Vec<(String, String)> = valid
            .iter()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        if conf.macspoofchk {
            if let Err(e) = deps.spoof.gc(&conf.network, &keep) {
                errors.push(CniError::from(e).context("macspoofchk GC"));
            }
        }
        if conf.ip_masq {
            let outcome = choose_firewall(&deps, &conf)
                .and_then(|fw| fw.gc_masquerade(&conf.network, &keep).context("ipMasq GC"));
            if let Err(e) = outcome {
                errors.push(e);
            }
        }
        // GC must be forwarded to delegates (spec §GC).
        if let Some(ipam_type) = &conf.ipam_type {
            if let Err(e) = deps.ipam.gc(ipam_type, args) {
                errors.push(e);
            }
        }
        cni::error::combine(errors)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::load(args)?;
        match &conf.ipam_type {
            Some(ipam_type) => self.0.ipam.status(ipam_type, args),
            None => Ok(()),
        }
    }
}
