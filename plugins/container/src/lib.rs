//! `container`: join another sandbox's network namespace; report it, never tear it down.
//!
//! Config key `target` is the path of the owner's network namespace (e.g. `/run/netns/owner`).
//! The runtime gives the joiner the same namespace as CNI_NETNS; ADD verifies that (same device
//! and inode) and reports the owner's interfaces and addresses as the kernel has them. Nothing is
//! created, so DEL removes nothing: the owner keeps working after every joiner has left.
//!
//! Error codes, and why:
//! - `target` missing from the config or not absolute: 7 (invalid network config).
//! - the target path does not exist: 11 (try again later). Not 3 ("container unknown"), which
//!   tells the runtime it need not call DEL; the joiner's own sandbox may exist and the runtime
//!   must still DEL it. The usual cause is an owner that is not running (yet), which a retry can
//!   cure, as in Docker's "cannot join network of a non running container".
//! - the target is not a network namespace: 7 (the config points at the wrong file).
//! - CNI_NETNS is another namespace than the target: 8 (invalid netns), as the Go libraries use.

use cni::error::{codes, CniError, Context};
use cni::result::CniResult;
use cni::skel::{CmdArgs, Plugin};
use kernel::cni_error::open_netns;
use kernel::netlink::Netlink;
use kernel::netns::NetNs;
use serde::Deserialize;

/// The join-another-sandbox plugin.
pub struct Container;

/// The plugin's own configuration keys (public so the config fuzz target can decode it).
#[derive(Debug, Deserialize)]
pub struct ContainerConf {
    /// Path of the owner sandbox's network namespace.
    pub target: Option<String>,
}

/// Open the target namespace and require CNI_NETNS to be the same namespace.
fn joined_netns(args: &CmdArgs) -> Result<NetNs, CniError> {
    let conf: ContainerConf = args.plugin_conf()?;
    let target = conf.target.filter(|t| !t.is_empty()).ok_or_else(|| {
        CniError::new(
            codes::INVALID_CONFIG,
            "missing \"target\": the path of the owner's network namespace",
        )
    })?;
    if !target.starts_with('/') {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            format!("\"target\" must be an absolute path, got {target:?}"),
        ));
    }
    let owner = NetNs::open(std::path::Path::new(&target)).map_err(|e| {
        if e.is_not_found() {
            CniError::new(
                codes::TRY_AGAIN,
                format!("target network namespace {target} does not exist (is the owner sandbox running?)"),
            )
        } else {
            CniError::new(codes::INVALID_CONFIG, format!("target {target}: {e}"))
        }
    })?;
    let joiner = open_netns(args.netns.as_deref())?;
    let same = joiner
        .same_as(&owner)
        .context("failed to compare namespaces")?;
    if !same {
        return Err(CniError::new(
            codes::INVALID_NETNS,
            format!(
                "CNI_NETNS {} is not the target namespace {target}: a joiner must be given the owner's namespace",
                joiner.path().display()
            ),
        ));
    }
    Ok(owner)
}

impl Plugin for Container {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let owner = joined_netns(args)?;
        let mut nl = Netlink::open_in(&owner).context("netlink in target namespace")?;
        let sandbox = args
            .netns
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        host::describe(&mut nl, &sandbox, args.version.as_str())
    }

    fn del(&self, _args: &CmdArgs) -> Result<(), CniError> {
        // The owner's interfaces belong to the owner: leaving never touches them.
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        joined_netns(args).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
