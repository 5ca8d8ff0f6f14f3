//! The runtime side: `attach`, `detach`, `check`, `gc`, `status` through
//! [`cni::runtime::CniConfig`] (libcni semantics, reference §1.4, §1.5, §1.9), and the argument
//! parsing that must reject bad input before any plugin runs.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use cni::cache::{self, CacheEntry};
use cni::config::NetConfList;
use cni::runtime::{list_version, load_conflist};
use cni::{CniArgs, CniResult, RuntimeConf};
use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::cli::{AttachArgs, TargetArgs};
use crate::ctx::{check_ns_name, Ctx};
use crate::error::{self, Error, Result};
use crate::networks;
use crate::table::{dash, Table};

/// A parsed `--port` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Host address to bind, all when `None`.
    pub host_ip: Option<IpAddr>,
    /// Port on the host.
    pub host_port: u16,
    /// Port in the namespace.
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
}

impl PortSpec {
    /// The `portMappings` capability entry (CONVENTIONS.md).
    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        });
        if let (Some(ip), Some(m)) = (self.host_ip, v.as_object_mut()) {
            m.insert("hostIP".into(), Value::String(ip.to_string()));
        }
        v
    }
}

fn port_num(s: &str, which: &str, whole: &str) -> Result<u16> {
    let n: u32 = s.parse().map_err(|_| {
        Error::Usage(format!(
            "invalid --port {whole:?}: {which} port {s:?} is not a number"
        ))
    })?;
    if !(1..=65535).contains(&n) {
        return Err(Error::Usage(format!(
            "invalid --port {whole:?}: {which} port {n} is out of range 1-65535"
        )));
    }
    Ok(n as u16)
}

/// Parse `[HOSTIP:]HOST:CONTAINER[/PROTO]` (IPv6 host address in brackets).
pub fn parse_port(s: &str) -> Result<PortSpec> {
    let form = || {
        Error::Usage(format!(
            "invalid --port {s:?}: expected [HOSTIP:]HOST:CONTAINER[/PROTO], e.g. 8080:80 or 127.0.0.1:5353:53/udp"
        ))
    };
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p.to_ascii_lowercase()),
        None => (s, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Error::Usage(format!(
            "invalid --port {s:?}: protocol {proto:?} is not supported (use tcp, udp or sctp)"
        )));
    }
    let (host_ip, ports) = if let Some(rest) = spec.strip_prefix('[') {
        let (ip, ports) = rest.split_once("]:").ok_or_else(form)?;
        let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| {
            Error::Usage(format!(
                "invalid --port {s:?}: {ip:?} is not an IPv6 address"
            ))
        })?;
        (Some(IpAddr::V6(ip)), ports)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            2 => (None, spec),
            3 => {
                let ip: std::net::Ipv4Addr = parts[0].parse().map_err(|_| {
                    Error::Usage(format!(
                        "invalid --port {s:?}: {:?} is not an IPv4 address (put IPv6 in brackets)",
                        parts[0]
                    ))
                })?;
                let ports = spec.split_once(':').map(|(_, p)| p).ok_or_else(form)?;
                (Some(IpAddr::V4(ip)), ports)
            }
            _ => return Err(form()),
        }
    };
    let (h, c) = ports.split_once(':').ok_or_else(form)?;
    Ok(PortSpec {
        host_ip,
        host_port: port_num(h, "host", s)?,
        container_port: port_num(c, "container", s)?,
        protocol: proto,
    })
}

/// Parse an `--ip` value (address with or without prefix), normalized.
pub fn parse_ip(s: &str) -> Result<String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.to_string());
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(a.to_string());
    }
    Err(Error::Usage(format!(
        "invalid --ip {s:?}: expected an IPv4/IPv6 address, optionally with /prefix (e.g. 10.88.0.10/16)"
    )))
}

/// Parse a `--mac` value: six hex octets, unicast, not all zero; printed lower-case.
pub fn parse_mac(s: &str) -> Result<String> {
    let mac = kernel::mac::parse_mac(s).map_err(|e| {
        Error::Usage(format!(
            "invalid --mac: {e} (expected e.g. 02:42:ac:11:00:02)"
        ))
    })?;
    if mac[0] & 1 == 1 {
        return Err(Error::Usage(format!(
            "invalid --mac {s:?}: multicast address (the first octet must be even)"
        )));
    }
    if mac == [0; 6] {
        return Err(Error::Usage(format!(
            "invalid --mac {s:?}: all-zero address"
        )));
    }
    Ok(kernel::mac::format_mac(&mac))
}

