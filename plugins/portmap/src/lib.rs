//! `portmap`: a chained plugin that publishes container ports on the host:
//! `runtimeConfig.portMappings` become DNAT entries in the firewall crate's port-forwarding
//! layout ([`firewall::portmap::nft`] by default, `firewall::portmap`'s iptables half for hosts
//! that need the reference chains), with hairpin and localhost masquerade and UDP conntrack
//! cleanup.
//!
//! Differences from the reference, each a problem users hit:
//! - every mapping is validated (ports 1–65535, tcp/udp/sctp, hostIP, duplicates in one call)
//!   before the first change; the reference half-builds a chain and fails inside iptables;
//! - a host port already published by another container is refused with an error naming the
//!   owner instead of being silently shadowed (plugins#683), with either backend; the same
//!   container may publish it on several networks (Podman: `--network a,b -p 8087:80`, `network
//!   connect`), the first attachment answers and the next takes over on its DEL, as with the
//!   reference;
//! - DEL removes this attachment's mappings even without prevResult or mappings (nftables: one
//!   cheap dump; iptables keeps the reference's early return without mappings, plugins#510);
//! - UDP conntrack entries of the mapped host ports are deleted on ADD and on DEL
//!   (plugins#123, PR #1277);
//! - GC removes the mappings of attachments that are no longer valid (plugins#683, #752).

use std::net::IpAddr;

use cni::error::{codes, CniError, Context};
use cni::result::CniResult;
use cni::skel::{CmdArgs, NetnsPolicy, Plugin};
use cni::trace;
use firewall::portmap::{check_duplicates, port_forwarder, PortMap, PortmapSpec, Proto};
use firewall::Backend;
use ipnet::IpNet;
use kernel::netlink::{Family, Netlink, NetlinkOps};
use serde::Deserialize;

/// The portmap plugin.
pub struct Portmap;

/// Wire form of the plugin object (unknown keys ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireConf {
    snat: Option<bool>,
    mark_masq_bit: Option<i64>,
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsV4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6")]
    conditions_v6: Option<Vec<String>>,
    masq_all: bool,
    backend: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct PortmapConf {
    /// Network name.
    pub network: String,
    /// Chosen backend.
    pub backend: Backend,
    /// `snat` (default true).
    pub snat: bool,
    /// `markMasqBit` (default 13).
    pub mark_bit: u8,
    /// `externalSetMarkChain` (iptables only).
    pub external_set_mark_chain: Option<String>,
    /// `conditionsV4` (iptables syntax; iptables only).
    pub conditions_v4: Vec<String>,
    /// `conditionsV6`.
    pub conditions_v6: Vec<String>,
    /// `masqAll`.
    pub masq_all: bool,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_CONFIG, msg)
}

impl PortmapConf {
    /// Decodes and validates the config, choosing the backend. No side effects (the nftables
    /// probe is an empty transaction).
    pub fn load(args: &CmdArgs) -> Result<PortmapConf, CniError> {
        let w: WireConf = args.plugin_conf()?;
        let mark_bit = match w.mark_masq_bit {
            None => 13,
            Some(b) if (0..=31).contains(&b) => b as u8,
            Some(b) => {
                return Err(invalid(format!(
                    "invalid markMasqBit {b}: must be between 0 and 31"
                )))
            }
        };
        if w.mark_masq_bit.is_some() && w.external_set_mark_chain.is_some() {
            return Err(invalid(
                "cannot specify externalSetMarkChain and markMasqBit",
            ));
        }
        let backend = firewall::choose_backend(w.backend.as_deref()).context("portmap backend")?;
        let conditions_v4 = w.conditions_v4.unwrap_or_default();
        let conditions_v6 = w.conditions_v6.unwrap_or_default();
        match backend {
            Backend::Nftables => {
                if let Some(c) = &w.external_set_mark_chain {
                    return Err(invalid(format!(
                        "externalSetMarkChain {c:?} is only supported by the iptables backend"
                    )));
                }
                for (key, c) in [
                    ("conditionsV4", &conditions_v4),
                    ("conditionsV6", &conditions_v6),
                ] {
                    if !c.is_empty() {
                        return Err(invalid(format!(
                            "{key} {c:?} is not supported by the nftables backend (its DNAT maps are shared by every container); use backend \"iptables\""
                        )));
                    }
                }
            }
            Backend::Iptables => {
                for (key, c) in [
                    ("conditionsV4", &conditions_v4),
                    ("conditionsV6", &conditions_v6),
                ] {
                    if c.first()
                        .is_some_and(|t| !t.starts_with('-') && !t.starts_with('!'))
                    {
                        return Err(invalid(format!(
                            "{key} {c:?} are nftables-style conditions; the iptables backend needs iptables match arguments"
                        )));
                    }
                    if c.iter().any(|t| t.contains('\0')) {
                        return Err(invalid(format!("{key} contains NUL")));
                    }
                }
            }
        }
        Ok(PortmapConf {
            network: args.conf.name.clone(),
            backend,
            snat: w.snat.unwrap_or(true),
            mark_bit,
            external_set_mark_chain: w.external_set_mark_chain,
            conditions_v4,
            conditions_v6,
            masq_all: w.masq_all,
        })
    }
}

