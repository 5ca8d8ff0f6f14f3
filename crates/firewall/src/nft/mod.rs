//! nftables backend (the default): everything lives in one table owned by the suite,
//! `inet rcni`, changed by exactly one netlink transaction per call, never by exec'ing `nft`.
//!
//! Layout (as `nft list table inet rcni` prints it):
//!
//! ```text
//! table inet rcni {
//!     map masq4 { type ipv4_addr : verdict
//!         elements = { 10.22.0.5 comment "<nethash>-<ownerhash> net: n, id: c1, if: eth0"
//!                          : jump masq_<nethash>_10_22_0_0_nm24 } }
//!     map masq6 { type ipv6_addr : verdict }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr vmap @masq4
//!         ip6 saddr vmap @masq6
//!     }
//!     chain masq_<nethash>_10_22_0_0_nm24 {      # one per (network, subnet)
//!         ip daddr 10.22.0.0/24 return
//!         ip daddr 224.0.0.0/4 return
//!         masquerade
//!     }
//! }
//! ```
//!
//! * `<nethash>` = 16 hex of sha512(network); `<ownerhash>` = 16 hex of
//!   sha512(container id, NUL, ifname). The element comment starts with that owner tag, so DEL
//!   (even with no netns and no prevResult, plugins#810) and GC find an attachment's addresses by
//!   dumping only our two maps.
//! * ADD is O(1) in the number of containers: the table, maps and base chain are created without
//!   NLM_F_EXCL (idempotent, safe when plugin processes race), the base chain and the
//!   per-subnet chain are flushed and rewritten to their fixed content, and each address is one
//!   map element, looked up by key first so a repeated ADD is a no-op and a stale owner of the
//!   same address is replaced in the same transaction.
//! * DEL/GC delete the elements and, with the last element pointing at it, the per-subnet chain.
//! * All read-modify-write runs under the flock on [`crate::LOCK_PATH`].

mod encode;
pub(crate) mod netlink;
pub mod plan;

use std::path::PathBuf;

use crate::{lock, validate_owner, validate_rules, Error, Firewall, MasqRule, LOCK_PATH};
use netlink::Nl;
use plan::{owned_by, plan_add, plan_remove, stale_in, Elem, Fam, Op, BASE_CHAIN, TABLE};

pub use encode::encode;

/// Sends an empty nf_tables transaction: proves the kernel has nf_tables and accepts our
/// netlink batches (CAP_NET_ADMIN), without creating anything and without any binary.
pub fn probe() -> Result<(), Error> {
    let mut nl = Nl::open()?;
    let batch = nftnl::Batch::new().finalize();
    nl.transact(&batch, "probe transaction")
}

/// Index of the op the kernel rejected, from its sequence number. nftnl numbers the messages of
/// a batch consecutively; batch begin/end take a number too only on kernels that ACK them
/// (then the range is two longer than the op list).
fn failed_op(seqs: std::ops::Range<u32>, n_ops: usize, seq: u32) -> Option<usize> {
    let len = seqs.end.checked_sub(seqs.start)? as usize;
    let first = seqs.start + u32::from(len == n_ops + 2);
    let i = seq.checked_sub(first)? as usize;
    (i < n_ops).then_some(i)
}

/// The nftables implementation of [`Firewall`].
pub struct NftFirewall {
    lock_path: PathBuf,
}

impl Default for NftFirewall {
    fn default() -> Self {
        Self::new()
    }
}

impl NftFirewall {
    /// Uses [`LOCK_PATH`].
    pub fn new() -> Self {
        Self {
            lock_path: PathBuf::from(LOCK_PATH),
        }
    }

