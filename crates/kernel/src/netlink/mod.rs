//! Synchronous rtnetlink: plain data types, the object-safe [`NetlinkOps`] trait plugins are
//! written against, the real socket client [`Netlink`] and the recording fake [`FakeNetlink`].
//!
//! Why synchronous and not the async `rtnetlink` crate: a CNI plugin makes a handful of
//! requests and exits; netavark measured a blocking socket over netlink-packet-route as faster
//! and more than 1 MB smaller.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::netns::NetNs;

mod fake;
pub mod msg;
pub mod overlay;
mod socket;

pub use fake::{BrportFlags, Call, Event, FakeNamespace, FakeNetlink, HOST_NS};
pub use socket::Netlink;

/// A network interface, as read from `RTM_NEWLINK`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name (`IFLA_IFNAME`).
    pub name: String,
    /// `IFLA_INFO_KIND`: "bridge", "veth", ...; `None` for devices without rtnl_link_ops (lo, physical NICs).
    pub kind: Option<String>,
    /// Hardware address, when it is 6 bytes long.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operational state is UP (`IFLA_OPERSTATE`).
    pub oper_up: bool,
    /// Index of the master device (`IFLA_MASTER`), e.g. the bridge of a port.
    pub master: Option<u32>,
    /// `IFF_PROMISC` set.
    pub promisc: bool,
    /// For a veth: the peer's index (`IFLA_LINK`), which may live in another namespace
    /// (then `link_netnsid` is set).
    pub peer_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the namespace id of the peer/lower device, if in another namespace.
    pub link_netnsid: Option<i32>,
}

/// Check an interface name the way the kernel's `dev_valid_name()` does (1–15 bytes, not `.`
/// or `..`, no `/`, `:` or whitespace), so callers get a clear error before any side effect.
pub fn validate_ifname(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(Error::Invalid {
            what: "interface name",
            reason: format!("{name:?} (1-15 bytes, no '/', ':' or whitespace, not '.' or '..')"),
        });
    }
    Ok(())
}

/// An interface address, as read from `RTM_NEWADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// Interface index.
    pub index: u32,
    /// Address with its prefix length.
    pub addr: IpNet,
    /// Scope (`RT_SCOPE_*`: 0 universe, 200 site, 253 link, 254 host).
    pub scope: u8,
    /// `IFA_F_*` flags (from `IFA_FLAGS` when present), e.g. [`IFA_F_TENTATIVE`], [`IFA_F_DADFAILED`].
    pub flags: u32,
}

/// `IFA_F_DADFAILED`: duplicate address detection failed.
pub const IFA_F_DADFAILED: u32 = 0x08;
/// `IFA_F_TENTATIVE`: DAD still running.
pub const IFA_F_TENTATIVE: u32 = 0x40;
/// `IFA_F_PERMANENT`: statically configured.
pub const IFA_F_PERMANENT: u32 = 0x80;

/// `RT_TABLE_MAIN`.
pub const RT_TABLE_MAIN: u32 = 254;
/// `RT_TABLE_LOCAL`.
pub const RT_TABLE_LOCAL: u32 = 255;
/// `RT_SCOPE_UNIVERSE`.
pub const RT_SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`.
pub const RT_SCOPE_LINK: u8 = 253;
/// `RT_SCOPE_HOST`.
pub const RT_SCOPE_HOST: u8 = 254;

/// A unicast route, both what to add/delete and what a dump returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix (`0.0.0.0/0` / `::/0` for a default route).
    pub dst: IpNet,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Routing table; `None` means main when adding.
    pub table: Option<u32>,
    /// Metric (`RTA_PRIORITY`).
    pub priority: Option<u32>,
    /// Scope; `None` when adding means link for an IPv4 route without gateway, else universe.
    pub scope: Option<u8>,
    /// Route MTU metric (`RTAX_MTU`).
    pub mtu: Option<u32>,
}

impl RouteSpec {
    /// A route to `dst` with everything else unset.
    pub fn new(dst: IpNet) -> Self {
        RouteSpec {
            dst,
            gw: None,
            oif: None,
            table: None,
            priority: None,
            scope: None,
            mtu: None,
        }
    }
}

/// A neighbour (ARP / NDP) table entry, as read from `RTM_NEWNEIGH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub index: u32,
    /// Neighbour address.
    pub ip: IpAddr,
    /// Link-layer address, when it is 6 bytes long (absent while INCOMPLETE/FAILED).
    pub mac: Option<[u8; 6]>,
    /// `NUD_*` state bits.
    pub state: u16,
}

impl Neighbour {
    /// The state as `ip neigh` prints it (REACHABLE, STALE, ...).
    pub fn state_name(&self) -> &'static str {
        match self.state {
            0x01 => "INCOMPLETE",
            0x02 => "REACHABLE",
            0x04 => "STALE",
            0x08 => "DELAY",
            0x10 => "PROBE",
            0x20 => "FAILED",
            0x40 => "NOARP",
            0x80 => "PERMANENT",
            0x00 => "NONE",
            _ => "OTHER",
        }
    }
}

