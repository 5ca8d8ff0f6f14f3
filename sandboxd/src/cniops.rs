//! The blocking side: everything that execs a plugin or touches the kernel. These functions run
//! on tokio's blocking pool (never on the owner), one job per sandbox at a time.
//!
//! sandboxd is just another CNI runtime: every mode goes through our plugins
//! via [`cni::runtime::CniConfig`] (libcni semantics: result cache, reverse-order DEL, CHECK,
//! GC); the only direct kernel work is what a runtime owns itself: creating, pinning and deleting
//! the sandbox's namespace (with `lo` up), deleting a removed network's bridge, and reading the
//! host's addresses and routes to pick a free default subnet.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cni::config::NetConfList;
use cni::{Attachment, CniConfig, CniResult, RuntimeConf};
use ipnet::IpNet;
use kernel::{NetNs, Netlink, NetlinkOps};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::model::{Network, PortMapping};

/// Where plugins, cache, IPAM data and pins live.
#[derive(Debug, Clone)]
pub struct Runner {
    /// Plugin path and libcni result cache.
    pub cni: CniConfig,
    /// Directory of pinned namespaces (`/run/netns`).
    pub netns_dir: PathBuf,
    /// host-local data directory for sandboxd's bridge networks.
    pub ipam_dir: PathBuf,
    /// Path naming the daemon's own namespace (host mode).
    pub host_netns: String,
    /// The overlay agent (`--cluster-store`), set once it runs: a new attachment to an overlay
    /// network first leases the node's slice through it, here, off the owner (the wait for
    /// etcd is bounded but can be seconds, and the owner must never wait).
    pub overlay: std::sync::OnceLock<crate::overlay::OverlayHandle>,
}

/// One attachment: the conflist and the runtime parameters (what libcni's `AddNetworkList`
/// takes).
#[derive(Debug, Clone)]
pub struct Attach {
    /// The conflist.
    pub list: NetConfList,
    /// Container ID (the sandbox id), netns, ifname and capability arguments.
    pub rt: RuntimeConf,
    /// `sandbox/network` for messages.
    pub label: String,
    /// An overlay network whose slice this node must hold before the ADD (a new attachment;
    /// repairs and the start-up reconcile re-ADD into a slice already held).
    pub slice: Option<crate::overlay::NetDef>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("{what}: {e}"))
}

fn parse_list(v: &Value) -> Result<NetConfList, ApiError> {
    let bytes = serde_json::to_vec(v).map_err(|e| internal("encoding conflist", e))?;
    NetConfList::parse(&bytes).map_err(|e| internal("generated conflist", e.msg))
}

/// host-local's `ranges` for a network: one range set per subnet, `ip_range` as start/end.
fn ranges(net: &Network) -> Value {
    let mut sets = Vec::new();
    for s in &net.subnets {
        let mut r = Map::new();
        r.insert("subnet".into(), json!(s.subnet.trunc().to_string()));
        if let Some(gw) = s.gateway {
            r.insert("gateway".into(), json!(gw.to_string()));
        }
        if let Some(ipr) = s.ip_range {
            let (start, end) = range_bounds(&s.subnet, &ipr);
            r.insert("rangeStart".into(), json!(start.to_string()));
            r.insert("rangeEnd".into(), json!(end.to_string()));
        }
        sets.push(Value::Array(vec![Value::Object(r)]));
    }
    Value::Array(sets)
}

/// First and last usable address of `ipr` inside `subnet` (skipping the subnet's network and
/// IPv4 broadcast addresses).
pub fn range_bounds(subnet: &IpNet, ipr: &IpNet) -> (IpAddr, IpAddr) {
    match (subnet, ipr) {
        (IpNet::V4(s), IpNet::V4(r)) => {
            let lo = u32::from(r.network()).max(u32::from(s.network()) + 1);
            let hi = u32::from(r.broadcast()).min(u32::from(s.broadcast()).saturating_sub(1));
            (IpAddr::V4(lo.into()), IpAddr::V4(hi.max(lo).into()))
        }
        (IpNet::V6(s), IpNet::V6(r)) => {
            let lo = u128::from(r.network()).max(u128::from(s.network()) + 1);
            let hi = u128::from(r.broadcast());
            (IpAddr::V6(lo.into()), IpAddr::V6(hi.max(lo).into()))
        }
        _ => (ipr.network(), ipr.broadcast()),
    }
}