/// Parse (and join) `--args` values into CNI_ARGS pairs.
pub fn parse_args(values: &[String]) -> Result<Vec<(String, String)>> {
    let joined = values.join(";");
    let a = CniArgs::parse(&joined).map_err(|e| {
        Error::Usage(format!(
            "invalid --args {joined:?}: {} (expected K=V;K=V)",
            e.msg
        ))
    })?;
    if let Some((k, _)) = a.pairs.iter().find(|(k, _)| k.is_empty()) {
        return Err(Error::Usage(format!("invalid --args: empty key in {k:?}")));
    }
    Ok(a.pairs)
}

/// Validated input of attach (everything checked before any side effect).
#[derive(Debug, Clone, PartialEq)]
pub struct AttachPlan {
    /// Namespace name.
    pub name: String,
    /// Network name.
    pub network: String,
    /// Interface name.
    pub ifname: String,
    /// Container ID given with `--container-id`.
    pub container_id: Option<String>,
    /// CNI_ARGS pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `ips`, `mac`).
    pub capability_args: Map<String, Value>,
}

fn check_target(t: &TargetArgs) -> Result<()> {
    check_ns_name(&t.name)?;
    cni::validate_name("network name", &t.network).map_err(|_| {
        Error::Usage(format!(
            "invalid network name {:?}: use letters, digits, '_', '.', '-', starting with a letter or digit",
            t.network
        ))
    })?;
    cni::validate_ifname(&t.ifname).map_err(|e| {
        Error::Usage(format!(
            "invalid --ifname {:?}: {} (1-15 bytes, no '/', ':' or whitespace)",
            t.ifname, e.msg
        ))
    })?;
    if let Some(id) = &t.container_id {
        check_container_id(id, "--container-id")?;
    }
    Ok(())
}

fn check_container_id(id: &str, source: &str) -> Result<()> {
    cni::validate_name("containerID", id).map_err(|_| {
        Error::Usage(format!(
            "{source} {id:?} is not a valid container ID (regex ^[A-Za-z0-9][A-Za-z0-9_.-]*$); pass --container-id"
        ))
    })
}

/// Validate every attach option.
pub fn plan_attach(a: &AttachArgs) -> Result<AttachPlan> {
    check_target(&a.target)?;
    let ports = a
        .ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    let ips = a
        .ips
        .iter()
        .map(|i| parse_ip(i))
        .collect::<Result<Vec<_>>>()?;
    let mac = a.mac.as_deref().map(parse_mac).transpose()?;
    let args = parse_args(&a.args)?;
    let mut caps = Map::new();
    if !ports.is_empty() {
        caps.insert(
            "portMappings".into(),
            Value::Array(ports.iter().map(PortSpec::to_value).collect()),
        );
    }
    if !ips.is_empty() {
        caps.insert(
            "ips".into(),
            Value::Array(ips.into_iter().map(Value::String).collect()),
        );
    }
    if let Some(m) = mac {
        caps.insert("mac".into(), Value::String(m));
    }
    Ok(AttachPlan {
        name: a.target.name.clone(),
        network: a.target.network.clone(),
        ifname: a.target.ifname.clone(),
        container_id: a.target.container_id.clone(),
        args,
        capability_args: caps,
    })
}

/// Load a network from the configuration directory; unknown → [`Error::NotFound`] listing the
/// networks that exist.
pub fn load_network(ctx: &Ctx, name: &str) -> Result<NetConfList> {
    if !ctx.conf_dir.is_dir() {
        return Err(Error::NotFound(format!(
            "configuration directory {} does not exist; pass --conf-dir or set NETCONFPATH",
            ctx.conf_dir.display()
        )));
    }
    match load_conflist(&ctx.conf_dir, name) {
        Ok(l) => Ok(l),
        Err(e)
            if e.code == cni::codes::INVALID_CONFIG
                && e.msg.starts_with("no net configuration") =>
        {
            let names = networks::names(&ctx.conf_dir);
            Err(Error::NotFound(format!(
                "network {name:?} not found in {} (found: {}); see `netns networks`",
                ctx.conf_dir.display(),
                crate::ctx::found_list(&names)
            )))
        }
        Err(e) => Err(error::cni(&format!("loading network {name:?}"), &e)),
    }
}

