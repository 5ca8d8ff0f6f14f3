//! `firewall`: a chained meta plugin that lets a container's traffic through the host's
//! forward filter. Spec 0.4.0 and later only (0.3.1 →
//! code 1, as the reference).
//!
//! Keys: `backend` (`"nftables"` | `"iptables"` | `"firewalld"`), `iptablesAdminChainName`
//! (default `CNI-ADMIN`), `firewalldZone` (accepted, unused), `ingressPolicy` (`open` |
//! `same-bridge` | `isolated`).
//!
//! Deliberate difference: the reference defaults to firewalld when it owns its D-Bus name and
//! to iptables otherwise. We default to nftables (our table `inet rcni`) when the kernel accepts
//! nf_tables transactions, else iptables, and never pick firewalld implicitly: we do not speak
//! its D-Bus API, so `backend: "firewalld"` is an explicit error either way (saying whether
//! firewalld runs). With nftables, an iptables `FORWARD` policy of DROP would still drop the
//! traffic; the firewall crate then adds the reference iptables rules too and this plugin logs
//! that on stderr.
//!
//! ADD needs prevResult and uses its `ips`; `ingressPolicy` rules are keyed by the bridge
//! `prevResult.interfaces[0].name` and never removed. DEL works without prevResult (owner
//! records), is idempotent, and removes only this attachment's entries. GC keeps the listed
//! attachments of this network. STATUS reports whether a backend is usable.

use std::net::IpAddr;
use std::path::Path;

use cni::error::{codes, CniError, Context};
use cni::result::CniResult;
use cni::skel::{CmdArgs, NetnsPolicy, Plugin};
use firewall::forward::{
    forward_firewall, ForwardAttachment, ForwardFirewall, IngressPolicy, DEFAULT_ADMIN_CHAIN,
};
use firewall::Backend;
use serde::Deserialize;

/// Spec versions this plugin accepts (CHECK and prevResult on DEL exist from 0.4.0).
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// firewalld's well-known D-Bus name.
pub const FIREWALLD_DBUS_NAME: &str = "org.fedoraproject.FirewallD1";

/// The plugin.
pub struct FirewallPlugin;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireConf {
    backend: Option<String>,
    iptables_admin_chain_name: Option<String>,
    firewalld_zone: Option<String>,
    ingress_policy: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConf {
    /// Network name.
    pub network: String,
    /// Explicit backend, if any (`firewalld` included).
    pub backend: Option<String>,
    /// `iptablesAdminChainName`.
    pub admin_chain: String,
    /// `ingressPolicy`.
    pub ingress: IngressPolicy,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_CONFIG, msg)
}

impl FirewallConf {
    /// Decode and validate before any side effect.
    pub fn load(args: &CmdArgs) -> Result<FirewallConf, CniError> {
        let w: WireConf = args.plugin_conf()?;
        let _ = w.firewalld_zone;
        let admin_chain = w
            .iptables_admin_chain_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_ADMIN_CHAIN.to_string());
        firewall::forward::validate_chain_name(&admin_chain).context("invalid configuration")?;
        let ingress = IngressPolicy::parse(w.ingress_policy.as_deref().unwrap_or(""))
            .context("invalid configuration")?;
        let backend = w.backend.filter(|b| !b.is_empty());
        if let Some(b) = &backend {
            if !matches!(b.as_str(), "nftables" | "iptables" | "firewalld") {
                return Err(invalid(format!(
                    "unknown firewall backend {b:?} (expected \"nftables\", \"iptables\" or \"firewalld\")"
                )));
            }
        }
        Ok(FirewallConf {
            network: args.conf.name.clone(),
            backend,
            admin_chain,
            ingress,
        })
    }
}

/// Whether firewalld looks alive: the system bus socket exists and a process named
/// `firewalld` runs. (Asking the bus who owns [`FIREWALLD_DBUS_NAME`] would need a D-Bus
/// client, which this suite does not carry.)
pub fn firewalld_running() -> bool {
    if !Path::new("/run/dbus/system_bus_socket").exists() {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let is_pid = name.to_string_lossy().bytes().all(|b| b.is_ascii_digit());
        is_pid
            && std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "firewalld")
    })
}

/// Plugin-specific error code (spec: 100 and up) for an unusable firewalld backend.
pub const CODE_FIREWALLD: u32 = 100;

fn firewalld_error() -> CniError {
    if firewalld_running() {
        CniError::new(
            CODE_FIREWALLD,
            "firewalld backend requested: firewalld is running, but this plugin does not implement \
             firewalld's D-Bus API; use \"backend\": \"nftables\" or \"iptables\"",
        )
    } else {
        CniError::new(
            CODE_FIREWALLD,
            "firewalld backend requested but firewalld is not running",
        )
    }
}

fn backend_of(conf: &FirewallConf) -> Result<Backend, CniError> {
    match conf.backend.as_deref() {
        Some("firewalld") => Err(firewalld_error()),
        other => firewall::choose_backend(other).context("firewall backend"),
    }
}

fn fw_of(conf: &FirewallConf) -> Result<Box<dyn ForwardFirewall>, CniError> {
    forward_firewall(backend_of(conf)?, &conf.admin_chain).context("firewall backend")
}

fn ips_of(r: &CniResult) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Vec::new();
    for ip in &r.ips {
        let a = ip.address.addr();
        if !v.contains(&a) {
            v.push(a);
        }
    }
    v
}

fn attachment(args: &CmdArgs, conf: &FirewallConf, r: &CniResult) -> ForwardAttachment {
    ForwardAttachment {
        network: conf.network.clone(),
        container_id: args.container_id.clone(),
        ifname: args.ifname.clone(),
        ips: ips_of(r),
    }
}

