//! `netns show NAME`: the namespace's kernel state (read over netlink from inside it), its CNI
//! attachments from the result cache, and the firewall entries of those attachments.

use std::collections::HashMap;

use cni::cache::CacheEntry;
use cni::{CniResult, PortMapping};
use kernel::{Family, Link, NetlinkOps};
use serde::Serialize;
use serde_json::Value;

use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::fw::{self, FwEntry, Owner};
use crate::table::{dash, Table};

/// One interface.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Link kind (veth, bridge...), empty for devices without one (lo).
    pub kind: String,
    /// UP, DOWN or LOWERLAYERDOWN (admin up without carrier).
    pub state: String,
    /// MAC address.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// Master device name.
    pub master: String,
}

/// One address.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AddrInfo {
    /// Interface name.
    pub interface: String,
    /// Address/prefix.
    pub address: String,
    /// global, link or host.
    pub scope: String,
}

/// One route.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination.
    pub dst: String,
    /// Gateway.
    pub gateway: String,
    /// Output interface.
    pub interface: String,
    /// Table ("main" or a number).
    pub table: String,
    /// Metric.
    pub metric: Option<u32>,
}

/// One neighbour entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NeighInfo {
    /// Interface name.
    pub interface: String,
    /// Address.
    pub address: String,
    /// MAC.
    pub mac: String,
    /// NUD state.
    pub state: String,
}

/// One cached attachment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AttachmentInfo {
    /// Network name.
    pub network: String,
    /// Container ID.
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
    /// Addresses from the cached result.
    pub ips: Vec<String>,
    /// Published ports from the cached `portMappings` capability.
    pub ports: Vec<PortMapping>,
}

/// Everything `show` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Namespace name.
    pub name: String,
    /// Pin path.
    pub path: String,
    /// Interfaces.
    pub interfaces: Vec<IfaceInfo>,
    /// Addresses.
    pub addresses: Vec<AddrInfo>,
    /// Routes (every table except local).
    pub routes: Vec<RouteInfo>,
    /// Neighbours.
    pub neighbours: Vec<NeighInfo>,
    /// Attachments from the result cache.
    pub attachments: Vec<AttachmentInfo>,
    /// Firewall entries of those attachments.
    pub firewall: Vec<FwEntry>,
}

fn state(l: &Link) -> &'static str {
    match (l.up, l.oper_up) {
        (false, _) => "DOWN",
        (true, true) => "UP",
        // Loopback never reports operstate UP (it is UNKNOWN), it is simply up.
        (true, false) if l.name == "lo" => "UP",
        (true, false) => "LOWERLAYERDOWN",
    }
}

fn scope_name(s: u8) -> String {
    match s {
        0 => "global".into(),
        253 => "link".into(),
        254 => "host".into(),
        n => n.to_string(),
    }
}

/// Attachment view of a cache entry: IPs from the cached result, ports from capabilityArgs.
pub fn attachment_info(e: &CacheEntry) -> AttachmentInfo {
    let ips = e
        .result
        .as_ref()
        .and_then(|r| {
            let v = r
                .get("cniVersion")
                .and_then(Value::as_str)
                .unwrap_or("1.0.0");
            CniResult::from_value(r, v).ok()
        })
        .map(|r| r.ips.iter().map(|i| i.address.to_string()).collect())
        .unwrap_or_default();
    let ports = e
        .capability_args
        .get("portMappings")
        .cloned()
        .and_then(|v| PortMapping::list_from_value(v).ok())
        .unwrap_or_default();
    AttachmentInfo {
        network: e.network_name.clone(),
        container_id: e.container_id.clone(),
        ifname: e.if_name.clone(),
        ips,
        ports,
    }
}

