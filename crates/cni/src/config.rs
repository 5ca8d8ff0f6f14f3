//! Network configuration types (single configs, conflists, runtime-injected keys) and name validation.

use std::collections::BTreeMap;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{codes, CniError};
use crate::gojson;
use crate::result::Dns;

/// One plugin's configuration as received on stdin.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetConf {
    /// `cniVersion`; `None` means 0.1.0.
    pub cni_version: Option<String>,
    /// `cniVersions` (1.1.0 negotiation list).
    pub cni_versions: Vec<String>,
    /// Network name.
    pub name: String,
    /// `type`: the plugin binary name.
    pub plugin_type: String,
    /// `capabilities`: {name: bool}. The spec says runtimes remove it; libcni does not (tolerated).
    pub capabilities: BTreeMap<String, bool>,
    /// `ipam`, the delegated IPAM plugin.
    pub ipam: Option<IpamConf>,
    /// `dns` settings.
    pub dns: Option<Dns>,
    /// `ipMasq`.
    pub ip_masq: Option<bool>,
    /// `runtimeConfig` injected by the runtime from capabilities.
    pub runtime_config: Option<Value>,
    /// `args` (conventions: `{"cni":{"ips":…,"labels":…}}`).
    pub args: Option<Value>,
    /// `prevResult` (raw; see [`crate::skel::CmdArgs::prev_result`]).
    pub prev_result: Option<Value>,
    /// The whole object as received: unknown keys preserved verbatim.
    pub raw: Map<String, Value>,
}

/// The `ipam` section of a plugin config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IpamConf {
    /// `type`: IPAM plugin binary name.
    pub ipam_type: String,
    /// The whole `ipam` object.
    pub raw: Map<String, Value>,
}

fn decode_error(what: &str, e: &serde_json::Error) -> CniError {
    if e.is_data() {
        CniError::new(codes::INVALID_CONFIG, format!("invalid {what}: {e}"))
    } else {
        CniError::new(codes::DECODE, format!("failed to parse {what}: {e}"))
    }
}

/// Accept `true`/`false` and the strings "true"/"false" (libcni's lenient boolean).
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        B(bool),
        S(String),
    }
    match Option::<B>::deserialize(d)? {
        None => Ok(false),
        Some(B::B(b)) => Ok(b),
        Some(B::S(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            _ => Err(serde::de::Error::custom(format!("invalid boolean {s:?}"))),
        },
    }
}

#[derive(Deserialize)]
struct NetConfWire {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(rename = "cniVersions", default)]
    cni_versions: Vec<String>,
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    plugin_type: String,
    #[serde(default)]
    capabilities: BTreeMap<String, bool>,
    #[serde(default)]
    ipam: Option<IpamWire>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(rename = "ipMasq", default)]
    ip_masq: Option<bool>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<Value>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
}

#[derive(Deserialize)]
struct IpamWire {
    #[serde(rename = "type", default)]
    ipam_type: String,
}

impl NetConf {
    /// Parse a plugin config: bad JSON is code 6, wrongly typed well-known keys code 7. The
    /// network name is *not* validated here (the skeleton does it, in the reference order).
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| decode_error("network configuration", &e))?;
        NetConf::from_value(v)
    }

    /// Build from an already parsed JSON value (must be an object).
    pub fn from_value(v: Value) -> Result<NetConf, CniError> {
        let Value::Object(raw) = v else {
            return Err(CniError::new(
                codes::DECODE,
                "failed to parse network configuration: not a JSON object",
            ));
        };
        let w: NetConfWire = gojson::from_value(Value::Object(raw.clone()))
            .map_err(|e| decode_error("network configuration", &e))?;
        let ipam = match w.ipam {
            None => None,
            Some(i) => {
                let obj = raw
                    .iter()
                    .find(|(k, _)| k.as_str() == "ipam")
                    .or_else(|| raw.iter().find(|(k, _)| k.eq_ignore_ascii_case("ipam")))
                    .and_then(|(_, v)| v.as_object().cloned())
                    .unwrap_or_default();
                Some(IpamConf {
                    ipam_type: i.ipam_type,
                    raw: obj,
                })
            }
        };
        Ok(NetConf {
            cni_version: w.cni_version,
            cni_versions: w.cni_versions,
            name: w.name,
            plugin_type: w.plugin_type,
            capabilities: w.capabilities,
            ipam,
            dns: w.dns,
            ip_masq: w.ip_masq,
            runtime_config: w.runtime_config,
            args: w.args,
            prev_result: w.prev_result,
            raw,
        })
    }
}

