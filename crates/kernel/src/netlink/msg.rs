//! Pure message building and parsing (no socket), so the exact requests can be unit-tested
//! without root. Builders return the rtnetlink payload plus the `NLM_F_*` flags to send with it
//! (`NLM_F_REQUEST` is always added by the socket).

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort, InfoData,
    InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags,
    LinkInfo, LinkMessage, State,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{
    Addr, BridgeVlan, Family, Link, Neighbour, RouteSpec, VethSpec, RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE, RT_TABLE_MAIN,
};

/// Flags for a change that creates a new object and must not touch an existing one.
pub const CREATE_FLAGS: u16 = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

/// A request ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The rtnetlink message.
    pub msg: RouteNetlinkMessage,
    /// `NLM_F_*` flags besides `NLM_F_REQUEST`.
    pub flags: u16,
}

impl Request {
    fn new(msg: RouteNetlinkMessage, flags: u16) -> Self {
        Request { msg, flags }
    }
    /// Whether the request asks for a dump (multipart reply ended by `NLMSG_DONE`).
    pub fn is_dump(&self) -> bool {
        self.flags & NLM_F_DUMP == NLM_F_DUMP
    }
    /// Whether the request asks for an ACK.
    pub fn wants_ack(&self) -> bool {
        self.flags & NLM_F_ACK != 0
    }
}

fn family_of(net: &IpNet) -> AddressFamily {
    match net {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

fn family(f: Family) -> AddressFamily {
    match f {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// `RTM_GETLINK` for one name.
pub fn get_link_by_name(name: &str) -> Request {
    let mut m = link_msg(0);
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    Request::new(RouteNetlinkMessage::GetLink(m), 0)
}

/// `RTM_GETLINK` for one index.
pub fn get_link_by_index(index: u32) -> Request {
    Request::new(RouteNetlinkMessage::GetLink(link_msg(index)), 0)
}

/// `RTM_GETLINK` dump.
pub fn dump_links() -> Request {
    Request::new(RouteNetlinkMessage::GetLink(link_msg(0)), NLM_F_DUMP)
}

/// `RTM_NEWLINK` creating a bridge.
pub fn bridge_add(name: &str, mtu: Option<u32>) -> Request {
    let mut m = link_msg(0);
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Bridge,
        )]));
    Request::new(RouteNetlinkMessage::NewLink(m), CREATE_FLAGS)
}

/// One `RTM_NEWLINK` creating both veth ends; the peer carries `IFLA_NET_NS_FD` and its final
/// name. The fd is only read by the kernel while the request is processed, and
/// `spec` borrows the open namespace for at least that long.
pub fn veth_add(spec: &VethSpec) -> Request {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(spec.peer_name.to_string()));
    if let Some(mtu) = spec.mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    peer.attributes
        .push(LinkAttribute::NetNsFd(spec.peer_netns.fd().as_raw_fd()));

    let mut m = link_msg(0);
    m.attributes
        .push(LinkAttribute::IfName(spec.host_name.to_string()));
    if let Some(mtu) = spec.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    Request::new(RouteNetlinkMessage::NewLink(m), CREATE_FLAGS)
}

/// `RTM_SETLINK` changing one `IFF_*` flag.
pub fn link_set_flag(index: u32, flag: LinkFlags, on: bool) -> Request {
    let mut m = link_msg(index);
    m.header.change_mask = flag;
    if on {
        m.header.flags = flag;
    }
    Request::new(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
}

/// `RTM_SETLINK` with one attribute.
pub fn link_set_attr(index: u32, attr: LinkAttribute) -> Request {
    let mut m = link_msg(index);
    m.attributes.push(attr);
    Request::new(RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
}

/// Bridge port options through `IFLA_INFO_SLAVE_DATA` (what `ip link set X type bridge_slave
/// hairpin on isolated on` sends): `RTM_NEWLINK` on the existing port, no create flags.
pub fn brport_set(index: u32, hairpin: Option<bool>, isolated: Option<bool>) -> Request {
    let mut opts = Vec::new();
    if let Some(h) = hairpin {
        opts.push(InfoBridgePort::HairpinMode(h));
    }
    if let Some(i) = isolated {
        opts.push(InfoBridgePort::Isolated(i));
    }
    let mut m = link_msg(index);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(opts)),
    ]));
    Request::new(RouteNetlinkMessage::NewLink(m), NLM_F_ACK)
}

