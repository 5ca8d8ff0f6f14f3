//! `none` / `loopback`: bring `lo` up in the sandbox and report it; nothing else.
//!
//! Behaviour follows the reference `loopback` plugin: CNI_IFNAME is
//! ignored, a prevResult is passed through unchanged, DEL sets `lo` down and succeeds when the
//! namespace is already gone, CHECK fails when `lo` is down. The skeleton's netns guard runs before
//! us, so a stale CNI_NETNS that points at the runtime's own namespace can never down the host's
//! `lo` (plugins#714).

use cni::error::{codes, CniError, Context};
use cni::result::{CniResult, Interface, IpConfig};
use cni::skel::{CmdArgs, Plugin};
use kernel::cni_error::netns_error;
use kernel::netlink::{Netlink, NetlinkOps};
use kernel::netns::NetNs;

/// The loopback-only plugin, shipped as both `none` and `loopback`.
pub struct Loopback;

/// Open CNI_NETNS; `Ok(None)` when it is unset or no longer exists (only acceptable for DEL).
fn open_netns(args: &CmdArgs) -> Result<Option<NetNs>, CniError> {
    let Some(path) = args.netns.as_deref() else {
        return Ok(None);
    };
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(netns_error(path, e)),
    }
}

fn require_netns(args: &CmdArgs) -> Result<NetNs, CniError> {
    open_netns(args)?.ok_or_else(|| {
        CniError::new(
            codes::INVALID_NETNS,
            format!(
                "failed to open netns {}: no such file or directory",
                args.netns
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            ),
        )
    })
}

fn netlink_in(ns: &NetNs) -> Result<Netlink, CniError> {
    Netlink::open_in(ns).context(format!("netlink in {}", ns.path().display()))
}

fn loopback(nl: &mut dyn NetlinkOps) -> Result<kernel::netlink::Link, CniError> {
    nl.link_by_name("lo")
        .context("failed to look up lo")?
        .ok_or_else(|| CniError::internal("the namespace has no lo interface"))
}

/// ADD on a socket in the sandbox (`sandbox` is its path, for the result): `lo` up, reported
/// with its loopback addresses, or the prevResult passed through.
fn add_on(nl: &mut dyn NetlinkOps, sandbox: &str, args: &CmdArgs) -> Result<CniResult, CniError> {
    let lo = loopback(nl)?;
    nl.link_set_up(lo.index).context("failed to set lo up")?;
    let addrs = nl
        .addrs(Some(lo.index))
        .context("failed to list lo addresses")?;
    if let Some(bad) = addrs.iter().find(|a| !a.addr.addr().is_loopback()) {
        return Err(CniError::internal(format!(
            "lo has a non-loopback address {}",
            bad.addr
        )));
    }
    if let Some(prev) = args.prev_result()? {
        return Ok(prev);
    }
    let mut ips: Vec<IpConfig> = addrs
        .iter()
        .map(|a| IpConfig {
            interface: Some(0),
            address: a.addr,
            gateway: None,
        })
        .collect();
    // IPv4 first, like the reference result.
    ips.sort_by_key(|ip| ip.address.addr().is_ipv6());
    Ok(CniResult {
        cni_version: args.version.as_str().to_string(),
        interfaces: vec![Interface {
            name: "lo".into(),
            mac: "00:00:00:00:00:00".into(),
            sandbox: sandbox.to_string(),
            ..Default::default()
        }],
        ips,
        ..Default::default()
    })
}

/// DEL on a socket in the sandbox: `lo` down.
fn del_on(nl: &mut dyn NetlinkOps) -> Result<(), CniError> {
    let lo = loopback(nl)?;
    nl.link_set_down(lo.index).context("failed to set lo down")
}

/// CHECK on a socket in the sandbox: `lo` must be up.
fn check_on(nl: &mut dyn NetlinkOps) -> Result<(), CniError> {
    if !loopback(nl)?.up {
        return Err(CniError::internal("loopback interface is down"));
    }
    Ok(())
}

impl Plugin for Loopback {
    /// The reference loopback ignores CNI_ARGS (no LoadArgs), so unknown keys are no error.
    fn reads_cni_args(&self) -> bool {
        false
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let ns = require_netns(args)?;
        add_on(
            &mut netlink_in(&ns)?,
            &ns.path().display().to_string(),
            args,
        )
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        // DEL must succeed when the runtime already removed the namespace (the spec's DEL rules).
        let Some(ns) = open_netns(args)? else {
            return Ok(());
        };
        del_on(&mut netlink_in(&ns)?)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let ns = require_netns(args)?;
        check_on(&mut netlink_in(&ns)?)
    }
}

#[cfg(test)]
mod tests;