fn require_prev(args: &CmdArgs) -> Result<CniResult, CniError> {
    args.prev_result()?.ok_or_else(|| {
        invalid("firewall must be called as a chained plugin: prevResult is required")
    })
}

/// The bridge the ingress policy applies to (reference: `prevResult.interfaces[0].name`).
fn bridge_of(conf: &FirewallConf, r: &CniResult) -> Result<Option<String>, CniError> {
    if conf.ingress == IngressPolicy::Open {
        return Ok(None);
    }
    match r.interfaces.first() {
        Some(i) if !i.name.is_empty() => Ok(Some(i.name.clone())),
        _ => Err(invalid(format!(
            "ingressPolicy {:?} needs the bridge as prevResult.interfaces[0]",
            conf.ingress.as_str()
        ))),
    }
}

fn families(ips: &[IpAddr]) -> (bool, bool) {
    (
        ips.iter().any(|i| i.is_ipv4()),
        ips.iter().any(|i| i.is_ipv6()),
    )
}

impl Plugin for FirewallPlugin {
    /// The reference ignores CNI_ARGS here (no LoadArgs), so unknown keys are no error.
    fn reads_cni_args(&self) -> bool {
        false
    }

    /// The forward filter is the host's; CNI_NETNS is never entered.
    fn netns_policy(&self) -> NetnsPolicy {
        NetnsPolicy::NotEntered
    }

    fn supported_versions(&self) -> &'static [&'static str] {
        &SUPPORTED_VERSIONS
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = FirewallConf::load(args)?;
        let prev = require_prev(args)?;
        let bridge = bridge_of(&conf, &prev)?;
        let fw = fw_of(&conf)?;
        let att = attachment(args, &conf, &prev);
        let notes = fw.add_forward(&att).context("add forward rules")?;
        for n in notes {
            eprintln!("firewall: {n}");
        }
        if let Some(br) = bridge {
            let (v4, v6) = families(&att.ips);
            if let Err(e) = fw.add_isolation(&br, conf.ingress, v4, v6) {
                // Roll back this call's accepts: nothing of a failed ADD may stay.
                let _ = fw.del_forward(&att.network, &att.container_id, &att.ifname, &att.ips);
                return Err(CniError::from(e).context("add ingressPolicy rules"));
            }
        }
        Ok(prev)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = FirewallConf::load(args)?;
        let known = match args.prev_result() {
            Ok(Some(r)) => ips_of(&r),
            // DEL must succeed with a missing or unusable prevResult (the spec's DEL rules).
            _ => Vec::new(),
        };
        let backend = match backend_of(&conf) {
            Ok(b) => b,
            // Nothing can have been added through a backend that is unavailable.
            Err(e) if conf.backend.as_deref() == Some("firewalld") => {
                eprintln!("firewall: DEL: {}", e.msg);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let fw = forward_firewall(backend, &conf.admin_chain).context("firewall")?;
        fw.del_forward(&conf.network, &args.container_id, &args.ifname, &known)
            .context("delete forward rules")
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = FirewallConf::load(args)?;
        let prev = require_prev(args)?;
        let bridge = bridge_of(&conf, &prev)?;
        let fw = fw_of(&conf)?;
        let att = attachment(args, &conf, &prev);
        fw.check_forward(&att).context("check")?;
        if let Some(br) = bridge {
            let (v4, v6) = families(&att.ips);
            fw.check_isolation(&br, conf.ingress, v4, v6)
                .context("check ingressPolicy")?;
        }
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = FirewallConf::load(args)?;
        let keep: Vec<(String, String)> = args
            .valid_attachments()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        if conf.backend.as_deref() == Some("firewalld") {
            return Ok(());
        }
        fw_of(&conf)?
            .gc_forward(&conf.network, &keep)
            .context("garbage-collect forward rules")
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = FirewallConf::load(args)?;
        backend_of(&conf)
            .map(|_| ())
            .map_err(|e| CniError::new(codes::NOT_AVAILABLE, e.msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(cmd: &str, conf: &serde_json::Value) -> (i32, String) {
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("CNI_COMMAND".into(), cmd.into());
        env.insert("CNI_CONTAINERID".into(), "c1".into());
        env.insert("CNI_IFNAME".into(), "eth0".into());
        env.insert("CNI_PATH".into(), "/nonexistent".into());
        let get = |k: &str| env.get(k).cloned();
        let input = serde_json::to_vec(conf).unwrap();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let rc = cni::skel::run_with(
            &FirewallPlugin,
            "t",
            &get,
            &mut input.as_slice(),
            &mut out,
            &mut err,
        );
        (rc, String::from_utf8(out).unwrap())
    }

    #[test]
    fn version_lists_only_04_and_later() {
        let (rc, out) = run("VERSION", &serde_json::json!({"cniVersion": "0.4.0"}));
        assert_eq!(rc, 0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
        );
    }

    #[test]
    fn old_versions_and_bad_keys_are_rejected_before_any_side_effect() {
        let (rc, out) = run(
            "DEL",
            &serde_json::json!({"cniVersion": "0.3.1", "name": "n", "type": "firewall"}),
        );
        assert_eq!(rc, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["code"], 1);
        for (k, val) in [
            ("backend", "ebtables"),
            ("ingressPolicy", "closed"),
            ("iptablesAdminChainName", "has space"),
        ] {
            let mut c = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"});
            c[k] = val.into();
            let (rc, out) = run("DEL", &c);
            assert_eq!(rc, 1, "{k}");
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["code"], 7, "{k}: {out}");
            assert!(v["msg"].as_str().unwrap().contains(val), "{out}");
        }
    }
}
