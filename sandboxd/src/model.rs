//! The API's types (docs/sandboxd-api.md, snake_case JSON) and the persisted records built on
//! them. A record is the API object plus the intent fields (`state`) that make a kill -9 at any
//! instant recoverable: the state is written *before* a side effect and changed *after* it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One subnet of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// The subnet.
    pub subnet: IpNet,
    /// Gateway (on the bridge); default: the first host address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Sub-range dynamic addresses are taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
}

/// `POST /v1/networks` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkCreate {
    /// Unique name.
    pub name: String,
    /// `bridge` (default) or `cni`.
    #[serde(default)]
    pub driver: Option<String>,
    /// Subnets; none: one IPv4 subnet from the default pool.
    #[serde(default)]
    pub subnets: Vec<Subnet>,
    /// No masquerade, no default route.
    #[serde(default)]
    pub internal: bool,
    /// IPv6 enabled (needs an IPv6 subnet).
    #[serde(default)]
    pub ipv6: bool,
    /// Driver options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A reference from a network to one of its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetEndpointRef {
    /// Sandbox name.
    pub sandbox: String,
    /// Endpoint id.
    pub endpoint_id: String,
}

/// A network as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `bridge`, `host`, `none` or `cni`.
    pub driver: String,
    /// Created by sandboxd itself, cannot be removed.
    pub builtin: bool,
    /// Subnets.
    pub subnets: Vec<Subnet>,
    /// Internal network.
    pub internal: bool,
    /// IPv6 enabled.
    pub ipv6: bool,
    /// Bridge device (bridge driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// Endpoints (filled in when rendered, never persisted).
    #[serde(default)]
    pub endpoints: Vec<NetEndpointRef>,
}

/// The persisted form of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRec {
    /// The API object (endpoints empty).
    pub network: Network,
    /// The conflist of a `cni` network, captured at creation (used as is afterwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflist: Option<serde_json::Value>,
    /// Removal started (intent): finish it at the next start.
    #[serde(default)]
    pub deleting: bool,
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host port (1–65535).
    pub host_port: u32,
    /// Port in the sandbox (1–65535).
    pub container_port: u32,
    /// `tcp` (default), `udp` or `sctp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Host address to bind; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

fn tcp() -> String {
    "tcp".into()
}

/// `POST /v1/sandboxes` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SandboxCreate {
    /// Unique name (also the pin name under /run/netns).
    pub name: String,
    /// A network name, `host`, `none` or `container:<sandbox>`; default `bridge`.
    #[serde(default)]
    pub network: Option<String>,
    /// Static address on that network.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// Aliases on that network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Hostname; default the first 12 digits of the id.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// `POST /v1/sandboxes/{name}/endpoints` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndpointCreate {
    /// Network to connect to.
    pub network: String,
    /// Static address.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// Aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

/// An endpoint as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 64 hex digits.
    pub id: String,
    /// Network name (`container:<owner>` for a container-mode join).
    pub network: String,
    /// Sandbox name.
    pub sandbox: String,
    /// Interface name in the sandbox.
    pub ifname: String,
    /// Addresses with prefix length.
    pub addresses: Vec<IpNet>,
    /// Gateways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<IpAddr>,
    /// MAC address of the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
}

/// Intent state of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpState {
    /// ADD may have started: roll back (DEL) when found at start.
    Adding,
    /// ADD finished.
    Ready,
    /// DEL may have started: finish it when found at start.
    Removing,
    /// Taking over the default route (DEL, then ADD with the same address, MAC and
    /// isDefaultGateway): finish it (DEL + ADD) when found at start.
    Rerouting,
}

/// The persisted form of an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRec {
    /// The API object.
    pub endpoint: Endpoint,
    /// Intent state.
    pub state: EpState,
    /// The static address requested (kept for DEL+ADD repairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_ip: Option<IpAddr>,
    /// Whether this endpoint installs the sandbox's default route (the first non-internal
    /// network endpoint; later ones must not add a second default route).
    #[serde(default)]
    pub default_route: bool,
}

/// Intent state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SbState {
    /// Namespace creation and first ADD may have started: roll back at start.
    Creating,
    /// Usable.
    Ready,
    /// Teardown started: finish it at start.
    Deleting,
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `network`, `host`, `none` or `container`.
    pub mode: String,
    /// Owner sandbox in container mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_of: Option<String>,
    /// Network namespace path.
    pub netns: String,
    /// Hostname.
    pub hostname: String,
    /// Endpoints in join order.
    pub endpoints: Vec<Endpoint>,
    /// Id of the endpoint that provides the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_endpoint: Option<String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// The resolv.conf sandboxd writes for it (with `--etc-netns`; `ip netns exec` and
    /// `netns exec` bind-mount it over /etc/resolv.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf_path: Option<String>,
    /// The hosts file sandboxd writes for it (with `--etc-netns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_path: Option<String>,
}

/// The persisted form of a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRec {
    /// 64 hex digits (also the CNI container ID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `network`, `host`, `none` or `container`.
    pub mode: String,
    /// Owner sandbox in container mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_of: Option<String>,
    /// Network namespace path.
    pub netns: String,
    /// Whether sandboxd created (and must delete) the pinned namespace.
    pub owns_netns: bool,
    /// Hostname.
    pub hostname: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Intent state.
    pub state: SbState,
    /// Next ethN index (interfaces are numbered in join order and never reused).
    pub next_if: u32,
    /// Endpoints in join order.
    pub endpoints: Vec<EndpointRec>,
}

impl SandboxRec {
    /// The API view (endpoints in any intent state are shown; the gateway endpoint is the ready
    /// endpoint that installed the default route).
    pub fn to_api(&self) -> Sandbox {
        let endpoints: Vec<Endpoint> = self.endpoints.iter().map(|e| e.endpoint.clone()).collect();
        let gateway_endpoint = self
            .endpoints
            .iter()
            .find(|e| e.state == EpState::Ready && e.default_route)
            .map(|e| e.endpoint.id.clone());
        Sandbox {
            id: self.id.clone(),
            name: self.name.clone(),
            mode: self.mode.clone(),
            container_of: self.container_of.clone(),
            netns: self.netns.clone(),
            hostname: self.hostname.clone(),
            endpoints,
            gateway_endpoint,
            created: self.created.clone(),
            resolv_conf_path: None,
            hosts_path: None,
        }
    }
}

/// `POST /v1/_repair` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairReport {
    /// One line per repair done.
    pub actions: Vec<String>,
}

/// One line of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 time.
    pub time: String,
    /// `network`, `sandbox` or `endpoint`.
    pub kind: String,
    /// `create`, `remove`, `connect` or `disconnect`.
    pub action: String,
    /// Name of the object.
    pub name: String,
    /// Network involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Sandbox involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}