/// `RTM_NEWLINK` on an existing bridge setting `IFLA_BR_VLAN_FILTERING` (NEWLINK, not SETLINK,
/// since bridge options are only applied through changelink).
pub fn bridge_set_vlan_filtering(bridge: u32, on: bool) -> Request {
    let mut m = link_msg(bridge);
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(on)])),
    ]));
    Request::new(RouteNetlinkMessage::NewLink(m), NLM_F_ACK)
}

fn bridge_vlan_msg(index: u32, vid: u16, flags: BridgeVlanInfoFlags) -> LinkMessage {
    let mut m = link_msg(index);
    m.header.interface_family = AddressFamily::Bridge;
    m.attributes
        .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
            BridgeVlanInfo { flags, vid },
        )]));
    m
}

/// `RTM_SETLINK` (`AF_BRIDGE`) adding a VLAN to a port, like `bridge vlan add`.
pub fn bridge_vlan_add(index: u32, v: BridgeVlan) -> Request {
    let mut flags = BridgeVlanInfoFlags::empty();
    if v.pvid {
        flags |= BridgeVlanInfoFlags::Pvid;
    }
    if v.untagged {
        flags |= BridgeVlanInfoFlags::Untagged;
    }
    Request::new(
        RouteNetlinkMessage::SetLink(bridge_vlan_msg(index, v.vid, flags)),
        NLM_F_ACK,
    )
}

/// `RTM_DELLINK` (`AF_BRIDGE`) removing a VLAN from a port, like `bridge vlan del`.
pub fn bridge_vlan_del(index: u32, vid: u16) -> Request {
    Request::new(
        RouteNetlinkMessage::DelLink(bridge_vlan_msg(index, vid, BridgeVlanInfoFlags::empty())),
        NLM_F_ACK,
    )
}

/// `RTM_GETLINK` dump (`AF_BRIDGE`) with `RTEXT_FILTER_BRVLAN`. Strict checking forbids an
/// index in a bridge dump header, so callers filter the answer themselves.
pub fn dump_bridge_vlans() -> Request {
    let mut m = link_msg(0);
    m.header.interface_family = AddressFamily::Bridge;
    m.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
    Request::new(RouteNetlinkMessage::GetLink(m), NLM_F_DUMP)
}

/// VLAN entries of one `AF_BRIDGE` link message.
pub fn parse_bridge_vlans(m: &LinkMessage) -> Vec<BridgeVlan> {
    let mut out = Vec::new();
    for a in &m.attributes {
        if let LinkAttribute::AfSpecBridge(specs) = a {
            for s in specs {
                if let AfSpecBridge::VlanInfo(v) = s {
                    out.push(BridgeVlan {
                        vid: v.vid,
                        pvid: v.flags.contains(BridgeVlanInfoFlags::Pvid),
                        untagged: v.flags.contains(BridgeVlanInfoFlags::Untagged),
                    });
                }
            }
        }
    }
    out
}

/// `RTM_DELLINK`.
pub fn link_del(index: u32) -> Request {
    Request::new(RouteNetlinkMessage::DelLink(link_msg(index)), NLM_F_ACK)
}

fn addr_msg(index: u32, addr: IpNet) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family_of(&addr);
    m.header.prefix_len = addr.prefix_len();
    m.header.index = index;
    m.header.scope = AddressScope::Universe;
    match addr {
        IpNet::V4(v4) => {
            m.attributes
                .push(AddressAttribute::Local(IpAddr::V4(v4.addr())));
            m.attributes
                .push(AddressAttribute::Address(IpAddr::V4(v4.addr())));
        }
        IpNet::V6(v6) => {
            m.attributes
                .push(AddressAttribute::Address(IpAddr::V6(v6.addr())));
        }
    }
    m
}

/// `RTM_NEWADDR`. IPv4 addresses get the subnet broadcast, as the reference plugins' netlink
/// library sets it (`ip addr` shows `brd`), except for /31 and /32.
pub fn addr_add(index: u32, addr: IpNet) -> Request {
    let mut m = addr_msg(index, addr);
    if let IpNet::V4(v4) = addr {
        if v4.prefix_len() < 31 {
            m.attributes
                .push(AddressAttribute::Broadcast(v4.broadcast()));
        }
    }
    Request::new(RouteNetlinkMessage::NewAddress(m), CREATE_FLAGS)
}

