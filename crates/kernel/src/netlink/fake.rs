//! A recording, in-memory [`NetlinkOps`] for unit tests of plugin logic without root (the
//! youki fake-client pattern).
//!
//! One [`FakeNetlink`] is a socket in one namespace of a shared in-memory world: [`FakeNetlink::new`]
//! starts the world with the host namespace, [`FakeNetlink::netns`] opens another handle on the
//! namespace a [`NetNs`](crate::netns::NetNs) path names. A veth created with a peer namespace
//! puts its peer there; deleting either end deletes both, wherever they live, as the kernel does.
//! Every call, in every namespace, goes into one journal in order, and other fakes of a test
//! (firewall, IPAM) can add their own entries with [`FakeNetlink::note`], so a test reads one
//! sequence of every side effect, e.g. what a rollback undid and in which order.
//! [`FakeNetlink::fail_next`] makes the next call of an operation fail in one namespace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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

/// The modelled state of one namespace; read it with [`FakeNetlink::state`], script it with
/// [`FakeNetlink::edit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeNamespace {
    /// Links.
    pub links: Vec<Link>,
    /// Addresses.
    pub addrs: Vec<Addr>,
    /// Routes (as added: `table` filled with main when unset).
    pub routes: Vec<RouteSpec>,
    /// Bridge port flags per link index.
    pub brport: HashMap<u32, BrportFlags>,
    /// VLAN filtering state per bridge index.
    pub vlan_filtering: HashMap<u32, bool>,
    /// VLANs per port index.
    pub vlans: HashMap<u32, Vec<BridgeVlan>>,
    /// Neighbour entries returned by `neighbours()`.
    pub neighbours: Vec<Neighbour>,
    /// `IFA_F_*` flags added to every new address besides `IFA_F_PERMANENT`, e.g.
    /// `IFA_F_TENTATIVE` while a test plays duplicate address detection.
    pub new_addr_flags: u32,
}

impl FakeNamespace {
    /// Names of the links, in creation order.
    pub fn link_names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name.clone()).collect()
    }

    /// The link called `name`.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A netlink call made in namespace `ns` (a failed call is recorded too).
    Call {
        /// [`HOST_NS`] or the namespace path.
        ns: PathBuf,
        /// The call and its arguments.
        call: Call,
    },
    /// A side effect recorded by another fake of the same test.
    Note(String),
}

/// The namespace key of the handle [`FakeNetlink::new`] returns.
pub const HOST_NS: &str = "host";

#[derive(Debug, Default)]
struct World {
    spaces: HashMap<PathBuf, FakeNamespace>,
    journal: Vec<Event>,
    /// Queued failures per (namespace, op): errnos returned by the next calls of that op.
    failures: HashMap<(PathBuf, &'static str), Vec<i32>>,
    next_index: u32,
}

impl World {
    fn space(&mut self, ns: &Path) -> &mut FakeNamespace {
        self.spaces
            .entry(ns.to_path_buf())
            .or_insert_with(|| FakeNamespace {
                links: vec![Link {
                    index: 1,
                    name: "lo".into(),
                    mac: Some([0; 6]),
                    mtu: 65536,
                    up: true,
                    ..Link::default()
                }],
                ..FakeNamespace::default()
            })
    }

    fn new_link(&mut self, ns: &Path, name: &str, kind: Option<&str>) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        self.space(ns).links.push(Link {
            index,
            name: name.into(),
            kind: kind.map(str::to_string),
            mac: Some(fake_mac(index)),
            mtu: 1500,
            ..Link::default()
        });
        index
    }
}

/// A handle on one namespace of the fake world; clones and [`FakeNetlink::netns`] handles share
/// the world.
#[derive(Debug, Clone)]
pub struct FakeNetlink {
    world: Arc<Mutex<World>>,
    ns: PathBuf,
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

fn idx(index: u32) -> impl FnOnce() -> String {
    move || format!("ifindex {index}")
}

impl FakeNetlink {
    /// A new world holding the host namespace ([`HOST_NS`]) with only `lo` (index 1, up);
    /// the handle is a socket in that namespace.
    pub fn new() -> Self {
        let mut world = World {
            next_index: 2,
            ..World::default()
        };
        world.space(Path::new(HOST_NS));
        FakeNetlink {
            world: Arc::new(Mutex::new(world)),
            ns: PathBuf::from(HOST_NS),
        }
    }

