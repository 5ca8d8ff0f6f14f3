//! `host`: the sandbox shares the host's network namespace; report it, never modify it.
//!
//! # The netns rule, inverted
//! Every other plugin refuses a CNI_NETNS that is the plugin's own namespace (the skeleton's
//! guard, plugins#714): configuring it would reconfigure the host. For this plugin, sharing the
//! runtime's namespace *is* the request, so the rule is the opposite and explicit:
//! - the plugin opts out of the skeleton guard ([`NetnsPolicy::AllowAny`]);
//! - ADD and CHECK require CNI_NETNS to be the same namespace (device and inode) as the one the
//!   plugin runs in, and refuse anything else with code 8: a runtime that hands us a private
//!   namespace has mixed up network modes, and reporting the host's addresses for it would lie;
//! - no verb creates, changes or deletes anything, so DEL always succeeds (even when the path is
//!   gone) and `CNI_NETNS_OVERRIDE` is irrelevant.
//!
//! [`describe`] is shared with the `container` plugin, which reports another sandbox's namespace.

use cni::error::{codes, CniError, Context};
use cni::result::{CniResult, Interface, IpConfig};
use cni::skel::{CmdArgs, NetnsPolicy, Plugin};
use kernel::cni_error::open_netns;
use kernel::mac::format_mac;
use kernel::netlink::{Netlink, NetlinkOps};
use kernel::netns::NetNs;

/// The host-network plugin.
pub struct Host;

/// Describe every link of a namespace and its addresses (IPv6 link-local addresses omitted: they
/// are not reachable identities of the sandbox) as a CNI result whose interfaces carry `sandbox`.
pub fn describe(
    nl: &mut dyn NetlinkOps,
    sandbox: &str,
    version: &str,
) -> Result<CniResult, CniError> {
    let mut links = nl.links().context("failed to list links")?;
    links.sort_by_key(|l| l.index);
    let addrs = nl.addrs(None).context("failed to list addresses")?;
    let mut result = CniResult {
        cni_version: version.to_string(),
        ..Default::default()
    };
    for (pos, link) in links.iter().enumerate() {
        result.interfaces.push(Interface {
            name: link.name.clone(),
            mac: link.mac.map(|m| format_mac(&m)).unwrap_or_default(),
            sandbox: sandbox.to_string(),
            mtu: Some(link.mtu),
            ..Default::default()
        });
        for a in addrs.iter().filter(|a| a.index == link.index) {
            if let ipnet::IpNet::V6(v6) = a.addr {
                if v6.addr().segments()[0] & 0xffc0 == 0xfe80 {
                    continue;
                }
            }
            result.ips.push(IpConfig {
                interface: Some(pos),
                address: a.addr,
                gateway: None,
            });
        }
    }
    Ok(result)
}

/// Open CNI_NETNS and require it to be the namespace this process runs in.
fn host_netns(args: &CmdArgs) -> Result<NetNs, CniError> {
    let ns = open_netns(args.netns.as_deref())?;
    let own = NetNs::current().context("failed to open own netns")?;
    let same = ns.same_as(&own).context("failed to compare namespaces")?;
    if !same {
        return Err(CniError::new(
            codes::INVALID_NETNS,
            format!(
                "CNI_NETNS {} is not the host network namespace: the host plugin only attaches \
                 sandboxes that share the runtime's namespace",
                ns.path().display()
            ),
        ));
    }
    Ok(ns)
}

impl Plugin for Host {
    fn netns_policy(&self) -> NetnsPolicy {
        NetnsPolicy::AllowAny
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let ns = host_netns(args)?;
        let mut nl = Netlink::open().context("netlink")?;
        describe(
            &mut nl,
            &ns.path().display().to_string(),
            args.version.as_str(),
        )
    }

    fn del(&self, _args: &CmdArgs) -> Result<(), CniError> {
        // Nothing was created, so there is nothing to remove; never touch the host.
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        host_netns(args).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