/// The conflist sandboxd generates for a bridge network: bridge + host-local, portmap when the
/// endpoint publishes ports, firewall (isolating the network from sandboxd's other networks). `default_route` is false for every endpoint but the
/// sandbox's gateway endpoint, and for internal networks (no way out: no masquerade, no
/// default route).
pub fn bridge_conflist(
    net: &Network,
    ipam_dir: &Path,
    with_ports: bool,
    default_route: bool,
) -> Result<NetConfList, ApiError> {
    let mut bridge = json!({
        "type": "bridge",
        "bridge": net.bridge.clone().unwrap_or_default(),
        "isGateway": true,
        "isDefaultGateway": default_route && !net.internal,
        "ipMasq": !net.internal,
        "hairpinMode": true,
        "capabilities": {"ips": true, "mac": true},
        "ipam": {
            "type": "host-local",
            "dataDir": ipam_dir.display().to_string(),
            "ranges": ranges(net),
        },
    });
    if let (Some(mtu), Some(obj)) = (
        net.options.get("mtu").and_then(|m| m.parse::<u32>().ok()),
        bridge.as_object_mut(),
    ) {
        obj.insert("mtu".into(), json!(mtu));
    }
    let mut plugins = vec![bridge];
    if with_ports {
        plugins
            .push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    }
    // Docker isolates user networks from each other: traffic from another sandboxd bridge is
    // dropped ("same-bridge"), while the host and published ports still reach the sandboxes.
    // `icc=false` also drops traffic between sandboxes of this network ("isolated").
    let ingress = if net.options.get("icc").is_some_and(|v| v == "false") {
        "isolated"
    } else {
        "same-bridge"
    };
    plugins.push(json!({"type": "firewall", "ingressPolicy": ingress}));
    parse_list(&json!({"cniVersion": "1.1.0", "name": net.name, "plugins": plugins}))
}

/// The conflist of an overlay network (layer 6): the `overlay` meta-plugin, which delegates to
/// bridge + host-local limited to this node's slice (see [`crate::overlay::conflist_value`]).
pub fn overlay_conflist(
    net: &Network,
    with_ports: bool,
    default_route: bool,
) -> Result<NetConfList, ApiError> {
    parse_list(&crate::overlay::conflist_value(
        net,
        with_ports,
        default_route,
    ))
}

/// The one-plugin list of a special mode (`host`, `none`, `container` with its target).
pub fn mode_conflist(kind: &str, target: Option<&str>) -> Result<NetConfList, ApiError> {
    let mut p = json!({"type": kind});
    if let (Some(t), Some(o)) = (target, p.as_object_mut()) {
        o.insert("target".into(), json!(t));
    }
    // 1.0.0: these plugins keep nothing that a plugin-level GC could collect; the cache-level
    // part of GC (DEL of stale cached attachments) still runs.
    parse_list(&json!({"cniVersion": "1.0.0", "name": kind, "plugins": [p]}))
}

/// `portMappings` capability entries.
pub fn port_caps(ports: &[PortMapping]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                let mut v = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol,
                });
                if let (Some(ip), Some(o)) = (p.host_ip, v.as_object_mut()) {
                    o.insert("hostIP".into(), json!(ip.to_string()));
                }
                v
            })
            .collect(),
    )
}

impl Runner {
    /// ADD; on failure, DEL what the partial ADD left (the runtime's duty under the CNI spec).
    pub fn add(&self, a: &Attach) -> Result<CniResult, ApiError> {
        if let Some(def) = &a.slice {
            let h = self.overlay.get().ok_or_else(|| {
                ApiError::Unavailable(format!(
                    "{}: overlay networks need a cluster store (--cluster-store)",
                    a.label
                ))
            })?;
            h.ensure_slice(def)?;
        }
        match self.cni.add_network_list(&a.list, &a.rt) {
            Ok(r) => Ok(r),
            Err(e) => {
                if let Err(d) = self.cni.del_network_list(&a.list, &a.rt) {
                    tracing::warn!(attachment = %a.label, error = %d.msg, "rollback DEL failed");
                }
                Err(ApiError::Internal(format!("{}: {}", a.label, e.msg)))
            }
        }
    }

