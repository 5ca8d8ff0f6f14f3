//! The sandboxd client commands: `network …`, `sandbox …`, `repair` and `events`.
//!
//! Every flag is checked here before a request is sent (names, CIDRs, addresses, ports, options),
//! so a typo is a usage error (exit 2) naming the flag rather than a round trip. The daemon checks
//! everything again; its answers are decoded leniently for the tables (unknown fields ignored,
//! missing ones empty) and printed unchanged with `--json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;

use hyper::Method;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::attach::parse_port;
use crate::cli::{EndpointArgs, NetworkCmd, NetworkCreateArgs, SandboxCmd, SandboxCreateArgs};
use crate::daemon::Client;
use crate::error::{Error, Result};
use crate::table::{dash, Table};

/// Longest network, sandbox or alias name the API accepts.
pub const MAX_NAME: usize = 64;

// ---------------------------------------------------------------------------------------------
// Validation and request bodies

/// A network or sandbox name as the API accepts it: 1-64 bytes of `[A-Za-z0-9][A-Za-z0-9_.-]*`
/// (so never `.`, `..` or anything with `/`). Also valid for ids and id prefixes.
pub fn check_name(what: &str, s: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Usage(format!("invalid {what} {s:?}: {why}")));
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > MAX_NAME {
        return bad(&format!("{} bytes, at most {MAX_NAME} allowed", s.len()));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(&format!(
            "character {c:?} not allowed (letters, digits, '_', '.', '-')"
        ));
    }
    Ok(())
}

/// A hostname: dot-separated RFC 1123 labels (letters, digits, '-', not at either end of a
/// label, at most 63 each), at most 64 characters in all (the kernel's limit).
pub fn check_hostname(s: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Usage(format!("invalid --hostname {s:?}: {why}")));
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > 64 {
        return bad(&format!("{} characters, at most 64 allowed", s.len()));
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label must have 1-63 characters");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with '-'");
        }
    }
    Ok(())
}

/// Parse `KEY=VALUE` pairs of `flag` (a key given twice is an error; the value may contain '=').
pub fn parse_kv(flag: &str, values: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for v in values {
        let Some((k, val)) = v.split_once('=') else {
            return Err(Error::Usage(format!(
                "invalid {flag} {v:?}: expected KEY=VALUE"
            )));
        };
        if k.is_empty() {
            return Err(Error::Usage(format!("invalid {flag} {v:?}: empty key")));
        }
        if k.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Usage(format!(
                "invalid {flag} {v:?}: the key contains whitespace"
            )));
        }
        if map.insert(k.to_string(), val.to_string()).is_some() {
            return Err(Error::Usage(format!("{flag} {k} given twice")));
        }
    }
    Ok(map)
}

/// Check the driver options (`-o`): known keys per driver and their value syntax.
pub fn check_options(driver: &str, opts: &BTreeMap<String, String>) -> Result<()> {
    let known: &[&str] = match driver {
        "cni" => &["conflist"],
        "overlay" => &["subnet_len", "vni", "port"],
        _ => &["bridge_name", "mtu", "icc"],
    };
    for (k, v) in opts {
        let bad = |why: String| Err(Error::Usage(format!("invalid -o {k}={v}: {why}")));
        if !known.contains(&k.as_str()) {
            return bad(format!(
                "unknown option for driver {driver} (known: {})",
                known.join(", ")
            ));
        }
        match k.as_str() {
            "subnet_len" | "vni" | "port" if v.parse::<u32>().is_err() => {
                return bad("expected a number".into());
            }
            "mtu" => match v.parse::<u32>() {
                Ok(n) if (68..=65535).contains(&n) => {}
                _ => return bad("the MTU must be a number from 68 to 65535".into()),
            },
            "icc" if !matches!(v.as_str(), "true" | "false") => {
                return bad("expected true or false".into());
            }
            "bridge_name"
                if v.is_empty()
                    || v.len() > 15
                    || v == "."
                    || v == ".."
                    || v.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) =>
            {
                return bad(
                    "an interface name has 1-15 characters, without '/', ':' or spaces".into(),
                );
            }
            "conflist" => check_name("-o conflist", v)?,
            _ => {}
        }
    }
    Ok(())
}

fn parse_cidr(flag: &str, s: &str) -> Result<IpNet> {
    let n: IpNet = s.parse().map_err(|_| {
        Error::Usage(format!(
            "invalid {flag} {s:?}: expected CIDR notation, e.g. 10.90.0.0/24 or fd00:90::/64"
        ))
    })?;
    if n.trunc() != n {
        return Err(Error::Usage(format!(
            "invalid {flag} {s:?}: host bits are set; did you mean {}?",
            n.trunc()
        )));
    }
    Ok(n)
}

fn parse_addr(flag: &str, s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| {
        Error::Usage(format!(
            "invalid {flag} {s:?}: expected an IPv4 or IPv6 address without prefix"
        ))
    })
}

/// The `subnets` of a create request: each `--gateway` and `--ip-range` is put on the `--subnet`
/// containing it (as `docker network create` does), at most one of each per subnet.
pub fn plan_subnets(a: &NetworkCreateArgs) -> Result<Vec<Value>> {
    let subnets = a
        .subnets
        .iter()
        .map(|s| parse_cidr("--subnet", s))
        .collect::<Result<Vec<_>>>()?;
    for s in &subnets {
        let v6 = matches!(s, IpNet::V6(_));
        if v6 && !a.ipv6 {
            return Err(Error::Usage(format!(
                "--subnet {s} is IPv6: add --ipv6 to enable IPv6 on the network"
            )));
        }
        if (!v6 && s.prefix_len() > 30) || (v6 && s.prefix_len() > 126) {
            return Err(Error::Usage(format!(
                "--subnet {s} is too small (at most /30 for IPv4, /126 for IPv6)"
            )));
        }
    }
    if a.ipv6 && a.driver == "bridge" && !subnets.iter().any(|s| matches!(s, IpNet::V6(_))) {
        return Err(Error::Usage(
            "--ipv6 needs an IPv6 --subnet (sandboxd has no default IPv6 pool)".into(),
        ));
    }
    for (i, s) in subnets.iter().enumerate() {
        if let Some(o) = subnets[..i]
            .iter()
            .find(|o| o.contains(&s.network()) || s.contains(&o.network()))
        {
            return Err(Error::Usage(format!("--subnet {s} overlaps --subnet {o}")));
        }
    }
    let mut entries: Vec<Map<String, Value>> = subnets
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert("subnet".into(), Value::String(s.to_string()));
            m
        })
        .collect();
    if subnets.is_empty() && !(a.gateways.is_empty() && a.ip_ranges.is_empty()) {
        return Err(Error::Usage(
            "--gateway and --ip-range need the --subnet they belong to".into(),
        ));
    }
    for g in &a.gateways {
        let ip = parse_addr("--gateway", g)?;
        let i = subnets
            .iter()
            .position(|s| s.contains(&ip))
            .ok_or_else(|| Error::Usage(format!("--gateway {ip} is not in any --subnet")))?;
        let s = subnets[i];
        if ip == s.network() || (s.addr().is_ipv4() && ip == s.broadcast() && s.prefix_len() < 31) {
            return Err(Error::Usage(format!(
                "--gateway {ip} is the network or broadcast address of {s}"
            )));
        }
        if entries[i]
            .insert("gateway".into(), Value::String(ip.to_string()))
            .is_some()
        {
            return Err(Error::Usage(format!(
                "two --gateway values for --subnet {s}"
            )));
        }
    }
    for r in &a.ip_ranges {
        let range = parse_cidr("--ip-range", r)?;
        let i = subnets
            .iter()
            .position(|s| s.contains(&range))
            .ok_or_else(|| {
                Error::Usage(format!("--ip-range {range} is not inside any --subnet"))
            })?;
        if entries[i]
            .insert("ip_range".into(), Value::String(range.to_string()))
            .is_some()
        {
            return Err(Error::Usage(format!(
                "two --ip-range values for --subnet {}",
                subnets[i]
            )));
        }
    }
    Ok(entries.into_iter().map(Value::Object).collect())
}

