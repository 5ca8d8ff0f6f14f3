//! `tuning`: a chained meta plugin that adjusts the container interface and its namespace's
//! network sysctls.
//!
//! * `sysctl` {key: value}: keys in dotted or slash form; dots become `/`, then the first
//!   `IFNAME` is replaced by CNI_IFNAME (after the dot conversion, so `eth0.100` survives), and
//!   the path must stay under `/proc/sys/net/` (`invalid net sysctl key`). Duplicated keys are
//!   rejected (reference HEAD); an optional allowlist of regexes in
//!   `/etc/cni/tuning/allowlist.conf` restricts the keys (unanchored match, like Go's
//!   `regexp.MatchString`). Sysctls are written inside CNI_NETNS and never restored.
//! * `mac`, `mtu`, `promisc`, `allmulti`, `txQLen`: applied to CNI_IFNAME inside CNI_NETNS after
//!   the previous values of exactly the configured settings were saved to
//!   `<dataDir>/<containerID>_<ifname>.json` (dataDir default `/run/cni/tuning`); DEL restores
//!   them and removes the file, and always succeeds.
//! * Sources, lowest priority first: the plugin object, CNI_ARGS `MAC`, `args.cni.*` (sysctls
//!   merged key by key), `runtimeConfig.mac` (capability `mac`).
//! * ADD requires prevResult and rewrites the MAC of the matching interface in it.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use cni::error::{codes, CniError, Context};
use cni::result::CniResult;
use cni::skel::{CmdArgs, Plugin};
use kernel::mac::{format_mac, parse_mac};
use kernel::netlink::{Link, Netlink, NetlinkOps};
use kernel::netns::NetNs;
use kernel::sysctl;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Default directory of the backup files (reference default).
pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";
/// Optional allowlist of sysctl key regexes, one per line (reference path).
pub const ALLOWLIST_PATH: &str = "/etc/cni/tuning/allowlist.conf";

/// The plugin.
pub struct Tuning;

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_CONFIG, msg)
}