    /// A handle on the namespace at `path` (created, with `lo`, on first use), in the same world.
    pub fn netns(&self, path: impl AsRef<Path>) -> FakeNetlink {
        let ns = path.as_ref().to_path_buf();
        self.lock().space(&ns);
        FakeNetlink {
            world: Arc::clone(&self.world),
            ns,
        }
    }

    // A test that panicked while holding the lock already failed; keep reading the world.
    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make the next call of `op` (a [`NetlinkOps`] method name such as `"veth_add"`) in this
    /// namespace fail with `errno`, without changing the model. Several calls queue up in order.
    pub fn fail_next(&self, op: &'static str, errno: i32) {
        self.lock()
            .failures
            .entry((self.ns.clone(), op))
            .or_default()
            .push(errno);
    }

    /// Add a link directly (scripted state, not journaled); returns its index.
    pub fn add_link(&self, name: &str, kind: Option<&str>) -> u32 {
        let ns = self.ns.clone();
        self.lock().new_link(&ns, name, kind)
    }

    /// A copy of this namespace's state.
    pub fn state(&self) -> FakeNamespace {
        let ns = self.ns.clone();
        self.lock().space(&ns).clone()
    }

    /// Change this namespace's state directly (scripted state, not journaled).
    pub fn edit<T>(&self, f: impl FnOnce(&mut FakeNamespace) -> T) -> T {
        let ns = self.ns.clone();
        f(self.lock().space(&ns))
    }

    /// Record a side effect of another fake in the shared journal.
    pub fn note(&self, what: impl Into<String>) {
        self.lock().journal.push(Event::Note(what.into()));
    }

    /// Every entry so far, in order, from every namespace.
    pub fn journal(&self) -> Vec<Event> {
        self.lock().journal.clone()
    }

    /// The calls made in this namespace, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock()
            .journal
            .iter()
            .filter_map(|e| match e {
                Event::Call { ns, call } if *ns == self.ns => Some(call.clone()),
                _ => None,
            })
            .collect()
    }

    /// Clear the journal (after a test's setup).
    pub fn clear_journal(&self) {
        self.lock().journal.clear();
    }

    /// Journal `call`, fail it if a failure is queued, else run `f` on the world.
    fn op<T>(
        &self,
        op: &'static str,
        call: Call,
        target: impl FnOnce() -> String,
        f: impl FnOnce(&mut World, &Path) -> Result<T>,
    ) -> Result<T> {
        let mut w = self.lock();
        w.journal.push(Event::Call {
            ns: self.ns.clone(),
            call,
        });
        if let Some(q) = w.failures.get_mut(&(self.ns.clone(), op)) {
            if !q.is_empty() {
                let errno = q.remove(0);
                return Err(nl_err(op, errno, target()));
            }
        }
        f(&mut w, &self.ns)
    }

