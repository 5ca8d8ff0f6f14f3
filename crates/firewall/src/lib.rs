//! Firewall: one trait, two backends (nftables through nftnl, iptables with the reference layout).
//!
//! [`Firewall`] is the masquerade half used by the `bridge` plugin's `ipMasq`
//! (cni-reference.md §2.2/§2.3); [`portmap::PortForward`] is the `portmap` plugin's port
//! forwarding (§2.6) in the same table ([`nft::hostport`]) or the reference iptables chains
//! ([`iptables_portmap`]).
//!
//! * [`nft`] — the default backend: one table `inet rcni` owned by the suite, changed by exactly one
//!   netlink transaction per call; a container address is one element of a named set, so the
//!   per-container cost of ADD does not grow with the number of containers (peers.md §3.4
//!   item 6). Never execs `nft`.
//! * [`iptables`] — reference-compatible chain layout (`CNI-<24 hex>` per network+container), for
//!   hosts whose other tooling expects it. Execs `iptables -w` / `ip6tables -w` with argument vectors.
//!
//! Every backend takes the flock on [`LOCK_PATH`] around its read-modify-write so that concurrent
//! plugin processes (parallel ADD/DEL is normal) never interleave.
//!
//! Port forwarding follows the same pattern in the same table: fixed rules created once and
//! recognized by their comment, per-container state as map elements whose DATA is the DNAT
//! target (never a verdict) and whose comment starts with the owner tag of
//! [`names::owner_tag`] (so DEL/GC need no prevResult), keyed reads on ADD, no deletion on the
//! ADD fast path, and the pure plan / encode split for unit tests.

mod cni_error;
pub mod forward;
pub mod iptables;
pub mod iptables_forward;
pub mod iptables_portmap;
mod lock;
pub mod macspoof;
pub mod names;
pub mod nft;
pub mod portmap;

use std::net::IpAddr;

pub use ipnet::IpNet;

/// Directory holding the suite's runtime firewall state (only the lock file today).
pub const RUN_DIR: &str = "/run/rcni";
/// flock taken around every read-modify-write of either backend.
pub const LOCK_PATH: &str = "/run/rcni/firewall.lock";

/// Errors of the firewall crate; each carries enough context to be shown to a CNI runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `ipMasqBackend` / `backend` named something we do not implement.
    #[error("unknown firewall backend {0:?} (expected \"nftables\" or \"iptables\")")]
    UnknownBackend(String),
    /// No backend is usable on this host.
    #[error("no usable firewall backend: nftables: {nft}; iptables: {ipt}")]
    NoBackend {
        /// why the nf_tables probe failed
        nft: String,
        /// why iptables is unusable
        ipt: String,
    },
    /// A caller-supplied value was rejected before any side effect.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// which field
        what: &'static str,
        /// the offending value
        value: String,
        /// why
        reason: &'static str,
    },
    /// A netlink exchange with nf_tables failed.
    #[error("nftables {op}: {source}")]
    Netlink {
        /// what we were doing
        op: String,
        /// the kernel's (or socket's) error
        #[source]
        source: std::io::Error,
    },
    /// A command could not be started.
    #[error("cannot run {cmd}: {source}")]
    Exec {
        /// program and arguments
        cmd: String,
        /// spawn error
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        /// program and arguments
        cmd: String,
        /// exit status
        status: String,
        /// its stderr, trimmed
        stderr: String,
    },
    /// The firewall lock could not be taken.
    #[error("firewall lock {path}: {source}")]
    Lock {
        /// lock file path
        path: String,
        /// underlying error
        #[source]
        source: std::io::Error,
    },
    /// CHECK found something missing or different.
    #[error("masquerade check failed: {0}")]
    Missing(String),
    /// macspoofchk CHECK found its rule or an element missing or owned by someone else.
    #[error("macspoofchk check failed: {0}")]
    SpoofCheck(String),
    /// A host port is already published by another attachment (portmap); names the owner.
    #[error("{0}")]
    Conflict(String),
    /// Several independent steps of a teardown failed (DEL never stops at the first error).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<Error>),
}

