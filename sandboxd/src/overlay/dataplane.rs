//! Kernel programming of an overlay network on this node (flannel's VXLAN backend):
//! one VXLAN device `ovx.<VNI>` with learning off, MTU = uplink − 50,
//! address `<own slice>.0/32`; per remote slice a permanent neighbour `<slice>.0 → VtepMAC`, a
//! permanent FDB entry `VtepMAC → PublicIP` and a route `<slice> via <slice>.0 dev ovx.<VNI>
//! onlink`. Everything is idempotent (replace, or "exists" ignored), so a re-sync simply programs
//! the desired state and removes what is not desired.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use kernel::netlink::overlay::{FdbEntry, VxlanSpec};
use kernel::{Family, Netlink, NetlinkOps, RouteSpec};

use super::{NetDef, SliceVal, VXLAN_OVERHEAD};

/// A remote node's slice as programmed: (VtepMAC, PublicIP).
pub type Peer = ([u8; 6], Ipv4Addr);

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// The VTEP MAC of `node` on `network`: locally administered, derived from the names, so it stays
/// the same across restarts without being stored.
pub fn vtep_mac(node: &str, network: &str) -> [u8; 6] {
    // FNV-1a, 64 bit: stable across Rust versions (unlike DefaultHasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0u8]).chain(network.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x0e, b[0], b[1], b[2], b[3], b[4]]
}

/// Parse a peer from a slice value.
pub fn peer_of(v: &SliceVal) -> Option<Peer> {
    Some((kernel::mac::parse_mac(&v.vtep_mac).ok()?, v.public_ip))
}

/// The underlay link holding `advertise`: (index, MTU).
pub fn underlay(advertise: Ipv4Addr) -> Result<(u32, u32), String> {
    let mut nl = Netlink::open().map_err(|e| err("netlink", e))?;
    let addrs = nl.addrs(None).map_err(|e| err("listing addresses", e))?;
    let a = addrs
        .iter()
        .find(|a| a.addr.addr() == IpAddr::V4(advertise))
        .ok_or_else(|| format!("no interface holds the advertise address {advertise}"))?;
    let l = nl
        .link_by_index(a.index)
        .map_err(|e| err("reading the underlay link", e))?
        .ok_or_else(|| format!("underlay link {} vanished", a.index))?;
    Ok((l.index, l.mtu))
}

/// The MTU sandboxes of an overlay network get on this node.
pub fn overlay_mtu(advertise: Ipv4Addr) -> u32 {
    underlay(advertise)
        .map(|(_, m)| m.saturating_sub(VXLAN_OVERHEAD))
        .unwrap_or(1450)
}

/// Gateway (`.0`) of a slice: the address a slice's VXLAN device holds and the next hop others
/// route through.
fn vtep_ip(slice: &Ipv4Net) -> Ipv4Addr {
    slice.network()
}

/// Create (or adopt) the VXLAN device of `def` with this node's slice; returns its index.
pub fn ensure_device(
    def: &NetDef,
    node: &str,
    advertise: Ipv4Addr,
    own: &Ipv4Net,
) -> Result<u32, String> {
    let (ul, ul_mtu) = underlay(advertise)?;
    let mut nl = Netlink::open().map_err(|e| err("netlink", e))?;
    let name = def.vxlan();
    let mac = vtep_mac(node, &def.name);
    let existing = nl
        .link_by_name(&name)
        .map_err(|e| err("looking up the VXLAN device", e))?;
    let link = match existing {
        Some(l) if l.kind.as_deref() == Some("vxlan") && l.mac == Some(mac) => l,
        other => {
            if let Some(l) = other {
                nl.link_del(l.index)
                    .map_err(|e| err("replacing a foreign device", e))?;
            }
            nl.vxlan_add(&VxlanSpec {
                name: &name,
                vni: def.vni,
                local: advertise,
                port: def.port,
                underlay: Some(ul),
                mtu: Some(ul_mtu.saturating_sub(VXLAN_OVERHEAD)),
                mac: Some(mac),
            })
            .map_err(|e| err("creating the VXLAN device", e))?;
            nl.link_by_name(&name)
                .map_err(|e| err("looking up the VXLAN device", e))?
                .ok_or_else(|| format!("{name} vanished after creation"))?
        }
    };
    let want = IpNet::V4(Ipv4Net::new(vtep_ip(own), 32).map_err(|e| err("address", e))?);
    let have = nl
        .addrs(Some(link.index))
        .map_err(|e| err("listing VXLAN addresses", e))?;
    for a in &have {
        if matches!(a.addr, IpNet::V4(_)) && a.addr != want {
            let _ = nl.addr_del(link.index, a.addr);
        }
    }
    if !have.iter().any(|a| a.addr == want) {
        match nl.addr_add(link.index, want) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(err("addressing the VXLAN device", e)),
        }
    }
    if !link.up {
        nl.link_set_up(link.index)
            .map_err(|e| err("setting the VXLAN device up", e))?;
    }
    Ok(link.index)
}

