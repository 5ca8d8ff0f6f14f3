//! The remote network driver mapped onto our bridge, veth and firewall code.
//!
//! - CreateNetwork: a bridge with the gateways Docker sent (the bridge crate's
//!   [`bridge::hostport::ensure_gateway_bridge`], the plugin's own steps).
//! - CreateEndpoint: a host-side port ([`bridge::hostport::add_host_port`]): a veth whose host
//!   end is on the bridge and whose peer stays in our namespace, the masquerade entries, and the
//!   forward accept entries of the `firewall` crate (they keep traffic flowing when dockerd has
//!   set the iptables FORWARD policy to DROP).
//! - Join: the peer is returned as `SrcName` with `DstPrefix` `eth`; libnetwork moves it into the
//!   sandbox and configures it. The sandbox key is recorded, never opened.
//! - Program/RevokeExternalConnectivity: the `firewall` crate's port forwarding, as the `portmap`
//!   plugin programs it.
//! - Leave/DeleteEndpoint/DeleteNetwork undo exactly that; unknown ids succeed (dockerd
//!   force-deletes stale endpoints at its start).
//!
//! Firewall entries are owned by (`docker-<network id 12>`, endpoint id, `eth0`), so they never
//! collide with the entries of sandboxd's own networks or of CNI runtimes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bridge::hostport::{self, BridgeSpec, PortSpec};
use firewall::forward::{forward_firewall, ForwardAttachment, ForwardFirewall, IngressPolicy};
use firewall::portmap::{port_forwarder, PortMap, PortmapSpec, Proto};
use ipnet::IpNet;
use serde_json::Value;

use super::proto::{
    opt_string, CreateEndpoint, CreateEndpointResponse, CreateNetwork, EndpointInterface,
    InterfaceName, Join, JoinResponse, PortBinding, OPT_GENERIC, OPT_INTERNAL, OPT_PORTMAP,
};
use super::state::{DkEndpoint, DkEpState, DkNetwork, DkPort, DkState, DkSubnet};
use super::Ctx;

/// The owner interface tag of every Docker endpoint's firewall entries.
const OWNER_IF: &str = "eth0";

/// Owner tag (network part) of a Docker network's firewall entries.
pub fn fw_network(nid: &str) -> String {
    format!("docker-{}", short(nid))
}

/// The 12-character short id Docker shows.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.len() < 12 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("invalid {what} {id:?}: expected Docker's hex id"));
    }
    Ok(())
}

fn bridge_spec(n: &DkNetwork) -> BridgeSpec {
    BridgeSpec {
        network: fw_network(&n.id),
        bridge: n.bridge.clone(),
        mtu: n.mtu,
        gateways: n.subnets.iter().filter_map(|s| s.gateway).collect(),
        ip_masq: n.masquerade && !n.internal,
    }
}

fn port_spec(ep: &DkEndpoint) -> PortSpec {
    PortSpec {
        owner: ep.id.clone(),
        ifname: OWNER_IF.into(),
        host_name: ep.host_veth.clone(),
        peer_name: ep.peer.clone(),
        peer_mac: None,
        addresses: ep.addresses.clone(),
    }
}

fn backend() -> Result<firewall::Backend, String> {
    firewall::choose_backend(None).map_err(|e| e.to_string())
}

fn forward_fw() -> Result<Box<dyn ForwardFirewall>, String> {
    forward_firewall(backend()?, firewall::forward::DEFAULT_ADMIN_CHAIN).map_err(|e| e.to_string())
}

/// The `firewall` plugin's ingress policy of a network, as sandboxd's own bridge networks use
/// it (cniops::bridge_conflist): other isolated bridges may not reach this one (Docker's
/// isolation between user networks); with `enable_icc=false` its containers may not reach
/// each other either.
fn ingress_policy(n: &DkNetwork) -> IngressPolicy {
    if n.icc {
        IngressPolicy::SameBridge
    } else {
        IngressPolicy::Isolated
    }
}

fn families(n: &DkNetwork) -> (bool, bool) {
    (
        n.subnets.iter().any(|s| s.pool.addr().is_ipv4()),
        n.subnets.iter().any(|s| !s.pool.addr().is_ipv4()),
    )
}

