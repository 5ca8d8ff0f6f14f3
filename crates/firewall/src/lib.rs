//! Firewall: per feature one trait with two backends, nftables through netlink (the default)
//! and iptables with the reference plugins' layout (the firewall layer of the suite).
//!
//! One folder per feature, each holding the feature's trait and types (`mod.rs`), its
//! nftables half (`nft.rs`, a pure planner of operations plus the reads it needs) and its
//! iptables half (`iptables.rs`):
//!
//! * [`masquerade`] — the bridge plugin's `ipMasq` (the reference bridge plugin's `ipMasq`);
//! * [`portmap`] — the portmap plugin's host-port forwarding;
//! * [`forward`] — the firewall meta plugin's forward-filter accept rules;
//! * [`macspoof`] — the bridge plugin's `macspoofchk` (nftables only, as the reference).
//!
//! Shared infrastructure: `nft` (the netlink transport, reader and the only unsafe nftnl
//! code), `iptables` (the command layer that execs `iptables -w` / `ip6tables -w` with argument
//! vectors), [`names`] (owner tags and comments) and [`list`] (what an owner has, for `netns
//! show` and GC). The backends are private: callers get a `Box<dyn Trait>` from a factory,
//! which also assembles the cross-backend pieces (the forward feature's iptables fallback for a
//! Docker FORWARD policy of DROP), so no backend imports the other.
//!
//! nftables keeps everything in one table owned by the suite, `inet rcni` (plus `bridge rcni`
//! for macspoofchk), changed by exactly one netlink transaction per call; a container is one
//! element of a named set or data map whose comment starts with the owner tag of
//! [`names::owner_tag`], so the per-container cost does not grow with the number of containers
//! (netavark's firewall teaches the same) and DEL/GC need no prevResult. Every backend takes the flock on
//! [`LOCK_PATH`] around its read-modify-write so that concurrent plugin processes never
//! interleave.

mod cni_error;
mod entry;
pub mod forward;
pub(crate) mod iptables;
pub mod list;
mod lock;
pub mod macspoof;
pub mod masquerade;
pub mod names;
pub(crate) mod nft;
pub mod portmap;
mod switch;

use std::net::IpAddr;

pub use ipnet::IpNet;
pub use masquerade::{firewall, Firewall, MasqRule};

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
    /// A state record of the firewall (under [`RUN_DIR`]) could not be written.
    #[error("firewall state {path}: {source}")]
    State {
        /// file or directory
        path: String,
        /// underlying error
        #[source]
        source: std::io::Error,
    },
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

    /// The other backend (DEL and GC also clean there: see `switch`).
    pub fn other(self) -> Backend {
        match self {
            Backend::Nftables => Backend::Iptables,
            Backend::Iptables => Backend::Nftables,
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

/// IP family of an address, a rule, a set or a command: the one family type of the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4: `ip` in nft, `iptables`
    V4,
    /// IPv6: `ip6` in nft, `ip6tables`
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// Family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    /// nft keyword of the network header (`ip`, `ip6`).
    pub fn kw(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    /// The iptables binary for this family.
    pub fn prog(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
    /// NFPROTO_* of the family (`meta nfproto`).
    pub fn nfproto(self) -> u8 {
        match self {
            Family::V4 => libc::NFPROTO_IPV4 as u8,
            Family::V6 => libc::NFPROTO_IPV6 as u8,
        }
    }
    /// Multicast destinations never masqueraded (reference: `! -d 224.0.0.0/4` / `ff00::/8`).
    pub fn multicast(self) -> IpNet {
        match self {
            Family::V4 => IpNet::V4(ipnet::Ipv4Net::new_assert([224, 0, 0, 0].into(), 4)),
            Family::V6 => IpNet::V6(ipnet::Ipv6Net::new_assert(
                [0xff00, 0, 0, 0, 0, 0, 0, 0].into(),
                8,
            )),
        }
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
    fn owner_validation() {
        assert!(validate_owner("net", "cid", "eth0").is_ok());
        assert!(validate_owner("", "cid", "eth0").is_err());
        assert!(validate_owner("net", "c\0id", "eth0").is_err());
        assert!(validate_owner("net", "cid", "a-very-long-ifname").is_err());
    }
}
