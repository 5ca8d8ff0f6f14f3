//! Multi-host overlay networks over etcd (flannel's model;
//! design and key layout in docs/overlay.md).
//!
//! - etcd holds the network definitions (`<prefix>/networks/<name>`, plain keys) and one slice
//!   lease per node and network (`<prefix>/subnets/<name>/<a.b.c.d>-<len>`, bound to the node's
//!   etcd lease, created in a transaction that fails when the key exists).
//! - One agent task per daemon ([`agent`]) owns the etcd session: it lists and watches the prefix,
//!   keeps the node's lease alive, leases slices on demand, releases idle ones, and tells the
//!   owner about networks ([`OwnerMsg`]). It programs the kernel through [`dataplane`]: per overlay
//!   network one VXLAN device (learning off), per remote slice a permanent neighbour, a permanent
//!   FDB entry and an `onlink` route.
//! - Sandboxes attach through the `overlay` CNI meta-plugin (plugins/overlay), which reads the
//!   node's lease file ([`LeaseFile`], written here) and delegates to bridge + host-local limited
//!   to the slice, the same bridge plugin path as local networks.
//! - The owner talks to the agent through [`OverlayHandle`]: blocking calls with a bounded wait,
//!   so a lost etcd turns into a clear 503 instead of a hung request.
//! - Names: each node publishes its endpoints on each overlay network
//!   (`<prefix>/names/<network>/<node>`, bound to the node's lease, so a node that dies takes its
//!   names with it); every node's name service answers the other nodes' endpoints too.

pub mod agent;
pub mod dataplane;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{bad, ApiError};
use crate::model::{Network, NetworkRec, Subnet};

/// Default UDP port of the VXLAN devices (the kernel's historical default, flannel's too).
pub const DEFAULT_PORT: u16 = 8472;
/// Default slice prefix length.
pub const DEFAULT_SUBNET_LEN: u8 = 24;
/// Key prefix in etcd.
pub const DEFAULT_PREFIX: &str = "/rcni.io/overlay";
/// Bytes a VXLAN-over-IPv4 encapsulation adds (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Where the lease files for the `overlay` CNI plugin go (`/run/rcni/overlay` unless the daemon
/// was told otherwise); set once at start.
static LEASE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The lease-file directory.
pub fn lease_dir() -> PathBuf {
    LEASE_DIR
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/run/rcni/overlay"))
}

/// Command-line configuration of the cluster store.
#[derive(Debug, Clone)]
pub struct Config {
    /// etcd endpoints (`http://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// This node's underlay address (VXLAN source, published in its leases).
    pub advertise: Ipv4Addr,
    /// Node name (unique in the cluster).
    pub node: String,
    /// TTL of the node's etcd lease, seconds.
    pub lease_ttl: i64,
    /// etcd key prefix.
    pub prefix: String,
    /// Lease files for the CNI plugin.
    pub lease_dir: PathBuf,
    /// Local state (slices kept across restarts, the etcd lease id).
    pub state_dir: PathBuf,
    /// host-local data directory sandboxd uses (leases count as "slice in use").
    pub ipam_dir: PathBuf,
    /// Where the CNI plugin keeps its per-attachment delegate configs.
    pub cni_state_dir: PathBuf,
}

