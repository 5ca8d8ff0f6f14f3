//! Docker's legacy (v1) plugin protocol as dockerd 20.10 speaks it: the
//! request and response bodies of `Plugin.Activate`, `NetworkDriver.*` and `IpamDriver.*`.
//!
//! Field names are Go's (PascalCase, `NetworkID`, `IPv4Data`). dockerd sends `null` for empty
//! lists and maps and a 0-byte body for calls without arguments, so every field is optional
//! and missing means empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The content type of every request and response.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Generic driver options of `docker network create -o k=v`.
pub const OPT_GENERIC: &str = "com.docker.network.generic";
/// `--internal`.
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
/// `--ipv6`.
pub const OPT_IPV6: &str = "com.docker.network.enable_ipv6";
/// Published ports of an endpoint.
pub const OPT_PORTMAP: &str = "com.docker.network.portmap";
/// `RequestAddressType` of the gateway request.
pub const REQUEST_TYPE_GATEWAY: &str = "com.docker.network.gateway";
/// The IPAM option key naming the request type.
pub const OPT_REQUEST_TYPE: &str = "RequestAddressType";
/// MAC address option of RequestAddress (sent when RequiresMACAddress).
pub const OPT_MAC: &str = "com.docker.network.endpoint.macaddress";

/// `/Plugin.Activate` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Activate {
    /// Interfaces served.
    pub implements: Vec<&'static str>,
}

/// `/NetworkDriver.GetCapabilities` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    /// `local`: networks exist on this host only.
    pub scope: &'static str,
    /// Same as scope.
    pub connectivity_scope: &'static str,
}

/// One entry of `IPv4Data` / `IPv6Data`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    /// Address space of the pool.
    pub address_space: Option<String>,
    /// The pool, CIDR.
    pub pool: Option<String>,
    /// The gateway, CIDR.
    pub gateway: Option<String>,
    /// Auxiliary addresses (name -> CIDR).
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

/// `/NetworkDriver.CreateNetwork` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    /// Docker's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// `com.docker.network.*` options.
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, Value>>,
    /// IPv4 pools.
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    /// IPv6 pools.
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// Requests naming a network only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRef {
    /// Docker's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// The interface of CreateEndpoint (request and response).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    /// IPv4 address, CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// IPv6 address, CIDR.
    #[serde(rename = "AddressIPv6", skip_serializing_if = "Option::is_none")]
    pub address_ipv6: Option<String>,
    /// MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

/// `/NetworkDriver.CreateEndpoint` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpoint {
    /// Network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// What dockerd already chose.
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
    /// Endpoint options (ports, exposed ports, driver options).
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, Value>>,
}

/// `/NetworkDriver.CreateEndpoint` response: only what dockerd left empty.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointResponse {
    /// Omitted when dockerd chose everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// Requests naming an endpoint (DeleteEndpoint, Leave, EndpointOperInfo, Revoke).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    /// Network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// Options (ProgramExternalConnectivity: the port map).
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, Value>>,
}

/// `/NetworkDriver.Join` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Join {
    /// Network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The sandbox's future namespace path (not there yet: never opened).
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
}

/// Interface names of the Join response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    /// Link in the driver's namespace that libnetwork moves into the sandbox.
    pub src_name: String,
    /// Name prefix inside the sandbox (an index is appended).
    pub dst_prefix: String,
}

/// `/NetworkDriver.Join` response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinResponse {
    /// The link to move.
    pub interface_name: InterfaceName,
    /// IPv4 default gateway (empty: none).
    pub gateway: String,
    /// IPv6 default gateway (empty: none).
    #[serde(rename = "GatewayIPv6")]
    pub gateway_ipv6: String,
    /// Extra routes (none).
    pub static_routes: Vec<Value>,
    /// Keep libnetwork from adding `docker_gwbridge` (internal networks have no gateway).
    pub disable_gateway_service: bool,
}

/// One published port of `com.docker.network.portmap`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    /// Container address (unused: the endpoint's).
    #[serde(rename = "IP")]
    pub ip: String,
    /// Container port.
    pub port: u16,
    /// Host address, empty for all.
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Last host port of a range.
    pub host_port_end: u16,
}