/// Docker's default bridge. libnetwork's `DOCKER-ISOLATION` chains isolate it from Docker's
/// other bridge networks, never from a remote driver's bridges; this driver lists it in the same
/// isolation chains as its own bridges so that, as between Docker's own networks, containers on
/// `docker0` and on our networks cannot reach each other (both directions).
pub const DOCKER_BRIDGE: &str = "docker0";

/// Install the network's isolation rules and those of [`DOCKER_BRIDGE`] (idempotent: present
/// rules are kept).
fn add_isolation(n: &DkNetwork) -> Result<(), String> {
    let (v4, v6) = families(n);
    let fw = forward_fw()?;
    fw.add_isolation(&n.bridge, ingress_policy(n), v4, v6)
        .and_then(|()| fw.add_isolation(DOCKER_BRIDGE, IngressPolicy::SameBridge, v4, v6))
        .map_err(|e| format!("isolation rules: {e}"))
}

/// Remove the network's isolation rules, and [`DOCKER_BRIDGE`]'s with the last network: the
/// plugin leaves them (the reference does), but this driver owns the bridge's whole life, so
/// nothing of it stays after `docker network rm`.
fn del_isolation(n: &DkNetwork, last: bool) -> Result<(), String> {
    let fw = forward_fw()?;
    fw.del_isolation(&n.bridge)
        .and_then(|()| match last {
            true => fw.del_isolation(DOCKER_BRIDGE),
            false => Ok(()),
        })
        .map_err(|e| format!("removing isolation rules: {e}"))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("option {key}: {v:?} is not a boolean")),
    }
}

/// CreateNetwork: record it, then create the bridge with its gateways.
pub fn create_network(ctx: &Ctx, st: &mut DkState, req: &CreateNetwork) -> Result<(), String> {
    check_id("network id", &req.network_id)?;
    if st.networks.contains_key(&req.network_id) {
        return Ok(());
    }
    let net = plan_network(st, req)?;
    // Never adopt a device we did not create (docker0, another runtime's bridge): DeleteNetwork
    // would delete it.
    if link_exists(&net.bridge)? {
        return Err(format!(
            "a device named {} already exists; choose another com.docker.network.bridge.name",
            net.bridge
        ));
    }
    st.networks.insert(net.id.clone(), net.clone());
    ctx.save(st)?;
    let made = hostport::ensure_gateway_bridge(&bridge_spec(&net))
        .map_err(|e| e.msg)
        .and_then(|()| add_isolation(&net));
    if let Err(e) = made {
        let _ = del_isolation(&net, st.networks.len() == 1);
        let _ = hostport::delete_bridge(&net.bridge);
        st.networks.remove(&net.id);
        ctx.save(st)?;
        return Err(e);
    }
    tracing::info!(network = %short(&net.id), bridge = %net.bridge, "docker network created");
    Ok(())
}

fn remove_stale_links(names: &[&str]) -> Result<(), String> {
    use kernel::netlink::{Netlink, NetlinkOps};
    let mut nl = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
    for name in names {
        if let Some(l) = nl
            .link_by_name(name)
            .map_err(|e| format!("looking up {name}: {e}"))?
        {
            if l.kind.as_deref() == Some("veth") {
                tracing::warn!(link = %name, "removing a stale endpoint link");
                match nl.link_del(l.index) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(format!("removing stale {name}: {e}")),
                }
            }
        }
    }
    Ok(())
}

fn link_exists(name: &str) -> Result<bool, String> {
    use kernel::netlink::{Netlink, NetlinkOps};
    let mut nl = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
    nl.link_by_name(name)
        .map(|l| l.is_some())
        .map_err(|e| format!("looking up {name}: {e}"))
}

