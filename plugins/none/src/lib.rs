//! `none` / `loopback`: bring `lo` up in the sandbox and report it; nothing else.
//!
//! Behaviour follows the reference `loopback` plugin (cni-reference.md §2.7): CNI_IFNAME is
//! ignored, a prevResult is passed through unchanged, DEL sets `lo` down and succeeds when the
//! namespace is already gone, CHECK fails when `lo` is down. The skeleton's netns guard runs before
//! us, so a stale CNI_NETNS that points at the runtime's own namespace can never down the host's
//! `lo` (plugins#714).

use cni::error::{codes, CniError};
use cni::result::{CniResult, Interface, IpConfig};
use cni::skel::{CmdArgs, Plugin};
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
        Err(e) => Err(CniError::new(
            codes::INVALID_NETNS,
            format!("failed to open netns {}: {e}", path.display()),
        )),
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
    Netlink::open_in(ns)
        .map_err(|e| CniError::internal(format!("netlink in {}: {e}", ns.path().display())))
}

fn loopback(nl: &mut Netlink) -> Result<kernel::netlink::Link, CniError> {
    nl.link_by_name("lo")
        .map_err(|e| CniError::internal(format!("failed to look up lo: {e}")))?
        .ok_or_else(|| CniError::internal("the namespace has no lo interface"))
}

impl Plugin for Loopback {
    /// The reference loopback ignores CNI_ARGS (no LoadArgs), so unknown keys are no error.
    fn reads_cni_args(&self) -> bool {
        false
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let ns = require_netns(args)?;
        let mut nl = netlink_in(&ns)?;
        let lo = loopback(&mut nl)?;
        nl.link_set_up(lo.index)
            .map_err(|e| CniError::internal(format!("failed to set lo up: {e}")))?;
        let addrs = nl
            .addrs(Some(lo.index))
            .map_err(|e| CniError::internal(format!("failed to list lo addresses: {e}")))?;
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
                sandbox: ns.path().display().to_string(),
                ..Default::default()
            }],
            ips,
            ..Default::default()
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        // DEL must succeed when the runtime already removed the namespace (spec §1.3).
        let Some(ns) = open_netns(args)? else {
            return Ok(());
        };
        let mut nl = netlink_in(&ns)?;
        let lo = loopback(&mut nl)?;
        nl.link_set_down(lo.index)
            .map_err(|e| CniError::internal(format!("failed to set lo down: {e}")))
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let ns = require_netns(args)?;
        let mut nl = netlink_in(&ns)?;
        if !loopback(&mut nl)?.up {
            return Err(CniError::internal("loopback interface is down"));
        }
        Ok(())
    }
}