/// A network configuration list (`*.conflist`), or a single config wrapped into one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetConfList {
    /// `cniVersion`.
    pub cni_version: Option<String>,
    /// `cniVersions`.
    pub cni_versions: Vec<String>,
    /// Network name.
    pub name: String,
    /// `disableCheck`: CHECK succeeds without executing plugins.
    pub disable_check: bool,
    /// `disableGC`: GC does nothing.
    pub disable_gc: bool,
    /// `loadOnlyInlinedPlugins`: do not append `<dir>/<name>/*.conf`.
    pub load_only_inlined_plugins: bool,
    /// Plugin objects, verbatim.
    pub plugins: Vec<Map<String, Value>>,
    /// The whole list object (with any loaded plugin files appended to `plugins`).
    pub raw: Map<String, Value>,
    /// The list as bytes (what the result cache stores base64-encoded).
    pub bytes: Vec<u8>,
}

#[derive(Deserialize)]
struct ListWire {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(rename = "cniVersions", default)]
    cni_versions: Vec<String>,
    #[serde(default)]
    name: String,
    #[serde(rename = "disableCheck", default, deserialize_with = "lenient_bool")]
    disable_check: bool,
    #[serde(rename = "disableGC", default, deserialize_with = "lenient_bool")]
    disable_gc: bool,
    #[serde(
        rename = "loadOnlyInlinedPlugins",
        default,
        deserialize_with = "lenient_bool"
    )]
    load_only_inlined_plugins: bool,
    #[serde(default)]
    plugins: Vec<Map<String, Value>>,
}

impl NetConfList {
    /// Parse and validate a conflist: name valid, `plugins` non-empty, every plugin has a valid
    /// `type`.
    pub fn parse(bytes: &[u8]) -> Result<NetConfList, CniError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| decode_error("network configuration list", &e))?;
        let mut l = NetConfList::from_value(v)?;
        l.bytes = bytes.to_vec();
        Ok(l)
    }

    /// Build from an already parsed value; `bytes` is the value re-serialized.
    pub fn from_value(v: Value) -> Result<NetConfList, CniError> {
        let Value::Object(raw) = v else {
            return Err(CniError::new(
                codes::DECODE,
                "network configuration list is not a JSON object",
            ));
        };
        let w: ListWire = gojson::from_value(Value::Object(raw.clone()))
            .map_err(|e| decode_error("network configuration list", &e))?;
        if w.name.is_empty() {
            return Err(CniError::new(codes::INVALID_CONFIG, "missing network name"));
        }
        validate_name("network name", &w.name)?;
        if w.plugins.is_empty() {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                format!("no plugins in list {:?}", w.name),
            ));
        }
        for p in &w.plugins {
            check_plugin_type(p)?;
        }
        let bytes = serde_json::to_vec(&raw).unwrap_or_default();
        Ok(NetConfList {
            cni_version: w.cni_version,
            cni_versions: w.cni_versions,
            name: w.name,
            disable_check: w.disable_check,
            disable_gc: w.disable_gc,
            load_only_inlined_plugins: w.load_only_inlined_plugins,
            plugins: w.plugins,
            raw,
            bytes,
        })
    }

    /// Wrap a single plugin config (`*.conf`/`*.json`) into a list, as libcni does.
    pub fn from_single(bytes: &[u8]) -> Result<NetConfList, CniError> {
        let conf = NetConf::parse(bytes)?;
        let mut list = Map::new();
        if let Some(v) = &conf.cni_version {
            list.insert("cniVersion".into(), Value::String(v.clone()));
        }
        list.insert("name".into(), Value::String(conf.name.clone()));
        list.insert(
            "plugins".into(),
            Value::Array(vec![Value::Object(conf.raw)]),
        );
        NetConfList::from_value(Value::Object(list))
    }

    /// Append plugin objects (from `<dir>/<name>/*.conf`), keeping `raw` and `bytes` in step.
    pub fn append_plugins(&mut self, extra: Vec<Map<String, Value>>) -> Result<(), CniError> {
        for p in &extra {
            check_plugin_type(p)?;
        }
        self.plugins.extend(extra);
        self.raw.insert(
            "plugins".into(),
            Value::Array(self.plugins.iter().cloned().map(Value::Object).collect()),
        );
        self.bytes = serde_json::to_vec(&self.raw).unwrap_or_default();
        Ok(())
    }
}

