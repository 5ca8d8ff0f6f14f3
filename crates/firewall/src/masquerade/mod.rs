//! Masquerade, the bridge plugin's `ipMasq` (the reference bridge plugin's `ipMasq`): traffic from a
//! container address is masqueraded unless its destination is in the container's subnet or
//! multicast.
//!
//! * [`nft`] (default) — table `inet rcni`: a container address is one element of set
//!   `masq4`/`masq6`, a subnet one exemption rule.
//! * [`iptables`] — the reference layout: a `CNI-<24 hex>` chain per (network, container).

pub(crate) mod iptables;
pub mod nft;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::switch::Switch;
use crate::{Backend, Error};

/// One masqueraded container address, owned by the attachment (network, container id, ifname).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqRule {
    /// CNI network name (config `name`).
    pub network: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// Container address WITH its prefix, e.g. `10.22.0.5/24`: traffic from 10.22.0.5 is
    /// masqueraded unless its destination is in 10.22.0.0/24 or multicast.
    pub addr: IpNet,
}

impl MasqRule {
    /// The container's own address.
    pub fn ip(&self) -> IpAddr {
        self.addr.addr()
    }

    /// The container subnet (host bits cleared).
    pub fn subnet(&self) -> IpNet {
        self.addr.trunc()
    }
}

/// Operations every backend provides. Each call is atomic towards other plugin processes (flock)
/// and, for nftables, towards the kernel (one transaction).
pub trait Firewall {
    /// Masquerades every address of `rules` (one transaction; idempotent for the same owner; an
    /// address still claimed by a stale owner is taken over).
    fn add_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error>;
    /// Removes what this attachment added, without needing its addresses (DEL with no netns and
    /// no prevResult must still clean: plugins#810). Nothing there => Ok.
    fn del_masquerade(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error>;
    /// Err naming the first missing or different piece.
    fn check_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error>;
    /// Removes every entry of `network` not owned by one of `keep` = (container id, ifname).
    fn gc_masquerade(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error>;
}

fn backend_impl(backend: Backend) -> Box<dyn Firewall> {
    match backend {
        Backend::Nftables => Box::new(nft::NftMasquerade::new()),
        Backend::Iptables => Box::new(iptables::IptablesMasquerade::new()),
    }
}

/// The implementation for `backend`; DEL and GC also clean what the other backend holds for
/// the owner (see `crate::switch`), so a host whose backend changed since ADD leaks nothing.
pub fn firewall(backend: Backend) -> Box<dyn Firewall> {
    Box::new(Switched {
        primary: backend_impl(backend),
        other: backend_impl(backend.other()),
        switch: Switch::new(backend, "masquerade"),
    })
}

struct Switched {
    primary: Box<dyn Firewall>,
    other: Box<dyn Firewall>,
    switch: Switch,
}

impl Firewall for Switched {
    fn add_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        self.primary.add_masquerade(rules)?;
        for r in rules {
            self.switch.added(&r.network, &r.container_id, &r.ifname)?;
        }
        Ok(())
    }

    fn del_masquerade(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
        self.switch.del(
            network,
            container_id,
            ifname,
            || self.primary.del_masquerade(network, container_id, ifname),
            || self.other.del_masquerade(network, container_id, ifname),
        )
    }

    fn check_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        self.primary.check_masquerade(rules)
    }

    fn gc_masquerade(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        self.switch.gc(
            network,
            keep,
            || self.primary.gc_masquerade(network, keep),
            || self.other.gc_masquerade(network, keep),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masq_rule_subnet_clears_host_bits() {
        let r = MasqRule {
            network: "n".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            addr: "10.22.0.5/24".parse().unwrap(),
        };
        assert_eq!(r.subnet().to_string(), "10.22.0.0/24");
        assert_eq!(r.ip().to_string(), "10.22.0.5");
    }
}