/// The `NetworkCreate` body for `network create`, or the usage error naming the bad flag.
pub fn network_create_body(a: &NetworkCreateArgs) -> Result<Value> {
    check_name("network name", &a.name)?;
    if matches!(a.name.as_str(), "host" | "none") || a.name.starts_with("container:") {
        return Err(Error::Usage(format!(
            "network name {:?} is reserved (it selects a sandbox mode)",
            a.name
        )));
    }
    let subnets = plan_subnets(a)?;
    let opts = parse_kv("-o", &a.opts)?;
    check_options(&a.driver, &opts)?;
    let labels = parse_kv("--label", &a.labels)?;
    if a.driver == "overlay" && (subnets.len() != 1 || a.internal || a.ipv6) {
        return Err(Error::Usage(
            "--driver overlay needs exactly one IPv4 --subnet (no --internal, no --ipv6)".into(),
        ));
    }
    if a.driver == "cni" && !(a.subnets.is_empty() && !a.internal && !a.ipv6) {
        return Err(Error::Usage(
            "--driver cni uses the conflist as is: --subnet, --gateway, --ip-range, --internal and --ipv6 do not apply".into(),
        ));
    }
    let mut body = json!({"name": a.name, "driver": a.driver});
    let m = body
        .as_object_mut()
        .ok_or_else(|| Error::Failed("building the request".into()))?;
    if !subnets.is_empty() {
        m.insert("subnets".into(), Value::Array(subnets));
    }
    if a.internal {
        m.insert("internal".into(), Value::Bool(true));
    }
    if a.ipv6 {
        m.insert("ipv6".into(), Value::Bool(true));
    }
    if !opts.is_empty() {
        m.insert("options".into(), json!(opts));
    }
    if !labels.is_empty() {
        m.insert("labels".into(), json!(labels));
    }
    Ok(body)
}

/// The endpoint part shared by `SandboxCreate` and `EndpointCreate`: `ip`, `aliases`, `ports`.
pub fn endpoint_fields(e: &EndpointArgs) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    if let Some(ip) = &e.ip {
        let ip = parse_addr("--ip", ip)?;
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            return Err(Error::Usage(format!(
                "invalid --ip {ip}: not a usable unicast address"
            )));
        }
        m.insert("ip".into(), Value::String(ip.to_string()));
    }
    if !e.aliases.is_empty() {
        let mut seen: Vec<String> = Vec::new();
        for a in &e.aliases {
            check_name("--alias", a)?;
            if seen.contains(a) {
                return Err(Error::Usage(format!("--alias {a} given twice")));
            }
            seen.push(a.clone());
        }
        m.insert("aliases".into(), json!(seen));
    }
    if !e.ports.is_empty() {
        let mut ports: Vec<Value> = Vec::new();
        let mut used: Vec<(Option<IpAddr>, u16, String)> = Vec::new();
        for p in &e.ports {
            let spec = parse_port(p)?;
            // The same host port and protocol twice (or once on all addresses and once on one)
            // can never both be bound: refuse before the daemon starts the chain.
            if let Some(prev) = used.iter().find(|(ip, port, proto)| {
                *port == spec.host_port
                    && *proto == spec.protocol
                    && (ip.is_none() || spec.host_ip.is_none() || *ip == spec.host_ip)
            }) {
                return Err(Error::Usage(format!(
                    "invalid --port {p:?}: host port {}/{} is already published by this command{}",
                    prev.1,
                    prev.2,
                    prev.0.map(|ip| format!(" on {ip}")).unwrap_or_default()
                )));
            }
            used.push((spec.host_ip, spec.host_port, spec.protocol.clone()));
            let mut v = json!({
                "host_port": spec.host_port,
                "container_port": spec.container_port,
                "protocol": spec.protocol,
            });
            if let (Some(ip), Some(o)) = (spec.host_ip, v.as_object_mut()) {
                o.insert("host_ip".into(), Value::String(ip.to_string()));
            }
            ports.push(v);
        }
        m.insert("ports".into(), Value::Array(ports));
    }
    Ok(m)
}

/// The `SandboxCreate` body for `sandbox create`.
pub fn sandbox_create_body(a: &SandboxCreateArgs) -> Result<Value> {
    check_name("sandbox name", &a.name)?;
    let mode = a.network.as_str();
    let special = if let Some(owner) = mode.strip_prefix("container:") {
        check_name("--network container:SANDBOX", owner)?;
        if owner == a.name {
            return Err(Error::Usage(format!(
                "--network container:{owner}: a sandbox cannot share its own namespace"
            )));
        }
        Some("container")
    } else if matches!(mode, "host" | "none") {
        Some(mode)
    } else {
        check_name("--network", mode)?;
        None
    };
    let ep = endpoint_fields(&a.endpoint)?;
    if let Some(special) = special {
        if let Some(flag) = [("ip", "--ip"), ("aliases", "--alias"), ("ports", "--port")]
            .iter()
            .find(|(k, _)| ep.contains_key(*k))
            .map(|(_, f)| f)
        {
            return Err(Error::Usage(format!(
                "{flag} needs a network; --network {mode} ({special} mode) has no endpoint of its own"
            )));
        }
    }
    let mut m = Map::new();
    m.insert("name".into(), Value::String(a.name.clone()));
    m.insert("network".into(), Value::String(a.network.clone()));
    m.extend(ep);
    if let Some(h) = &a.hostname {
        check_hostname(h)?;
        m.insert("hostname".into(), Value::String(h.clone()));
    }
    Ok(Value::Object(m))
}