/// `RTM_DELADDR`.
pub fn addr_del(index: u32, addr: IpNet) -> Request {
    Request::new(
        RouteNetlinkMessage::DelAddress(addr_msg(index, addr)),
        NLM_F_ACK,
    )
}

/// `RTM_GETADDR` dump; with strict checking the kernel filters by index itself.
pub fn dump_addrs(index: Option<u32>, family: AddressFamily) -> Request {
    let mut m = AddressMessage::default();
    m.header.index = index.unwrap_or(0);
    m.header.family = family;
    Request::new(RouteNetlinkMessage::GetAddress(m), NLM_F_DUMP)
}

fn route_msg(r: &RouteSpec, deleting: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(&r.dst);
    m.header.destination_prefix_length = r.dst.prefix_len();
    let table = r.table.unwrap_or(if deleting { 0 } else { RT_TABLE_MAIN });
    // The header field is 8 bits; larger ids only fit in RTA_TABLE.
    m.header.table = if table < 256 {
        table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    if table >= 256 {
        m.attributes.push(RouteAttribute::Table(table));
    }
    if deleting {
        // Unset type/protocol match any route; RT_SCOPE_NOWHERE matches any scope.
        m.header.scope = RouteScope::from(r.scope.unwrap_or(255));
    } else {
        m.header.protocol = RouteProtocol::Boot;
        m.header.kind = RouteType::Unicast;
        let scope = r.scope.unwrap_or(match (&r.dst, &r.gw) {
            (IpNet::V4(_), None) => RT_SCOPE_LINK,
            _ => RT_SCOPE_UNIVERSE,
        });
        m.header.scope = RouteScope::from(scope);
    }
    if r.dst.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.dst.network(),
            )));
    }
    if let Some(gw) = r.gw {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(oif) = r.oif {
        m.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(p) = r.priority {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    if let Some(mtu) = r.mtu {
        m.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    m
}

/// `RTM_NEWROUTE`.
pub fn route_add(r: &RouteSpec) -> Request {
    Request::new(
        RouteNetlinkMessage::NewRoute(route_msg(r, false)),
        CREATE_FLAGS,
    )
}

/// `RTM_DELROUTE`.
pub fn route_del(r: &RouteSpec) -> Request {
    Request::new(RouteNetlinkMessage::DelRoute(route_msg(r, true)), NLM_F_ACK)
}

/// `RTM_GETROUTE` dump of one family.
pub fn dump_routes(f: Family) -> Request {
    let mut m = RouteMessage::default();
    m.header.address_family = family(f);
    Request::new(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)
}

/// `RTM_GETNEIGH` dump of one family.
pub fn dump_neighbours(f: Family) -> Request {
    let mut m = NeighbourMessage::default();
    m.header.family = family(f);
    Request::new(RouteNetlinkMessage::GetNeighbour(m), NLM_F_DUMP)
}

/// Decode a neighbour; `None` without an IPv4/IPv6 destination.
pub fn parse_neighbour(m: &NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        index: m.header.ifindex,
        ip: ip?,
        mac,
        state: u16::from(m.header.state),
    })
}

/// Decode a link.
pub fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        promisc: m.header.flags.contains(LinkFlags::Promisc),
        ..Link::default()
    };
    let mut iflink = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(b) => {
                if let Ok(mac) = <[u8; 6]>::try_from(b.as_slice()) {
                    l.mac = Some(mac);
                }
            }
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::OperState(s) => l.oper_up = *s == State::Up,
            LinkAttribute::Controller(v) => l.master = Some(*v),
            LinkAttribute::Link(v) => iflink = Some(*v),
            LinkAttribute::LinkNetNsId(v) => l.link_netnsid = Some(*v),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    if l.kind.as_deref() == Some("veth") {
        l.peer_index = iflink;
    }
    l
}

/// Link settings outside [`Link`] that the `tuning` plugin backs up and restores:
/// (`IFF_ALLMULTI` set, `IFLA_TXQLEN`). Kept apart so `Link` literals elsewhere stay valid.
pub fn parse_link_allmulti_txqlen(m: &LinkMessage) -> (bool, u32) {
    let allmulti = m.header.flags.contains(LinkFlags::Allmulti);
    let txqlen = m
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::TxQueueLen(q) => Some(*q),
            _ => None,
        })
        .unwrap_or(0);
    (allmulti, txqlen)
}

