//! Forward-filter accept rules of the `firewall` meta plugin (the reference `firewall` plugin's): let a
//! container's traffic through the host's forward hook, and optionally isolate bridges from
//! each other (`ingressPolicy`).
//!
//! * `iptables` — the reference layout in table `filter` (`CNI-FORWARD` jumped
//!   to from `FORWARD`, `CNI-ADMIN` for administrator overrides, two accept rules per address,
//!   `CNI-ISOLATION-STAGE-1/2` for ingress policies).
//! * [`nft`] — the same semantics in our table `inet rcni`: a `forward` filter
//!   base chain whose fixed rules accept by lookup in two address sets, so a container costs one
//!   set element per address whatever the number of containers.
//!
//! nftables evaluates every base chain registered on a hook, and a packet survives only if none
//! of them drops it: our accept does not override an iptables `FORWARD` policy of DROP (Docker
//! sets one) in table `ip filter`. The nftables backend therefore lists the base chains on the
//! forward hook (netlink, chain metadata only; `iptables -S FORWARD` is exec'd only when a
//! legacy x_tables filter table exists) and, when iptables' FORWARD policy is DROP, also installs
//! the reference-layout iptables accept rules for the container's addresses. Drop policies of
//! other nftables tables cannot be overridden by anyone; they are named in the notes that
//! [`ForwardFirewall::add_forward`] returns for the plugin to log.
//!
//! Ownership: the nftables elements carry the owner comment of [`crate::names::owner_comment`];
//! the iptables rules keep the reference layout (no comment) and their owner is recorded in a
//! small state file `/run/rcni/forward/<owner tag>` (one address per line), so DEL without
//! prevResult and GC work for both backends.

pub(crate) mod iptables;
pub mod nft;

use std::net::IpAddr;

pub use iptables::{validate_chain_name, DEFAULT_ADMIN_CHAIN};

use crate::switch::both;
use crate::{Backend, Error, Family};

/// `ingressPolicy`: which traffic may enter the bridge's containers from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IngressPolicy {
    /// no restriction (default)
    #[default]
    Open,
    /// traffic from other isolated bridges is dropped
    SameBridge,
    /// like same-bridge, and traffic between containers of the same bridge is dropped too
    Isolated,
}

impl IngressPolicy {
    /// Parses the config spelling (empty = open, as the reference does).
    pub fn parse(s: &str) -> Result<IngressPolicy, Error> {
        match s {
            "" | "open" => Ok(IngressPolicy::Open),
            "same-bridge" => Ok(IngressPolicy::SameBridge),
            "isolated" => Ok(IngressPolicy::Isolated),
            _ => Err(Error::Invalid {
                what: "ingressPolicy",
                value: s.to_string(),
                reason: "expected \"open\", \"same-bridge\" or \"isolated\"",
            }),
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IngressPolicy::Open => "open",
            IngressPolicy::SameBridge => "same-bridge",
            IngressPolicy::Isolated => "isolated",
        }
    }
}

/// The addresses of one attachment (network, container id, ifname).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAttachment {
    /// CNI network name.
    pub network: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// Container addresses (from prevResult `ips`).
    pub ips: Vec<IpAddr>,
}

