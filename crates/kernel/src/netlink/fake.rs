//! A recording, in-memory [`NetlinkOps`] for unit tests of plugin logic without root (the
//! youki fake-client pattern, peers.md §3.2). It records every call with its arguments in
//! [`FakeNetlink::calls`] and keeps a small model of one namespace (links, addresses, routes)
//! so that "add bridge, add veth, set master, add address" reads back what was added. Veth peers
//! created in other namespaces land in [`FakeNetlink::foreign_links`].

use std::collections::HashMap;
use std::path::PathBuf;

use ipnet::IpNet;

use super::{
    validate_ifname, Addr, BridgeVlan, Family, Link, Neighbour, NetlinkOps, RouteSpec, VethSpec,
    RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN,
};
use crate::error::{Error, Result};

/// One recorded operation with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `link_by_name(name)`.
    LinkByName(String),
    /// `link_by_index(index)`.
    LinkByIndex(u32),
    /// `links()`.
    Links,
    /// `bridge_add(name, mtu)`.
    BridgeAdd { name: String, mtu: Option<u32> },
    /// `veth_add(spec)`; `peer_netns` is the namespace path.
    VethAdd {
        host_name: String,
        peer_name: String,
        peer_netns: PathBuf,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    },
    /// `link_set_up(index)`.
    LinkSetUp(u32),
    /// `link_set_down(index)`.
    LinkSetDown(u32),
    /// `link_set_master(index, master)`.
    LinkSetMaster { index: u32, master: u32 },
    /// `link_set_mtu(index, mtu)`.
    LinkSetMtu { index: u32, mtu: u32 },
    /// `link_set_mac(index, mac)`.
    LinkSetMac { index: u32, mac: [u8; 6] },
    /// `link_set_promisc(index, on)`.
    LinkSetPromisc { index: u32, on: bool },
    /// `brport_set(index, hairpin, isolated)`.
    BrportSet {
        index: u32,
        hairpin: Option<bool>,
        isolated: Option<bool>,
    },
    /// `link_del(index)`.
    LinkDel(u32),
    /// `addr_add(index, addr)`.
    AddrAdd { index: u32, addr: IpNet },
    /// `addr_del(index, addr)`.
    AddrDel { index: u32, addr: IpNet },
    /// `addrs(index)`.
    Addrs(Option<u32>),
    /// `route_add(route)`.
    RouteAdd(RouteSpec),
    /// `route_del(route)`.
    RouteDel(RouteSpec),
    /// `routes(family)`.
    Routes(Family),
    /// `neighbours(family)`.
    Neighbours(Family),
    /// `bridge_set_vlan_filtering(bridge, on)`.
    BridgeSetVlanFiltering { bridge: u32, on: bool },
    /// `bridge_vlan_add(index, vlan)`.
    BridgeVlanAdd { index: u32, vlan: BridgeVlan },
    /// `bridge_vlan_del(index, vid)`.
    BridgeVlanDel { index: u32, vid: u16 },
    /// `bridge_vlans(index)`.
    BridgeVlans(u32),
}

/// Bridge port flags the fake remembers per link index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrportFlags {
    /// Hairpin mode.
    pub hairpin: bool,
    /// Port isolation.
    pub isolated: bool,
}

/// The recording fake. Fields are public so tests can script initial state and inspect results.
#[derive(Debug)]
pub struct FakeNetlink {
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// Links of the modelled namespace.
    pub links: Vec<Link>,
    /// Addresses of the modelled namespace.
    pub addrs: Vec<Addr>,
    /// Routes of the modelled namespace (as added: `table` filled with main when unset).
    pub routes: Vec<RouteSpec>,
    /// Veth peers created in other namespaces: (namespace path, link).
    pub foreign_links: Vec<(PathBuf, Link)>,
    /// Bridge port flags per link index.
    pub brport: HashMap<u32, BrportFlags>,
    /// VLAN filtering state per bridge index.
    pub vlan_filtering: HashMap<u32, bool>,
    /// VLANs per port index.
    pub vlans: HashMap<u32, Vec<BridgeVlan>>,
    /// Neighbour entries returned by `neighbours()`.
    pub neighbours: Vec<Neighbour>,
    /// Queued failures: op name -> errnos returned by the next calls of that op.
    failures: HashMap<&'static str, Vec<i32>>,
    next_index: u32,
}

