//! `overlay`: a meta-plugin (like flannel's CNI plugin) for runtimes
//! that run CNI directly (containerd, CRI-O, kubelet) on a node whose sandboxd has joined a
//! cluster, and for sandboxd itself.
//!
//! sandboxd leases one slice of an overlay network per node and writes it to
//! `<leaseDir>/<network>.json` (default `/run/rcni/overlay`). This plugin reads that file and
//! delegates to `bridge` + `host-local` with the slice as the only range, the node's bridge
//! (`ovb-…`) and the overlay MTU, so pods and sandboxd's sandboxes share the bridge, the address
//! space (one host-local directory) and the VXLAN routes. The bridge does not masquerade; this
//! plugin masquerades each address towards everything outside the whole overlay subnet, so
//! traffic between slices keeps its source address. The delegate config is stored per attachment
//! (`<stateDir>/<network>-<container>-<ifname>.json`) so DEL works after the lease is gone.
//!
//! Config keys: `network` (default: the config's `name`), `leaseDir`, `dataDir` and `stateDir`
//! (defaults from the lease file), `isDefaultGateway` (default true), `ipMasq` (default true).

use std::path::{Path, PathBuf};

use cni::delegate;
use cni::error::{codes, CniError};
use cni::result::CniResult;
use cni::skel::{CmdArgs, NetnsPolicy, Plugin};
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The plugin.
pub struct Overlay;

/// The node's lease of one network: written by sandboxd's overlay agent (one file per network
/// under the lease directory), read here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Network name.
    pub network: String,
    /// The whole overlay subnet (not masqueraded towards).
    pub subnet: Ipv4Net,
    /// This node's slice.
    pub slice: Ipv4Net,
    /// MTU for the bridge and veths (uplink − 50).
    pub mtu: u32,
    /// Bridge device.
    pub bridge: String,
    /// host-local data directory (shared with sandboxd so addresses never collide).
    pub ipam_data_dir: PathBuf,
    /// Where the plugin keeps its delegate configs for DEL.
    pub state_dir: PathBuf,
    /// Masquerade traffic that leaves the overlay.
    pub ip_masq: bool,
}

/// The plugin's own keys.
#[derive(Debug, Clone)]
struct Conf {
    network: String,
    lease_dir: PathBuf,
    data_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    default_gw: bool,
    ip_masq: bool,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_CONFIG, msg)
}

fn conf_of(args: &CmdArgs) -> Result<Conf, CniError> {
    let raw = &args.conf.raw;
    let s = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_string);
    let b = |k: &str, d: bool| raw.get(k).and_then(Value::as_bool).unwrap_or(d);
    let network = s("network").unwrap_or_else(|| args.conf.name.clone());
    let ok = !network.is_empty()
        && network.len() <= 64
        && network
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        && !network.starts_with('.');
    if !ok {
        return Err(invalid(format!("invalid overlay network name {network:?}")));
    }
    Ok(Conf {
        network,
        lease_dir: s("leaseDir")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/rcni/overlay")),
        data_dir: s("dataDir").map(PathBuf::from),
        state_dir: s("stateDir").map(PathBuf::from),
        default_gw: b("isDefaultGateway", true),
        ip_masq: b("ipMasq", true),
    })
}

/// Read the node's lease of `network`.
pub fn read_lease(dir: &Path, network: &str) -> Result<Lease, CniError> {
    let p = dir.join(format!("{network}.json"));
    let bytes = std::fs::read(&p).map_err(|e| {
        CniError::new(
            codes::TRY_AGAIN,
            format!(
                "no lease of overlay network {network:?} on this node ({}: {e}); sandboxd leases a slice when a sandbox of this node attaches to the network",
                p.display()
            ),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CniError::new(codes::DECODE, format!("{}: {e}", p.display())))
}

/// The delegated bridge config for a lease.
pub fn delegate_conf(args: &CmdArgs, conf_default_gw: bool, data_dir: &Path, l: &Lease) -> Value {
    let mut v = json!({
        "cniVersion": args.version.as_str(),
        "name": l.network,
        "type": "bridge",
        "bridge": l.bridge,
        "isGateway": true,
        "isDefaultGateway": conf_default_gw,
        // Masquerade is ours: towards everything outside the overlay, not outside the slice.
        "ipMasq": false,
        "hairpinMode": true,
        "mtu": l.mtu,
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir.display().to_string(),
            "ranges": [[{"subnet": l.slice.to_string()}]],
            "routes": [{"dst": l.subnet.to_string()}],
        },
    });
    if let Some(o) = v.as_object_mut() {
        for k in ["runtimeConfig", "args"] {
            if let Some(x) = args.conf.raw.get(k) {
                o.insert(k.into(), x.clone());
            }
        }
    }
    v
}

fn state_path(dir: &Path, network: &str, args: &CmdArgs) -> PathBuf {
    dir.join(format!(
        "{network}-{}-{}.json",
        args.container_id, args.ifname
    ))
}

fn state_dir(c: &Conf, lease: Option<&Lease>) -> PathBuf {
    c.state_dir
        .clone()
        .or_else(|| lease.map(|l| l.state_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("/var/lib/cni/rcni-overlay"))
}

fn fw() -> Result<Box<dyn firewall::Firewall>, CniError> {
    firewall::choose_backend(None)
        .map(firewall::firewall)
        .map_err(|e| CniError::internal(format!("overlay ipMasq: {e}")))
}

fn masq_rules(c: &Conf, args: &CmdArgs, l: &Lease, r: &CniResult) -> Vec<firewall::MasqRule> {
    r.ips
        .iter()
        .filter_map(|ip| match ip.address {
            IpNet::V4(a) => Ipv4Net::new(a.addr(), l.subnet.prefix_len()).ok(),
            IpNet::V6(_) => None,
        })
        .map(|a| firewall::MasqRule {
            network: c.network.clone(),
            container_id: args.container_id.clone(),
            ifname: args.ifname.clone(),
            addr: IpNet::V4(a),
        })
        .collect()
}

fn write_state(p: &Path, v: &Value) -> Result<(), CniError> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| CniError::new(codes::IO_FAILURE, format!("{}: {e}", d.display())))?;
    }
    let tmp = p.with_extension("tmp");
    let bytes = serde_json::to_vec(v).map_err(|e| CniError::internal(e.to_string()))?;
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, p))
        .map_err(|e| CniError::new(codes::IO_FAILURE, format!("{}: {e}", p.display())))
}