    /// DEL (idempotent; uses the cached result as prevResult).
    pub fn del(&self, a: &Attach) -> Result<(), ApiError> {
        self.cni
            .del_network_list(&a.list, &a.rt)
            .map_err(|e| ApiError::Internal(format!("{}: DEL: {}", a.label, e.msg)))
    }

    /// What the firewall still holds for an attachment, read back through the firewall
    /// crate's listing (`firewall::list`, the one `netns show` uses): empty after a clean DEL.
    /// A failure to look is an error, never an empty list.
    pub fn firewall_leftovers(a: &Attach) -> Result<Vec<String>, String> {
        let left = firewall::list::list(&a.list.name, &a.rt.container_id, &a.rt.ifname)
            .map_err(|e| format!("listing firewall entries: {e}"))?;
        Ok(left
            .into_iter()
            .map(|e| format!("{} {}", e.object, e.entry))
            .collect())
    }

    /// CHECK against the cached result.
    pub fn check(&self, a: &Attach) -> Result<(), String> {
        self.cni
            .check_network_list(&a.list, &a.rt)
            .map_err(|e| e.msg)
    }

    /// GC a network with its valid attachments.
    pub fn gc(&self, list: &NetConfList, valid: &[Attachment]) -> Result<(), String> {
        self.cni.gc_network_list(list, valid).map_err(|e| e.msg)
    }

    /// GC of a user conflist (`driver: "cni"`): only the cache-level half, DEL of our own stale
    /// cached attachments. The plugin-level GC keeps only the attachments it is given, and
    /// other runtimes on the host may use the same conflist (same network name), so sending it
    /// our attachments alone would collect theirs: leases, firewall and port-map entries.
    pub fn gc_cache_only(&self, list: &NetConfList, valid: &[Attachment]) -> Result<(), String> {
        let mut l = list.clone();
        // Below 1.1.0 the runtime sends no plugin GC (cni::runtime::gc_network_list).
        l.cni_version = Some("1.0.0".into());
        l.cni_versions.clear();
        self.cni.gc_network_list(&l, valid).map_err(|e| e.msg)
    }

    /// Pin path of a sandbox's namespace.
    pub fn pin_path(&self, name: &str) -> String {
        self.netns_dir.join(name).display().to_string()
    }

    /// Create and pin a namespace at `<netns_dir>/<name>` with `lo` up.
    pub fn create_netns(&self, name: &str) -> Result<(), ApiError> {
        let path = kernel::netns::create_pinned(&self.netns_dir, name)
            .map_err(|e| internal("creating namespace", e))?;
        let up = NetNs::open(&path).and_then(|ns| {
            let mut nl = Netlink::open_in(&ns)?;
            match nl.link_by_name("lo")? {
                Some(lo) => nl.link_set_up(lo.index),
                None => Ok(()),
            }
        });
        if let Err(e) = up {
            let _ = kernel::netns::delete_pinned(&self.netns_dir, name);
            return Err(internal("bringing up lo", e));
        }
        Ok(())
    }

    /// Unpin (and so delete) a namespace sandboxd created; a missing pin is fine.
    pub fn delete_netns(&self, name: &str) -> Result<(), ApiError> {
        kernel::netns::delete_pinned(&self.netns_dir, name)
            .map_err(|e| internal("deleting namespace", e))
    }

    /// Whether a namespace path still names a namespace.
    pub fn netns_alive(path: &str) -> bool {
        NetNs::open(Path::new(path)).is_ok()
    }