/// The `EndpointCreate` body for `network connect`.
pub fn endpoint_create_body(network: &str, e: &EndpointArgs) -> Result<Value> {
    check_name("network name", network)?;
    if matches!(network, "host" | "none") || network.starts_with("container:") {
        return Err(Error::Usage(format!(
            "cannot connect to {network:?}: it is a sandbox mode, chosen at `sandbox create --network`"
        )));
    }
    let mut m = Map::new();
    m.insert("network".into(), Value::String(network.to_string()));
    m.extend(endpoint_fields(e)?);
    Ok(Value::Object(m))
}

// ---------------------------------------------------------------------------------------------
// Answers (lenient views of the contract's types, for the tables)

/// One subnet of a network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Subnet {
    /// CIDR.
    pub subnet: String,
    /// Gateway address.
    pub gateway: Option<String>,
    /// Allocation range.
    pub ip_range: Option<String>,
}

/// A network's endpoint reference.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NetworkEndpoint {
    /// Sandbox name.
    pub sandbox: String,
    /// Endpoint id.
    pub endpoint_id: String,
}

/// `Network`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Network {
    /// 64-hex id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Built-in (cannot be removed).
    pub builtin: bool,
    /// Subnets.
    pub subnets: Vec<Subnet>,
    /// No route out.
    pub internal: bool,
    /// IPv6 enabled.
    pub ipv6: bool,
    /// Bridge device.
    pub bridge: Option<String>,
    /// Driver options.
    pub options: BTreeMap<String, Value>,
    /// Labels.
    pub labels: BTreeMap<String, Value>,
    /// Creation time.
    pub created: String,
    /// Endpoints.
    pub endpoints: Vec<NetworkEndpoint>,
}

/// `PortMapping`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Port {
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// Protocol (tcp when absent).
    pub protocol: Option<String>,
    /// Host address.
    pub host_ip: Option<String>,
}

/// `Endpoint`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    /// Id.
    pub id: String,
    /// Network name.
    pub network: String,
    /// Sandbox name.
    pub sandbox: String,
    /// Interface in the sandbox.
    pub ifname: String,
    /// Addresses (CIDR).
    pub addresses: Vec<String>,
    /// Gateways.
    pub gateway: Option<Vec<String>>,
    /// MAC.
    pub mac: Option<String>,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Published ports.
    pub ports: Vec<Port>,
}

/// `Sandbox`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Sandbox {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// network | host | none | container.
    pub mode: String,
    /// Owner in container mode.
    pub container_of: Option<String>,
    /// Namespace path.
    pub netns: String,
    /// Hostname.
    pub hostname: String,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Id of the gateway endpoint.
    pub gateway_endpoint: Option<String>,
    /// Creation time.
    pub created: String,
    /// The resolv.conf sandboxd writes for it (daemon started with --etc-netns).
    pub resolv_conf_path: Option<String>,
    /// The hosts file sandboxd writes for it.
    pub hosts_path: Option<String>,
}

