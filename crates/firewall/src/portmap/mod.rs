//! Port forwarding (the `portmap` plugin's firewall half): host ports
//! DNATed to a container, with hairpin and localhost masquerade.
//!
//! Backend-neutral types and the [`PortForward`] trait live here; the layouts are documented in
//! [`nft`] (default, set/map based, constant cost per call) and `iptables` (the reference
//! chain layout).
//!
//! Every mapping is validated by [`PortmapSpec::validate`] before the first change, so a bad
//! entry never leaves half a configuration behind (the reference builds a chain and then fails
//! inside iptables for port 70000 or protocol "bogus").

pub(crate) mod iptables;
pub mod nft;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::switch::Switch;
use crate::{validate_owner, Backend, Error};

/// Transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP (IPPROTO_TCP = 6)
    Tcp,
    /// UDP (17)
    Udp,
    /// SCTP (132)
    Sctp,
}

impl Proto {
    /// Parses the CNI spelling, case-insensitively (`"TCP"` from containerd works).
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }
    /// Lower-case name as iptables and nft spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
    /// IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }
    /// Inverse of [`Proto::number`].
    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMap {
    /// Port on the host (1–65535).
    pub host_port: u16,
    /// Port in the container (1–65535).
    pub container_port: u16,
    /// Transport protocol.
    pub proto: Proto,
    /// Host address to match; `None` = every local address. `0.0.0.0` / `::` mean "any address
    /// of that family" (reference behaviour) and are kept so the family filter still applies.
    pub host_ip: Option<IpAddr>,
}

impl PortMap {
    /// Validates one raw mapping (as decoded from `runtimeConfig.portMappings`). Errors name the
    /// entry so the runtime's user sees which one is wrong.
    pub fn from_raw(
        host_port: i64,
        container_port: i64,
        protocol: &str,
        host_ip: &str,
    ) -> Result<PortMap, Error> {
        let entry = || {
            format!("{{hostPort: {host_port}, containerPort: {container_port}, protocol: {protocol:?}, hostIP: {host_ip:?}}}")
        };
        let port = |what: &'static str, p: i64| -> Result<u16, Error> {
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or(Error::Invalid {
                    what,
                    value: entry(),
                    reason: "port must be between 1 and 65535",
                })
        };
        let host = port("hostPort", host_port)?;
        let cont = port("containerPort", container_port)?;
        let proto = if protocol.is_empty() {
            Proto::Tcp
        } else {
            Proto::parse(protocol).ok_or(Error::Invalid {
                what: "protocol",
                value: entry(),
                reason: "expected tcp, udp or sctp",
            })?
        };
        let host_ip = if host_ip.is_empty() {
            None
        } else {
            Some(host_ip.parse::<IpAddr>().map_err(|_| Error::Invalid {
                what: "hostIP",
                value: entry(),
                reason: "not an IP address",
            })?)
        };
        Ok(PortMap {
            host_port: host,
            container_port: cont,
            proto,
            host_ip,
        })
    }

    /// Whether this mapping applies to a container address of `v4`'s family: a hostIP of the
    /// other family is skipped (reference behaviour).
    pub fn applies_to(&self, container: IpAddr) -> bool {
        self.host_ip
            .is_none_or(|h| h.is_ipv4() == container.is_ipv4())
    }

    /// The host address to match, `None` for any (`0.0.0.0` and `::` included).
    pub fn specific_host_ip(&self) -> Option<IpAddr> {
        self.host_ip.filter(|h| !h.is_unspecified())
    }
}

impl fmt::Display for PortMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(h)) => write!(f, "[{h}]:")?,
            Some(h) => write!(f, "{h}:")?,
            None => {}
        }
        write!(
            f,
            "{}/{} -> {}",
            self.host_port, self.proto, self.container_port
        )
    }
}