fn check_plugin_type(p: &Map<String, Value>) -> Result<(), CniError> {
    match p.get("type").and_then(Value::as_str) {
        None | Some("") => Err(CniError::new(codes::INVALID_CONFIG, "plugin without type")),
        Some(t) if t.contains('/') || t.contains('\0') => Err(CniError::new(
            codes::INVALID_CONFIG,
            format!("invalid plugin type {t:?}"),
        )),
        Some(_) => Ok(()),
    }
}

/// `runtimeConfig.portMappings` entry (CONVENTIONS.md). Decoded with [`gojson`], so containerd's
/// `{"HostPort":…,"ContainerPort":…,"Protocol":…,"HostIP":…}` works too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the host.
    #[serde(rename = "hostPort")]
    pub host_port: i64,
    /// Port in the container.
    #[serde(rename = "containerPort")]
    pub container_port: i64,
    /// "tcp" (default), "udp" or "sctp".
    #[serde(default = "default_proto")]
    pub protocol: String,
    /// Host address to bind, empty for all.
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

fn default_proto() -> String {
    "tcp".into()
}

impl PortMapping {
    /// Decode a list of port mappings, Go-style.
    pub fn list_from_value(v: Value) -> Result<Vec<PortMapping>, CniError> {
        let mut l: Vec<PortMapping> = gojson::from_value(v).map_err(|e| {
            CniError::new(codes::INVALID_CONFIG, format!("invalid portMappings: {e}"))
        })?;
        for p in &mut l {
            if p.protocol.is_empty() {
                p.protocol = default_proto();
            }
        }
        Ok(l)
    }
}

/// Validate a container ID or network name against `^[A-Za-z0-9][A-Za-z0-9_.\-]*$`.
///
/// `kind` names the thing in the message ("containerID", "network name"). Container IDs come from
/// the environment, so their errors are code 4; everything else is config, code 7.
pub fn validate_name(kind: &str, s: &str) -> Result<(), CniError> {
    let code = if kind == "containerID" {
        codes::INVALID_ENV
    } else {
        codes::INVALID_CONFIG
    };
    if s.is_empty() {
        return Err(CniError::new(code, format!("missing {kind}")));
    }
    let b = s.as_bytes();
    let ok = b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if !ok {
        return Err(CniError::new(code, format!("invalid characters in {kind}")).with_details(s));
    }
    Ok(())
}

