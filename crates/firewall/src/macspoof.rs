//! The bridge plugin's `macspoofchk` (cni-reference.md §2.1, §2.2 step 7): frames entering the
//! bridge from a container's host veth are dropped unless their source MAC is the container's.
//!
//! Always nftables (as the reference), in our own table `bridge rcni`; see [`crate::nft::macspoof`]
//! for the layout. Each call takes the flock on [`crate::LOCK_PATH`] and sends one netlink
//! transaction. Entries are found by owner (network, container id, ifname), so DEL needs
//! neither the veth name nor the MAC (DEL with an empty CNI_NETNS still cleans, unlike the
//! reference: plugins#810).

use std::path::Path;

use crate::{nft, Error, LOCK_PATH};

/// One protected attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoofEntry {
    /// CNI network name (config `name`).
    pub network: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// Host end of the veth pair (the bridge port the container's frames arrive on).
    pub host_veth: String,
    /// The container interface's MAC, the only source MAC allowed from that port.
    pub mac: [u8; 6],
}

/// Protects `entry.host_veth`: only `entry.mac` may be a source MAC there. Idempotent; a
/// port or pair still held by a stale owner is taken over.
pub fn add_macspoofchk(entry: &SpoofEntry) -> Result<(), Error> {
    nft::macspoof::add(Path::new(LOCK_PATH), entry)
}

/// Removes what this attachment added. Nothing there => Ok.
pub fn del_macspoofchk(network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
    nft::macspoof::del(Path::new(LOCK_PATH), network, container_id, ifname)
}

/// Err ([`Error::SpoofCheck`]) naming the first missing or foreign piece.
pub fn check_macspoofchk(entry: &SpoofEntry) -> Result<(), Error> {
    nft::macspoof::check(Path::new(LOCK_PATH), entry)
}

/// Removes every entry of `network` not owned by one of `keep` = (container id, ifname).
pub fn gc_macspoofchk(network: &str, keep: &[(String, String)]) -> Result<(), Error> {
    nft::macspoof::gc(Path::new(LOCK_PATH), network, keep)
}