/// Decode an address; `None` for families other than IPv4/IPv6 or a missing address.
pub fn parse_addr(m: &AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    let mut flags = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = Some(f.bits()),
            _ => {}
        }
    }
    // For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
    // point-to-point links); IPv6 only sends IFA_ADDRESS unless there is a peer.
    let ip = match m.header.family {
        AddressFamily::Inet => local.or(address)?,
        AddressFamily::Inet6 => local.or(address)?,
        _ => return None,
    };
    let addr = IpNet::new(ip, m.header.prefix_len).ok()?;
    Some(Addr {
        index: m.header.index,
        addr,
        scope: u8::from(m.header.scope),
        flags: flags.unwrap_or(u32::from(m.header.flags.bits())),
    })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Decode a route; `None` for non-unicast routes (local, broadcast, multicast...) and for
/// families other than IPv4/IPv6.
pub fn parse_route(m: &RouteMessage) -> Option<RouteSpec> {
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let unspecified: IpAddr = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut r = RouteSpec::new(IpNet::new(unspecified, 0).ok()?);
    let mut dst = unspecified;
    let mut table = u32::from(m.header.table);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip_of(d)?,
            RouteAttribute::Gateway(g) => r.gw = ip_of(g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Priority(p) => r.priority = Some(*p),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Metrics(ms) => {
                for metric in ms {
                    if let RouteMetric::Mtu(v) = metric {
                        r.mtu = Some(*v);
                    }
                }
            }
            _ => {}
        }
    }
    r.dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    r.table = Some(table);
    r.scope = Some(u8::from(m.header.scope));
    Some(r)
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::address::AddressFlags;

    use super::*;
    use crate::netns::NetNs;

    #[test]
    fn parse_allmulti_txqlen() {
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Up | LinkFlags::Allmulti;
        m.attributes = vec![LinkAttribute::TxQueueLen(321)];
        assert_eq!(parse_link_allmulti_txqlen(&m), (true, 321));
        assert_eq!(
            parse_link_allmulti_txqlen(&LinkMessage::default()),
            (false, 0)
        );
    }

    /// Serialize as the socket does and parse back: what the kernel would receive.
    fn roundtrip(req: &Request) -> RouteNetlinkMessage {
        let mut nl = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(req.msg.clone()),
        );
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf)
            .unwrap()
            .payload
        {
            NetlinkPayload::InnerMessage(m) => m,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bridge_add_is_exclusive_create_with_kind() {
        let req = bridge_add("cni0", Some(1400));
        assert_eq!(req.flags, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        let RouteNetlinkMessage::NewLink(m) = roundtrip(&req) else {
            panic!()
        };
        assert!(m.attributes.contains(&LinkAttribute::IfName("cni0".into())));
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1400)));
        assert!(m
            .attributes
            .contains(&LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge
            )])));
    }

    #[test]
    fn veth_add_puts_netns_fd_and_final_name_in_peer() {
        let ns = NetNs::current().unwrap();
        let spec = VethSpec {
            host_name: "veth0abc",
            peer_name: "eth0",
            peer_netns: &ns,
            mtu: Some(1450),
            peer_mac: Some([2, 0, 0, 0, 0, 7]),
        };
        let req = veth_add(&spec);
        assert_eq!(req.flags, CREATE_FLAGS);
        let RouteNetlinkMessage::NewLink(m) = roundtrip(&req) else {
            panic!()
        };
        assert!(m
            .attributes
            .contains(&LinkAttribute::IfName("veth0abc".into())));
        let infos = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(infos[0], LinkInfo::Kind(InfoKind::Veth));
        let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = &infos[1] else {
            panic!("{infos:?}")
        };
        assert!(peer
            .attributes
            .contains(&LinkAttribute::IfName("eth0".into())));
        assert!(peer.attributes.contains(&LinkAttribute::Mtu(1450)));
        assert!(peer
            .attributes
            .contains(&LinkAttribute::Address(vec![2, 0, 0, 0, 0, 7])));
        assert!(peer
            .attributes
            .contains(&LinkAttribute::NetNsFd(ns.fd().as_raw_fd())));
        // The host end must not carry the netns fd (it stays in the socket's namespace).
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::NetNsFd(_))));
    }

    #[test]
    fn flag_changes_use_change_mask() {
        let up = link_set_flag(7, LinkFlags::Up, true);
        let RouteNetlinkMessage::SetLink(m) = &up.msg else {
            panic!()
        };
        assert_eq!(m.header.index, 7);
        assert_eq!(m.header.flags, LinkFlags::Up);
        assert_eq!(m.header.change_mask, LinkFlags::Up);
        let down = link_set_flag(7, LinkFlags::Up, false);
        let RouteNetlinkMessage::SetLink(m) = &down.msg else {
            panic!()
        };
        assert!(m.header.flags.is_empty());
        assert_eq!(m.header.change_mask, LinkFlags::Up);
        assert!(down.wants_ack() && !down.is_dump());
    }

    #[test]
    fn brport_only_sends_requested_flags() {
        let req = brport_set(5, Some(true), None);
        let RouteNetlinkMessage::NewLink(m) = roundtrip(&req) else {
            panic!()
        };
        assert_eq!(m.header.index, 5);
        assert_eq!(req.flags, NLM_F_ACK, "must not create");
        assert!(m.attributes.contains(&LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                true
            )])),
        ])));
    }

    #[test]
    fn v4_address_gets_local_and_broadcast() {
        let req = addr_add(3, "10.1.2.3/24".parse().unwrap());
        let RouteNetlinkMessage::NewAddress(m) = roundtrip(&req) else {
            panic!()
        };
        assert_eq!(m.header.prefix_len, 24);
        assert_eq!(m.header.index, 3);
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Local("10.1.2.3".parse().unwrap())));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Broadcast("10.1.2.255".parse().unwrap())));
        let p2p = addr_add(3, "10.1.2.3/31".parse().unwrap());
        let RouteNetlinkMessage::NewAddress(m) = &p2p.msg else {
            panic!()
        };
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Broadcast(_))));
        let v6 = addr_add(3, "fd00::1/64".parse().unwrap());
        let RouteNetlinkMessage::NewAddress(m) = &v6.msg else {
            panic!()
        };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(
            m.attributes,
            vec![AddressAttribute::Address("fd00::1".parse().unwrap())]
        );
    }

    #[test]
    fn route_defaults_and_big_table() {
        let mut r = RouteSpec::new("10.2.0.0/16".parse().unwrap());
        r.oif = Some(4);
        let RouteNetlinkMessage::NewRoute(m) = route_add(&r).msg else {
            panic!()
        };
        assert_eq!(
            u8::from(m.header.scope),
            RT_SCOPE_LINK,
            "v4 without gw is link scope"
        );
        assert_eq!(m.header.table, 254);
        assert_eq!(m.header.kind, RouteType::Unicast);

        r.gw = Some("10.1.0.1".parse().unwrap());
        r.table = Some(1000);
        let req = route_add(&r);
        let RouteNetlinkMessage::NewRoute(m) = roundtrip(&req) else {
            panic!()
        };
        assert_eq!(u8::from(m.header.scope), RT_SCOPE_UNIVERSE);
        assert_eq!(m.header.table, 0);
        assert!(m.attributes.contains(&RouteAttribute::Table(1000)));

        // A default route carries no RTA_DST.
        let d = RouteSpec::new("0.0.0.0/0".parse().unwrap());
        let RouteNetlinkMessage::NewRoute(m) = route_add(&d).msg else {
            panic!()
        };
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));

        // Deletion matches any scope/type/protocol and any table unless one is given.
        let RouteNetlinkMessage::DelRoute(m) = route_del(&d).msg else {
            panic!()
        };
        assert_eq!(u8::from(m.header.scope), 255);
        assert_eq!(m.header.kind, RouteType::Unspec);
        assert_eq!(m.header.table, 0);
    }

    #[test]
    fn parse_link_fields() {
        let mut m = LinkMessage::default();
        m.header.index = 9;
        m.header.flags = LinkFlags::Up | LinkFlags::Promisc;
        m.attributes = vec![
            LinkAttribute::IfName("veth1".into()),
            LinkAttribute::Address(vec![2, 1, 2, 3, 4, 5]),
            LinkAttribute::Mtu(1400),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(12),
            LinkAttribute::LinkNetNsId(0),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let l = parse_link(&m);
        assert_eq!(
            l,
            Link {
                index: 9,
                name: "veth1".into(),
                kind: Some("veth".into()),
                mac: Some([2, 1, 2, 3, 4, 5]),
                mtu: 1400,
                up: true,
                oper_up: true,
                master: Some(3),
                promisc: true,
                peer_index: Some(12),
                link_netnsid: Some(0),
            }
        );
        // IFLA_LINK of a non-veth is not a peer.
        m.attributes.pop();
        assert_eq!(parse_link(&m).peer_index, None);
    }

    #[test]
    fn parse_addr_prefers_local_and_flags_attr() {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet6;
        m.header.prefix_len = 64;
        m.header.index = 2;
        m.header.scope = AddressScope::Link;
        m.attributes = vec![
            AddressAttribute::Address("fe80::1".parse().unwrap()),
            AddressAttribute::Flags(AddressFlags::Tentative | AddressFlags::Permanent),
        ];
        let a = parse_addr(&m).unwrap();
        assert_eq!(a.addr, "fe80::1/64".parse::<IpNet>().unwrap());
        assert_eq!(a.scope, 253);
        assert_eq!(
            a.flags,
            super::super::IFA_F_TENTATIVE | super::super::IFA_F_PERMANENT
        );
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = 32;
        m.attributes = vec![
            AddressAttribute::Address("10.0.0.2".parse().unwrap()),
            AddressAttribute::Local("10.0.0.1".parse().unwrap()),
        ];
        assert_eq!(
            parse_addr(&m).unwrap().addr,
            "10.0.0.1/32".parse::<IpNet>().unwrap()
        );
    }

    #[test]
    fn parse_route_and_skip_non_unicast() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.kind = RouteType::Unicast;
        m.header.table = 254;
        m.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet("10.0.0.1".parse().unwrap())),
            RouteAttribute::Oif(4),
            RouteAttribute::Priority(7),
            RouteAttribute::Metrics(vec![RouteMetric::Mtu(1300)]),
        ];
        let r = parse_route(&m).unwrap();
        assert_eq!(r.dst, "0.0.0.0/0".parse::<IpNet>().unwrap());
        assert_eq!(r.gw, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            (r.oif, r.priority, r.mtu, r.table),
            (Some(4), Some(7), Some(1300), Some(254))
        );
        m.header.kind = RouteType::Local;
        assert!(parse_route(&m).is_none());
    }

    #[test]
    fn bridge_vlan_messages() {
        let req = bridge_vlan_add(
            6,
            BridgeVlan {
                vid: 100,
                pvid: true,
                untagged: true,
            },
        );
        let RouteNetlinkMessage::SetLink(m) = roundtrip(&req) else {
            panic!()
        };
        assert_eq!(m.header.interface_family, AddressFamily::Bridge);
        assert_eq!(m.header.index, 6);
        assert_eq!(
            parse_bridge_vlans(&m),
            vec![BridgeVlan {
                vid: 100,
                pvid: true,
                untagged: true
            }]
        );
        let RouteNetlinkMessage::DelLink(m) = bridge_vlan_del(6, 100).msg else {
            panic!()
        };
        assert_eq!(m.header.interface_family, AddressFamily::Bridge);
        let RouteNetlinkMessage::NewLink(m) = roundtrip(&bridge_set_vlan_filtering(3, true)) else {
            panic!()
        };
        assert!(m.attributes.contains(&LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])),
        ])));
        let d = dump_bridge_vlans();
        assert!(d.is_dump());
        let RouteNetlinkMessage::GetLink(m) = d.msg else {
            panic!()
        };
        assert_eq!(m.header.index, 0);
    }

    #[test]
    fn neighbour_dump_and_parse() {
        use netlink_packet_route::neighbour::NeighbourState;
        let d = dump_neighbours(Family::V6);
        assert!(d.is_dump());
        let RouteNetlinkMessage::GetNeighbour(m) = roundtrip(&d) else {
            panic!()
        };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = 3;
        m.header.state = NeighbourState::Reachable;
        m.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet("10.0.0.1".parse().unwrap())),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]),
        ];
        let n = parse_neighbour(&m).unwrap();
        assert_eq!(n.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (n.index, n.mac, n.state_name()),
            (3, Some([2, 0, 0, 0, 0, 1]), "REACHABLE")
        );
        m.attributes.truncate(0);
        assert!(parse_neighbour(&m).is_none());
    }

    #[test]
    fn dumps_are_dumps() {
        assert!(dump_links().is_dump());
        assert!(dump_addrs(Some(3), AddressFamily::Inet).is_dump());
        assert!(dump_routes(Family::V6).is_dump());
        assert!(!get_link_by_name("x").is_dump());
        let RouteNetlinkMessage::GetAddress(m) = dump_addrs(Some(3), AddressFamily::Inet6).msg
        else {
            panic!()
        };
        assert_eq!(m.header.index, 3);
        assert_eq!(m.header.family, AddressFamily::Inet6);
    }
}