/// Parse `etcd://HOST:PORT[,HOST:PORT…]` (also accepts `http://` and bare `HOST:PORT`) into gRPC
/// endpoints.
pub fn parse_store(s: &str) -> Result<Vec<String>, String> {
    let rest = s
        .strip_prefix("etcd://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let mut out = Vec::new();
    for hp in rest.split(',').filter(|x| !x.is_empty()) {
        let ok = hp
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok || hp.contains('/') {
            return Err(format!(
                "invalid cluster store endpoint {hp:?}: use HOST:PORT"
            ));
        }
        out.push(format!("http://{hp}"));
    }
    if out.is_empty() {
        return Err(format!(
            "invalid cluster store {s:?}: use etcd://HOST:PORT[,HOST:PORT…]"
        ));
    }
    Ok(out)
}

/// A network definition as stored in etcd (`<prefix>/networks/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetDef {
    /// Name.
    pub name: String,
    /// Id (the same on every node).
    pub id: String,
    /// The whole overlay subnet.
    pub subnet: Ipv4Net,
    /// Prefix length of one node's slice.
    pub subnet_len: u8,
    /// VXLAN network identifier.
    pub vni: u32,
    /// VXLAN UDP port.
    pub port: u16,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl NetDef {
    /// The local bridge device of the network (same name on every node).
    pub fn bridge(&self) -> String {
        format!("ovb-{}", &self.id[..11.min(self.id.len())])
    }

    /// The VXLAN device of the network.
    pub fn vxlan(&self) -> String {
        format!("ovx.{}", self.vni)
    }

    /// The record the owner keeps (driver `overlay`).
    pub fn to_rec(&self) -> NetworkRec {
        let options = BTreeMap::from([
            ("subnet_len".to_string(), self.subnet_len.to_string()),
            ("vni".to_string(), self.vni.to_string()),
            ("port".to_string(), self.port.to_string()),
        ]);
        NetworkRec {
            network: Network {
                id: self.id.clone(),
                name: self.name.clone(),
                driver: "overlay".into(),
                builtin: false,
                subnets: vec![Subnet {
                    subnet: IpNet::V4(self.subnet),
                    gateway: None,
                    ip_range: None,
                }],
                internal: false,
                ipv6: false,
                bridge: Some(self.bridge()),
                options,
                labels: self.labels.clone(),
                created: self.created.clone(),
                endpoints: vec![],
            },
            conflist: None,
            deleting: false,
        }
    }

    /// Rebuild the definition from an owner record (driver `overlay`).
    pub fn from_rec(rec: &NetworkRec) -> Option<NetDef> {
        let n = &rec.network;
        let subnet = match n.subnets.first()?.subnet {
            IpNet::V4(v) => v,
            IpNet::V6(_) => return None,
        };
        let opt = |k: &str| n.options.get(k).and_then(|v| v.parse::<u32>().ok());
        Some(NetDef {
            name: n.name.clone(),
            id: n.id.clone(),
            subnet,
            subnet_len: u8::try_from(opt("subnet_len")?).ok()?,
            vni: opt("vni")?,
            port: u16::try_from(opt("port").unwrap_or(u32::from(DEFAULT_PORT))).ok()?,
            created: n.created.clone(),
            labels: n.labels.clone(),
        })
    }

    /// Validate a definition before it is stored.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.subnet.trunc() != self.subnet {
            return Err(bad(format!(
                "invalid subnet {}: host bits set (did you mean {}?)",
                self.subnet,
                self.subnet.trunc()
            )));
        }
        if self.subnet_len < self.subnet.prefix_len() || self.subnet_len > 29 {
            return Err(bad(format!(
                "invalid option subnet_len {}: use {}-29 for subnet {}",
                self.subnet_len,
                self.subnet.prefix_len(),
                self.subnet
            )));
        }
        if self.vni == 0 || self.vni > 0x00ff_ffff {
            return Err(bad(format!(
                "invalid option vni {}: use 1-16777215",
                self.vni
            )));
        }
        if self.port == 0 {
            return Err(bad("invalid option port 0"));
        }
        Ok(())
    }

    /// Every slice of the subnet, in order (the first, holding the subnet's own network
    /// address, is skipped like flannel does).
    pub fn slices(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.subnet
            .subnets(self.subnet_len)
            .into_iter()
            .flatten()
            .skip(1)
    }
}

/// A node's slice lease as stored in etcd (`<prefix>/subnets/<name>/<slice>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceVal {
    /// Node name.
    pub node: String,
    /// Underlay address of the node (VXLAN destination).
    pub public_ip: Ipv4Addr,
    /// MAC of the node's VXLAN device for this network.
    pub vtep_mac: String,
    /// VNI (for readers of the key alone).
    pub vni: u32,
}