/// Plugins of `list` that declare capability `cap` (set to true).
pub fn plugins_with_capability(list: &NetConfList, cap: &str) -> Vec<String> {
    list.plugins
        .iter()
        .filter(|p| {
            p.get("capabilities")
                .and_then(|c| c.get(cap))
                .and_then(Value::as_bool)
                == Some(true)
        })
        .map(|p| {
            p.get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The cached attachment of (network, netns pin, ifname), optionally for one container ID.
fn cached_for(
    ctx: &Ctx,
    network: &str,
    name: &str,
    ifname: &str,
    cid: Option<&str>,
) -> Option<CacheEntry> {
    let ns = kernel::NetNs::open(&ctx.ns_path(name)).ok();
    ctx.attachments_of(name, ns.as_ref()).into_iter().find(|e| {
        e.network_name == network && e.if_name == ifname && cid.is_none_or(|c| c == e.container_id)
    })
}

/// `netns attach`.
pub fn attach(ctx: &Ctx, a: &AttachArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let plan = plan_attach(a)?;
    let list = load_network(ctx, &plan.network)?;
    let _ns = ctx.open_ns(&plan.name)?;
    let cid = match &plan.container_id {
        Some(c) => c.clone(),
        None => {
            check_container_id(&plan.name, "namespace name")?;
            plan.name.clone()
        }
    };
    if let Some(e) = cached_for(ctx, &plan.network, &plan.name, &plan.ifname, None) {
        return Err(Error::Failed(format!(
            "{} is already attached to {:?} as {} (container id {}); run `netns detach {} {}{}` first",
            plan.name,
            plan.network,
            e.if_name,
            e.container_id,
            plan.name,
            plan.network,
            if plan.ifname == "eth0" { String::new() } else { format!(" --ifname {}", plan.ifname) }
        )));
    }
    if cache::result_path(&ctx.cache_dir, &plan.network, &cid, &plan.ifname).exists() {
        return Err(Error::Failed(format!(
            "container id {cid:?} already has an attachment {}/{} (another namespace); choose another --container-id",
            plan.network, plan.ifname
        )));
    }
    for cap in plan.capability_args.keys() {
        if plugins_with_capability(&list, cap).is_empty() {
            let _ = writeln!(
                err,
                "warning: no plugin of network {:?} declares capability {cap:?}; the option is ignored (add \"capabilities\": {{\"{cap}\": true}} to the plugin that should use it)",
                plan.network
            );
        }
    }
    let rt = RuntimeConf {
        container_id: cid.clone(),
        netns: ctx.ns_path(&plan.name).display().to_string(),
        ifname: plan.ifname.clone(),
        args: plan.args.clone(),
        capability_args: plan.capability_args.clone(),
    };
    let cfg = ctx.cni();
    let res = match cfg.add_network_list(&list, &rt) {
        Ok(r) => r,
        Err(e) => {
            // SPEC §3: every ADD is followed by a DEL, even a failed one, so nothing the
            // successful plugins created leaks.
            let cleanup = cfg.del_network_list(&list, &rt);
            let mut msg = error::cni(
                &format!("attaching {} to {:?} failed", plan.name, plan.network),
                &e,
            )
            .to_string();
            match cleanup {
                Ok(()) => msg.push_str("; cleaned up with DEL"),
                Err(d) => msg.push_str(&format!("; cleanup DEL also failed: {}", d.msg)),
            }
            return Err(Error::Failed(msg));
        }
    };
    let version = list_version(&list)
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    if a.json {
        let v = res
            .to_value(&version)
            .map_err(|e| error::cni("rendering result", &e))?;
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
    } else {
        let _ = writeln!(
            out,
            "attached {} to {} (container id {cid}, interface {})",
            plan.name, plan.network, plan.ifname
        );
        let _ = write!(out, "{}", render_result(&res));
    }
    Ok(())
}

/// Human form of a CNI result: interfaces, addresses, routes.
pub fn render_result(r: &CniResult) -> String {
    let mut s = String::new();
    if !r.interfaces.is_empty() {
        let mut t = Table::new(&["INTERFACE", "MAC", "SANDBOX"]);
        for i in &r.interfaces {
            t.row(vec![
                i.name.clone(),
                dash(i.mac.clone()),
                dash(i.sandbox.clone()),
            ]);
        }
        s.push_str(&t.render());
    }
    if !r.ips.is_empty() {
        let mut t = Table::new(&["ADDRESS", "GATEWAY", "INTERFACE"]);
        for ip in &r.ips {
            let ifname = ip
                .interface
                .and_then(|i| r.interfaces.get(i))
                .map(|i| i.name.clone())
                .unwrap_or_default();
            t.row(vec![
                ip.address.to_string(),
                dash(ip.gateway.map(|g| g.to_string()).unwrap_or_default()),
                dash(ifname),
            ]);
        }
        s.push_str(&t.render());
    }
    if !r.routes.is_empty() {
        let mut t = Table::new(&["ROUTE", "VIA"]);
        for rt in &r.routes {
            t.row(vec![
                rt.dst.to_string(),
                dash(rt.gw.map(|g| g.to_string()).unwrap_or_default()),
            ]);
        }
        s.push_str(&t.render());
    }
    s
}

/// Runtime parameters for DEL/CHECK: the cached ones when the attachment is cached (libcni
/// runtimes pass the same args at DEL as at ADD), else derived from the command line.
fn target_rt(ctx: &Ctx, t: &TargetArgs, cached: Option<&CacheEntry>) -> Result<RuntimeConf> {
    let cid = match (&t.container_id, cached) {
        (Some(c), _) => c.clone(),
        (None, Some(e)) => e.container_id.clone(),
        (None, None) => {
            check_container_id(&t.name, "namespace name")?;
            t.name.clone()
        }
    };
    let mut rt = cached.map(CacheEntry::runtime_conf).unwrap_or_default();
    rt.container_id = cid;
    rt.ifname = t.ifname.clone();
    if rt.netns.is_empty() {
        rt.netns = ctx.ns_path(&t.name).display().to_string();
    }
    Ok(rt)
}

/// `netns detach`: DEL is idempotent; it also works when the namespace was already deleted (the
/// cached netns path is passed, plugins must cope) and when the config file was removed (the
/// config cached at ADD is used, as libcni stores it for exactly that reason).
pub fn detach(ctx: &Ctx, t: &TargetArgs, out: &mut dyn Write) -> Result<()> {
    check_target(t)?;
    let cached = cached_for(
        ctx,
        &t.network,
        &t.name,
        &t.ifname,
        t.container_id.as_deref(),
    );
    let list = match load_network(ctx, &t.network) {
        Ok(l) => l,
        Err(Error::NotFound(m)) => match cached
            .as_ref()
            .and_then(|e| e.config_bytes())
            .and_then(|b| NetConfList::parse(&b).ok())
        {
            Some(l) => l,
            None => return Err(Error::NotFound(m)),
        },
        Err(e) => return Err(e),
    };
    if !ctx.ns_path(&t.name).exists() && cached.is_none() {
        // Surface the "namespace not found" message with the list of namespaces.
        ctx.open_ns(&t.name)?;
    }
    let rt = target_rt(ctx, t, cached.as_ref())?;
    ctx.cni().del_network_list(&list, &rt).map_err(|e| {
        error::cni(
            &format!("detaching {} from {:?} failed", t.name, t.network),
            &e,
        )
    })?;
    let _ = writeln!(
        out,
        "detached {} from {} (container id {}, interface {}){}",
        t.name,
        t.network,
        rt.container_id,
        t.ifname,
        if cached.is_none() {
            " (was not attached)"
        } else {
            ""
        }
    );
    Ok(())
}

/// `netns check`.
pub fn check(ctx: &Ctx, t: &TargetArgs, out: &mut dyn Write) -> Result<()> {
    check_target(t)?;
    let list = load_network(ctx, &t.network)?;
    ctx.open_ns(&t.name)?;
    let Some(cached) = cached_for(
        ctx,
        &t.network,
        &t.name,
        &t.ifname,
        t.container_id.as_deref(),
    ) else {
        return Err(Error::NotFound(format!(
            "{} has no attachment to {:?} on {} in {}; attach it with `netns attach {} {}`",
            t.name,
            t.network,
            t.ifname,
            ctx.cache_dir.join("results").display(),
            t.name,
            t.network
        )));
    };
    let rt = target_rt(ctx, t, Some(&cached))?;
    ctx.cni().check_network_list(&list, &rt).map_err(|e| {
        error::cni(
            &format!("check of {} on {:?} failed", t.name, t.network),
            &e,
        )
    })?;
    let _ = writeln!(
        out,
        "ok: {} on {} ({}, container id {})",
        t.name, t.network, t.ifname, rt.container_id
    );
    Ok(())
}

/// Whether the cached attachment's namespace still exists (a nsfs file at its path). Entries
/// without a netns cannot be judged and are kept.
pub fn netns_alive(e: &CacheEntry) -> bool {
    e.netns.is_empty() || kernel::NetNs::open(Path::new(&e.netns)).is_ok()
}

/// `netns gc NETWORK`: valid = cached attachments of NETWORK whose namespace still exists.
pub fn gc(ctx: &Ctx, network: &str, out: &mut dyn Write) -> Result<()> {
    cni::validate_name("network name", network)
        .map_err(|_| Error::Usage(format!("invalid network name {network:?}")))?;
    let list = load_network(ctx, network)?;
    let mut valid = Vec::new();
    let mut stale = Vec::new();
    for (_, e) in cache::list_entries(&ctx.cache_dir) {
        if e.network_name != network {
            continue;
        }
        if netns_alive(&e) {
            valid.push(cni::Attachment {
                container_id: e.container_id.clone(),
                ifname: e.if_name.clone(),
            });
        } else {
            stale.push(e);
        }
    }
    ctx.cni()
        .gc_network_list(&list, &valid)
        .map_err(|e| error::cni(&format!("gc of {network:?} failed"), &e))?;
    for e in &stale {
        let _ = writeln!(
            out,
            "removed stale attachment: container id {}, {} (netns {} is gone)",
            e.container_id, e.if_name, e.netns
        );
    }
    let _ = writeln!(
        out,
        "gc {network}: {} valid attachment(s) kept, {} stale removed",
        valid.len(),
        stale.len()
    );
    Ok(())
}

/// `netns status NETWORK`.
pub fn status(ctx: &Ctx, network: &str, out: &mut dyn Write) -> Result<()> {
    cni::validate_name("network name", network)
        .map_err(|_| Error::Usage(format!("invalid network name {network:?}")))?;
    let list = load_network(ctx, network)?;
    let version = list_version(&list).map_err(|e| error::cni("version", &e))?;
    ctx.cni()
        .status_network_list(&list)
        .map_err(|e| error::cni(&format!("network {network:?} is not ready"), &e))?;
    if version.supports_gc_status() {
        let _ = writeln!(out, "{network}: ready");
    } else {
        let _ = writeln!(
            out,
            "{network}: ready (cniVersion {} has no STATUS; nothing was asked)",
            version.as_str()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn usage(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected usage error, got {other:?}"),
        }
    }

    #[test]
    fn port_forms() {
        let p = parse_port("8080:80").unwrap();
        assert_eq!(
            (
                p.host_port,
                p.container_port,
                p.protocol.as_str(),
                p.host_ip
            ),
            (8080, 80, "tcp", None)
        );
        let p = parse_port("53:5353/UDP").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str()),
            (53, 5353, "udp")
        );
        let p = parse_port("127.0.0.1:8080:80/sctp").unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            p.to_value(),
            json!({"hostPort":8080,"containerPort":80,"protocol":"sctp","hostIP":"127.0.0.1"})
        );
        let p = parse_port("[::1]:8080:80").unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(parse_port("65535:1").unwrap().host_port, 65535);
        assert_eq!(
            parse_port("8080:80").unwrap().to_value(),
            json!({"hostPort":8080,"containerPort":80,"protocol":"tcp"})
        );
    }

    #[test]
    fn port_errors_say_what_is_wrong() {
        assert!(usage(parse_port("80")).contains("expected [HOSTIP:]HOST:CONTAINER"));
        assert!(usage(parse_port("0:80")).contains("host port 0 is out of range 1-65535"));
        assert!(usage(parse_port("80:65536")).contains("container port 65536 is out of range"));
        assert!(usage(parse_port("80:80/icmp")).contains("protocol \"icmp\" is not supported"));
        assert!(usage(parse_port("x:80")).contains("host port \"x\" is not a number"));
        assert!(usage(parse_port("1.2.3:80:80")).contains("not an IPv4 address"));
        assert!(usage(parse_port("[zz]:80:80")).contains("not an IPv6 address"));
        assert!(usage(parse_port("1:2:3:4")).contains("expected"));
        assert!(usage(parse_port("-1:80")).contains("not a number"));
        assert!(usage(parse_port("")).contains("expected"));
    }

    #[test]
    fn ip_mac_args() {
        assert_eq!(parse_ip("10.0.0.5").unwrap(), "10.0.0.5");
        assert_eq!(parse_ip("10.0.0.5/24").unwrap(), "10.0.0.5/24");
        assert_eq!(parse_ip("2001:db8::5/64").unwrap(), "2001:db8::5/64");
        assert!(usage(parse_ip("10.0.0.256")).contains("expected an IPv4/IPv6 address"));
        assert_eq!(parse_mac("02:AA:bb:00:00:01").unwrap(), "02:aa:bb:00:00:01");
        assert!(usage(parse_mac("02:aa:bb")).contains("expected 6 octets"));
        assert!(usage(parse_mac("01:00:5e:00:00:01")).contains("multicast"));
        assert!(usage(parse_mac("00:00:00:00:00:00")).contains("all-zero"));
        assert_eq!(
            parse_args(&["IgnoreUnknown=1;K8S_POD_NAME=p".into(), "A=b".into()]).unwrap(),
            vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAME".into(), "p".into()),
                ("A".into(), "b".into())
            ]
        );
        assert!(usage(parse_args(&["A=b=c".into()])).contains("invalid pair"));
        assert!(usage(parse_args(&["=b".into()])).contains("empty key"));
    }

    fn attach_args(extra: &[&str]) -> AttachArgs {
        let mut argv = vec!["netns", "attach", "c1", "net"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Cmd::Attach(a) => a,
            _ => panic!("not attach"),
        }
    }

    #[test]
    fn plan_collects_capabilities() {
        let p = plan_attach(&attach_args(&[
            "-p",
            "8080:80",
            "-p",
            "53:53/udp",
            "--ip",
            "10.0.0.9/24",
            "--mac",
            "02:00:00:00:00:09",
            "--args",
            "K=V",
        ]))
        .unwrap();
        assert_eq!(
            Value::Object(p.capability_args),
            json!({
                "portMappings": [{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":53,"containerPort":53,"protocol":"udp"}],
                "ips": ["10.0.0.9/24"],
                "mac": "02:00:00:00:00:09"
            })
        );
        assert_eq!(p.args, vec![("K".into(), "V".into())]);
        let p = plan_attach(&attach_args(&[])).unwrap();
        assert!(p.capability_args.is_empty());
    }

    #[test]
    fn plan_rejects_bad_input() {
        assert!(
            usage(plan_attach(&attach_args(&["--ifname", "0123456789abcdef"])))
                .contains("--ifname")
        );
        assert!(usage(plan_attach(&attach_args(&["--container-id=-x"])))
            .contains("not a valid container ID"));
        assert!(usage(plan_attach(&attach_args(&["--port", "80"]))).contains("--port"));
        assert!(usage(plan_attach(&attach_args(&["--mac", "zz"]))).contains("--mac"));
        let mut a = attach_args(&[]);
        a.target.network = "bad net".into();
        assert!(usage(plan_attach(&a)).contains("invalid network name"));
    }

    #[test]
    fn result_rendering() {
        let r = CniResult::from_value(
            &json!({"cniVersion":"1.0.0",
                "interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/run/netns/c1"}],
                "ips":[{"address":"10.22.0.2/24","gateway":"10.22.0.1","interface":1}],
                "routes":[{"dst":"0.0.0.0/0"}]}),
            "1.0.0",
        )
        .unwrap();
        assert_eq!(
            render_result(&r),
            "INTERFACE  MAC                SANDBOX\n\
             cni0       aa:bb:cc:dd:ee:ff  -\n\
             eth0       02:00:00:00:00:01  /run/netns/c1\n\
             ADDRESS       GATEWAY    INTERFACE\n\
             10.22.0.2/24  10.22.0.1  eth0\n\
             ROUTE      VIA\n\
             0.0.0.0/0  -\n"
        );
    }

    #[test]
    fn capability_lookup() {
        let l = NetConfList::parse(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#).unwrap();
        assert_eq!(plugins_with_capability(&l, "portMappings"), ["portmap"]);
        assert!(plugins_with_capability(&l, "mac").is_empty());
    }
}
