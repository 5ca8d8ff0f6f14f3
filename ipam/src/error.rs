//! Errors of the host-local IPAM, with the reference plugin's messages.
//!
//! Messages are kept word for word where the reference's are known, because users grep logs and
//! runtimes surface `msg` verbatim. Codes differ on purpose in one place: the reference reports
//! everything as 999 ("internal"); we report configuration and request problems as 7 ("invalid
//! network config", CNI_ARGS as 4) so a runtime or operator can tell "fix your config" from
//! "the allocator failed" without parsing text. Allocation-state failures keep 999.

use std::net::IpAddr;
use std::path::PathBuf;

/// A problem in the configuration or in the requested addresses; nothing was written.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The plugin config has no `ipam` object.
    #[error("IPAM config missing 'ipam' key")]
    MissingIpam,
    /// Neither `subnet`, `ranges` nor `runtimeConfig.ipRanges` is given.
    #[error("no IP ranges specified")]
    NoRanges,
    /// A range without `subnet`.
    #[error("range is missing its subnet")]
    MissingSubnet,
    /// `subnet` is not a CIDR.
    #[error("invalid CIDR address: {0}")]
    InvalidCidr(String),
    /// `rangeStart`/`rangeEnd`/`gateway` is not an address.
    #[error("invalid IP address: {0}")]
    InvalidIp(String),
    /// A subnet with fewer than two host bits.
    #[error("Network {0} too small to allocate from")]
    TooSmall(String),
    /// The subnet address is not the network address.
    #[error(
        "Network has host bits set. For a subnet mask of length {prefix} the network address is {network}"
    )]
    HostBits {
        /// Prefix length.
        prefix: u8,
        /// The network address the user probably meant.
        network: IpAddr,
    },
    /// `rangeStart` outside the subnet (or after `rangeEnd`).
    #[error("RangeStart {0} not in network {1}")]
    StartNotInNetwork(IpAddr, String),
    /// `rangeEnd` outside the subnet (or before `rangeStart`).
    #[error("RangeEnd {0} not in network {1}")]
    EndNotInNetwork(IpAddr, String),
    /// A range set with no range.
    #[error("empty range set")]
    EmptyRangeSet,
    /// IPv4 and IPv6 ranges in one set.
    #[error("mixed address families")]
    MixedFamilies,
    /// Two ranges of one set overlap.
    #[error("subnets {0} and {1} overlap")]
    SubnetsOverlap(String, String),
    /// A range set failed validation.
    #[error("invalid range set {idx}: {source}")]
    InvalidRangeSet {
        /// Index of the set after the legacy range and `ipRanges` were prepended.
        idx: usize,
        /// What is wrong with it.
        source: Box<ConfigError>,
    },
    /// Two range sets overlap.
    #[error("range set {0} overlaps with {1}")]
    SetsOverlap(usize, usize),
    /// Spec 0.1.0/0.2.0 results carry one address per family.
    #[error("CNI version {0} does not support more than 1 address per family")]
    TooManyPerFamily(String),
    /// `args.cni.ips` or `runtimeConfig.ips` entry that is not an address.
    #[error("invalid IP address {0}")]
    InvalidRequestedIp(String),
    /// CNI_ARGS `IP=` value that is not an address.
    #[error("ARGS: error parsing value of pair \"IP={0}\": invalid IP address {0}")]
    InvalidArgsIp(String),
    /// A requested address equal to its range's gateway.
    #[error("failed to allocate for range {idx}: requested ip {ip} is subnet's gateway")]
    RequestedGateway {
        /// Range set index.
        idx: usize,
        /// The requested address.
        ip: IpAddr,
    },
    /// Requested addresses that no range set can hold.
    #[error("failed to allocate all requested IPs: {}", join_ips(.0))]
    RequestedUnused(Vec<IpAddr>),
    /// The config does not decode (wrong JSON types, bad route).
    #[error("{0}")]
    Decode(String),
    /// `resolvConf` cannot be read.
    #[error("open {path}: {reason}")]
    ResolvConf {
        /// The configured path.
        path: String,
        /// Why it failed.
        reason: String,
    },
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every failure of the host-local IPAM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration or request (code 7, CNI_ARGS problems code 4).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file-system operation on the data directory failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The (container, ifname) already owns an address in this set (plugins#327).
    #[error(
        "failed to allocate for range {idx}: {ip} has been allocated to {cid}, duplicate allocation is not allowed"
    )]
    Duplicate {
        /// Range set index.
        idx: usize,
        /// The address already leased.
        ip: IpAddr,
        /// Container ID.
        cid: String,
    },
    /// A requested address is leased already.
    #[error(
        "failed to allocate for range {idx}: requested IP address {ip} is not available in range set {set}"
    )]
    RequestedTaken {
        /// Range set index.
        idx: usize,
        /// The requested address.
        ip: IpAddr,
        /// The set, printed as `start-end[,start-end]`.
        set: String,
    },
    /// Every address of a set is leased.
    #[error("failed to allocate for range {idx}: no IP addresses available in range set: {set}")]
    Exhausted {
        /// Range set index.
        idx: usize,
        /// The set, printed as `start-end[,start-end]`.
        set: String,
    },
    /// CHECK found no lease for the container.
    #[error("host-local: Failed to find address added by container {0}")]
    NotFound(String),
    /// STATUS: a set has no free address (code 50).
    #[error("no IP addresses available in range set: {0}")]
    StatusExhausted(String),
    /// GC could not remove some leases; it still removed the others.
    #[error("failed to release some leases: {}", .0.join("; "))]
    Gc(Vec<String>),
}

impl Error {
    /// The CNI error code for this failure (see the module comment for why not always 999).
    pub fn code(&self) -> u32 {
        match self {
            Error::Config(ConfigError::InvalidArgsIp(_)) => cni::error::codes::INVALID_ENV,
            Error::Config(_) => cni::error::codes::INVALID_CONFIG,
            Error::StatusExhausted(_) => cni::error::codes::NOT_AVAILABLE,
            _ => cni::error::codes::INTERNAL,
        }
    }

    /// Shorthand for an I/O error with context.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

impl From<Error> for cni::error::CniError {
    fn from(e: Error) -> Self {
        cni::error::CniError::new(e.code(), e.to_string())
    }
}
