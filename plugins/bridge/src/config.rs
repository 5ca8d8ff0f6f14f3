//! The bridge plugin's configuration: every key of the reference plugin (containernetworking/plugins v1.x),
//! decoded Go-style, validated completely before the first side effect.

use cni::error::{codes, CniError};
use cni::result::Dns;
use cni::skel::CmdArgs;
use serde::Deserialize;

/// The bridge name used when the config names none (reference default).
pub const DEFAULT_BRIDGE: &str = "cni0";

/// Wire form of the plugin object (unknown keys are ignored; they stay in stdin for IPAM).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireConf {
    bridge: Option<String>,
    is_gateway: bool,
    is_default_gateway: bool,
    force_address: bool,
    ip_masq: bool,
    ip_masq_backend: Option<String>,
    mtu: Option<i64>,
    hairpin_mode: bool,
    promisc_mode: bool,
    vlan: Option<i64>,
    vlan_trunk: Option<Vec<WireTrunk>>,
    macspoofchk: bool,
    enabledad: bool,
    disable_container_interface: bool,
    port_isolation: bool,
    ipam: Option<serde_json::Value>,
    dns: Option<WireDns>,
    runtime_config: Option<WireRuntime>,
    args: Option<WireArgs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireTrunk {
    #[serde(rename = "minID")]
    min_id: Option<i64>,
    #[serde(rename = "maxID")]
    max_id: Option<i64>,
    id: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireDns {
    nameservers: Vec<String>,
    domain: Option<String>,
    search: Vec<String>,
    options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireRuntime {
    mac: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireArgs {
    cni: Option<WireRuntime>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct BridgeConf {
    /// Network name (from the list).
    pub network: String,
    /// Bridge device name.
    pub bridge: String,
    /// Put the gateway addresses on the bridge and forward.
    pub is_gateway: bool,
    /// Also add default routes via the gateways.
    pub is_default_gateway: bool,
    /// Replace a conflicting IPv4 address on the bridge instead of failing.
    pub force_address: bool,
    /// Masquerade traffic leaving the container subnet.
    pub ip_masq: bool,
    /// Explicit firewall backend for ipMasq ("nftables" / "iptables").
    pub ip_masq_backend: Option<String>,
    /// MTU of a new bridge and of both veth ends.
    pub mtu: Option<u32>,
    /// Bridge-port hairpin mode on the host veth.
    pub hairpin_mode: bool,
    /// Promiscuous mode on the bridge.
    pub promisc_mode: bool,
    /// Bridge-port isolation flag on the host veth.
    pub port_isolation: bool,
    /// Keep IPv6 DAD on in the container.
    pub enabledad: bool,
    /// Leave the container end down and unaddressed.
    pub disable_container_interface: bool,
    /// IPAM plugin type, when IPAM is configured.
    pub ipam_type: Option<String>,
    /// Static MAC for the container end.
    pub mac: Option<[u8; 6]>,
    /// Replacement DNS for the result, when any field is set.
    pub dns: Option<Dns>,
    /// Drop frames from the container whose source MAC is not the container's own.
    pub macspoofchk: bool,
    /// `vlan` or `vlanTrunk` asked for.
    wants_vlan: bool,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_CONFIG, msg)
}

fn check_vlan_id(what: &str, id: i64) -> Result<(), CniError> {
    if !(1..=4094).contains(&id) {
        return Err(invalid(format!(
            "invalid VLAN ID {id} in {what} (must be 1-4094)"
        )));
    }
    Ok(())
}

impl BridgeConf {
    /// Decode and validate the plugin configuration for this call.
    pub fn load(args: &CmdArgs) -> Result<BridgeConf, CniError> {
        let w: WireConf = args.plugin_conf()?;
        let bridge = w
            .bridge
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| DEFAULT_BRIDGE.into());
        cni::config::validate_ifname(&bridge)
            .map_err(|e| invalid(format!("invalid bridge name {bridge:?}: {}", e.msg)))?;
        if let Some(vlan) = w.vlan {
            if !(0..=4094).contains(&vlan) {
                return Err(invalid(format!("invalid VLAN ID {vlan} (must be 0-4094)")));
            }
        }
        for t in w.vlan_trunk.iter().flatten() {
            match (t.id, t.min_id, t.max_id) {
                (Some(id), None, None) => check_vlan_id("vlanTrunk", id)?,
                (None, Some(min), Some(max)) => {
                    check_vlan_id("vlanTrunk minID", min)?;
                    check_vlan_id("vlanTrunk maxID", max)?;
                    if min > max {
                        return Err(invalid(format!(
                            "invalid vlanTrunk range: minID {min} is greater than maxID {max}"
                        )));
                    }
                }
                _ => return Err(invalid(
                    "invalid vlanTrunk entry: give either \"id\" or both \"minID\" and \"maxID\"",
                )),
            }
        }
        let wants_vlan =
            w.vlan.unwrap_or(0) != 0 || w.vlan_trunk.as_ref().is_some_and(|t| !t.is_empty());
        if w.hairpin_mode && w.promisc_mode {
            return Err(invalid(
                "cannot set hairpin mode and promiscuous mode at the same time",
            ));
        }
        let ipam_type = match &w.ipam {
            Some(v) => v
                .get("type")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            None => None,
        };
        if w.disable_container_interface && ipam_type.is_some() {
            return Err(invalid(
                "disableContainerInterface is incompatible with IPAM: a down interface cannot hold addresses",
            ));
        }
        let mtu = match w.mtu {
            None | Some(0) => None,
            Some(m) if (68..=65535).contains(&m) => Some(m as u32),
            Some(m) => return Err(invalid(format!("invalid mtu {m} (must be 68-65535)"))),
        };
        if let Some(b) = &w.ip_masq_backend {
            if b != "nftables" && b != "iptables" {
                return Err(invalid(format!(
                    "invalid ipMasqBackend {b:?} (must be \"nftables\" or \"iptables\")"
                )));
            }
        }
        // MAC precedence (reference): CNI_ARGS MAC < args.cni.mac < runtimeConfig.mac.
        let mac_str = w
            .runtime_config
            .and_then(|r| r.mac)
            .or_else(|| w.args.and_then(|a| a.cni).and_then(|c| c.mac))
            .or_else(|| args.args.get("MAC").map(str::to_string))
            .filter(|m| !m.is_empty());
        let mac = match mac_str {
            Some(m) => Some(
                kernel::mac::parse_mac(&m)
                    .map_err(|_| invalid(format!("invalid MAC address {m:?}")))?,
            ),
            None => None,
        };
        let dns = w.dns.and_then(|d| {
            let dns = Dns {
                nameservers: d.nameservers,
                domain: d.domain.filter(|s| !s.is_empty()),
                search: d.search,
                options: d.options,
            };
            (!dns.is_empty()).then_some(dns)
        });
        Ok(BridgeConf {
            network: args.conf.name.clone(),
            bridge,
            is_gateway: w.is_gateway || w.is_default_gateway,
            is_default_gateway: w.is_default_gateway,
            force_address: w.force_address,
            ip_masq: w.ip_masq,
            ip_masq_backend: w.ip_masq_backend,
            mtu,
            hairpin_mode: w.hairpin_mode,
            promisc_mode: w.promisc_mode,
            port_isolation: w.port_isolation,
            enabledad: w.enabledad,
            disable_container_interface: w.disable_container_interface,
            ipam_type,
            mac,
            dns,
            wants_vlan,
            macspoofchk: w.macspoofchk,
        })
    }

    /// The configuration of a host-side port ([`crate::hostport`]): a gateway bridge with
    /// optional masquerade and hairpin, no IPAM, no container side.
    pub(crate) fn host_port(
        network: &str,
        bridge: &str,
        mtu: Option<u32>,
        ip_masq: bool,
        hairpin_mode: bool,
    ) -> BridgeConf {
        BridgeConf {
            network: network.to_string(),
            bridge: bridge.to_string(),
            is_gateway: true,
            is_default_gateway: false,
            force_address: false,
            ip_masq,
            ip_masq_backend: None,
            mtu,
            hairpin_mode,
            promisc_mode: false,
            port_isolation: false,
            enabledad: false,
            disable_container_interface: true,
            ipam_type: None,
            mac: None,
            dns: None,
            wants_vlan: false,
            macspoofchk: false,
        }
    }

    /// Refuse, before ADD changes anything, features this plugin cannot provide. Only ADD calls
    /// this: a runtime DELs after a failed ADD, and that DEL must succeed with the same config.
    pub fn refuse_unsupported(&self) -> Result<(), CniError> {
        if self.wants_vlan {
            // Programming VLANs needs bridge VLAN filtering (absent from the kernels we run on):
            // refuse clearly rather than half-configure a port.
            return Err(CniError::new(
                codes::UNSUPPORTED_FIELD,
                "vlan/vlanTrunk: bridge VLAN filtering is not supported by this bridge plugin",
            ));
        }
        Ok(())
    }
}