/// Collect the report for namespace `name`.
pub fn collect(ctx: &Ctx, name: &str) -> Result<Report> {
    let ns = ctx.open_ns(name)?;
    let kerr = |e: kernel::Error| Error::Failed(format!("reading namespace {name:?}: {e}"));
    let mut nl = kernel::Netlink::open_in(&ns).map_err(kerr)?;
    let links = nl.links().map_err(kerr)?;
    let names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let ifname = |i: u32| names.get(&i).cloned().unwrap_or_else(|| format!("if{i}"));
    let interfaces = links
        .iter()
        .map(|l| IfaceInfo {
            index: l.index,
            name: l.name.clone(),
            kind: l.kind.clone().unwrap_or_default(),
            state: state(l).into(),
            mac: l
                .mac
                .map(|m| kernel::mac::format_mac(&m))
                .unwrap_or_default(),
            mtu: l.mtu,
            master: l.master.map(&ifname).unwrap_or_default(),
        })
        .collect();
    let addresses = nl
        .addrs(None)
        .map_err(kerr)?
        .into_iter()
        .map(|a| AddrInfo {
            interface: ifname(a.index),
            address: a.addr.to_string(),
            scope: scope_name(a.scope),
        })
        .collect();
    let mut routes = Vec::new();
    let mut neighbours = Vec::new();
    for fam in [Family::V4, Family::V6] {
        for r in nl.routes(fam).map_err(kerr)? {
            routes.push(RouteInfo {
                dst: r.dst.to_string(),
                gateway: r.gw.map(|g| g.to_string()).unwrap_or_default(),
                interface: r.oif.map(&ifname).unwrap_or_default(),
                table: match r.table {
                    Some(254) | None => "main".into(),
                    Some(t) => t.to_string(),
                },
                metric: r.priority,
            });
        }
        for n in nl.neighbours(fam).map_err(kerr)? {
            neighbours.push(NeighInfo {
                interface: ifname(n.index),
                address: n.ip.to_string(),
                mac: n
                    .mac
                    .map(|m| kernel::mac::format_mac(&m))
                    .unwrap_or_default(),
                state: n.state_name().into(),
            });
        }
    }
    let entries = ctx.attachments_of(name, Some(&ns));
    let owners: Vec<Owner> = entries
        .iter()
        .map(|e| Owner {
            network: e.network_name.clone(),
            container_id: e.container_id.clone(),
            ifname: e.if_name.clone(),
        })
        .collect();
    Ok(Report {
        name: name.to_string(),
        path: ctx.ns_path(name).display().to_string(),
        interfaces,
        addresses,
        routes,
        neighbours,
        attachments: entries.iter().map(attachment_info).collect(),
        firewall: fw::collect(&owners),
    })
}

fn port_text(p: &PortMapping) -> String {
    let host = if p.host_ip.is_empty() {
        String::new()
    } else if p.host_ip.contains(':') {
        format!("[{}]:", p.host_ip)
    } else {
        format!("{}:", p.host_ip)
    };
    format!("{host}{}->{}/{}", p.host_port, p.container_port, p.protocol)
}