/// `runtimeConfig.portMappings`, every entry validated before any change.
pub fn mappings(args: &CmdArgs) -> Result<Vec<PortMap>, CniError> {
    let raw = args.port_mappings()?;
    let mut out = Vec::with_capacity(raw.len());
    for m in &raw {
        let pm = PortMap::from_raw(m.host_port, m.container_port, &m.protocol, &m.host_ip)
            .context("invalid port mapping")?;
        out.push(pm);
    }
    check_duplicates(&out).context("invalid port mapping")?;
    Ok(out)
}

/// First IPv4 and first IPv6 address of prevResult on CNI_IFNAME inside the sandbox (or with no
/// interface index), as the reference selects them.
pub fn container_addrs(prev: &CniResult, ifname: &str) -> (Option<IpNet>, Option<IpNet>) {
    let mut v4 = None;
    let mut v6 = None;
    for ip in &prev.ips {
        let ours = match ip.interface {
            None => true,
            Some(i) => prev
                .interfaces
                .get(i)
                .is_some_and(|itf| itf.name == ifname && !itf.sandbox.is_empty()),
        };
        if !ours {
            continue;
        }
        let slot = if ip.address.addr().is_ipv4() {
            &mut v4
        } else {
            &mut v6
        };
        if slot.is_none() {
            *slot = Some(ip.address);
        }
    }
    (v4, v6)
}

fn spec(conf: &PortmapConf, args: &CmdArgs, maps: Vec<PortMap>, prev: &CniResult) -> PortmapSpec {
    let (v4, v6) = container_addrs(prev, &args.ifname);
    let mut s = PortmapSpec::new(&conf.network, &args.container_id, &args.ifname);
    s.v4 = v4;
    s.v6 = v6;
    s.mappings = maps;
    s.snat = conf.snat;
    s.masq_all = conf.masq_all;
    s.mark_bit = conf.mark_bit;
    s.external_set_mark_chain = conf.external_set_mark_chain.clone();
    s.conditions_v4 = conf.conditions_v4.clone();
    s.conditions_v6 = conf.conditions_v6.clone();
    s
}

fn prev_required(args: &CmdArgs) -> Result<CniResult, CniError> {
    args.prev_result()?
        .ok_or_else(|| invalid("must be called as chained plugin"))
}

/// `route_localnet=1` on the host interface that routes to `ip`: without it the kernel drops
/// packets with source 127.0.0.1 leaving a real interface, so `127.0.0.1:hostPort` fails.
fn enable_route_localnet(ip: IpAddr) -> Result<(), CniError> {
    let ctx = format!("route_localnet for {ip}");
    let mut nl = Netlink::open().context(&ctx)?;
    let best = nl
        .routes(Family::V4)
        .context(&ctx)?
        .into_iter()
        .filter(|r| r.dst.contains(&ip) && r.oif.is_some())
        .max_by_key(|r| r.dst.prefix_len());
    let Some(index) = best.and_then(|r| r.oif) else {
        return Err(CniError::internal(format!(
            "no route to container address {ip}"
        )));
    };
    let link = nl
        .link_by_index(index)
        .context(&ctx)?
        .ok_or_else(|| CniError::internal(format!("interface {index} routing to {ip} vanished")))?;
    kernel::sysctl::write_if_different(&format!("net/ipv4/conf/{}/route_localnet", link.name), "1")
        .context(&ctx)?;
    Ok(())
}