/// Wire form of the settings that may come from the plugin object or from `args.cni`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireSettings {
    sysctl: Option<BTreeMap<String, String>>,
    mac: Option<String>,
    mtu: Option<i64>,
    promisc: Option<bool>,
    allmulti: Option<bool>,
    #[serde(rename = "txQLen")]
    tx_qlen: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireArgs {
    cni: Option<WireSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireRuntime {
    mac: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireConf {
    sysctl: Option<BTreeMap<String, String>>,
    mac: Option<String>,
    mtu: Option<i64>,
    promisc: Option<bool>,
    allmulti: Option<bool>,
    #[serde(rename = "txQLen")]
    tx_qlen: Option<i64>,
    data_dir: Option<String>,
    runtime_config: Option<WireRuntime>,
    args: Option<WireArgs>,
}

/// `sysctl` as an ordered list of pairs, so duplicated keys are visible (a JSON map loses them).
#[derive(Debug, Default)]
struct SysctlPairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for SysctlPairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SysctlPairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of sysctl key to string value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<SysctlPairs, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, String>()? {
                    v.push((k, val));
                }
                Ok(SysctlPairs(v))
            }
            fn visit_unit<E>(self) -> Result<SysctlPairs, E> {
                Ok(SysctlPairs::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawSysctl {
    #[serde(default)]
    sysctl: Option<SysctlPairs>,
}

/// Validated configuration of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TuningConf {
    /// Sysctls in the order given, keys as configured (before IFNAME substitution).
    pub sysctl: Vec<(String, String)>,
    /// MAC to set.
    pub mac: Option<[u8; 6]>,
    /// MTU to set.
    pub mtu: Option<u32>,
    /// Promiscuous mode.
    pub promisc: Option<bool>,
    /// All-multicast mode.
    pub allmulti: Option<bool>,
    /// Transmit queue length.
    pub tx_qlen: Option<u32>,
    /// Where backups live.
    pub data_dir: PathBuf,
}

fn to_u32(what: &str, v: Option<i64>) -> Result<Option<u32>, CniError> {
    v.map(|n| {
        u32::try_from(n).map_err(|_| invalid(format!("invalid {what} {n}: must be 0..=4294967295")))
    })
    .transpose()
}

fn mac_of(what: &str, s: &str) -> Result<[u8; 6], CniError> {
    parse_mac(s).map_err(|_| invalid(format!("invalid {what} MAC address {s:?}")))
}

impl TuningConf {
    /// Decode and validate everything before the first side effect.
    pub fn load(args: &CmdArgs) -> Result<TuningConf, CniError> {
        let wire: WireConf = args.plugin_conf()?;
        let raw: RawSysctl = serde_json::from_slice(&args.stdin)
            .map_err(|e| invalid(format!("invalid sysctl object: {e}")))?;
        let mut sysctl = raw.sysctl.unwrap_or_default().0;
        if sysctl.is_empty() {
            // Go matches keys case-insensitively: `Sysctl` is decoded through gojson.
            sysctl = wire
                .sysctl
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
        }
        let mut seen = std::collections::BTreeSet::new();
        for (k, _) in &sysctl {
            if !seen.insert(k.clone()) {
                return Err(invalid(format!("duplicated sysctl key {k:?}")));
            }
        }
        let s = &wire;
        let mut conf = TuningConf {
            sysctl,
            mac: s.mac.as_deref().map(|m| mac_of("mac", m)).transpose()?,
            mtu: to_u32("mtu", s.mtu)?,
            promisc: s.promisc,
            allmulti: s.allmulti,
            tx_qlen: to_u32("txQLen", s.tx_qlen)?,
            data_dir: PathBuf::from(wire.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)),
        };
        if let Some(m) = args.args.get("MAC") {
            conf.mac = Some(mac_of("CNI_ARGS", m)?);
        }
        if let Some(a) = wire.args.as_ref().and_then(|a| a.cni.as_ref()) {
            for (k, v) in a.sysctl.clone().unwrap_or_default() {
                match conf.sysctl.iter_mut().find(|(ck, _)| *ck == k) {
                    Some(slot) => slot.1 = v,
                    None => conf.sysctl.push((k, v)),
                }
            }
            if let Some(m) = &a.mac {
                conf.mac = Some(mac_of("args.cni.mac", m)?);
            }
            if let Some(v) = to_u32("args.cni.mtu", a.mtu)? {
                conf.mtu = Some(v);
            }
            conf.promisc = a.promisc.or(conf.promisc);
            conf.allmulti = a.allmulti.or(conf.allmulti);
            if let Some(v) = to_u32("args.cni.txQLen", a.tx_qlen)? {
                conf.tx_qlen = Some(v);
            }
        }
        if let Some(m) = wire.runtime_config.as_ref().and_then(|r| r.mac.as_ref()) {
            conf.mac = Some(mac_of("runtimeConfig.mac", m)?);
        }
        if conf.mtu == Some(0) {
            return Err(invalid("invalid mtu 0"));
        }
        if conf.mac.is_some_and(|m| m[0] & 1 == 1 || m == [0; 6]) {
            return Err(invalid(
                "invalid MAC address: must be a non-zero unicast address",
            ));
        }
        Ok(conf)
    }
}

/// The /proc/sys-relative path of a sysctl key for `ifname`: dots become `/` (slash-form keys
/// are kept), the first `IFNAME` becomes the interface name, and the result must be under
/// `net/` with no `.`/`..` components (reference: `invalid net sysctl key`).
pub fn sysctl_rel_path(key: &str, ifname: &str) -> Result<String, CniError> {
    let slashed = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    let rel = slashed.replacen("IFNAME", ifname, 1);
    let bad = || invalid(format!("invalid net sysctl key: {key:?}"));
    let comps: Vec<&str> = rel.split('/').collect();
    if comps.len() < 2
        || comps[0] != "net"
        || comps
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return Err(bad());
    }
    // The path is built only from validated components, so it cannot leave /proc/sys/net.
    sysctl::key_path(&rel).map_err(|_| bad())?;
    Ok(rel)
}