/// Everything one portmap attachment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortmapSpec {
    /// CNI network name.
    pub network: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// First IPv4 address of the container interface, with its prefix (the prefix gives the
    /// subnet whose hairpin traffic is masqueraded).
    pub v4: Option<IpNet>,
    /// First IPv6 address, with prefix.
    pub v6: Option<IpNet>,
    /// The mappings, validated.
    pub mappings: Vec<PortMap>,
    /// Masquerade hairpin and localhost traffic (`snat`, default true).
    pub snat: bool,
    /// Masquerade DNATed traffic from any source (`masqAll`).
    pub masq_all: bool,
    /// Bit of the packet mark used by the iptables layout (`markMasqBit`, 0–31, default 13).
    pub mark_bit: u8,
    /// iptables only: an existing chain that sets the masquerade mark.
    pub external_set_mark_chain: Option<String>,
    /// Extra match tokens for the IPv4 entry rules (iptables syntax).
    pub conditions_v4: Vec<String>,
    /// Extra match tokens for the IPv6 entry rules (iptables syntax).
    pub conditions_v6: Vec<String>,
}

impl PortmapSpec {
    /// A spec with the reference defaults.
    pub fn new(network: &str, container_id: &str, ifname: &str) -> PortmapSpec {
        PortmapSpec {
            network: network.to_string(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            v4: None,
            v6: None,
            mappings: Vec::new(),
            snat: true,
            masq_all: false,
            mark_bit: 13,
            external_set_mark_chain: None,
            conditions_v4: Vec::new(),
            conditions_v6: Vec::new(),
        }
    }

    /// Container addresses present, v4 first.
    pub fn addrs(&self) -> Vec<IpNet> {
        self.v4.into_iter().chain(self.v6).collect()
    }

    /// Checks everything a backend relies on, before any side effect: owner strings, address
    /// families, the mark bit, and that no two mappings of this call claim the same host
    /// port/protocol/address (the second would silently shadow the first).
    pub fn validate(&self) -> Result<(), Error> {
        validate_owner(&self.network, &self.container_id, &self.ifname)?;
        if self.v4.is_some_and(|a| !a.addr().is_ipv4())
            || self.v6.is_some_and(|a| a.addr().is_ipv4())
        {
            return Err(Error::Invalid {
                what: "container address",
                value: format!("{:?} / {:?}", self.v4, self.v6),
                reason: "address family does not match its slot",
            });
        }
        if self.mark_bit > 31 {
            return Err(Error::Invalid {
                what: "markMasqBit",
                value: self.mark_bit.to_string(),
                reason: "must be between 0 and 31",
            });
        }
        check_duplicates(&self.mappings)
    }
}

/// Two mappings of one call on the same (host port, protocol, host address) are an error.
/// An unspecified host address (`0.0.0.0`, `::`) counts as "any" of its family.
pub fn check_duplicates(mappings: &[PortMap]) -> Result<(), Error> {
    let mut seen = BTreeSet::new();
    for m in mappings {
        if !seen.insert((m.host_port, m.proto, m.specific_host_ip())) {
            return Err(Error::Invalid {
                what: "portMappings entry",
                value: m.to_string(),
                reason: "duplicate host port: another mapping of this call already uses the same hostPort, protocol and hostIP",
            });
        }
    }
    Ok(())
}

/// Port forwarding operations of a backend. Each call takes the firewall flock; the nftables
/// backend applies each call as one transaction.
pub trait PortForward {
    /// Publishes every mapping of `spec` for each container address. A host port already
    /// published by ANOTHER container is an error naming that owner (nothing is written): the
    /// reference silently shadows one of them. One published by another attachment of the SAME
    /// container (another network or ifname; Podman passes a container's ports to every network
    /// it joins) is accepted: the first attachment keeps answering, and when it is deleted this
    /// one takes over, as with the reference.
    fn add_portmap(&self, spec: &PortmapSpec) -> Result<(), Error>;
    /// Removes everything this attachment published, without needing its addresses or
    /// mappings; a host port it was answering for passes to another attachment of the same
    /// container that published it too. Nothing there => Ok.
    fn del_portmap(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error>;
    /// Err naming the first missing or different piece.
    fn check_portmap(&self, spec: &PortmapSpec) -> Result<(), Error>;
    /// Removes every mapping of `network` not owned by one of `keep` = (container id, ifname).
    fn gc_portmap(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error>;
}

fn backend_impl(backend: Backend) -> Box<dyn PortForward> {
    match backend {
        Backend::Nftables => Box::new(nft::NftPortForward::new()),
        Backend::Iptables => Box::new(iptables::IptablesPortForward::new()),
    }
}

/// The port-forwarding implementation for `backend`; DEL and GC also clean what the other
/// backend holds for the owner (see `crate::switch`).
pub fn port_forwarder(backend: Backend) -> Box<dyn PortForward> {
    Box::new(Switched {
        primary: backend_impl(backend),
        other: backend_impl(backend.other()),
        switch: Switch::new(backend, "portmap"),
    })
}

struct Switched {
    primary: Box<dyn PortForward>,
    other: Box<dyn PortForward>,
    switch: Switch,
}

impl PortForward for Switched {
    fn add_portmap(&self, spec: &PortmapSpec) -> Result<(), Error> {
        self.primary.add_portmap(spec)?;
        self.switch
            .added(&spec.network, &spec.container_id, &spec.ifname)
    }

    fn del_portmap(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
        self.switch.del(
            network,
            container_id,
            ifname,
            || self.primary.del_portmap(network, container_id, ifname),
            || self.other.del_portmap(network, container_id, ifname),
        )
    }

    fn check_portmap(&self, spec: &PortmapSpec) -> Result<(), Error> {
        self.primary.check_portmap(spec)
    }

    fn gc_portmap(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        self.switch.gc(
            network,
            keep,
            || self.primary.gc_portmap(network, keep),
            || self.other.gc_portmap(network, keep),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_mappings_are_validated() {
        let m = PortMap::from_raw(8080, 80, "TCP", "").unwrap();
        assert_eq!(m.proto, Proto::Tcp);
        assert_eq!(m.host_ip, None);
        assert_eq!(PortMap::from_raw(53, 53, "", "").unwrap().proto, Proto::Tcp);
        for (h, c, p, ip) in [
            (0, 80, "tcp", ""),
            (70000, 80, "tcp", ""),
            (-1, 80, "tcp", ""),
            (80, 0, "tcp", ""),
            (80, 65536, "tcp", ""),
            (80, 80, "bogus", ""),
            (80, 80, "tcp", "not-an-ip"),
        ] {
            let e = PortMap::from_raw(h, c, p, ip).unwrap_err().to_string();
            assert!(e.contains(&format!("hostPort: {h}")), "{e}");
        }
        let v6 = PortMap::from_raw(80, 80, "udp", "fd00::1").unwrap();
        assert!(!v6.applies_to("10.0.0.1".parse().unwrap()));
        assert!(v6.applies_to("fd00::2".parse().unwrap()));
        let any4 = PortMap::from_raw(80, 80, "udp", "0.0.0.0").unwrap();
        assert_eq!(any4.specific_host_ip(), None);
        assert!(!any4.applies_to("fd00::2".parse().unwrap()));
    }

    #[test]
    fn duplicates_are_rejected() {
        let a = PortMap::from_raw(8080, 80, "tcp", "").unwrap();
        let b = PortMap::from_raw(8080, 81, "tcp", "").unwrap();
        let c = PortMap::from_raw(8080, 81, "udp", "").unwrap();
        let d = PortMap::from_raw(8080, 81, "tcp", "127.0.0.1").unwrap();
        assert!(check_duplicates(&[a, c, d]).is_ok());
        let e = check_duplicates(&[a, c, b]).unwrap_err().to_string();
        assert!(e.contains("8080/tcp -> 81"), "{e}");
    }

    #[test]
    fn spec_validation() {
        let mut s = PortmapSpec::new("n", "c", "eth0");
        s.v4 = Some("10.0.0.2/24".parse().unwrap());
        assert!(s.validate().is_ok());
        s.mark_bit = 32;
        assert!(s.validate().is_err());
        s.mark_bit = 13;
        s.v6 = Some("10.0.0.3/24".parse().unwrap());
        assert!(s.validate().is_err());
    }
}