    /// Remove the isolation rules of a removed network's bridge. The `firewall` plugin keeps
    /// them after DEL and GC (the reference does), but the daemon owns the bridge's whole life,
    /// so they go with the network. None there is fine.
    pub fn delete_isolation(bridge: &str) -> Result<(), ApiError> {
        let backend = firewall::choose_backend(None).map_err(|e| internal("firewall", e))?;
        firewall::forward::forward_firewall(backend, firewall::forward::DEFAULT_ADMIN_CHAIN)
            .and_then(|fw| fw.del_isolation(bridge))
            .map_err(|e| internal("removing isolation rules", e))
    }

    /// Delete a bridge device of a removed network (absent is fine).
    pub fn delete_bridge(name: &str) -> Result<(), ApiError> {
        let mut nl = Netlink::open().map_err(|e| internal("netlink", e))?;
        if let Some(l) = nl
            .link_by_name(name)
            .map_err(|e| internal("looking up bridge", e))?
        {
            if l.kind.as_deref() == Some("bridge") {
                nl.link_del(l.index)
                    .map_err(|e| internal("deleting bridge", e))?;
            }
        }
        Ok(())
    }
}

/// Every prefix already used in the daemon's namespace (addresses and routes, default routes
/// excluded), to skip when picking a default subnet (Docker does the same).
pub fn host_prefixes() -> Vec<IpNet> {
    let mut out = Vec::new();
    if let Ok(mut nl) = Netlink::open() {
        if let Ok(addrs) = nl.addrs(None) {
            out.extend(addrs.into_iter().map(|a| a.addr.trunc()));
        }
        if let Ok(routes) = nl.routes(kernel::netlink::Family::V4) {
            out.extend(
                routes
                    .into_iter()
                    .map(|r| r.dst)
                    .filter(|d| d.prefix_len() > 0),
            );
        }
    }
    out
}

/// Whether two prefixes overlap.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The default pool: 172.17–31.0.0/16, then 192.168.0–240.0/20 (Docker's defaults).
pub fn default_pool() -> Vec<IpNet> {
    let mut v: Vec<IpNet> = (17..=31)
        .filter_map(|b| format!("172.{b}.0.0/16").parse().ok())
        .collect();
    v.extend((0..16).filter_map(|i| format!("192.168.{}.0/20", i * 16).parse::<IpNet>().ok()));
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    fn net(internal: bool) -> Network {
        Network {
            id: "0".repeat(64),
            name: "n1".into(),
            driver: "bridge".into(),
            builtin: false,
            subnets: vec![crate::model::Subnet {
                subnet: "10.5.0.0/24".parse().unwrap(),
                gateway: None,
                ip_range: Some("10.5.0.128/25".parse().unwrap()),
            }],
            internal,
            ipv6: false,
            bridge: Some("sbr-x".into()),
            options: BTreeMap::from([("mtu".to_string(), "1400".to_string())]),
            labels: BTreeMap::new(),
            created: String::new(),
            endpoints: vec![],
        }
    }

    #[test]
    fn generated_conflists() {
        let l = bridge_conflist(&net(false), Path::new("/d"), true, true).unwrap();
        let types: Vec<&str> = l
            .plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "firewall"]);
        let b = &l.plugins[0];
        assert_eq!(b["ipMasq"], true);
        assert_eq!(b["isDefaultGateway"], true);
        assert_eq!(b["mtu"], 1400);
        assert_eq!(b["ipam"]["ranges"][0][0]["rangeStart"], "10.5.0.128");
        assert_eq!(b["ipam"]["ranges"][0][0]["rangeEnd"], "10.5.0.254");
        let i = bridge_conflist(&net(true), Path::new("/d"), false, true).unwrap();
        assert_eq!(i.plugins.len(), 2);
        assert_eq!(i.plugins[0]["ipMasq"], false);
        assert_eq!(i.plugins[0]["isDefaultGateway"], false);
        let c = mode_conflist("container", Some("/run/netns/o")).unwrap();
        assert_eq!(c.plugins[0]["target"], "/run/netns/o");
    }

    #[test]
    fn pool_and_overlap() {
        let p = default_pool();
        assert_eq!(p[0].to_string(), "172.17.0.0/16");
        assert!(overlaps(&p[0], &"172.17.5.0/24".parse().unwrap()));
        assert!(!overlaps(&p[0], &p[1]));
    }
}