/// Operations of both backends; each call holds the firewall flock for its read-modify-write.
pub trait ForwardFirewall {
    /// Accepts forwarded traffic from and (established/related) to every address. Idempotent.
    /// Returns notes worth logging (e.g. that iptables rules were added as well).
    fn add_forward(&self, att: &ForwardAttachment) -> Result<Vec<String>, Error>;
    /// Removes what `add_forward` created for this owner; `known_ips` (prevResult, may be empty)
    /// are removed too. Nothing there => Ok.
    fn del_forward(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        known_ips: &[IpAddr],
    ) -> Result<(), Error>;
    /// Err naming the first missing piece.
    fn check_forward(&self, att: &ForwardAttachment) -> Result<(), Error>;
    /// Removes every entry of `network` whose owner is not in `keep` = (container id, ifname).
    fn gc_forward(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error>;
    /// Installs the isolation rules of `bridge` (the plugin never removes them, like the
    /// reference; see [`ForwardFirewall::del_isolation`]); `v4`/`v6`
    /// select the families (iptables) the attachment uses. `Open` does nothing.
    fn add_isolation(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        v4: bool,
        v6: bool,
    ) -> Result<(), Error>;
    /// Removes every isolation rule of `bridge` (any policy, both families); the chains and
    /// the jump into them stay (other bridges share them). Nothing there => Ok. The `firewall`
    /// plugin never calls it (the reference keeps the rules); a runtime that owns the bridge's
    /// whole life (sandboxd's Docker driver) calls it when it deletes the bridge.
    fn del_isolation(&self, bridge: &str) -> Result<(), Error>;
    /// Err when the isolation rules of `bridge` are missing.
    fn check_isolation(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        v4: bool,
        v6: bool,
    ) -> Result<(), Error>;
}

/// What the nftables half needs from the iptables half when iptables' FORWARD policy is DROP
/// (Docker): accept rules in the reference layout, recorded per owner. The factory hands the
/// iptables backend to the nftables one through this trait, so neither imports the other.
/// Every method runs with the firewall lock already held by the caller.
pub(crate) trait DropFallback {
    /// The chain the fallback rules go to (for the notes).
    fn chain(&self) -> &'static str;
    /// Whether `fam`'s legacy iptables FORWARD chain has policy DROP.
    fn policy_drops(&self, fam: Family) -> bool;
    /// Whether fallback rules were recorded for this owner.
    fn has_state(&self, network: &str, container_id: &str, ifname: &str) -> bool;
    /// Adds the accept rules of `att`'s addresses and records them.
    fn add_locked(&self, att: &ForwardAttachment) -> Result<(), Error>;
    /// Removes what [`DropFallback::add_locked`] recorded for this owner (and `known_ips`).
    fn del_locked(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        known_ips: &[IpAddr],
    ) -> Result<(), Error>;
    /// Err naming the first missing rule.
    fn check_locked(&self, att: &ForwardAttachment) -> Result<(), Error>;
    /// Removes the records (and rules) of `network` whose owner is not in `keep`.
    fn gc_locked(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error>;
}

/// The implementation for `backend`; `admin_chain` is `iptablesAdminChainName` (the reference
/// default is [`DEFAULT_ADMIN_CHAIN`]). For nftables it assembles the iptables fallback for a
/// FORWARD policy of DROP.
pub fn forward_firewall(
    backend: Backend,
    admin_chain: &str,
) -> Result<Box<dyn ForwardFirewall>, Error> {
    validate_chain_name(admin_chain)?;
    let nft = || nft::NftForward::new(Box::new(iptables::IptablesForward::new(admin_chain)));
    Ok(match backend {
        // The nftables half already removes its iptables fallback rules through their record.
        Backend::Nftables => Box::new(nft()),
        // An iptables DEL/GC also cleans what an nftables ADD left (the host's backend changed).
        Backend::Iptables => Box::new(Switched {
            primary: iptables::IptablesForward::new(admin_chain),
            other: nft(),
        }),
    })
}

/// The iptables backend, whose DEL and GC also clean nftables when the kernel has it.
struct Switched {
    primary: iptables::IptablesForward,
    other: nft::NftForward,
}

impl ForwardFirewall for Switched {
    fn add_forward(&self, att: &ForwardAttachment) -> Result<Vec<String>, Error> {
        self.primary.add_forward(att)
    }
    fn del_forward(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        known_ips: &[IpAddr],
    ) -> Result<(), Error> {
        let primary = self
            .primary
            .del_forward(network, container_id, ifname, known_ips);
        let other = crate::nft_available().then(|| {
            self.other
                .del_forward(network, container_id, ifname, known_ips)
        });
        both(primary, other)
    }
    fn check_forward(&self, att: &ForwardAttachment) -> Result<(), Error> {
        self.primary.check_forward(att)
    }
    fn gc_forward(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        let primary = self.primary.gc_forward(network, keep);
        let other = crate::nft_available().then(|| self.other.gc_forward(network, keep));
        both(primary, other)
    }
    fn add_isolation(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        v4: bool,
        v6: bool,
    ) -> Result<(), Error> {
        self.primary.add_isolation(bridge, policy, v4, v6)
    }
    fn del_isolation(&self, bridge: &str) -> Result<(), Error> {
        let primary = self.primary.del_isolation(bridge);
        let other = crate::nft_available().then(|| self.other.del_isolation(bridge));
        both(primary, other)
    }
    fn check_isolation(
        &self,
        bridge: &str,
        policy: IngressPolicy,
        v4: bool,
        v6: bool,
    ) -> Result<(), Error> {
        self.primary.check_isolation(bridge, policy, v4, v6)
    }
}

/// Validates a bridge (interface) name before it reaches a rule or a command line.
pub(crate) fn validate_bridge(name: &str) -> Result<(), Error> {
    let bad = |reason| Error::Invalid {
        what: "bridge name",
        value: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 15 {
        return Err(bad("must be 1 to 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("must not be . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control() || c == '"')
    {
        return Err(bad("contains characters not allowed in an interface name"));
    }
    if name.starts_with('-') || name.starts_with('!') {
        return Err(bad("must not start with - or !"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_policy_spellings() {
        assert_eq!(IngressPolicy::parse("").unwrap(), IngressPolicy::Open);
        assert_eq!(
            IngressPolicy::parse("same-bridge").unwrap(),
            IngressPolicy::SameBridge
        );
        assert_eq!(
            IngressPolicy::parse("isolated").unwrap().as_str(),
            "isolated"
        );
        let e = IngressPolicy::parse("closed").unwrap_err();
        assert!(e.to_string().contains("\"closed\""), "{e}");
    }

    #[test]
    fn bridge_names() {
        assert!(validate_bridge("cni-podman0").is_ok());
        for bad in ["", "a/b", "a b", "-j", "x".repeat(16).as_str(), ".."] {
            assert!(validate_bridge(bad).is_err(), "{bad:?}");
        }
    }
}