/// `/IpamDriver.GetCapabilities` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilities {
    /// No MAC needed for RequestAddress.
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    /// No replay: the plugin persists its pools.
    pub requires_request_replay: bool,
}

/// `/IpamDriver.GetDefaultAddressSpaces` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpaces {
    /// Local space name.
    pub local_default_address_space: &'static str,
    /// Global space name.
    pub global_default_address_space: &'static str,
}

/// `/IpamDriver.RequestPool` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    /// Address space.
    pub address_space: String,
    /// CIDR or empty (pick one).
    pub pool: String,
    /// Sub-range addresses come from (`--ip-range`).
    pub sub_pool: String,
    /// `--ipam-opt`.
    pub options: Option<BTreeMap<String, String>>,
    /// IPv6 pool.
    #[serde(rename = "V6")]
    pub v6: bool,
}

/// `/IpamDriver.RequestPool` response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolResponse {
    /// Handle of the pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The pool, CIDR.
    pub pool: String,
    /// Extra data (none: dockerd asks for the gateway with RequestAddress).
    pub data: BTreeMap<String, String>,
}

/// `/IpamDriver.ReleasePool` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReleasePool {
    /// Handle of the pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `/IpamDriver.RequestAddress` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RequestAddress {
    /// Handle of the pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// A plain address, or empty for any.
    #[serde(rename = "Address")]
    pub address: String,
    /// Request type and MAC.
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, String>>,
}

/// `/IpamDriver.RequestAddress` response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressResponse {
    /// Address with the pool's prefix length.
    pub address: String,
    /// Extra data (none).
    pub data: BTreeMap<String, String>,
}

/// `/IpamDriver.ReleaseAddress` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReleaseAddress {
    /// Handle of the pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The address (plain).
    #[serde(rename = "Address")]
    pub address: String,
}

/// Decode a request body; an empty body is the type's default (dockerd sends 0 bytes for calls
/// without arguments).
pub fn decode<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

/// A string option that dockerd may send as a JSON string, bool or number.
pub fn opt_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_and_null_bodies() {
        let r: CreateNetwork = decode(b"").unwrap();
        assert!(r.network_id.is_empty());
        let r: CreateNetwork = decode(
            br#"{"NetworkID":"n","Options":null,"IPv4Data":[{"AddressSpace":"","Pool":"10.0.0.0/24","Gateway":"10.0.0.1/24","AuxAddresses":null}],"IPv6Data":null}"#,
        )
        .unwrap();
        assert_eq!(r.network_id, "n");
        assert_eq!(
            r.ipv4_data.unwrap()[0].gateway.as_deref(),
            Some("10.0.0.1/24")
        );
    }

    #[test]
    fn wire_names() {
        let j = serde_json::to_value(JoinResponse {
            interface_name: InterfaceName {
                src_name: "v".into(),
                dst_prefix: "eth".into(),
            },
            gateway: "10.0.0.1".into(),
            gateway_ipv6: String::new(),
            static_routes: vec![],
            disable_gateway_service: false,
        })
        .unwrap();
        assert_eq!(j["InterfaceName"]["SrcName"], "v");
        assert_eq!(j["InterfaceName"]["DstPrefix"], "eth");
        assert!(j.get("GatewayIPv6").is_some());
        let p: Vec<PortBinding> = serde_json::from_str(
            r#"[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]"#,
        )
        .unwrap();
        assert_eq!(p[0].host_port, 8080);
        let c = serde_json::to_value(IpamCapabilities {
            requires_mac_address: false,
            requires_request_replay: false,
        })
        .unwrap();
        assert_eq!(c["RequiresMACAddress"], false);
        let i = serde_json::to_value(CreateEndpointResponse {
            interface: Some(EndpointInterface {
                mac_address: Some("02:42:0a:00:00:02".into()),
                ..Default::default()
            }),
        })
        .unwrap();
        assert_eq!(
            i,
            serde_json::json!({"Interface": {"MacAddress": "02:42:0a:00:00:02"}})
        );
    }
}
