//! Netlink operations of multi-host overlay networks (flannel's VXLAN model; docs/overlay.md): a VXLAN device with learning off, permanent neighbours
//! (`<slice>.0 → VtepMAC`), permanent FDB entries of the VXLAN device (`VtepMAC → PublicIP`) and
//! `onlink` routes (`<slice> via <slice>.0 dev vxlan onlink`).
//!
//! Inherent methods of [`Netlink`] in a file of their own, so [`super::NetlinkOps`] and its fake
//! stay unchanged (only sandboxd's overlay agent uses them, always against the real kernel).
//! Message builders are plain functions so the exact requests can be unit-tested without root.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteFlags, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::msg::{Request, CREATE_FLAGS};
use super::{validate_ifname, Family, Netlink, RouteSpec};
use crate::error::{Error, Result};

/// A VXLAN device to create.
#[derive(Debug, Clone, Copy)]
pub struct VxlanSpec<'a> {
    /// Device name.
    pub name: &'a str,
    /// VXLAN network identifier (0–16777215).
    pub vni: u32,
    /// Source address of the encapsulated packets (the node's advertised underlay address).
    pub local: Ipv4Addr,
    /// Destination UDP port (flannel and the kernel's historical default: 8472).
    pub port: u16,
    /// Underlay device index the tunnel is bound to.
    pub underlay: Option<u32>,
    /// MTU (uplink MTU − 50 for IPv4 VXLAN).
    pub mtu: Option<u32>,
    /// Fixed MAC (the VtepMAC published in the lease); `None` lets the kernel pick one.
    pub mac: Option<[u8; 6]>,
}

/// A permanent FDB entry of a VXLAN device: frames for `mac` are sent to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// Device index.
    pub index: u32,
    /// Destination MAC.
    pub mac: [u8; 6],
    /// Remote tunnel endpoint.
    pub dst: IpAddr,
}

/// `RTM_NEWLINK` creating a VXLAN device (`ip link add NAME type vxlan id VNI local IP dstport
/// PORT dev UNDERLAY nolearning`).
pub fn vxlan_add_msg(spec: &VxlanSpec) -> Request {
    let mut m = netlink_packet_route::link::LinkMessage::default();
    m.attributes
        .push(LinkAttribute::IfName(spec.name.to_string()));
    if let Some(mtu) = spec.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.mac {
        m.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    let mut data = vec![
        InfoVxlan::Id(spec.vni),
        InfoVxlan::Local(spec.local),
        InfoVxlan::Port(spec.port),
        // Learning off: every remote is programmed from the leases (no flooding, no learning
        // of spoofed source MACs).
        InfoVxlan::Learning(false),
    ];
    if let Some(dev) = spec.underlay {
        data.push(InfoVxlan::Link(dev));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(data)),
    ]));
    Request {
        msg: RouteNetlinkMessage::NewLink(m),
        flags: CREATE_FLAGS,
    }
}

fn neigh_msg(
    family: AddressFamily,
    index: u32,
    dst: IpAddr,
    mac: Option<[u8; 6]>,
) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    m.attributes
        .push(NeighbourAttribute::Destination(match dst {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    if let Some(mac) = mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    m
}

fn inet_family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `RTM_NEWNEIGH` (create or replace) of a permanent neighbour (`ip neigh replace IP lladdr MAC
/// dev X nud permanent`).
pub fn neigh_replace_msg(index: u32, ip: IpAddr, mac: [u8; 6]) -> Request {
    Request {
        msg: RouteNetlinkMessage::NewNeighbour(neigh_msg(inet_family(&ip), index, ip, Some(mac))),
        flags: NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    }
}

/// `RTM_DELNEIGH` of a neighbour.
pub fn neigh_del_msg(index: u32, ip: IpAddr) -> Request {
    Request {
        msg: RouteNetlinkMessage::DelNeighbour(neigh_msg(inet_family(&ip), index, ip, None)),
        flags: NLM_F_ACK,
    }
}

fn fdb_msg(e: &FdbEntry) -> NeighbourMessage {
    let mut m = neigh_msg(AddressFamily::Bridge, e.index, e.dst, Some(e.mac));
    // NTF_SELF: the entry belongs to the VXLAN device's own table (`bridge fdb … self`).
    m.header.flags = NeighbourFlags::Own;
    m
}

/// `RTM_NEWNEIGH` (create or replace) of a permanent FDB entry (`bridge fdb replace MAC dev X dst
/// IP self permanent`).
pub fn fdb_replace_msg(e: &FdbEntry) -> Request {
    Request {
        msg: RouteNetlinkMessage::NewNeighbour(fdb_msg(e)),
        flags: NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    }
}

/// `RTM_DELNEIGH` of an FDB entry.
pub fn fdb_del_msg(e: &FdbEntry) -> Request {
    Request {
        msg: RouteNetlinkMessage::DelNeighbour(fdb_msg(e)),
        flags: NLM_F_ACK,
    }
}

/// `RTM_NEWROUTE` of `dst via gw dev oif onlink` (the gateway need not be on a connected
/// prefix: it is the remote slice's `.0`, resolved by the permanent neighbour).
pub fn route_onlink_msg(r: &RouteSpec) -> Request {
    let mut req = super::msg::route_add(r);
    if let RouteNetlinkMessage::NewRoute(m) = &mut req.msg {
        m.header.flags = RouteFlags::Onlink;
    }
    req
}

fn fdb_dump_msg() -> Request {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    Request {
        msg: RouteNetlinkMessage::GetNeighbour(m),
        flags: NLM_F_DUMP,
    }
}

/// Decode one FDB entry with a 6-byte MAC and an IP destination.
pub fn parse_fdb(m: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut dst = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                dst = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                dst = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                if let Ok(o) = <[u8; 4]>::try_from(b.as_slice()) {
                    dst = Some(IpAddr::V4(Ipv4Addr::from(o)));
                } else if let Ok(o) = <[u8; 16]>::try_from(b.as_slice()) {
                    dst = Some(IpAddr::V6(o.into()));
                }
            }
            _ => {}
        }
    }
    Some(FdbEntry {
        index: m.header.ifindex,
        mac: mac?,
        dst: dst?,
    })
}