/// The network record of a CreateNetwork request: options and pools validated, nothing done.
fn plan_network(st: &DkState, req: &CreateNetwork) -> Result<DkNetwork, String> {
    check_id("network id", &req.network_id)?;
    let opts = req.options.clone().unwrap_or_default();
    let generic: BTreeMap<String, String> = match opts.get(OPT_GENERIC) {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| opt_string(v).map(|s| (k.clone(), s)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let mut bridge = format!("rc-{}", &req.network_id[..11]);
    let mut mtu = None;
    let mut masquerade = true;
    let mut icc = true;
    let mut internal = opts
        .get(OPT_INTERNAL)
        .and_then(opt_string)
        .map(|v| parse_bool(OPT_INTERNAL, &v))
        .transpose()?
        .unwrap_or(false);
    for (k, v) in &generic {
        match k.as_str() {
            "com.docker.network.bridge.name" | "bridge_name" => {
                cni::config::validate_ifname(v).map_err(|e| format!("option {k}: {}", e.msg))?;
                bridge = v.clone();
            }
            "com.docker.network.driver.mtu" | "mtu" => {
                let m: u32 = v
                    .parse()
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| format!("option {k}: {v:?} is not an MTU (68-65535)"))?;
                mtu = Some(m);
            }
            "com.docker.network.bridge.enable_ip_masquerade" | "masquerade" => {
                masquerade = parse_bool(k, v)?;
            }
            "com.docker.network.bridge.enable_icc" | "icc" => icc = parse_bool(k, v)?,
            OPT_INTERNAL | "internal" => internal = parse_bool(k, v)?,
            other => {
                return Err(format!(
                    "unknown option {other:?} (known: com.docker.network.bridge.name, \
                     com.docker.network.driver.mtu, com.docker.network.bridge.enable_ip_masquerade, \
                     com.docker.network.bridge.enable_icc, com.docker.network.internal)"
                ))
            }
        }
    }
    if let Some(other) = st.networks.values().find(|n| n.bridge == bridge) {
        return Err(format!(
            "bridge {bridge} is already used by network {}",
            short(&other.id)
        ));
    }
    let mut subnets = Vec::new();
    for d in req
        .ipv4_data
        .iter()
        .flatten()
        .chain(req.ipv6_data.iter().flatten())
    {
        let pool: IpNet = d
            .pool
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|_| format!("invalid pool {:?}", d.pool))?;
        let gateway = match d.gateway.as_deref().filter(|g| !g.is_empty()) {
            Some(g) => Some(
                g.parse::<IpNet>()
                    .or_else(|_| g.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("invalid gateway {g:?}"))
                    .and_then(|g| {
                        IpNet::new(g.addr(), pool.prefix_len()).map_err(|e| e.to_string())
                    })?,
            ),
            None => None,
        };
        subnets.push(DkSubnet {
            pool: pool.trunc(),
            gateway,
        });
    }
    Ok(DkNetwork {
        id: req.network_id.clone(),
        bridge,
        mtu,
        masquerade,
        internal,
        icc,
        subnets,
        options: generic,
        created: crate::util::now_rfc3339(),
    })
}

/// DeleteNetwork: endpoints left behind by a crashed dockerd go first, then the bridge.
pub fn delete_network(ctx: &Ctx, st: &mut DkState, nid: &str) -> Result<(), String> {
    let Some(net) = st.networks.get(nid).cloned() else {
        return Ok(());
    };
    let eps: Vec<String> = st
        .endpoints
        .values()
        .filter(|e| e.network_id == nid)
        .map(|e| e.id.clone())
        .collect();
    for eid in eps {
        delete_endpoint(ctx, st, &eid)?;
    }
    del_isolation(&net, st.networks.len() == 1)?;
    hostport::delete_bridge(&net.bridge).map_err(|e| e.msg)?;
    st.networks.remove(nid);
    ctx.save(st)?;
    tracing::info!(network = %short(nid), "docker network removed");
    Ok(())
}

/// Docker's MAC for an IPv4 address: 02:42 and the four address bytes.
fn mac_for(addrs: &[IpNet]) -> Option<[u8; 6]> {
    addrs.iter().find_map(|a| match a.addr() {
        IpAddr::V4(v) => {
            let o = v.octets();
            Some([0x02, 0x42, o[0], o[1], o[2], o[3]])
        }
        IpAddr::V6(_) => None,
    })
}