impl Plugin for Overlay {
    fn reads_cni_args(&self) -> bool {
        // CNI_ARGS go to bridge and host-local unchanged; they judge them.
        false
    }

    fn netns_policy(&self) -> NetnsPolicy {
        // The delegated bridge enters (and validates) the namespace.
        NetnsPolicy::NotEntered
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let c = conf_of(args)?;
        let l = read_lease(&c.lease_dir, &c.network)?;
        let data_dir = c
            .data_dir
            .clone()
            .unwrap_or_else(|| l.ipam_data_dir.clone());
        let dconf = delegate_conf(args, c.default_gw, &data_dir, &l);
        let sp = state_path(&state_dir(&c, Some(&l)), &c.network, args);
        // Stored before the ADD: a crash half-way still leaves what DEL needs.
        write_state(&sp, &dconf)?;
        let bytes = serde_json::to_vec(&dconf).map_err(|e| CniError::internal(e.to_string()))?;
        let r = match delegate::delegate_add("bridge", &bytes, args) {
            Ok(r) => r,
            Err(e) => {
                let _ = delegate::delegate_del("bridge", &bytes, args);
                let _ = std::fs::remove_file(&sp);
                return Err(e);
            }
        };
        if c.ip_masq && l.ip_masq {
            let rules = masq_rules(&c, args, &l, &r);
            if let Err(e) = fw().and_then(|f| {
                f.add_masquerade(&rules)
                    .map_err(|e| CniError::internal(format!("overlay ipMasq: {e}")))
            }) {
                let _ = delegate::delegate_del("bridge", &bytes, args);
                let _ = std::fs::remove_file(&sp);
                return Err(e);
            }
        }
        Ok(r)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c = conf_of(args)?;
        let lease = read_lease(&c.lease_dir, &c.network).ok();
        let sp = state_path(&state_dir(&c, lease.as_ref()), &c.network, args);
        let mut errors = Vec::new();
        let stored: Option<Value> = std::fs::read(&sp)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let dconf = stored.or_else(|| {
            lease.as_ref().map(|l| {
                let dd = c
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| l.ipam_data_dir.clone());
                delegate_conf(args, c.default_gw, &dd, l)
            })
        });
        if let Some(d) = dconf {
            match serde_json::to_vec(&d) {
                Ok(b) => {
                    if let Err(e) = delegate::delegate_del("bridge", &b, args) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(CniError::internal(e.to_string())),
            }
        }
        if let Err(e) = fw().and_then(|f| {
            f.del_masquerade(&c.network, &args.container_id, &args.ifname)
                .map_err(|e| CniError::internal(format!("overlay ipMasq: {e}")))
        }) {
            errors.push(e);
        }
        if errors.is_empty() {
            let _ = std::fs::remove_file(&sp);
        }
        cni::error::combine(errors)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c = conf_of(args)?;
        let lease = read_lease(&c.lease_dir, &c.network)?;
        let sp = state_path(&state_dir(&c, Some(&lease)), &c.network, args);
        let mut d: Value = std::fs::read(&sp)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                CniError::new(
                    codes::UNKNOWN_CONTAINER,
                    format!("no stored attachment {}", sp.display()),
                )
            })?;
        if let (Some(o), Some(p)) = (d.as_object_mut(), &args.conf.prev_result) {
            o.insert("prevResult".into(), p.clone());
        }
        let b = serde_json::to_vec(&d).map_err(|e| CniError::internal(e.to_string()))?;
        delegate::delegate_check("bridge", &b, args)
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c = conf_of(args)?;
        let valid = args.valid_attachments()?;
        let keep: Vec<(String, String)> = valid
            .iter()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        let mut errors = Vec::new();
        if let Err(e) = fw().and_then(|f| {
            f.gc_masquerade(&c.network, &keep)
                .map_err(|e| CniError::internal(format!("overlay ipMasq GC: {e}")))
        }) {
            errors.push(e);
        }
        let lease = read_lease(&c.lease_dir, &c.network).ok();
        let sd = state_dir(&c, lease.as_ref());
        // Stored delegate configs of attachments that are no longer valid.
        let pre = format!("{}-", c.network);
        for e in std::fs::read_dir(&sd).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = n.strip_prefix(&pre).and_then(|r| r.strip_suffix(".json")) else {
                continue;
            };
            if !keep.iter().any(|(cid, ifn)| rest == format!("{cid}-{ifn}")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if let Some(l) = lease {
            let dd = c
                .data_dir
                .clone()
                .unwrap_or_else(|| l.ipam_data_dir.clone());
            let mut d = delegate_conf(args, c.default_gw, &dd, &l);
            if let Some(o) = d.as_object_mut() {
                for k in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
                    if let Some(x) = args.conf.raw.get(k) {
                        o.insert(k.into(), x.clone());
                    }
                }
            }
            match serde_json::to_vec(&d) {
                Ok(b) => {
                    if let Err(e) = delegate::delegate_gc("bridge", &b, args) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(CniError::internal(e.to_string())),
            }
        }
        cni::error::combine(errors)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let c = conf_of(args)?;
        read_lease(&c.lease_dir, &c.network)
            .map(|_| ())
            .map_err(|e| CniError::new(codes::NOT_AVAILABLE, e.msg))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cni::args::CniArgs;
    use cni::config::NetConf;
    use cni::skel::Command;
    use cni::version::Version;

    fn args(conf: &str) -> CmdArgs {
        CmdArgs {
            command: Command::Add,
            container_id: "c1".into(),
            netns: Some("/run/netns/x".into()),
            ifname: "eth0".into(),
            args: CniArgs::default(),
            path: vec![],
            stdin: conf.as_bytes().to_vec(),
            conf: NetConf::parse(conf.as_bytes()).unwrap(),
            version: Version::V1_0_0,
        }
    }

    fn lease() -> Lease {
        Lease {
            network: "web".into(),
            subnet: "10.50.0.0/16".parse().unwrap(),
            slice: "10.50.3.0/24".parse().unwrap(),
            mtu: 1450,
            bridge: "ovb-0123456789a".into(),
            ipam_data_dir: "/var/lib/sandboxd/ipam".into(),
            state_dir: "/var/lib/sandboxd/overlay-cni".into(),
            ip_masq: true,
        }
    }

    #[test]
    fn delegate_is_bridge_in_the_slice_without_bridge_masquerade() {
        let a = args(
            r#"{"cniVersion":"1.0.0","name":"web","type":"overlay","runtimeConfig":{"ips":["10.50.3.9"]}}"#,
        );
        let c = conf_of(&a).unwrap();
        assert_eq!(c.network, "web");
        assert!(c.default_gw && c.ip_masq);
        let d = delegate_conf(&a, c.default_gw, Path::new("/d"), &lease());
        assert_eq!(d["type"], "bridge");
        assert_eq!(d["bridge"], "ovb-0123456789a");
        assert_eq!(d["ipMasq"], false);
        assert_eq!(d["mtu"], 1450);
        assert_eq!(d["ipam"]["ranges"][0][0]["subnet"], "10.50.3.0/24");
        assert_eq!(d["ipam"]["routes"][0]["dst"], "10.50.0.0/16");
        assert_eq!(d["ipam"]["dataDir"], "/d");
        assert_eq!(d["runtimeConfig"]["ips"][0], "10.50.3.9");
        assert_eq!(
            state_path(Path::new("/s"), "web", &a),
            Path::new("/s/web-c1-eth0.json")
        );
    }

    #[test]
    fn masquerade_exempts_the_whole_overlay() {
        let a = args(r#"{"cniVersion":"1.0.0","name":"web","type":"overlay"}"#);
        let c = conf_of(&a).unwrap();
        let r = CniResult::from_value(
            &serde_json::json!({"cniVersion":"1.0.0","ips":[{"address":"10.50.3.9/24"}]}),
            "1.0.0",
        )
        .unwrap();
        let rules = masq_rules(&c, &a, &lease(), &r);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].addr.to_string(), "10.50.3.9/16");
    }

    #[test]
    fn bad_names_and_missing_leases() {
        let a = args(r#"{"cniVersion":"1.0.0","name":"web","type":"overlay","network":"../x"}"#);
        assert_eq!(conf_of(&a).unwrap_err().code, codes::INVALID_CONFIG);
        let e = read_lease(Path::new("/nonexistent-rcni"), "web").unwrap_err();
        assert_eq!(e.code, codes::TRY_AGAIN);
        assert!(e.msg.contains("no lease"), "{}", e.msg);
    }
}