/// The key of a slice: `a.b.c.d-len` (flannel's spelling).
pub fn slice_key(slice: &Ipv4Net) -> String {
    format!("{}-{}", slice.network(), slice.prefix_len())
}

/// Parse a slice key.
pub fn parse_slice_key(k: &str) -> Option<Ipv4Net> {
    let (a, l) = k.rsplit_once('-')?;
    Ipv4Net::new(a.parse().ok()?, l.parse().ok()?).ok()
}

/// The node's lease of one network (`<lease_dir>/<network>.json`; flannel's subnet.env, in
/// JSON). Its format belongs to the `overlay` CNI plugin that reads it; sandboxd writes it.
pub use overlay_plugin::Lease as LeaseFile;

/// What the agent tells the owner.
#[derive(Debug)]
pub enum OwnerMsg {
    /// The overlay networks in etcd: `full` replaces the whole set (a re-list); otherwise
    /// `nets` were added or changed and `gone` were deleted.
    Networks {
        /// Whether this is the complete set.
        full: bool,
        /// Added or changed (all of them when `full`).
        nets: Vec<NetworkRec>,
        /// Deleted.
        gone: Vec<String>,
    },
    /// The endpoints the other nodes publish for name resolution, all of them.
    Names(crate::dns::RemoteNames),
}

/// A command from the owner to the agent, with its reply (cloned to retry it once).
#[derive(Debug, Clone)]
pub enum Cmd {
    /// Store a new network (fails if the name exists).
    Create(NetDef, std::sync::mpsc::SyncSender<Result<(), ApiError>>),
    /// Delete a network (fails while any node holds a slice of it).
    Delete(String, std::sync::mpsc::SyncSender<Result<(), ApiError>>),
    /// Lease a slice for this node (or return the one held).
    EnsureSlice(
        NetDef,
        std::sync::mpsc::SyncSender<Result<LeaseFile, ApiError>>,
    ),
    /// This node's endpoints on a network, for the other nodes' name services (no reply: kept
    /// and re-published by every new session).
    Names(String, Vec<crate::dns::RemoteName>),
}

/// Shared between agent and owner: what the owner may read without waiting.
#[derive(Debug, Default)]
pub struct Shared {
    /// etcd answered recently (the session is up).
    pub healthy: bool,
    /// Networks known from etcd (name → definition).
    pub nets: BTreeMap<String, NetDef>,
}

/// The owner's side of the agent.
#[derive(Debug, Clone)]
pub struct OverlayHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Mutex<Shared>>,
    store: String,
    /// The longest a request waits for etcd.
    pub wait: Duration,
}

impl OverlayHandle {
    fn call<T>(
        &self,
        make: impl FnOnce(std::sync::mpsc::SyncSender<Result<T, ApiError>>) -> Cmd,
    ) -> Result<T, ApiError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.tx
            .send(make(tx))
            .map_err(|_| ApiError::Unavailable("the overlay agent is not running".into()))?;
        rx.recv_timeout(self.wait).unwrap_or_else(|_| {
            Err(ApiError::Unavailable(format!(
                "cluster store {} did not answer within {} s",
                self.store,
                self.wait.as_secs()
            )))
        })
    }

    /// Store a new overlay network in etcd.
    pub fn create_network(&self, def: NetDef) -> Result<(), ApiError> {
        self.call(|tx| Cmd::Create(def, tx))
    }

    /// Delete an overlay network from etcd.
    pub fn delete_network(&self, name: &str) -> Result<(), ApiError> {
        let n = name.to_string();
        self.call(|tx| Cmd::Delete(n, tx))
    }

    /// Publish this node's endpoints on `network` for the other nodes' name services. Does not
    /// wait: the agent keeps the list and writes it whenever it has a session.
    pub fn share_names(&self, network: &str, names: Vec<crate::dns::RemoteName>) {
        let _ = self.tx.send(Cmd::Names(network.to_string(), names));
    }

    /// Lease (or confirm) this node's slice of a network; fails while etcd is unreachable.
    pub fn ensure_slice(&self, def: &NetDef) -> Result<LeaseFile, ApiError> {
        let d = def.clone();
        self.call(|tx| Cmd::EnsureSlice(d, tx))
    }

    /// Whether the etcd session is up.
    pub fn healthy(&self) -> bool {
        self.shared.lock().map(|s| s.healthy).unwrap_or(false)
    }

    /// VNIs in use (from etcd's view), to refuse duplicates early.
    pub fn used_vnis(&self) -> Vec<(String, u32)> {
        self.shared
            .lock()
            .map(|s| s.nets.values().map(|n| (n.name.clone(), n.vni)).collect())
            .unwrap_or_default()
    }
}