impl Default for FakeNetlink {
    fn default() -> Self {
        Self::new()
    }
}

fn nl_err(op: &'static str, errno: i32, target: String) -> Error {
    Error::Netlink {
        op,
        errno,
        target,
        ext_ack: String::new(),
    }
}

fn fake_mac(index: u32) -> [u8; 6] {
    let b = index.to_be_bytes();
    [0x02, 0xfa, b[0], b[1], b[2], b[3]]
}

impl FakeNetlink {
    /// An empty namespace with only `lo` (index 1, up).
    pub fn new() -> Self {
        FakeNetlink {
            calls: Vec::new(),
            links: vec![Link {
                index: 1,
                name: "lo".into(),
                mac: Some([0; 6]),
                mtu: 65536,
                up: true,
                oper_up: false,
                ..Link::default()
            }],
            addrs: Vec::new(),
            routes: Vec::new(),
            foreign_links: Vec::new(),
            brport: HashMap::new(),
            vlan_filtering: HashMap::new(),
            vlans: HashMap::new(),
            neighbours: Vec::new(),
            failures: HashMap::new(),
            next_index: 2,
        }
    }

    /// Make the next call of `op` (a [`NetlinkOps`] method name such as `"veth_add"`) fail with
    /// `errno`, without changing the model. Several calls queue up in order.
    pub fn fail_next(&mut self, op: &'static str, errno: i32) {
        self.failures.entry(op).or_default().push(errno);
    }

    /// Add a link directly (scripted state); returns its index.
    pub fn add_link(&mut self, name: &str, kind: Option<&str>) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        self.links.push(Link {
            index,
            name: name.into(),
            kind: kind.map(str::to_string),
            mac: Some(fake_mac(index)),
            mtu: 1500,
            ..Link::default()
        });
        index
    }

    /// Names of links, in creation order.
    pub fn link_names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name.clone()).collect()
    }

    fn check_fail(&mut self, op: &'static str, target: impl FnOnce() -> String) -> Result<()> {
        if let Some(q) = self.failures.get_mut(op) {
            if !q.is_empty() {
                let errno = q.remove(0);
                return Err(nl_err(op, errno, target()));
            }
        }
        Ok(())
    }

    fn link_mut(&mut self, op: &'static str, index: u32) -> Result<&mut Link> {
        self.links
            .iter_mut()
            .find(|l| l.index == index)
            .ok_or_else(|| nl_err(op, libc::ENODEV, format!("ifindex {index}")))
    }

    fn name_taken(&self, name: &str) -> bool {
        self.links.iter().any(|l| l.name == name)
    }

    fn begin(
        &mut self,
        op: &'static str,
        call: Call,
        target: impl FnOnce() -> String,
    ) -> Result<()> {
        self.calls.push(call);
        self.check_fail(op, target)
    }
}

fn routes_match(filter: &RouteSpec, r: &RouteSpec) -> bool {
    filter.dst == r.dst
        && (filter.gw.is_none() || filter.gw == r.gw)
        && (filter.oif.is_none() || filter.oif == r.oif)
        && (filter.priority.is_none() || filter.priority == r.priority)
        && filter.table.unwrap_or(RT_TABLE_MAIN) == r.table.unwrap_or(RT_TABLE_MAIN)
}