/// Human form: one titled table per section; empty sections say so.
pub fn render(r: &Report) -> String {
    let mut s = format!("namespace {} ({})\n", r.name, r.path);
    let mut section = |title: &str, t: Table| {
        s.push('\n');
        s.push_str(title);
        s.push('\n');
        if t.is_empty() {
            s.push_str("  (none)\n");
        } else {
            s.push_str(&t.render());
        }
    };
    let mut t = Table::new(&["NAME", "KIND", "STATE", "MAC", "MTU", "MASTER"]);
    for i in &r.interfaces {
        t.row(vec![
            i.name.clone(),
            dash(i.kind.clone()),
            i.state.clone(),
            dash(i.mac.clone()),
            i.mtu.to_string(),
            dash(i.master.clone()),
        ]);
    }
    section("INTERFACES", t);
    let mut t = Table::new(&["INTERFACE", "ADDRESS", "SCOPE"]);
    for a in &r.addresses {
        t.row(vec![
            a.interface.clone(),
            a.address.clone(),
            a.scope.clone(),
        ]);
    }
    section("ADDRESSES", t);
    let mut t = Table::new(&["DESTINATION", "GATEWAY", "INTERFACE", "TABLE", "METRIC"]);
    for x in &r.routes {
        t.row(vec![
            x.dst.clone(),
            dash(x.gateway.clone()),
            dash(x.interface.clone()),
            x.table.clone(),
            dash(x.metric.map(|m| m.to_string()).unwrap_or_default()),
        ]);
    }
    section("ROUTES", t);
    let mut t = Table::new(&["INTERFACE", "ADDRESS", "MAC", "STATE"]);
    for n in &r.neighbours {
        t.row(vec![
            n.interface.clone(),
            n.address.clone(),
            dash(n.mac.clone()),
            n.state.clone(),
        ]);
    }
    section("NEIGHBOURS", t);
    let mut t = Table::new(&["NETWORK", "CONTAINER ID", "IFNAME", "IPS", "PORTS"]);
    for a in &r.attachments {
        t.row(vec![
            a.network.clone(),
            a.container_id.clone(),
            a.ifname.clone(),
            dash(a.ips.join(",")),
            dash(a.ports.iter().map(port_text).collect::<Vec<_>>().join(",")),
        ]);
    }
    section("ATTACHMENTS", t);
    let mut t = Table::new(&["CONTAINER ID", "BACKEND", "OBJECT", "ENTRY"]);
    for f in &r.firewall {
        t.row(vec![
            f.container_id.clone(),
            f.backend.clone(),
            f.object.clone(),
            f.entry.clone(),
        ]);
    }
    section("FIREWALL", t);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attachment_from_cache_entry() {
        let mut caps = serde_json::Map::new();
        caps.insert("portMappings".into(), json!([{"hostPort":8080,"containerPort":80},{"HostPort":53,"ContainerPort":53,"Protocol":"udp","HostIP":"::1"}]));
        let e = CacheEntry {
            kind: "cniCacheV1".into(),
            container_id: "c1".into(),
            if_name: "eth0".into(),
            network_name: "demo".into(),
            netns: "/run/netns/c1".into(),
            capability_args: caps,
            result: Some(
                json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.22.0.5/24"}]}),
            ),
            ..Default::default()
        };
        let a = attachment_info(&e);
        assert_eq!(a.ips, ["10.22.0.5/24"]);
        assert_eq!(a.ports.len(), 2);
        assert_eq!(port_text(&a.ports[0]), "8080->80/tcp");
        assert_eq!(port_text(&a.ports[1]), "[::1]:53->53/udp");
    }

    #[test]
    fn render_sections() {
        let r = Report {
            name: "c1".into(),
            path: "/run/netns/c1".into(),
            interfaces: vec![
                IfaceInfo {
                    index: 1,
                    name: "lo".into(),
                    kind: String::new(),
                    state: "UP".into(),
                    mac: "00:00:00:00:00:00".into(),
                    mtu: 65536,
                    master: String::new(),
                },
                IfaceInfo {
                    index: 2,
                    name: "eth0".into(),
                    kind: "veth".into(),
                    state: "UP".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: 1500,
                    master: String::new(),
                },
            ],
            addresses: vec![AddrInfo {
                interface: "eth0".into(),
                address: "10.22.0.5/24".into(),
                scope: "global".into(),
            }],
            routes: vec![RouteInfo {
                dst: "0.0.0.0/0".into(),
                gateway: "10.22.0.1".into(),
                interface: "eth0".into(),
                table: "main".into(),
                metric: None,
            }],
            neighbours: vec![],
            attachments: vec![],
            firewall: vec![],
        };
        let text = render(&r);
        assert!(text.starts_with("namespace c1 (/run/netns/c1)\n"), "{text}");
        assert!(text.contains("\nINTERFACES\nNAME  KIND  STATE  MAC                MTU    MASTER\nlo    -     UP     00:00:00:00:00:00  65536  -\neth0  veth  UP     02:00:00:00:00:01  1500   -\n"), "{text}");
        assert!(text.contains("\nROUTES\nDESTINATION  GATEWAY    INTERFACE  TABLE  METRIC\n0.0.0.0/0    10.22.0.1  eth0       main   -\n"), "{text}");
        assert!(text.contains("\nNEIGHBOURS\n  (none)\n"), "{text}");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["interfaces"][1]["kind"], "veth");
        assert_eq!(j["addresses"][0]["address"], "10.22.0.5/24");
    }

    #[test]
    fn link_states() {
        let mut l = Link {
            name: "eth0".into(),
            up: true,
            ..Link::default()
        };
        assert_eq!(state(&l), "LOWERLAYERDOWN");
        l.oper_up = true;
        assert_eq!(state(&l), "UP");
        l.up = false;
        assert_eq!(state(&l), "DOWN");
        let lo = Link {
            name: "lo".into(),
            up: true,
            ..Link::default()
        };
        assert_eq!(state(&lo), "UP");
    }
}