/// CreateEndpoint: the host-side port and the forward accept entries.
pub fn create_endpoint(
    ctx: &Ctx,
    st: &mut DkState,
    req: &CreateEndpoint,
) -> Result<CreateEndpointResponse, String> {
    check_id("endpoint id", &req.endpoint_id)?;
    let net = st
        .networks
        .get(&req.network_id)
        .cloned()
        .ok_or_else(|| format!("no such network {:?}", req.network_id))?;
    if st.endpoints.contains_key(&req.endpoint_id) {
        return Err(format!(
            "endpoint {} already exists",
            short(&req.endpoint_id)
        ));
    }
    let iface = req.interface.clone().unwrap_or_default();
    let mut addresses = Vec::new();
    for a in [&iface.address, &iface.address_ipv6]
        .into_iter()
        .flatten()
        .filter(|a| !a.is_empty())
    {
        addresses.push(
            a.parse::<IpNet>()
                .map_err(|_| format!("invalid interface address {a:?}"))?,
        );
    }
    let given_mac = iface.mac_address.clone().filter(|m| !m.is_empty());
    let mac = match &given_mac {
        Some(m) => Some(kernel::mac::parse_mac(m).map_err(|e| format!("MacAddress {m:?}: {e}"))?),
        None => mac_for(&addresses),
    };
    let tail = &req.endpoint_id[..12];
    let mut ep = DkEndpoint {
        id: req.endpoint_id.clone(),
        network_id: net.id.clone(),
        host_veth: format!("rcv{tail}"),
        peer: format!("rcp{tail}"),
        addresses,
        mac: String::new(),
        sandbox_key: None,
        ports: Vec::new(),
        state: DkEpState::Creating,
        created: crate::util::now_rfc3339(),
    };
    if let Some(other) = st.endpoints.values().find(|e| e.host_veth == ep.host_veth) {
        return Err(format!(
            "endpoint {} already uses the interface names of {}",
            short(&other.id),
            short(&ep.id)
        ));
    }
    // Links of these names that no record owns are leftovers of a lost state: ours by name.
    remove_stale_links(&[&ep.host_veth, &ep.peer])?;
    // Intent first: a crash from here on is undone at the next start.
    st.endpoints.insert(ep.id.clone(), ep.clone());
    ctx.save(st)?;
    let mut spec = port_spec(&ep);
    spec.peer_mac = mac;
    let made = add_isolation(&net)
        .and_then(|()| hostport::add_host_port(&bridge_spec(&net), &spec).map_err(|e| e.msg))
        .and_then(|hp| {
            add_forward(&ep).map(|()| hp).inspect_err(|_| {
                let _ = hostport::del_host_port(&bridge_spec(&net), &port_spec(&ep));
            })
        });
    let hp = match made {
        Ok(hp) => hp,
        Err(e) => {
            st.endpoints.remove(&ep.id);
            ctx.save(st)?;
            return Err(e);
        }
    };
    ep.mac = hp.peer_mac.clone();
    ep.state = DkEpState::Ready;
    st.endpoints.insert(ep.id.clone(), ep);
    ctx.save(st)?;
    // Only what dockerd left empty may come back ("driver modified interface" otherwise).
    let interface = given_mac.is_none().then(|| EndpointInterface {
        mac_address: Some(hp.peer_mac),
        ..Default::default()
    });
    Ok(CreateEndpointResponse { interface })
}

fn forward_attachment(ep: &DkEndpoint) -> ForwardAttachment {
    ForwardAttachment {
        network: fw_network(&ep.network_id),
        container_id: ep.id.clone(),
        ifname: OWNER_IF.into(),
        ips: ep.addresses.iter().map(|a| a.addr()).collect(),
    }
}

fn add_forward(ep: &DkEndpoint) -> Result<(), String> {
    let notes = forward_fw()?
        .add_forward(&forward_attachment(ep))
        .map_err(|e| format!("forward rules: {e}"))?;
    for n in notes {
        tracing::info!(endpoint = %short(&ep.id), note = %n, "forward");
    }
    Ok(())
}

/// DeleteEndpoint: ports, forward entries, the veth pair and masquerade entries. An unknown
/// endpoint is fine.
pub fn delete_endpoint(ctx: &Ctx, st: &mut DkState, eid: &str) -> Result<(), String> {
    let Some(ep) = st.endpoints.get(eid).cloned() else {
        return Ok(());
    };
    undo_endpoint(st, &ep)?;
    st.endpoints.remove(eid);
    ctx.save(st)
}