/// One VLAN entry of a bridge port (or of the bridge device itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlan {
    /// VLAN id (1–4094).
    pub vid: u16,
    /// Ingress untagged traffic is assigned to this VLAN (`BRIDGE_VLAN_INFO_PVID`).
    pub pvid: bool,
    /// Egress frames leave untagged (`BRIDGE_VLAN_INFO_UNTAGGED`).
    pub untagged: bool,
}

/// Address family selector for dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A veth pair to create with one request: `host_name` in the socket's own
/// namespace, `peer_name` created directly inside `peer_netns` under its final name, so there is
/// no rename step and no window where the peer exists under a temporary name.
#[derive(Debug, Clone, Copy)]
pub struct VethSpec<'a> {
    /// Name of the end that stays in the socket's namespace.
    pub host_name: &'a str,
    /// Name of the other end, inside `peer_netns`.
    pub peer_name: &'a str,
    /// Namespace for the peer end.
    pub peer_netns: &'a NetNs,
    /// MTU for both ends.
    pub mtu: Option<u32>,
    /// MAC for the peer end; `None` lets the kernel pick a random one.
    pub peer_mac: Option<[u8; 6]>,
}

/// Every rtnetlink operation the plugins need; object-safe so logic can take
/// `&mut dyn NetlinkOps` and be tested with [`FakeNetlink`]. Error op names equal the method names.
pub trait NetlinkOps {
    /// Link by name; `Ok(None)` when absent.
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>>;
    /// Link by index; `Ok(None)` when absent.
    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>>;
    /// All links.
    fn links(&mut self) -> Result<Vec<Link>>;
    /// Create a bridge (`NLM_F_EXCL`: an existing link gives an error with `is_exists()`).
    /// Names are checked with [`validate_ifname`] first, as are both veth names.
    fn bridge_add(&mut self, name: &str, mtu: Option<u32>) -> Result<()>;
    /// Create a veth pair in one request, see [`VethSpec`].
    fn veth_add(&mut self, spec: &VethSpec) -> Result<()>;
    /// Set `IFF_UP`.
    fn link_set_up(&mut self, index: u32) -> Result<()>;
    /// Clear `IFF_UP`.
    fn link_set_down(&mut self, index: u32) -> Result<()>;
    /// Enslave to `master` (0 releases the link from its master).
    fn link_set_master(&mut self, index: u32, master: u32) -> Result<()>;
    /// Set the MTU.
    fn link_set_mtu(&mut self, index: u32, mtu: u32) -> Result<()>;
    /// Set the hardware address.
    fn link_set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()>;
    /// Set or clear `IFF_PROMISC`.
    fn link_set_promisc(&mut self, index: u32, on: bool) -> Result<()>;
    /// Bridge port flags of a link enslaved to a bridge: hairpin mode and port isolation.
    fn brport_set(
        &mut self,
        index: u32,
        hairpin: Option<bool>,
        isolated: Option<bool>,
    ) -> Result<()>;
    /// Delete a link (deleting one veth end deletes the other).
    fn link_del(&mut self, index: u32) -> Result<()>;
    /// Add an address (`NLM_F_EXCL`).
    fn addr_add(&mut self, index: u32, addr: IpNet) -> Result<()>;
    /// Delete an address.
    fn addr_del(&mut self, index: u32, addr: IpNet) -> Result<()>;
    /// Addresses of one link, or of all links.
    fn addrs(&mut self, index: Option<u32>) -> Result<Vec<Addr>>;
    /// Add a route (`NLM_F_EXCL`).
    fn route_add(&mut self, r: &RouteSpec) -> Result<()>;
    /// Delete a route; unset fields match anything.
    fn route_del(&mut self, r: &RouteSpec) -> Result<()>;
    /// Unicast routes of one family in every table except local.
    fn routes(&mut self, family: Family) -> Result<Vec<RouteSpec>>;
    /// Turn VLAN filtering of a bridge on or off (the bridge plugin's `vlan`). Sent as NEWLINK:
    /// the kernel ignores bridge options in SETLINK (found by netavark).
    fn bridge_set_vlan_filtering(&mut self, bridge: u32, on: bool) -> Result<()>;
    /// Add (or update the flags of) a VLAN on a bridge port.
    fn bridge_vlan_add(&mut self, index: u32, vlan: BridgeVlan) -> Result<()>;
    /// Remove a VLAN from a bridge port.
    fn bridge_vlan_del(&mut self, index: u32, vid: u16) -> Result<()>;
    /// VLANs of a bridge port (empty when VLAN filtering is off or the link is not a port).
    fn bridge_vlans(&mut self, index: u32) -> Result<Vec<BridgeVlan>>;
    /// Neighbour (ARP/NDP) entries of one family on every link, for inspection tools.
    fn neighbours(&mut self, family: Family) -> Result<Vec<Neighbour>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        for ok in [
            "eth0",
            "cni0",
            "veth0123abcd",
            "a",
            "br-0123456789ab",
            "eth0.100",
        ] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "name-longer-than-15",
            "tab\t",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