/// Index of the VXLAN device of `def`, if present.
pub fn device_index(def: &NetDef) -> Option<u32> {
    let mut nl = Netlink::open().ok()?;
    nl.link_by_name(&def.vxlan())
        .ok()
        .flatten()
        .filter(|l| l.kind.as_deref() == Some("vxlan"))
        .map(|l| l.index)
}

/// Delete the VXLAN device (its routes, neighbours and FDB entries go with it) and, when no port
/// is left on it, the network's bridge.
pub fn remove_device(def: &NetDef) -> Result<(), String> {
    let mut nl = Netlink::open().map_err(|e| err("netlink", e))?;
    if let Some(l) = nl
        .link_by_name(&def.vxlan())
        .map_err(|e| err("looking up the VXLAN device", e))?
    {
        nl.link_del(l.index)
            .map_err(|e| err("deleting the VXLAN device", e))?;
    }
    if let Some(br) = nl
        .link_by_name(&def.bridge())
        .map_err(|e| err("looking up the bridge", e))?
    {
        let links = nl.links().map_err(|e| err("listing links", e))?;
        if !links.iter().any(|l| l.master == Some(br.index)) {
            nl.link_del(br.index)
                .map_err(|e| err("deleting the bridge", e))?;
        }
    }
    Ok(())
}

/// Program one remote slice.
pub fn add_peer(index: u32, slice: &Ipv4Net, p: &Peer) -> Result<(), String> {
    let mut nl = Netlink::open().map_err(|e| err("netlink", e))?;
    add_peer_with(&mut nl, index, slice, p)
}

fn add_peer_with(nl: &mut Netlink, index: u32, slice: &Ipv4Net, p: &Peer) -> Result<(), String> {
    let gw = IpAddr::V4(vtep_ip(slice));
    // Order as flannel: neighbour and FDB first, so the route never points at an unresolved hop.
    nl.neigh_replace(index, gw, p.0)
        .map_err(|e| err("neighbour", e))?;
    nl.fdb_replace(&FdbEntry {
        index,
        mac: p.0,
        dst: IpAddr::V4(p.1),
    })
    .map_err(|e| err("fdb", e))?;
    match nl.route_add_onlink(IpNet::V4(*slice), gw, index) {
        Ok(()) => Ok(()),
        Err(e) if e.is_exists() => Ok(()),
        Err(e) => Err(err("route", e)),
    }
}

/// Remove one remote slice.
pub fn del_peer(index: u32, slice: &Ipv4Net, p: &Peer) -> Result<(), String> {
    let mut nl = Netlink::open().map_err(|e| err("netlink", e))?;
    del_peer_with(&mut nl, index, slice, Some(p))
}

fn del_peer_with(
    nl: &mut Netlink,
    index: u32,
    slice: &Ipv4Net,
    p: Option<&Peer>,
) -> Result<(), String> {
    let mut r = RouteSpec::new(IpNet::V4(*slice));
    r.oif = Some(index);
    match nl.route_del(&r) {
        Ok(()) => {}
        Err(e) if matches!(e.errno(), Some(libc::ESRCH) | Some(libc::ENOENT)) => {}
        Err(e) => return Err(err("route", e)),
    }
    nl.neigh_del(index, IpAddr::V4(vtep_ip(slice)))
        .map_err(|e| err("neighbour", e))?;
    if let Some(p) = p {
        nl.fdb_del(&FdbEntry {
            index,
            mac: p.0,
            dst: IpAddr::V4(p.1),
        })
        .map_err(|e| err("fdb", e))?;
    }
    Ok(())
}

/// Make the device's routes, neighbours and FDB entries exactly `peers` (a re-sync).
pub fn converge(index: u32, peers: &BTreeMap<Ipv4Net, Peer>) -> Result<(), String> {
    let mut nl = Netlink::open().map_err(|e| err("netlink", e))?;
    for (slice, p) in peers {
        add_peer_with(&mut nl, index, slice, p)?;
    }
    let routes = nl
        .routes_via(Family::V4, index)
        .map_err(|e| err("listing routes", e))?;
    for r in routes {
        if let IpNet::V4(d) = r.dst {
            if r.gw.is_some() && !peers.contains_key(&d) {
                del_peer_with(&mut nl, index, &d, None)?;
            }
        }
    }
    let wanted_gw: Vec<IpAddr> = peers.keys().map(|s| IpAddr::V4(vtep_ip(s))).collect();
    for n in nl
        .neighbours(Family::V4)
        .map_err(|e| err("listing neighbours", e))?
    {
        if n.index == index && !wanted_gw.contains(&n.ip) {
            let _ = nl.neigh_del(index, n.ip);
        }
    }
    let wanted_fdb: Vec<([u8; 6], IpAddr)> =
        peers.values().map(|p| (p.0, IpAddr::V4(p.1))).collect();
    for f in nl.fdb_entries(index).map_err(|e| err("listing fdb", e))? {
        if !wanted_fdb.contains(&(f.mac, f.dst)) {
            let _ = nl.fdb_del(&f);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn vtep_macs_are_stable_and_local() {
        let a = super::vtep_mac("n1", "ov");
        assert_eq!(a, super::vtep_mac("n1", "ov"));
        assert_ne!(a, super::vtep_mac("n2", "ov"));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast");
    }
}