/// `Event`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Event {
    /// Time.
    pub time: String,
    /// network | sandbox | endpoint.
    pub kind: String,
    /// create | remove | connect | disconnect.
    pub action: String,
    /// Object name.
    pub name: String,
    /// Network involved.
    pub network: Option<String>,
    /// Sandbox involved.
    pub sandbox: Option<String>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: &Value) -> Result<T> {
    T::deserialize(v).map_err(|e| {
        Error::Failed(format!(
            "unexpected {what} from sandboxd (use --json to see it): {e}"
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn short_id(id: &str) -> String {
    dash(id.chars().take(12).collect::<String>())
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn kv_list(m: &BTreeMap<String, Value>) -> String {
    dash(
        m.iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// `8080->80/tcp`, `127.0.0.1:8080->80/udp`, `[::1]:8080->80/tcp`.
pub fn port_text(p: &Port) -> String {
    let proto = p.protocol.as_deref().unwrap_or("tcp");
    let host = match p.host_ip.as_deref() {
        Some(ip) if ip.contains(':') => format!("[{ip}]:"),
        Some(ip) if !ip.is_empty() => format!("{ip}:"),
        _ => String::new(),
    };
    format!("{host}{}->{}/{proto}", p.host_port, p.container_port)
}

fn network_flags(n: &Network) -> String {
    let mut f = Vec::new();
    if n.builtin {
        f.push("builtin");
    }
    if n.internal {
        f.push("internal");
    }
    if n.ipv6 {
        f.push("ipv6");
    }
    dash(f.join(","))
}

/// The `network ls` table.
pub fn render_networks(nets: &[Network]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "ID",
        "DRIVER",
        "SUBNETS",
        "GATEWAYS",
        "BRIDGE",
        "ENDPOINTS",
        "FLAGS",
    ]);
    for n in nets {
        t.row(vec![
            n.name.clone(),
            short_id(&n.id),
            dash(n.driver.clone()),
            dash(
                n.subnets
                    .iter()
                    .map(|s| s.subnet.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            dash(
                n.subnets
                    .iter()
                    .filter_map(|s| s.gateway.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            dash(n.bridge.clone().unwrap_or_default()),
            n.endpoints.len().to_string(),
            network_flags(n),
        ]);
    }
    t.render()
}

fn fields(rows: &[(&str, String)]) -> String {
    let mut t = Table::default();
    for (k, v) in rows {
        t.row(vec![format!("{k}:"), v.clone()]);
    }
    // A header-less table: skip the empty header line.
    t.render()
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The `network inspect` view.
pub fn render_network(n: &Network) -> String {
    let mut out = fields(&[
        ("Name", n.name.clone()),
        ("ID", dash(n.id.clone())),
        ("Driver", dash(n.driver.clone())),
        ("Bridge", dash(n.bridge.clone().unwrap_or_default())),
        ("Flags", network_flags(n)),
        ("Options", kv_list(&n.options)),
        ("Labels", kv_list(&n.labels)),
        ("Created", dash(n.created.clone())),
    ]);
    if !n.subnets.is_empty() {
        let mut t = Table::new(&["SUBNET", "GATEWAY", "IP-RANGE"]);
        for s in &n.subnets {
            t.row(vec![
                s.subnet.clone(),
                dash(s.gateway.clone().unwrap_or_default()),
                dash(s.ip_range.clone().unwrap_or_default()),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out.push('\n');
    if n.endpoints.is_empty() {
        out.push_str("no endpoints\n");
    } else {
        let mut t = Table::new(&["SANDBOX", "ENDPOINT"]);
        for e in &n.endpoints {
            t.row(vec![e.sandbox.clone(), short_id(&e.endpoint_id)]);
        }
        out.push_str(&t.render());
    }
    out
}

fn sandbox_mode(s: &Sandbox) -> String {
    match (&*s.mode, &s.container_of) {
        ("container", Some(owner)) => format!("container:{owner}"),
        (m, _) => dash(m.to_string()),
    }
}

fn join_all(v: impl Iterator<Item = String>) -> String {
    dash(v.collect::<Vec<_>>().join(","))
}

/// The `sandbox ls` table.
pub fn render_sandboxes(sbs: &[Sandbox]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "ID",
        "MODE",
        "NETWORKS",
        "ADDRESSES",
        "PORTS",
        "NETNS",
    ]);
    for s in sbs {
        t.row(vec![
            s.name.clone(),
            short_id(&s.id),
            sandbox_mode(s),
            join_all(s.endpoints.iter().map(|e| e.network.clone())),
            join_all(s.endpoints.iter().flat_map(|e| e.addresses.clone())),
            join_all(
                s.endpoints
                    .iter()
                    .flat_map(|e| e.ports.iter().map(port_text)),
            ),
            dash(s.netns.clone()),
        ]);
    }
    t.render()
}

/// The endpoint table (`sandbox inspect`, `network connect`); the gateway endpoint is marked `*`.
pub fn render_endpoints(eps: &[Endpoint], gateway: Option<&str>) -> String {
    let mut t = Table::new(&[
        "IFNAME",
        "NETWORK",
        "ADDRESSES",
        "GATEWAY",
        "MAC",
        "ALIASES",
        "PORTS",
        "ENDPOINT",
    ]);
    for e in eps {
        let mark = if gateway == Some(e.id.as_str()) {
            "*"
        } else {
            ""
        };
        t.row(vec![
            format!("{}{mark}", dash(e.ifname.clone())),
            e.network.clone(),
            dash(e.addresses.join(",")),
            dash(e.gateway.clone().unwrap_or_default().join(",")),
            dash(e.mac.clone().unwrap_or_default()),
            dash(e.aliases.join(",")),
            join_all(e.ports.iter().map(port_text)),
            short_id(&e.id),
        ]);
    }
    t.render()
}

/// The `sandbox inspect` view.
pub fn render_sandbox(s: &Sandbox) -> String {
    let mut rows = vec![
        ("Name", s.name.clone()),
        ("ID", dash(s.id.clone())),
        ("Mode", sandbox_mode(s)),
        ("Netns", dash(s.netns.clone())),
        ("Hostname", dash(s.hostname.clone())),
        ("Created", dash(s.created.clone())),
    ];
    // Only when the daemon writes them (--etc-netns).
    if let Some(p) = &s.resolv_conf_path {
        rows.push(("ResolvConf", p.clone()));
    }
    if let Some(p) = &s.hosts_path {
        rows.push(("Hosts", p.clone()));
    }
    let mut out = fields(&rows);
    out.push('\n');
    if s.endpoints.is_empty() {
        out.push_str("no endpoints\n");
    } else {
        out.push_str(&render_endpoints(
            &s.endpoints,
            s.gateway_endpoint.as_deref(),
        ));
    }
    out
}

/// One `events` line: `TIME KIND ACTION NAME [network=N] [sandbox=S]`; an endpoint, named by
/// its 64-hex id, is shown by the 12-digit prefix the other tables use.
pub fn render_event(e: &Event) -> String {
    let name = if e.name.len() == 64 && e.name.bytes().all(|b| b.is_ascii_hexdigit()) {
        short_id(&e.name)
    } else {
        e.name.clone()
    };
    let mut s = format!("{} {} {} {name}", dash(e.time.clone()), e.kind, e.action);
    if let Some(n) = &e.network {
        s.push_str(&format!(" network={n}"));
    }
    if let Some(sb) = &e.sandbox {
        s.push_str(&format!(" sandbox={sb}"));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Commands

fn print_json(out: &mut dyn Write, v: &Value) -> Result<()> {
    crate::json_out(out, v)
}

fn answer(v: Option<Value>, what: &str) -> Result<Value> {
    v.ok_or_else(|| Error::Failed(format!("sandboxd sent an empty answer for {what}")))
}

/// `netns network …`.
pub fn network(client: &Client, cmd: &NetworkCmd, out: &mut dyn Write) -> Result<()> {
    match cmd {
        NetworkCmd::Create(a) => {
            let body = network_create_body(a)?;
            let v = answer(
                client.call(Method::POST, "/v1/networks", Some(&body))?,
                "the network",
            )?;
            if a.json {
                return print_json(out, &v);
            }
            let n: Network = decode("network", &v)?;
            let _ = write!(out, "{}", render_networks(std::slice::from_ref(&n)));
        }
        NetworkCmd::Ls { json } => {
            let v = answer(
                client.call(Method::GET, "/v1/networks", None)?,
                "the networks",
            )?;
            if *json {
                return print_json(out, &v);
            }
            let nets: Vec<Network> = decode("network list", &v)?;
            let _ = write!(out, "{}", render_networks(&nets));
        }
        NetworkCmd::Inspect { name, json } => {
            check_name("network name", name)?;
            let v = answer(
                client.call(Method::GET, &format!("/v1/networks/{name}"), None)?,
                "the network",
            )?;
            if *json {
                return print_json(out, &v);
            }
            let n: Network = decode("network", &v)?;
            let _ = write!(out, "{}", render_network(&n));
        }
        NetworkCmd::Rm { name } => {
            check_name("network name", name)?;
            client.call(Method::DELETE, &format!("/v1/networks/{name}"), None)?;
            let _ = writeln!(out, "removed network {name}");
        }
        NetworkCmd::Connect(c) => {
            check_name("sandbox name", &c.sandbox)?;
            let body = endpoint_create_body(&c.network, &c.endpoint)?;
            let v = answer(
                client.call(
                    Method::POST,
                    &format!("/v1/sandboxes/{}/endpoints", c.sandbox),
                    Some(&body),
                )?,
                "the endpoint",
            )?;
            if c.json {
                return print_json(out, &v);
            }
            let e: Endpoint = decode("endpoint", &v)?;
            let _ = write!(out, "{}", render_endpoints(std::slice::from_ref(&e), None));
        }
        NetworkCmd::Disconnect { network, sandbox } => {
            check_name("network name", network)?;
            check_name("sandbox name", sandbox)?;
            client.call(
                Method::DELETE,
                &format!("/v1/sandboxes/{sandbox}/endpoints/{network}"),
                None,
            )?;
            let _ = writeln!(out, "disconnected sandbox {sandbox} from network {network}");
        }
    }
    Ok(())
}

/// `netns sandbox …`.
pub fn sandbox(client: &Client, cmd: &SandboxCmd, out: &mut dyn Write) -> Result<()> {
    match cmd {
        SandboxCmd::Create(a) => {
            let body = sandbox_create_body(a)?;
            let v = answer(
                client.call(Method::POST, "/v1/sandboxes", Some(&body))?,
                "the sandbox",
            )?;
            if a.json {
                return print_json(out, &v);
            }
            let s: Sandbox = decode("sandbox", &v)?;
            let _ = write!(out, "{}", render_sandboxes(std::slice::from_ref(&s)));
        }
        SandboxCmd::Ls { json } => {
            if *json {
                let v = answer(
                    client.call(Method::GET, "/v1/sandboxes", None)?,
                    "the sandboxes",
                )?;
                return print_json(out, &v);
            }
            let sbs: Vec<Sandbox> = client
                .call_as(Method::GET, "/v1/sandboxes", None)?
                .ok_or_else(|| {
                    Error::Failed("sandboxd sent an empty answer for the sandboxes".into())
                })?;
            let _ = write!(out, "{}", render_sandboxes(&sbs));
        }
        SandboxCmd::Inspect { name, json } => {
            check_name("sandbox name", name)?;
            let v = answer(
                client.call(Method::GET, &format!("/v1/sandboxes/{name}"), None)?,
                "the sandbox",
            )?;
            if *json {
                return print_json(out, &v);
            }
            let s: Sandbox = decode("sandbox", &v)?;
            let _ = write!(out, "{}", render_sandbox(&s));
        }
        SandboxCmd::Rm { name } => {
            check_name("sandbox name", name)?;
            client.call(Method::DELETE, &format!("/v1/sandboxes/{name}"), None)?;
            let _ = writeln!(out, "removed sandbox {name}");
        }
    }
    Ok(())
}

/// `netns repair`.
pub fn repair(client: &Client, json: bool, out: &mut dyn Write) -> Result<()> {
    let v = answer(
        client.call(Method::POST, "/v1/_repair", None)?,
        "the repair",
    )?;
    if json {
        return print_json(out, &v);
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Report {
        actions: Vec<String>,
    }
    let r: Report = decode("repair report", &v)?;
    if r.actions.is_empty() {
        let _ = writeln!(out, "nothing to repair");
    }
    for a in &r.actions {
        let _ = writeln!(out, "{a}");
    }
    Ok(())
}

/// `netns events`: one line per event until the daemon ends the stream or stdout is closed.
pub fn events(client: &Client, json: bool, out: &mut dyn Write) -> Result<()> {
    let mut bad: Option<Error> = None;
    client.stream_lines("/v1/events", &mut |line| {
        let text = if json {
            String::from_utf8_lossy(line).into_owned()
        } else {
            match serde_json::from_slice::<Event>(line) {
                Ok(e) => render_event(&e),
                Err(e) => {
                    bad = Some(Error::Failed(format!(
                        "unexpected event from sandboxd: {e}: {}",
                        String::from_utf8_lossy(line)
                    )));
                    return false;
                }
            }
        };
        // A closed stdout (`netns events | head -1`) ends the command quietly.
        writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
    })?;
    bad.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd};
    use crate::daemon::tests::{json_resp, resp, Fake};
    use clap::Parser;

    fn usage(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected usage error, got {other:?}"),
        }
    }

    fn parse(argv: &[&str]) -> Cmd {
        let mut v = vec!["netns"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v).unwrap().command
    }

    fn net_create(extra: &[&str]) -> NetworkCreateArgs {
        let mut v = vec!["network", "create", "n1"];
        v.extend_from_slice(extra);
        match parse(&v) {
            Cmd::Network(NetworkCmd::Create(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    fn sb_create(extra: &[&str]) -> SandboxCreateArgs {
        let mut v = vec!["sandbox", "create", "s1"];
        v.extend_from_slice(extra);
        match parse(&v) {
            Cmd::Sandbox(SandboxCmd::Create(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names() {
        check_name("x", "a").unwrap();
        check_name("x", "web-1_a.b").unwrap();
        check_name("x", &"a".repeat(64)).unwrap();
        assert!(usage(check_name("x", "")).contains("empty"));
        assert!(usage(check_name("x", &"a".repeat(65))).contains("65 bytes, at most 64"));
        assert!(usage(check_name("x", ".")).contains("start with a letter or digit"));
        assert!(usage(check_name("x", "..")).contains("start with a letter or digit"));
        assert!(usage(check_name("x", "a/b")).contains("'/'"));
        assert!(usage(check_name("x", "a b")).contains("' '"));
        assert!(usage(check_name("x", "é")).contains("start with"));
        check_hostname("web-1.example").unwrap();
        assert!(usage(check_hostname("-x")).contains("start or end with '-'"));
        assert!(usage(check_hostname("a..b")).contains("1-63"));
        assert!(usage(check_hostname("a_b")).contains("only letters"));
        assert!(usage(check_hostname(&"a".repeat(65))).contains("at most 64"));
    }

    #[test]
    fn o_and_label_parsing() {
        let m = parse_kv("-o", &["mtu=1400".into(), "k=a=b".into(), "e=".into()]).unwrap();
        assert_eq!(m["mtu"], "1400");
        assert_eq!(m["k"], "a=b");
        assert_eq!(m["e"], "");
        assert!(usage(parse_kv("-o", &["mtu".into()])).contains("expected KEY=VALUE"));
        assert!(usage(parse_kv("-o", &["=1".into()])).contains("empty key"));
        assert!(usage(parse_kv("--label", &["a=1".into(), "a=2".into()]))
            .contains("--label a given twice"));
        assert!(usage(parse_kv("-o", &["a b=1".into()])).contains("whitespace"));

        let ok = |d: &str, kv: &[&str]| {
            check_options(
                d,
                &parse_kv("-o", &kv.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
            )
        };
        ok("bridge", &["mtu=1400", "icc=false", "bridge_name=br-test0"]).unwrap();
        ok("cni", &["conflist=mynet"]).unwrap();
        assert!(usage(ok("bridge", &["mtu=67"])).contains("68 to 65535"));
        assert!(usage(ok("bridge", &["mtu=x"])).contains("68 to 65535"));
        assert!(usage(ok("bridge", &["icc=yes"])).contains("true or false"));
        assert!(
            usage(ok("bridge", &["bridge_name=a-very-long-bridge"])).contains("1-15 characters")
        );
        assert!(usage(ok("bridge", &["bridge_name=a/b"])).contains("1-15 characters"));
        assert!(usage(ok("bridge", &["color=red"]))
            .contains("unknown option for driver bridge (known: bridge_name, mtu, icc)"));
        assert!(usage(ok("bridge", &["conflist=x"])).contains("unknown option"));
        ok("cni", &[]).unwrap();
        assert!(usage(ok("cni", &["conflist=../x"])).contains("invalid -o conflist"));
    }

    #[test]
    fn network_create_bodies() {
        assert_eq!(
            network_create_body(&net_create(&[])).unwrap(),
            json!({"name": "n1", "driver": "bridge"})
        );
        let b = network_create_body(&net_create(&[
            "--subnet",
            "10.90.0.0/24",
            "--subnet",
            "fd00:90::/64",
            "--gateway",
            "10.90.0.254",
            "--ip-range",
            "10.90.0.128/25",
            "--gateway",
            "fd00:90::1",
            "--internal",
            "--ipv6",
            "-o",
            "mtu=1400",
            "--opt",
            "icc=false",
            "--label",
            "team=net",
            "--label",
            "x=a=b",
        ]))
        .unwrap();
        assert_eq!(
            b,
            json!({"name": "n1", "driver": "bridge",
                   "subnets": [{"subnet": "10.90.0.0/24", "gateway": "10.90.0.254", "ip_range": "10.90.0.128/25"},
                               {"subnet": "fd00:90::/64", "gateway": "fd00:90::1"}],
                   "internal": true, "ipv6": true,
                   "options": {"icc": "false", "mtu": "1400"},
                   "labels": {"team": "net", "x": "a=b"}})
        );
        assert_eq!(
            network_create_body(&net_create(&["--driver", "cni", "-o", "conflist=mynet"])).unwrap(),
            json!({"name": "n1", "driver": "cni", "options": {"conflist": "mynet"}})
        );
    }

    #[test]
    fn network_create_errors_name_the_flag() {
        let e = |a: &[&str]| usage(network_create_body(&net_create(a)));
        assert!(
            e(&["--subnet", "10.90.0.0"]).contains("invalid --subnet \"10.90.0.0\": expected CIDR")
        );
        assert!(e(&["--subnet", "10.90.0.300/24"]).contains("expected CIDR"));
        assert!(e(&["--subnet", "10.90.0.1/24"])
            .contains("host bits are set; did you mean 10.90.0.0/24?"));
        assert!(e(&["--subnet", "10.0.0.0/8", "--subnet", "10.1.0.0/16"]).contains("overlaps"));
        assert!(e(&["--gateway", "10.0.0.1"]).contains("need the --subnet"));
        assert!(e(&["--subnet", "10.90.0.0/24", "--gateway", "10.91.0.1"])
            .contains("not in any --subnet"));
        assert!(e(&["--subnet", "10.90.0.0/24", "--gateway", "10.90.0.0"])
            .contains("network or broadcast"));
        assert!(e(&["--subnet", "10.90.0.0/24", "--gateway", "10.90.0.255"])
            .contains("network or broadcast"));
        assert!(
            e(&["--subnet", "10.90.0.0/24", "--gateway", "x"]).contains("invalid --gateway \"x\"")
        );
        assert!(e(&[
            "--subnet",
            "10.90.0.0/24",
            "--gateway",
            "10.90.0.1",
            "--gateway",
            "10.90.0.2"
        ])
        .contains("two --gateway"));
        assert!(
            e(&["--subnet", "10.90.0.0/24", "--ip-range", "10.90.0.0/16"])
                .contains("--ip-range 10.90.0.0/16 is not inside any --subnet")
        );
        assert!(
            e(&["--subnet", "10.90.0.0/24", "--ip-range", "10.90.0.1/25"]).contains("host bits")
        );
        assert!(e(&["-o", "nokey"]).contains("invalid -o \"nokey\": expected KEY=VALUE"));
        assert!(e(&["--subnet", "fd00::/64"]).contains("--subnet fd00::/64 is IPv6: add --ipv6"));
        assert!(e(&["--ipv6"]).contains("--ipv6 needs an IPv6 --subnet"));
        assert!(e(&["--ipv6", "--subnet", "10.1.0.0/24"]).contains("--ipv6 needs an IPv6 --subnet"));
        assert!(e(&["--subnet", "10.1.0.0/31"]).contains("too small"));
        assert!(e(&["--ipv6", "--subnet", "fd00::/127"]).contains("too small"));
        assert!(e(&[
            "--driver",
            "cni",
            "-o",
            "conflist=x",
            "--subnet",
            "10.9.0.0/24"
        ])
        .contains("uses the conflist as is"));
        let reserved = network_create_body(&NetworkCreateArgs {
            name: "host".into(),
            ..net_create(&[])
        });
        assert!(usage(reserved).contains("reserved"));
        let bad = network_create_body(&NetworkCreateArgs {
            name: "a/b".into(),
            ..net_create(&[])
        });
        assert!(usage(bad).contains("invalid network name \"a/b\""));
        // clap rejects an unknown driver itself (exit 2).
        let err = Cli::try_parse_from(["netns", "network", "create", "n", "--driver", "vxlan"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn p_parsing_into_port_mappings() {
        let b = sandbox_create_body(&sb_create(&[
            "-p",
            "8080:80",
            "--port",
            "127.0.0.1:5353:53/udp",
            "--publish",
            "[::1]:9000:90/sctp",
            "-p",
            "8080:80/udp",
        ]))
        .unwrap();
        assert_eq!(
            b["ports"],
            json!([
                {"host_port": 8080, "container_port": 80, "protocol": "tcp"},
                {"host_port": 5353, "container_port": 53, "protocol": "udp", "host_ip": "127.0.0.1"},
                {"host_port": 9000, "container_port": 90, "protocol": "sctp", "host_ip": "::1"},
                {"host_port": 8080, "container_port": 80, "protocol": "udp"},
            ])
        );
        let e = |a: &[&str]| usage(sandbox_create_body(&sb_create(a)));
        assert!(e(&["-p", "0:80"]).contains("host port 0 is out of range 1-65535"));
        assert!(e(&["-p", "80:70000"]).contains("container port 70000 is out of range"));
        assert!(e(&["-p", "80"]).contains("expected [HOSTIP:]HOST:CONTAINER"));
        assert!(e(&["-p", "80:80/icmp"]).contains("protocol \"icmp\" is not supported"));
        assert!(e(&["-p", "8080:80", "-p", "8080:81"])
            .contains("host port 8080/tcp is already published"));
        assert!(e(&["-p", "127.0.0.1:8080:80", "-p", "8080:81"])
            .contains("already published by this command on 127.0.0.1"));
        // Different host addresses may share a port.
        sandbox_create_body(&sb_create(&[
            "-p",
            "127.0.0.1:8080:80",
            "-p",
            "127.0.0.2:8080:80",
        ]))
        .unwrap();
    }

    #[test]
    fn sandbox_create_bodies_and_modes() {
        assert_eq!(
            sandbox_create_body(&sb_create(&[])).unwrap(),
            json!({"name": "s1", "network": "bridge"})
        );
        assert_eq!(
            sandbox_create_body(&sb_create(&[
                "--network",
                "n1",
                "--ip",
                "10.90.0.10",
                "--alias",
                "web",
                "--alias",
                "www",
                "--hostname",
                "web.local",
            ]))
            .unwrap(),
            json!({"name": "s1", "network": "n1", "ip": "10.90.0.10", "aliases": ["web", "www"],
                   "hostname": "web.local"})
        );
        for mode in ["host", "none", "container:s0"] {
            assert_eq!(
                sandbox_create_body(&sb_create(&["--network", mode])).unwrap(),
                json!({"name": "s1", "network": mode})
            );
        }
        let e = |a: &[&str]| usage(sandbox_create_body(&sb_create(a)));
        assert!(e(&["--network", "host", "-p", "80:80"])
            .contains("--port needs a network; --network host (host mode)"));
        assert!(e(&["--network", "none", "--ip", "10.0.0.1"]).contains("--ip needs a network"));
        assert!(
            e(&["--network", "container:s0", "--alias", "a"]).contains("--alias needs a network")
        );
        assert!(e(&["--network", "container:s1"]).contains("cannot share its own namespace"));
        assert!(
            e(&["--network", "container:"]).contains("invalid --network container:SANDBOX \"\"")
        );
        assert!(e(&["--network", "a/b"]).contains("invalid --network \"a/b\""));
        assert!(e(&["--ip", "10.0.0.1/24"]).contains(
            "invalid --ip \"10.0.0.1/24\": expected an IPv4 or IPv6 address without prefix"
        ));
        assert!(e(&["--ip", "127.0.0.1"]).contains("not a usable unicast"));
        assert!(e(&["--alias", "a", "--alias", "a"]).contains("--alias a given twice"));
        assert!(e(&["--alias=-x"]).contains("invalid --alias"));
        assert!(e(&["--hostname", "a_b"]).contains("invalid --hostname"));
    }

    #[test]
    fn connect_bodies() {
        let Cmd::Network(NetworkCmd::Connect(c)) = parse(&[
            "network",
            "connect",
            "n2",
            "s1",
            "--ip",
            "fd00::5",
            "--alias",
            "db",
            "-p",
            "5432:5432",
        ]) else {
            panic!()
        };
        assert_eq!((c.network.as_str(), c.sandbox.as_str()), ("n2", "s1"));
        assert_eq!(
            endpoint_create_body(&c.network, &c.endpoint).unwrap(),
            json!({"network": "n2", "ip": "fd00::5", "aliases": ["db"],
                   "ports": [{"host_port": 5432, "container_port": 5432, "protocol": "tcp"}]})
        );
        assert!(
            usage(endpoint_create_body("host", &EndpointArgs::default())).contains("sandbox mode")
        );
        assert!(usage(endpoint_create_body("..", &EndpointArgs::default()))
            .contains("invalid network name"));
    }

    fn sample_network() -> Value {
        json!({"id": "0123456789abcdef".repeat(4), "name": "n1", "driver": "bridge", "builtin": false,
               "subnets": [{"subnet": "10.90.0.0/24", "gateway": "10.90.0.1"},
                           {"subnet": "fd00:90::/64", "gateway": "fd00:90::1", "ip_range": "fd00:90::/80"}],
               "internal": true, "ipv6": true, "bridge": "br-0123456789ab",
               "options": {"mtu": "1400"}, "labels": {"team": "net"},
               "created": "2026-12-04T22:00:00Z",
               "endpoints": [{"sandbox": "s1", "endpoint_id": "fedcba9876543210".repeat(4)}],
               "future_field": 1})
    }

    fn sample_sandbox() -> Value {
        json!({"id": "aa".repeat(32), "name": "s1", "mode": "network", "netns": "/run/netns/s1",
               "hostname": "s1", "created": "2026-12-04T22:00:01Z",
               "gateway_endpoint": "e1".repeat(32),
               "endpoints": [
                 {"id": "e1".repeat(32), "network": "n1", "sandbox": "s1", "ifname": "eth0",
                  "addresses": ["10.90.0.2/24"], "gateway": ["10.90.0.1"], "mac": "02:42:0a:5a:00:02",
                  "aliases": ["web"], "ports": [{"host_port": 8080, "container_port": 80, "protocol": "tcp"},
                                                {"host_port": 53, "container_port": 53, "protocol": "udp", "host_ip": "127.0.0.1"}]},
                 {"id": "e2".repeat(32), "network": "n2", "sandbox": "s1", "ifname": "eth1",
                  "addresses": ["10.91.0.2/24", "fd00:91::2/64"], "aliases": [], "ports": []}]})
    }

    #[test]
    fn network_tables() {
        let n: Network = decode("network", &sample_network()).unwrap();
        let builtin: Network = decode(
            "network",
            &json!({"id": "", "name": "host", "driver": "host", "builtin": true, "subnets": [], "endpoints": []}),
        )
        .unwrap();
        assert_eq!(
            render_networks(&[builtin, n.clone()]),
            "NAME  ID            DRIVER  SUBNETS                    GATEWAYS              BRIDGE           ENDPOINTS  FLAGS\n\
             host  -             host    -                          -                     -                0          builtin\n\
             n1    0123456789ab  bridge  10.90.0.0/24,fd00:90::/64  10.90.0.1,fd00:90::1  br-0123456789ab  1          internal,ipv6\n"
        );
        assert_eq!(
            render_network(&n),
            "Name:     n1\n\
             ID:       0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
             Driver:   bridge\n\
             Bridge:   br-0123456789ab\n\
             Flags:    internal,ipv6\n\
             Options:  mtu=1400\n\
             Labels:   team=net\n\
             Created:  2026-12-04T22:00:00Z\n\
             \n\
             SUBNET        GATEWAY     IP-RANGE\n\
             10.90.0.0/24  10.90.0.1   -\n\
             fd00:90::/64  fd00:90::1  fd00:90::/80\n\
             \n\
             SANDBOX  ENDPOINT\n\
             s1       fedcba987654\n"
        );
    }

    #[test]
    fn sandbox_tables() {
        let s: Sandbox = decode("sandbox", &sample_sandbox()).unwrap();
        let owner: Sandbox = decode(
            "sandbox",
            &json!({"id": "bb".repeat(32), "name": "s2", "mode": "container", "container_of": "s1",
                    "netns": "/run/netns/s1", "endpoints": []}),
        )
        .unwrap();
        assert_eq!(
            render_sandboxes(&[s.clone(), owner]),
            "NAME  ID            MODE          NETWORKS  ADDRESSES                                PORTS                              NETNS\n\
             s1    aaaaaaaaaaaa  network       n1,n2     10.90.0.2/24,10.91.0.2/24,fd00:91::2/64  8080->80/tcp,127.0.0.1:53->53/udp  /run/netns/s1\n\
             s2    bbbbbbbbbbbb  container:s1  -         -                                        -                                  /run/netns/s1\n"
        );
        let text = render_sandbox(&s);
        assert!(text.starts_with("Name:      s1\nID:        "), "{text}");
        assert!(
            text.contains("Mode:      network\nNetns:     /run/netns/s1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "IFNAME  NETWORK  ADDRESSES                   GATEWAY    MAC                ALIASES  PORTS                              ENDPOINT\n\
                 eth0*   n1       10.90.0.2/24                10.90.0.1  02:42:0a:5a:00:02  web      8080->80/tcp,127.0.0.1:53->53/udp  e1e1e1e1e1e1\n\
                 eth1    n2       10.91.0.2/24,fd00:91::2/64  -          -                  -        -                                  e2e2e2e2e2e2\n"
            ),
            "{text}"
        );
        assert_eq!(
            port_text(&Port {
                host_port: 1,
                container_port: 2,
                protocol: None,
                host_ip: Some("::1".into())
            }),
            "[::1]:1->2/tcp"
        );
        let ev: Event =
            serde_json::from_value(json!({"time": "T", "kind": "endpoint", "action": "connect",
            "name": "e", "network": "n1", "sandbox": "s1"}))
            .unwrap();
        assert_eq!(
            render_event(&ev),
            "T endpoint connect e network=n1 sandbox=s1"
        );
        let ev = Event {
            name: "ab".repeat(32),
            ..ev
        };
        assert_eq!(
            render_event(&ev),
            "T endpoint connect abababababab network=n1 sandbox=s1"
        );
    }

    /// The commands end to end against a fake daemon: the request sent, the table printed, and
    /// each error class.
    #[test]
    fn commands_against_a_fake_daemon() {
        let fake = Fake::start(vec![
            json_resp("200 OK", &json!([sample_network()])),
            json_resp("201 Created", &sample_sandbox()),
            resp("204 No Content", "text/plain", ""),
            json_resp(
                "404 Not Found",
                &json!({"message": "sandbox \"nope\" not found"}),
            ),
            json_resp(
                "409 Conflict",
                &json!({"message": "network n1 has endpoints: s1"}),
            ),
            json_resp(
                "400 Bad Request",
                &json!({"message": "ip 10.0.0.9 is outside 10.90.0.0/24"}),
            ),
            json_resp("200 OK", &json!({"actions": []})),
            json_resp(
                "200 OK",
                &json!({"actions": ["re-applied firewall entries of network n1"]}),
            ),
            json_resp("200 OK", &json!([{"unexpected": true, "name": 5}])),
        ]);
        let c = Client::new(fake.socket.clone()).unwrap();
        let mut out = Vec::new();
        network(&c, &NetworkCmd::Ls { json: true }, &mut out).unwrap();
        let printed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(printed, json!([sample_network()]));
        out.clear();
        sandbox(
            &c,
            &SandboxCmd::Create(sb_create(&["--network", "n1", "-p", "8080:80"])),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("NAME  ID"), "{text}");
        assert!(text.contains("8080->80/tcp"), "{text}");
        out.clear();
        network(
            &c,
            &NetworkCmd::Disconnect {
                network: "n1".into(),
                sandbox: "s1".into(),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "disconnected sandbox s1 from network n1\n"
        );
        let e = sandbox(
            &c,
            &SandboxCmd::Rm {
                name: "nope".into(),
            },
            &mut out,
        )
        .unwrap_err();
        assert_eq!(
            (e.exit_code(), e.to_string()),
            (3, "sandbox \"nope\" not found".into())
        );
        let e = network(&c, &NetworkCmd::Rm { name: "n1".into() }, &mut out).unwrap_err();
        assert_eq!(
            (e.exit_code(), e.to_string()),
            (1, "network n1 has endpoints: s1".into())
        );
        let Cmd::Network(cmd) = parse(&["network", "connect", "n1", "s1", "--ip", "10.0.0.9"])
        else {
            panic!()
        };
        let e = network(&c, &cmd, &mut out).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        out.clear();
        repair(&c, false, &mut out).unwrap();
        repair(&c, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "nothing to repair\nre-applied firewall entries of network n1\n"
        );
        let e = network(&c, &NetworkCmd::Ls { json: false }, &mut out).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unexpected network list from sandboxd (use --json to see it)"),
            "{e}"
        );
        // A bad flag never reaches the daemon.
        let e = network(
            &c,
            &NetworkCmd::Inspect {
                name: "../x".into(),
                json: false,
            },
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let reqs = fake.requests();
        assert!(reqs[0].starts_with("GET /v1/networks HTTP/1.1"));
        assert!(reqs[1].starts_with("POST /v1/sandboxes HTTP/1.1"));
        assert!(reqs[1].ends_with(
            r#"{"name":"s1","network":"n1","ports":[{"container_port":80,"host_port":8080,"protocol":"tcp"}]}"#
        ), "{}", reqs[1]);
        assert!(reqs[2].starts_with("DELETE /v1/sandboxes/s1/endpoints/n1 HTTP/1.1"));
        assert!(reqs[3].starts_with("DELETE /v1/sandboxes/nope HTTP/1.1"));
        assert!(reqs[4].starts_with("DELETE /v1/networks/n1 HTTP/1.1"));
        assert!(reqs[5].starts_with("POST /v1/sandboxes/s1/endpoints HTTP/1.1"));
        assert!(reqs[6].starts_with("POST /v1/_repair HTTP/1.1"));
        assert_eq!(reqs.len(), 9);
    }
}