    /// Like [`Self::op`] for an operation on one existing link of this namespace.
    fn on_link<T>(
        &self,
        op: &'static str,
        call: Call,
        index: u32,
        f: impl FnOnce(&mut Link) -> Result<T>,
    ) -> Result<T> {
        self.op(op, call, idx(index), |w, ns| {
            let link = w
                .space(ns)
                .links
                .iter_mut()
                .find(|l| l.index == index)
                .ok_or_else(|| nl_err(op, libc::ENODEV, format!("ifindex {index}")))?;
            f(link)
        })
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
        let call = Call::LinkByName(name.into());
        self.op(
            "link_by_name",
            call,
            || name.into(),
            |w, ns| Ok(w.space(ns).link(name).cloned()),
        )
    }

    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        self.op(
            "link_by_index",
            Call::LinkByIndex(index),
            idx(index),
            |w, ns| Ok(w.space(ns).links.iter().find(|l| l.index == index).cloned()),
        )
    }

    fn links(&mut self) -> Result<Vec<Link>> {
        self.op("links", Call::Links, String::new, |w, ns| {
            Ok(w.space(ns).links.clone())
        })
    }

    fn bridge_add(&mut self, name: &str, mtu: Option<u32>) -> Result<()> {
        let call = Call::BridgeAdd {
            name: name.into(),
            mtu,
        };
        self.op(
            "bridge_add",
            call,
            || name.into(),
            |w, ns| {
                validate_ifname(name)?;
                if w.space(ns).link(name).is_some() {
                    return Err(nl_err("bridge_add", libc::EEXIST, name.into()));
                }
                let index = w.new_link(ns, name, Some("bridge"));
                if let Some(l) = w.space(ns).links.iter_mut().find(|l| l.index == index) {
                    l.mtu = mtu.unwrap_or(l.mtu);
                }
                Ok(())
            },
        )
    }

    fn veth_add(&mut self, spec: &VethSpec) -> Result<()> {
        let peer_ns = spec.peer_netns.path().to_path_buf();
        let call = Call::VethAdd {
            host_name: spec.host_name.into(),
            peer_name: spec.peer_name.into(),
            peer_netns: peer_ns.clone(),
            mtu: spec.mtu,
            peer_mac: spec.peer_mac,
        };
        self.op(
            "veth_add",
            call,
            || spec.host_name.into(),
            |w, ns| {
                validate_ifname(spec.host_name)?;
                validate_ifname(spec.peer_name)?;
                if w.space(ns).link(spec.host_name).is_some()
                    || w.space(&peer_ns).link(spec.peer_name).is_some()
                {
                    return Err(nl_err("veth_add", libc::EEXIST, spec.host_name.into()));
                }
                let mtu = spec.mtu.unwrap_or(1500);
                let host = w.new_link(ns, spec.host_name, Some("veth"));
                let peer = w.new_link(&peer_ns, spec.peer_name, Some("veth"));
                for (space, index, other) in [(ns, host, peer), (peer_ns.as_path(), peer, host)] {
                    if let Some(l) = w.space(space).links.iter_mut().find(|l| l.index == index) {
                        l.mtu = mtu;
                        l.peer_index = Some(other);
                        if index == peer {
                            l.mac = spec.peer_mac.or(l.mac);
                        }
                    }
                }
                Ok(())
            },
        )
    }

    fn link_set_up(&mut self, index: u32) -> Result<()> {
        self.on_link("link_set_up", Call::LinkSetUp(index), index, |l| {
            l.up = true;
            l.oper_up = true;
            Ok(())
        })
    }

    fn link_set_down(&mut self, index: u32) -> Result<()> {
        self.on_link("link_set_down", Call::LinkSetDown(index), index, |l| {
            l.up = false;
            l.oper_up = false;
            Ok(())
        })
    }

    fn link_set_master(&mut self, index: u32, master: u32) -> Result<()> {
        let call = Call::LinkSetMaster { index, master };
        self.op("link_set_master", call, idx(index), |w, ns| {
            let space = w.space(ns);
            if master != 0 && !space.links.iter().any(|l| l.index == master) {
                return Err(nl_err(
                    "link_set_master",
                    libc::ENODEV,
                    format!("ifindex {master}"),
                ));
            }
            let link = space
                .links
                .iter_mut()
                .find(|l| l.index == index)
                .ok_or_else(|| {
                    nl_err("link_set_master", libc::ENODEV, format!("ifindex {index}"))
                })?;
            link.master = (master != 0).then_some(master);
            Ok(())
        })
    }

    fn link_set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let call = Call::LinkSetMtu { index, mtu };
        self.on_link("link_set_mtu", call, index, |l| {
            l.mtu = mtu;
            Ok(())
        })
    }

    fn link_set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let call = Call::LinkSetMac { index, mac };
        self.on_link("link_set_mac", call, index, |l| {
            l.mac = Some(mac);
            Ok(())
        })
    }

    fn link_set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        let call = Call::LinkSetPromisc { index, on };
        self.on_link("link_set_promisc", call, index, |l| {
            l.promisc = on;
            Ok(())
        })
    }

    fn brport_set(
        &mut self,
        index: u32,
        hairpin: Option<bool>,
        isolated: Option<bool>,
    ) -> Result<()> {
        let call = Call::BrportSet {
            index,
            hairpin,
            isolated,
        };
        self.op("brport_set", call, idx(index), |w, ns| {
            let space = w.space(ns);
            let link = space
                .links
                .iter()
                .find(|l| l.index == index)
                .ok_or_else(|| nl_err("brport_set", libc::ENODEV, format!("ifindex {index}")))?;
            if link.master.is_none() {
                // The kernel has no bridge port to configure on an unenslaved link.
                return Err(nl_err(
                    "brport_set",
                    libc::EOPNOTSUPP,
                    format!("ifindex {index}"),
                ));
            }
            let f = space.brport.entry(index).or_default();
            f.hairpin = hairpin.unwrap_or(f.hairpin);
            f.isolated = isolated.unwrap_or(f.isolated);
            Ok(())
        })
    }

    fn link_del(&mut self, index: u32) -> Result<()> {
        self.op("link_del", Call::LinkDel(index), idx(index), |w, ns| {
            let space = w.space(ns);
            let pos = space
                .links
                .iter()
                .position(|l| l.index == index)
                .ok_or_else(|| nl_err("link_del", libc::ENODEV, format!("ifindex {index}")))?;
            let link = space.links.remove(pos);
            // Deleting one veth end deletes the other, wherever it lives.
            let gone = [Some(index), link.peer_index];
            for space in w.spaces.values_mut() {
                space.links.retain(|l| !gone.contains(&Some(l.index)));
                for l in &mut space.links {
                    if gone.contains(&l.master) {
                        l.master = None;
                    }
                }
                space.addrs.retain(|a| !gone.contains(&Some(a.index)));
                space
                    .routes
                    .retain(|r| r.oif.is_none() || !gone.contains(&r.oif));
                for i in gone.into_iter().flatten() {
                    space.brport.remove(&i);
                    space.vlans.remove(&i);
                    space.vlan_filtering.remove(&i);
                }
            }
            Ok(())
        })
    }

    fn addr_add(&mut self, index: u32, addr: IpNet) -> Result<()> {
        let target = move || format!("{addr} on ifindex {index}");
        self.op(
            "addr_add",
            Call::AddrAdd { index, addr },
            target,
            |w, ns| {
                let space = w.space(ns);
                if !space.links.iter().any(|l| l.index == index) {
                    return Err(nl_err("addr_add", libc::ENODEV, format!("ifindex {index}")));
                }
                if space
                    .addrs
                    .iter()
                    .any(|a| a.index == index && a.addr.addr() == addr.addr())
                {
                    return Err(nl_err("addr_add", libc::EEXIST, target()));
                }
                space.addrs.push(Addr {
                    index,
                    addr,
                    scope: RT_SCOPE_UNIVERSE,
                    flags: super::IFA_F_PERMANENT | space.new_addr_flags,
                });
                // The kernel adds the prefix route with the address.
                space.routes.push(RouteSpec {
                    oif: Some(index),
                    table: Some(RT_TABLE_MAIN),
                    scope: Some(RT_SCOPE_LINK),
                    ..RouteSpec::new(addr.trunc())
                });
                Ok(())
            },
        )
    }

    fn addr_del(&mut self, index: u32, addr: IpNet) -> Result<()> {
        let target = move || format!("{addr} on ifindex {index}");
        self.op(
            "addr_del",
            Call::AddrDel { index, addr },
            target,
            |w, ns| {
                let space = w.space(ns);
                let before = space.addrs.len();
                space
                    .addrs
                    .retain(|a| !(a.index == index && a.addr == addr));
                if space.addrs.len() == before {
                    return Err(nl_err("addr_del", libc::EADDRNOTAVAIL, target()));
                }
                space
                    .routes
                    .retain(|r| !(r.oif == Some(index) && r.gw.is_none() && r.dst == addr.trunc()));
                Ok(())
            },
        )
    }

    fn addrs(&mut self, index: Option<u32>) -> Result<Vec<Addr>> {
        self.op("addrs", Call::Addrs(index), String::new, |w, ns| {
            Ok(w.space(ns)
                .addrs
                .iter()
                .filter(|a| index.is_none_or(|i| a.index == i))
                .cloned()
                .collect())
        })
    }

    fn route_add(&mut self, r: &RouteSpec) -> Result<()> {
        let target = || r.dst.to_string();
        self.op("route_add", Call::RouteAdd(r.clone()), target, |w, ns| {
            let space = w.space(ns);
            if let Some(oif) = r.oif {
                if !space.links.iter().any(|l| l.index == oif) {
                    return Err(nl_err("route_add", libc::ENODEV, format!("ifindex {oif}")));
                }
            }
            // Like the kernel with NLM_F_EXCL: one route per (table, destination, metric),
            // whatever its gateway or device.
            let table = r.table.unwrap_or(RT_TABLE_MAIN);
            if space.routes.iter().any(|x| {
                x.dst == r.dst
                    && x.table.unwrap_or(RT_TABLE_MAIN) == table
                    && x.priority == r.priority
            }) {
                return Err(nl_err("route_add", libc::EEXIST, r.dst.to_string()));
            }
            let mut stored = r.clone();
            stored.table = Some(r.table.unwrap_or(RT_TABLE_MAIN));
            stored.scope = Some(r.scope.unwrap_or(match (&r.dst, &r.gw) {
                (IpNet::V4(_), None) => RT_SCOPE_LINK,
                _ => RT_SCOPE_UNIVERSE,
            }));
            space.routes.push(stored);
            Ok(())
        })
    }

    fn route_del(&mut self, r: &RouteSpec) -> Result<()> {
        let target = || r.dst.to_string();
        self.op("route_del", Call::RouteDel(r.clone()), target, |w, ns| {
            let space = w.space(ns);
            match space.routes.iter().position(|x| routes_match(r, x)) {
                Some(pos) => {
                    space.routes.remove(pos);
                    Ok(())
                }
                None => Err(nl_err("route_del", libc::ESRCH, r.dst.to_string())),
            }
        })
    }

    fn routes(&mut self, family: Family) -> Result<Vec<RouteSpec>> {
        self.op("routes", Call::Routes(family), String::new, |w, ns| {
            Ok(w.space(ns)
                .routes
                .iter()
                .filter(|r| Family::of(&r.dst.addr()) == family)
                .cloned()
                .collect())
        })
    }

    fn bridge_set_vlan_filtering(&mut self, bridge: u32, on: bool) -> Result<()> {
        let call = Call::BridgeSetVlanFiltering { bridge, on };
        self.op("bridge_set_vlan_filtering", call, idx(bridge), |w, ns| {
            let space = w.space(ns);
            let kind = space
                .links
                .iter()
                .find(|l| l.index == bridge)
                .map(|l| l.kind.as_deref() == Some("bridge"));
            match kind {
                None => Err(nl_err(
                    "bridge_set_vlan_filtering",
                    libc::ENODEV,
                    idx(bridge)(),
                )),
                Some(false) => Err(nl_err(
                    "bridge_set_vlan_filtering",
                    libc::EOPNOTSUPP,
                    idx(bridge)(),
                )),
                Some(true) => {
                    space.vlan_filtering.insert(bridge, on);
                    Ok(())
                }
            }
        })
    }

    fn bridge_vlan_add(&mut self, index: u32, vlan: BridgeVlan) -> Result<()> {
        let target = move || format!("vlan {} on ifindex {index}", vlan.vid);
        self.op(
            "bridge_vlan_add",
            Call::BridgeVlanAdd { index, vlan },
            target,
            |w, ns| {
                super::socket::check_vid(vlan.vid)?;
                let space = w.space(ns);
                let is_port = space
                    .links
                    .iter()
                    .find(|l| l.index == index)
                    .ok_or_else(|| nl_err("bridge_vlan_add", libc::ENODEV, idx(index)()))?
                    .master
                    .is_some();
                if !is_port {
                    return Err(nl_err("bridge_vlan_add", libc::EINVAL, idx(index)()));
                }
                let list = space.vlans.entry(index).or_default();
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
            },
        )
    }

    fn bridge_vlan_del(&mut self, index: u32, vid: u16) -> Result<()> {
        let target = move || format!("vlan {vid} on ifindex {index}");
        self.op(
            "bridge_vlan_del",
            Call::BridgeVlanDel { index, vid },
            target,
            |w, ns| {
                let list = w.space(ns).vlans.entry(index).or_default();
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
            },
        )
    }

    fn bridge_vlans(&mut self, index: u32) -> Result<Vec<BridgeVlan>> {
        self.op(
            "bridge_vlans",
            Call::BridgeVlans(index),
            String::new,
            |w, ns| Ok(w.space(ns).vlans.get(&index).cloned().unwrap_or_default()),
        )
    }

    fn neighbours(&mut self, family: Family) -> Result<Vec<Neighbour>> {
        self.op(
            "neighbours",
            Call::Neighbours(family),
            String::new,
            |w, ns| {
                Ok(w.space(ns)
                    .neighbours
                    .iter()
                    .filter(|n| Family::of(&n.ip) == family)
                    .cloned()
                    .collect())
            },
        )
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
        let f = FakeNetlink::new();
        let mut host = f.clone();
        let ops: &mut dyn NetlinkOps = &mut host;
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

        // The peer was born in the other namespace, under its final name and MAC.
        let cont = f.netns(ns.path());
        let peer = cont.state().link("eth0").cloned().unwrap();
        assert_eq!(peer.mac, Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(peer.peer_index, Some(veth.index));
        assert_eq!(v.peer_index, Some(peer.index));
        assert_eq!(
            f.state().brport[&veth.index],
            BrportFlags {
                hairpin: true,
                isolated: false
            }
        );
        assert_eq!(
            f.calls()[0],
            Call::BridgeAdd {
                name: "cni0".into(),
                mtu: Some(1400)
            }
        );
        assert!(f.calls().contains(&Call::LinkSetMaster {
            index: veth.index,
            master: br.index
        }));
        assert!(
            cont.calls().is_empty(),
            "nothing was asked of the peer namespace"
        );

        // Deleting the host end takes the peer with it.
        host.link_del(veth.index).unwrap();
        assert_eq!(cont.state().link_names(), ["lo"]);
        assert!(host.link_by_name("veth01234567").unwrap().is_none());
    }

    #[test]
    fn deleting_the_peer_end_deletes_the_host_end() {
        let ns = ns();
        let mut host = FakeNetlink::new();
        let br = host.add_link("br0", Some("bridge"));
        host.veth_add(&VethSpec {
            host_name: "veth0",
            peer_name: "eth0",
            peer_netns: &ns,
            mtu: None,
            peer_mac: None,
        })
        .unwrap();
        let veth = host.state().link("veth0").unwrap().index;
        host.link_set_master(veth, br).unwrap();
        let mut cont = host.netns(ns.path());
        let peer = cont.link_by_name("eth0").unwrap().unwrap();
        cont.link_del(peer.index).unwrap();
        assert_eq!(host.state().link_names(), ["lo", "br0"]);
        assert_eq!(
            host.journal().last(),
            Some(&Event::Call {
                ns: ns.path().to_path_buf(),
                call: Call::LinkDel(peer.index)
            })
        );
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
        assert!(f.state().vlan_filtering[&br]);
    }

    #[test]
    fn fail_next_is_one_shot_per_namespace_and_recorded() {
        let mut f = FakeNetlink::new();
        let mut other = f.netns("/run/netns/other");
        f.fail_next("bridge_add", libc::EPERM);
        other.bridge_add("br0", None).unwrap();
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
            f.calls()
                .iter()
                .filter(|c| matches!(c, Call::BridgeAdd { .. }))
                .count(),
            2
        );
        f.note("ipam add");
        assert_eq!(f.journal().len(), 5);
        assert_eq!(f.journal()[4], Event::Note("ipam add".into()));
    }

    #[test]
    fn neighbours_by_family() {
        let mut f = FakeNetlink::new();
        f.edit(|ns| {
            ns.neighbours = vec![
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
            ]
        });
        let v4 = f.neighbours(Family::V4).unwrap();
        assert_eq!(v4.len(), 1);
        assert_eq!(v4[0].state_name(), "REACHABLE");
        let v6 = f.neighbours(Family::V6).unwrap();
        assert_eq!(v6[0].state_name(), "FAILED");
        assert_eq!(
            f.calls(),
            [Call::Neighbours(Family::V4), Call::Neighbours(Family::V6)]
        );
    }
}