/// Which packet filter implementation programs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nf_tables over netlink, table `inet rcni` (the default).
    Nftables,
    /// `iptables`/`ip6tables` binaries with the reference plugins' chain layout.
    Iptables,
}

impl Backend {
    /// The configuration spelling (`ipMasqBackend` / portmap `backend`).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

/// Picks the backend: an explicit `"nftables"`/`"iptables"` wins (anything else is an error naming
/// it). Otherwise nftables when the kernel accepts an nf_tables netlink transaction, else
/// iptables. The probe never needs the iptables binary (plugins#1280: detection broke on hosts
/// without it).
pub fn choose_backend(explicit: Option<&str>) -> Result<Backend, Error> {
    match explicit {
        Some("nftables") => Ok(Backend::Nftables),
        Some("iptables") => Ok(Backend::Iptables),
        Some(other) => Err(Error::UnknownBackend(other.to_string())),
        None => match nft::probe() {
            Ok(()) => Ok(Backend::Nftables),
            Err(nft_err) => {
                if iptables_available() {
                    Ok(Backend::Iptables)
                } else {
                    Err(Error::NoBackend {
                        nft: nft_err.to_string(),
                        ipt: "iptables -t nat -S POSTROUTING did not succeed".to_string(),
                    })
                }
            }
        },
    }
}

/// True when the kernel accepts an (empty) nf_tables netlink transaction from this process.
pub fn nft_available() -> bool {
    nft::probe().is_ok()
}

/// True when `iptables -w -t nat -S POSTROUTING` runs successfully.
pub fn iptables_available() -> bool {
    iptables::available()
}

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

/// The implementation for `backend`.
pub fn firewall(backend: Backend) -> Box<dyn Firewall> {
    match backend {
        Backend::Nftables => Box::new(nft::NftFirewall::new()),
        Backend::Iptables => Box::new(iptables::IptablesFirewall::new()),
    }
}

/// Rejects owner strings that cannot be stored faithfully (NUL would truncate a C string,
/// empty values would make every attachment look alike). Called before any side effect.
pub(crate) fn validate_owner(network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
    let check = |what: &'static str, value: &str, max: usize| {
        if value.is_empty() {
            return Err(Error::Invalid {
                what,
                value: value.to_string(),
                reason: "must not be empty",
            });
        }
        if value.len() > max {
            return Err(Error::Invalid {
                what,
                value: value.to_string(),
                reason: "too long",
            });
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(Error::Invalid {
                what,
                value: value.to_string(),
                reason: "contains control characters",
            });
        }
        Ok(())
    };
    check("network name", network, 1024)?;
    check("container id", container_id, 1024)?;
    // IFNAMSIZ - 1 (spec: CNI_IFNAME is a Linux interface name).
    check("ifname", ifname, 15)
}

pub(crate) fn validate_rules(rules: &[MasqRule]) -> Result<(), Error> {
    for r in rules {
        validate_owner(&r.network, &r.container_id, &r.ifname)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_backend_wins_and_unknown_is_named() {
        assert_eq!(choose_backend(Some("nftables")).unwrap(), Backend::Nftables);
        assert_eq!(choose_backend(Some("iptables")).unwrap(), Backend::Iptables);
        let err = choose_backend(Some("firewalld")).unwrap_err();
        assert!(err.to_string().contains("\"firewalld\""), "{err}");
    }

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

    #[test]
    fn owner_validation() {
        assert!(validate_owner("net", "cid", "eth0").is_ok());
        assert!(validate_owner("", "cid", "eth0").is_err());
        assert!(validate_owner("net", "c\0id", "eth0").is_err());
        assert!(validate_owner("net", "cid", "a-very-long-ifname").is_err());
    }
}