/// Validate an interface name like the kernel and the Go library (code 4).
pub fn validate_ifname(s: &str) -> Result<(), CniError> {
    let err = |m: &str| CniError::new(codes::INVALID_ENV, m.to_string());
    if s.is_empty() {
        return Err(err("interface name is empty"));
    }
    if s.len() > 15 {
        return Err(err("interface name is too long")
            .with_details("interface name should be less than 16 characters"));
    }
    if s == "." || s == ".." {
        return Err(err("interface name is . or .."));
    }
    if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(err(
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn netconf_keeps_unknown_keys_and_folds_case() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","Name":"net1","type":"bridge","bridge":"cni0",
                 "ipam":{"type":"host-local","subnet":"10.1.0.0/16"},"ipMasq":true,
                 "capabilities":{"portMappings":true},"dns":{"nameservers":["1.1.1.1"]}}"#,
        )
        .unwrap();
        assert_eq!(c.name, "net1");
        assert_eq!(c.plugin_type, "bridge");
        assert_eq!(c.raw["bridge"], "cni0");
        let ipam = c.ipam.unwrap();
        assert_eq!(ipam.ipam_type, "host-local");
        assert_eq!(ipam.raw["subnet"], "10.1.0.0/16");
        assert_eq!(c.ip_masq, Some(true));
        assert!(c.capabilities["portMappings"]);
        assert_eq!(c.dns.unwrap().nameservers, vec!["1.1.1.1"]);
    }

    #[test]
    fn netconf_errors() {
        assert_eq!(NetConf::parse(b"").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"[]").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(br#"{"name":5}"#).unwrap_err().code, 7);
    }

    #[test]
    fn conflist_booleans_and_validation() {
        let l = NetConfList::parse(
            br#"{"cniVersion":"1.1.0","name":"n","disableCheck":"true","disableGC":true,
                 "loadOnlyInlinedPlugins":"false","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert!(l.disable_check && l.disable_gc && !l.load_only_inlined_plugins);
        assert!(NetConfList::parse(
            br#"{"name":"n","disableCheck":"yes","plugins":[{"type":"a"}]}"#
        )
        .is_err());
        assert_eq!(
            NetConfList::parse(br#"{"name":"n","plugins":[]}"#)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            NetConfList::parse(br#"{"plugins":[{"type":"a"}]}"#)
                .unwrap_err()
                .code,
            7
        );
        assert!(NetConfList::parse(br#"{"name":"n","plugins":[{"type":"../x"}]}"#).is_err());
        assert!(NetConfList::parse(br#"{"name":"a b","plugins":[{"type":"x"}]}"#).is_err());
        let s =
            NetConfList::from_single(br#"{"cniVersion":"0.3.1","name":"s","type":"bridge","x":1}"#)
                .unwrap();
        assert_eq!(s.plugins[0]["x"], 1);
        assert_eq!(s.cni_version.as_deref(), Some("0.3.1"));
    }

    #[test]
    fn port_mappings_go_style() {
        let v = json!([
            {"HostPort":18081,"ContainerPort":80,"Protocol":"tcp","HostIP":""},
            {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"},
            {"hostPort":8080,"containerPort":8080}
        ]);
        let l = PortMapping::list_from_value(v).unwrap();
        assert_eq!(
            l[0],
            PortMapping {
                host_port: 18081,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new()
            }
        );
        assert_eq!(l[1].host_ip, "127.0.0.1");
        assert_eq!(l[2].protocol, "tcp");
        assert!(PortMapping::list_from_value(json!([{"hostPort":"x"}])).is_err());
    }

    #[test]
    fn names() {
        assert!(validate_name("containerID", "abc-1_2.3").is_ok());
        let e = validate_name("containerID", "-bad id").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "invalid characters in containerID")
        );
        assert_eq!(validate_name("network name", "a/b").unwrap_err().code, 7);
        assert_eq!(
            validate_name("network name", "").unwrap_err().msg,
            "missing network name"
        );
        assert!(validate_name("network name", "a b").is_err());
        assert!(validate_name("network name", "é").is_err());
    }

    #[test]
    fn ifnames() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("123456789012345").is_ok());
        let e = validate_ifname("1234567890123456").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "interface name is too long"));
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            assert_eq!(validate_ifname(bad).unwrap_err().code, 4, "{bad:?}");
        }
    }
}