impl NetlinkOps for FakeNetlink {
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        self.begin("link_by_name", Call::LinkByName(name.into()), || {
            name.into()
        })?;
        Ok(self.links.iter().find(|l| l.name == name).cloned())
    }

    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        self.begin("link_by_index", Call::LinkByIndex(index), || {
            format!("ifindex {index}")
        })?;
        Ok(self.links.iter().find(|l| l.index == index).cloned())
    }

    fn links(&mut self) -> Result<Vec<Link>> {
        self.begin("links", Call::Links, String::new)?;
        Ok(self.links.clone())
    }

    fn bridge_add(&mut self, name: &str, mtu: Option<u32>) -> Result<()> {
        self.begin(
            "bridge_add",
            Call::BridgeAdd {
                name: name.into(),
                mtu,
            },
            || name.into(),
        )?;
        validate_ifname(name)?;
        if self.name_taken(name) {
            return Err(nl_err("bridge_add", libc::EEXIST, name.into()));
        }
        let index = self.add_link(name, Some("bridge"));
        if let Some(mtu) = mtu {
            self.link_mut("bridge_add", index)?.mtu = mtu;
        }
        Ok(())
    }

    fn veth_add(&mut self, spec: &VethSpec) -> Result<()> {
        let call = Call::VethAdd {
            host_name: spec.host_name.into(),
            peer_name: spec.peer_name.into(),
            peer_netns: spec.peer_netns.path().to_path_buf(),
            mtu: spec.mtu,
            peer_mac: spec.peer_mac,
        };
        self.begin("veth_add", call, || spec.host_name.into())?;
        validate_ifname(spec.host_name)?;
        validate_ifname(spec.peer_name)?;
        let ns = spec.peer_netns.path().to_path_buf();
        if self.name_taken(spec.host_name)
            || self
                .foreign_links
                .iter()
                .any(|(p, l)| *p == ns && l.name == spec.peer_name)
        {
            return Err(nl_err("veth_add", libc::EEXIST, spec.host_name.into()));
        }
        let host = self.add_link(spec.host_name, Some("veth"));
        let peer_index = self.next_index;
        self.next_index += 1;
        let mtu = spec.mtu.unwrap_or(1500);
        let host_link = self.link_mut("veth_add", host)?;
        host_link.mtu = mtu;
        host_link.peer_index = Some(peer_index);
        let peer = Link {
            index: peer_index,
            name: spec.peer_name.into(),
            kind: Some("veth".into()),
            mac: Some(spec.peer_mac.unwrap_or(fake_mac(peer_index))),
            mtu,
            peer_index: Some(host),
            ..Link::default()
        };
        self.foreign_links.push((ns, peer));
        Ok(())
    }

    fn link_set_up(&mut self, index: u32) -> Result<()> {
        self.begin("link_set_up", Call::LinkSetUp(index), || {
            format!("ifindex {index}")
        })?;
        let l = self.link_mut("link_set_up", index)?;
        l.up = true;
        l.oper_up = true;
        Ok(())
    }

    fn link_set_down(&mut self, index: u32) -> Result<()> {
        self.begin("link_set_down", Call::LinkSetDown(index), || {
            format!("ifindex {index}")
        })?;
        let l = self.link_mut("link_set_down", index)?;
        l.up = false;
        l.oper_up = false;
        Ok(())
    }

    fn link_set_master(&mut self, index: u32, master: u32) -> Result<()> {
        self.begin(
            "link_set_master",
            Call::LinkSetMaster { index, master },
            || format!("ifindex {index}"),
        )?;
        if master != 0 && !self.links.iter().any(|l| l.index == master) {
            return Err(nl_err(
                "link_set_master",
                libc::ENODEV,
                format!("ifindex {master}"),
            ));
        }
        self.link_mut("link_set_master", index)?.master = (master != 0).then_some(master);
        Ok(())
    }

    fn link_set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.begin("link_set_mtu", Call::LinkSetMtu { index, mtu }, || {
            format!("ifindex {index}")
        })?;
        self.link_mut("link_set_mtu", index)?.mtu = mtu;
        Ok(())
    }

    fn link_set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.begin("link_set_mac", Call::LinkSetMac { index, mac }, || {
            format!("ifindex {index}")
        })?;
        self.link_mut("link_set_mac", index)?.mac = Some(mac);
        Ok(())
    }

    fn link_set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        self.begin(
            "link_set_promisc",
            Call::LinkSetPromisc { index, on },
            || format!("ifindex {index}"),
        )?;
        self.link_mut("link_set_promisc", index)?.promisc = on;
        Ok(())
    }

    fn brport_set(
        &mut self,
        index: u32,
        hairpin: Option<bool>,
        isolated: Option<bool>,
    ) -> Result<()> {
        self.begin(
            "brport_set",
            Call::BrportSet {
                index,
                hairpin,
                isolated,
            },
            || format!("ifindex {index}"),
        )?;
        if self.link_mut("brport_set", index)?.master.is_none() {
            // The kernel has no bridge port to configure on an unenslaved link.
            return Err(nl_err(
                "brport_set",
                libc::EOPNOTSUPP,
                format!("ifindex {index}"),
            ));
        }
        let f = self.brport.entry(index).or_default();
        if let Some(h) = hairpin {
            f.hairpin = h;
        }
        if let Some(i) = isolated {
            f.isolated = i;
        }
        Ok(())
    }

    fn link_del(&mut self, index: u32) -> Result<()> {
        self.begin("link_del", Call::LinkDel(index), || {
            format!("ifindex {index}")
        })?;
        let pos = self
            .links
            .iter()
            .position(|l| l.index == index)
            .ok_or_else(|| nl_err("link_del", libc::ENODEV, format!("ifindex {index}")))?;
        let link = self.links.remove(pos);
        // Deleting one veth end deletes the other, wherever it lives.
        if let Some(peer) = link.peer_index {
            self.foreign_links.retain(|(_, l)| l.index != peer);
            self.links.retain(|l| l.index != peer);
        }
        for l in &mut self.links {
            if l.master == Some(index) {
                l.master = None;
            }
        }
        self.addrs
            .retain(|a| a.index != index && Some(a.index) != link.peer_index);
        self.routes.retain(|r| r.oif != Some(index));
        self.brport.remove(&index);
        self.vlans.remove(&index);
        self.vlan_filtering.remove(&index);
        Ok(())
    }

    fn addr_add(&mut self, index: u32, addr: IpNet) -> Result<()> {
        self.begin("addr_add", Call::AddrAdd { index, addr }, || {
            format!("{addr} on ifindex {index}")
        })?;
        self.link_mut("addr_add", index)?;
        if self
            .addrs
            .iter()
            .any(|a| a.index == index && a.addr.addr() == addr.addr())
        {
            return Err(nl_err(
                "addr_add",
                libc::EEXIST,
                format!("{addr} on ifindex {index}"),
            ));
        }
        self.addrs.push(Addr {
            index,
            addr,
            scope: RT_SCOPE_UNIVERSE,
            flags: super::IFA_F_PERMANENT,
        });
        // The kernel adds the prefix route with the address.
        self.routes.push(RouteSpec {
            dst: addr.trunc(),
            gw: None,
            oif: Some(index),
            table: Some(RT_TABLE_MAIN),
            priority: None,
            scope: Some(RT_SCOPE_LINK),
            mtu: None,
        });
        Ok(())
    }

    fn addr_del(&mut self, index: u32, addr: IpNet) -> Result<()> {
        self.begin("addr_del", Call::AddrDel { index, addr }, || {
            format!("{addr} on ifindex {index}")
        })?;
        let before = self.addrs.len();
        self.addrs.retain(|a| !(a.index == index && a.addr == addr));
        if self.addrs.len() == before {
            return Err(nl_err(
                "addr_del",
                libc::EADDRNOTAVAIL,
                format!("{addr} on ifindex {index}"),
            ));
        }
        self.routes
            .retain(|r| !(r.oif == Some(index) && r.gw.is_none() && r.dst == addr.trunc()));
        Ok(())
    }

    fn addrs(&mut self, index: Option<u32>) -> Result<Vec<Addr>> {
        self.begin("addrs", Call::Addrs(index), String::new)?;
        Ok(self
            .addrs
            .iter()
            .filter(|a| index.is_none_or(|i| a.index == i))
            .cloned()
            .collect())
    }

    fn route_add(&mut self, r: &RouteSpec) -> Result<()> {
        self.begin("route_add", Call::RouteAdd(r.clone()), || r.dst.to_string())?;
        if let Some(oif) = r.oif {
            self.link_mut("route_add", oif)?;
        }
        if self
            .routes
            .iter()
            .any(|x| routes_match(r, x) && x.priority == r.priority)
        {
            return Err(nl_err("route_add", libc::EEXIST, r.dst.to_string()));
        }
        let mut stored = r.clone();
        stored.table = Some(r.table.unwrap_or(RT_TABLE_MAIN));
        stored.scope = Some(r.scope.unwrap_or(match (&r.dst, &r.gw) {
            (IpNet::V4(_), None) => RT_SCOPE_LINK,
            _ => RT_SCOPE_UNIVERSE,
        }));
        self.routes.push(stored);
        Ok(())
    }

    fn route_del(&mut self, r: &RouteSpec) -> Result<()> {
        self.begin("route_del", Call::RouteDel(r.clone()), || r.dst.to_string())?;
        match self.routes.iter().position(|x| routes_match(r, x)) {
            Some(pos) => {
                self.routes.remove(pos);
                Ok(())
            }
            None => Err(nl_err("route_del", libc::ESRCH, r.dst.to_string())),
        }
    }

    fn routes(&mut self, family: Family) -> Result<Vec<RouteSpec>> {
        self.begin("routes", Call::Routes(family), String::new)?;
        Ok(self
            .routes
            .iter()
            .filter(|r| Family::of(&r.dst.addr()) == family)
            .cloned()
            .collect())
    }

    fn bridge_set_vlan_filtering(&mut self, bridge: u32, on: bool) -> Result<()> {
        let target = || format!("ifindex {bridge}");
        self.begin(
            "bridge_set_vlan_filtering",
            Call::BridgeSetVlanFiltering { bridge, on },
            target,
        )?;
        if self
            .link_mut("bridge_set_vlan_filtering", bridge)?
            .kind
            .as_deref()
            != Some("bridge")
        {
            return Err(nl_err(
                "bridge_set_vlan_filtering",
                libc::EOPNOTSUPP,
                target(),
            ));
        }
        self.vlan_filtering.insert(bridge, on);
        Ok(())
    }

    fn bridge_vlan_add(&mut self, index: u32, vlan: BridgeVlan) -> Result<()> {
        self.begin(
            "bridge_vlan_add",
            Call::BridgeVlanAdd { index, vlan },
            || format!("vlan {} on ifindex {index}", vlan.vid),
        )?;
        super::socket::check_vid(vlan.vid)?;
        if self.link_mut("bridge_vlan_add", index)?.master.is_none() {
            return Err(nl_err(
                "bridge_vlan_add",
                libc::EINVAL,
                format!("ifindex {index}"),
            ));
        }
        let list = self.vlans.entry(index).or_default();
        // Like the kernel: one PVID per port, and re-adding a vid updates its flags.
        if vlan.pvid {
            for v in list.iter_mut() {
                v.pvid = false;
            }
        }
        list.retain(|v| v.vid != vlan.vid);
        list.push(vlan);
        list.sort_by_key(|v| v.vid);
        Ok(())
    }

    fn bridge_vlan_del(&mut self, index: u32, vid: u16) -> Result<()> {
        self.begin(
            "bridge_vlan_del",
            Call::BridgeVlanDel { index, vid },
            || format!("vlan {vid} on ifindex {index}"),
        )?;
        let list = self.vlans.entry(index).or_default();
        let before = list.len();
        list.retain(|v| v.vid != vid);
        if list.len() == before {
            return Err(nl_err(
                "bridge_vlan_del",
                libc::ENOENT,
                format!("vlan {vid}"),
            ));
        }
        Ok(())
    }

    fn bridge_vlans(&mut self, index: u32) -> Result<Vec<BridgeVlan>> {
        self.begin("bridge_vlans", Call::BridgeVlans(index), String::new)?;
        Ok(self.vlans.get(&index).cloned().unwrap_or_default())
    }

    fn neighbours(&mut self, family: Family) -> Result<Vec<Neighbour>> {
        self.begin("neighbours", Call::Neighbours(family), String::new)?;
        Ok(self
            .neighbours
            .iter()
            .filter(|n| Family::of(&n.ip) == family)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::NetNs;

    fn ns() -> NetNs {
        NetNs::current().unwrap()
    }

    #[test]
    fn bridge_veth_master_addr_reads_back() {
        let ns = ns();
        let mut f = FakeNetlink::new();
        let ops: &mut dyn NetlinkOps = &mut f;
        ops.bridge_add("cni0", Some(1400)).unwrap();
        ops.veth_add(&VethSpec {
            host_name: "veth01234567",
            peer_name: "eth0",
            peer_netns: &ns,
            mtu: Some(1400),
            peer_mac: Some([2, 0, 0, 0, 0, 9]),
        })
        .unwrap();
        let br = ops.link_by_name("cni0").unwrap().unwrap();
        let veth = ops.link_by_name("veth01234567").unwrap().unwrap();
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert_eq!(br.mtu, 1400);
        assert_eq!(veth.kind.as_deref(), Some("veth"));
        ops.link_set_master(veth.index, br.index).unwrap();
        ops.link_set_up(veth.index).unwrap();
        ops.brport_set(veth.index, Some(true), None).unwrap();
        ops.addr_add(br.index, "10.22.0.1/16".parse().unwrap())
            .unwrap();

        let links = ops.links().unwrap();
        let v = links.iter().find(|l| l.name == "veth01234567").unwrap();
        assert_eq!(v.master, Some(br.index));
        assert!(v.up);
        let addrs = ops.addrs(Some(br.index)).unwrap();
        assert_eq!(addrs.len(), 1);
        assert_eq!(addrs[0].addr, "10.22.0.1/16".parse::<IpNet>().unwrap());
        assert!(ops.addrs(Some(veth.index)).unwrap().is_empty());
        let routes = ops.routes(Family::V4).unwrap();
        assert_eq!(routes[0].dst, "10.22.0.0/16".parse::<IpNet>().unwrap());

        assert_eq!(f.foreign_links.len(), 1);
        assert_eq!(f.foreign_links[0].1.name, "eth0");
        assert_eq!(f.foreign_links[0].1.mac, Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(
            f.brport[&veth.index],
            BrportFlags {
                hairpin: true,
                isolated: false
            }
        );
        assert_eq!(
            f.calls[0],
            Call::BridgeAdd {
                name: "cni0".into(),
                mtu: Some(1400)
            }
        );
        assert!(f.calls.contains(&Call::LinkSetMaster {
            index: veth.index,
            master: br.index
        }));

        // Deleting the host end takes the peer with it.
        f.link_del(veth.index).unwrap();
        assert!(f.foreign_links.is_empty());
        assert!(f.link_by_name("veth01234567").unwrap().is_none());
    }

    #[test]
    fn exists_and_not_found_errors() {
        let mut f = FakeNetlink::new();
        f.bridge_add("br0", None).unwrap();
        assert!(f.bridge_add("br0", None).unwrap_err().is_exists());
        assert!(matches!(
            f.bridge_add("bridge-name-too-long", None).unwrap_err(),
            Error::Invalid { .. }
        ));
        assert!(f.link_set_up(42).unwrap_err().is_not_found());
        assert!(f.link_del(42).unwrap_err().is_not_found());
        let idx = f.link_by_name("br0").unwrap().unwrap().index;
        let a: IpNet = "10.0.0.1/24".parse().unwrap();
        f.addr_add(idx, a).unwrap();
        assert!(f.addr_add(idx, a).unwrap_err().is_exists());
        f.addr_del(idx, a).unwrap();
        assert!(f.addr_del(idx, a).unwrap_err().is_not_found());
        let r = RouteSpec {
            gw: Some("10.0.0.254".parse().unwrap()),
            ..RouteSpec::new("0.0.0.0/0".parse().unwrap())
        };
        f.route_add(&r).unwrap();
        assert!(f.route_add(&r).unwrap_err().is_exists());
        assert_eq!(f.routes(Family::V4).unwrap()[0].table, Some(RT_TABLE_MAIN));
        assert!(f.routes(Family::V6).unwrap().is_empty());
        f.route_del(&RouteSpec::new("0.0.0.0/0".parse().unwrap()))
            .unwrap();
        assert!(f.route_del(&r).unwrap_err().is_not_found());
        // Port flags need a master, like the kernel.
        assert!(f.brport_set(idx, Some(true), None).is_err());
    }

    #[test]
    fn vlans_model_one_pvid_per_port() {
        let mut f = FakeNetlink::new();
        f.bridge_add("br0", None).unwrap();
        let br = f.link_by_name("br0").unwrap().unwrap().index;
        let port = f.add_link("veth0", Some("veth"));
        let v = |vid, pvid| BridgeVlan {
            vid,
            pvid,
            untagged: pvid,
        };
        assert!(
            f.bridge_vlan_add(port, v(10, true)).is_err(),
            "not a port yet"
        );
        f.link_set_master(port, br).unwrap();
        f.bridge_set_vlan_filtering(br, true).unwrap();
        assert!(f.bridge_set_vlan_filtering(port, true).is_err());
        f.bridge_vlan_add(port, v(10, true)).unwrap();
        f.bridge_vlan_add(port, v(20, true)).unwrap();
        // The second PVID takes over; vlan 10 keeps its untagged flag.
        let ten = BridgeVlan {
            vid: 10,
            pvid: false,
            untagged: true,
        };
        assert_eq!(f.bridge_vlans(port).unwrap(), vec![ten, v(20, true)]);
        assert!(f.bridge_vlan_add(port, v(0, false)).is_err());
        f.bridge_vlan_del(port, 10).unwrap();
        assert!(f.bridge_vlan_del(port, 10).unwrap_err().is_not_found());
        assert!(f.vlan_filtering[&br]);
    }

    #[test]
    fn fail_next_is_one_shot_and_recorded() {
        let mut f = FakeNetlink::new();
        f.fail_next("bridge_add", libc::EPERM);
        let e = f.bridge_add("br0", None).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(matches!(
            e,
            Error::Netlink {
                op: "bridge_add",
                ..
            }
        ));
        assert!(
            f.link_by_name("br0").unwrap().is_none(),
            "failed call changes nothing"
        );
        f.bridge_add("br0", None).unwrap();
        assert_eq!(
            f.calls
                .iter()
                .filter(|c| matches!(c, Call::BridgeAdd { .. }))
                .count(),
            2
        );
    }

    #[test]
    fn neighbours_by_family() {
        let mut f = FakeNetlink::new();
        f.neighbours = vec![
            Neighbour {
                index: 2,
                ip: "10.0.0.1".parse().unwrap(),
                mac: Some([2, 0, 0, 0, 0, 1]),
                state: 0x02,
            },
            Neighbour {
                index: 2,
                ip: "fe80::1".parse().unwrap(),
                mac: None,
                state: 0x20,
            },
        ];
        let v4 = f.neighbours(Family::V4).unwrap();
        assert_eq!(v4.len(), 1);
        assert_eq!(v4[0].state_name(), "REACHABLE");
        let v6 = f.neighbours(Family::V6).unwrap();
        assert_eq!(v6[0].state_name(), "FAILED");
        assert_eq!(
            f.calls,
            [Call::Neighbours(Family::V4), Call::Neighbours(Family::V6)]
        );
    }
}
