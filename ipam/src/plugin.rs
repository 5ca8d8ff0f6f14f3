//! The CNI face of host-local: decodes a call with the `cni` skeleton's helpers, runs the verb
//! in [`crate::alloc`], and builds the IPAM result (addresses without interface index, the
//! configured routes, DNS from `resolvConf`) that the skeleton prints in the config's version.

use cni::error::CniError;
use cni::result::{CniResult, Dns, IpConfig, Route};
use cni::skel::{CmdArgs, NetnsPolicy, Plugin};

use crate::alloc;
use crate::config::{IpamConfig, RawNetConf};
use crate::error::{ConfigError, Error};
use crate::resolv;

/// CNI_ARGS key for a requested address.
pub const ARG_IP: &str = "IP";

/// The host-local plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostLocal;

fn load(args: &CmdArgs) -> Result<IpamConfig, CniError> {
    let raw: RawNetConf = args.plugin_conf()?;
    Ok(IpamConfig::load(raw, args.args.get(ARG_IP)).map_err(Error::from)?)
}

/// Routes are copied verbatim but must decode, so a bad route fails before any lease is taken.
fn routes(cfg: &IpamConfig) -> Result<Vec<Route>, CniError> {
    if cfg.routes.is_empty() {
        return Ok(Vec::new());
    }
    let v = serde_json::json!({"cniVersion": "1.1.0", "routes": cfg.routes});
    CniResult::from_value(&v, "1.1.0")
        .map(|r| r.routes)
        .map_err(|e| Error::from(ConfigError::Decode(format!("invalid routes: {}", e.msg))).into())
}

fn dns(cfg: &IpamConfig) -> Result<Dns, CniError> {
    let Some(path) = &cfg.resolv_conf else {
        return Ok(Dns::default());
    };
    let r = resolv::load(path).map_err(Error::from)?;
    Ok(Dns {
        nameservers: r.nameservers,
        domain: r.domain,
        search: r.search,
        options: r.options,
    })
}

impl Plugin for HostLocal {
    /// IPAM never enters CNI_NETNS: any value is accepted, as the reference does.
    fn netns_policy(&self) -> NetnsPolicy {
        NetnsPolicy::NotEntered
    }

    fn known_args(&self) -> &'static [&'static str] {
        &[ARG_IP]
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let cfg = load(args)?;
        // Everything that can fail on input alone is checked before the first lease is written.
        let routes = routes(&cfg)?;
        let dns = dns(&cfg)?;
        cni::trace::phase("config");
        let allocs = alloc::add(&cfg, &args.container_id, &args.ifname)?;
        cni::trace::phase("result");
        Ok(CniResult {
            cni_version: args.version.as_str().to_string(),
            interfaces: Vec::new(),
            ips: allocs
                .into_iter()
                .map(|a| IpConfig {
                    interface: None,
                    address: a.address,
                    gateway: Some(a.gateway),
                })
                .collect(),
            routes,
            dns,
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let cfg = load(args)?;
        alloc::del(&cfg, &args.container_id, &args.ifname)?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let cfg = load(args)?;
        alloc::check(&cfg, &args.container_id, &args.ifname)?;
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let cfg = load(args)?;
        let valid: Vec<(String, String)> = args
            .valid_attachments()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        alloc::gc(&cfg, &valid)?;
        Ok(())
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let cfg = load(args)?;
        alloc::status(&cfg)?;
        Ok(())
    }
}
