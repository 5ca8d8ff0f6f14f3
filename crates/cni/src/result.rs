//! ADD results for every spec version, and conversion between them.
//!
//! The in-memory model is the 1.1.0 superset; [`CniResult::to_value`] renders any of the seven
//! versions and [`CniResult::from_value`] parses any of them. Addresses are `ipnet::IpNet` and keep
//! their host bits ("10.1.0.5/16"), exactly like the wire format.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{codes, CniError};
use crate::version::{go_quoted_list, Family, Version};

/// An ADD result (1.1.0 superset).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CniResult {
    /// The version this result was parsed from or will be printed in.
    pub cni_version: String,
    /// Interfaces created or configured (absent in 0.1/0.2 and in IPAM results).
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS settings; omitted from output when empty.
    pub dns: Dns,
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    #[serde(default)]
    pub name: String,
    /// MAC address, empty when not applicable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Netns path for in-container interfaces, empty for host ones.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// 1.1.0: MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// 1.1.0: vhost-user style socket path.
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// 1.1.0: PCI id of the device.
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces`; absent in IPAM results.
    pub interface: Option<usize>,
    /// Address with prefix length, host bits kept.
    pub address: IpNet,
    /// Default gateway for this subnet, if any.
    pub gateway: Option<IpAddr>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means "the gateway of an ips entry of the same family".
    pub gw: Option<IpAddr>,
    /// 1.1.0: route MTU.
    pub mtu: Option<u32>,
    /// 1.1.0: advertised MSS.
    pub advmss: Option<u32>,
    /// 1.1.0: priority (metric).
    pub priority: Option<u32>,
    /// 1.1.0: routing table.
    pub table: Option<u32>,
    /// 1.1.0: scope (0 global, 253 link, 254 host).
    pub scope: Option<u8>,
}

impl Route {
    /// A plain route with only `dst` and `gw`.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings (result and config share the shape).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// True when nothing is set (then it is omitted from results).
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.as_deref().is_none_or(str::is_empty)
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

fn decode_err(msg: impl Into<String>) -> CniError {
    CniError::new(codes::DECODE, msg)
}

fn ipnet_parse(s: &str, what: &str) -> Result<IpNet, CniError> {
    s.parse::<IpNet>()
        .map_err(|_| decode_err(format!("invalid {what} {s:?}: not a CIDR")))
}

fn ip_parse(s: &str, what: &str) -> Result<IpAddr, CniError> {
    s.parse::<IpAddr>()
        .map_err(|_| decode_err(format!("invalid {what} {s:?}: not an IP address")))
}

fn get_str<'a>(o: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, CniError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(decode_err(format!("{k}: expected a string, got {other}"))),
    }
}

fn get_u32(o: &Map<String, Value>, k: &str) -> Result<Option<u32>, CniError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| decode_err(format!("{k}: expected an unsigned integer, got {v}"))),
    }
}

fn get_arr<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a [Value], CniError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(decode_err(format!("{k}: expected a list, got {other}"))),
    }
}

fn as_obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, CniError> {
    v.as_object()
        .ok_or_else(|| decode_err(format!("{what}: expected an object, got {v}")))
}

fn opt_ip(o: &Map<String, Value>, k: &str) -> Result<Option<IpAddr>, CniError> {
    match get_str(o, k)? {
        None | Some("") => Ok(None),
        Some(s) => ip_parse(s, k).map(Some),
    }
}

fn parse_route(v: &Value) -> Result<Route, CniError> {
    let o = as_obj(v, "route")?;
    let dst = get_str(o, "dst")?.ok_or_else(|| decode_err("route without dst"))?;
    let scope = match get_u32(o, "scope")? {
        None => None,
        Some(s) => {
            Some(u8::try_from(s).map_err(|_| decode_err(format!("invalid route scope {s}")))?)
        }
    };
    Ok(Route {
        dst: ipnet_parse(dst, "route dst")?,
        gw: opt_ip(o, "gw")?,
        mtu: get_u32(o, "mtu")?,
        advmss: get_u32(o, "advmss")?,
        priority: get_u32(o, "priority")?,
        table: get_u32(o, "table")?,
        scope,
    })
}

fn route_value(r: &Route, extras: bool) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), Value::String(r.dst.to_string()));
    if let Some(gw) = r.gw {
        m.insert("gw".into(), Value::String(gw.to_string()));
    }
    if extras {
        for (k, v) in [
            ("mtu", r.mtu),
            ("advmss", r.advmss),
            ("priority", r.priority),
            ("table", r.table),
            ("scope", r.scope.map(u32::from)),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
    }
    Value::Object(m)
}

fn parse_dns(o: &Map<String, Value>) -> Result<Dns, CniError> {
    match o.get("dns") {
        None | Some(Value::Null) => Ok(Dns::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| decode_err(format!("dns: {e}"))),
    }
}

impl CniResult {
    /// Render in `version` (any of the seven). Conversions follow the Go library:
    /// 0.1.0/0.2.0 keep only the first address per family and the routes of the families kept;
    /// 0.3.x/0.4.0 add `ips[].version`; 1.0.0 drops it; interface extras (`mtu`, `socketPath`,
    /// `pciID`) only appear in 1.1.0. Route extras are kept from 0.3.0 on, as Go does (its
    /// route type is shared by all those versions). Empty `dns` is omitted.
    pub fn to_value(&self, version: &str) -> Result<Value, CniError> {
        let ver = Version::parse(version)?;
        let mut out = Map::new();
        out.insert("cniVersion".into(), Value::String(ver.as_str().into()));
        match ver.family() {
            Family::V02 => {
                let v4 = self.ips.iter().find(|ip| ip.address.addr().is_ipv4());
                let v6 = self.ips.iter().find(|ip| ip.address.addr().is_ipv6());
                for (key, ip, want_v4) in [("ip4", v4, true), ("ip6", v6, false)] {
                    let Some(ip) = ip else { continue };
                    let mut m = Map::new();
                    m.insert("ip".into(), Value::String(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        m.insert("gateway".into(), Value::String(gw.to_string()));
                    }
                    let routes: Vec<Value> = self
                        .routes
                        .iter()
                        .filter(|r| r.dst.addr().is_ipv4() == want_v4)
                        .map(|r| route_value(r, false))
                        .collect();
                    if !routes.is_empty() {
                        m.insert("routes".into(), Value::Array(routes));
                    }
                    out.insert(key.into(), Value::Object(m));
                }
            }
            fam => {
                let extras = ver >= Version::V1_1_0;
                if !self.interfaces.is_empty() {
                    let ifs: Vec<Value> = self
                        .interfaces
                        .iter()
                        .map(|i| {
                            let mut i = i.clone();
                            if !extras {
                                i.mtu = None;
                                i.socket_path = None;
                                i.pci_id = None;
                            }
                            serde_json::to_value(i).unwrap_or(Value::Null)
                        })
                        .collect();
                    out.insert("interfaces".into(), Value::Array(ifs));
                }
                if !self.ips.is_empty() {
                    let ips: Vec<Value> = self
                        .ips
                        .iter()
                        .map(|ip| {
                            let mut m = Map::new();
                            if fam == Family::V04 {
                                let v = if ip.address.addr().is_ipv4() {
                                    "4"
                                } else {
                                    "6"
                                };
                                m.insert("version".into(), Value::String(v.into()));
                            }
                            if let Some(i) = ip.interface {
                                m.insert("interface".into(), json!(i));
                            }
                            m.insert("address".into(), Value::String(ip.address.to_string()));
                            if let Some(gw) = ip.gateway {
                                m.insert("gateway".into(), Value::String(gw.to_string()));
                            }
                            Value::Object(m)
                        })
                        .collect();
                    out.insert("ips".into(), Value::Array(ips));
                }
                if !self.routes.is_empty() {
                    let routes = self.routes.iter().map(|r| route_value(r, true)).collect();
                    out.insert("routes".into(), Value::Array(routes));
                }
            }
        }
        if !self.dns.is_empty() {
            let dns = serde_json::to_value(&self.dns)
                .map_err(|e| CniError::internal(format!("encoding dns: {e}")))?;
            out.insert("dns".into(), dns);
        }
        Ok(Value::Object(out))
    }

    /// Parse a result of any version. A missing `cniVersion` means `config_version` (libcni
    /// injects it); a `cniVersion` from another family than `config_version` is rejected the way
    /// Go's prevResult parsing does.
    pub fn from_value(v: &Value, config_version: &str) -> Result<CniResult, CniError> {
        let o = as_obj(v, "result")?;
        let conf_ver = Version::parse(config_version)?;
        let res_ver_s = match get_str(o, "cniVersion")? {
            None | Some("") => conf_ver.as_str(),
            Some(s) => s,
        };
        let res_ver = Version::parse(res_ver_s)?;
        if res_ver.family() != conf_ver.family() {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                format!(
                    "result type supports {} but unmarshalled CNIVersion is {res_ver_s:?}",
                    go_quoted_list(conf_ver.family().members()).replace('"', "")
                ),
            ));
        }
        let mut r = CniResult {
            cni_version: res_ver.as_str().to_string(),
            dns: parse_dns(o)?,
            ..Default::default()
        };
        if res_ver.family() == Family::V02 {
            for key in ["ip4", "ip6"] {
                let Some(ipv) = o.get(key).filter(|v| !v.is_null()) else {
                    continue;
                };
                let io = as_obj(ipv, key)?;
                let ip =
                    get_str(io, "ip")?.ok_or_else(|| decode_err(format!("{key} without ip")))?;
                r.ips.push(IpConfig {
                    interface: None,
                    address: ipnet_parse(ip, "ip")?,
                    gateway: opt_ip(io, "gateway")?,
                });
                for rv in get_arr(io, "routes")? {
                    r.routes.push(parse_route(rv)?);
                }
            }
            return Ok(r);
        }
        for iv in get_arr(o, "interfaces")? {
            let i: Interface = serde_json::from_value(iv.clone())
                .map_err(|e| decode_err(format!("interfaces: {e}")))?;
            r.interfaces.push(i);
        }
        for ipv in get_arr(o, "ips")? {
            let io = as_obj(ipv, "ips")?;
            let addr =
                get_str(io, "address")?.ok_or_else(|| decode_err("ips entry without address"))?;
            let interface = match io.get("interface") {
                None | Some(Value::Null) => None,
                Some(n) => Some(
                    n.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| decode_err(format!("invalid interface index {n}")))?,
                ),
            };
            r.ips.push(IpConfig {
                interface,
                address: ipnet_parse(addr, "address")?,
                gateway: opt_ip(io, "gateway")?,
            });
        }
        for rv in get_arr(o, "routes")? {
            r.routes.push(parse_route(rv)?);
        }
        Ok(r)
    }

    /// Print the result in `version` as JSON on `out` (the ADD output).
    pub fn print(&self, version: &str, out: &mut dyn std::io::Write) -> Result<(), CniError> {
        let v = self.to_value(version)?;
        let s = serde_json::to_string_pretty(&v)
            .map_err(|e| CniError::internal(format!("encoding result: {e}")))?;
        out.write_all(s.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .map_err(|e| CniError::new(codes::IO_FAILURE, format!("writing result: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::SUPPORTED_VERSIONS;

    fn sample() -> CniResult {
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "aa:bb:cc:dd:ee:ff".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: "/run/netns/x".into(),
                    mtu: Some(1400),
                    socket_path: Some("/tmp/s".into()),
                    pci_id: Some("0000:00:01.0".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(1),
                    address: "10.1.0.5/16".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(1),
                    address: "10.2.0.5/16".parse().unwrap(),
                    gateway: None,
                },
                IpConfig {
                    interface: Some(1),
                    address: "2001:db8::5/64".parse().unwrap(),
                    gateway: Some("2001:db8::1".parse().unwrap()),
                },
            ],
            routes: vec![
                Route {
                    mtu: Some(1300),
                    table: Some(100),
                    scope: Some(253),
                    ..Route::new(
                        "0.0.0.0/0".parse().unwrap(),
                        Some("10.1.0.1".parse().unwrap()),
                    )
                },
                Route::new("::/0".parse().unwrap(), None),
            ],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                domain: Some("example.org".into()),
                search: vec!["a.example.org".into()],
                options: vec!["ndots:2".into()],
            },
        }
    }

    #[test]
    fn render_02_shape() {
        let v = sample().to_value("0.2.0").unwrap();
        assert_eq!(v["cniVersion"], "0.2.0");
        assert_eq!(v["ip4"]["ip"], "10.1.0.5/16");
        assert_eq!(v["ip4"]["gateway"], "10.1.0.1");
        assert_eq!(
            v["ip4"]["routes"],
            json!([{"dst":"0.0.0.0/0","gw":"10.1.0.1"}])
        );
        assert_eq!(v["ip6"]["ip"], "2001:db8::5/64");
        assert_eq!(v["ip6"]["routes"], json!([{"dst":"::/0"}]));
        assert!(v.get("interfaces").is_none());
        assert!(v.get("ips").is_none());
        assert_eq!(v["dns"]["domain"], "example.org");
    }

    #[test]
    fn render_04_and_10_shapes() {
        for ver in ["0.3.0", "0.3.1", "0.4.0"] {
            let v = sample().to_value(ver).unwrap();
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][2]["version"], "6");
            assert_eq!(v["ips"][0]["interface"], 1);
            assert!(v["interfaces"][1].get("mtu").is_none());
            assert!(v["interfaces"][0].get("sandbox").is_none());
            // Route extras survive (Go shares the route type).
            assert_eq!(v["routes"][0]["mtu"], 1300);
        }
        let v = sample().to_value("1.0.0").unwrap();
        assert!(v["ips"][0].get("version").is_none());
        assert!(v["interfaces"][1].get("pciID").is_none());
        let v = sample().to_value("1.1.0").unwrap();
        assert_eq!(v["interfaces"][1]["mtu"], 1400);
        assert_eq!(v["interfaces"][1]["socketPath"], "/tmp/s");
        assert_eq!(v["interfaces"][1]["pciID"], "0000:00:01.0");
        assert_eq!(v["routes"][0]["scope"], 253);
        assert_eq!(v["routes"][0]["table"], 100);
    }

    #[test]
    fn empty_dns_omitted() {
        let r = CniResult::default();
        for ver in SUPPORTED_VERSIONS {
            let v = r.to_value(ver).unwrap();
            assert!(v.get("dns").is_none(), "{ver}");
        }
        // v1.1.1 prints "dns":{}; accept it on input.
        let r = CniResult::from_value(&json!({"cniVersion":"1.0.0","dns":{}}), "1.0.0").unwrap();
        assert!(r.dns.is_empty());
    }

    /// What a round trip through `to` keeps, per the Go library's conversions.
    fn expected_after(to: &str) -> CniResult {
        let mut e = sample();
        let ver = Version::parse(to).unwrap();
        e.cni_version = to.into();
        match ver.family() {
            Family::V02 => {
                e.interfaces.clear();
                e.ips = vec![sample().ips[0].clone(), sample().ips[2].clone()];
                for ip in &mut e.ips {
                    ip.interface = None;
                }
                for r in &mut e.routes {
                    *r = Route::new(r.dst, r.gw);
                }
            }
            _ if ver < Version::V1_1_0 => {
                for i in &mut e.interfaces {
                    i.mtu = None;
                    i.socket_path = None;
                    i.pci_id = None;
                }
            }
            _ => {}
        }
        e
    }

    #[test]
    fn round_trip_every_version_pair() {
        for from in SUPPORTED_VERSIONS {
            // Reduce the sample to what `from` can carry, then convert to every other version.
            let base = CniResult::from_value(&sample().to_value(from).unwrap(), from).unwrap();
            assert_eq!(base, expected_after(from), "parse of {from}");
            for to in SUPPORTED_VERSIONS {
                let v = base.to_value(to).unwrap();
                let back = CniResult::from_value(&v, to).unwrap();
                let mut want = expected_after(to);
                // Information lost in `from` stays lost.
                let lost = expected_after(from);
                if Version::parse(from).unwrap().family() == Family::V02 {
                    want.interfaces.clear();
                    for ip in &mut want.ips {
                        ip.interface = None;
                    }
                    want.ips
                        .retain(|ip| lost.ips.iter().any(|l| l.address == ip.address));
                    for r in &mut want.routes {
                        *r = Route::new(r.dst, r.gw);
                    }
                } else if Version::parse(from).unwrap() < Version::V1_1_0 {
                    for i in &mut want.interfaces {
                        i.mtu = None;
                        i.socket_path = None;
                        i.pci_id = None;
                    }
                }
                assert_eq!(back, want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn family_rule() {
        let prev = json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]});
        let e = CniResult::from_value(&prev, "1.0.0").unwrap_err();
        assert_eq!(
            e.msg,
            "result type supports [1.0.0 1.1.0] but unmarshalled CNIVersion is \"0.4.0\""
        );
        assert!(CniResult::from_value(&prev, "0.3.1").is_ok());
        let r = CniResult::from_value(&prev, "0.4.0").unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.2/24");
        let prev11 = json!({"cniVersion":"1.1.0"});
        assert!(CniResult::from_value(&prev11, "1.0.0").is_ok());
        assert!(CniResult::from_value(&prev11, "0.2.0").is_err());
        // Without cniVersion: assumed to be the config's version.
        let bare = json!({"ips":[{"address":"10.0.0.2/24","interface":0}]});
        let r = CniResult::from_value(&bare, "1.1.0").unwrap();
        assert_eq!(r.cni_version, "1.1.0");
        assert_eq!(r.ips[0].interface, Some(0));
        let bare02 = json!({"ip4":{"ip":"10.0.0.2/24"}});
        assert_eq!(
            CniResult::from_value(&bare02, "0.1.0").unwrap().ips.len(),
            1
        );
    }

    #[test]
    fn bad_inputs() {
        assert!(CniResult::from_value(&json!([]), "1.0.0").is_err());
        assert!(
            CniResult::from_value(&json!({"ips":[{"address":"10.0.0.300/24"}]}), "1.0.0").is_err()
        );
        assert!(CniResult::from_value(&json!({"ips":[{"address":"10.0.0.3"}]}), "1.0.0").is_err());
        assert!(CniResult::from_value(&json!({"cniVersion":"7.0.0"}), "1.0.0").is_err());
        assert!(sample().to_value("9.9.9").is_err());
    }

    #[test]
    fn print_writes_json() {
        let mut out = Vec::new();
        sample().print("1.0.0", &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
    }
}
