//! What the Docker face keeps: networks, endpoints and IPAM pools, in one JSON document
//! (`<data-dir>/docker/state.json`) replaced atomically after every change (the store's
//! [`crate::store::write_atomic`]). dockerd replays nothing after a restart of either daemon,
//! and with `--live-restore` it later names endpoints created long before, so everything is
//! persisted. An endpoint is written in state `creating` *before* its veth exists, so a kill -9
//! in between is undone at the next start.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A network Docker created with this driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DkNetwork {
    /// Docker's network id.
    pub id: String,
    /// Bridge device.
    pub bridge: String,
    /// MTU of the bridge and veths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Masquerade traffic leaving the subnets.
    pub masquerade: bool,
    /// No gateway for the containers, no masquerade.
    pub internal: bool,
    /// Containers of this network may reach each other (`enable_icc`); either way other
    /// networks' containers may not reach them.
    #[serde(default = "yes")]
    pub icc: bool,
    /// Pools with their gateways (CIDR).
    pub subnets: Vec<DkSubnet>,
    /// The generic (`-o`) options as given.
    pub options: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created: String,
}

fn yes() -> bool {
    true
}

/// One pool of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkSubnet {
    /// The pool.
    pub pool: IpNet,
    /// Gateway with the pool's prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpNet>,
}

/// Intent state of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DkEpState {
    /// The veth may exist: undo at start.
    Creating,
    /// Done.
    Ready,
}

/// One published port as programmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkPort {
    /// `tcp`, `udp` or `sctp`.
    pub proto: String,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// Host address; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// An endpoint Docker created on one of our networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DkEndpoint {
    /// Docker's endpoint id.
    pub id: String,
    /// Its network.
    pub network_id: String,
    /// Host end (on the bridge).
    pub host_veth: String,
    /// The end handed to dockerd (`SrcName`).
    pub peer: String,
    /// Addresses (CIDR).
    pub addresses: Vec<IpNet>,
    /// MAC of the peer.
    pub mac: String,
    /// Sandbox key of the Join, while joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_key: Option<String>,
    /// Published ports, while programmed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<DkPort>,
    /// Intent state.
    pub state: DkEpState,
    /// RFC 3339 creation time.
    pub created: String,
}

/// An IPAM pool handed to Docker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkPool {
    /// Handle given to Docker.
    pub id: String,
    /// Address space of the request.
    pub space: String,
    /// The pool.
    pub pool: IpNet,
    /// Sub-range (`--ip-range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_pool: Option<IpNet>,
    /// Whether the pool was asked for by CIDR (only those are shared by identical requests).
    pub explicit: bool,
    /// RequestPool count minus ReleasePool count.
    pub refs: u32,
    /// Gateway reserved by a gateway RequestAddress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Leased address -> host-local owner id of its lease.
    #[serde(default)]
    pub leases: BTreeMap<IpAddr, String>,
}

/// Everything the Docker face keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DkState {
    /// By network id.
    #[serde(default)]
    pub networks: BTreeMap<String, DkNetwork>,
    /// By endpoint id.
    #[serde(default)]
    pub endpoints: BTreeMap<String, DkEndpoint>,
    /// By pool id.
    #[serde(default)]
    pub pools: BTreeMap<String, DkPool>,
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct DkStore {
    path: PathBuf,
}

impl DkStore {
    /// `<data_dir>/docker/state.json` (the directory is created).
    pub fn open(data_dir: &Path) -> Result<DkStore, Error> {
        let dir = data_dir.join("docker");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        Ok(DkStore {
            path: dir.join("state.json"),
        })
    }

    /// The saved state, empty when none was saved yet.
    pub fn load(&self) -> Result<DkState, Error> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
                path: self.path.clone(),
                source: e,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DkState::default()),
            Err(e) => Err(Error::io("read", &self.path, e)),
        }
    }

    /// Replace the saved state atomically.
    pub fn save(&self, st: &DkState) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(st).map_err(|e| Error::Decode {
            path: self.path.clone(),
            source: e,
        })?;
        crate::store::write_atomic(&self.path, &bytes)
    }
}