/// Start the agent on the current runtime; `to_owner` gets [`OwnerMsg`]s.
pub fn start(
    cfg: Config,
    to_owner: impl Fn(OwnerMsg) + Send + Sync + 'static,
) -> Result<OverlayHandle, String> {
    let _ = LEASE_DIR.set(cfg.lease_dir.clone());
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| format!("creating {}: {e}", cfg.state_dir.display()))?;
    std::fs::create_dir_all(&cfg.lease_dir)
        .map_err(|e| format!("creating {}: {e}", cfg.lease_dir.display()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let store = format!("etcd://{}", cfg.endpoints.join(",").replace("http://", ""));
    let agent = agent::Agent::new(cfg, shared.clone(), Box::new(to_owner))?;
    tokio::spawn(agent.run(rx));
    Ok(OverlayHandle {
        tx,
        shared,
        store,
        wait: Duration::from_secs(5),
    })
}

/// The conflist sandboxd runs for an overlay network: the `overlay` meta-plugin (bridge +
/// host-local in the node's slice, masquerade to outside the overlay), portmap when the endpoint
/// publishes ports, firewall (isolation from sandboxd's other bridges).
pub fn conflist_value(net: &Network, with_ports: bool, default_route: bool) -> serde_json::Value {
    let mut plugins = vec![serde_json::json!({
        "type": "overlay",
        "network": net.name,
        "leaseDir": lease_dir().display().to_string(),
        "isDefaultGateway": default_route,
        "capabilities": {"ips": true, "mac": true},
    })];
    if with_ports {
        plugins.push(
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        );
    }
    plugins.push(serde_json::json!({"type": "firewall", "ingressPolicy": "same-bridge"}));
    serde_json::json!({"cniVersion": "1.1.0", "name": net.name, "plugins": plugins})
}

/// Read a JSON file; `None` when absent or unreadable.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Option<T> {
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn def() -> NetDef {
        NetDef {
            name: "ov".into(),
            id: "a".repeat(64),
            subnet: "10.5.0.0/16".parse().unwrap(),
            subnet_len: 24,
            vni: 1,
            port: 8472,
            created: String::new(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn store_urls_and_keys() {
        assert_eq!(
            parse_store("etcd://10.0.0.1:2379,10.0.0.2:2379").unwrap(),
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert!(parse_store("etcd://").is_err());
        assert!(parse_store("etcd://h:0").is_err());
        let s: Ipv4Net = "10.5.3.0/24".parse().unwrap();
        assert_eq!(slice_key(&s), "10.5.3.0-24");
        assert_eq!(parse_slice_key("10.5.3.0-24"), Some(s));
        let d = def();
        assert_eq!(d.slices().next().unwrap().to_string(), "10.5.1.0/24");
        assert_eq!(d.slices().count(), 255);
        assert_eq!(NetDef::from_rec(&d.to_rec()), Some(d.clone()));
        assert!(d.validate().is_ok());
        let mut b = d.clone();
        b.subnet_len = 8;
        assert!(b.validate().is_err());
        assert_eq!(d.bridge().len(), 15);
    }
}