    fn apply(nl: &mut Nl, ops: &[Op], what: &str) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        let batch = encode(ops)?;
        nl.transact_seq(&batch, what).map_err(|(err, seq)| {
            match failed_op(batch.sequence_numbers(), ops.len(), seq) {
                Some(i) => Error::Netlink {
                    op: format!("{what}: {}", ops[i]),
                    source: match err {
                        Error::Netlink { source, .. } => source,
                        other => std::io::Error::other(other.to_string()),
                    },
                },
                None => err,
            }
        })
    }

    fn all_elems(nl: &mut Nl) -> Result<Vec<Elem>, Error> {
        let mut all = nl.dump_elems(Fam::V4)?;
        all.extend(nl.dump_elems(Fam::V6)?);
        Ok(all)
    }
}

impl Firewall for NftFirewall {
    fn add_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        validate_rules(rules)?;
        if rules.is_empty() {
            return Ok(());
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let mut lookup_err = None;
        let ops = plan_add(rules, &mut |ip| match nl.get_elem(ip) {
            Ok(e) => e,
            Err(e) => {
                lookup_err.get_or_insert(e);
                None
            }
        });
        if let Some(e) = lookup_err {
            return Err(e);
        }
        Self::apply(&mut nl, &ops, "add masquerade")
    }

    fn del_masquerade(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), Error> {
        validate_owner(network, container_id, ifname)?;
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let all = Self::all_elems(&mut nl)?;
        let ops = plan_remove(&all, &owned_by(network, container_id, ifname));
        Self::apply(&mut nl, &ops, "delete masquerade")
    }

    fn check_masquerade(&self, rules: &[MasqRule]) -> Result<(), Error> {
        validate_rules(rules)?;
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        if !rules.is_empty() && !nl.chain_exists(BASE_CHAIN)? {
            return Err(Error::Missing(format!(
                "chain inet {TABLE} {BASE_CHAIN} does not exist"
            )));
        }
        for r in rules {
            let want = owned_by(&r.network, &r.container_id, &r.ifname);
            let chain = crate::names::nft_masq_chain(&r.network, &r.subnet());
            let map = Fam::of(r.ip()).map();
            match nl.get_elem(r.ip())? {
                None => {
                    return Err(Error::Missing(format!(
                        "element {} not in map inet {TABLE} {map} (network {:?}, container {:?}, ifname {:?})",
                        r.ip(),
                        r.network,
                        r.container_id,
                        r.ifname
                    )))
                }
                Some(e) if !want(&e) || e.chain != chain => {
                    return Err(Error::Missing(format!(
                        "element {} in map inet {TABLE} {map} belongs to \"{}\" -> {}, expected container {:?} ifname {:?} -> {chain}",
                        r.ip(),
                        e.comment,
                        e.chain,
                        r.container_id,
                        r.ifname
                    )))
                }
                Some(_) => {}
            }
            if !nl.chain_exists(&chain)? {
                return Err(Error::Missing(format!(
                    "chain inet {TABLE} {chain} does not exist"
                )));
            }
        }
        Ok(())
    }

    fn gc_masquerade(&self, network: &str, keep: &[(String, String)]) -> Result<(), Error> {
        validate_owner(network, "gc", "gc")?;
        for (cid, ifname) in keep {
            validate_owner(network, cid, ifname)?;
        }
        let _guard = lock::lock(&self.lock_path)?;
        let mut nl = Nl::open()?;
        let all = Self::all_elems(&mut nl)?;
        let ops = plan_remove(&all, &stale_in(network, keep));
        // Keep each transaction well under the socket buffer and the 64 KiB message limits.
        for chunk in ops.chunks(512) {
            Self::apply(&mut nl, chunk, "garbage-collect masquerade")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::failed_op;

    #[test]
    fn failed_op_maps_sequence_numbers() {
        // kernel that ACKs begin/end: begin=1, ops 2..=4, end=5
        assert_eq!(failed_op(1..6, 3, 2), Some(0));
        assert_eq!(failed_op(1..6, 3, 4), Some(2));
        assert_eq!(failed_op(1..6, 3, 5), None);
        // older kernel: ops 1..=3
        assert_eq!(failed_op(1..4, 3, 1), Some(0));
        assert_eq!(failed_op(1..4, 3, 0), None);
    }
}