/// Checks every key against the allowlist regexes (one per line; blank lines and `#` comments
/// ignored). A key passes when any regex matches it (unanchored).
pub fn check_allowlist(list: &str, keys: &[(String, String)]) -> Result<(), CniError> {
    let mut res = Vec::new();
    for line in list.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        res.push(
            regex_lite::Regex::new(l)
                .map_err(|e| invalid(format!("invalid regex {l:?} in {ALLOWLIST_PATH}: {e}")))?,
        );
    }
    for (k, _) in keys {
        if !res.iter().any(|r| r.is_match(k)) {
            return Err(invalid(format!(
                "Sysctl {k} is not allowed. Only the following sysctls are allowed: {}",
                res.iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

fn allowlist(keys: &[(String, String)]) -> Result<(), CniError> {
    match std::fs::read_to_string(ALLOWLIST_PATH) {
        Ok(s) => check_allowlist(&s, keys),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::new(
            codes::IO_FAILURE,
            format!("cannot read {ALLOWLIST_PATH}: {e}"),
        )),
    }
}

/// Previous values of exactly the settings a call changes (`<cid>_<ifname>.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// previous MAC
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// previous MTU
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// previous promiscuous mode
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    /// previous all-multicast mode
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    /// previous transmit queue length
    #[serde(default, rename = "txqlen", skip_serializing_if = "Option::is_none")]
    pub tx_qlen: Option<u32>,
}

/// Backup file of one attachment.
pub fn backup_path(data_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    // Both parts were validated by the skeleton (container-ID regex, ifname rules): no `/`.
    data_dir.join(format!("{container_id}_{ifname}.json"))
}

fn write_backup(path: &Path, b: &Backup) -> Result<(), CniError> {
    let io = |e: std::io::Error| {
        CniError::new(
            codes::IO_FAILURE,
            format!("failed to save backup {}: {e}", path.display()),
        )
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let data = serde_json::to_vec(b).map_err(|e| CniError::internal(e.to_string()))?;
    // Atomic replace: a crash never leaves a truncated backup that DEL would misread.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, data).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn read_backup(path: &Path) -> Option<Backup> {
    let data = std::fs::read(path).ok()?;
    cni::gojson::from_slice(&data).ok()
}

fn netns_of(args: &CmdArgs) -> Result<NetNs, CniError> {
    kernel::cni_error::open_netns(args.netns.as_deref())
}

fn require_prev(args: &CmdArgs) -> Result<CniResult, CniError> {
    args.prev_result()?
        .ok_or_else(|| invalid("tuning must be called as a chained plugin: prevResult is required"))
}

fn find_link(nl: &mut Netlink, ifname: &str) -> Result<Link, CniError> {
    nl.link_by_name(ifname)
        .context(format!("look up {ifname}"))?
        .ok_or_else(|| {
            CniError::internal(format!(
                "interface {ifname} not found in the container netns"
            ))
        })
}

fn extras(nl: &mut Netlink, link: &Link) -> Result<(bool, u32), CniError> {
    nl.link_allmulti_txqlen(link.index)
        .context(format!("read {}", link.name))?
        .ok_or_else(|| CniError::internal(format!("interface {} disappeared", link.name)))
}

fn set_mac(nl: &mut Netlink, link: &Link, mac: [u8; 6]) -> Result<(), CniError> {
    match nl.link_set_mac(link.index, mac) {
        Err(e) if e.errno() == Some(libc::EBUSY) && link.up => {
            // Drivers without live address change need the link down for the change.
            nl.link_set_down(link.index)
                .context(format!("set {} down", link.name))?;
            let r = nl.link_set_mac(link.index, mac);
            nl.link_set_up(link.index)
                .context(format!("set {} up", link.name))?;
            r.context(format!("set MAC of {}", link.name))
        }
        r => r.context(format!("set MAC of {}", link.name)),
    }
}

/// Applies the link settings of `b`-shaped values (used for both ADD and the DEL restore).
fn apply_link(nl: &mut Netlink, link: &Link, want: &Backup) -> Result<(), CniError> {
    let name = &link.name;
    if let Some(m) = &want.mac {
        let mac = parse_mac(m).map_err(|_| CniError::internal(format!("bad MAC {m:?}")))?;
        set_mac(nl, link, mac)?;
    }
    if let Some(p) = want.promisc {
        nl.link_set_promisc(link.index, p)
            .context(format!("set promisc of {name}"))?;
    }
    if let Some(mtu) = want.mtu {
        nl.link_set_mtu(link.index, mtu)
            .context(format!("set MTU of {name}"))?;
    }
    if let Some(a) = want.allmulti {
        nl.link_set_allmulti(link.index, a)
            .context(format!("set allmulticast of {name}"))?;
    }
    if let Some(q) = want.tx_qlen {
        nl.link_set_txqlen(link.index, q)
            .context(format!("set txqueuelen of {name}"))?;
    }
    Ok(())
}

fn wanted(conf: &TuningConf) -> Backup {
    Backup {
        mac: conf.mac.map(|m| format_mac(&m)),
        mtu: conf.mtu,
        promisc: conf.promisc,
        allmulti: conf.allmulti,
        tx_qlen: conf.tx_qlen,
    }
}

fn write_sysctls(ns: &NetNs, ifname: &str, conf: &TuningConf) -> Result<(), CniError> {
    let mut paths = Vec::new();
    for (k, v) in &conf.sysctl {
        paths.push((sysctl_rel_path(k, ifname)?, v.clone()));
    }
    if paths.is_empty() {
        return Ok(());
    }
    ns.run(|| {
        for (p, v) in &paths {
            sysctl::write(p, v).context(format!("sysctl {p}"))?;
        }
        Ok(())
    })
    .context("enter container netns")?
}

impl Plugin for Tuning {
    fn known_args(&self) -> &'static [&'static str] {
        &["MAC"]
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = TuningConf::load(args)?;
        let mut result = require_prev(args)?;
        for (k, _) in &conf.sysctl {
            sysctl_rel_path(k, &args.ifname)?;
        }
        allowlist(&conf.sysctl)?;
        let ns = netns_of(args)?;
        write_sysctls(&ns, &args.ifname, &conf)?;
        let want = wanted(&conf);
        if want == Backup::default() {
            return Ok(result);
        }
        let mut nl = Netlink::open_in(&ns).context("netlink in container netns")?;
        let link = find_link(&mut nl, &args.ifname)?;
        let path = backup_path(&conf.data_dir, &args.container_id, &args.ifname);
        // A backup left by an ADD without DEL holds the original values: keep it.
        if read_backup(&path).is_none() {
            let (allmulti, txq) = extras(&mut nl, &link)?;
            let backup = Backup {
                mac: want
                    .mac
                    .as_ref()
                    .and_then(|_| link.mac.map(|m| format_mac(&m))),
                mtu: want.mtu.map(|_| link.mtu),
                promisc: want.promisc.map(|_| link.promisc),
                allmulti: want.allmulti.map(|_| allmulti),
                tx_qlen: want.tx_qlen.map(|_| txq),
            };
            write_backup(&path, &backup)?;
        }
        apply_link(&mut nl, &link, &want)?;
        if let Some(mac) = &want.mac {
            let sandbox = args
                .netns
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            for i in result.interfaces.iter_mut() {
                if i.name == args.ifname && (i.sandbox.is_empty() || i.sandbox == sandbox) {
                    i.mac = mac.clone();
                }
            }
        }
        Ok(result)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        // DEL always succeeds (reference): restore what can be restored, log the rest.
        let data_dir = args
            .plugin_conf::<WireConf>()
            .ok()
            .and_then(|w| w.data_dir)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let path = backup_path(&data_dir, &args.container_id, &args.ifname);
        let Some(backup) = read_backup(&path) else {
            let _ = std::fs::remove_file(&path);
            return Ok(());
        };
        let restored = (|| -> Result<(), CniError> {
            let ns = netns_of(args)?;
            let mut nl = Netlink::open_in(&ns).context("netlink in container netns")?;
            let link = find_link(&mut nl, &args.ifname)?;
            apply_link(&mut nl, &link, &backup)
        })();
        if let Err(e) = restored {
            eprintln!(
                "tuning: could not restore {} from {}: {}",
                args.ifname,
                path.display(),
                e.msg
            );
        }
        let _ = std::fs::remove_file(&path);
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = TuningConf::load(args)?;
        require_prev(args)?;
        let ns = netns_of(args)?;
        let mut paths = Vec::new();
        for (k, v) in &conf.sysctl {
            paths.push((k.clone(), sysctl_rel_path(k, &args.ifname)?, v.clone()));
        }
        let mismatch = ns
            .run(|| {
                for (k, p, v) in &paths {
                    let cur = sysctl::read(p).context(format!("sysctl {p}"))?;
                    if cur.trim() != v.trim() {
                        return Err(CniError::internal(format!(
                            "Error: Tuning configured value of {k} is {v}, current value is {cur}"
                        )));
                    }
                }
                Ok(())
            })
            .context("enter container netns")?;
        mismatch?;
        let want = wanted(&conf);
        if want == Backup::default() {
            return Ok(());
        }
        let mut nl = Netlink::open_in(&ns).context("netlink in container netns")?;
        let link = find_link(&mut nl, &args.ifname)?;
        let (allmulti, txq) = extras(&mut nl, &link)?;
        let differ = |what: &str, want: &dyn Display, cur: &dyn Display| {
            Err(CniError::internal(format!(
                "Error: Tuning configured {what} of {} is {want}, current value is {cur}",
                args.ifname
            )))
        };
        if let Some(m) = &want.mac {
            let cur = link.mac.map(|m| format_mac(&m)).unwrap_or_default();
            if !cur.eq_ignore_ascii_case(m) {
                return differ("MAC", m, &cur);
            }
        }
        if let Some(p) = want.promisc {
            if p != link.promisc {
                return differ("promiscuous mode", &p, &link.promisc);
            }
        }
        if let Some(mtu) = want.mtu {
            if mtu != link.mtu {
                return differ("MTU", &mtu, &link.mtu);
            }
        }
        if let Some(a) = want.allmulti {
            if a != allmulti {
                return differ("allmulticast mode", &a, &allmulti);
            }
        }
        if let Some(q) = want.tx_qlen {
            if q != txq {
                return differ("tx queue length", &q, &txq);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_rel_path("net.ipv4.conf.IFNAME.arp_filter", "eth0").unwrap(),
            "net/ipv4/conf/eth0/arp_filter"
        );
        // dotted ifnames survive because substitution happens after the dot conversion
        assert_eq!(
            sysctl_rel_path("net.ipv6.conf.IFNAME.accept_ra", "eth0.100").unwrap(),
            "net/ipv6/conf/eth0.100/accept_ra"
        );
        assert_eq!(
            sysctl_rel_path("net/ipv4/ip_forward", "eth0").unwrap(),
            "net/ipv4/ip_forward"
        );
        for bad in [
            "kernel.hostname",
            "net",
            "net..ipv4",
            "net/../kernel/hostname",
            "/net/ipv4/ip_forward",
            "netfoo.x",
        ] {
            let e = sysctl_rel_path(bad, "eth0").unwrap_err();
            assert!(e.msg.contains("invalid net sysctl key"), "{bad}: {}", e.msg);
        }
        // an ifname of `..` cannot be smuggled in (the skeleton rejects it anyway)
        assert!(sysctl_rel_path("net.ipv4.conf.IFNAME.x", "..").is_err());
    }

    #[test]
    fn allowlist_matching() {
        let list =
            "# comment\n^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$\n\n^net\\.core\\.somaxconn$\n";
        let ok = vec![
            (
                "net.ipv4.conf.IFNAME.arp_filter".to_string(),
                "1".to_string(),
            ),
            ("net.core.somaxconn".to_string(), "500".to_string()),
        ];
        assert!(check_allowlist(list, &ok).is_ok());
        let bad = vec![("net.ipv4.ip_forward".to_string(), "1".to_string())];
        let e = check_allowlist(list, &bad).unwrap_err();
        assert!(
            e.msg.contains("net.ipv4.ip_forward is not allowed"),
            "{}",
            e.msg
        );
        assert!(check_allowlist("([", &ok).is_err());
    }

    #[test]
    fn sysctl_pairs_keep_duplicates() {
        let raw: RawSysctl =
            serde_json::from_str(r#"{"sysctl":{"net.a":"1","net.a":"2"},"x":1}"#).unwrap();
        assert_eq!(raw.sysctl.unwrap().0.len(), 2);
        let none: RawSysctl = serde_json::from_str(r#"{"sysctl":null}"#).unwrap();
        assert!(none.sysctl.is_none_or(|p| p.0.is_empty()));
    }

    #[test]
    fn backup_json_roundtrip_and_go_style_keys() {
        let b = Backup {
            mac: Some("02:00:00:00:00:01".into()),
            mtu: Some(1500),
            promisc: Some(false),
            allmulti: None,
            tx_qlen: Some(1000),
        };
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(
            s,
            r#"{"mac":"02:00:00:00:00:01","mtu":1500,"promisc":false,"txqlen":1000}"#
        );
        let back: Backup = cni::gojson::from_slice(
            br#"{"Mac":"02:00:00:00:00:01","Mtu":1500,"Promisc":false,"TxQLen":1000}"#,
        )
        .unwrap();
        assert_eq!(back, b);
        assert_eq!(
            backup_path(Path::new("/run/cni/tuning"), "cid", "eth0"),
            PathBuf::from("/run/cni/tuning/cid_eth0.json")
        );
    }
}
