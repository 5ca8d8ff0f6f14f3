//! The bridge plugin's `macspoofchk` (the reference bridge plugin's `macspoofchk`): frames entering the
//! bridge from a container's host veth are dropped unless their source MAC is the container's.
//!
//! Always nftables (as the reference), in our own table `bridge rcni`; see [`nft`] for the
//! layout. Each call takes the flock on [`crate::LOCK_PATH`] and sends one netlink
//! transaction. Entries are found by owner (network, container id, ifname), so DEL needs
//! neither the veth name nor the MAC (DEL with an empty CNI_NETNS still cleans, unlike the
//! reference: plugins#810).

pub mod nft;

use crate::Error;

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

/// The operations of macspoofchk, like the other features' traits. Each call takes the
/// firewall flock and sends one netlink transaction.
pub trait MacSpoofCheck {
    /// Protects `entry.host_veth`: only `entry.mac` may be a source MAC there. Idempotent; a
    /// port or pair still held by a stale owner is taken over.
    fn add_macspoofchk(&self, entry: &SpoofEntry) -> Result<(), Error>;
    /// Removes what this attachment added. Nothing there => Ok.
    fn del_macspoofchk(&self, network: &str, container_id: &str, ifname: &str)
        -> Result<(), Error>;
    /// Err ([`Error::SpoofCheck`]) naming the first missing or foreign piece.
    fn check_macspoofchk(&self, entry: &SpoofEntry) -> Result<(), Error>;
    /// Removes every entry of `network` not owned by one of `keep` = (container id, ifname).
    fn gc_macspoofchk(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error>;
}

/// The implementation (nftables only, as the reference).
pub fn mac_spoof_check() -> Box<dyn MacSpoofCheck> {
    Box::new(nft::NftMacSpoof::new())
}