/// Deletes UDP conntrack entries to the mapped host ports (plugins#123); failures only logged.
fn flush_udp(maps: &[PortMap]) {
    let ports: Vec<u16> = maps
        .iter()
        .filter(|m| m.proto == Proto::Udp)
        .map(|m| m.host_port)
        .collect();
    if ports.is_empty() {
        return;
    }
    if let Err(e) = kernel::conntrack::delete_flows(Proto::Udp.number(), &ports, None) {
        eprintln!("portmap: could not delete UDP conntrack entries for ports {ports:?}: {e}");
    }
}

impl Plugin for Portmap {
    /// The reference ignores CNI_ARGS here (no LoadArgs), so unknown keys are no error.
    fn reads_cni_args(&self) -> bool {
        false
    }

    /// Port forwarding is programmed on the host; CNI_NETNS is never entered.
    fn netns_policy(&self) -> NetnsPolicy {
        NetnsPolicy::NotEntered
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = PortmapConf::load(args)?;
        let mut prev = prev_required(args)?;
        prev.cni_version = args.version.as_str().to_string();
        let maps = mappings(args)?;
        if maps.is_empty() {
            return Ok(prev);
        }
        let spec = spec(&conf, args, maps, &prev);
        if spec.v4.is_none() && spec.v6.is_none() {
            return Ok(prev);
        }
        let fw = port_forwarder(conf.backend);
        trace::phase("config");
        fw.add_portmap(&spec).context("portmap")?;
        trace::phase("firewall");
        if let (true, Some(v4)) = (conf.snat, spec.v4) {
            if let Err(e) = enable_route_localnet(v4.addr()) {
                if let Err(undo) = fw.del_portmap(&conf.network, &args.container_id, &args.ifname) {
                    eprintln!("portmap: rollback failed: {undo}");
                }
                return Err(e);
            }
        }
        trace::phase("route_localnet");
        flush_udp(&spec.mappings);
        trace::phase("conntrack");
        Ok(prev)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = PortmapConf::load(args)?;
        // Bad entries must not stop a DEL: they were never published.
        let maps = mappings(args).unwrap_or_default();
        if conf.backend == Backend::Iptables && maps.is_empty() {
            return Ok(());
        }
        let outcome = port_forwarder(conf.backend)
            .del_portmap(&conf.network, &args.container_id, &args.ifname)
            .context("portmap DEL");
        flush_udp(&maps);
        outcome
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = PortmapConf::load(args)?;
        let prev = args
            .prev_result()?
            .ok_or_else(|| invalid("Required prevResult missing"))?;
        let maps = mappings(args)?;
        if maps.is_empty() {
            return Ok(());
        }
        let spec = spec(&conf, args, maps, &prev);
        port_forwarder(conf.backend)
            .check_portmap(&spec)
            .context("portmap CHECK")
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = PortmapConf::load(args)?;
        let keep: Vec<(String, String)> = args
            .valid_attachments()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        port_forwarder(conf.backend)
            .gc_portmap(&conf.network, &keep)
            .context("portmap GC")
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        PortmapConf::load(args).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::result::{Interface, IpConfig};

    #[test]
    fn addresses_come_from_the_sandbox_interface() {
        let prev = CniResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    sandbox: "/run/netns/x".into(),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(0),
                    address: "10.22.0.1/24".parse().unwrap(),
                    gateway: None,
                },
                IpConfig {
                    interface: Some(1),
                    address: "10.22.0.5/24".parse().unwrap(),
                    gateway: None,
                },
                IpConfig {
                    interface: Some(1),
                    address: "10.22.0.6/24".parse().unwrap(),
                    gateway: None,
                },
                IpConfig {
                    interface: None,
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                },
            ],
            ..Default::default()
        };
        let (v4, v6) = container_addrs(&prev, "eth0");
        assert_eq!(v4.unwrap().to_string(), "10.22.0.5/24");
        assert_eq!(v6.unwrap().to_string(), "fd00::5/64");
        assert_eq!(container_addrs(&prev, "eth1").0, None);
    }
}