/// Remove everything an endpoint may have (also a half-created one).
pub fn undo_endpoint(st: &DkState, ep: &DkEndpoint) -> Result<(), String> {
    let mut errors = Vec::new();
    let network = fw_network(&ep.network_id);
    match backend() {
        Ok(b) => {
            if let Err(e) = port_forwarder(b).del_portmap(&network, &ep.id, OWNER_IF) {
                errors.push(format!("ports: {e}"));
            }
            let ips: Vec<IpAddr> = ep.addresses.iter().map(|a| a.addr()).collect();
            match forward_firewall(b, firewall::forward::DEFAULT_ADMIN_CHAIN) {
                Ok(fw) => {
                    if let Err(e) = fw.del_forward(&network, &ep.id, OWNER_IF, &ips) {
                        errors.push(format!("forward rules: {e}"));
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(e) => errors.push(e),
    }
    let bspec = match st.networks.get(&ep.network_id) {
        Some(n) => bridge_spec(n),
        // The network record is gone: still remove the veth and any masquerade entries.
        None => BridgeSpec {
            network: network.clone(),
            bridge: String::new(),
            mtu: None,
            gateways: Vec::new(),
            ip_masq: true,
        },
    };
    if let Err(e) = hostport::del_host_port(&bspec, &port_spec(ep)) {
        errors.push(e.msg);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Join: hand the peer over.
pub fn join(ctx: &Ctx, st: &mut DkState, req: &Join) -> Result<JoinResponse, String> {
    let ep = st
        .endpoints
        .get_mut(&req.endpoint_id)
        .ok_or_else(|| format!("no such endpoint {:?}", req.endpoint_id))?;
    let net = st
        .networks
        .get(&ep.network_id)
        .ok_or_else(|| format!("no such network {:?}", ep.network_id))?;
    ep.sandbox_key = Some(req.sandbox_key.clone()).filter(|k| !k.is_empty());
    let gw = |v4: bool| {
        if net.internal {
            return String::new();
        }
        net.subnets
            .iter()
            .filter_map(|s| s.gateway)
            .find(|g| g.addr().is_ipv4() == v4)
            .map(|g| g.addr().to_string())
            .unwrap_or_default()
    };
    let resp = JoinResponse {
        interface_name: InterfaceName {
            src_name: ep.peer.clone(),
            dst_prefix: "eth".into(),
        },
        gateway: gw(true),
        gateway_ipv6: gw(false),
        static_routes: Vec::new(),
        // An internal network has no way out, and must not get docker_gwbridge either.
        disable_gateway_service: net.internal,
    };
    ctx.save(st)?;
    Ok(resp)
}

/// Leave: forget the sandbox (ports go too, in case Revoke was not called). Unknown is fine.
pub fn leave(ctx: &Ctx, st: &mut DkState, eid: &str) -> Result<(), String> {
    if !st.endpoints.contains_key(eid) {
        return Ok(());
    }
    revoke(ctx, st, eid)?;
    if let Some(ep) = st.endpoints.get_mut(eid) {
        ep.sandbox_key = None;
    }
    ctx.save(st)
}

fn proto_of(n: u8) -> Result<Proto, String> {
    Proto::from_number(n).ok_or_else(|| format!("unsupported protocol number {n}"))
}

/// ProgramExternalConnectivity: publish the endpoint's ports.
pub fn program(
    ctx: &Ctx,
    st: &mut DkState,
    eid: &str,
    opts: &BTreeMap<String, Value>,
) -> Result<(), String> {
    let ep = st
        .endpoints
        .get(eid)
        .cloned()
        .ok_or_else(|| format!("no such endpoint {eid:?}"))?;
    let net = st
        .networks
        .get(&ep.network_id)
        .cloned()
        .ok_or_else(|| format!("no such network {:?}", ep.network_id))?;
    let bindings: Vec<PortBinding> = match opts.get(OPT_PORTMAP) {
        Some(v) if !v.is_null() => {
            serde_json::from_value(v.clone()).map_err(|e| format!("{OPT_PORTMAP}: {e}"))?
        }
        _ => Vec::new(),
    };
    let mut maps = Vec::new();
    let mut ports = Vec::new();
    for b in &bindings {
        if b.host_port == 0 {
            return Err(format!(
                "port {}: a host port is required (this driver does not pick one)",
                b.port
            ));
        }
        if b.host_port_end != 0 && b.host_port_end != b.host_port {
            return Err(format!(
                "port {}: host port ranges are not supported",
                b.port
            ));
        }
        let proto = proto_of(b.proto)?;
        let m = PortMap::from_raw(
            i64::from(b.host_port),
            i64::from(b.port),
            proto.as_str(),
            &b.host_ip,
        )
        .map_err(|e| e.to_string())?;
        ports.push(DkPort {
            proto: proto.as_str().into(),
            host_port: m.host_port,
            container_port: m.container_port,
            host_ip: m.host_ip,
        });
        maps.push(m);
    }
    if maps.is_empty() {
        return Ok(());
    }
    let spec = portmap_spec(&ep, maps)?;
    port_forwarder(backend()?)
        .add_portmap(&spec)
        .map_err(|e| format!("publishing ports: {e}"))?;
    // Connections to 127.0.0.1:<host port> are DNATed to the bridge: allow that routing.
    let _ = kernel::sysctl::write(&format!("net/ipv4/conf/{}/route_localnet", net.bridge), "1");
    if let Some(e) = st.endpoints.get_mut(eid) {
        e.ports = ports;
    }
    ctx.save(st)
}

/// The port forwarding of an endpoint, as the `portmap` plugin programs it.
fn portmap_spec(ep: &DkEndpoint, maps: Vec<PortMap>) -> Result<PortmapSpec, String> {
    let mut spec = PortmapSpec::new(&fw_network(&ep.network_id), &ep.id, OWNER_IF);
    spec.v4 = ep.addresses.iter().copied().find(|a| a.addr().is_ipv4());
    spec.v6 = ep.addresses.iter().copied().find(|a| !a.addr().is_ipv4());
    spec.mappings = maps;
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// The published ports of an endpoint as recorded.
fn recorded_maps(ep: &DkEndpoint) -> Result<Vec<PortMap>, String> {
    ep.ports
        .iter()
        .map(|p| {
            let host_ip = p.host_ip.map(|i| i.to_string()).unwrap_or_default();
            PortMap::from_raw(
                i64::from(p.host_port),
                i64::from(p.container_port),
                &p.proto,
                &host_ip,
            )
            .map_err(|e| e.to_string())
        })
        .collect()
}

/// RevokeExternalConnectivity: unpublish (unknown endpoint or nothing published is fine).
pub fn revoke(ctx: &Ctx, st: &mut DkState, eid: &str) -> Result<(), String> {
    let Some(ep) = st.endpoints.get(eid).cloned() else {
        return Ok(());
    };
    port_forwarder(backend()?)
        .del_portmap(&fw_network(&ep.network_id), &ep.id, OWNER_IF)
        .map_err(|e| format!("unpublishing ports: {e}"))?;
    if let Some(e) = st.endpoints.get_mut(eid) {
        if !e.ports.is_empty() {
            e.ports.clear();
            return ctx.save(st);
        }
    }
    Ok(())
}

/// `EndpointOperInfo`: what `docker network inspect` may show.
pub fn oper_info(st: &DkState, eid: &str) -> Result<Value, String> {
    let ep = st
        .endpoints
        .get(eid)
        .ok_or_else(|| format!("no such endpoint {eid:?}"))?;
    let bridge = st
        .networks
        .get(&ep.network_id)
        .map(|n| n.bridge.clone())
        .unwrap_or_default();
    Ok(serde_json::json!({"Value": {
        "bridge": bridge,
        "host_veth": ep.host_veth,
        "ports": ep.ports,
    }}))
}

/// `POST /v1/_repair`: put back what a firewall flush (`nft flush ruleset`, a firewall
/// manager's reload) or a deleted bridge took away: each network's bridge and isolation rules,
/// each endpoint's masquerade, forward accept and published-port entries. Each is checked first
/// (the same check the plugins' CHECK runs) and re-added only when missing; one line per repair.
pub fn repair(st: &DkState) -> Vec<String> {
    let mut actions = Vec::new();
    for n in st.networks.values() {
        let tag = format!("docker network {}", short(&n.id));
        if !link_exists(&n.bridge).unwrap_or(true) {
            match hostport::ensure_gateway_bridge(&bridge_spec(n)) {
                Ok(()) => actions.push(format!("{tag}: bridge {} recreated", n.bridge)),
                Err(e) => actions.push(format!("{tag}: bridge: {}", e.msg)),
            }
        }
        let (v4, v6) = families(n);
        let missing = forward_fw()
            .and_then(|fw| {
                fw.check_isolation(&n.bridge, ingress_policy(n), v4, v6)
                    .and_then(|()| {
                        fw.check_isolation(DOCKER_BRIDGE, IngressPolicy::SameBridge, v4, v6)
                    })
                    .map_err(|e| e.to_string())
            })
            .is_err();
        if missing {
            match add_isolation(n) {
                Ok(()) => actions.push(format!("{tag}: isolation rules re-added")),
                Err(e) => actions.push(format!("{tag}: {e}")),
            }
        }
    }
    for ep in st.endpoints.values() {
        if ep.state != DkEpState::Ready {
            continue;
        }
        let Some(net) = st.networks.get(&ep.network_id) else {
            continue;
        };
        let tag = format!("docker endpoint {}", short(&ep.id));
        if !link_exists(&ep.host_veth).unwrap_or(true) {
            // The peer is in the container: only dockerd can make a new endpoint.
            actions.push(format!("{tag}: host veth {} is gone", ep.host_veth));
            continue;
        }
        match hostport::ensure_masquerade(&bridge_spec(net), &port_spec(ep)) {
            Ok(true) => actions.push(format!("{tag}: masquerade entries re-added")),
            Ok(false) => {}
            Err(e) => actions.push(format!("{tag}: masquerade: {}", e.msg)),
        }
        let att = forward_attachment(ep);
        let fw = forward_fw();
        if fw
            .as_ref()
            .map(|f| f.check_forward(&att).is_err())
            .unwrap_or(true)
        {
            match add_forward(ep) {
                Ok(()) => actions.push(format!("{tag}: forward entries re-added")),
                Err(e) => actions.push(format!("{tag}: {e}")),
            }
        }
        if ep.ports.is_empty() {
            continue;
        }
        let outcome = recorded_maps(ep)
            .and_then(|maps| portmap_spec(ep, maps))
            .and_then(|spec| {
                let pf = port_forwarder(backend()?);
                if pf.check_portmap(&spec).is_ok() {
                    return Ok(false);
                }
                pf.add_portmap(&spec)
                    .map(|()| true)
                    .map_err(|e| format!("publishing ports: {e}"))
            });
        match outcome {
            Ok(true) => actions.push(format!("{tag}: published ports re-added")),
            Ok(false) => {}
            Err(e) => actions.push(format!("{tag}: {e}")),
        }
    }
    actions
}

/// Start-up: undo endpoints a crash left half-created; make sure every bridge exists.
pub fn reconcile(ctx: &Ctx, st: &mut DkState) -> Vec<String> {
    let mut actions = Vec::new();
    let half: Vec<DkEndpoint> = st
        .endpoints
        .values()
        .filter(|e| e.state == DkEpState::Creating)
        .cloned()
        .collect();
    for ep in half {
        match undo_endpoint(st, &ep) {
            Ok(()) => {
                st.endpoints.remove(&ep.id);
                actions.push(format!(
                    "docker endpoint {}: creation undone",
                    short(&ep.id)
                ));
            }
            Err(e) => actions.push(format!(
                "docker endpoint {}: undo failed: {e}",
                short(&ep.id)
            )),
        }
    }
    for n in st.networks.values() {
        if let Err(e) = hostport::ensure_gateway_bridge(&bridge_spec(n)) {
            actions.push(format!(
                "docker network {}: bridge: {}",
                short(&n.id),
                e.msg
            ));
        }
        // Networks of a state written before isolation existed get it now.
        if let Err(e) = add_isolation(n) {
            actions.push(format!("docker network {}: {e}", short(&n.id)));
        }
    }
    if let Err(e) = ctx.save(st) {
        actions.push(format!("docker state: {e}"));
    }
    actions
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> CreateNetwork {
        serde_json::from_value(v).unwrap()
    }

    const NID: &str = "d2cb65000de533a645847dcea5bd6cf856ff65bfbd83ee66fe8a55c382280ef7";

    #[test]
    fn network_options_and_pools() {
        let st = DkState::default();
        let n = plan_network(
            &st,
            &req(json!({
                "NetworkID": NID,
                "Options": {
                    "com.docker.network.enable_ipv6": false,
                    "com.docker.network.generic": {
                        "com.docker.network.bridge.name": "br77",
                        "com.docker.network.driver.mtu": "1400",
                        "com.docker.network.bridge.enable_ip_masquerade": "false",
                    },
                },
                "IPv4Data": [{"AddressSpace": "rcni", "Pool": "10.77.0.0/24",
                              "Gateway": "10.77.0.1/24", "AuxAddresses": null}],
                "IPv6Data": null,
            })),
        )
        .unwrap();
        assert_eq!(n.bridge, "br77");
        assert_eq!(n.mtu, Some(1400));
        assert!(!n.masquerade && !n.internal);
        assert!(n.icc);
        assert_eq!(ingress_policy(&n), IngressPolicy::SameBridge);
        assert_eq!(families(&n), (true, false));
        assert_eq!(n.subnets[0].gateway.unwrap().to_string(), "10.77.0.1/24");
        assert!(!bridge_spec(&n).ip_masq);

        // Defaults; internal as a top-level option; a plain gateway gets the pool's prefix.
        let n = plan_network(
            &st,
            &req(json!({
                "NetworkID": NID,
                "Options": {"com.docker.network.internal": true},
                "IPv4Data": [{"Pool": "10.78.0.0/16", "Gateway": "10.78.0.1"}],
            })),
        )
        .unwrap();
        assert_eq!(n.bridge, "rc-d2cb65000de");
        assert!(n.internal && n.masquerade);
        assert!(
            !bridge_spec(&n).ip_masq,
            "internal networks are not masqueraded"
        );
        assert_eq!(n.subnets[0].gateway.unwrap().to_string(), "10.78.0.1/16");

        // enable_icc=false: the firewall plugin's `isolated` policy.
        let n = plan_network(
            &st,
            &req(json!({
                "NetworkID": NID,
                "Options": {"com.docker.network.generic": {
                    "com.docker.network.bridge.enable_icc": "false"}},
            })),
        )
        .unwrap();
        assert!(!n.icc);
        assert_eq!(ingress_policy(&n), IngressPolicy::Isolated);
        // A state written before the option existed reads as icc on.
        let mut v = serde_json::to_value(&n).unwrap();
        v.as_object_mut().unwrap().remove("icc");
        assert!(serde_json::from_value::<DkNetwork>(v).unwrap().icc);

        for (opts, want) in [
            (json!({"frobnicate": "1"}), "unknown option"),
            (
                json!({"com.docker.network.bridge.enable_icc": "nope"}),
                "not a boolean",
            ),
            (json!({"mtu": "9"}), "not an MTU"),
            (json!({"bridge_name": "a/b"}), "bridge_name"),
            (json!({"masquerade": "maybe"}), "not a boolean"),
        ] {
            let e = plan_network(
                &st,
                &req(json!({"NetworkID": NID, "Options": {"com.docker.network.generic": opts}})),
            )
            .unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let e = plan_network(&st, &req(json!({"NetworkID": "../x"}))).unwrap_err();
        assert!(e.contains("invalid network id"), "{e}");
    }

    #[test]
    fn docker_style_macs() {
        let a: Vec<IpNet> = vec![
            "fd00::5/64".parse().unwrap(),
            "10.77.0.10/24".parse().unwrap(),
        ];
        assert_eq!(mac_for(&a), Some([0x02, 0x42, 10, 77, 0, 10]));
        assert_eq!(mac_for(&a[..1]), None);
    }
}