fn ignore_absent(r: Result<()>) -> Result<()> {
    match r {
        Err(e)
            if matches!(
                e.errno(),
                Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

impl Netlink {
    /// Create a VXLAN device (`NLM_F_EXCL`: an existing link gives an error with `is_exists()`).
    pub fn vxlan_add(&mut self, spec: &VxlanSpec) -> Result<()> {
        validate_ifname(spec.name)?;
        if spec.vni > 0x00ff_ffff {
            return Err(Error::Invalid {
                what: "VXLAN id",
                reason: format!("{} (0-16777215)", spec.vni),
            });
        }
        let name = spec.name.to_string();
        self.request("vxlan_add", &move || name.clone(), vxlan_add_msg(spec))
            .map(|_| ())
    }

    /// Create or replace a permanent neighbour.
    pub fn neigh_replace(&mut self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
        self.request(
            "neigh_replace",
            &move || format!("{ip} on ifindex {index}"),
            neigh_replace_msg(index, ip, mac),
        )
        .map(|_| ())
    }

    /// Delete a neighbour; an absent one is fine.
    pub fn neigh_del(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        ignore_absent(
            self.request(
                "neigh_del",
                &move || format!("{ip} on ifindex {index}"),
                neigh_del_msg(index, ip),
            )
            .map(|_| ()),
        )
    }

    /// Create or replace a permanent FDB entry of a VXLAN device.
    pub fn fdb_replace(&mut self, e: &FdbEntry) -> Result<()> {
        let t = *e;
        self.request(
            "fdb_replace",
            &move || format!("{:02x?} dst {} on ifindex {}", t.mac, t.dst, t.index),
            fdb_replace_msg(e),
        )
        .map(|_| ())
    }

    /// Delete an FDB entry; an absent one is fine.
    pub fn fdb_del(&mut self, e: &FdbEntry) -> Result<()> {
        let t = *e;
        ignore_absent(
            self.request(
                "fdb_del",
                &move || format!("{:02x?} dst {} on ifindex {}", t.mac, t.dst, t.index),
                fdb_del_msg(e),
            )
            .map(|_| ()),
        )
    }

    /// FDB entries with a remote destination on one device.
    pub fn fdb_entries(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        let msgs = self.request("fdb_entries", &String::new, fdb_dump_msg())?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => parse_fdb(&n),
                _ => None,
            })
            .collect())
    }

    /// Add `dst via gw dev oif onlink` (`NLM_F_EXCL`).
    pub fn route_add_onlink(&mut self, dst: IpNet, gw: IpAddr, oif: u32) -> Result<()> {
        let mut r = RouteSpec::new(dst);
        r.gw = Some(gw);
        r.oif = Some(oif);
        self.request(
            "route_add_onlink",
            &move || format!("{dst} via {gw} onlink"),
            route_onlink_msg(&r),
        )
        .map(|_| ())
    }

    /// Routes of one family whose output device is `oif` (a device's programmed routes).
    pub fn routes_via(&mut self, family: Family, oif: u32) -> Result<Vec<RouteSpec>> {
        use super::NetlinkOps;
        Ok(self
            .routes(family)?
            .into_iter()
            .filter(|r| r.oif == Some(oif))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn vxlan_request_has_learning_off_and_port() {
        let r = vxlan_add_msg(&VxlanSpec {
            name: "ovx-1",
            vni: 7,
            local: "192.0.2.1".parse().unwrap(),
            port: 8472,
            underlay: Some(3),
            mtu: Some(1450),
            mac: None,
        });
        let RouteNetlinkMessage::NewLink(m) = r.msg else {
            panic!("not a NEWLINK")
        };
        let info = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        let LinkInfo::Data(InfoData::Vxlan(d)) = &info[1] else {
            panic!("no vxlan data")
        };
        assert!(d.contains(&InfoVxlan::Learning(false)));
        assert!(d.contains(&InfoVxlan::Port(8472)));
        assert!(d.contains(&InfoVxlan::Id(7)));
        assert!(d.contains(&InfoVxlan::Link(3)));
    }

    #[test]
    fn fdb_and_route_flags() {
        let e = FdbEntry {
            index: 4,
            mac: [2, 0, 0, 0, 0, 1],
            dst: "192.0.2.2".parse().unwrap(),
        };
        let RouteNetlinkMessage::NewNeighbour(n) = fdb_replace_msg(&e).msg else {
            panic!()
        };
        assert_eq!(n.header.family, AddressFamily::Bridge);
        assert_eq!(n.header.flags, NeighbourFlags::Own);
        assert_eq!(parse_fdb(&n), Some(e));
        let mut r = RouteSpec::new("10.5.1.0/24".parse().unwrap());
        r.gw = Some("10.5.1.0".parse().unwrap());
        r.oif = Some(4);
        let RouteNetlinkMessage::NewRoute(m) = route_onlink_msg(&r).msg else {
            panic!()
        };
        assert_eq!(m.header.flags, RouteFlags::Onlink);
    }
}
